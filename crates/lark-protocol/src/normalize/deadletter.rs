//! A verified event the normalizer refused → a dead letter: the raw envelope of
//! normalized-schema.md §4 (`com.larksuite.raw.v1`, the decrypted event minus the token) with
//! one more extension attribute, `deadletterreason`. Nothing Lark's signature vouches for is
//! dropped: it is kept, with the reason, until `lark-bridge redrive` moves it after a fix.

use super::{raw, NormalizeError, Warnings};
use crate::event::{EventClass, Outgoing};
use crate::VerifiedEvent;

/// The dead letter of `ev`, which the normalizer refused with `reason` (its message).
pub fn normalize(
    ev: &VerifiedEvent,
    reason: &str,
    received_ms: i64,
    warnings: &mut Warnings,
) -> Result<Outgoing, NormalizeError> {
    raw::envelope(
        ev,
        received_ms,
        warnings,
        EventClass::DeadLetter,
        Some(reason.to_string()),
    )
}

/// The kind of a dead letter's `deadletterreason` message ([`NormalizeError::kind`]), or
/// `None` for a message this version does not know.
pub fn reason_kind(message: &str) -> Option<&'static str> {
    NormalizeError::ALL
        .into_iter()
        .find(|e| e.to_string() == message)
        .map(|e| e.kind())
}
