//! The event as published: CloudEvents 1.0 attributes (normalized-schema.md §1) plus the bytes
//! every sink needs, serialized once. Sinks read this; they know nothing of Lark's wire format.

use bytes::Bytes;
use serde::Serialize;

pub const TICKET_CREATED_TYPE: &str = "com.larksuite.helpdesk.ticket.created.v1";
pub const TICKET_CREATED_SCHEMA: &str = "urn:lark-bridge:schema:helpdesk.ticket.created:v1";
pub const RAW_TYPE: &str = "com.larksuite.raw.v1";
pub const RAW_SCHEMA: &str = "urn:lark-bridge:schema:raw:v1";
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// Which schema (and so which topic/subject template) an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    TicketCreated,
    Raw,
}

/// CloudEvents context attributes, in the order of normalized-schema.md §1.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attributes {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub subject: String,
    pub time: String,
    pub datacontenttype: &'static str,
    pub dataschema: &'static str,
    pub partitionkey: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub larktenantkey: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub larkappid: Option<String>,
    pub larkeventtype: String,
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
        v.push(("larkeventtype", self.larkeventtype.as_str()));
        v
    }
}

/// Values a topic or subject template may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteVars {
    pub helpdesk_id: Option<String>,
    pub event_type: String,
    pub tenant_key: Option<String>,
    pub app_id: Option<String>,
}

/// One event ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub class: EventClass,
    pub attrs: Attributes,
    pub route: RouteVars,
    /// The whole structured CloudEvent, JSON.
    pub structured: Bytes,
    /// `data` alone, JSON (binary mode).
    pub data: Bytes,
}

#[derive(Serialize)]
struct Structured<'a> {
    #[serde(flatten)]
    attrs: &'a Attributes,
    data: &'a serde_json::value::RawValue,
}

impl Outgoing {
    /// Serialize `data` once and wrap it in the structured envelope.
    pub fn new<D: Serialize>(
        class: EventClass,
        attrs: Attributes,
        route: RouteVars,
        data: &D,
    ) -> Result<Outgoing, serde_json::Error> {
        let data = serde_json::value::to_raw_value(data)?;
        let structured = serde_json::to_vec(&Structured {
            attrs: &attrs,
            data: &data,
        })?;
        let data = Bytes::from(data.get().as_bytes().to_vec());
        Ok(Outgoing {
            class,
            attrs,
            route,
            structured: Bytes::from(structured),
            data,
        })
    }

    /// The message key: the CloudEvents partition key (helpdesk_id for tickets).
    pub fn key(&self) -> &str {
        &self.attrs.partitionkey
    }
}
