//! Lark event → CloudEvent v1 (normalized-schema.md). Pure: no I/O, no clock (the receive time
//! is passed in). One file per event type; `raw` is the generic envelope for all others.

pub mod deadletter;
pub mod enrich;
pub mod fields;
pub mod notification_approve;
pub mod raw;
pub mod ticket_created;
pub mod ticket_message_created;
pub mod ticket_updated;

use serde::Serialize;

use crate::event::{Attributes, EventClass, Outgoing, RouteVars};
use crate::{time, VerifiedEvent};

/// Lark's event type handled by [`ticket_created`].
pub const TICKET_CREATED: &str = "helpdesk.ticket.created_v1";
/// Lark's event type handled by [`ticket_updated`].
pub const TICKET_UPDATED: &str = "helpdesk.ticket.updated_v1";
/// Lark's event type handled by [`ticket_message_created`].
pub const TICKET_MESSAGE_CREATED: &str = "helpdesk.ticket_message.created_v1";
/// Lark's event type handled by [`notification_approve`].
pub const NOTIFICATION_APPROVE: &str = "helpdesk.notification.approve_v1";

/// Every Lark event type v1 normalizes (helpdesk-events.md §1); any other is raw.
pub const HELPDESK_EVENTS: [&str; 4] = [
    TICKET_CREATED,
    TICKET_UPDATED,
    TICKET_MESSAGE_CREATED,
    NOTIFICATION_APPROVE,
];

/// A normalizer: a verified event, the receive time (ms) standing in for an absent or
/// unreadable `create_time`, and the warnings to add to.
pub type Normalizer = fn(&VerifiedEvent, i64, &mut Warnings) -> Result<Outgoing, NormalizeError>;

/// The normalizer of Lark's `event_type`, or `None` for a type v1 does not model (raw).
pub fn normalizer(event_type: &str) -> Option<Normalizer> {
    match event_type {
        TICKET_CREATED => Some(ticket_created::normalize),
        TICKET_UPDATED => Some(ticket_updated::normalize),
        TICKET_MESSAGE_CREATED => Some(ticket_message_created::normalize),
        NOTIFICATION_APPROVE => Some(notification_approve::normalize),
        _ => None,
    }
}

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
    /// A ticket message without a usable `ticket_message_id`.
    #[error("ticket_message_id is missing")]
    MissingTicketMessageId,
    /// An approval notification without a usable `notification_id`.
    #[error("notification_id is missing")]
    MissingNotificationId,
    /// The normalized event could not be serialized to JSON.
    #[error("event could not be serialized")]
    Serialize,
}

impl NormalizeError {
    /// Every error, e.g. to map a dead letter's message back to its kind.
    pub const ALL: [NormalizeError; 5] = [
        NormalizeError::MissingTicketId,
        NormalizeError::MissingHelpdeskId,
        NormalizeError::MissingTicketMessageId,
        NormalizeError::MissingNotificationId,
        NormalizeError::Serialize,
    ];

    /// Every kind, for metric labels created at start (the kinds of [`NormalizeError::ALL`]).
    pub const KINDS: [&'static str; 5] = [
        "missing_ticket_id",
        "missing_helpdesk_id",
        "missing_ticket_message_id",
        "missing_notification_id",
        "serialize",
    ];

    /// A fixed, small label for the error (`lark_bridge_deadletter_total{reason}`, the
    /// `--reason` of `lark-bridge redrive`): never free text.
    pub fn kind(&self) -> &'static str {
        match self {
            NormalizeError::MissingTicketId => "missing_ticket_id",
            NormalizeError::MissingHelpdeskId => "missing_helpdesk_id",
            NormalizeError::MissingTicketMessageId => "missing_ticket_message_id",
            NormalizeError::MissingNotificationId => "missing_notification_id",
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

/// The envelope of a normalized helpdesk event of `class`: the shared attributes, its type and
/// dataschema, `subject`, `helpdesk_id` as the partition key and `{helpdesk_id}` for routing,
/// and `data` serialized once.
pub(crate) fn helpdesk_event<D: Serialize>(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
    class: EventClass,
    subject: String,
    helpdesk_id: String,
    data: &D,
) -> Result<Outgoing, NormalizeError> {
    let mut attrs = base_attributes(ev, received_ms, warnings);
    attrs.ty = class.cloudevents_type();
    attrs.dataschema = class.dataschema();
    attrs.subject = subject;
    attrs.partitionkey = helpdesk_id.clone();
    let route = RouteVars {
        helpdesk_id: Some(helpdesk_id),
        event_type: ev.event_type().to_string(),
        tenant_key: ev.tenant_key().map(str::to_string),
        app_id: ev.app_id().map(str::to_string),
    };
    Outgoing::new(class, attrs, route, data).map_err(|_| NormalizeError::Serialize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_kinds_of_all_errors() {
        assert_eq!(NormalizeError::ALL.map(|e| e.kind()), NormalizeError::KINDS);
    }

    #[test]
    fn every_helpdesk_type_has_its_normalizer_and_class() {
        for t in HELPDESK_EVENTS {
            assert!(normalizer(t).is_some(), "{t}");
            let class = EventClass::from_lark_event_type(t).unwrap();
            assert_eq!(class.lark_event_type(), Some(t));
        }
        assert!(normalizer("im.message.receive_v1").is_none());
    }

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
