//! The consumer's side: read what lark-bridge published back into typed events.
//!
//! A message arrives in one of two content modes (normalized-schema.md §3):
//!
//! - **structured**: the body is the whole CloudEvent as JSON and the only CloudEvents header is
//!   the content type ([`STRUCTURED_CONTENT_TYPE`](crate::event::STRUCTURED_CONTENT_TYPE));
//! - **binary**: the body is `data` alone and every attribute is a header, `ce_{name}` on Kafka
//!   (raw UTF-8 values) or `ce-{name}` on NATS (values percent-encoded per the CloudEvents NATS
//!   binding, as in HTTP).
//!
//! [`CloudEvent::from_message`] tells them apart the way the CloudEvents SDKs do (a
//! `specversion` attribute header means binary) and returns a [`CloudEvent`] whose `data` is
//! any [`Deserialize`] type, normally one of the helpdesk `data` types ([`TicketCreated`],
//! [`TicketUpdated`], [`TicketMessageCreated`], [`NotificationApprove`]; a consumer of a topic
//! the whole family is routed to reads `CloudEvent<serde_json::Value>` first and dispatches on
//! `ty`):
//!
//! ```
//! use lark_protocol::consumer::{Binding, TicketCreated};
//!
//! // A binary-mode Kafka message: `data` as the value, attributes as `ce_` headers.
//! let headers = [
//!     ("content-type", "application/json"),
//!     ("ce_specversion", "1.0"),
//!     ("ce_id", "5e3702a84e847582be8db7fb73283c02"),
//!     ("ce_source", "urn:lark:app:cli_9f5343c580712544"),
//!     ("ce_type", "com.larksuite.helpdesk.ticket.created.v1"),
//!     ("ce_subject", "6626871355780366331"),
//!     ("ce_time", "2020-12-23T12:19:49.000Z"),
//!     ("ce_dataschema", "urn:lark-bridge:schema:helpdesk.ticket.created:v1"),
//!     ("ce_partitionkey", "6626871355780366330"),
//!     ("ce_larkeventtype", "helpdesk.ticket.created_v1"),
//! ];
//! let value = br#"{"ticket_id":"6626871355780366331","helpdesk_id":"6626871355780366330"}"#;
//! let header = |name: &str| {
//!     headers
//!         .iter()
//!         .find(|(k, _)| k.eq_ignore_ascii_case(name))
//!         .map(|(_, v)| v.to_string())
//! };
//! let event = TicketCreated::from_message(Binding::Kafka, header, value).unwrap();
//! assert_eq!(event.id, "5e3702a84e847582be8db7fb73283c02");
//! assert_eq!(event.data.helpdesk_id, "6626871355780366330");
//! assert_eq!(event.data.guest, None);
//! ```
//!
//! Pure like the rest of the crate: it never touches a socket, so it works with any Kafka or
//! NATS client (the examples under `examples/consumers/rust/` use rdkafka and async-nats).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::event::DATA_CONTENT_TYPE;
use crate::normalize::notification_approve::NotificationApproveData;
use crate::normalize::ticket_created::TicketData;
use crate::normalize::ticket_message_created::TicketMessageData;
use crate::normalize::ticket_updated::TicketUpdatedData;

/// A `com.larksuite.helpdesk.ticket.created.v1` event, as a consumer reads it.
pub type TicketCreated = CloudEvent<TicketData>;
/// A `com.larksuite.helpdesk.ticket.updated.v1` event, as a consumer reads it.
pub type TicketUpdated = CloudEvent<TicketUpdatedData>;
/// A `com.larksuite.helpdesk.ticket_message.created.v1` event, as a consumer reads it.
pub type TicketMessageCreated = CloudEvent<TicketMessageData>;
/// A `com.larksuite.helpdesk.notification.approve.v1` event, as a consumer reads it.
pub type NotificationApprove = CloudEvent<NotificationApproveData>;

/// A CloudEvent as lark-bridge publishes it (normalized-schema.md §1), owned, with typed `data`.
///
/// Deserializes from a structured-mode body; [`CloudEvent::from_binary`] builds it from a
/// binary-mode message. Serializing it gives the structured JSON back, attributes in the order
/// the bridge writes them (but for `traceparent` / `tracestate`, which the bridge writes first).
/// Unknown attributes are ignored (v1 grows additively).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<D> {
    /// CloudEvents spec version: `"1.0"`.
    pub specversion: String,
    /// Lark's event id; the key to be idempotent on (Kafka delivers at least once).
    pub id: String,
    /// `urn:lark:app:{app_id}` (`urn:lark:app:unknown` without an app id).
    pub source: String,
    /// CloudEvents `type`, e.g. [`TICKET_CREATED_TYPE`](crate::event::TICKET_CREATED_TYPE).
    #[serde(rename = "type")]
    pub ty: String,
    /// `ticket_id` for tickets; Lark's event type for raw events.
    pub subject: String,
    /// Lark's create time (else the bridge's receive time), RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The content type of `data`: `application/json`.
    pub datacontenttype: String,
    /// The schema URN of `data`, e.g.
    /// [`TICKET_CREATED_SCHEMA`](crate::event::TICKET_CREATED_SCHEMA).
    pub dataschema: String,
    /// Partitioning extension (also the Kafka key): `helpdesk_id` for tickets.
    pub partitionkey: String,
    /// Extension: Lark's `tenant_key`, when Lark sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub larktenantkey: Option<String>,
    /// Extension: Lark's `app_id`, when Lark sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub larkappid: Option<String>,
    /// Extension: Lark's own event type, e.g. `helpdesk.ticket.created_v1`.
    pub larkeventtype: String,
    /// Extension of dead letters: why the normalizer refused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadletterreason: Option<String>,
    /// Distributed-tracing extension: the W3C `traceparent` of the bridge's publish span, when
    /// the bridge exports traces. Start the consumer's span as its child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Distributed-tracing extension: the W3C `tracestate` that goes with `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The event's data, e.g. [`TicketData`].
    pub data: D,
}

/// The transport a message came over, which fixes how binary-mode attributes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Kafka: `ce_{name}` headers, values as raw UTF-8.
    Kafka,
    /// NATS (and HTTP): `ce-{name}` headers, values percent-encoded.
    Nats,
}

impl Binding {
    /// The prefix of attribute headers in binary mode: `ce_` or `ce-`.
    pub fn prefix(self) -> &'static str {
        match self {
            Binding::Kafka => "ce_",
            Binding::Nats => "ce-",
        }
    }
}

/// Which content mode a message was published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// The body is the whole CloudEvent as JSON.
    Structured,
    /// The body is `data`; the attributes are headers.
    Binary,
}

/// Why a message could not be read as a CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// A required attribute is missing (binary mode: its header is absent).
    #[error("attribute {0} is missing")]
    MissingAttribute(&'static str),
    /// A NATS header value is not valid percent-encoded UTF-8.
    #[error("header of attribute {0} is not valid percent-encoded UTF-8")]
    BadEncoding(&'static str),
    /// The event is not CloudEvents 1.0.
    #[error("specversion {0:?} is not 1.0")]
    SpecVersion(String),
    /// The structured body or the binary `data` is not the expected JSON.
    #[error("body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Required attributes, as [`CloudEvent::from_binary`] asks for them.
const REQUIRED: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "dataschema",
    "partitionkey",
];

impl ContentMode {
    /// The mode of a message on `binding`, given a header lookup: binary when a
    /// `specversion` attribute header (`ce_specversion` / `ce-specversion`) is present, as the
    /// CloudEvents SDKs decide.
    pub fn detect(binding: Binding, header: impl Fn(&str) -> Option<String>) -> ContentMode {
        if header(&format!("{}specversion", binding.prefix())).is_some() {
            ContentMode::Binary
        } else {
            ContentMode::Structured
        }
    }
}

impl<D: DeserializeOwned> CloudEvent<D> {
    /// Read a structured-mode body: the whole CloudEvent as JSON.
    pub fn from_structured(body: &[u8]) -> Result<Self, ConsumeError> {
        let event: Self = serde_json::from_slice(body)?;
        check_specversion(&event.specversion)?;
        Ok(event)
    }

    /// Build an event from a binary-mode message: `attribute(name)` returns the value of the
    /// CloudEvents attribute `name` (`"id"`, `"type"`, `"larktenantkey"`, …, and
    /// `"datacontenttype"`), already decoded, or `None` when the message does not carry it;
    /// `data` is the message body. [`CloudEvent::from_message`] supplies `attribute` from the
    /// headers of a Kafka or NATS message.
    pub fn from_binary(
        attribute: impl Fn(&str) -> Option<String>,
        data: &[u8],
    ) -> Result<Self, ConsumeError> {
        let [specversion, id, source, ty, subject, time, dataschema, partitionkey] =
            REQUIRED.map(|name| attribute(name).ok_or(ConsumeError::MissingAttribute(name)));
        let specversion = specversion?;
        check_specversion(&specversion)?;
        Ok(CloudEvent {
            specversion,
            id: id?,
            source: source?,
            ty: ty?,
            subject: subject?,
            time: time?,
            datacontenttype: attribute("datacontenttype")
                .unwrap_or_else(|| DATA_CONTENT_TYPE.to_string()),
            dataschema: dataschema?,
            partitionkey: partitionkey?,
            larktenantkey: attribute("larktenantkey"),
            larkappid: attribute("larkappid"),
            larkeventtype: attribute("larkeventtype")
                .ok_or(ConsumeError::MissingAttribute("larkeventtype"))?,
            deadletterreason: attribute("deadletterreason"),
            traceparent: attribute("traceparent"),
            tracestate: attribute("tracestate"),
            data: serde_json::from_slice(data)?,
        })
    }

    /// Read a message in either content mode. `header(name)` returns the value of the header
    /// `name` as received (for NATS still percent-encoded) and should match names ASCII
    /// case-insensitively, as both bindings do; `body` is the message value or payload.
    ///
    /// Binary mode ([`ContentMode::detect`]) takes each attribute from its `ce_`/`ce-` header
    /// (percent-decoded on NATS) and `datacontenttype` from `ce-datacontenttype` or else the
    /// `content-type` header; structured mode parses the body.
    pub fn from_message(
        binding: Binding,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<Self, ConsumeError> {
        match ContentMode::detect(binding, &header) {
            ContentMode::Structured => Self::from_structured(body),
            ContentMode::Binary => {
                // Decoding errors are kept aside: `from_binary`'s lookup cannot fail.
                let bad = std::cell::Cell::new(None);
                let attribute = |name: &str| {
                    let raw = header(&format!("{}{name}", binding.prefix()));
                    let raw = match (raw, name) {
                        (None, "datacontenttype") => return header("content-type"),
                        (raw, _) => raw?,
                    };
                    match binding {
                        Binding::Kafka => Some(raw),
                        Binding::Nats => percent_decode(&raw).or_else(|| {
                            bad.set(Some(attribute_name(name)));
                            None
                        }),
                    }
                };
                let event = Self::from_binary(attribute, body);
                match bad.get() {
                    Some(name) => Err(ConsumeError::BadEncoding(name)),
                    None => event,
                }
            }
        }
    }
}

/// The `'static` name of an attribute this module asks for.
fn attribute_name(name: &str) -> &'static str {
    REQUIRED
        .into_iter()
        .chain([
            "datacontenttype",
            "larktenantkey",
            "larkappid",
            "larkeventtype",
        ])
        .find(|n| *n == name)
        .unwrap_or("unknown")
}

fn check_specversion(v: &str) -> Result<(), ConsumeError> {
    if v == "1.0" {
        Ok(())
    } else {
        Err(ConsumeError::SpecVersion(v.to_string()))
    }
}

/// Decode a percent-encoded header value (the CloudEvents NATS and HTTP bindings); `None` when
/// a `%` is not followed by two hex digits or the bytes are not UTF-8.
pub fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Outgoing, STRUCTURED_CONTENT_TYPE};
    use crate::normalize::ticket_created;
    use crate::{Inbound, SignatureHeaders, Verifier};
    use serde_json::Value;

    /// The seed's example event (normalized-schema.md §2), input and normalized output.
    const SEED_INPUT: &str = include_str!("../../../tests/golden/seed.input.json");
    const SEED_NORMALIZED: &str = include_str!("../../../tests/golden/seed.normalized.json");

    fn normalize(input: &[u8]) -> Outgoing {
        let Inbound::Event(ev) = Verifier::new(vec![], vec![], 0)
            .verify(SignatureHeaders::default(), input, 0)
            .unwrap()
        else {
            panic!("not an event")
        };
        ticket_created::normalize(&ev, 0, &mut Vec::new()).unwrap()
    }

    /// Header lookup over pairs, case-insensitive like the bindings.
    fn lookup(pairs: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
        |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }

    /// The headers a sink sets in binary mode (src/sink/{kafka,nats}.rs, normalized-schema.md §3).
    fn binary_headers(out: &Outgoing, binding: Binding) -> Vec<(String, String)> {
        let mut h = vec![("content-type".to_string(), DATA_CONTENT_TYPE.to_string())];
        if binding == Binding::Nats {
            h.push(("Nats-Msg-Id".into(), out.attrs.id.clone()));
            h.push(("ce-datacontenttype".into(), DATA_CONTENT_TYPE.into()));
        }
        for (name, value) in out.attrs.binary_pairs() {
            let value = match binding {
                Binding::Kafka => value.to_string(),
                Binding::Nats => value
                    .bytes()
                    .map(|b| match b {
                        b' ' | b'"' | b'%' => format!("%{b:02X}"),
                        b if !b.is_ascii() => format!("%{b:02X}"),
                        b => (b as char).to_string(),
                    })
                    .collect(),
            };
            h.push((format!("{}{name}", binding.prefix()), value));
        }
        h
    }

    #[test]
    fn the_golden_seed_deserializes_and_round_trips() {
        let event = TicketCreated::from_structured(SEED_NORMALIZED.as_bytes()).unwrap();
        assert_eq!(event.id, "5e3702a84e847582be8db7fb73283c02");
        assert_eq!(event.ty, crate::event::TICKET_CREATED_TYPE);
        assert_eq!(event.larktenantkey.as_deref(), Some("2ca1d211f64f6438"));
        assert_eq!(event.data.ticket_id, "6626871355780366331");
        assert_eq!(event.data.helpdesk_id, "6626871355780366330");
        assert_eq!(event.data.channel.as_deref(), Some("other"));
        assert_eq!(event.data.channel_code, Some(0));
        assert_eq!(
            event.data.guest.as_ref().unwrap().user_id.as_deref(),
            Some("e33ggbyz")
        );
        assert_eq!(event.data.customized_fields[0].key_name, "key");
        // Serializing gives the same JSON value back.
        let back = serde_json::to_value(&event).unwrap();
        let golden: Value = serde_json::from_str(SEED_NORMALIZED).unwrap();
        assert_eq!(back, golden);
        let again: TicketCreated = serde_json::from_value(back).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn the_published_bytes_round_trip_exactly() {
        let out = normalize(SEED_INPUT.as_bytes());
        let event = TicketCreated::from_structured(&out.structured).unwrap();
        // Same attribute order as the bridge, so the bytes are identical, not just the value.
        assert_eq!(serde_json::to_vec(&event).unwrap(), out.structured);
        assert_eq!(serde_json::to_vec(&event.data).unwrap(), out.data);
        assert_eq!(
            event,
            TicketCreated::from_structured(SEED_NORMALIZED.as_bytes()).unwrap()
        );
    }

    #[test]
    fn both_modes_on_both_bindings_give_the_same_event() {
        let mut input: Value = serde_json::from_str(SEED_INPUT).unwrap();
        // A value the NATS binding must percent-encode.
        input["header"]["tenant_key"] = "租户 \"1\" 100%".into();
        let out = normalize(&serde_json::to_vec(&input).unwrap());
        let want = TicketCreated::from_structured(&out.structured).unwrap();
        assert_eq!(want.larktenantkey.as_deref(), Some("租户 \"1\" 100%"));
        for binding in [Binding::Kafka, Binding::Nats] {
            let structured = vec![
                (
                    "content-type".to_string(),
                    STRUCTURED_CONTENT_TYPE.to_string(),
                ),
                ("Nats-Msg-Id".to_string(), out.attrs.id.clone()),
            ];
            assert_eq!(
                ContentMode::detect(binding, lookup(&structured)),
                ContentMode::Structured
            );
            let got =
                TicketCreated::from_message(binding, lookup(&structured), &out.structured).unwrap();
            assert_eq!(got, want, "{binding:?} structured");

            let binary = binary_headers(&out, binding);
            assert_eq!(
                ContentMode::detect(binding, lookup(&binary)),
                ContentMode::Binary
            );
            let got = TicketCreated::from_message(binding, lookup(&binary), &out.data).unwrap();
            assert_eq!(got, want, "{binding:?} binary");
        }
    }

    #[test]
    fn binary_mode_errors() {
        let out = normalize(SEED_INPUT.as_bytes());
        let mut headers = binary_headers(&out, Binding::Nats);
        headers.retain(|(k, _)| k != "ce-source");
        let err = TicketCreated::from_message(Binding::Nats, lookup(&headers), &out.data);
        assert!(matches!(err, Err(ConsumeError::MissingAttribute("source"))));

        let mut headers = binary_headers(&out, Binding::Nats);
        headers.retain(|(k, _)| k != "ce-larkappid");
        headers.push(("ce-larkappid".into(), "%E5%BC".into()));
        let err = TicketCreated::from_message(Binding::Nats, lookup(&headers), &out.data);
        assert!(matches!(err, Err(ConsumeError::BadEncoding("larkappid"))));

        let headers = binary_headers(&out, Binding::Kafka);
        let err = TicketCreated::from_message(Binding::Kafka, lookup(&headers), b"{}");
        assert!(matches!(err, Err(ConsumeError::Json(_))));

        let body = SEED_NORMALIZED.replace("\"1.0\"", "\"0.3\"");
        let err = TicketCreated::from_structured(body.as_bytes());
        assert!(matches!(err, Err(ConsumeError::SpecVersion(v)) if v == "0.3"));
    }

    #[test]
    fn consumers_ignore_fields_added_later_in_v1() {
        let mut v: Value = serde_json::from_str(SEED_NORMALIZED).unwrap();
        v["newattribute"] = "x".into();
        v["data"]["new_field"] = 1.into();
        let event: TicketCreated = serde_json::from_value(v).unwrap();
        assert_eq!(event.data.ticket_id, "6626871355780366331");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%22c%25d").as_deref(), Some("a b\"c%d"));
        assert_eq!(percent_decode("%E5%BC%A0").as_deref(), Some("张"));
        assert_eq!(percent_decode("%e5%bc%a0").as_deref(), Some("张"));
        assert_eq!(
            percent_decode("urn:lark:app:cli_1").as_deref(),
            Some("urn:lark:app:cli_1")
        );
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%E5%BC"), None, "not UTF-8");
    }
}
