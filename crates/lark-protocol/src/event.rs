//! The event as published: CloudEvents 1.0 attributes (normalized-schema.md §1) plus the bytes
//! every sink needs, serialized once. Sinks read this; they know nothing of Lark's wire format.

use bytes::Bytes;
use serde::Serialize;

/// CloudEvents `type` of a normalized `helpdesk.ticket.created_v1` event.
pub const TICKET_CREATED_TYPE: &str = "com.larksuite.helpdesk.ticket.created.v1";
/// `dataschema` of a normalized ticket-created event (its JSON Schema's `$id`).
pub const TICKET_CREATED_SCHEMA: &str = "urn:lark-bridge:schema:helpdesk.ticket.created:v1";
/// CloudEvents `type` of a normalized `helpdesk.ticket.updated_v1` event.
pub const TICKET_UPDATED_TYPE: &str = "com.larksuite.helpdesk.ticket.updated.v1";
/// `dataschema` of a normalized ticket-updated event.
pub const TICKET_UPDATED_SCHEMA: &str = "urn:lark-bridge:schema:helpdesk.ticket.updated:v1";
/// CloudEvents `type` of a normalized `helpdesk.ticket_message.created_v1` event.
pub const TICKET_MESSAGE_CREATED_TYPE: &str = "com.larksuite.helpdesk.ticket_message.created.v1";
/// `dataschema` of a normalized ticket-message event.
pub const TICKET_MESSAGE_CREATED_SCHEMA: &str =
    "urn:lark-bridge:schema:helpdesk.ticket_message.created:v1";
/// CloudEvents `type` of a normalized `helpdesk.notification.approve_v1` event.
pub const NOTIFICATION_APPROVE_TYPE: &str = "com.larksuite.helpdesk.notification.approve.v1";
/// `dataschema` of a normalized notification-approval event.
pub const NOTIFICATION_APPROVE_SCHEMA: &str =
    "urn:lark-bridge:schema:helpdesk.notification.approve:v1";
/// CloudEvents `type` of any other Lark event, forwarded as Lark sent it.
pub const RAW_TYPE: &str = "com.larksuite.raw.v1";
/// `dataschema` of a raw event.
pub const RAW_SCHEMA: &str = "urn:lark-bridge:schema:raw:v1";
/// Prefix of a dead letter's broker deduplication id ([`Outgoing::msg_id`]).
pub const DEADLETTER_ID_PREFIX: &str = "deadletter:";
/// Content type of a structured-mode CloudEvent (the whole event as JSON).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// `datacontenttype` of every event, and the content type of binary-mode messages.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// Which schema (and so which topic/subject template) an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// `com.larksuite.helpdesk.ticket.created.v1`.
    TicketCreated,
    /// `com.larksuite.helpdesk.ticket.updated.v1`.
    TicketUpdated,
    /// `com.larksuite.helpdesk.ticket_message.created.v1`.
    TicketMessageCreated,
    /// `com.larksuite.helpdesk.notification.approve.v1`.
    NotificationApprove,
    /// `com.larksuite.raw.v1`: any other Lark event type.
    Raw,
    /// `com.larksuite.raw.v1` with a `deadletterreason`: a verified event the normalizer
    /// refused, kept so it can be redriven once the normalizer is fixed.
    DeadLetter,
}

impl EventClass {
    /// The four normalized helpdesk classes, in the order of helpdesk-events.md §1.
    pub const HELPDESK: [EventClass; 4] = [
        EventClass::TicketCreated,
        EventClass::TicketUpdated,
        EventClass::TicketMessageCreated,
        EventClass::NotificationApprove,
    ];

    /// The CloudEvents `type` of the class.
    pub fn cloudevents_type(self) -> &'static str {
        match self {
            EventClass::TicketCreated => TICKET_CREATED_TYPE,
            EventClass::TicketUpdated => TICKET_UPDATED_TYPE,
            EventClass::TicketMessageCreated => TICKET_MESSAGE_CREATED_TYPE,
            EventClass::NotificationApprove => NOTIFICATION_APPROVE_TYPE,
            EventClass::Raw | EventClass::DeadLetter => RAW_TYPE,
        }
    }

    /// The `dataschema` of the class (its data schema's `$id`).
    pub fn dataschema(self) -> &'static str {
        match self {
            EventClass::TicketCreated => TICKET_CREATED_SCHEMA,
            EventClass::TicketUpdated => TICKET_UPDATED_SCHEMA,
            EventClass::TicketMessageCreated => TICKET_MESSAGE_CREATED_SCHEMA,
            EventClass::NotificationApprove => NOTIFICATION_APPROVE_SCHEMA,
            EventClass::Raw | EventClass::DeadLetter => RAW_SCHEMA,
        }
    }

    /// Lark's `header.event_type` of a normalized helpdesk class; `None` for raw and dead
    /// letters (any type).
    pub fn lark_event_type(self) -> Option<&'static str> {
        use crate::normalize;
        match self {
            EventClass::TicketCreated => Some(normalize::TICKET_CREATED),
            EventClass::TicketUpdated => Some(normalize::TICKET_UPDATED),
            EventClass::TicketMessageCreated => Some(normalize::TICKET_MESSAGE_CREATED),
            EventClass::NotificationApprove => Some(normalize::NOTIFICATION_APPROVE),
            EventClass::Raw | EventClass::DeadLetter => None,
        }
    }

    /// The class Lark's `event_type` is normalized to, if v1 models it.
    pub fn from_lark_event_type(event_type: &str) -> Option<EventClass> {
        Self::HELPDESK
            .into_iter()
            .find(|c| c.lark_event_type() == Some(event_type))
    }
}

/// CloudEvents context attributes, in the order of normalized-schema.md §1.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attributes {
    /// CloudEvents spec version: always "1.0".
    pub specversion: &'static str,
    /// Lark's event id (v2 `header.event_id`, v1 `uuid`); also the dedup key.
    pub id: String,
    /// `urn:lark:app:{app_id}`, percent-encoded where needed; `unknown` without an app id.
    pub source: String,
    /// CloudEvents `type`, e.g. [`TICKET_CREATED_TYPE`] or [`RAW_TYPE`].
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// `ticket_id` for tickets; Lark's event type for raw events.
    pub subject: String,
    /// Lark's create time (else the receive time) as RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Always [`DATA_CONTENT_TYPE`].
    pub datacontenttype: &'static str,
    /// The schema URN of `data`, e.g. [`TICKET_CREATED_SCHEMA`].
    pub dataschema: &'static str,
    /// Partitioning extension: `helpdesk_id` for tickets, tenant key (else event type) for raw.
    pub partitionkey: String,
    /// Extension: Lark's `tenant_key`; omitted when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub larktenantkey: Option<String>,
    /// Extension: Lark's `app_id`; omitted when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub larkappid: Option<String>,
    /// Extension: Lark's own event type, e.g. `helpdesk.ticket.created_v1`.
    pub larkeventtype: String,
    /// Extension of dead letters only: why the normalizer refused the event (its message,
    /// e.g. `helpdesk_id is missing`); omitted on every other event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadletterreason: Option<String>,
}

impl Attributes {
    /// Attribute name/value pairs for binary mode headers (`ce_`/`ce-` + name), without
    /// `datacontenttype` (it travels as the content type).
    pub fn binary_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("specversion", self.specversion),
            ("id", self.id.as_str()),
            ("source", self.source.as_str()),
            ("type", self.ty),
            ("subject", self.subject.as_str()),
            ("time", self.time.as_str()),
            ("dataschema", self.dataschema),
            ("partitionkey", self.partitionkey.as_str()),
        ];
        if let Some(t) = &self.larktenantkey {
            v.push(("larktenantkey", t.as_str()));
        }
        if let Some(a) = &self.larkappid {
            v.push(("larkappid", a.as_str()));
        }
        if let Some(r) = &self.deadletterreason {
            v.push(("deadletterreason", r.as_str()));
        }
        v.push(("larkeventtype", self.larkeventtype.as_str()));
        v
    }
}

/// Values a topic or subject template may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteVars {
    /// `{helpdesk_id}`: set for tickets only.
    pub helpdesk_id: Option<String>,
    /// `{event_type}`: Lark's event type.
    pub event_type: String,
    /// `{tenant_key}`: Lark's tenant key, when sent.
    pub tenant_key: Option<String>,
    /// `{app_id}`: Lark's app id, when sent.
    pub app_id: Option<String>,
}

/// The W3C trace context of the publish that carries an event: the CloudEvents
/// distributed-tracing extension (`traceparent`, `tracestate`). Set by the bridge only when it
/// exports traces; a consumer's span joins the trace as a child of the publish span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-{trace id}-{span id of the publish}-{flags}`.
    pub traceparent: String,
    /// The vendor entries of the trace, when there are any.
    pub tracestate: Option<String>,
}

/// One event ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Which schema, and so which topic or subject, the event goes to.
    pub class: EventClass,
    /// The CloudEvents attributes.
    pub attrs: Attributes,
    /// Values for the topic and subject templates.
    pub route: RouteVars,
    /// The whole structured CloudEvent, JSON.
    pub structured: Bytes,
    /// `data` alone, JSON (binary mode).
    pub data: Bytes,
    /// A broker deduplication id to use instead of the derived one ([`Outgoing::msg_id`]):
    /// `redrive` sets it when it re-files a letter that still fails, so that JetStream does
    /// not drop the new letter as a copy of the old.
    pub msg_id_override: Option<String>,
    /// The trace context of the publish (distributed-tracing extension), added by the bridge
    /// just before it publishes; `None` when traces are off. Not part of [`Outgoing::structured`]
    /// (serialized before the publish span exists): read the body through
    /// [`Outgoing::structured_body`] and the binary attributes through
    /// [`Outgoing::binary_pairs`], which add it.
    pub trace: Option<TraceContext>,
}

impl Outgoing {
    /// Serialize `data` once and wrap it in the structured envelope.
    pub fn new<D: Serialize>(
        class: EventClass,
        attrs: Attributes,
        route: RouteVars,
        data: &D,
    ) -> Result<Outgoing, serde_json::Error> {
        // One buffer: the attributes' object, reopened for `"data":…`; `data` is then a slice
        // of the same bytes (no second serialization, no copy).
        let mut buf = Vec::with_capacity(1024);
        serde_json::to_writer(&mut buf, &attrs)?;
        buf.pop(); // the attributes' closing `}` (they are never empty: specversion)
        buf.extend_from_slice(b",\"data\":");
        let start = buf.len();
        serde_json::to_writer(&mut buf, data)?;
        let end = buf.len();
        buf.push(b'}');
        let structured = Bytes::from(buf);
        let data = structured.slice(start..end);
        Ok(Outgoing {
            class,
            attrs,
            route,
            structured,
            data,
            msg_id_override: None,
            trace: None,
        })
    }

    /// The structured-mode body: [`Outgoing::structured`], with `traceparent` (and
    /// `tracestate`) as the first attributes when a trace context is set.
    pub fn structured_body(&self) -> Bytes {
        let Some(t) = &self.trace else {
            return self.structured.clone();
        };
        // The envelope is a non-empty JSON object: splice the attributes in after its `{`
        // rather than serialize the whole event again.
        let mut out = Vec::with_capacity(self.structured.len() + 128);
        out.push(b'{');
        for (name, value) in [
            ("traceparent", Some(&t.traceparent)),
            ("tracestate", t.tracestate.as_ref()),
        ] {
            if let Some(v) = value {
                out.extend_from_slice(format!("\"{name}\":").as_bytes());
                // A string always serializes.
                out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
                out.push(b',');
            }
        }
        out.extend_from_slice(self.structured.get(1..).unwrap_or_default());
        Bytes::from(out)
    }

    /// Attribute name/value pairs for binary-mode headers: [`Attributes::binary_pairs`] plus
    /// `traceparent` and `tracestate` when a trace context is set.
    pub fn binary_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut v = self.attrs.binary_pairs();
        if let Some(t) = &self.trace {
            v.push(("traceparent", t.traceparent.as_str()));
            if let Some(s) = &t.tracestate {
                v.push(("tracestate", s.as_str()));
            }
        }
        v
    }

    /// The message key: the CloudEvents partition key (helpdesk_id for tickets).
    pub fn key(&self) -> &str {
        &self.attrs.partitionkey
    }

    /// The broker's deduplication id (`Nats-Msg-Id`): the event id, except for a dead letter,
    /// whose id is `deadletter:{id}` so that it never collides with the normal publish of the
    /// same event after a redrive.
    pub fn msg_id(&self) -> std::borrow::Cow<'_, str> {
        if let Some(id) = &self.msg_id_override {
            return id.as_str().into();
        }
        match self.class {
            EventClass::DeadLetter => format!("{DEADLETTER_ID_PREFIX}{}", self.attrs.id).into(),
            _ => self.attrs.id.as_str().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Outgoing {
        let attrs = Attributes {
            specversion: "1.0",
            id: "ev_1".into(),
            source: "urn:lark:app:cli_1".into(),
            ty: TICKET_CREATED_TYPE,
            subject: "t1".into(),
            time: "2020-12-23T12:19:49.000Z".into(),
            datacontenttype: DATA_CONTENT_TYPE,
            dataschema: TICKET_CREATED_SCHEMA,
            partitionkey: "h1".into(),
            larktenantkey: None,
            larkappid: None,
            larkeventtype: "helpdesk.ticket.created_v1".into(),
            deadletterreason: None,
        };
        Outgoing::new(
            EventClass::TicketCreated,
            attrs,
            RouteVars::default(),
            &serde_json::json!({"ticket_id": "t1"}),
        )
        .unwrap()
    }

    #[test]
    fn without_a_trace_the_bodies_and_pairs_are_unchanged() {
        let ev = event();
        assert_eq!(ev.structured_body(), ev.structured);
        assert_eq!(ev.binary_pairs(), ev.attrs.binary_pairs());
    }

    #[test]
    fn a_trace_context_becomes_attributes_in_both_modes() {
        let mut ev = event();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        ev.trace = Some(TraceContext {
            traceparent: tp.into(),
            tracestate: Some("congo=t61rcWkgMzE,q=\"x\"".into()),
        });
        let body: serde_json::Value = serde_json::from_slice(&ev.structured_body()).unwrap();
        let plain: serde_json::Value = serde_json::from_slice(&ev.structured).unwrap();
        assert_eq!(body["traceparent"], tp);
        assert_eq!(body["tracestate"], "congo=t61rcWkgMzE,q=\"x\"");
        let mut rest = body.as_object().unwrap().clone();
        rest.remove("traceparent");
        rest.remove("tracestate");
        assert_eq!(
            serde_json::Value::Object(rest),
            plain,
            "nothing else changed"
        );
        let pairs = ev.binary_pairs();
        assert!(pairs.contains(&("traceparent", tp)));
        assert!(pairs.iter().any(|(k, _)| *k == "tracestate"));
        ev.trace.as_mut().unwrap().tracestate = None;
        let body: serde_json::Value = serde_json::from_slice(&ev.structured_body()).unwrap();
        assert!(body.get("tracestate").is_none());
        assert!(!ev.binary_pairs().iter().any(|(k, _)| *k == "tracestate"));
    }
}
