//! `helpdesk.ticket.created_v1` → `com.larksuite.helpdesk.ticket.created.v1`
//! (normalized-schema.md §2). Every field is always present; unusable values become `null` or
//! `"unknown"` rather than failing the event — a ticket is never lost over a bad enum.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{base_attributes, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing, RouteVars, TICKET_CREATED_SCHEMA, TICKET_CREATED_TYPE};
use crate::{time, VerifiedEvent};

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
}

/// The ticket's guest, from Lark's `guest.id.*`, `guest.name`, `guest.avatar_url` and
/// `guest.email`; each `None` when not a string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Guest {
    /// Lark's `guest.id.open_id`.
    pub open_id: Option<String>,
    /// Lark's `guest.id.union_id`.
    pub union_id: Option<String>,
    /// Lark's `guest.id.user_id`; only sent when the app holds the user-id permission.
    pub user_id: Option<String>,
    /// The guest's display name.
    pub name: Option<String>,
    /// The guest's avatar URL.
    pub avatar_url: Option<String>,
    /// The guest's email address.
    pub email: Option<String>,
}

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

/// An integer code as Lark sends it: a number or a numeric string.
enum Code {
    Missing,
    Int(i64),
    NotANumber,
}

fn code(v: Option<&Value>) -> Code {
    match v {
        None | Some(Value::Null) => Code::Missing,
        Some(Value::Number(n)) => n.as_i64().map(Code::Int).unwrap_or(Code::NotANumber),
        Some(Value::String(s)) => s.trim().parse().map(Code::Int).unwrap_or(Code::NotANumber),
        Some(_) => Code::NotANumber,
    }
}

/// Label and code of an enum field: unknown integers keep their code with label "unknown".
fn labelled(
    v: Option<&Value>,
    label: impl Fn(i64) -> Option<&'static str>,
    unknown_int: &'static str,
) -> (Option<Cow<'static, str>>, Option<i64>) {
    match code(v) {
        Code::Missing => (None, None),
        Code::Int(n) => (
            Some(Cow::Borrowed(label(n).unwrap_or(unknown_int))),
            Some(n),
        ),
        Code::NotANumber => (Some(Cow::Borrowed("unknown")), None),
    }
}

fn id_string(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn opt_str(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn timestamp(v: Option<&Value>, field: &'static str, warnings: &mut Warnings) -> Option<String> {
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

/// Build the `data` object from Lark's `event`.
pub fn ticket_data(event: &Value, warnings: &mut Warnings) -> Result<TicketData, NormalizeError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let e = event
        .as_object()
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
    let ticket_id = id_string(e.get("ticket_id")).ok_or(NormalizeError::MissingTicketId)?;
    let helpdesk_id = id_string(e.get("helpdesk_id")).ok_or(NormalizeError::MissingHelpdeskId)?;

    let guest = e.get("guest").and_then(Value::as_object).map(|g| {
        let id = g.get("id").and_then(Value::as_object);
        let from_id = |k: &str| id.and_then(|i| opt_str(i.get(k)));
        Guest {
            open_id: from_id("open_id"),
            union_id: from_id("union_id"),
            user_id: from_id("user_id"),
            name: opt_str(g.get("name")),
            avatar_url: opt_str(g.get("avatar_url")),
            email: opt_str(g.get("email")),
        }
    });

    let (stage, stage_code) = labelled(
        e.get("stage"),
        |n| match n {
            1 => Some("bot"),
            2 => Some("human"),
            _ => None,
        },
        "unknown",
    );
    let (status, status_code) = labelled(
        e.get("status"),
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
    );
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

    let customized_fields = match e.get("customized_fields") {
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
    };

    Ok(TicketData {
        ticket_id,
        helpdesk_id,
        guest,
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
    })
}

/// Normalize a verified `helpdesk.ticket.created_v1` event. `received_ms` stands in for an
/// absent or unreadable `create_time`.
pub fn normalize(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    let data = ticket_data(ev.event(), warnings)?;
    let mut attrs = base_attributes(ev, received_ms, warnings);
    attrs.ty = TICKET_CREATED_TYPE;
    attrs.dataschema = TICKET_CREATED_SCHEMA;
    attrs.subject = data.ticket_id.clone();
    attrs.partitionkey = data.helpdesk_id.clone();
    let route = RouteVars {
        helpdesk_id: Some(data.helpdesk_id.clone()),
        event_type: ev.event_type().to_string(),
        tenant_key: ev.tenant_key().map(str::to_string),
        app_id: ev.app_id().map(str::to_string),
    };
    Outgoing::new(EventClass::TicketCreated, attrs, route, &data)
        .map_err(|_| NormalizeError::Serialize)
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
