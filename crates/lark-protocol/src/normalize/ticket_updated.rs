//! `helpdesk.ticket.updated_v1` → `com.larksuite.helpdesk.ticket.updated.v1`
//! (helpdesk-events.md §2): the ticket after the update, what it was before, and which of the
//! tracked fields changed — so "handed from the bot to a human" is one check on the data,
//! `"stage" in changed && ticket.stage == "human"`, not a diff the consumer keeps state for.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{self, Ticket};
use super::{helpdesk_event, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing};
use crate::VerifiedEvent;

/// The fields of Lark's `old_object` v1 tracks, in the order `changed` lists them.
pub const TRACKED: [&str; 3] = ["stage", "status", "updated_at"];

/// The `data` object, v1. Deserializable by consumers ([`crate::consumer::TicketUpdated`]);
/// unknown keys are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TicketUpdatedData {
    /// The ticket after the update, from Lark's `object`.
    pub ticket: Ticket,
    /// The tracked fields before the update, from Lark's `old_object`.
    pub previous: Previous,
    /// The names among [`TRACKED`] that Lark's `old_object` carried (maybe none).
    #[serde(default)]
    pub changed: Vec<Cow<'static, str>>,
}

impl TicketUpdatedData {
    /// True when the update changed `field` (one of [`TRACKED`]).
    pub fn changed(&self, field: &str) -> bool {
        self.changed.iter().any(|c| c == field)
    }
}

/// The tracked fields before the update, same rules as the ticket's; a field Lark did not send
/// in `old_object` is `None`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Previous {
    /// `bot`, `human` or `unknown`.
    pub stage: Option<Cow<'static, str>>,
    /// Lark's raw `stage` code.
    pub stage_code: Option<i64>,
    /// The status label, as the ticket's `status`.
    pub status: Option<Cow<'static, str>>,
    /// Lark's raw `status` code.
    pub status_code: Option<i64>,
    /// RFC 3339 UTC with milliseconds.
    pub updated_at: Option<String>,
}

/// Build the `data` object from Lark's `event` (`object` and `old_object`).
pub fn ticket_updated_data(
    event: &Value,
    warnings: &mut Warnings,
) -> Result<TicketUpdatedData, NormalizeError> {
    let e = fields::object(Some(event));
    let ticket = fields::ticket(fields::object(e.get("object")), warnings)?;
    let old = fields::object(e.get("old_object"));
    let (stage, stage_code) = fields::stage(old.get("stage"));
    let (status, status_code) = fields::status(old.get("status"));
    let previous = Previous {
        stage,
        stage_code,
        status,
        status_code,
        updated_at: fields::timestamp(old.get("updated_at"), "updated_at", warnings),
    };
    let changed = TRACKED
        .into_iter()
        .filter(|k| !matches!(old.get(*k), None | Some(Value::Null)))
        .map(Cow::Borrowed)
        .collect();
    Ok(TicketUpdatedData {
        ticket,
        previous,
        changed,
    })
}

/// Normalize a verified `helpdesk.ticket.updated_v1` event: subject `object.ticket_id`,
/// partition key `object.helpdesk_id`.
pub fn normalize(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    let data = ticket_updated_data(ev.event(), warnings)?;
    helpdesk_event(
        ev,
        received_ms,
        warnings,
        EventClass::TicketUpdated,
        data.ticket.fields.ticket_id.clone(),
        data.ticket.fields.helpdesk_id.clone(),
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hand_off_to_a_human_is_one_check() {
        let mut w = Vec::new();
        let d = ticket_updated_data(
            &json!({"object": {"ticket_id": "1", "helpdesk_id": "2", "stage": 2, "status": 2},
                    "old_object": {"stage": 1, "updated_at": null}}),
            &mut w,
        )
        .unwrap();
        assert!(d.changed("stage") && d.ticket.fields.stage.as_deref() == Some("human"));
        assert!(!d.changed("updated_at"), "null is not carried");
        assert_eq!(d.previous.stage.as_deref(), Some("bot"));
        assert_eq!((d.previous.status, d.previous.status_code), (None, None));
    }

    #[test]
    fn required_ids_come_from_the_object() {
        let mut w = Vec::new();
        assert_eq!(
            ticket_updated_data(&json!({"ticket_id": "1", "helpdesk_id": "2"}), &mut w),
            Err(NormalizeError::MissingTicketId)
        );
        assert_eq!(
            ticket_updated_data(&json!({"object": {"ticket_id": "1"}}), &mut w),
            Err(NormalizeError::MissingHelpdeskId)
        );
        let d = ticket_updated_data(
            &json!({"object": {"ticket_id": 1, "helpdesk_id": 2}}),
            &mut w,
        )
        .unwrap();
        assert!(d.changed.is_empty());
    }
}
