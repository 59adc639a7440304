//! Body forms (lark-protocol.md §2): challenge, v2 event, legacy v1 event — detected from the
//! decrypted JSON object, in the SDKs' order (`type`, then `schema`, then `uuid`).

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
    pub header: Option<Map<String, Value>>,
    pub event: Value,
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
            event: m.remove("event").unwrap_or(Value::Null),
            header: Some(header),
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
            event,
        })));
    }
    Err(Rejection::bad_request(
        "unknown body form: neither a challenge nor a v1/v2 event",
    ))
}
