//! Property tests of the protocol layer (issue 10): for any key, plaintext, event or single-bit
//! tamper, the Verifier and the normalizer answer as lark-protocol.md §3–§6 and
//! normalized-schema.md say. Most cases drive `Verifier::verify` directly (microseconds each);
//! a few go through the HTTP entrance of an in-process bridge to tie the two together.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use lark_protocol::crypto::{self, DecryptError};
use lark_protocol::normalize::{raw, ticket_created, NormalizeError};
use lark_protocol::{
    signature, EncryptKey, FailReason, Inbound, Rejection, SignatureHeaders, Verifier,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const TOKEN: &str = "tok_prop";
const RECEIVED_MS: i64 = 1_700_000_000_123;

// ---------------------------------------------------------------- strategies

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{1,40}", // printable ASCII, spaces inside (like K1's "test key")
        "\\PC{1,16}",  // any non-control Unicode
        Just("test key".to_string()),
    ]
}

/// A v2 helpdesk.ticket.created_v1 plaintext with arbitrary ids and a token.
fn ticket_plaintext() -> impl Strategy<Value = Vec<u8>> {
    ("[a-f0-9]{1,32}", "[0-9]{1,19}", "[0-9]{1,19}", any::<u8>()).prop_map(
        |(event_id, ticket, helpdesk, status)| {
            serde_json::to_vec(&json!({
                "schema": "2.0",
                "header": {
                    "event_id": event_id,
                    "event_type": "helpdesk.ticket.created_v1",
                    "create_time": "1608725989000",
                    "token": TOKEN,
                    "app_id": "cli_prop",
                    "tenant_key": "t",
                },
                "event": {"ticket_id": ticket, "helpdesk_id": helpdesk, "status": status},
            }))
            .unwrap()
        },
    )
}

/// A signed, encrypted push, as Lark sends it.
#[derive(Debug, Clone)]
struct Push {
    key: String,
    body: Vec<u8>,
    ts: String,
    nonce: String,
    sig: String,
}

fn push() -> impl Strategy<Value = Push> {
    (
        key(),
        ticket_plaintext(),
        any::<[u8; 16]>(),
        "[0-9]{10}",
        "[0-9a-zA-Z]{1,32}",
    )
        .prop_map(|(key, plain, iv, ts, nonce)| {
            let k = EncryptKey::new(&key);
            let body =
                serde_json::to_vec(&json!({"encrypt": crypto::encrypt(&k, iv, &plain)})).unwrap();
            let sig = signature::sign(&ts, &nonce, &k, &body);
            Push {
                key,
                body,
                ts,
                nonce,
                sig,
            }
        })
}

fn verifier(key: &str) -> Verifier {
    Verifier::new(vec![EncryptKey::new(key)], vec![TOKEN.to_string()], 0)
}

/// Headers as the HTTP entrance builds them: a value that is not UTF-8 is an absent header.
fn headers<'a>(ts: &'a [u8], nonce: &'a [u8], sig: &'a [u8]) -> SignatureHeaders<'a> {
    SignatureHeaders {
        timestamp: std::str::from_utf8(ts).ok(),
        nonce: std::str::from_utf8(nonce).ok(),
        signature: std::str::from_utf8(sig).ok(),
    }
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let bit = bit % (v.len() * 8);
    v[bit / 8] ^= 1 << (bit % 8);
    v
}

fn is_object(body: &[u8]) -> bool {
    matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_)))
}

/// The answer a tampered request must get: 401, or 400 when the outer body no longer parses
/// (§6: the JSON check comes before the signature).
fn assert_refused(r: Result<Inbound, Rejection>, body: &[u8]) -> Result<(), TestCaseError> {
    match r {
        Err(Rejection::Unauthorized { .. }) => {
            prop_assert!(is_object(body), "401 for a body that is not a JSON object")
        }
        Err(Rejection::BadRequest { msg, .. }) => {
            prop_assert!(!is_object(body), "400 ({msg}) for a JSON object body");
        }
        Ok(_) => prop_assert!(false, "a tampered request was accepted"),
    }
    Ok(())
}

/// Arbitrary JSON, numbers from every range the normalizer distinguishes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1i64..1_000_000_000_000_000_000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[0-9]{0,20}(\\.[0-9]{0,4})?".prop_map(Value::from),
        "-?[0-9 ]{0,6}".prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A timestamp as Lark might send it, biased to the unit boundaries of §5 (seconds below 1e11,
/// milliseconds below 1e14, microseconds above — up to 18 digits, past the year 9999).
fn timestamp_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (1i64..100_000_000_000).prop_map(Value::from),
        (100_000_000_000i64..100_000_000_000_000).prop_map(Value::from),
        (100_000_000_000_000i64..1_000_000_000_000_000_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "-?[0-9]{1,20}(\\.[0-9]{1,6})?".prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(0)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        json_value(),
    ]
}

const EVENT_FIELDS: [&str; 13] = [
    "ticket_id",
    "helpdesk_id",
    "guest",
    "stage",
    "status",
    "score",
    "solve",
    "channel",
    "created_at",
    "updated_at",
    "closed_at",
    "chat_id",
    "customized_fields",
];

/// An `event` object: Lark's field names (and a few others) with arbitrary values; the guest
/// and customized fields shaped like Lark's often enough to reach their inner fields.
fn event_object() -> impl Strategy<Value = Map<String, Value>> {
    let field = prop_oneof![
        prop::sample::select(EVENT_FIELDS.to_vec()).prop_map(str::to_string),
        "[a-z_]{1,8}",
    ];
    let guest = (json_value(), json_value(), json_value()).prop_map(|(open_id, name, email)| {
        json!({"id": {"open_id": open_id, "union_id": "on_x", "user_id": null}, "name": name, "email": email})
    });
    let custom = prop::collection::vec(
        (json_value(), json_value()).prop_map(|(id, value)| json!({"id": id, "value": value})),
        0..3,
    )
    .prop_map(Value::from);
    (
        prop::collection::btree_map(field, json_value(), 0..10),
        prop::option::of(guest),
        prop::option::of(custom),
        prop::option::of(prop_oneof![
            "[0-9]{1,19}".prop_map(Value::from),
            any::<u64>().prop_map(Value::from)
        ]),
        prop::option::of(prop_oneof![
            "[0-9]{1,19}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from)
        ]),
        [
            prop::option::of(timestamp_value()),
            prop::option::of(timestamp_value()),
            prop::option::of(timestamp_value()),
        ],
    )
        .prop_map(|(fields, guest, custom, ticket, helpdesk, times)| {
            let mut m: Map<String, Value> = fields.into_iter().collect();
            for (name, t) in ["created_at", "updated_at", "closed_at"].iter().zip(times) {
                if let Some(t) = t {
                    m.insert(name.to_string(), t);
                }
            }
            if let Some(g) = guest {
                m.insert("guest".into(), g);
            }
            if let Some(c) = custom {
                m.insert("customized_fields".into(), c);
            }
            if let Some(t) = ticket {
                m.insert("ticket_id".into(), t);
            }
            if let Some(h) = helpdesk {
                m.insert("helpdesk_id".into(), h);
            }
            m
        })
}

/// A v2 or v1 plaintext around `event`, header values arbitrary but of the right type.
fn envelope_around(event: Map<String, Value>) -> impl Strategy<Value = Value> {
    // Any characters, control characters and newlines included.
    let text = || prop::option::of("(?s:.){1,24}");
    (
        any::<bool>(),
        "\\PC{1,32}",
        text(),
        text(),
        prop::option::of(timestamp_value()),
    )
        .prop_map(move |(legacy, id, app_id, tenant_key, time)| {
            let mut event = event.clone();
            if legacy {
                event.insert("type".into(), json!("helpdesk.ticket.created_v1"));
                if let Some(a) = app_id {
                    event.insert("app_id".into(), json!(a));
                }
                if let Some(t) = tenant_key {
                    event.insert("tenant_key".into(), json!(t));
                }
                let mut m = Map::new();
                m.insert("uuid".into(), json!(id));
                m.insert("type".into(), json!("event_callback"));
                if let Some(t) = time {
                    m.insert("ts".into(), t);
                }
                m.insert("event".into(), Value::Object(event));
                Value::Object(m)
            } else {
                let mut h = Map::new();
                h.insert("event_id".into(), json!(id));
                h.insert("event_type".into(), json!("helpdesk.ticket.created_v1"));
                if let Some(a) = app_id {
                    h.insert("app_id".into(), json!(a));
                }
                if let Some(t) = tenant_key {
                    h.insert("tenant_key".into(), json!(t));
                }
                if let Some(t) = time {
                    h.insert("create_time".into(), t);
                }
                json!({"schema": "2.0", "header": h, "event": event})
            }
        })
}

// ---------------------------------------------------------------- schema

struct Schemas {
    ticket: jsonschema::Validator,
    raw: jsonschema::Validator,
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| Schemas {
        ticket: fake_lark::kit::schema_validator(
            "cloudevent.helpdesk.ticket.created.v1.json",
            "helpdesk.ticket.created.v1.json",
        ),
        raw: fake_lark::kit::schema_validator("cloudevent.raw.v1.json", "raw.v1.json"),
    })
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// ticket_id / helpdesk_id as the normalizer must accept them: a non-blank string or an integer.
fn usable_id(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

// ---------------------------------------------------------------- properties

/// Cases per property: `default` (sized for CI, the file runs in seconds), or
/// `PROPTEST_CASES` for a deeper run (e.g. `PROPTEST_CASES=20000 cargo test --test prop_protocol`).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// §3: whatever the key and plaintext, our ciphertext has the strict shape and decrypts
    /// back byte for byte; `decrypt_json` accepts it exactly when it is a JSON object.
    #[test]
    fn encrypt_then_decrypt_round_trips(
        key in key(),
        plain in prop::collection::vec(any::<u8>(), 0..600),
        iv in any::<[u8; 16]>(),
    ) {
        let k = EncryptKey::new(&key);
        let ct = crypto::encrypt(&k, iv, &plain);
        let raw = crypto::decode(&ct).unwrap();
        prop_assert!(raw.len() >= 32 && (raw.len() - 16).is_multiple_of(16));
        prop_assert_eq!(&raw[..16], &iv[..]);
        prop_assert_eq!(crypto::decrypt_raw(&k, &raw).unwrap(), plain.clone());
        prop_assert_eq!(crypto::decrypt_json(&[k], &ct).is_ok(), is_object(&plain));
    }

    #[test]
    fn json_objects_round_trip_under_any_key_and_rotation(
        key in key(),
        other in key(),
        event in event_object(),
        iv in any::<[u8; 16]>(),
    ) {
        let plain = serde_json::to_vec(&event).unwrap();
        let ct = crypto::encrypt(&EncryptKey::new(&key), iv, &plain);
        // Rotation: the right key anywhere in the list wins (a wrong key first must not).
        let keys = [EncryptKey::new(&format!("{other}-old")), EncryptKey::new(&key)];
        let got = crypto::decrypt_json(&keys, &ct).unwrap();
        // Compared with what serde_json reads from the plaintext: without its
        // `float_roundtrip` feature a float may come back one ulp off, in both alike.
        prop_assert_eq!(Value::Object(got), serde_json::from_slice::<Value>(&plain).unwrap());
    }

    /// A genuine push verifies; flipping any single bit of the body is refused (401, or 400
    /// when the outer body stops being a JSON object).
    #[test]
    fn any_bit_flip_in_the_body_is_refused(p in push(), bit in any::<usize>()) {
        let v = verifier(&p.key);
        let ok = v.verify(headers(p.ts.as_bytes(), p.nonce.as_bytes(), p.sig.as_bytes()), &p.body, 0);
        prop_assert!(matches!(ok, Ok(Inbound::Event(_))), "genuine push refused: {ok:?}");
        let body = flip(&p.body, bit);
        let r = v.verify(headers(p.ts.as_bytes(), p.nonce.as_bytes(), p.sig.as_bytes()), &body, 0);
        assert_refused(r, &body)?;
    }

    /// Flipping any bit of the timestamp or nonce is a 401 (a value that stops being UTF-8 is
    /// an absent header, hence the unsigned path, hence 401 too).
    #[test]
    fn any_bit_flip_in_timestamp_or_nonce_is_401(
        p in push(),
        bit in any::<usize>(),
        which in any::<bool>(),
    ) {
        let v = verifier(&p.key);
        let (ts, nonce) = if which {
            (flip(p.ts.as_bytes(), bit), p.nonce.as_bytes().to_vec())
        } else {
            (p.ts.as_bytes().to_vec(), flip(p.nonce.as_bytes(), bit))
        };
        let r = v.verify(headers(&ts, &nonce, p.sig.as_bytes()), &p.body, 0);
        prop_assert!(
            matches!(r, Err(Rejection::Unauthorized { .. })),
            "tampered {} got {r:?}", if which { "timestamp" } else { "nonce" }
        );
    }

    /// Flipping a bit of the signature is a 401 unless it only changes the case of a hex
    /// letter (upper-case hex is accepted, §4).
    #[test]
    fn any_bit_flip_in_the_signature_is_401_unless_only_case_changes(
        p in push(),
        bit in any::<usize>(),
    ) {
        let v = verifier(&p.key);
        let sig = flip(p.sig.as_bytes(), bit);
        let same = std::str::from_utf8(&sig).is_ok_and(|s| s.eq_ignore_ascii_case(&p.sig));
        let r = v.verify(headers(p.ts.as_bytes(), p.nonce.as_bytes(), &sig), &p.body, 0);
        if same {
            prop_assert!(matches!(r, Ok(Inbound::Event(_))), "case change refused: {r:?}");
        } else {
            prop_assert!(
                matches!(&r, Err(Rejection::Unauthorized { reason: FailReason::Signature, .. })),
                "tampered signature got {r:?}"
            );
        }
    }

    /// Any truncation of the ciphertext — of the base64 text, or of the bytes re-encoded —
    /// in a correctly signed body is a 400 (decryption), never a panic or a 200.
    #[test]
    fn any_truncation_of_the_ciphertext_is_400(
        p in push(),
        cut in any::<prop::sample::Index>(),
        bytes_not_text in any::<bool>(),
    ) {
        let ct = serde_json::from_slice::<Value>(&p.body).unwrap()["encrypt"]
            .as_str()
            .unwrap()
            .to_string();
        let truncated = if bytes_not_text {
            let raw = crypto::decode(&ct).unwrap();
            base64::engine::general_purpose::STANDARD.encode(&raw[..cut.index(raw.len())])
        } else {
            ct[..cut.index(ct.len())].to_string()
        };
        let body = serde_json::to_vec(&json!({"encrypt": truncated})).unwrap();
        let k = EncryptKey::new(&p.key);
        let sig = signature::sign(&p.ts, &p.nonce, &k, &body);
        let r = verifier(&p.key).verify(headers(p.ts.as_bytes(), p.nonce.as_bytes(), sig.as_bytes()), &body, 0);
        prop_assert!(
            matches!(&r, Err(Rejection::BadRequest { reason: FailReason::Decrypt, .. })),
            "truncated to {} chars: {r:?}", truncated.len()
        );
        // The strict rules name which one broke.
        let e = crypto::decrypt_json(&[k], &truncated).unwrap_err();
        prop_assert!(matches!(e, DecryptError::Base64 | DecryptError::Length | DecryptError::Padding | DecryptError::NotJson));
    }

    /// Normalizing any `event` object never panics: it fails exactly when ticket_id or
    /// helpdesk_id is unusable, and otherwise yields a CloudEvent valid against the published
    /// schema. The raw envelope of the same event is valid against its schema, always.
    #[test]
    fn normalization_of_any_event_is_schema_valid(
        body in event_object().prop_flat_map(envelope_around),
    ) {
        let plain = serde_json::to_vec(&body).unwrap();
        let ev = fake_lark::kit::plain_event(&plain)
            .expect("a well-formed envelope is accepted");
        let event = body.get("event").unwrap();
        let mut warnings = Vec::new();
        match ticket_created::normalize(&ev, RECEIVED_MS, &mut warnings) {
            Ok(out) => {
                prop_assert!(usable_id(event.get("ticket_id")) && usable_id(event.get("helpdesk_id")));
                let doc: Value = serde_json::from_slice(&out.structured).unwrap();
                let errors = schema_errors(&schemas().ticket, &doc);
                prop_assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
                prop_assert_eq!(&doc["data"], &serde_json::from_slice::<Value>(&out.data).unwrap());
            }
            Err(NormalizeError::MissingTicketId) => prop_assert!(!usable_id(event.get("ticket_id"))),
            Err(NormalizeError::MissingHelpdeskId) => prop_assert!(!usable_id(event.get("helpdesk_id"))),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
        let out = raw::normalize(&ev, RECEIVED_MS, &mut warnings).unwrap();
        let doc: Value = serde_json::from_slice(&out.structured).unwrap();
        let errors = schema_errors(&schemas().raw, &doc);
        prop_assert!(errors.is_empty(), "raw: {errors:?}\n{doc:#}");
    }
}

// ---------------------------------------------------------------- through HTTP

/// One in-process bridge (channel sink, memory store) on its own runtime, shared by the cases.
struct Http {
    rt: tokio::runtime::Runtime,
    url: String,
    _bridge: fake_lark::kit::Bridge,
    _rx: std::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<lark_protocol::event::Outgoing>>,
    client: reqwest::Client,
}

fn http() -> &'static Http {
    static H: OnceLock<Http> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (bridge, rx) = rt.block_on(async {
            let (sink, rx) = fake_lark::sink::ChannelSink::new();
            let components = lark_bridge::Components {
                sink,
                dedup: lark_bridge::dedup::memory::MemoryStore::new(10_000),
                metrics: Arc::new(lark_bridge::metrics::Metrics::new(
                    lark_bridge::metrics::Source::Webhook,
                    "channel",
                    "memory",
                )),
            };
            let cfg = fake_lark::kit::config(&[
                // Pushes are signed with arbitrary timestamps: the window is not under test.
                ("lark.max_timestamp_skew_secs", "0"),
                ("lark.encrypt_key", "test key"),
                ("lark.verification_token", TOKEN),
            ]);
            (fake_lark::kit::Bridge::start(cfg, components).await, rx)
        });
        Http {
            url: bridge.url.clone(),
            rt,
            _bridge: bridge,
            _rx: std::sync::Mutex::new(rx),
            client: reqwest::Client::new(),
        }
    })
}

fn post(body: &[u8], ts: &str, nonce: &str, sig: &str) -> u16 {
    let h = http();
    h.rt.block_on(async {
        h.client
            .post(&h.url)
            .header("content-type", "application/json")
            .header("x-lark-request-timestamp", ts)
            .header("x-lark-request-nonce", nonce)
            .header("x-lark-signature", sig)
            .body(body.to_vec())
            .send()
            .await
            .expect("bridge answers")
            .status()
            .as_u16()
    })
}

fn http_push() -> impl Strategy<Value = Push> {
    push().prop_map(|mut p| {
        // The bridge's key: re-encrypt and re-sign under it.
        let plain = {
            let k = EncryptKey::new(&p.key);
            let ct = serde_json::from_slice::<Value>(&p.body).unwrap()["encrypt"]
                .as_str()
                .unwrap()
                .to_string();
            crypto::decrypt_raw(&k, &crypto::decode(&ct).unwrap()).unwrap()
        };
        let k = EncryptKey::new("test key");
        p.key = "test key".into();
        p.body =
            serde_json::to_vec(&json!({"encrypt": crypto::encrypt(&k, [9; 16], &plain)})).unwrap();
        p.sig = signature::sign(&p.ts, &p.nonce, &k, &p.body);
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    /// The same property through the HTTP entrance: the genuine push is a 200, a single-bit
    /// change of body, timestamp, nonce or signature (beyond case) is a 401 — or a 400 when the
    /// body stops being a JSON object.
    #[test]
    fn through_http_a_tampered_push_is_refused(
        p in http_push(),
        bit in any::<usize>(),
        part in 0u8..4,
    ) {
        let (mut body, mut ts, mut nonce, mut sig) =
            (p.body.clone(), p.ts.clone(), p.nonce.clone(), p.sig.clone());
        // Header values must stay valid header text for the client to send them; a flip that
        // would make one invalid is moved to the body.
        let flipped = |s: &str| String::from_utf8(flip(s.as_bytes(), bit)).ok()
            .filter(|s| s.bytes().all(|b| (0x21..0x7f).contains(&b)));
        match part {
            1 if flipped(&ts).is_some() => ts = flipped(&ts).unwrap(),
            2 if flipped(&nonce).is_some() => nonce = flipped(&nonce).unwrap(),
            3 if flipped(&sig).is_some_and(|s| !s.eq_ignore_ascii_case(&p.sig)) => {
                sig = flipped(&sig).unwrap()
            }
            _ => body = flip(&p.body, bit),
        }
        let status = post(&body, &ts, &nonce, &sig);
        let want = if is_object(&body) { 401 } else { 400 };
        prop_assert_eq!(status, want);
        prop_assert_eq!(post(&p.body, &p.ts, &p.nonce, &p.sig), 200);
    }
}
