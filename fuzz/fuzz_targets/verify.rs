//! `Verifier::verify` over arbitrary bodies and headers: body-form detection, envelope parsing,
//! the order of checks (lark-protocol.md §6), with and without keys and tokens.
//!
//! Input: `FLAGS TIMESTAMP \n NONCE \n SIGNATURE \n BODY`. FLAGS bit 0: encrypt keys configured;
//! bit 1: tokens configured; bits 2-3: signature headers (0 none, 1 a valid signature computed
//! here over the final body, 2 the three given strings, 3 the timestamp only); bit 4: encrypt
//! BODY under the first key and send `{"encrypt":…}` (reaches the plaintext checks behind the
//! cipher); bit 5: skew check on (300 s around 2020-12-23, K4's time).
//!
//! Oracles besides "never panics": an unsigned request with keys configured never yields an
//! event, and every failure on that path is the one opaque 401 (no padding oracle); a signed
//! request whose signature was not computed with a configured key never yields anything.
#![no_main]

use lark_protocol::{
    crypto, signature, EncryptKey, Inbound, Rejection, SignatureHeaders, Verifier,
};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_608_725_989;
const UNSIGNED_MSG: &str = "missing signature headers: only a URL verification may be unsigned";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(4, |b| *b == b'\n');
    let ts = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let nonce = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let sig = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    let with_keys = flags & 1 != 0;
    let keys = if with_keys {
        vec![EncryptKey::new("test key"), EncryptKey::new("second key")]
    } else {
        Vec::new()
    };
    let tokens = if flags & 2 != 0 {
        vec![
            "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV".to_string(),
            "xxxxxx".to_string(),
        ]
    } else {
        Vec::new()
    };
    let skew = if flags & 32 != 0 { 300 } else { 0 };
    let verifier = Verifier::new(keys.clone(), tokens, skew);

    let body: Vec<u8> = if flags & 16 != 0 && with_keys {
        let ct = crypto::encrypt(&keys[0], [7; 16], body);
        format!(r#"{{"encrypt":"{ct}"}}"#).into_bytes()
    } else {
        body.to_vec()
    };
    let sig_mode = (flags >> 2) & 3;
    let computed = if with_keys {
        signature::sign(&ts, &nonce, &keys[0], &body)
    } else {
        sig.clone()
    };
    let headers = match sig_mode {
        0 => SignatureHeaders::default(),
        1 => SignatureHeaders {
            timestamp: Some(&ts),
            nonce: Some(&nonce),
            signature: Some(&computed),
        },
        2 => SignatureHeaders {
            timestamp: Some(&ts),
            nonce: Some(&nonce),
            signature: Some(&sig),
        },
        _ => SignatureHeaders {
            timestamp: Some(&ts),
            ..Default::default()
        },
    };
    let result = verifier.verify(headers, &body, NOW);

    if let Ok(Inbound::Event(ev)) = &result {
        assert!(!ev.event_id().is_empty(), "an event without an id passed");
        assert!(
            !ev.event_type().is_empty(),
            "an event without a type passed"
        );
    }
    if with_keys && (sig_mode == 0 || sig_mode == 3) {
        // The unauthenticated path: a challenge or the single opaque answer.
        match &result {
            Ok(Inbound::Challenge(_)) => {}
            Ok(Inbound::Event(_)) => panic!("an unsigned event passed with keys configured"),
            Err(Rejection::Unauthorized { msg, .. }) => assert_eq!(*msg, UNSIGNED_MSG),
            Err(Rejection::BadRequest { msg, .. }) => assert!(
                *msg == "body is not JSON" || *msg == "body is not a JSON object",
                "unsigned request learned {msg:?}"
            ),
        }
    }
    if with_keys && sig_mode == 2 {
        let genuine = keys
            .iter()
            .any(|k| signature::sign(&ts, &nonce, k, &body).eq_ignore_ascii_case(&sig));
        if !genuine {
            match &result {
                Err(Rejection::Unauthorized { msg, .. }) => {
                    assert_eq!(*msg, "signature does not match")
                }
                Err(Rejection::BadRequest { msg, .. }) => assert!(
                    *msg == "body is not JSON" || *msg == "body is not a JSON object",
                    "a forged signature got as far as {msg:?}"
                ),
                Ok(_) => panic!("a forged signature passed"),
            }
        }
    }
});
