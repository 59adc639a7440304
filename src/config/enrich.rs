//! `[enrich]` — what the bridge fetches from Lark's open API to complete an event before it
//! publishes it. Enrichment is best effort by design: it never refuses, loses or delays an
//! event past its own budget.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{units, ConfigError};

/// Enrichment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Fetch a created or updated ticket's detail from Lark and fill `customized_fields`
    /// (`customized_fields_source = "api"`; `"unavailable"` when the call fails or runs out of
    /// budget). Needs `lark.app_id`/`app_secret` and `lark.helpdesk_id`/`helpdesk_token`.
    /// Default false.
    pub ticket_detail: bool,
    /// `budget_ms`: the most an event waits for enrichment (retries included), in ms; then it is
    /// published without. Must be below `server.response_budget_ms`, which also covers the
    /// publish (checked at start when `ticket_detail` is on). Default 800.
    #[serde(rename = "budget_ms", with = "units::millis")]
    pub budget: Duration,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            ticket_detail: false,
            budget: Duration::from_millis(800),
        }
    }
}

impl EnrichConfig {
    pub(super) fn validate(&self, response_budget: Duration) -> Result<(), ConfigError> {
        if self.budget.is_zero() {
            return Err(ConfigError::invalid(
                "enrich.budget_ms",
                "must be greater than 0",
            ));
        }
        // Only when it is used: a short response budget (tests, a fast broker) need not carry an
        // enrichment setting it does not use.
        if self.ticket_detail && self.budget >= response_budget {
            return Err(ConfigError::invalid(
                "enrich.budget_ms",
                format!(
                    "must be below server.response_budget_ms ({} ms): the answer to Lark also waits for the broker",
                    response_budget.as_millis()
                ),
            ));
        }
        Ok(())
    }
}
