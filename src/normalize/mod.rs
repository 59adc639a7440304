//! Lark event → CloudEvent v1 (normalized-schema.md). Pure: no I/O, no clock (the receive time
//! is passed in). One file per event type; `raw` is the generic envelope for all others.

pub mod raw;
pub mod ticket_created;

use crate::event::Attributes;
use crate::lark::{time, VerifiedEvent};

/// Lark's event type handled by [`ticket_created`].
pub const TICKET_CREATED: &str = "helpdesk.ticket.created_v1";

/// A field that was unusable but did not stop the event (`lark_bridge_normalize_warnings_total`).
pub type Warnings = Vec<&'static str>;

/// Why an event cannot be normalized: a 400, before the dedup store is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("ticket_id is missing")]
    MissingTicketId,
    #[error("helpdesk_id is missing")]
    MissingHelpdeskId,
    #[error("event could not be serialized")]
    Serialize,
}

/// The attributes every envelope shares: id, source, time, Lark extensions.
pub(crate) fn base_attributes(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Attributes {
    let time_ms = match time::value_millis(ev.create_time()) {
        Ok(Some(ms)) => ms,
        Ok(None) => received_ms,
        Err(_) => {
            warnings.push("time");
            received_ms
        }
    };
    let time = time::rfc3339_millis(time_ms)
        .or_else(|| time::rfc3339_millis(received_ms))
        .unwrap_or_default();
    Attributes {
        specversion: "1.0",
        id: ev.event_id().to_string(),
        source: format!("urn:lark:app:{}", ev.app_id().unwrap_or("unknown")),
        ty: "",
        subject: String::new(),
        time,
        datacontenttype: crate::event::DATA_CONTENT_TYPE,
        dataschema: "",
        partitionkey: String::new(),
        larktenantkey: ev.tenant_key().map(str::to_string),
        larkappid: ev.app_id().map(str::to_string),
        larkeventtype: ev.event_type().to_string(),
    }
}
