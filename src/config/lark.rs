//! `[lark]` — the secrets that authenticate Lark's callbacks and the app's credentials.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{split_secret_list, Secret};
use super::{ConfigError, SecretFiles, SourceKind};

/// Lark's side: the secrets that authenticate callbacks, and the app credentials of
/// long-connection mode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LarkConfig {
    /// Encrypt Key(s) from the Lark console, comma-separated for rotation.
    pub encrypt_key: Option<Secret>,
    /// File holding the Encrypt Key(s), separated by commas or newlines.
    pub encrypt_key_file: Option<PathBuf>,
    /// Verification Token(s), comma-separated for rotation.
    pub verification_token: Option<Secret>,
    /// File holding the Verification Token(s).
    pub verification_token_file: Option<PathBuf>,
    /// Run with neither key nor token (accepts forged requests). Default false.
    pub allow_unverified: bool,
    /// Refuse signed requests whose timestamp is further than this from now, in s; 0 = off.
    /// Default 0 (decisions.md). 86400 (24 h) is the recommended setting: far past Lark's last
    /// redelivery (~7.1 h after the first push), so genuine redeliveries pass whether or not
    /// Lark re-signs them, while a captured request replayed after the dedup TTL (24 h) — or
    /// after a restart emptied the memory store — is refused once it is a day old. Keep it at
    /// or below `dedup.ttl_secs`.
    pub max_timestamp_skew_secs: u64,
    /// App ID (long-connection mode).
    pub app_id: Option<String>,
    /// App Secret (long-connection mode).
    pub app_secret: Option<Secret>,
    /// File holding the App Secret.
    pub app_secret_file: Option<PathBuf>,
    /// Lark's open-platform base URL: `https://open.feishu.cn` (default, Feishu) or
    /// `https://open.larksuite.com` (Lark international). The long connection and the open API
    /// (subscription, ticket detail) both use it.
    pub domain: String,
    /// The Lark event types the bridge subscribes to and normalizes. Default: the four
    /// helpdesk events. A helpdesk type left out is treated as any other type (ignored, or
    /// forwarded raw with `routing.forward_unknown`).
    pub events: Vec<String>,
    /// Helpdesk ID (helpdesk admin console → settings → API): with `helpdesk_token`, the
    /// `X-Lark-Helpdesk-Authorization` of the helpdesk API calls.
    pub helpdesk_id: Option<String>,
    /// Helpdesk token (helpdesk admin console → settings → API). A secret.
    pub helpdesk_token: Option<Secret>,
    /// File holding the helpdesk token.
    pub helpdesk_token_file: Option<PathBuf>,
    /// Subscribe to `events` at start when the app and helpdesk credentials are set (retried
    /// with backoff until Lark accepts; `/readyz` says why meanwhile). Default true.
    pub subscribe: bool,
    /// `api_timeout_ms`: the timeout of one open-API call (token, subscription), in ms.
    /// Enrichment calls are bounded by `enrich.budget_ms` instead. Default 5000.
    #[serde(rename = "api_timeout_ms", with = "super::units::millis")]
    pub api_timeout: std::time::Duration,
}

impl Default for LarkConfig {
    fn default() -> Self {
        LarkConfig {
            encrypt_key: None,
            encrypt_key_file: None,
            verification_token: None,
            verification_token_file: None,
            allow_unverified: false,
            max_timestamp_skew_secs: 0,
            app_id: None,
            app_secret: None,
            app_secret_file: None,
            domain: "https://open.feishu.cn".into(),
            events: lark_protocol::normalize::HELPDESK_EVENTS
                .map(String::from)
                .to_vec(),
            helpdesk_id: None,
            helpdesk_token: None,
            helpdesk_token_file: None,
            subscribe: true,
            api_timeout: std::time::Duration::from_millis(5000),
        }
    }
}

impl LarkConfig {
    /// The app credentials, when both are set (the open API's tenant token needs them).
    pub fn app_credentials(&self) -> Option<(&str, &Secret)> {
        match (self.app_id.as_deref(), &self.app_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some((id, secret)),
            _ => None,
        }
    }

    /// The helpdesk credentials, when both are set (the helpdesk API calls need them).
    pub fn helpdesk_credentials(&self) -> Option<(&str, &Secret)> {
        match (self.helpdesk_id.as_deref(), &self.helpdesk_token) {
            (Some(id), Some(token)) if !id.is_empty() && !token.is_empty() => Some((id, token)),
            _ => None,
        }
    }

    /// True when `event_type` is one the bridge normalizes (listed in `events`).
    pub fn normalizes(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }

    pub(super) fn validate(
        &self,
        source: SourceKind,
        mode: SecretFiles,
    ) -> Result<(), ConfigError> {
        if let Some(k) = &self.encrypt_key {
            if mode == SecretFiles::Read || self.encrypt_key_file.is_none() {
                split_secret_list(k.expose(), self.encrypt_key_file.is_some())
                    .map_err(|e| ConfigError::invalid("lark.encrypt_key", e))?;
            }
        }
        if let Some(t) = &self.verification_token {
            if mode == SecretFiles::Read || self.verification_token_file.is_none() {
                split_secret_list(t.expose(), self.verification_token_file.is_some())
                    .map_err(|e| ConfigError::invalid("lark.verification_token", e))?;
            }
        }
        for e in &self.events {
            if !lark_protocol::normalize::HELPDESK_EVENTS.contains(&e.as_str()) {
                return Err(ConfigError::invalid(
                    "lark.events",
                    format!(
                        "{e:?} is not a helpdesk event the bridge can subscribe to and normalize (one of {}); other event types are forwarded raw with routing.forward_unknown",
                        lark_protocol::normalize::HELPDESK_EVENTS.join(", ")
                    ),
                ));
            }
        }
        if self.helpdesk_id.as_deref().is_some_and(|id| !id.is_empty())
            != (self.helpdesk_token.is_some() || self.helpdesk_token_file.is_some())
        {
            return Err(ConfigError::invalid(
                "lark.helpdesk_token",
                "lark.helpdesk_id and lark.helpdesk_token (or _file) are set together",
            ));
        }
        if self.api_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "lark.api_timeout_ms",
                "must be greater than 0",
            ));
        }
        if !(self.domain.starts_with("http://") || self.domain.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "lark.domain",
                "must be an http(s) URL",
            ));
        }
        match source {
            SourceKind::Webhook => {
                let has_key = self.encrypt_key.is_some() || self.encrypt_key_file.is_some();
                let has_token =
                    self.verification_token.is_some() || self.verification_token_file.is_some();
                if !has_key && !has_token && !self.allow_unverified {
                    return Err(ConfigError::invalid("lark.encrypt_key", "lark.encrypt_key or lark.verification_token must be set (or lark.allow_unverified = true, which accepts forged requests)"));
                }
            }
            SourceKind::LongConnection => {
                if self.app_id.as_deref().unwrap_or("").is_empty() {
                    return Err(ConfigError::invalid(
                        "lark.app_id",
                        "is required when source.kind = \"long_connection\"",
                    ));
                }
                if self.app_secret.is_none() && self.app_secret_file.is_none() {
                    return Err(ConfigError::invalid(
                        "lark.app_secret",
                        "is required when source.kind = \"long_connection\"",
                    ));
                }
            }
        }
        Ok(())
    }
}
