//! Any other Lark event type → `com.larksuite.raw.v1` (normalized-schema.md §4): the event as
//! Lark sent it, minus the verification token, for consumers who want what v1 does not model.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{base_attributes, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing, RouteVars, RAW_SCHEMA, RAW_TYPE};
use crate::VerifiedEvent;

#[derive(Serialize)]
struct RawData<'a> {
    schema: Option<&'a str>,
    event_type: &'a str,
    header: Option<Map<String, Value>>,
    event: &'a Value,
}

/// Wrap any verified event as `com.larksuite.raw.v1`. `received_ms` stands in for an absent or
/// unreadable `create_time`.
pub fn normalize(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    envelope(ev, received_ms, warnings, EventClass::Raw, None)
}

/// The raw envelope as `class`, with `deadletterreason` when given.
pub(super) fn envelope(
    ev: &VerifiedEvent,
    received_ms: i64,
    warnings: &mut Warnings,
    class: EventClass,
    deadletterreason: Option<String>,
) -> Result<Outgoing, NormalizeError> {
    let mut attrs = base_attributes(ev, received_ms, warnings);
    attrs.ty = RAW_TYPE;
    attrs.dataschema = RAW_SCHEMA;
    attrs.subject = ev.event_type().to_string();
    attrs.partitionkey = ev.tenant_key().unwrap_or(ev.event_type()).to_string();
    attrs.deadletterreason = deadletterreason;
    let data = RawData {
        schema: ev.schema(),
        event_type: ev.event_type(),
        header: ev.header_without_token(),
        event: ev.event(),
    };
    let route = RouteVars {
        helpdesk_id: None,
        event_type: ev.event_type().to_string(),
        tenant_key: ev.tenant_key().map(str::to_string),
        app_id: ev.app_id().map(str::to_string),
    };
    Outgoing::new(class, attrs, route, &data).map_err(|_| NormalizeError::Serialize)
}
