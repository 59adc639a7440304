//! The field rules every helpdesk normalizer shares (normalized-schema.md §2,
//! helpdesk-events.md §2): integer codes sent as numbers or strings, enum labels kept next to
//! their codes, ids, timestamps, Lark's user objects and the ticket object. One place, so the
//! four event types cannot drift apart on what `"2"`, `-1` or an unknown code means.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ticket_created::{CustomizedField, TicketData, FIELDS_FROM_EVENT};
use super::{NormalizeError, Warnings};
use crate::time;

/// An empty object, for a Lark `event` (or member) that is not an object at all.
pub(crate) fn object(v: Option<&Value>) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    v.and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// An integer code as Lark sends it: a number or a numeric string.
pub(crate) enum Code {
    Missing,
    Int(i64),
    NotANumber,
}

pub(crate) fn code(v: Option<&Value>) -> Code {
    match v {
        None | Some(Value::Null) => Code::Missing,
        Some(Value::Number(n)) => n.as_i64().map(Code::Int).unwrap_or(Code::NotANumber),
        Some(Value::String(s)) => s.trim().parse().map(Code::Int).unwrap_or(Code::NotANumber),
        Some(_) => Code::NotANumber,
    }
}

/// A label and its code.
pub(crate) type Labelled = (Option<Cow<'static, str>>, Option<i64>);

/// Label and code of an enum field: unknown integers keep their code with label `unknown_int`;
/// a non-number is `"unknown"` without a code; missing is `(None, None)`.
pub(crate) fn labelled(
    v: Option<&Value>,
    label: impl Fn(i64) -> Option<&'static str>,
    unknown_int: &'static str,
) -> Labelled {
    match code(v) {
        Code::Missing => (None, None),
        Code::Int(n) => (
            Some(Cow::Borrowed(label(n).unwrap_or(unknown_int))),
            Some(n),
        ),
        Code::NotANumber => (Some(Cow::Borrowed("unknown")), None),
    }
}

/// A ticket's `stage`: 1 bot, 2 human.
pub(crate) fn stage(v: Option<&Value>) -> Labelled {
    labelled(
        v,
        |n| match n {
            1 => Some("bot"),
            2 => Some("human"),
            _ => None,
        },
        "unknown",
    )
}

/// A ticket's `status`.
pub(crate) fn status(v: Option<&Value>) -> Labelled {
    labelled(
        v,
        |n| match n {
            1 => Some("created"),
            2 => Some("processing"),
            3 => Some("queued"),
            4 => Some("pending"),
            5 => Some("waiting_for_user"),
            50 => Some("closed_by_bot"),
            51 => Some("closed_by_agent"),
            52 => Some("closed_by_user"),
            _ => None,
        },
        "unknown",
    )
}

/// A required id: a non-blank string, or an integer turned into its decimal string.
pub(crate) fn id_string(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A string, or `None` for anything else.
pub(crate) fn opt_str(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// A timestamp (lark-protocol.md §5 units) as RFC 3339 UTC with milliseconds; an unreadable one
/// is `None` and counted under `field`.
pub(crate) fn timestamp(
    v: Option<&Value>,
    field: &'static str,
    warnings: &mut Warnings,
) -> Option<String> {
    match time::value_millis(v).map(|ms| ms.map(time::rfc3339_millis)) {
        Ok(Some(Some(t))) => Some(t),
        Ok(None) => None,
        // Not a number, or a number past the year 9999: null, counted.
        Err(_) | Ok(Some(None)) => {
            warnings.push(field);
            None
        }
    }
}

/// A person in a helpdesk event (a ticket's guest, agents, collaborators, closer), from Lark's
/// `{id: {open_id, union_id, user_id}, name, avatar_url, email}`; each `None` when not a
/// string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// Lark's `id.open_id`.
    pub open_id: Option<String>,
    /// Lark's `id.union_id`.
    pub union_id: Option<String>,
    /// Lark's `id.user_id`; only sent when the app holds the user-id permission.
    pub user_id: Option<String>,
    /// The display name.
    pub name: Option<String>,
    /// The avatar URL.
    pub avatar_url: Option<String>,
    /// The email address.
    pub email: Option<String>,
}

/// The user object of `v`, or `None` when `v` is not an object.
pub(crate) fn user(v: Option<&Value>) -> Option<User> {
    let u = v?.as_object()?;
    let id = object(u.get("id"));
    Some(User {
        open_id: opt_str(id.get("open_id")),
        union_id: opt_str(id.get("union_id")),
        user_id: opt_str(id.get("user_id")),
        name: opt_str(u.get("name")),
        avatar_url: opt_str(u.get("avatar_url")),
        email: opt_str(u.get("email")),
    })
}

/// The user objects of an array (items that are not objects are skipped); empty when absent.
pub(crate) fn users(v: Option<&Value>) -> Vec<User> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|u| user(Some(u))).collect(),
        _ => Vec::new(),
    }
}

/// The `data` fields of `ticket.created.v1` from a Lark ticket object `e`.
pub(crate) fn ticket_fields(
    e: &Map<String, Value>,
    warnings: &mut Warnings,
) -> Result<TicketData, NormalizeError> {
    let ticket_id = id_string(e.get("ticket_id")).ok_or(NormalizeError::MissingTicketId)?;
    let helpdesk_id = id_string(e.get("helpdesk_id")).ok_or(NormalizeError::MissingHelpdeskId)?;
    let (stage, stage_code) = stage(e.get("stage"));
    let (status, status_code) = status(e.get("status"));
    // Score 0 means "not rated": the same as missing.
    let (score, score_code) = match code(e.get("score")) {
        Code::Int(0) => (None, None),
        _ => labelled(
            e.get("score"),
            |n| match n {
                1 => Some("unsatisfied"),
                2 => Some("neutral"),
                3 => Some("satisfied"),
                _ => None,
            },
            "unknown",
        ),
    };
    let solved = match code(e.get("solve")) {
        Code::Int(1) => Some(false),
        Code::Int(2) => Some(true),
        _ => None,
    };
    // Lark: "other numbers: other channels".
    let (channel, channel_code) = labelled(
        e.get("channel"),
        |n| match n {
            9 => Some("open_api"),
            2 => Some("qr_code"),
            14 => Some("share"),
            13 => Some("search"),
            _ => None,
        },
        "other",
    );
    let customized_fields = customized_fields(e.get("customized_fields"));
    Ok(TicketData {
        ticket_id,
        helpdesk_id,
        guest: user(e.get("guest")),
        stage,
        stage_code,
        status,
        status_code,
        score,
        score_code,
        solved,
        channel,
        channel_code,
        created_at: timestamp(e.get("created_at"), "created_at", warnings),
        updated_at: timestamp(e.get("updated_at"), "updated_at", warnings),
        closed_at: timestamp(e.get("closed_at"), "closed_at", warnings),
        chat_id: opt_str(e.get("chat_id")),
        customized_fields,
        customized_fields_source: Cow::Borrowed(FIELDS_FROM_EVENT),
    })
}

/// Lark's `customized_fields` array, each item passed through member by member (`null` when
/// missing); anything but an array of objects gives none. Shared by the normalizer and the
/// ticket-detail enrichment.
pub fn customized_fields(v: Option<&Value>) -> Vec<CustomizedField> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|f| {
                let get = |k: &str| f.get(k).cloned().unwrap_or(Value::Null);
                CustomizedField {
                    id: get("id"),
                    value: get("value"),
                    key_name: get("key_name"),
                    display_name: get("display_name"),
                    position: get("position"),
                    required: get("required"),
                    editable: get("editable"),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The ticket object of `ticket.updated.v1` and `ticket_message.created.v1`
/// (helpdesk-events.md §2): every field of `ticket.created.v1`'s `data`, plus the people
/// working on it. Serialized flat, as one JSON object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ticket {
    /// The fields `ticket.created.v1` carries, same rules (flattened into this object).
    #[serde(flatten)]
    pub fields: TicketData,
    /// Lark's `agents`; empty when absent.
    #[serde(default)]
    pub agents: Vec<User>,
    /// Lark's `collaborators`; empty when absent.
    #[serde(default)]
    pub collaborators: Vec<User>,
    /// Lark's `closed_by`; `None` while open or when not sent.
    pub closed_by: Option<User>,
}

/// The ticket object from Lark's ticket `e`.
pub(crate) fn ticket(
    e: &Map<String, Value>,
    warnings: &mut Warnings,
) -> Result<Ticket, NormalizeError> {
    Ok(Ticket {
        fields: ticket_fields(e, warnings)?,
        agents: users(e.get("agents")),
        collaborators: users(e.get("collaborators")),
        closed_by: user(e.get("closed_by")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn users_from_lark_shapes() {
        let u = user(Some(
            &json!({"id": {"open_id": "ou_1", "user_id": 7}, "name": "A"}),
        ))
        .unwrap();
        assert_eq!(u.open_id.as_deref(), Some("ou_1"));
        assert_eq!(u.user_id, None, "a number is not a user id string");
        assert_eq!(u.name.as_deref(), Some("A"));
        assert_eq!(user(Some(&json!("ou_1"))), None);
        let us = users(Some(&json!([{"name": "B"}, 3, null])));
        assert_eq!(us.len(), 1);
        assert!(users(Some(&json!({"name": "B"}))).is_empty());
    }

    #[test]
    fn the_ticket_object_serializes_flat_and_reads_back() {
        let e = json!({"ticket_id": 1, "helpdesk_id": "2", "stage": "2",
            "agents": [{"id": {"open_id": "ou_a"}}], "closed_by": {"name": "C"}});
        let t = ticket(e.as_object().unwrap(), &mut Vec::new()).unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["ticket_id"], "1");
        assert_eq!(v["stage"], "human");
        assert_eq!(v["agents"][0]["open_id"], "ou_a");
        assert_eq!(v["collaborators"], json!([]));
        assert_eq!(v["closed_by"]["name"], "C");
        assert!(v.get("fields").is_none());
        let back: Ticket = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }
}
