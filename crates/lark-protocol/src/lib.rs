//! Lark's (Feishu's) protocols and the events lark-bridge publishes, pure: no I/O, no async
//! runtime, no sockets — the crate another Rust service or a consumer can depend on.
//!
//! - The push protocol (lark-protocol.md): [`Verifier::verify`] takes the raw body and the three
//!   signature headers and is the only way to obtain an [`Inbound`] event, so nothing downstream
//!   can touch a request that has not passed every check of §6. [`crypto`] and [`signature`]
//!   also hold Lark's side (encrypt, sign), for tools that play Lark.
//! - The long connection (lark-longconn.md): [`endpoint`] (discovery and handshake answers),
//!   [`frame`] (the protobuf frame) and [`fragments`] (reassembly of split payloads).
//! - [`normalize`]: a verified Lark event → the CloudEvent v1 of normalized-schema.md, and
//!   [`event`]: that CloudEvent as published (attributes, serialized bodies, routing values).
//! - [`consumer`]: the other end — a published message (either content mode, Kafka or NATS)
//!   read back into a typed [`consumer::CloudEvent`], e.g. [`consumer::TicketCreated`].

#![warn(missing_docs)]

pub mod consumer;
pub mod crypto;
pub mod endpoint;
pub mod envelope;
pub mod event;
pub mod fragments;
pub mod frame;
pub mod normalize;
pub mod signature;
pub mod time;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

pub use crypto::EncryptKey;
pub use envelope::Version;

use std::borrow::Cow;

use envelope::{EventParts, Form, Plain};

/// Why verification failed, as a metric label (`lark_bridge_verification_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The signature headers do not match the body, or are missing where required.
    Signature,
    /// The verification token is missing or does not match.
    Token,
    /// The `encrypt` field is not a string or does not decrypt to a JSON object.
    Decrypt,
    /// The body or its event is malformed (not JSON, unknown form, missing id or type).
    Parse,
    /// The signed timestamp is outside the allowed clock skew.
    Timestamp,
}

impl FailReason {
    /// Every reason, e.g. to pre-register metric labels.
    pub const ALL: [FailReason; 5] = [
        FailReason::Signature,
        FailReason::Token,
        FailReason::Decrypt,
        FailReason::Parse,
        FailReason::Timestamp,
    ];
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Signature => "signature",
            FailReason::Token => "token",
            FailReason::Decrypt => "decrypt",
            FailReason::Parse => "parse",
            FailReason::Timestamp => "timestamp",
        }
    }
}

/// A refused request: 400 or 401, with a plain message that never holds a secret or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// 400 Bad Request: the body is malformed or cannot be decrypted.
    #[error("{msg}")]
    BadRequest {
        /// Why, as a metric label.
        reason: FailReason,
        /// The response message.
        msg: &'static str,
    },
    /// 401 Unauthorized: signature, token or timestamp check failed.
    #[error("{msg}")]
    Unauthorized {
        /// Why, as a metric label.
        reason: FailReason,
        /// The response message.
        msg: &'static str,
    },
}

impl Rejection {
    pub(crate) fn bad_request(msg: &'static str) -> Self {
        Rejection::BadRequest {
            reason: FailReason::Parse,
            msg,
        }
    }
    /// Why the request was refused, as a metric label.
    pub fn reason(&self) -> FailReason {
        match self {
            Rejection::BadRequest { reason, .. } | Rejection::Unauthorized { reason, .. } => {
                *reason
            }
        }
    }
}

/// What a verified request asks for.
// Built once per request and destructured at once: boxing the event would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Inbound {
    /// URL verification: echo this.
    Challenge(String),
    /// An event that passed every check.
    Event(VerifiedEvent),
}

/// An event that passed every check. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedEvent(EventParts);

impl VerifiedEvent {
    /// Which envelope the event arrived in.
    pub fn version(&self) -> Version {
        self.0.version
    }
    /// Lark's event id: v2 `header.event_id`, v1 `uuid`.
    pub fn event_id(&self) -> &str {
        &self.0.event_id
    }
    /// Lark's event type: v2 `header.event_type`, v1 `event.type`.
    pub fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// v2 `header.create_time`, v1 `ts`.
    pub fn create_time(&self) -> Option<&Value> {
        self.0.create_time.as_ref()
    }
    /// v2 `header.app_id`, v1 `event.app_id`; `None` when absent or empty.
    pub fn app_id(&self) -> Option<&str> {
        self.0.app_id.as_deref()
    }
    /// v2 `header.tenant_key`, v1 `event.tenant_key`; `None` when absent or empty.
    pub fn tenant_key(&self) -> Option<&str> {
        self.0.tenant_key.as_deref()
    }
    /// v2 `schema` ("2.0"); `None` for v1.
    pub fn schema(&self) -> Option<&str> {
        self.0.schema.as_deref()
    }
    /// The v2 header without the verification token (raw forwarding).
    pub fn header_without_token(&self) -> Option<Map<String, Value>> {
        self.0.header.as_ref().map(|h| {
            let mut h = h.to_map();
            h.remove("token");
            h
        })
    }
    /// Lark's `event` object as sent (v1: without the top-level token, which is outside it).
    pub fn event(&self) -> &Value {
        self.0.event.value()
    }

    /// Lark's `event` object as JSON text, when the fast path kept it so (typed normalizers read
    /// it without building a `Value`).
    pub(crate) fn event_json(&self) -> Option<&str> {
        self.0.event.text()
    }

    /// An event from Lark's long connection (lark-longconn.md §4): plain JSON, authenticated by
    /// the connection itself, so no token or signature; an encrypted payload or a challenge is
    /// refused.
    pub fn from_long_connection(payload: &[u8]) -> Result<VerifiedEvent, Rejection> {
        let plain = match envelope::read_plaintext(payload) {
            Some(p) => p,
            // Not an object: the general parse words the error.
            None => return Err(parse_object(payload).err().unwrap_or(NOT_AN_OBJECT)),
        };
        if let Plain::Object(m) = &plain {
            if m.contains_key("encrypt") {
                return Err(Rejection::bad_request(
                    "encrypted payload on the long connection",
                ));
            }
        }
        match plain.detect()? {
            Form::Event(p) => Ok(VerifiedEvent(*p)),
            Form::BadEvent { rejection, .. } => Err(rejection),
            Form::Challenge { .. } => {
                Err(Rejection::bad_request("challenge on the long connection"))
            }
        }
    }
}

/// The three signature headers, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    /// `X-Lark-Request-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-Lark-Request-Nonce`.
    pub nonce: Option<&'a str>,
    /// `X-Lark-Signature`.
    pub signature: Option<&'a str>,
}

/// The configured secrets, and the checks of §6 over them.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<EncryptKey>,
    tokens: Vec<String>,
    max_skew_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("tokens", &self.tokens.len())
            .field("max_skew_secs", &self.max_skew_secs)
            .finish()
    }
}

/// The longest `encrypt` (base64 characters) the unsigned path decrypts. Only a URL verification
/// may be unsigned, and its plaintext — `{"challenge":"<uuid>","token":"<32 chars>","type":
/// "url_verification"}` — is about 120 bytes, 200 characters of base64 with the IV. 4 KiB
/// leaves room for longer challenges and tokens while refusing, before any decryption, the
/// captured events an attacker would probe (issue 15).
pub const MAX_UNSIGNED_ENCRYPT_LEN: usize = 4096;

const UNSIGNED: Rejection = Rejection::Unauthorized {
    reason: FailReason::Signature,
    msg: "missing signature headers: only a URL verification may be unsigned",
};

const NOT_AN_OBJECT: Rejection = Rejection::BadRequest {
    reason: FailReason::Parse,
    msg: "body is not a JSON object",
};

/// The outer body, read once: `{"encrypt": "…"}` — the form of every encrypted request, read
/// borrowed without building a map — or any other JSON object, parsed whole and sorted by its
/// `encrypt` member. Whether a non-string `encrypt` is refused, and how, is for the caller: the
/// signature is checked first (§6 step 3 before 4).
enum Outer<'a> {
    Encrypted(Cow<'a, str>),
    Plain(Map<String, Value>),
    EncryptNotAString,
}

impl<'a> Outer<'a> {
    fn parse(body: &'a [u8]) -> Result<Outer<'a>, Rejection> {
        #[derive(serde::Deserialize)]
        struct EncryptedBody<'a> {
            #[serde(borrow)]
            encrypt: Cow<'a, str>,
        }
        // Other keys are ignored, as the general path ignores them next to `encrypt`; a
        // duplicate `encrypt` or a non-string one fails here and is decided by the general path.
        if envelope::is_object_text(body) {
            if let Ok(b) = serde_json::from_slice::<EncryptedBody>(body) {
                return Ok(Outer::Encrypted(b.encrypt));
            }
        }
        let mut m = parse_object(body)?;
        Ok(match m.remove("encrypt") {
            None => Outer::Plain(m),
            Some(Value::String(ct)) => Outer::Encrypted(Cow::Owned(ct)),
            Some(_) => Outer::EncryptNotAString,
        })
    }
}

fn decrypt_rejection(e: crypto::DecryptError) -> Rejection {
    Rejection::BadRequest {
        reason: FailReason::Decrypt,
        msg: match e {
            crypto::DecryptError::Base64 => "encrypt is not valid base64",
            crypto::DecryptError::Length => "ciphertext length is invalid",
            crypto::DecryptError::Padding => "ciphertext padding is invalid",
            crypto::DecryptError::NotJson => "decrypted bytes are not a JSON object",
        },
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Rejection::bad_request("body is not a JSON object")),
        Err(_) => Err(Rejection::bad_request("body is not JSON")),
    }
}

impl Verifier {
    /// A verifier over the configured encrypt keys and verification tokens (any one may match;
    /// no keys = no signature check, no tokens = no token check) and the allowed clock skew of
    /// the signed timestamp, in seconds (0 = not checked).
    pub fn new(keys: Vec<EncryptKey>, tokens: Vec<String>, max_skew_secs: u64) -> Self {
        Verifier {
            keys,
            tokens,
            max_skew_secs,
        }
    }

    /// Run the checks of lark-protocol.md §6, steps 2–8, in order. `now_secs` is the current
    /// Unix time (used only by the optional skew check).
    pub fn verify(
        &self,
        headers: SignatureHeaders<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Inbound, Rejection> {
        // 2. The outer body must be a JSON object.
        let outer = Outer::parse(body)?;
        // 3. Signature, when an encrypt key is configured.
        if !self.keys.is_empty() {
            match (headers.timestamp, headers.nonce, headers.signature) {
                (Some(ts), Some(nonce), Some(sig)) => {
                    if !signature::verify(ts, nonce, sig, &self.keys, body) {
                        return Err(Rejection::Unauthorized {
                            reason: FailReason::Signature,
                            msg: "signature does not match",
                        });
                    }
                    self.check_skew(ts, now_secs)?;
                }
                _ => return self.unsigned_challenge(outer),
            }
        }
        // 4. Decrypt.
        let plain = match outer {
            Outer::Plain(m) => Plain::Object(m),
            Outer::EncryptNotAString => {
                return Err(Rejection::BadRequest {
                    reason: FailReason::Decrypt,
                    msg: "encrypt is not a string",
                })
            }
            Outer::Encrypted(_) if self.keys.is_empty() => {
                return Err(Rejection::bad_request(
                    "encrypted body but no encrypt key configured",
                ))
            }
            Outer::Encrypted(ct) => crypto::decrypt_then(&self.keys, &ct, envelope::read_plaintext)
                .map_err(decrypt_rejection)?,
        };
        // 5. Detect the form; 6. token; 7. challenge; 8. event id and type (in detect).
        match plain.detect()? {
            Form::Challenge { challenge, token } => {
                self.check_token(token.as_ref())?;
                Ok(Inbound::Challenge(challenge))
            }
            Form::Event(parts) => {
                self.check_token(parts.token.as_ref())?;
                Ok(Inbound::Event(VerifiedEvent(*parts)))
            }
            Form::BadEvent { token, rejection } => {
                self.check_token(token.as_ref())?;
                Err(rejection)
            }
        }
    }

    /// The unauthenticated path: only a challenge may pass, and every failure looks the same,
    /// so an unsigned request cannot learn whether its ciphertext decrypted (no padding oracle).
    fn unsigned_challenge(&self, outer: Outer<'_>) -> Result<Inbound, Rejection> {
        let plain = match outer {
            Outer::Plain(m) => m,
            Outer::EncryptNotAString => return Err(UNSIGNED),
            // Longer than any challenge: refused before decrypting (no oracle to probe).
            Outer::Encrypted(ct) if ct.len() > MAX_UNSIGNED_ENCRYPT_LEN => return Err(UNSIGNED),
            Outer::Encrypted(ct) => {
                crypto::decrypt_json_constant_shape(&self.keys, &ct).ok_or(UNSIGNED)?
            }
        };
        match envelope::detect(plain) {
            Ok(Form::Challenge { challenge, token }) => {
                self.check_token(token.as_ref()).map_err(|_| UNSIGNED)?;
                Ok(Inbound::Challenge(challenge))
            }
            _ => Err(UNSIGNED),
        }
    }

    fn check_token(&self, token: Option<&Value>) -> Result<(), Rejection> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let given = match token {
            Some(Value::String(s)) if !s.is_empty() => s.as_bytes(),
            _ => {
                return Err(Rejection::Unauthorized {
                    reason: FailReason::Token,
                    msg: "verification token is missing",
                })
            }
        };
        let mut ok = subtle::Choice::from(0u8);
        for t in &self.tokens {
            ok |= t.as_bytes().ct_eq(given);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(Rejection::Unauthorized {
                reason: FailReason::Token,
                msg: "verification token does not match",
            })
        }
    }

    fn check_skew(&self, ts: &str, now_secs: i64) -> Result<(), Rejection> {
        if self.max_skew_secs == 0 {
            return Ok(());
        }
        let stale = Rejection::Unauthorized {
            reason: FailReason::Timestamp,
            msg: "request timestamp is outside the allowed window",
        };
        let ms = time::parse_millis(ts).ok().flatten().ok_or(stale.clone())?;
        let skew = (now_secs.saturating_mul(1000) - ms).unsigned_abs() / 1000;
        if skew > self.max_skew_secs {
            return Err(stale);
        }
        Ok(())
    }
}

/// A repeatable pseudo-random pick in `0..n` (xorshift64 from `seed`), for the tests that
/// hold a fast path to the general one over generated inputs.
#[cfg(test)]
pub(crate) fn test_picker(mut seed: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(keys: &[&str], tokens: &[&str]) -> Verifier {
        Verifier::new(
            keys.iter().map(|k| EncryptKey::new(k)).collect(),
            tokens.iter().map(|t| t.to_string()).collect(),
            0,
        )
    }

    fn signed<'a>(ts: &'a str, nonce: &'a str, sig: &'a str) -> SignatureHeaders<'a> {
        SignatureHeaders {
            timestamp: Some(ts),
            nonce: Some(nonce),
            signature: Some(sig),
        }
    }

    #[test]
    fn k4_full_request_verifies_and_detects_v2() {
        let ct = crypto::encrypt(
            &EncryptKey::new("test key"),
            [0; 16],
            br#"{"schema":"2.0","header":{"event_id":"e1","event_type":"helpdesk.ticket.created_v1","token":"tok"},"event":{"ticket_id":"1","helpdesk_id":"2"}}"#,
        );
        let body = format!(r#"{{"encrypt":"{ct}"}}"#);
        let sig = signature::sign("1", "n", &EncryptKey::new("test key"), body.as_bytes());
        let got = v(&["test key"], &["tok"])
            .verify(signed("1", "n", &sig), body.as_bytes(), 0)
            .unwrap();
        let Inbound::Event(e) = got else { panic!() };
        assert_eq!(e.event_id(), "e1");
        assert_eq!(e.version(), Version::V2);
    }

    #[test]
    fn k6_unsigned_encrypted_challenge_is_answered() {
        let body = r#"{"encrypt":"AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHpnBHVL2wRjH9rPunQdQC1vLjsckayA10kZ8cPwtb62F8rC7JprUPR/4S2aZihfR+p8npX7UzWPithZmfKIPZgE"}"#;
        let got = v(&["test key"], &["xxxxxx"])
            .verify(SignatureHeaders::default(), body.as_bytes(), 0)
            .unwrap();
        assert!(matches!(got, Inbound::Challenge(c) if c == "ajls384kdjx98XX"));
        // Wrong token on the unsigned path: the same 401 as any other failure there.
        let err = v(&["test key"], &["other"])
            .verify(SignatureHeaders::default(), body.as_bytes(), 0)
            .unwrap_err();
        assert_eq!(err, UNSIGNED);
    }

    #[test]
    fn unsigned_event_is_401_and_bad_ciphertext_is_not_distinguished() {
        let vr = v(&["test key"], &[]);
        let plain_event =
            br#"{"schema":"2.0","header":{"event_id":"e","event_type":"t"},"event":{}}"#;
        assert_eq!(
            vr.verify(SignatureHeaders::default(), plain_event, 0)
                .unwrap_err(),
            UNSIGNED
        );
        assert_eq!(
            vr.verify(SignatureHeaders::default(), br#"{"encrypt":"@@@"}"#, 0)
                .unwrap_err(),
            UNSIGNED
        );
        // Only some headers: still the unsigned path.
        let some = SignatureHeaders {
            timestamp: Some("1"),
            ..Default::default()
        };
        assert_eq!(vr.verify(some, plain_event, 0).unwrap_err(), UNSIGNED);
        // Not JSON wins over unsigned (step 2 before step 3).
        assert!(matches!(
            vr.verify(SignatureHeaders::default(), b"nope", 0)
                .unwrap_err(),
            Rejection::BadRequest { .. }
        ));
    }

    #[test]
    fn encrypted_body_without_a_key_is_400() {
        let err = v(&[], &["t"])
            .verify(SignatureHeaders::default(), br#"{"encrypt":"abc"}"#, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "encrypted body but no encrypt key configured"
        );
    }

    #[test]
    fn token_rules() {
        let vr = v(&[], &["a", "b"]);
        let ev = |tok: &str| {
            format!(
                r#"{{"schema":"2.0","header":{{"event_id":"e","event_type":"t"{tok}}},"event":{{}}}}"#
            )
        };
        assert!(vr
            .verify(
                SignatureHeaders::default(),
                ev(r#","token":"b""#).as_bytes(),
                0
            )
            .is_ok());
        assert_eq!(
            vr.verify(
                SignatureHeaders::default(),
                ev(r#","token":"c""#).as_bytes(),
                0
            )
            .unwrap_err()
            .reason(),
            FailReason::Token
        );
        assert_eq!(
            vr.verify(SignatureHeaders::default(), ev("").as_bytes(), 0)
                .unwrap_err()
                .to_string(),
            "verification token is missing"
        );
        // Legacy v1 and plain challenge carry it at the top level.
        let v1 =
            br#"{"uuid":"u","token":"a","ts":"1","type":"event_callback","event":{"type":"x"}}"#;
        assert!(vr.verify(SignatureHeaders::default(), v1, 0).is_ok());
        let ch = br#"{"challenge":"c","token":"z","type":"url_verification"}"#;
        assert!(matches!(
            vr.verify(SignatureHeaders::default(), ch, 0).unwrap_err(),
            Rejection::Unauthorized { .. }
        ));
    }

    #[test]
    fn forms_and_type_errors() {
        let vr = v(&[], &[]);
        let bad = |b: &str| {
            vr.verify(SignatureHeaders::default(), b.as_bytes(), 0)
                .unwrap_err()
        };
        assert_eq!(bad("[1]").to_string(), "body is not a JSON object");
        assert_eq!(
            bad("{}").to_string(),
            "unknown body form: neither a challenge nor a v1/v2 event"
        );
        assert_eq!(bad(r#"{"schema":2}"#).to_string(), "schema is not a string");
        assert_eq!(
            bad(r#"{"schema":"2.0","header":{"event_type":"t"}}"#).to_string(),
            "event_id is missing"
        );
        assert_eq!(
            bad(r#"{"schema":"2.0","header":{"event_id":"e"}}"#).to_string(),
            "event type is missing"
        );
        assert_eq!(
            bad(r#"{"schema":"2.0","header":{"event_id":1,"event_type":"t"}}"#).to_string(),
            "event_id is not a string"
        );
        assert_eq!(
            bad(r#"{"uuid":"u","event":{}}"#).to_string(),
            "event type is missing"
        );
        assert_eq!(
            bad(r#"{"type":"url_verification"}"#).to_string(),
            "challenge is missing"
        );
    }

    #[test]
    fn token_is_checked_before_event_id_and_type() {
        let vr = v(&[], &["tok"]);
        let bad = |b: &str| {
            vr.verify(SignatureHeaders::default(), b.as_bytes(), 0)
                .unwrap_err()
        };
        // §6: token (step 6) before event id / type (step 8).
        let no_id = r#"{"schema":"2.0","header":{"event_type":"t","token":"nope"}}"#;
        assert_eq!(bad(no_id).reason(), FailReason::Token);
        let no_type_v1 = r#"{"uuid":"u","token":"nope","event":{}}"#;
        assert_eq!(bad(no_type_v1).reason(), FailReason::Token);
        let no_header = r#"{"schema":"2.0"}"#;
        assert_eq!(bad(no_header).to_string(), "verification token is missing");
        // With the right token the event's own fault is reported.
        let no_id = r#"{"schema":"2.0","header":{"event_type":"t","token":"tok"}}"#;
        assert_eq!(bad(no_id).to_string(), "event_id is missing");
        let no_type_v1 = r#"{"uuid":"u","token":"tok","event":{"type":1}}"#;
        assert_eq!(bad(no_type_v1).to_string(), "event type is not a string");
    }

    #[test]
    fn skew_check() {
        let key = EncryptKey::new("k");
        let vr = Verifier::new(vec![key.clone()], vec![], 300);
        let body = br#"{"schema":"2.0","header":{"event_id":"e","event_type":"t"},"event":{}}"#;
        let ok = |ts: &str, now: i64| {
            let sig = signature::sign(ts, "n", &key, body);
            vr.verify(signed(ts, "n", &sig), body, now)
        };
        assert!(ok("1000000000", 1_000_000_100).is_ok());
        assert!(
            ok("1000000000000", 1_000_000_100).is_ok(),
            "milliseconds tolerated"
        );
        assert_eq!(
            ok("1000000000", 1_000_000_301).unwrap_err().reason(),
            FailReason::Timestamp
        );
        assert_eq!(
            ok("garbage", 1_000_000_000).unwrap_err().reason(),
            FailReason::Timestamp
        );
    }
}
