//! AES-256-CBC as Lark uses it (lark-protocol.md §3): key = SHA-256(encrypt key), the IV is the
//! first 16 bytes of the base64-decoded text. Decryption is strict: standard base64 with padding,
//! whole blocks, exact PKCS#7 — the SDKs' leniency would turn garbage into "events".

use aes::cipher::{
    block_padding::{NoPadding, Pkcs7},
    BlockDecryptMut, BlockEncryptMut, KeyIvInit,
};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};

type Dec = cbc::Decryptor<aes::Aes256>;
type Enc = cbc::Encryptor<aes::Aes256>;

/// An encrypt key with its AES key derived once. `Debug` never shows either.
#[derive(Clone)]
pub struct EncryptKey {
    raw: String,
    aes: [u8; 32],
}

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptKey(***)")
    }
}

impl EncryptKey {
    /// Derive the AES-256 key (SHA-256 of `raw`) from the encrypt key as configured.
    pub fn new(raw: &str) -> Self {
        EncryptKey {
            raw: raw.to_string(),
            aes: Sha256::digest(raw.as_bytes()).into(),
        }
    }
    /// The key as configured; it is part of the signed string (§4).
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }
}

/// Why a ciphertext was refused. Each is a 400 on the authenticated path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The text is not standard, padded base64.
    #[error("encrypt is not valid base64")]
    Base64,
    /// Shorter than IV plus one block, or not a whole number of 16-byte blocks after the IV.
    #[error("ciphertext length is not a whole number of blocks after the IV")]
    Length,
    /// The decrypted bytes do not end in exact PKCS#7 padding.
    #[error("ciphertext padding is invalid")]
    Padding,
    /// The plaintext is not a JSON object.
    #[error("decrypted bytes are not a JSON object")]
    NotJson,
}

/// Decode base64 and check the length rule; the result is IV ‖ ciphertext.
pub fn decode(b64: &str) -> Result<Vec<u8>, DecryptError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| DecryptError::Base64)?;
    if raw.len() < 32 || (raw.len() - 16) % 16 != 0 {
        return Err(DecryptError::Length);
    }
    Ok(raw)
}

/// Decrypt IV ‖ ciphertext with one key; strict PKCS#7.
pub fn decrypt_raw(key: &EncryptKey, raw: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let (iv, ct) = raw.split_at(16);
    let dec = Dec::new((&key.aes).into(), iv.into());
    // The `cbc` crate's Pkcs7 unpadding checks 1..=16 and that every pad byte equals n.
    dec.decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map_err(|_| DecryptError::Padding)
}

/// Decrypt under the first of `keys` whose plaintext passes padding *and* parses as a JSON
/// object (a wrong key passes padding about 1 time in 256). Returns the parsed object.
pub fn decrypt_json(
    keys: &[EncryptKey],
    b64: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, DecryptError> {
    decrypt_then(keys, b64, |plain| {
        match serde_json::from_slice::<serde_json::Value>(plain) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        }
    })
}

/// Decrypt under the first of `keys` whose plaintext passes padding *and* is accepted by
/// `accept` (which reads it and says whether it is what was expected, e.g. a JSON object; a
/// wrong key passes padding about 1 time in 256). The plaintext is decrypted in place in the
/// decoded buffer (a copy only for a key that is not the last one tried), so a request costs
/// one buffer, not three. [`DecryptError::NotJson`] when padding passed but `accept` refused.
pub fn decrypt_then<T>(
    keys: &[EncryptKey],
    b64: &str,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, DecryptError> {
    let mut raw = decode(b64)?;
    let iv: [u8; 16] = raw[..16].try_into().expect("decode checked the length");
    let mut last = DecryptError::Padding;
    let mut spare = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let buf: &mut [u8] = if i + 1 == keys.len() {
            &mut raw[16..]
        } else {
            spare.clear();
            spare.extend_from_slice(&raw[16..]);
            &mut spare
        };
        // The `cbc` crate's Pkcs7 unpadding checks 1..=16 and that every pad byte equals n.
        match Dec::new((&key.aes).into(), (&iv).into()).decrypt_padded_mut::<Pkcs7>(buf) {
            Ok(plain) => match accept(plain) {
                Some(t) => return Ok(t),
                None => last = DecryptError::NotJson,
            },
            Err(_) => {
                if last != DecryptError::NotJson {
                    last = DecryptError::Padding
                }
            }
        }
    }
    Err(last)
}

/// Decrypt for the unsigned path, in constant shape: the same work whether the padding is valid
/// or not, so its timing is no padding oracle (issue 15). Every key is tried (no early exit);
/// the padding is checked without branching on it; the padding bytes are then overwritten with
/// JSON whitespace when valid — left alone when not — and the *whole* block-aligned plaintext is
/// parsed either way, so both classes parse the same bytes up to the last block. The answer is
/// decided after all that. `None` on any failure; the caller answers one opaque 401.
///
/// Only the decision's inputs are constant-shape: base64 and length errors depend on the text
/// the caller sent, not on the key, and leak nothing.
pub fn decrypt_json_constant_shape(
    keys: &[EncryptKey],
    b64: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let raw = decode(b64).ok()?;
    let (iv, ct) = raw.split_at(16);
    let mut found = None;
    for key in keys {
        let mut buf = ct.to_vec();
        // Whole blocks (decode checked the length), so NoPadding cannot fail.
        let Ok(len) = Dec::new((&key.aes).into(), iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map(|p| p.len())
        else {
            continue;
        };
        let plain = &mut buf[..len];
        let n = plain[len - 1];
        let mut valid = !n.ct_eq(&0) & n.ct_lt(&17);
        for i in 0..16u8 {
            let in_pad = i.ct_lt(&n);
            valid &= !in_pad | plain[len - 1 - i as usize].ct_eq(&n);
        }
        for i in 0..16u8 {
            let blank = i.ct_lt(&n) & valid;
            let b = &mut plain[len - 1 - i as usize];
            *b = u8::conditional_select(b, &b' ', blank);
        }
        let parsed = serde_json::from_slice::<serde_json::Value>(&plain[..]);
        if let (true, Ok(serde_json::Value::Object(m))) = (bool::from(valid), parsed) {
            if found.is_none() {
                found = Some(m);
            }
        }
    }
    found
}

/// Encrypt as Lark does, with a caller-chosen IV (simulate, tests).
pub fn encrypt(key: &EncryptKey, iv: [u8; 16], plain: &[u8]) -> String {
    let enc = Enc::new((&key.aes).into(), (&iv).into());
    let ct = enc.encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut raw = Vec::with_capacity(16 + ct.len());
    raw.extend_from_slice(&iv);
    raw.extend_from_slice(&ct);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4_CT: &str = "AAECAwQFBgcICQoLDA0ODzksK1XHDGhxTlKJKwLymcMyd1nZHD+oH9xjSv/KOaKKQZFf++YZbVCHz6X8k9iRN/lcS84lDXmZagj4wxZQwNvUKLQ6++TDoH/28s+ilAbGeiHjgRYoAE1kaW8WimQi1PvO6Lx+2t+V/n9oz8Ta2UL4bKH1LekCzxtnd6jqht2v0qkvolaWKPoXeWQnD7sOE4u8y4CnPcqPEjQ5Ga3aAMIJbmgAQGlKR3YqeLFr4C28yG/SXXLvLhVxSDMjCgG/anBrQLxQSAmQk4U33ayF1Rywvt8rZ1cUdNRnj8bOvbcNsuaNKw07EV2asa65c3/1HUfwCayhbWzVJo6Cl0GAlCuq/l1HykrU57Zfj8WAOrGL1ONAGthgXnHzUgnJUnjz0QkabVxexq0Lb5xDBAr4RC3usuTlIfTDfjYrZXQVaMSbIFHWjmeS89UsoNrxw17c7j4XIBGfpFEQ1VjCyQ8iVV4wWCExltQiRSJohArN5gJAFOVnLJ9iUsD4kLlCyhxqbZTFX8cOclskxHvxbJFLIobZcABpliJQHUiZpr16UeGF";
    const K4_PLAIN: &str = r#"{"schema":"2.0","header":{"event_id":"5e3702a84e847582be8db7fb73283c02","event_type":"helpdesk.ticket.created_v1","create_time":"1608725989000","token":"rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV","app_id":"cli_9f5343c580712544","tenant_key":"2ca1d211f64f6438"},"event":{"ticket_id":"6626871355780366331","helpdesk_id":"6626871355780366330","stage":1,"status":1,"created_at":1616920429000,"chat_id":"oc_xxxxxxx"}}"#;
    const IV: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    #[test]
    fn k1_lark_documentation() {
        let key = EncryptKey::new("test key");
        assert_eq!(
            hex::encode(key.aes),
            "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
        );
        let raw = decode("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap();
        assert_eq!(hex::encode(&raw[..16]), "3f7ef0f9564898d80f10ed5106127a46");
        assert_eq!(decrypt_raw(&key, &raw).unwrap(), b"hello world");
        // Not JSON: refused by the JSON step, not the padding step.
        assert_eq!(
            decrypt_json(&[key], "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="),
            Err(DecryptError::NotJson)
        );
    }

    #[test]
    fn k2_encrypted_challenge_from_node_sdk() {
        let ct = "tT1xP+ovuc0T3b/rnZX3ax76exqAn0ANQ6/U45GcciC0mgNBc8JtvqOJGNAPMKpgRs2dVU1NYk9VDeqS8T4SYtU0hzNU54aS84WnxvZ3VFfDcy/RyABlNqlUiGyLDzFI0yxdCMT4KR/YEQXlt6nZi50KwRlZ+A75r645KesZuLMljezYyY8VeeXEVjPw35+e";
        let m = decrypt_json(&[EncryptKey::new("mazhe.nerd")], ct).unwrap();
        assert_eq!(m["challenge"], "5634b122-c042-4634-bc7f-b07a3c3e77ad");
        assert_eq!(m["token"], "iRdCP2WwXNBXRM3mGLqhrgch3cn0gbT6");
        assert_eq!(m["type"], "url_verification");
    }

    #[test]
    fn k3_v2_event_from_java_sdk() {
        let ct = "4T4ivT/PR2APX9OYkhRKtu54s1rtIpj9xJU69Hs1yWQ/1RutbufsBs9xjx5YC3u/0hMRF49sN0kevQiEL8iB3bVEdpfyJXzXGDfKUjvKQTmG64GbMdTW6qRpadVPem3f32jHuT6fc+4TRg4BigwoUId+l/D+vcIwu3mDgAEbaqzWfmvccmpiRMfQbh9JhdK/akmrRjo/CXPLM+hZciFXJMSpKueV3SjZJoSls5y0ZTHC8zak/Mp/DSl1wa4mYe5laP367Lnl4ylGiXBKx3Ku29oWv79rYcO/5QT63H4rkl8bwYmAzScpb2KNnV11L3xiDzJp3hFdfXczUvm93FXu4Lw8eDAsRzIWCccKrqHh0UvtDJD95tNn6LvYew4+Xbk1RD4k7UzWJS9AMobOK778NLNxfQ+Kn7MKzBHilXnSIVY5V+dcsOOdfqJviW4yWmT73JHYKq1qJip7Cw7lbkmRMUmettUwdVFWxeXH6iTex3YXCgqoriCx/MzeQhdNEycipooB/vHItRt1CF44uFWj9tf8n3TdbdH4dNMD0hw8ejHJSbEHb9HAGCugUniN8BzL9wxE959JU4cu3BKjDuIk5oS9hLR1mSc3vKBuSa3VKOE=";
        let m = decrypt_json(&[EncryptKey::new("1212121212")], ct).unwrap();
        assert_eq!(m["header"]["event_id"], "f7984f25108f8137722bb63cee927e66");
        assert_eq!(m["header"]["create_time"], "1603977298000000");
        assert_eq!(m["event"]["object"]["name"], "张三");
    }

    #[test]
    fn k4_ticket_created_encrypts_byte_for_byte() {
        let key = EncryptKey::new("test key");
        assert_eq!(K4_PLAIN.len(), 403);
        assert_eq!(encrypt(&key, IV, K4_PLAIN.as_bytes()), K4_CT);
        let raw = decode(K4_CT).unwrap();
        assert_eq!(decrypt_raw(&key, &raw).unwrap(), K4_PLAIN.as_bytes());
    }

    #[test]
    fn k6_encrypted_challenge() {
        let key = EncryptKey::new("test key");
        let plain = r#"{"challenge":"ajls384kdjx98XX","token":"xxxxxx","type":"url_verification"}"#;
        assert_eq!(
            encrypt(&key, IV, plain.as_bytes()),
            "AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHpnBHVL2wRjH9rPunQdQC1vLjsckayA10kZ8cPwtb62F8rC7JprUPR/4S2aZihfR+p8npX7UzWPithZmfKIPZgE"
        );
    }

    #[test]
    fn k7_block_aligned_plaintext_gets_a_full_padding_block() {
        let key = EncryptKey::new("test key");
        let ct = encrypt(&key, IV, b"abcdefghijklmnop");
        assert_eq!(
            ct,
            "AAECAwQFBgcICQoLDA0ODwPnfxtA15F6V7LI1/6HF9I2JK5eqVDn4K0jnQqPAWz2"
        );
        let raw = decode(&ct).unwrap();
        assert_eq!(raw.len(), 48);
        assert_eq!(decrypt_raw(&key, &raw).unwrap(), b"abcdefghijklmnop");
    }

    #[test]
    fn k8_negative() {
        let k1 = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=";
        let raw = decode(k1).unwrap();
        assert_eq!(
            decrypt_raw(&EncryptKey::new("other key"), &raw),
            Err(DecryptError::Padding)
        );
        // Last base64 quantum removed: 28 bytes, not IV + whole blocks.
        assert_eq!(decode(&k1[..k1.len() - 4]), Err(DecryptError::Length));
        assert_eq!(decode("@@@"), Err(DecryptError::Base64));
        // IV only.
        let iv_only = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert_eq!(decode(&iv_only), Err(DecryptError::Length));
        // Unpadded base64 is not the standard alphabet with padding.
        assert_eq!(decode(k1.trim_end_matches('=')), Err(DecryptError::Base64));
    }

    #[test]
    fn rotation_tries_each_key_in_order() {
        let new = EncryptKey::new("new key");
        let old = EncryptKey::new("test key");
        let ct = encrypt(&old, IV, br#"{"a":1}"#);
        let m = decrypt_json(&[new.clone(), old], &ct).unwrap();
        assert_eq!(m["a"], 1);
        assert!(decrypt_json(&[new], &ct).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let s = format!("{:?}", EncryptKey::new("test key"));
        assert!(!s.contains("test key"));
    }
}
