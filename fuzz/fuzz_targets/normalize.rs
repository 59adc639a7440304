//! Envelope detection and normalization of arbitrary plaintext (normalized-schema.md): the
//! input is tried as a whole plaintext body (through a `Verifier` with no key and no token, as in `allow_unverified` mode) and, when it
//! is JSON, as Lark's `event` object inside a fixed v2 envelope; each event goes through
//! `normalize::ticket_created::normalize` and `normalize::raw::normalize`.
//!
//! Oracles: never a panic; an accepted event's CloudEvent is JSON whose fixed attributes hold
//! (id = the event id, non-empty subject and partition key, `source` = `urn:lark:app:…` in
//! printable ASCII) and
//! whose times are RFC 3339 UTC with milliseconds in the schema's exact shape (4-digit year).
#![no_main]

use lark_protocol::normalize::{raw, ticket_created};
use lark_protocol::{Inbound, SignatureHeaders, VerifiedEvent, Verifier};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const RECEIVED_MS: i64 = 1_700_000_000_123;

fuzz_target!(|data: &[u8]| {
    if let Some(ev) = plain(data) {
        check(&ev);
    }
    if let Ok(event) = serde_json::from_slice::<Value>(data) {
        let body = serde_json::json!({
            "schema": "2.0",
            "header": {
                "event_id": "ev_fuzz",
                "event_type": "helpdesk.ticket.created_v1",
                "create_time": event.get("created_at").cloned().unwrap_or(Value::Null),
                "app_id": "cli_fuzz",
            },
            "event": event,
        });
        let ev = plain(&serde_json::to_vec(&body).unwrap())
            .expect("a well-formed v2 envelope is accepted");
        check(&ev);
    }
});

/// A plaintext body as an event, as a bridge with neither key nor token accepts it.
fn plain(body: &[u8]) -> Option<VerifiedEvent> {
    match Verifier::new(Vec::new(), Vec::new(), 0).verify(SignatureHeaders::default(), body, 0) {
        Ok(Inbound::Event(ev)) => Some(ev),
        _ => None,
    }
}

fn check(ev: &VerifiedEvent) {
    let mut warnings = Vec::new();
    if let Ok(out) = ticket_created::normalize(ev, RECEIVED_MS, &mut warnings) {
        let ce = envelope(&out.structured, ev);
        let data = &ce["data"];
        assert_eq!(ce["subject"], data["ticket_id"]);
        assert_eq!(ce["partitionkey"], data["helpdesk_id"]);
        for field in ["created_at", "updated_at", "closed_at"] {
            match &data[field] {
                Value::Null => {}
                Value::String(s) => assert!(rfc3339_millis_shape(s), "{field} = {s:?}"),
                v => panic!("{field} is {v}"),
            }
        }
        assert_eq!(
            serde_json::from_slice::<Value>(&out.data).expect("data is JSON"),
            *data
        );
    }
    let mut warnings = Vec::new();
    let out = raw::normalize(ev, RECEIVED_MS, &mut warnings).expect("raw never fails");
    envelope(&out.structured, ev);
}

/// The attributes every envelope shares.
fn envelope(structured: &[u8], ev: &VerifiedEvent) -> Value {
    let ce: Value = serde_json::from_slice(structured).expect("structured event is JSON");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], ev.event_id());
    assert!(!ev.event_id().is_empty());
    assert!(ce["subject"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(ce["partitionkey"].as_str().is_some_and(|s| !s.is_empty()));
    let source = ce["source"].as_str().expect("source");
    assert!(source.len() > "urn:lark:app:".len() && source.starts_with("urn:lark:app:"));
    assert!(
        source.bytes().all(|b| b.is_ascii_graphic()),
        "source {source:?} is not a URI-reference"
    );
    let time = ce["time"].as_str().expect("time");
    assert!(rfc3339_millis_shape(time), "time = {time:?}");
    ce
}

/// `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$`
fn rfc3339_millis_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && num(0..4).is_some()
        && num(5..7).is_some_and(|m| (1..=12).contains(&m))
        && num(8..10).is_some_and(|d| (1..=31).contains(&d))
        && num(11..13).is_some_and(|h| h <= 23)
        && num(14..16).is_some_and(|m| m <= 59)
        && num(17..19).is_some_and(|s| s <= 59)
        && num(20..23).is_some()
}
