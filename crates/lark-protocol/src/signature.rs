//! Lark's request signature (lark-protocol.md §4):
//! `lowercase_hex(SHA-256(timestamp ‖ nonce ‖ encrypt_key ‖ raw_body))`, over the body exactly as
//! received. Verification compares digests in constant time and accepts either hex case.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::crypto::EncryptKey;

fn digest(timestamp: &str, nonce: &str, key: &EncryptKey, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(key.raw().as_bytes());
    h.update(body);
    h.finalize().into()
}

/// The signature Lark would send for this body (simulate, tests).
pub fn sign(timestamp: &str, nonce: &str, key: &EncryptKey, body: &[u8]) -> String {
    hex::encode(digest(timestamp, nonce, key, body))
}

/// True when `signature` matches under any of `keys`. Every key is tried (no early exit), so
/// the time taken does not say which key matched.
pub fn verify(
    timestamp: &str,
    nonce: &str,
    signature: &str,
    keys: &[EncryptKey],
    body: &[u8],
) -> bool {
    let Ok(given) = hex::decode(signature) else {
        return false;
    };
    if given.len() != 32 {
        return false;
    }
    let mut ok = subtle::Choice::from(0u8);
    for key in keys {
        ok |= digest(timestamp, nonce, key, body).ct_eq(given.as_slice());
    }
    ok.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_signature() {
        let ct = "AAECAwQFBgcICQoLDA0ODzksK1XHDGhxTlKJKwLymcMyd1nZHD+oH9xjSv/KOaKKQZFf++YZbVCHz6X8k9iRN/lcS84lDXmZagj4wxZQwNvUKLQ6++TDoH/28s+ilAbGeiHjgRYoAE1kaW8WimQi1PvO6Lx+2t+V/n9oz8Ta2UL4bKH1LekCzxtnd6jqht2v0qkvolaWKPoXeWQnD7sOE4u8y4CnPcqPEjQ5Ga3aAMIJbmgAQGlKR3YqeLFr4C28yG/SXXLvLhVxSDMjCgG/anBrQLxQSAmQk4U33ayF1Rywvt8rZ1cUdNRnj8bOvbcNsuaNKw07EV2asa65c3/1HUfwCayhbWzVJo6Cl0GAlCuq/l1HykrU57Zfj8WAOrGL1ONAGthgXnHzUgnJUnjz0QkabVxexq0Lb5xDBAr4RC3usuTlIfTDfjYrZXQVaMSbIFHWjmeS89UsoNrxw17c7j4XIBGfpFEQ1VjCyQ8iVV4wWCExltQiRSJohArN5gJAFOVnLJ9iUsD4kLlCyhxqbZTFX8cOclskxHvxbJFLIobZcABpliJQHUiZpr16UeGF";
        let body = format!(r#"{{"encrypt":"{ct}"}}"#);
        let key = EncryptKey::new("test key");
        let sig = "df9e709a10d6257f20cc2ca7b13b98d48d47919521657bc32567b631bef4c8c3";
        assert_eq!(
            sign("1608725989000", "0123456789abcdef", &key, body.as_bytes()),
            sig
        );
        assert!(verify(
            "1608725989000",
            "0123456789abcdef",
            sig,
            std::slice::from_ref(&key),
            body.as_bytes()
        ));
        assert!(verify(
            "1608725989000",
            "0123456789abcdef",
            &sig.to_uppercase(),
            &[key],
            body.as_bytes()
        ));
    }

    #[test]
    fn k5_signature_is_over_raw_bytes() {
        let key = EncryptKey::new("test key");
        let body = r#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#;
        let sig = "0ae6f11b88a6211c72628652d02302d6b90507e4ec69b5c7fecc4b7197873c75";
        assert_eq!(
            sign("1608725989000", "0123456789abcdef", &key, body.as_bytes()),
            sig
        );
        let spaced = r#"{"encrypt": "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#;
        assert_ne!(
            sign("1608725989000", "0123456789abcdef", &key, spaced.as_bytes()),
            sig
        );
        assert!(!verify(
            "1608725989000",
            "0123456789abcdef",
            sig,
            &[key],
            spaced.as_bytes()
        ));
    }

    #[test]
    fn wrong_key_short_or_non_hex_signature_fails() {
        let key = EncryptKey::new("test key");
        let sig = sign("1", "n", &key, b"{}");
        assert!(!verify("1", "n", &sig, &[EncryptKey::new("other")], b"{}"));
        assert!(!verify(
            "1",
            "n",
            &sig[..62],
            std::slice::from_ref(&key),
            b"{}"
        ));
        assert!(!verify("1", "n", "zz", std::slice::from_ref(&key), b"{}"));
        assert!(verify(
            "1",
            "n",
            &sig,
            &[EncryptKey::new("other"), key],
            b"{}"
        ));
    }
}
