//! Lark event → CloudEvent v1 (normalized-schema.md). Pure: no I/O, no clock (the receive time
//! is passed in). One file per event type; `raw` is the generic envelope for all others.

pub mod deadletter;
pub mod raw;
pub mod ticket_created;

use crate::event::Attributes;
use crate::{time, VerifiedEvent};

/// Lark's event type handled by [`ticket_created`].
pub const TICKET_CREATED: &str = "helpdesk.ticket.created_v1";

/// A field that was unusable but did not stop the event (`lark_bridge_normalize_warnings_total`).
pub type Warnings = Vec<&'static str>;

/// Why an event cannot be normalized: a 400, before the dedup store is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// Lark's `event` has no usable `ticket_id`.
    #[error("ticket_id is missing")]
    MissingTicketId,
    /// Lark's `event` has no usable `helpdesk_id`.
    #[error("helpdesk_id is missing")]
    MissingHelpdeskId,
    /// The normalized event could not be serialized to JSON.
    #[error("event could not be serialized")]
    Serialize,
}

impl NormalizeError {
    /// Every kind, for metric labels created at start.
    pub const KINDS: [&'static str; 3] = ["missing_ticket_id", "missing_helpdesk_id", "serialize"];

    /// A fixed, small label for the error (`lark_bridge_deadletter_total{reason}`, the
    /// `--reason` of `lark-bridge redrive`): never free text.
    pub fn kind(&self) -> &'static str {
        match self {
            NormalizeError::MissingTicketId => "missing_ticket_id",
            NormalizeError::MissingHelpdeskId => "missing_helpdesk_id",
            NormalizeError::Serialize => "serialize",
        }
    }
}

/// `urn:lark:app:{app_id}`, every byte a URN may not hold as such percent-encoded (RFC 8141:
/// unreserved, sub-delims, `:`, `@`, `/` stay), so that `source` is always the URI-reference
/// CloudEvents requires and matches the schema's pattern even when an app id holds a newline.
/// Lark's own ids (`cli_…`) come out unchanged.
fn source(app_id: Option<&str>) -> String {
    let app_id = app_id.unwrap_or("unknown");
    let mut out = String::with_capacity(13 + app_id.len());
    out.push_str("urn:lark:app:");
    for b in app_id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The attributes every envelope shares: id, source, time, Lark extensions.
pub(crate) fn base_attributes(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Attributes {
    let time = match time::value_millis(ev.create_time()) {
        Ok(Some(ms)) => time::rfc3339_millis(ms).or_else(|| {
            // A number past the year 9999: unreadable, like a non-number.
            warnings.push("time");
            None
        }),
        Ok(None) => None,
        Err(_) => {
            warnings.push("time");
            None
        }
    };
    let time = time
        .or_else(|| time::rfc3339_millis(received_ms))
        .unwrap_or_default();
    Attributes {
        specversion: "1.0",
        id: ev.event_id().to_string(),
        source: source(ev.app_id()),
        ty: "",
        subject: String::new(),
        time,
        datacontenttype: crate::event::DATA_CONTENT_TYPE,
        dataschema: "",
        partitionkey: String::new(),
        larktenantkey: ev.tenant_key().map(str::to_string),
        larkappid: ev.app_id().map(str::to_string),
        larkeventtype: ev.event_type().to_string(),
        deadletterreason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_a_uri_reference_whatever_the_app_id() {
        assert_eq!(
            source(Some("cli_9f5343c580712544")),
            "urn:lark:app:cli_9f5343c580712544"
        );
        assert_eq!(source(None), "urn:lark:app:unknown");
        // Found by tests/prop_protocol.rs: "urn:lark:app:\n" failed the schema's pattern.
        assert_eq!(source(Some("\n")), "urn:lark:app:%0A");
        assert_eq!(source(Some("a b%é")), "urn:lark:app:a%20b%25%C3%A9");
    }
}
