//! `lark::signature::verify` over arbitrary headers, keys and bodies (lark-protocol.md §4).
//!
//! Input: `TIMESTAMP \n NONCE \n SIGNATURE \n KEY \n BODY` (BODY may hold newlines).
//!
//! Oracles: `verify` agrees with an independent reading of the rule (64 hex digits equal, case
//! aside, to SHA-256(timestamp ‖ nonce ‖ key ‖ body)); a signature we compute always verifies,
//! in lower and upper case, and never under another key.
#![no_main]

use lark_protocol::{signature, EncryptKey};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (ts, nonce, sig, key) = (text(), text(), text(), text());
    let body = parts.next().unwrap_or_default();
    let k = EncryptKey::new(&key);

    let mut h = Sha256::new();
    h.update(ts.as_bytes());
    h.update(nonce.as_bytes());
    h.update(key.as_bytes());
    h.update(body);
    let expected = hex::encode(h.finalize());
    let want = sig.len() == 64 && sig.eq_ignore_ascii_case(&expected);
    assert_eq!(
        signature::verify(&ts, &nonce, &sig, std::slice::from_ref(&k), body),
        want,
        "verify disagrees with the rule"
    );

    let good = signature::sign(&ts, &nonce, &k, body);
    assert_eq!(good, expected);
    assert!(signature::verify(
        &ts,
        &nonce,
        &good,
        std::slice::from_ref(&k),
        body
    ));
    assert!(signature::verify(
        &ts,
        &nonce,
        &good.to_uppercase(),
        std::slice::from_ref(&k),
        body
    ));
    let other = EncryptKey::new(&format!("{key}x"));
    assert!(!signature::verify(&ts, &nonce, &good, &[other], body));
});
