//! `helpdesk.ticket.created_v1` → `com.larksuite.helpdesk.ticket.created.v1`
//! (normalized-schema.md §2). Every field is always present; unusable values become `null` or
//! `"unknown"` rather than failing the event — a ticket is never lost over a bad enum.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::User;
use super::{fields, helpdesk_event, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing};
use crate::VerifiedEvent;

/// The `data` object, v1.
///
/// Serialized by the normalizer; deserialized by consumers (see [`crate::consumer`]). The enum
/// labels are [`Cow`]s: the normalizer borrows its `'static` labels (no allocation), a consumer
/// owns what it read. Unknown keys are ignored, so a consumer built against this version still
/// reads events that gained fields later in v1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TicketData {
    /// Lark's `ticket_id`, a number turned into its decimal string.
    pub ticket_id: String,
    /// Lark's `helpdesk_id`, same rule; the partition key.
    pub helpdesk_id: String,
    /// The guest who opened the ticket; `None` when Lark sent no `guest` object.
    pub guest: Option<Guest>,
    /// `bot` or `human`; `unknown` for another or non-numeric code.
    pub stage: Option<Cow<'static, str>>,
    /// Lark's raw `stage` code.
    pub stage_code: Option<i64>,
    /// `created`, `processing`, `queued`, `pending`, `waiting_for_user`, `closed_by_bot`,
    /// `closed_by_agent`, `closed_by_user`; `unknown` for another or non-numeric code.
    pub status: Option<Cow<'static, str>>,
    /// Lark's raw `status` code.
    pub status_code: Option<i64>,
    /// `unsatisfied`, `neutral`, `satisfied`, or `unknown`; `None` when not rated (0 or missing).
    pub score: Option<Cow<'static, str>>,
    /// Lark's raw `score` code; `None` for 0.
    pub score_code: Option<i64>,
    /// From Lark's `solve`: 1 → false, 2 → true, anything else → `None`.
    pub solved: Option<bool>,
    /// `open_api`, `qr_code`, `share`, `search`; `other` for another integer, `unknown` for a
    /// non-number.
    pub channel: Option<Cow<'static, str>>,
    /// Lark's raw `channel` code.
    pub channel_code: Option<i64>,
    /// RFC 3339 UTC with milliseconds; `None` when absent (≤ 0) or unreadable.
    pub created_at: Option<String>,
    /// RFC 3339 UTC with milliseconds; `None` when absent (≤ 0, e.g. Lark's -1) or unreadable.
    pub updated_at: Option<String>,
    /// RFC 3339 UTC with milliseconds; `None` while the ticket is open (0/-1) or when unreadable.
    pub closed_at: Option<String>,
    /// The ticket's chat, when sent.
    pub chat_id: Option<String>,
    /// Lark's `customized_fields`, passed through; empty when absent.
    #[serde(default)]
    pub customized_fields: Vec<CustomizedField>,
    /// Where `customized_fields` came from (v1 additive): [`FIELDS_FROM_EVENT`],
    /// [`FIELDS_FROM_API`] (`enrich.ticket_detail` fetched the ticket) or
    /// [`FIELDS_UNAVAILABLE`] (enrichment was asked for but failed: the event's own, usually
    /// none, are kept). A consumer reading an event from before the field existed gets `event`.
    #[serde(default = "from_event")]
    pub customized_fields_source: Cow<'static, str>,
}

/// `customized_fields_source`: the fields are those Lark's event carried (maybe none).
pub const FIELDS_FROM_EVENT: &str = "event";
/// `customized_fields_source`: the fields come from Lark's ticket-detail API.
pub const FIELDS_FROM_API: &str = "api";
/// `customized_fields_source`: enrichment was asked for but the API gave nothing in time.
pub const FIELDS_UNAVAILABLE: &str = "unavailable";

fn from_event() -> Cow<'static, str> {
    Cow::Borrowed(FIELDS_FROM_EVENT)
}

/// The ticket's guest: a [`User`] from Lark's `guest.id.*`, `guest.name`, `guest.avatar_url`
/// and `guest.email`.
pub type Guest = User;

/// One item of Lark's `customized_fields`, each member passed through as sent (`null` when
/// missing; a consumer reads a missing member as `null` too).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CustomizedField {
    /// The field's id.
    #[serde(default)]
    pub id: Value,
    /// The field's value.
    #[serde(default)]
    pub value: Value,
    /// The field's key name.
    #[serde(default)]
    pub key_name: Value,
    /// The field's display name.
    #[serde(default)]
    pub display_name: Value,
    /// The field's position.
    #[serde(default)]
    pub position: Value,
    /// Whether the field is required.
    #[serde(default)]
    pub required: Value,
    /// Whether the field is editable.
    #[serde(default)]
    pub editable: Value,
}

/// Build the `data` object from Lark's `event`.
pub fn ticket_data(event: &Value, warnings: &mut Warnings) -> Result<TicketData, NormalizeError> {
    fields::ticket_fields(fields::object(Some(event)), warnings)
}

/// Normalize a verified `helpdesk.ticket.created_v1` event. `received_ms` stands in for an
/// absent or unreadable `create_time`.
pub fn normalize(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    // The event's text read typed when it can be (no `Value`, strings borrowed); the general
    // path otherwise, with the same rules (`fields::ticket_fields_from`).
    let data = match ev.event_json().and_then(fields::fast_ticket) {
        Some(typed) => fields::ticket_fields_typed(typed, warnings)?,
        None => ticket_data(ev.event(), warnings)?,
    };
    helpdesk_event(
        ev,
        received_ms,
        warnings,
        EventClass::TicketCreated,
        data.ticket_id.clone(),
        data.helpdesk_id.clone(),
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(event: Value) -> (TicketData, Warnings) {
        let mut w = Vec::new();
        (ticket_data(&event, &mut w).unwrap(), w)
    }

    #[test]
    fn required_ids() {
        let mut w = Vec::new();
        assert_eq!(
            ticket_data(&json!({"helpdesk_id":"1"}), &mut w),
            Err(NormalizeError::MissingTicketId)
        );
        assert_eq!(
            ticket_data(&json!({"ticket_id":"1","helpdesk_id":""}), &mut w),
            Err(NormalizeError::MissingHelpdeskId)
        );
        assert_eq!(
            ticket_data(&json!(null), &mut w),
            Err(NormalizeError::MissingTicketId)
        );
        let (d, _) = data(json!({"ticket_id": 12, "helpdesk_id": 34}));
        assert_eq!((d.ticket_id.as_str(), d.helpdesk_id.as_str()), ("12", "34"));
    }

    #[test]
    fn bad_timestamps_warn_and_become_null() {
        let (d, w) =
            data(json!({"ticket_id":"1","helpdesk_id":"2","created_at":"soon","closed_at":-1}));
        assert_eq!(d.created_at, None);
        assert_eq!(d.closed_at, None);
        assert_eq!(w, vec!["created_at"]);
        // Past the year 9999 (18 digits read as microseconds): null and counted, not an
        // unreadable "+33658-…" string.
        let (d, w) = data(
            json!({"ticket_id":"1","helpdesk_id":"2","updated_at":999_999_999_999_999_999i64}),
        );
        assert_eq!(d.updated_at, None);
        assert_eq!(w, vec!["updated_at"]);
    }

    #[test]
    fn score_zero_is_unrated_and_channel_unknown_int_is_other() {
        let (d, _) =
            data(json!({"ticket_id":"1","helpdesk_id":"2","score":0,"channel":5,"solve":"2"}));
        assert_eq!((d.score.as_deref(), d.score_code), (None, None));
        assert_eq!(
            (d.channel.as_deref(), d.channel_code),
            (Some("other"), Some(5))
        );
        assert_eq!(d.solved, Some(true));
        let (d, _) = data(json!({"ticket_id":"1","helpdesk_id":"2","channel":"x","score":"x"}));
        assert_eq!(
            (d.channel.as_deref(), d.channel_code),
            (Some("unknown"), None)
        );
        assert_eq!((d.score.as_deref(), d.score_code), (Some("unknown"), None));
        // The normalizer borrows its labels: no allocation per event.
        assert!(matches!(d.channel, Some(Cow::Borrowed(_))));
    }
}
