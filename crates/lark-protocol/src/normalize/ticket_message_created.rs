//! `helpdesk.ticket_message.created_v1` → `com.larksuite.helpdesk.ticket_message.created.v1`
//! (helpdesk-events.md §2): one message in a ticket's chat, who sent it (bot, guest or agent),
//! and the ticket it belongs to. Lark's own `event.event_id` is ignored: the id is the header's.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{self, Ticket};
use super::{helpdesk_event, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing};
use crate::VerifiedEvent;

/// The `data` object, v1. Deserializable by consumers
/// ([`crate::consumer::TicketMessageCreated`]); unknown keys are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TicketMessageData {
    /// Lark's `ticket_message_id`, a number turned into its decimal string.
    pub ticket_message_id: String,
    /// The chat message's id (`om_…`).
    pub message_id: Option<String>,
    /// The ticket's chat.
    pub chat_id: Option<String>,
    /// The message's position in the ticket (a number is turned into its decimal string).
    pub position: Option<String>,
    /// Who sent it.
    pub sender: Sender,
    /// Lark's `msg_type`, e.g. `text`.
    pub msg_type: Option<String>,
    /// The message's text, when Lark sent it.
    pub text: Option<String>,
    /// Lark's `content`, passed through; `None` when absent.
    pub content: Option<Content>,
    /// The ticket's id (`ticket.ticket_id`); the subject.
    pub ticket_id: String,
    /// The ticket's helpdesk (`ticket.helpdesk_id`); the partition key.
    pub helpdesk_id: String,
    /// The ticket, with the fields of the ticket object only (Lark's ticket model here has
    /// more, e.g. `ticket_type` and service durations; v1 ignores them).
    pub ticket: Ticket,
}

/// The sender of a ticket message, from Lark's `sender_type` and `sender_id` (which Lark omits
/// for the bot).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sender {
    /// `bot`, `guest`, `agent`, or `unknown` for another or non-numeric code; `None` when
    /// Lark sent no `sender_type`.
    #[serde(rename = "type")]
    pub ty: Option<Cow<'static, str>>,
    /// Lark's raw `sender_type` code.
    pub type_code: Option<i64>,
    /// Lark's `sender_id.open_id`.
    pub open_id: Option<String>,
    /// Lark's `sender_id.union_id`.
    pub union_id: Option<String>,
    /// Lark's `sender_id.user_id`.
    pub user_id: Option<String>,
}

/// Lark's `content`, passed through.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Content {
    /// The content's `msg_type`.
    pub msg_type: Option<String>,
    /// The content itself (for text, the text; for rich text, Lark's JSON as a string).
    pub content: Option<String>,
    /// Image keys of the message; empty when none.
    #[serde(default)]
    pub image_keys: Vec<String>,
    /// The image key of an image message.
    pub image_key: Option<String>,
}

/// A string, or an integer as its decimal string.
fn string_or_int(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        v => fields::opt_str(v),
    }
}

/// Build the `data` object from Lark's `event`.
pub fn ticket_message_data(
    event: &Value,
    warnings: &mut Warnings,
) -> Result<TicketMessageData, NormalizeError> {
    let e = fields::object(Some(event));
    let ticket_message_id = fields::id_string(e.get("ticket_message_id"))
        .ok_or(NormalizeError::MissingTicketMessageId)?;
    let ticket = fields::ticket(fields::object(e.get("ticket")), warnings)?;
    let (ty, type_code) = fields::labelled(
        e.get("sender_type"),
        |n| match n {
            1 => Some("bot"),
            2 => Some("guest"),
            3 => Some("agent"),
            _ => None,
        },
        "unknown",
    );
    let id = fields::object(e.get("sender_id"));
    let sender = Sender {
        ty,
        type_code,
        open_id: fields::opt_str(id.get("open_id")),
        union_id: fields::opt_str(id.get("union_id")),
        user_id: fields::opt_str(id.get("user_id")),
    };
    let content = e
        .get("content")
        .and_then(Value::as_object)
        .map(|c| Content {
            msg_type: fields::opt_str(c.get("msg_type")),
            content: fields::opt_str(c.get("content")),
            image_keys: match c.get("image_keys") {
                Some(Value::Array(keys)) => keys
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            },
            image_key: fields::opt_str(c.get("image_key")),
        });
    Ok(TicketMessageData {
        ticket_message_id,
        message_id: fields::opt_str(e.get("message_id")),
        chat_id: fields::opt_str(e.get("chat_id")),
        position: string_or_int(e.get("position")),
        sender,
        msg_type: fields::opt_str(e.get("msg_type")),
        text: fields::opt_str(e.get("text")),
        content,
        ticket_id: ticket.fields.ticket_id.clone(),
        helpdesk_id: ticket.fields.helpdesk_id.clone(),
        ticket,
    })
}

/// Normalize a verified `helpdesk.ticket_message.created_v1` event: subject
/// `ticket.ticket_id`, partition key `ticket.helpdesk_id`.
pub fn normalize(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    let data = ticket_message_data(ev.event(), warnings)?;
    helpdesk_event(
        ev,
        received_ms,
        warnings,
        EventClass::TicketMessageCreated,
        data.ticket_id.clone(),
        data.helpdesk_id.clone(),
        &data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn senders_and_required_ids() {
        let mut w = Vec::new();
        let d = ticket_message_data(
            &json!({"ticket_message_id": 6, "position": 3, "sender_type": "3",
                    "sender_id": {"open_id": "ou_a"},
                    "ticket": {"ticket_id": "1", "helpdesk_id": "2"}}),
            &mut w,
        )
        .unwrap();
        assert_eq!(d.ticket_message_id, "6");
        assert_eq!(d.position.as_deref(), Some("3"));
        assert_eq!(
            (d.sender.ty.as_deref(), d.sender.type_code),
            (Some("agent"), Some(3))
        );
        assert_eq!(d.sender.open_id.as_deref(), Some("ou_a"));
        assert_eq!((d.ticket_id.as_str(), d.helpdesk_id.as_str()), ("1", "2"));
        assert_eq!(d.content, None);

        let bot = ticket_message_data(
            &json!({"ticket_message_id": "6", "sender_type": 1,
                    "ticket": {"ticket_id": "1", "helpdesk_id": "2"}}),
            &mut w,
        )
        .unwrap();
        assert_eq!(bot.sender.ty.as_deref(), Some("bot"));
        assert_eq!(bot.sender.open_id, None);

        assert_eq!(
            ticket_message_data(
                &json!({"ticket": {"ticket_id": "1", "helpdesk_id": "2"}}),
                &mut w
            ),
            Err(NormalizeError::MissingTicketMessageId)
        );
        assert_eq!(
            ticket_message_data(&json!({"ticket_message_id": "6", "ticket_id": "1"}), &mut w),
            Err(NormalizeError::MissingTicketId)
        );
    }
}
