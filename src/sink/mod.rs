//! Where normalized events go. One small trait; a publish resolves only when the destination
//! holds the event (a JetStream PubAck, a Kafka delivery report, a flushed stdout line), because
//! the HTTP answer waits for it.

pub mod kafka;
pub mod nats;
pub mod route;
pub mod stdout;

use async_trait::async_trait;

use lark_protocol::event::Outgoing;

/// How a publish failed; callers match on the kind, never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishErrorKind {
    /// The broker was unreachable or refused for now: Lark's redelivery may succeed.
    Retryable,
    /// The event can never be published as configured (e.g. message too large, no such topic).
    Fatal,
    /// No acknowledgement within the response budget.
    Timeout,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    pub kind: PublishErrorKind,
    /// A plain description; never holds secrets or the payload.
    pub message: String,
}

impl PublishError {
    pub fn retryable(m: impl Into<String>) -> Self {
        PublishError {
            kind: PublishErrorKind::Retryable,
            message: m.into(),
        }
    }
    pub fn fatal(m: impl Into<String>) -> Self {
        PublishError {
            kind: PublishErrorKind::Fatal,
            message: m.into(),
        }
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        PublishError {
            kind: PublishErrorKind::Timeout,
            message: m.into(),
        }
    }
}

/// Where the broker put the event, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// Stream/topic (and partition) and sequence/offset, as the broker reported them.
    pub location: String,
    /// The broker reported the message as a duplicate it already held (JetStream).
    pub duplicate: bool,
}

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// `stdout`, `nats` or `kafka` (the metric label).
    fn name(&self) -> &'static str;
    /// Publish and wait for the broker's acknowledgement.
    async fn publish(&self, ev: &Outgoing) -> Result<Ack, PublishError>;
    /// Whether the broker is reachable (`/readyz`).
    async fn check(&self) -> Result<(), String>;
    /// Flush anything buffered (shutdown).
    async fn flush(&self) {}
}
