//! `lark::crypto::decrypt_json` over arbitrary base64, ciphertext and keys (lark-protocol.md §3,
//! strict rules), plus a round trip: whatever `encrypt` produces, `decrypt_raw` gives back.
//!
//! Input: `N KEYS PAYLOAD`: the first byte N is the length of KEYS (comma-separated encrypt
//! keys, as in `lark.encrypt_key` rotation); PAYLOAD is the `encrypt` string as sent, and also
//! the plaintext of the round trip.
//!
//! Oracles: the error kind is exactly the first strict rule broken (base64, then length, then
//! padding or JSON), checked against an independent base64 decode; our own ciphertext always
//! decrypts to the plaintext, and `decrypt_json` accepts it exactly when it is a JSON object.
#![no_main]

use base64::Engine;
use lark_protocol::crypto::{self, DecryptError, EncryptKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let (keys, payload) = rest.split_at(n);
    let keys: Vec<EncryptKey> = String::from_utf8_lossy(keys)
        .split(',')
        .map(EncryptKey::new)
        .collect();
    let b64 = String::from_utf8_lossy(payload);

    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes());
    let length_ok = |raw: &Vec<u8>| raw.len() >= 32 && (raw.len() - 16) % 16 == 0;
    match crypto::decrypt_json(&keys, &b64) {
        Err(DecryptError::Base64) => assert!(decoded.is_err(), "valid base64 refused"),
        Err(DecryptError::Length) => {
            assert!(decoded.as_ref().is_ok_and(|r| !length_ok(r)))
        }
        Err(DecryptError::Padding) | Err(DecryptError::NotJson) | Ok(_) => {
            assert!(decoded.as_ref().is_ok_and(length_ok))
        }
    }

    // Round trip of the payload as plaintext under the first key.
    let iv: [u8; 16] = std::array::from_fn(|i| payload.get(i).copied().unwrap_or(i as u8));
    let ct = crypto::encrypt(&keys[0], iv, payload);
    let raw = crypto::decode(&ct).expect("our own ciphertext decodes");
    assert_eq!(
        crypto::decrypt_raw(&keys[0], &raw).expect("our own ciphertext decrypts"),
        payload
    );
    let is_object = matches!(
        serde_json::from_slice::<serde_json::Value>(payload),
        Ok(serde_json::Value::Object(_))
    );
    assert_eq!(
        crypto::decrypt_json(&keys[..1], &ct).is_ok(),
        is_object,
        "decrypt_json disagrees with serde_json on the plaintext"
    );
});
