//! `[deadletter]` — what happens to a verified event the normalizer refuses, and the names
//! `lark-bridge redrive` reads the dead letters with.

use serde::{Deserialize, Serialize};

/// Dead letters (their destinations are `sink.nats.deadletter_subject` and
/// `sink.kafka.deadletter_topic`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Publish a verified event that cannot be normalized as a dead letter and answer 200
    /// (default true); false = answer 400 and let Lark retry and drop it.
    pub enabled: bool,
    /// Durable JetStream consumer `redrive` reads the dead letters with. Default
    /// `lark-bridge-redrive`.
    pub nats_consumer: String,
    /// Kafka consumer group `redrive` reads the dead letters with. Default `lark-bridge-redrive`.
    pub kafka_group: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            enabled: true,
            nats_consumer: "lark-bridge-redrive".into(),
            kafka_group: "lark-bridge-redrive".into(),
        }
    }
}
