//! The field rules every helpdesk normalizer shares (normalized-schema.md §2,
//! helpdesk-events.md §2): integer codes sent as numbers or strings, enum labels kept next to
//! their codes, ids, timestamps, Lark's user objects and the ticket object. One place, so the
//! four event types cannot drift apart on what `"2"`, `-1` or an unknown code means.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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

/// One field of Lark's event as the rules below read it, whether it came from a parsed
/// `serde_json::Value` (general path) or from the typed, borrowed read of [`fast_ticket`]
/// (deserialized without allocating unless a string holds escapes): both paths go through the
/// same rules, so they cannot disagree on what a value means.
#[derive(Debug, Clone, Default)]
pub(crate) enum Field<'a> {
    #[default]
    Missing,
    Null,
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    /// A boolean, an array or an object (the rules never read into them).
    Other,
}

impl<'a> From<Option<&'a Value>> for Field<'a> {
    fn from(v: Option<&'a Value>) -> Field<'a> {
        match v {
            None => Field::Missing,
            Some(Value::Null) => Field::Null,
            Some(Value::Number(n)) => Field::Number(n.clone()),
            Some(Value::String(s)) => Field::Str(Cow::Borrowed(s)),
            Some(_) => Field::Other,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Field<'a>, E> {
                Ok(Field::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field<'a>, D::Error> {
                Field::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<'a>, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field<'a>, E> {
                Ok(Field::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field<'a>, E> {
                Ok(Field::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Field<'a>, E> {
                // serde_json reads no NaN or infinity; a float too large is an error there too.
                serde_json::Number::from_f64(v)
                    .map(Field::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Field<'a>, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Field<'a>, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Field<'a>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An integer code as Lark sends it: a number or a numeric string.
pub(crate) enum Code {
    Missing,
    Int(i64),
    NotANumber,
}

/// The code of `v`.
pub(crate) fn code<'a>(v: impl Into<Field<'a>>) -> Code {
    match v.into() {
        Field::Missing | Field::Null => Code::Missing,
        Field::Number(n) => n.as_i64().map(Code::Int).unwrap_or(Code::NotANumber),
        Field::Str(s) => s.trim().parse().map(Code::Int).unwrap_or(Code::NotANumber),
        Field::Other => Code::NotANumber,
    }
}

/// A label and its code.
pub(crate) type Labelled = (Option<Cow<'static, str>>, Option<i64>);

/// Label and code of an enum field: unknown integers keep their code with label `unknown_int`;
/// a non-number is `"unknown"` without a code; missing is `(None, None)`.
pub(crate) fn labelled<'a>(
    v: impl Into<Field<'a>>,
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
pub(crate) fn stage<'a>(v: impl Into<Field<'a>>) -> Labelled {
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
pub(crate) fn status<'a>(v: impl Into<Field<'a>>) -> Labelled {
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
pub(crate) fn id_string<'a>(v: impl Into<Field<'a>>) -> Option<String> {
    match v.into() {
        Field::Str(s) if !s.trim().is_empty() => Some(s.into_owned()),
        Field::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// A string, or `None` for anything else.
pub(crate) fn opt_str<'a>(v: impl Into<Field<'a>>) -> Option<String> {
    match v.into() {
        Field::Str(s) => Some(s.into_owned()),
        _ => None,
    }
}

/// A timestamp (lark-protocol.md §5 units) as RFC 3339 UTC with milliseconds; an unreadable one
/// is `None` and counted under `field`.
pub(crate) fn timestamp<'a>(
    v: impl Into<Field<'a>>,
    field: &'static str,
    warnings: &mut Warnings,
) -> Option<String> {
    let ms = match v.into() {
        Field::Missing | Field::Null => Ok(None),
        Field::Str(s) => time::parse_millis(&s),
        Field::Number(n) => time::number_millis(&n),
        Field::Other => Err(time::NotANumber),
    };
    match ms.map(|ms| ms.map(time::rfc3339_millis)) {
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
    ticket_fields_from(
        TicketFieldsIn {
            ticket_id: e.get("ticket_id").into(),
            helpdesk_id: e.get("helpdesk_id").into(),
            stage: e.get("stage").into(),
            status: e.get("status").into(),
            score: e.get("score").into(),
            solve: e.get("solve").into(),
            channel: e.get("channel").into(),
            created_at: e.get("created_at").into(),
            updated_at: e.get("updated_at").into(),
            closed_at: e.get("closed_at").into(),
            chat_id: e.get("chat_id").into(),
        },
        user(e.get("guest")),
        customized_fields(e.get("customized_fields")),
        warnings,
    )
}

/// The scalar fields [`ticket_fields_from`] reads, from either path.
pub(crate) struct TicketFieldsIn<'a> {
    ticket_id: Field<'a>,
    helpdesk_id: Field<'a>,
    stage: Field<'a>,
    status: Field<'a>,
    score: Field<'a>,
    solve: Field<'a>,
    channel: Field<'a>,
    created_at: Field<'a>,
    updated_at: Field<'a>,
    closed_at: Field<'a>,
    chat_id: Field<'a>,
}

/// The rules of `ticket.created.v1`'s `data`, once for both paths.
fn ticket_fields_from(
    e: TicketFieldsIn<'_>,
    guest: Option<User>,
    customized_fields: Vec<CustomizedField>,
    warnings: &mut Warnings,
) -> Result<TicketData, NormalizeError> {
    let ticket_id = id_string(e.ticket_id).ok_or(NormalizeError::MissingTicketId)?;
    let helpdesk_id = id_string(e.helpdesk_id).ok_or(NormalizeError::MissingHelpdeskId)?;
    let (stage, stage_code) = stage(e.stage);
    let (status, status_code) = status(e.status);
    // Score 0 means "not rated": the same as missing.
    let (score, score_code) = match code(e.score.clone()) {
        Code::Int(0) => (None, None),
        _ => labelled(
            e.score,
            |n| match n {
                1 => Some("unsatisfied"),
                2 => Some("neutral"),
                3 => Some("satisfied"),
                _ => None,
            },
            "unknown",
        ),
    };
    let solved = match code(e.solve) {
        Code::Int(1) => Some(false),
        Code::Int(2) => Some(true),
        _ => None,
    };
    // Lark: "other numbers: other channels".
    let (channel, channel_code) = labelled(
        e.channel,
        |n| match n {
            9 => Some("open_api"),
            2 => Some("qr_code"),
            14 => Some("share"),
            13 => Some("search"),
            _ => None,
        },
        "other",
    );
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
        created_at: timestamp(e.created_at, "created_at", warnings),
        updated_at: timestamp(e.updated_at, "updated_at", warnings),
        closed_at: timestamp(e.closed_at, "closed_at", warnings),
        chat_id: opt_str(e.chat_id),
        customized_fields,
        customized_fields_source: Cow::Borrowed(FIELDS_FROM_EVENT),
    })
}

/// Lark's user object as the typed read takes it: strings (or null) where [`user`] reads
/// strings; anything else fails the read and the event takes the general path.
#[derive(Deserialize)]
struct UserIn<'a> {
    #[serde(borrow, default)]
    id: Option<UserIdIn<'a>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    avatar_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    email: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UserIdIn<'a> {
    #[serde(borrow, default)]
    open_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    union_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

impl UserIn<'_> {
    fn into_user(self) -> User {
        let owned = |s: Option<Cow<str>>| s.map(Cow::into_owned);
        let id = self.id.unwrap_or(UserIdIn {
            open_id: None,
            union_id: None,
            user_id: None,
        });
        User {
            open_id: owned(id.open_id),
            union_id: owned(id.union_id),
            user_id: owned(id.user_id),
            name: owned(self.name),
            avatar_url: owned(self.avatar_url),
            email: owned(self.email),
        }
    }
}

/// The ticket fields of Lark's `event`, read typed and borrowed from its JSON text.
#[derive(Deserialize)]
pub(crate) struct TicketIn<'a> {
    #[serde(borrow, default)]
    ticket_id: Field<'a>,
    #[serde(borrow, default)]
    helpdesk_id: Field<'a>,
    #[serde(borrow, default)]
    guest: Option<UserIn<'a>>,
    #[serde(borrow, default)]
    stage: Field<'a>,
    #[serde(borrow, default)]
    status: Field<'a>,
    #[serde(borrow, default)]
    score: Field<'a>,
    #[serde(borrow, default)]
    solve: Field<'a>,
    #[serde(borrow, default)]
    channel: Field<'a>,
    #[serde(borrow, default)]
    created_at: Field<'a>,
    #[serde(borrow, default)]
    updated_at: Field<'a>,
    #[serde(borrow, default)]
    closed_at: Field<'a>,
    #[serde(borrow, default)]
    chat_id: Field<'a>,
    #[serde(borrow, default)]
    customized_fields: Option<&'a RawValue>,
}

/// [`ticket_fields`] of an event's JSON text without building its `Value`: `None` when the text
/// is not an object this typed read takes (a user object with a number where a string is
/// expected, a duplicate key…), and the caller then takes the general path, which decides such
/// cases. When it is `Some`, it is what [`ticket_fields`] gives for the same text (a test holds
/// the two to each other).
pub(crate) fn fast_ticket(event_json: &str) -> Option<TicketIn<'_>> {
    if !crate::envelope::is_object_text(event_json.as_bytes()) {
        return None;
    }
    serde_json::from_str(event_json).ok()
}

/// [`ticket_fields`] from the typed read of [`fast_ticket`].
pub(crate) fn ticket_fields_typed(
    e: TicketIn<'_>,
    warnings: &mut Warnings,
) -> Result<TicketData, NormalizeError> {
    let customized = match e.customized_fields {
        Some(raw) => customized_fields(Some(
            &serde_json::from_str(raw.get()).unwrap_or(Value::Null),
        )),
        None => Vec::new(),
    };
    ticket_fields_from(
        TicketFieldsIn {
            ticket_id: e.ticket_id,
            helpdesk_id: e.helpdesk_id,
            stage: e.stage,
            status: e.status,
            score: e.score,
            solve: e.solve,
            channel: e.channel,
            created_at: e.created_at,
            updated_at: e.updated_at,
            closed_at: e.closed_at,
            chat_id: e.chat_id,
        },
        e.guest.map(UserIn::into_user),
        customized,
        warnings,
    )
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

    /// The typed read and the general path agree wherever the typed read takes the text: on
    /// 20,000 events mixing, field by field, every kind of value Lark sends or gets wrong.
    #[test]
    fn the_typed_read_agrees_with_the_general_path() {
        let scalars = [
            None,
            Some("null"),
            Some("1"),
            Some("\"1\""),
            Some("2"),
            Some("\" 3 \""),
            Some("-1"),
            Some("0"),
            Some("\"\""),
            Some("\"  \""),
            Some("\"x\""),
            Some("1.5"),
            Some("true"),
            Some("[1]"),
            Some("{\"a\":1}"),
            Some("18446744073709551615"),
            Some("-9223372036854775808"),
            Some("9223372036854775807"),
            Some("1616920429000"),
            Some("\"1616920429\""),
            Some("\"1616920429.5\""),
            Some("1616920429.5"),
            Some("999999999999999999"),
            Some("1e20"),
            Some("\"\\u00e9\\\"q\""),
            Some("\"7090000000000000001\""),
        ];
        let users = [
            None,
            Some("null"),
            Some("3"),
            Some("{}"),
            Some(r#"{"id":{"open_id":"ou_1","user_id":null},"name":"A"}"#),
            Some(r#"{"id":"x","name":"B"}"#),
            Some(r#"{"id":{"open_id":7},"email":"e"}"#),
            Some(r#"{"name":"a\"b","avatar_url":"u","name":"dup"}"#),
        ];
        let customized = [
            None,
            Some("[]"),
            Some(r#"[{"id":"f1","value":"v","position":2},3]"#),
            Some(r#"{"id":1}"#),
        ];
        let names = [
            "ticket_id",
            "helpdesk_id",
            "stage",
            "status",
            "score",
            "solve",
            "channel",
            "created_at",
            "updated_at",
            "closed_at",
            "chat_id",
        ];
        let mut next = crate::test_picker(0x2545_f491_4f6c_dd1du64);
        let mut typed_taken = 0;
        for _ in 0..20_000 {
            let mut members = Vec::new();
            for name in names {
                if let Some(v) = scalars[next(scalars.len())] {
                    members.push(format!("\"{name}\":{v}"));
                }
            }
            if let Some(u) = users[next(users.len())] {
                members.push(format!("\"guest\":{u}"));
            }
            if let Some(c) = customized[next(customized.len())] {
                members.push(format!("\"customized_fields\":{c}"));
            }
            if next(8) == 0 && !members.is_empty() {
                // A duplicate key: the general path keeps the last one.
                let again = members[next(members.len())].clone();
                members.push(again);
            }
            let text = format!("{{{}}}", members.join(","));
            let value: Value = serde_json::from_str(&text).unwrap();
            let mut w_general = Vec::new();
            let general = ticket_fields(object(Some(&value)), &mut w_general);
            if let Some(typed) = fast_ticket(&text) {
                typed_taken += 1;
                let mut w_typed = Vec::new();
                let got = ticket_fields_typed(typed, &mut w_typed);
                assert_eq!(got, general, "{text}");
                assert_eq!(w_typed, w_general, "{text}");
            }
        }
        assert!(
            typed_taken > 5_000,
            "the typed read took only {typed_taken}"
        );
        assert!(fast_ticket("[1]").is_none() && fast_ticket("null").is_none());
    }

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
