//! The contract both entrances share — the webhook ([`webhook`]) and Lark's long connection
//! ([`longconn`]). Each entrance reads its own transport and then only *translates*:
//!
//! 1. [`Admission::try_admit`] — one in-flight bound for both; no slot → [`Refusal::Overloaded`].
//! 2. The entrance reads and verifies; a failure is a [`Refusal`].
//! 3. [`walk`] runs the pipeline, kept alive when the caller goes away.
//! 4. [`Ending`] → the entrance's answer (an HTTP status and body, or a frame reply code), and
//!    [`finish`] records the metric and the one log line of the request.
//!
//! Nothing here knows HTTP or WebSocket; the outcome labels and messages are decided here once.

pub mod longconn;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lark_protocol::normalize::NormalizeError;
use lark_protocol::{FailReason, Rejection, VerifiedEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::metrics::{Metrics, Outcome, Source};
use crate::pipeline::{detached, Pipeline, PipelineError, Processed};

/// Past the deadline, how long an entrance still waits for a walk that must already have
/// answered (the pipeline bounds each step by the deadline itself): a safety net only.
const WALK_SLACK: Duration = Duration::from_millis(100);

/// The one in-flight bound (`server.max_in_flight`) of an entrance.
#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    total: u32,
    metrics: Arc<Metrics>,
}

/// A taken slot; dropping it frees the slot and lowers `lark_bridge_in_flight_requests`.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl Admission {
    /// At most `max_in_flight` requests processed at once (at least one).
    pub fn new(max_in_flight: usize, metrics: Arc<Metrics>) -> Admission {
        let total = max_in_flight.clamp(1, u32::MAX as usize) as u32;
        Admission {
            slots: Arc::new(Semaphore::new(total as usize)),
            total,
            metrics,
        }
    }

    /// A slot, or `None` when all are taken (shed at once: it must cost nothing).
    pub fn try_admit(&self) -> Option<Permit> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        self.metrics.in_flight.inc();
        Some(Permit {
            _slot: slot,
            metrics: self.metrics.clone(),
        })
    }

    /// Wait until every slot is free again (all admitted work finished), up to `grace`;
    /// false when the grace ran out first.
    pub async fn drain(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.slots.acquire_many(self.total))
            .await
            .is_ok()
    }
}

/// Why a request was not accepted. Each entrance maps every variant to its answer in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More than `server.max_in_flight` requests at once.
    #[error("overloaded, retry later")]
    Overloaded,
    /// Not a POST (webhook only).
    #[error("method not allowed, use POST")]
    MethodNotAllowed,
    /// The request head is over `server.max_header_bytes` (webhook only).
    #[error("request head is larger than server.max_header_bytes")]
    HeadTooLarge,
    /// The body or payload is over `server.max_body_bytes`.
    #[error("body is larger than server.max_body_bytes")]
    TooLarge,
    /// The body did not arrive in time (webhook only).
    #[error("body did not arrive within server.read_timeout_ms")]
    Timeout,
    /// The body could not be read, or a frame could not be reassembled.
    #[error("{0}")]
    Unreadable(&'static str),
    /// Verification refused it (lark-protocol.md §6).
    #[error("{0}")]
    Rejected(Rejection),
    /// Verified, but it can never be normalized.
    #[error("{0}")]
    BadEvent(NormalizeError),
    /// Try again later: broker or store failed, budget spent, a copy in flight.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl Refusal {
    /// The `outcome` label.
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Overloaded => Outcome::Overloaded,
            Refusal::MethodNotAllowed => Outcome::MethodNotAllowed,
            Refusal::HeadTooLarge | Refusal::Unreadable(_) | Refusal::BadEvent(_) => {
                Outcome::BadRequest
            }
            Refusal::TooLarge => Outcome::TooLarge,
            Refusal::Timeout => Outcome::RequestTimeout,
            Refusal::Rejected(Rejection::BadRequest { .. }) => Outcome::BadRequest,
            Refusal::Rejected(Rejection::Unauthorized { .. }) => Outcome::Unauthorized,
            Refusal::Unavailable(_) => Outcome::Unavailable,
        }
    }

    /// A refusal of the event itself (retrying the same bytes cannot help), as opposed to one
    /// of the moment (overload, unavailability).
    pub fn is_final(&self) -> bool {
        !matches!(self, Refusal::Overloaded | Refusal::Unavailable(_))
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The pipeline took it (published, duplicate, ignored, forwarded).
    Accepted(Processed),
    /// A URL verification (webhook only): echo the challenge.
    Challenge(String),
    /// Not accepted.
    Refused(Refusal),
}

impl Ending {
    /// The `outcome` label.
    pub fn outcome(&self) -> Outcome {
        match self {
            Ending::Accepted(Processed::Published) => Outcome::Published,
            Ending::Accepted(Processed::Duplicate) => Outcome::Duplicate,
            Ending::Accepted(Processed::Ignored) => Outcome::Ignored,
            Ending::Accepted(Processed::Forwarded) => Outcome::Forwarded,
            Ending::Accepted(Processed::DeadLettered) => Outcome::DeadLettered,
            Ending::Challenge(_) => Outcome::Challenge,
            Ending::Refused(r) => r.outcome(),
        }
    }
}

impl From<Refusal> for Ending {
    fn from(r: Refusal) -> Self {
        Ending::Refused(r)
    }
}

/// Count a verification failure and turn it into a refusal.
pub fn rejected(metrics: &Metrics, rejection: Rejection) -> Refusal {
    metrics.verification_failed(rejection.reason());
    Refusal::Rejected(rejection)
}

/// Walk `ev` through the pipeline, answered by `deadline`. The walk runs to completion even if
/// the caller goes away (a client hanging up, a reply sent at the deadline), so a reservation
/// is always committed or released.
pub async fn walk(
    pipeline: &Arc<Pipeline>,
    metrics: &Metrics,
    ev: VerifiedEvent,
    deadline: Instant,
    span: tracing::Span,
) -> Ending {
    let run = pipeline.clone().process(ev, deadline).instrument(span);
    let slack = tokio::time::Instant::from_std(deadline + WALK_SLACK);
    match tokio::time::timeout_at(slack, detached(run)).await {
        Ok(Some(Ok(p))) => Ending::Accepted(p),
        Ok(Some(Err(PipelineError::BadEvent(e)))) => {
            metrics.verification_failed(FailReason::Parse);
            Ending::Refused(Refusal::BadEvent(e))
        }
        Ok(Some(Err(PipelineError::Unavailable(msg)))) => {
            Ending::Refused(Refusal::Unavailable(msg))
        }
        Ok(None) => Ending::Refused(Refusal::Unavailable("internal error, retry later")),
        Err(_) => Ending::Refused(Refusal::Unavailable("no answer within the response budget")),
    }
}

/// Record a finished request once: its metric and its one log line (`status` is the HTTP
/// status or the frame reply code), in the request's span.
pub fn finish(
    metrics: &Metrics,
    source: Source,
    ending: &Ending,
    status: u16,
    started: Instant,
    span: &tracing::Span,
) {
    let outcome = ending.outcome();
    let elapsed = started.elapsed();
    metrics.request(source, outcome, elapsed);
    if crate::telemetry::enabled() {
        crate::telemetry::record_outcome(span, outcome, status);
    }
    let _e = span.enter();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let outcome = outcome.as_str();
    match source {
        Source::Webhook => tracing::info!(outcome, status, latency_ms, "request finished"),
        Source::LongConnection => {
            tracing::info!(outcome, code = status, latency_ms, "event finished")
        }
    }
}
