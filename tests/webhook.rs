//! Black-box tests of the webhook: the bridge runs in-process on port 0 with a channel sink and
//! the memory store, and a real HTTP client plays Lark with real encryption and signatures. Each
//! test asserts what a user can see: the status, the JSON body, what reached the sink and the
//! metric that moved (lark-protocol.md §6, normalized-schema.md, decisions.md).

use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_lark::kit::{config, metric, ticket_with_id, Channeled, KEY, TOKEN};
use lark_bridge::simulate::{challenge_request, lark_request, ticket_event, LarkRequest};
use lark_protocol::event::Outgoing;
use lark_protocol::{crypto, signature, EncryptKey};
use serde_json::{json, Value};

const OUTCOMES: [&str; 12] = [
    "published",
    "duplicate",
    "challenge",
    "ignored",
    "forwarded",
    "bad_request",
    "unauthorized",
    "method_not_allowed",
    "too_large",
    "request_timeout",
    "unavailable",
    "overloaded",
];
const REASONS: [&str; 5] = ["signature", "token", "decrypt", "parse", "timestamp"];
const IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const UNSIGNED_MSG: &str = "missing signature headers: only a URL verification may be unsigned";

/// A running bridge and the ends of its ports the tests look at.
type T = Channeled;

async fn start(pairs: &[(&str, &str)]) -> T {
    start_cfg(config(pairs)).await
}

async fn start_cfg(cfg: lark_bridge::config::Config) -> T {
    Channeled::start(cfg).await
}

/// An answer as Lark sees it.
struct Answer {
    status: u16,
    content_type: String,
    allow: Option<String>,
    body: Value,
}

async fn send(url: &str, r: &LarkRequest) -> Answer {
    send_with(reqwest::Client::new().post(url).body(r.body.clone()), r).await
}

async fn send_with(mut req: reqwest::RequestBuilder, r: &LarkRequest) -> Answer {
    for (k, v) in &r.headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("bridge answers");
    answer(resp).await
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let header = |n: reqwest::header::HeaderName| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let allow = header(reqwest::header::ALLOW);
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"));
    Answer {
        status,
        content_type,
        allow,
        body,
    }
}

fn now_secs() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// `body` as is, signed with `key` (as Lark signs every push when a key is set).
fn signed_raw(body: impl Into<Bytes>, key: &str) -> LarkRequest {
    let body = body.into();
    let ts = now_secs();
    let nonce = "0123456789abcdef".to_string();
    let sig = signature::sign(&ts, &nonce, &EncryptKey::new(key), &body);
    LarkRequest {
        event_id: String::new(),
        body,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-lark-request-timestamp", ts),
            ("x-lark-request-nonce", nonce),
            ("x-lark-signature", sig),
        ],
    }
}

/// `body` as is, no signature headers.
fn unsigned_raw(body: impl Into<Bytes>) -> LarkRequest {
    LarkRequest {
        event_id: String::new(),
        body: body.into(),
        headers: vec![("content-type", "application/json".into())],
    }
}

/// `plaintext` encrypted and signed with `key`.
fn encrypted(plaintext: &Value, key: &str) -> LarkRequest {
    lark_request(
        "",
        &serde_json::to_vec(plaintext).unwrap(),
        Some(&EncryptKey::new(key)),
    )
}

/// A v2 ticket.created plaintext with the test token.
fn ticket_plain(id: &str, helpdesk_id: &str) -> Value {
    ticket_event(id, helpdesk_id, Some(TOKEN), false)
}

fn metrics_text(t: &T) -> String {
    t.bridge.metrics.render()
}

/// Every `lark_bridge_requests_total{source="webhook"}` outcome is 0 except those listed.
fn assert_outcomes(t: &T, want: &[(&str, f64)]) {
    let text = metrics_text(t);
    for o in OUTCOMES {
        let expected = want
            .iter()
            .find(|(w, _)| *w == o)
            .map(|(_, n)| *n)
            .unwrap_or(0.0);
        let got = metric(
            &text,
            "lark_bridge_requests_total",
            &[("source", "webhook"), ("outcome", o)],
        );
        assert_eq!(got, expected, "requests_total{{outcome={o}}}");
    }
}

/// Every `lark_bridge_verification_failures_total` reason is 0 except those listed.
fn assert_failures(t: &T, want: &[(&str, f64)]) {
    let text = metrics_text(t);
    for r in REASONS {
        let expected = want
            .iter()
            .find(|(w, _)| *w == r)
            .map(|(_, n)| *n)
            .unwrap_or(0.0);
        let got = metric(
            &text,
            "lark_bridge_verification_failures_total",
            &[("reason", r)],
        );
        assert_eq!(got, expected, "verification_failures_total{{reason={r}}}");
    }
}

fn assert_nothing_published(t: &mut T) {
    if let Ok(ev) = t.rx.try_recv() {
        panic!(
            "unexpected publish: {}",
            String::from_utf8_lossy(&ev.structured)
        );
    }
}

/// The one event published since the last look; fails if none or more than one.
fn published_once(t: &mut T) -> (Outgoing, Value) {
    let ev = t.rx.try_recv().expect("an event was published");
    assert_nothing_published(t);
    let v: Value = serde_json::from_slice(&ev.structured).unwrap();
    (ev, v)
}

fn assert_json_reply(a: &Answer, status: u16, body: Value) {
    assert_eq!(a.status, status, "status; body {}", a.body);
    assert_eq!(a.body, body);
    assert!(
        a.content_type.starts_with("application/json"),
        "content-type {}",
        a.content_type
    );
}

/// Post `r`; expect a refusal with `status` and `msg`, nothing published, only `outcome` counted
/// and `reason` (if any) as the verification failure.
async fn expect_refused(
    t: &mut T,
    r: &LarkRequest,
    status: u16,
    msg: &str,
    outcome: &str,
    reason: Option<&str>,
) {
    let a = send(&t.bridge.url, r).await;
    assert_json_reply(&a, status, json!({ "msg": msg }));
    assert_nothing_published(t);
    assert_outcomes(t, &[(outcome, 1.0)]);
    match reason {
        Some(reason) => assert_failures(t, &[(reason, 1.0)]),
        None => assert_failures(t, &[]),
    }
}

async fn expect_success(t: &T, r: &LarkRequest) {
    let a = send(&t.bridge.url, r).await;
    assert_json_reply(&a, 200, json!({"msg": "success"}));
}

// ---------------------------------------------------------------- accepted events

#[tokio::test]
async fn valid_encrypted_signed_ticket_is_published_once() {
    let mut t = start(&[]).await;
    let r = ticket_with_id("ev_valid_0001", "hd_42");
    expect_success(&t, &r).await;
    let (ev, v) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_valid_0001");
    assert_eq!(ev.key(), "hd_42");
    assert_eq!(v["id"], "ev_valid_0001");
    assert_eq!(v["partitionkey"], "hd_42");
    assert_eq!(v["type"], "com.larksuite.helpdesk.ticket.created.v1");
    assert_eq!(v["source"], "urn:lark:app:cli_simulate0000001");
    assert_eq!(v["data"]["helpdesk_id"], "hd_42");
    assert_eq!(v["subject"], v["data"]["ticket_id"]);
    assert_outcomes(&t, &[("published", 1.0)]);
    assert_failures(&t, &[]);
    let text = metrics_text(&t);
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "channel"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_dedup_total",
            &[("backend", "memory"), ("result", "new")]
        ),
        1.0
    );
}

fn k4_request() -> (LarkRequest, Value) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lark-push.json"
    ))
    .unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let k4 = fixture["signature"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "K4")
        .unwrap()
        .clone();
    let r = LarkRequest {
        event_id: String::new(),
        body: Bytes::from(k4["body"].as_str().unwrap().to_string()),
        headers: vec![
            ("content-type", "application/json".into()),
            (
                "x-lark-request-timestamp",
                k4["timestamp"].as_str().unwrap().into(),
            ),
            ("x-lark-request-nonce", k4["nonce"].as_str().unwrap().into()),
            ("x-lark-signature", k4["signature"].as_str().unwrap().into()),
        ],
    };
    (r, k4)
}

#[tokio::test]
async fn k4_vector_exact_bytes_is_published() {
    let mut t = start(&[
        // The vector's timestamp is from 2020.
        ("lark.max_timestamp_skew_secs", "0"),
        ("lark.encrypt_key", "test key"),
        (
            "lark.verification_token",
            "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV",
        ),
    ])
    .await;
    let (r, _) = k4_request();
    expect_success(&t, &r).await;
    let (_, v) = published_once(&mut t);
    assert_eq!(v["id"], "5e3702a84e847582be8db7fb73283c02");
    assert_eq!(v["partitionkey"], "6626871355780366330");
    assert_eq!(v["subject"], "6626871355780366331");
    assert_eq!(v["time"], "2020-12-23T12:19:49.000Z");
    assert_eq!(v["source"], "urn:lark:app:cli_9f5343c580712544");
    assert_eq!(v["larktenantkey"], "2ca1d211f64f6438");
    assert_eq!(v["data"]["created_at"], "2021-03-28T08:33:49.000Z");
    assert_eq!(v["data"]["stage"], "bot");
    assert_eq!(v["data"]["status"], "created");
    assert_outcomes(&t, &[("published", 1.0)]);
    assert_failures(&t, &[]);
}

#[tokio::test]
async fn upper_case_hex_signature_is_accepted() {
    let mut t = start(&[]).await;
    let mut r = ticket_with_id("ev_upper_hex", "hd_1");
    for (k, v) in r.headers.iter_mut() {
        if *k == "x-lark-signature" {
            *v = v.to_uppercase();
            assert!(v.chars().any(|c| c.is_ascii_uppercase()));
        }
    }
    expect_success(&t, &r).await;
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_upper_hex");
    assert_outcomes(&t, &[("published", 1.0)]);
}

#[tokio::test]
async fn key_rotation_accepts_every_configured_key() {
    let mut t = start(&[("lark.encrypt_key", "new key, test key")]).await;
    for (id, key) in [("ev_rot_new", "new key"), ("ev_rot_old", "test key")] {
        let r = encrypted(&ticket_plain(id, "hd_rot"), key);
        expect_success(&t, &r).await;
        let (ev, _) = published_once(&mut t);
        assert_eq!(ev.attrs.id, id);
    }
    assert_outcomes(&t, &[("published", 2.0)]);
    // A key that is not configured is still refused.
    let r = encrypted(&ticket_plain("ev_rot_other", "hd_rot"), "third key");
    let a = send(&t.bridge.url, &r).await;
    assert_json_reply(&a, 401, json!({"msg": "signature does not match"}));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("published", 2.0), ("unauthorized", 1.0)]);
}

#[tokio::test]
async fn legacy_v1_envelope_is_published_with_time_from_ts() {
    let mut t = start(&[]).await;
    let plain = json!({
        "uuid": "41b5f371157e3d5341b38b20396e77a3",
        "token": TOKEN,
        "ts": "1608725989.123",
        "type": "event_callback",
        "event": {
            "type": "helpdesk.ticket.created_v1",
            "app_id": "cli_x",
            "tenant_key": "tk",
            "ticket_id": "6626871355780366331",
            "helpdesk_id": "6626871355780366330",
        }
    });
    expect_success(&t, &encrypted(&plain, KEY)).await;
    let (_, v) = published_once(&mut t);
    assert_eq!(v["id"], "41b5f371157e3d5341b38b20396e77a3");
    assert_eq!(v["time"], "2020-12-23T12:19:49.123Z");
    assert_eq!(v["source"], "urn:lark:app:cli_x");
    assert_eq!(v["larktenantkey"], "tk");
    assert_eq!(v["partitionkey"], "6626871355780366330");
    assert_outcomes(&t, &[("published", 1.0)]);
}

fn other_event(id: &str) -> Value {
    json!({
        "schema": "2.0",
        "header": {
            "event_id": id,
            "event_type": "im.message.receive_v1",
            "create_time": "1608725989000",
            "token": TOKEN,
            "app_id": "cli_other",
            "tenant_key": "tenant_other"
        },
        "event": {"message": {"message_id": "om_1"}}
    })
}

#[tokio::test]
async fn other_event_type_is_ignored() {
    let mut t = start(&[]).await;
    expect_success(&t, &encrypted(&other_event("ev_other_1"), KEY)).await;
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("ignored", 1.0)]);
    assert_failures(&t, &[]);
    assert!(t.dedup.is_empty(), "an ignored event reserves nothing");
}

#[tokio::test]
async fn other_event_type_is_forwarded_raw_when_enabled() {
    let mut t = start(&[("routing.forward_unknown", "true")]).await;
    expect_success(&t, &encrypted(&other_event("ev_other_2"), KEY)).await;
    let (ev, v) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_other_2");
    assert_eq!(v["type"], "com.larksuite.raw.v1");
    assert_eq!(v["subject"], "im.message.receive_v1");
    assert_eq!(v["dataschema"], "urn:lark-bridge:schema:raw:v1");
    assert_eq!(v["partitionkey"], "tenant_other");
    assert_eq!(v["data"]["schema"], "2.0");
    assert_eq!(v["data"]["event_type"], "im.message.receive_v1");
    assert_eq!(
        v["data"]["event"],
        json!({"message": {"message_id": "om_1"}})
    );
    let header = v["data"]["header"].as_object().expect("header object");
    assert!(!header.contains_key("token"), "token leaked: {header:?}");
    assert_eq!(header["event_id"], "ev_other_2");
    assert!(
        !String::from_utf8_lossy(&ev.structured).contains(TOKEN),
        "the verification token must not be forwarded"
    );
    assert_outcomes(&t, &[("forwarded", 1.0)]);
}

// ---------------------------------------------------------------- challenge

#[tokio::test]
async fn plain_challenge_is_echoed() {
    let mut t = start(&[]).await;
    // Characters that must be JSON-escaped in the echo.
    let c = "ch\"al\\le\nnge-é";
    let r = challenge_request(c, Some(TOKEN), None);
    let a = send(&t.bridge.url, &r).await;
    assert_json_reply(&a, 200, json!({ "challenge": c }));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("challenge", 1.0)]);
    assert_failures(&t, &[]);
}

#[tokio::test]
async fn k6_encrypted_unsigned_challenge_is_echoed() {
    let mut t = start(&[("lark.verification_token", "xxxxxx")]).await;
    let r = unsigned_raw(
        r#"{"encrypt":"AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHpnBHVL2wRjH9rPunQdQC1vLjsckayA10kZ8cPwtb62F8rC7JprUPR/4S2aZihfR+p8npX7UzWPithZmfKIPZgE"}"#,
    );
    let a = send(&t.bridge.url, &r).await;
    assert_json_reply(&a, 200, json!({"challenge": "ajls384kdjx98XX"}));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("challenge", 1.0)]);
}

#[tokio::test]
async fn challenge_with_wrong_token_is_401() {
    // With a key configured the unsigned path answers every failure the same way.
    let mut t = start(&[]).await;
    let r = challenge_request("c1", Some("not-the-token"), Some(&EncryptKey::new(KEY)));
    expect_refused(
        &mut t,
        &r,
        401,
        UNSIGNED_MSG,
        "unauthorized",
        Some("signature"),
    )
    .await;
}

#[tokio::test]
async fn challenge_with_wrong_token_and_no_key_is_401() {
    let mut cfg = config(&[]);
    cfg.lark.encrypt_key = None;
    let mut t = start_cfg(cfg).await;
    let r = challenge_request("c1", Some("not-the-token"), None);
    expect_refused(
        &mut t,
        &r,
        401,
        "verification token does not match",
        "unauthorized",
        Some("token"),
    )
    .await;
}

// ---------------------------------------------------------------- refusals (400s, 401s)

/// A request the bridge must refuse: its answer, the outcome counted, the verification
/// failure reason counted; nothing may be published.
struct Refusal {
    case: &'static str,
    request: fn() -> LarkRequest,
    status: u16,
    msg: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

fn without_header_field(field: &str) -> LarkRequest {
    let mut plain = ticket_plain("ev_without", "hd");
    plain["header"].as_object_mut().unwrap().remove(field);
    encrypted(&plain, KEY)
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        case: "not JSON",
        request: || signed_raw("this is not json", KEY),
        status: 400,
        msg: "body is not JSON",
        outcome: "bad_request",
        reason: "parse",
    },
    Refusal {
        case: "a JSON array",
        request: || signed_raw(r#"[{"encrypt":"x"}]"#, KEY),
        status: 400,
        msg: "body is not a JSON object",
        outcome: "bad_request",
        reason: "parse",
    },
    Refusal {
        case: "unsigned and not JSON: 400, not 401",
        request: || unsigned_raw("{not json"),
        status: 400,
        msg: "body is not JSON",
        outcome: "bad_request",
        reason: "parse",
    },
    Refusal {
        case: "bad base64",
        request: || signed_raw(r#"{"encrypt":"@@@"}"#, KEY),
        status: 400,
        msg: "encrypt is not valid base64",
        outcome: "bad_request",
        reason: "decrypt",
    },
    Refusal {
        // K8: K1's ciphertext without its last base64 quantum (28 bytes).
        case: "ciphertext of a bad length",
        request: || {
            signed_raw(
                r#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEz"}"#,
                KEY,
            )
        },
        status: 400,
        msg: "ciphertext length is invalid",
        outcome: "bad_request",
        reason: "decrypt",
    },
    Refusal {
        case: "a ciphertext that is only the IV",
        request: || signed_raw(r#"{"encrypt":"AAECAwQFBgcICQoLDA0ODw=="}"#, KEY),
        status: 400,
        msg: "ciphertext length is invalid",
        outcome: "bad_request",
        reason: "decrypt",
    },
    Refusal {
        // Encrypted under another key (fixed IV, so the outcome is deterministic), signed with ours.
        case: "wrong padding",
        request: || {
            let ct = crypto::encrypt(
                &EncryptKey::new("other key"),
                IV,
                &serde_json::to_vec(&ticket_plain("ev_pad", "hd")).unwrap(),
            );
            signed_raw(format!(r#"{{"encrypt":"{ct}"}}"#), KEY)
        },
        status: 400,
        msg: "ciphertext padding is invalid",
        outcome: "bad_request",
        reason: "decrypt",
    },
    Refusal {
        case: "decrypted bytes that are not JSON",
        request: || {
            let ct = crypto::encrypt(&EncryptKey::new(KEY), IV, b"hello world");
            signed_raw(format!(r#"{{"encrypt":"{ct}"}}"#), KEY)
        },
        status: 400,
        msg: "decrypted bytes are not a JSON object",
        outcome: "bad_request",
        reason: "decrypt",
    },
    Refusal {
        case: "an unknown body form",
        request: || encrypted(&json!({"hello": "world", "token": TOKEN}), KEY),
        status: 400,
        msg: "unknown body form: neither a challenge nor a v1/v2 event",
        outcome: "bad_request",
        reason: "parse",
    },
    Refusal {
        case: "no event id",
        request: || without_header_field("event_id"),
        status: 400,
        msg: "event_id is missing",
        outcome: "bad_request",
        reason: "parse",
    },
    Refusal {
        case: "no event type",
        request: || without_header_field("event_type"),
        status: 400,
        msg: "event type is missing",
        outcome: "bad_request",
        reason: "parse",
    },
    Refusal {
        // Order of checks (§6): the token (step 6) is checked before the event id (step 8).
        case: "no event id and a wrong token: the token wins",
        request: || {
            let mut plain = ticket_event("x", "hd", Some("wrong-token"), false);
            plain["header"].as_object_mut().unwrap().remove("event_id");
            encrypted(&plain, KEY)
        },
        status: 401,
        msg: "verification token does not match",
        outcome: "unauthorized",
        reason: "token",
    },
    Refusal {
        case: "no signature headers",
        request: || {
            let mut r = ticket_with_id("ev_unsigned", "hd");
            r.headers.retain(|(k, _)| !k.starts_with("x-lark-"));
            r
        },
        status: 401,
        msg: UNSIGNED_MSG,
        outcome: "unauthorized",
        reason: "signature",
    },
    Refusal {
        case: "only some signature headers",
        request: || {
            let mut r = ticket_with_id("ev_half_signed", "hd");
            r.headers.retain(|(k, _)| *k != "x-lark-request-nonce");
            r
        },
        status: 401,
        msg: UNSIGNED_MSG,
        outcome: "unauthorized",
        reason: "signature",
    },
    Refusal {
        case: "a signature with another key",
        request: || {
            let mut r = ticket_with_id("ev_bad_sig", "hd");
            let (ts, nonce) = (r.headers[1].1.clone(), r.headers[2].1.clone());
            assert_eq!(r.headers[3].0, "x-lark-signature");
            r.headers[3].1 = signature::sign(&ts, &nonce, &EncryptKey::new("other key"), &r.body);
            r
        },
        status: 401,
        msg: "signature does not match",
        outcome: "unauthorized",
        reason: "signature",
    },
    Refusal {
        // Same JSON value, different bytes: the signature is over the raw body.
        case: "the body re-serialized after signing",
        request: || {
            let mut r = ticket_with_id("ev_reserialized", "hd");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            r.body = Bytes::from(serde_json::to_vec_pretty(&v).unwrap());
            r
        },
        status: 401,
        msg: "signature does not match",
        outcome: "unauthorized",
        reason: "signature",
    },
    Refusal {
        case: "a wrong token",
        request: || {
            encrypted(
                &ticket_event("ev_wrong_tok", "hd", Some("wrong-token"), false),
                KEY,
            )
        },
        status: 401,
        msg: "verification token does not match",
        outcome: "unauthorized",
        reason: "token",
    },
    Refusal {
        case: "no token while one is configured",
        request: || without_header_field("token"),
        status: 401,
        msg: "verification token is missing",
        outcome: "unauthorized",
        reason: "token",
    },
];

#[tokio::test]
async fn every_refusal_gets_its_status_and_message_counts_once_and_publishes_nothing() {
    for r in REFUSALS {
        eprintln!("case: {}", r.case);
        let mut t = start(&[]).await;
        expect_refused(
            &mut t,
            &(r.request)(),
            r.status,
            r.msg,
            r.outcome,
            Some(r.reason),
        )
        .await;
        t.bridge.stop().await.expect("clean shutdown");
    }
}

/// With dead letters off, a verified event the normalizer refuses is a 400 that reserves
/// nothing (the behaviour before dead letters).
async fn missing_id_reserves_nothing(field: &str, msg: &str) {
    let mut t = start(&[("deadletter.enabled", "false")]).await;
    let id = format!("ev_missing_{field}");
    let mut plain = ticket_plain(&id, "hd_7");
    plain["event"].as_object_mut().unwrap().remove(field);
    expect_refused(
        &mut t,
        &encrypted(&plain, KEY),
        400,
        msg,
        "bad_request",
        Some("parse"),
    )
    .await;
    assert!(t.dedup.is_empty(), "a bad event must reserve nothing");
    // A later valid copy with the same event id is published.
    expect_success(&t, &encrypted(&ticket_plain(&id, "hd_7"), KEY)).await;
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, id);
    assert_outcomes(&t, &[("bad_request", 1.0), ("published", 1.0)]);
}

#[tokio::test]
async fn missing_ticket_id_is_400_and_reserves_nothing() {
    missing_id_reserves_nothing("ticket_id", "ticket_id is missing").await;
}

#[tokio::test]
async fn missing_helpdesk_id_is_400_and_reserves_nothing() {
    missing_id_reserves_nothing("helpdesk_id", "helpdesk_id is missing").await;
}

#[tokio::test]
async fn encrypted_body_without_a_configured_key_is_400() {
    let mut cfg = config(&[]);
    cfg.lark.encrypt_key = None;
    let mut t = start_cfg(cfg).await;
    // Control: a plain (unencrypted, unsigned) event passes on the token alone.
    let plain = ticket_plain("ev_plain_ok", "hd");
    expect_success(&t, &unsigned_raw(serde_json::to_vec(&plain).unwrap())).await;
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_plain_ok");
    let r = encrypted(&ticket_plain("ev_enc_nokey", "hd"), KEY);
    let a = send(&t.bridge.url, &r).await;
    assert_json_reply(
        &a,
        400,
        json!({"msg": "encrypted body but no encrypt key configured"}),
    );
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("published", 1.0), ("bad_request", 1.0)]);
    assert_failures(&t, &[("parse", 1.0)]);
}

#[tokio::test]
async fn unsigned_bad_ciphertext_looks_like_any_unsigned_event() {
    // No padding oracle: an unsigned request learns nothing about its ciphertext.
    let mut t = start(&[]).await;
    let valid = {
        let mut r = ticket_with_id("ev_oracle", "hd");
        r.headers.retain(|(k, _)| !k.starts_with("x-lark-"));
        r
    };
    let bad_padding = unsigned_raw(format!(
        r#"{{"encrypt":"{}"}}"#,
        crypto::encrypt(&EncryptKey::new("other key"), IV, b"{\"a\":1}")
    ));
    let bad_base64 = unsigned_raw(r#"{"encrypt":"@@@"}"#);
    let bad_length = unsigned_raw(r#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEz"}"#);
    let not_json = unsigned_raw(format!(
        r#"{{"encrypt":"{}"}}"#,
        crypto::encrypt(&EncryptKey::new(KEY), IV, b"hello world")
    ));
    let reference = send(&t.bridge.url, &valid).await;
    assert_json_reply(&reference, 401, json!({ "msg": UNSIGNED_MSG }));
    for r in [&bad_padding, &bad_base64, &bad_length, &not_json] {
        let a = send(&t.bridge.url, r).await;
        assert_eq!(a.status, reference.status);
        assert_eq!(a.body, reference.body);
    }
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("unauthorized", 5.0)]);
    assert_failures(&t, &[("signature", 5.0)]);
}

// ---------------------------------------------------------------- HTTP level

#[tokio::test]
async fn get_is_405_with_allow_post() {
    let mut t = start(&[]).await;
    let resp = reqwest::get(&t.bridge.url).await.unwrap();
    let a = answer(resp).await;
    assert_json_reply(&a, 405, json!({"msg": "method not allowed, use POST"}));
    assert_eq!(a.allow.as_deref(), Some("POST"));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("method_not_allowed", 1.0)]);
    assert_failures(&t, &[]);
}

/// A valid signed ticket whose encrypted body is larger than `min` bytes.
fn big_ticket(id: &str, min: usize) -> LarkRequest {
    let mut plain = ticket_plain(id, "hd_big");
    plain["event"]["padding_ignored_by_v1"] = json!("x".repeat(min));
    let r = encrypted(&plain, KEY);
    assert!(r.body.len() > min);
    r
}

const TOO_LARGE: &str = "body is larger than server.max_body_bytes";

#[tokio::test]
async fn body_over_limit_with_content_length_is_413() {
    let mut t = start(&[("server.max_body_bytes", "2048")]).await;
    // Control: a normal ticket fits.
    expect_success(&t, &ticket_with_id("ev_fits", "hd")).await;
    published_once(&mut t);
    let r = big_ticket("ev_big_cl", 2048);
    let a = send(&t.bridge.url, &r).await;
    assert_json_reply(&a, 413, json!({ "msg": TOO_LARGE }));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("published", 1.0), ("too_large", 1.0)]);
    assert_failures(&t, &[]);
}

#[tokio::test]
async fn body_over_limit_chunked_is_413() {
    let mut t = start(&[("server.max_body_bytes", "2048")]).await;
    let r = big_ticket("ev_big_chunked", 2048);
    // A stream of unknown length: sent chunked, with no Content-Length to refuse it early.
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = r
        .body
        .chunks(512)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(
        chunks,
    )));
    let a = send_with(reqwest::Client::new().post(&t.bridge.url).body(body), &r).await;
    assert_json_reply(&a, 413, json!({ "msg": TOO_LARGE }));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("too_large", 1.0)]);
    assert_failures(&t, &[]);
}

// ---------------------------------------------------------------- dedup and the sink

#[tokio::test]
async fn redelivery_is_published_once() {
    let mut t = start(&[]).await;
    let r = ticket_with_id("ev_redelivered", "hd");
    expect_success(&t, &r).await;
    published_once(&mut t);
    // Lark's redelivery: same event id, new signature.
    let again = ticket_with_id("ev_redelivered", "hd");
    assert_ne!(again.body, r.body);
    expect_success(&t, &again).await;
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("published", 1.0), ("duplicate", 1.0)]);
    assert_eq!(
        metric(
            &metrics_text(&t),
            "lark_bridge_dedup_total",
            &[("backend", "memory"), ("result", "duplicate")]
        ),
        1.0
    );
}

#[tokio::test]
async fn concurrent_duplicate_publishes_once() {
    let mut t = start(&[]).await;
    t.sink.set_delay(Duration::from_millis(500));
    let a = ticket_with_id("ev_concurrent", "hd");
    let b = ticket_with_id("ev_concurrent", "hd");
    let (ra, rb) = tokio::join!(send(&t.bridge.url, &a), send(&t.bridge.url, &b));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 503], "bodies {} {}", ra.body, rb.body);
    let busy = if ra.status == 503 { &ra } else { &rb };
    assert_eq!(
        busy.body,
        json!({"msg": "another copy of this event is being published; retry later"})
    );
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_concurrent");
    assert_outcomes(&t, &[("published", 1.0), ("unavailable", 1.0)]);
    assert_eq!(
        metric(
            &metrics_text(&t),
            "lark_bridge_dedup_total",
            &[("backend", "memory"), ("result", "in_flight")]
        ),
        1.0
    );
}

/// Wait until the memory store holds nothing: the release after a failure runs in the
/// background, and a redelivery must not race it (Lark's first retry comes 15 s later).
async fn wait_released(t: &T) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.dedup.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the reservation was never released"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn publish_failure_is_503_and_redelivery_publishes() {
    let mut t = start(&[]).await;
    t.sink.fail_next(1);
    let r = ticket_with_id("ev_fail_once", "hd");
    let a = send(&t.bridge.url, &r).await;
    assert_json_reply(&a, 503, json!({"msg": "broker unavailable"}));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("unavailable", 1.0)]);
    wait_released(&t).await;
    expect_success(&t, &ticket_with_id("ev_fail_once", "hd")).await;
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_fail_once");
    assert_outcomes(&t, &[("unavailable", 1.0), ("published", 1.0)]);
    let text = metrics_text(&t);
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "channel"), ("result", "error")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "channel"), ("result", "ok")]
        ),
        1.0
    );
}

#[tokio::test]
async fn slow_sink_is_503_within_the_budget() {
    let mut t = start(&[
        ("server.response_budget_ms", "300"),
        ("dedup.lease_ms", "1000"),
    ])
    .await;
    t.sink.set_delay(Duration::from_secs(1));
    let r = ticket_with_id("ev_slow", "hd");
    let started = Instant::now();
    let a = send(&t.bridge.url, &r).await;
    let elapsed = started.elapsed();
    assert_json_reply(
        &a,
        503,
        json!({"msg": "broker did not acknowledge within the response budget"}),
    );
    assert!(
        elapsed < Duration::from_millis(800),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "answered after {elapsed:?}"
    );
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("unavailable", 1.0)]);
    assert_eq!(
        metric(
            &metrics_text(&t),
            "lark_bridge_publish_total",
            &[("sink", "channel"), ("result", "timeout")]
        ),
        1.0
    );
    // Released: once the sink is fast again, the redelivery publishes.
    t.sink.set_delay(Duration::ZERO);
    wait_released(&t).await;
    expect_success(&t, &ticket_with_id("ev_slow", "hd")).await;
    published_once(&mut t);
}

#[tokio::test]
async fn past_max_in_flight_is_503_overloaded_at_once() {
    let mut t = start(&[("server.max_in_flight", "1")]).await;
    t.sink.set_delay(Duration::from_millis(1000));
    let url = t.bridge.url.clone();
    let first = tokio::spawn(async move {
        let r = ticket_with_id("ev_first", "hd");
        send(&url, &r).await.status
    });
    // The first request is in flight once the gauge says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.bridge.metrics.in_flight.get() < 1 {
        assert!(Instant::now() < deadline, "first request never in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let a = send(&t.bridge.url, &ticket_with_id("ev_second", "hd")).await;
    let elapsed = started.elapsed();
    assert_json_reply(&a, 503, json!({"msg": "overloaded, retry later"}));
    assert!(
        elapsed < Duration::from_millis(300),
        "shedding took {elapsed:?}"
    );
    assert_eq!(first.await.unwrap(), 200);
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_first");
    assert_outcomes(&t, &[("overloaded", 1.0), ("published", 1.0)]);
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn admin_endpoints_and_every_metric_before_any_event() {
    let t = start(&[]).await;
    let h = reqwest::get(format!("{}/healthz", t.bridge.admin))
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    t.bridge.wait_ready(200).await;
    let resp = reqwest::get(format!("{}/metrics", t.bridge.admin))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    for name in [
        "lark_bridge_requests_total",
        "lark_bridge_request_duration_seconds",
        "lark_bridge_verification_failures_total",
        "lark_bridge_publish_total",
        "lark_bridge_publish_duration_seconds",
        "lark_bridge_dedup_total",
        "lark_bridge_sink_up",
        "lark_bridge_dedup_store_up",
        "lark_bridge_build_info",
        "lark_bridge_dedup_evictions_total",
        "lark_bridge_dedup_commit_failures_total",
        "lark_bridge_normalize_warnings_total",
        "lark_bridge_unverified_mode",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is not exported"
        );
    }
    for source in ["webhook", "long_connection"] {
        for o in OUTCOMES {
            let l = [("source", source), ("outcome", o)];
            assert_eq!(metric(&text, "lark_bridge_requests_total", &l), 0.0);
            assert_eq!(
                metric(&text, "lark_bridge_request_duration_seconds_count", &l),
                0.0
            );
        }
    }
    for r in REASONS {
        assert_eq!(
            metric(
                &text,
                "lark_bridge_verification_failures_total",
                &[("reason", r)]
            ),
            0.0
        );
    }
    for res in ["ok", "error", "timeout"] {
        assert_eq!(
            metric(
                &text,
                "lark_bridge_publish_total",
                &[("sink", "channel"), ("result", res)]
            ),
            0.0
        );
    }
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_duration_seconds_count",
            &[("sink", "channel")]
        ),
        0.0
    );
    for res in ["new", "duplicate", "in_flight", "error"] {
        assert_eq!(
            metric(
                &text,
                "lark_bridge_dedup_total",
                &[("backend", "memory"), ("result", res)]
            ),
            0.0
        );
    }
    assert_eq!(
        metric(
            &text,
            "lark_bridge_dedup_commit_failures_total",
            &[("backend", "memory")]
        ),
        0.0
    );
    assert_eq!(metric(&text, "lark_bridge_dedup_evictions_total", &[]), 0.0);
    assert_eq!(metric(&text, "lark_bridge_unverified_mode", &[]), 0.0);
    assert_eq!(metric(&text, "lark_bridge_build_info", &[]), 1.0);
    // Readiness probed both: they are up.
    assert_eq!(
        metric(&text, "lark_bridge_sink_up", &[("sink", "channel")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_dedup_store_up",
            &[("backend", "memory")]
        ),
        1.0
    );
}

#[tokio::test]
async fn readyz_is_503_while_the_sink_is_down() {
    let t = start(&[]).await;
    t.bridge.wait_ready(200).await;
    t.sink.set_down(true);
    let body = t.bridge.wait_ready(503).await;
    assert!(body["failed"]["sink"].is_string(), "body {body}");
    t.sink.set_down(false);
    t.bridge.wait_ready(200).await;
}

#[tokio::test]
async fn body_that_stalls_is_408() {
    let mut t = start(&[("server.read_timeout_ms", "300")]).await;
    let r = ticket_with_id("ev_stalled", "hd");
    let first: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = vec![Ok(
        hyper::body::Frame::data(r.body.slice(..r.body.len() / 2)),
    )];
    // Half the body, then nothing more.
    let stream =
        futures::StreamExt::chain(futures::stream::iter(first), futures::stream::pending());
    let body = reqwest::Body::wrap(http_body_util::StreamBody::new(stream));
    let started = Instant::now();
    let a = send_with(reqwest::Client::new().post(&t.bridge.url).body(body), &r).await;
    assert_json_reply(
        &a,
        408,
        json!({"msg": "body did not arrive within server.read_timeout_ms"}),
    );
    assert!(started.elapsed() < Duration::from_millis(2000));
    assert_nothing_published(&mut t);
    assert_outcomes(&t, &[("request_timeout", 1.0)]);
    assert_failures(&t, &[]);
}

#[tokio::test]
async fn request_head_over_max_header_bytes_is_431() {
    // decisions.md: larger → 431, outcome bad_request; lark-protocol.md §6: every response is JSON.
    let mut t = start(&[("server.max_header_bytes", "8192")]).await;
    let mut r = ticket_with_id("ev_big_head", "hd");
    // Over max_header_bytes but under hyper's hard cap (four times that, at least 64 KiB): the handler's JSON 431.
    r.headers.push(("x-padding", "p".repeat(10_000)));
    let mut req = reqwest::Client::new()
        .post(&t.bridge.url)
        .body(r.body.clone());
    for (k, v) in &r.headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 431);
    assert_nothing_published(&mut t);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    assert!(
        content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "431 answered with content-type {content_type:?} and body {text:?}"
    );
    assert!(serde_json::from_str::<Value>(&text).unwrap()["msg"].is_string());
    assert_outcomes(&t, &[("bad_request", 1.0)]);
}

#[tokio::test]
async fn stale_timestamp_is_401_when_skew_check_is_on() {
    let mut t = start(&[
        (
            "lark.verification_token",
            "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV",
        ),
        ("lark.max_timestamp_skew_secs", "300"),
    ])
    .await;
    // K4 was signed in 2020 (a millisecond timestamp, tolerated by the parser).
    let (r, _) = k4_request();
    expect_refused(
        &mut t,
        &r,
        401,
        "request timestamp is outside the allowed window",
        "unauthorized",
        Some("timestamp"),
    )
    .await;
    // A fresh push passes.
    let plain = ticket_event(
        "ev_fresh",
        "hd",
        Some("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"),
        false,
    );
    expect_success(&t, &encrypted(&plain, KEY)).await;
    published_once(&mut t);
}

#[tokio::test]
async fn unverified_mode_accepts_plain_events_and_says_so() {
    let mut cfg = config(&[("lark.allow_unverified", "true")]);
    cfg.lark.encrypt_key = None;
    cfg.lark.verification_token = None;
    let mut t = start_cfg(cfg).await;
    let plain = ticket_event("ev_unverified", "hd", None, false);
    expect_success(&t, &unsigned_raw(serde_json::to_vec(&plain).unwrap())).await;
    let (ev, _) = published_once(&mut t);
    assert_eq!(ev.attrs.id, "ev_unverified");
    assert_outcomes(&t, &[("published", 1.0)]);
    assert_eq!(
        metric(&metrics_text(&t), "lark_bridge_unverified_mode", &[]),
        1.0
    );
}
