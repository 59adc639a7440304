//! Issue 15 item 6: the unsigned path must not tell valid from invalid padding by its timing.
//! An attacker holding a captured event's ciphertext probes it unsigned, changing the
//! second-to-last block: the last plaintext block's padding stays valid (class A) or breaks
//! (class B), and the block before it is garbled either way. Before the fix, class A went on to
//! parse the decrypted JSON and took measurably longer — a padding oracle. Now both classes do
//! the same work. Many interleaved samples, medians compared with a generous threshold, so
//! scheduler noise cannot fail it while the old difference (several times the threshold)
//! could not pass.

use std::time::{Duration, Instant};

use base64::Engine;
use lark_protocol::{crypto, EncryptKey, SignatureHeaders, Verifier};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A captured event just under the unsigned path's size bound, padded with 4 bytes of 0x04.
fn captured(key: &EncryptKey) -> Vec<u8> {
    let prefix = r#"{"schema":"2.0","header":{"event_id":"e1","event_type":"helpdesk.ticket.created_v1","token":"tok"},"event":{"note":""#;
    let suffix = r#""}}"#;
    let total = 16 * 169 - 4;
    let plain = format!(
        "{prefix}{}{suffix}",
        &"abcdefgh".repeat(400)[..total - prefix.len() - suffix.len()]
    );
    assert_eq!((plain.len() + 4) % 16, 0, "padding is 4 bytes");
    let ct = crypto::encrypt(key, [7; 16], plain.as_bytes());
    B64.decode(ct).unwrap()
}

fn body(raw: &[u8]) -> Vec<u8> {
    format!(r#"{{"encrypt":"{}"}}"#, B64.encode(raw)).into_bytes()
}

fn median(v: &mut [u128]) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn valid_and_invalid_padding_take_the_same_time_on_the_unsigned_path() {
    let key = EncryptKey::new("test key");
    let verifier = Verifier::new(vec![key.clone()], vec!["tok".into()], 0);
    let raw = captured(&key);
    assert!(
        body(&raw).len() < 4096,
        "under the bound, so it is decrypted"
    );
    let n = raw.len();
    let prev = n - 32; // the second-to-last ciphertext block
                       // A: flip a byte of the prior block that lands on data, not padding: padding stays valid.
    let mut a = raw.clone();
    a[prev] ^= 0x01;
    // B: flip the byte that lands on the last padding byte: 0x04 → 0x00, invalid.
    let mut b = raw.clone();
    b[prev + 15] ^= 0x04;
    // Check the classes are what they say.
    let ivct = |r: &[u8]| crypto::decrypt_raw(&key, r).map(|_| ());
    assert!(ivct(&a).is_ok());
    assert_eq!(ivct(&b), Err(crypto::DecryptError::Padding));
    let (a, b) = (body(&a), body(&b));
    let unsigned = SignatureHeaders::default();
    // Same answer for both (the opaque 401).
    let ra = verifier.verify(unsigned, &a, 0).unwrap_err();
    let rb = verifier.verify(unsigned, &b, 0).unwrap_err();
    assert_eq!(ra, rb);

    const BATCH: usize = 8;
    let time = |body: &[u8]| {
        let t = Instant::now();
        for _ in 0..BATCH {
            std::hint::black_box(verifier.verify(unsigned, std::hint::black_box(body), 0)).ok();
        }
        t.elapsed().as_nanos()
    };
    // Warm up, then interleave the classes so drift hits both alike.
    for _ in 0..50 {
        time(&a);
        time(&b);
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(20);
    while ta.len() < 1500 && Instant::now() < until {
        ta.push(time(&a));
        tb.push(time(&b));
    }
    let (ma, mb) = (median(&mut ta), median(&mut tb));
    let diff = ma.abs_diff(mb) as f64 / ma.min(mb) as f64;
    eprintln!(
        "median per call: valid padding {} ns, invalid {} ns, difference {:.1} % ({} samples of {BATCH})",
        ma / BATCH as u128,
        mb / BATCH as u128,
        diff * 100.0,
        ta.len()
    );
    assert!(
        diff < 0.10,
        "valid padding {ma} ns vs invalid {mb} ns per {BATCH} calls: a timing oracle"
    );
}

#[test]
fn an_encrypt_longer_than_a_challenge_needs_is_refused_before_decrypting() {
    let key = EncryptKey::new("test key");
    let verifier = Verifier::new(vec![key.clone()], vec!["tok".into()], 0);
    // A genuine challenge, padded with a long ignored field past the bound: refused unsigned.
    let filler = "x".repeat(4096);
    let plain =
        format!(r#"{{"challenge":"c","token":"tok","type":"url_verification","pad":"{filler}"}}"#);
    let ct = crypto::encrypt(&key, [1; 16], plain.as_bytes());
    assert!(ct.len() > lark_protocol::MAX_UNSIGNED_ENCRYPT_LEN);
    let long = format!(r#"{{"encrypt":"{ct}"}}"#);
    assert!(verifier
        .verify(SignatureHeaders::default(), long.as_bytes(), 0)
        .is_err());
    // The same challenge without the filler passes.
    let plain = r#"{"challenge":"c","token":"tok","type":"url_verification"}"#;
    let ct = crypto::encrypt(&key, [1; 16], plain.as_bytes());
    let short = format!(r#"{{"encrypt":"{ct}"}}"#);
    assert!(matches!(
        verifier.verify(SignatureHeaders::default(), short.as_bytes(), 0),
        Ok(lark_protocol::Inbound::Challenge(c)) if c == "c"
    ));
}
