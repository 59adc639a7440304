//! Body forms (lark-protocol.md §2): challenge, v2 event, legacy v1 event — detected from the
//! decrypted JSON object, in the SDKs' order (`type`, then `schema`, then `uuid`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Rejection;

/// Which envelope an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The current envelope: `schema` "2.0", with `header` and `event`.
    V2,
    /// The legacy envelope: `uuid`, `token`, `ts`, `type` and `event` at the top level.
    V1,
}

/// A form detected from a plaintext body, before the token check.
#[derive(Debug)]
pub(crate) enum Form {
    Challenge {
        challenge: String,
        token: Option<Value>,
    },
    Event(Box<EventParts>),
    /// An event envelope whose id or type is missing or malformed. The refusal (lark-protocol.md
    /// §6 step 8) waits for the token check (step 6): a request with a wrong token is a 401
    /// whatever else is wrong with it.
    BadEvent {
        token: Option<Value>,
        rejection: Rejection,
    },
}

/// The parts of an event every later step needs. Fields are read once, here.
#[derive(Debug, Clone)]
pub(crate) struct EventParts {
    pub version: Version,
    pub event_id: String,
    pub event_type: String,
    pub create_time: Option<Value>,
    pub app_id: Option<String>,
    pub tenant_key: Option<String>,
    pub schema: Option<String>,
    pub token: Option<Value>,
    /// v2 header (for raw forwarding), verbatim.
    pub header: Option<Header>,
    pub event: EventBody,
}

/// The v2 header as kept for raw forwarding: the parsed object (general path) or its JSON text
/// (fast path), parsed only if an event is forwarded raw or dead-lettered.
#[derive(Debug, Clone)]
pub(crate) enum Header {
    Map(Map<String, Value>),
    Json(Box<RawValue>),
}

impl Header {
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        match self {
            Header::Map(m) => m.clone(),
            // It was read as an object with these very bytes.
            Header::Json(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
        }
    }
}

/// Lark's `event` object: parsed (general path), or its JSON text (fast path), parsed into a
/// `Value` only if something asks for one — the typed normalizers read the text directly.
#[derive(Debug, Clone)]
pub(crate) struct EventBody {
    json: Option<Box<RawValue>>,
    value: std::sync::OnceLock<Value>,
}

impl EventBody {
    pub(crate) fn parsed(v: Value) -> EventBody {
        EventBody {
            json: None,
            value: std::sync::OnceLock::from(v),
        }
    }

    pub(crate) fn json(raw: Box<RawValue>) -> EventBody {
        EventBody {
            json: Some(raw),
            value: std::sync::OnceLock::new(),
        }
    }

    /// The event as a `Value` (parsed on first use on the fast path; the text was read as valid
    /// JSON already, so this cannot fail).
    pub(crate) fn value(&self) -> &Value {
        self.value.get_or_init(|| {
            self.json
                .as_ref()
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or(Value::Null)
        })
    }

    /// The event's JSON text, when it was kept as text.
    pub(crate) fn text(&self) -> Option<&str> {
        self.json.as_deref().map(RawValue::get)
    }
}

/// A decrypted (or plain) body that is a JSON object: either read by the fast path into the
/// parts of an event, or as a whole object for [`detect`].
#[derive(Debug)]
pub(crate) enum Plain {
    Event(Box<EventParts>),
    Object(Map<String, Value>),
}

impl Plain {
    /// The form of the body: the fast path's event as it is, any other object through
    /// [`detect`].
    pub(crate) fn detect(self) -> Result<Form, Rejection> {
        match self {
            Plain::Event(p) => Ok(Form::Event(p)),
            Plain::Object(m) => detect(m),
        }
    }
}

/// Read a plaintext body: `Some` when it is a JSON object (else `None`, for the caller's error).
/// A well-formed v2 event — the form of nearly every request — is read borrowed and typed
/// ([`fast_v2`]); anything else is parsed into a map and goes through [`detect`].
pub(crate) fn read_plaintext(plain: &[u8]) -> Option<Plain> {
    if let Some(parts) = fast_v2(plain) {
        return Some(Plain::Event(Box::new(parts)));
    }
    match serde_json::from_slice::<Value>(plain) {
        Ok(Value::Object(m)) => Some(Plain::Object(m)),
        _ => None,
    }
}

/// Whether a JSON text is an object (its first non-blank byte is `{`). A derived struct would
/// also accept an array of its fields in order; the fast paths must not.
pub(crate) fn is_object_text(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A member kept as it was sent, `null` included (`Some(Null)`, as a map lookup gives it);
/// `None` only when absent.
fn kept<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A key that sends the body to the general path whatever its value, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A v2 event exactly as [`detect`] would read it, when that is unambiguous; `None` sends the
/// body to the general path, which then decides (and words any error) as before. Unambiguous
/// means: an object without `type`, `uuid`, `challenge` or `encrypt` (which [`detect`] or the
/// verifier look at), a non-empty string `schema`, an object `header` without duplicate keys
/// whose `event_id` and `event_type` are non-empty strings and whose `app_id` and `tenant_key`
/// are strings or null. Anything else (a number where a string is expected, a duplicate key)
/// fails the typed read and takes the general path.
fn fast_v2(plain: &[u8]) -> Option<EventParts> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        schema: Cow<'a, str>,
        #[serde(borrow)]
        header: &'a RawValue,
        #[serde(borrow, default)]
        event: Option<&'a RawValue>,
        #[serde(rename = "type", default, deserialize_with = "present")]
        ty: bool,
        #[serde(default, deserialize_with = "present")]
        uuid: bool,
        #[serde(default, deserialize_with = "present")]
        challenge: bool,
        #[serde(default, deserialize_with = "present")]
        encrypt: bool,
    }
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        event_id: Cow<'a, str>,
        #[serde(borrow)]
        event_type: Cow<'a, str>,
        #[serde(default, deserialize_with = "kept")]
        create_time: Option<Value>,
        #[serde(borrow, default)]
        app_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        tenant_key: Option<Cow<'a, str>>,
        #[serde(default, deserialize_with = "kept")]
        token: Option<Value>,
    }
    if !is_object_text(plain) {
        return None;
    }
    let body: Body = serde_json::from_slice(plain).ok()?;
    if body.ty || body.uuid || body.challenge || body.encrypt || body.schema.is_empty() {
        return None;
    }
    let header_text = body.header.get();
    if !is_object_text(header_text.as_bytes()) {
        return None;
    }
    let head: Head = serde_json::from_str(header_text).ok()?;
    if head.event_id.is_empty() || head.event_type.is_empty() {
        return None;
    }
    let non_empty = |s: Option<Cow<str>>| s.filter(|s| !s.is_empty()).map(Cow::into_owned);
    Some(EventParts {
        version: Version::V2,
        event_id: head.event_id.into_owned(),
        event_type: head.event_type.into_owned(),
        create_time: head.create_time,
        app_id: non_empty(head.app_id),
        tenant_key: non_empty(head.tenant_key),
        schema: Some(body.schema.into_owned()),
        token: head.token,
        header: Some(Header::Json(body.header.to_owned())),
        event: match body.event {
            Some(raw) => EventBody::json(raw.to_owned()),
            None => EventBody::parsed(Value::Null),
        },
    })
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, Rejection> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(Rejection::bad_request(match k {
            "schema" => "schema is not a string",
            "type" => "type is not a string",
            "challenge" => "challenge is not a string",
            "event_id" => "event_id is not a string",
            "uuid" => "uuid is not a string",
            "event_type" => "event_type is not a string",
            _ => "a field is not a string",
        })),
    }
}

fn opt_string(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Detect the form of a plaintext body. Type errors on the discriminating fields are 400s.
pub(crate) fn detect(mut m: Map<String, Value>) -> Result<Form, Rejection> {
    let ty = str_field(&m, "type")?;
    let schema = str_field(&m, "schema")?.filter(|s| !s.is_empty());
    let uuid = str_field(&m, "uuid")?.filter(|s| !s.is_empty());
    if ty == Some("url_verification") {
        let challenge = str_field(&m, "challenge")?
            .ok_or(Rejection::bad_request("challenge is missing"))?
            .to_string();
        return Ok(Form::Challenge {
            challenge,
            token: m.remove("token"),
        });
    }
    str_field(&m, "challenge")?;
    if let Some(schema) = schema {
        let schema = schema.to_string();
        let header = match m.remove("header") {
            Some(Value::Object(h)) => h,
            _ => {
                return Ok(Form::BadEvent {
                    token: None,
                    rejection: Rejection::bad_request("event header is missing"),
                })
            }
        };
        let ids = (|| {
            let event_id = str_field(&header, "event_id")?
                .filter(|s| !s.is_empty())
                .ok_or(Rejection::bad_request("event_id is missing"))?
                .to_string();
            let event_type = str_field(&header, "event_type")?
                .filter(|s| !s.is_empty())
                .ok_or(Rejection::bad_request("event type is missing"))?
                .to_string();
            Ok((event_id, event_type))
        })();
        let (event_id, event_type) = match ids {
            Ok(ids) => ids,
            Err(rejection) => {
                return Ok(Form::BadEvent {
                    token: header.get("token").cloned(),
                    rejection,
                })
            }
        };
        return Ok(Form::Event(Box::new(EventParts {
            version: Version::V2,
            event_id,
            event_type,
            create_time: header.get("create_time").cloned(),
            app_id: opt_string(&header, "app_id"),
            tenant_key: opt_string(&header, "tenant_key"),
            schema: Some(schema),
            token: header.get("token").cloned(),
            event: EventBody::parsed(m.remove("event").unwrap_or(Value::Null)),
            header: Some(Header::Map(header)),
        })));
    }
    if let Some(uuid) = uuid {
        let event_id = uuid.to_string();
        let event = m.remove("event").unwrap_or(Value::Null);
        let (event_type, app_id, tenant_key) = match &event {
            Value::Object(e) => (
                str_field(e, "type")
                    .map_err(|_| Rejection::bad_request("event type is not a string"))
                    .map(|t| t.filter(|s| !s.is_empty()).map(str::to_string)),
                opt_string(e, "app_id"),
                opt_string(e, "tenant_key"),
            ),
            _ => (Ok(None), None, None),
        };
        let event_type = match event_type
            .and_then(|t| t.ok_or(Rejection::bad_request("event type is missing")))
        {
            Ok(t) => t,
            Err(rejection) => {
                return Ok(Form::BadEvent {
                    token: m.remove("token"),
                    rejection,
                })
            }
        };
        return Ok(Form::Event(Box::new(EventParts {
            version: Version::V1,
            event_id,
            event_type,
            create_time: m.get("ts").cloned(),
            app_id,
            tenant_key,
            schema: None,
            token: m.remove("token"),
            header: None,
            event: EventBody::parsed(event),
        })));
    }
    Err(Rejection::bad_request(
        "unknown body form: neither a challenge nor a v1/v2 event",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a later step can see of a form: compared between the fast path and the general one.
    fn seen(form: Result<Form, Rejection>) -> String {
        match form {
            Err(r) => format!("error {r:?}"),
            Ok(Form::Challenge { challenge, token }) => format!("challenge {challenge} {token:?}"),
            Ok(Form::BadEvent { token, rejection }) => format!("bad {token:?} {rejection:?}"),
            Ok(Form::Event(p)) => format!(
                "event {:?} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {}",
                p.version,
                p.event_id,
                p.event_type,
                p.create_time,
                p.app_id,
                p.tenant_key,
                p.schema,
                p.token,
                p.header.as_ref().map(Header::to_map),
                p.event.value()
            ),
        }
    }

    /// The fast read of a v2 envelope gives what the general path gives, for 20,000 bodies that
    /// mix, member by member, what Lark sends and what it gets wrong (whichever path then takes
    /// the body, the verifier sees the same form, the same parts and the same errors).
    #[test]
    fn the_fast_envelope_read_agrees_with_the_general_path() {
        let strings = [
            None,
            Some("null"),
            Some("\"\""),
            Some("\"x\""),
            Some("\"e\\u0031\""),
            Some("1"),
            Some("{}"),
        ];
        let top = [
            ("schema", &["\"2.0\"", "\"\"", "2", "null"][..]),
            (
                "type",
                &["\"url_verification\"", "\"event_callback\"", "1", "null"][..],
            ),
            ("uuid", &["\"u1\"", "\"\"", "3"][..]),
            ("challenge", &["\"c\"", "5"][..]),
            ("encrypt", &["\"abc\"", "null"][..]),
            ("token", &["\"t\""][..]),
            (
                "event",
                &[
                    "{\"ticket_id\":\"1\",\"type\":\"x\"}",
                    "null",
                    "[1]",
                    "\"s\"",
                ][..],
            ),
        ];
        let header_keys = ["event_id", "event_type", "app_id", "tenant_key", "token"];
        let mut next = crate::test_picker(0x9e37_79b9_7f4a_7c15u64);
        let mut fast_taken = 0;
        for _ in 0..20_000 {
            let mut members = Vec::new();
            for (key, values) in top {
                // Members that send a body to the general path are rarer, so that both paths
                // are exercised often.
                let rare = matches!(key, "type" | "uuid" | "challenge" | "encrypt");
                if (rare && next(8) == 0) || (!rare && next(4) > 0) {
                    // The first value is the usual one: most often chosen.
                    let v = if next(2) == 0 {
                        values[0]
                    } else {
                        values[next(values.len())]
                    };
                    members.push(format!("\"{key}\":{v}"));
                }
            }
            let mut header = Vec::new();
            for key in header_keys {
                let v = if next(2) == 0 {
                    Some("\"x\"")
                } else {
                    strings[next(strings.len())]
                };
                if let Some(v) = v {
                    header.push(format!("\"{key}\":{v}"));
                }
            }
            match next(6) {
                0 => header.push("\"create_time\":\"1608725989000\"".into()),
                1 => header.push("\"create_time\":null".into()),
                2 if !header.is_empty() => header.push(header[0].clone()), // a duplicate key
                _ => {}
            }
            match next(5) {
                0 => {}
                1 => members.push("\"header\":[1]".into()),
                _ => members.push(format!("\"header\":{{{}}}", header.join(","))),
            }
            if next(10) == 0 && !members.is_empty() {
                let again = members[next(members.len())].clone();
                members.push(again);
            }
            let text = format!("{{{}}}", members.join(","));
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) else {
                unreachable!("{text}")
            };
            let general = seen(detect(m));
            let plain = read_plaintext(text.as_bytes()).expect("an object");
            if matches!(plain, Plain::Event(_)) {
                fast_taken += 1;
            }
            assert_eq!(seen(plain.detect()), general, "{text}");
        }
        assert!(fast_taken > 500, "the fast read took only {fast_taken}");
        assert!(read_plaintext(b"[\"2.0\",{}]").is_none());
    }
}
