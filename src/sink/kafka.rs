//! Kafka sink (rdkafka / librdkafka): an idempotent producer with `acks=all` and Java-compatible
//! `murmur2_random` partitioning, so consumers in any language agree on key → partition. A
//! publish resolves on the delivery report; `message.timeout.ms` defaults to the response budget
//! (and may not exceed it), so librdkafka never keeps retrying a message after we answered 503.

use crate::secrets::scrub_known;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lark_protocol::event::EventClass;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::route::{kafka_topic_char, render_template};
use super::{Ack, PublishError, Sink};
use crate::config::{ContentMode, KafkaSinkConfig};
use lark_protocol::event::{Outgoing, DATA_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};

/// The one place the librdkafka configuration is built: our defaults, then the user's
/// `sink.kafka.properties` (already merged with `properties_file`) on top.
pub fn client_config(cfg: &KafkaSinkConfig, budget: Duration) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "lark-bridge")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", budget.as_millis().to_string())
        .set("linger.ms", "2")
        .set("socket.connection.setup.timeout.ms", "2000")
        .set("allow.auto.create.topics", "false");
    for (k, v) in cfg.properties.iter() {
        c.set(k, v);
    }
    c
}

use crate::secrets::now_ms;

/// The Kafka headers of `ev` in `mode` (normalized-schema.md §3; schemas/asyncapi.yaml).
pub fn headers(ev: &Outgoing, mode: ContentMode) -> OwnedHeaders {
    let h = OwnedHeaders::new();
    match mode {
        ContentMode::Structured => h
            // No `ce_` header here: the CloudEvents SDKs take any `ce_` header as binary mode
            // (normalized-schema.md §3).
            .insert(Header {
                key: "content-type",
                value: Some(STRUCTURED_CONTENT_TYPE),
            }),
        ContentMode::Binary => {
            let mut h = h.insert(Header {
                key: "content-type",
                value: Some(DATA_CONTENT_TYPE),
            });
            for (name, value) in ev.binary_pairs() {
                let key = format!("ce_{name}");
                h = h.insert(Header {
                    key: &key,
                    value: Some(value),
                });
            }
            h
        }
    }
}

pub struct KafkaSink {
    /// Replaced when librdkafka reports a fatal error (an idempotent producer whose state the
    /// cluster lost — e.g. UNKNOWN_PRODUCER_ID after a broker came back empty — never recovers
    /// on its own).
    producer: std::sync::RwLock<FutureProducer>,
    client_config: ClientConfig,
    /// When the oldest publish still waiting for a delivery started, in Unix ms (0 = none
    /// waiting since the last success). A publish the pipeline abandoned at the budget never
    /// reports back, so the watch is on time without a success, not on errors; under load
    /// every success resets it, so a busy healthy producer never looks stalled.
    waiting_since_ms: std::sync::atomic::AtomicI64,
    /// Waiting longer than this with the brokers reachable = wedged (2 × the budget, ≥ 3 s).
    stall_after_ms: i64,
    cfg: KafkaSinkConfig,
    mode: ContentMode,
    /// The fixed topics readiness requires: those of the classes this bridge can publish.
    required: Vec<String>,
}

impl KafkaSink {
    /// Create the producer (it connects lazily; readiness reports the broker) and, with
    /// `create_topics = true`, the fixed topics. Readiness then requires the fixed topics of
    /// the classes in `used` (the helpdesk types of `lark.events`, raw events when forwarded,
    /// dead letters when enabled): a missing one would turn every such event into a 503.
    pub async fn connect(
        cfg: &KafkaSinkConfig,
        mode: ContentMode,
        budget: Duration,
        used: &[EventClass],
    ) -> Result<Arc<Self>, String> {
        let required: Vec<String> = used
            .iter()
            .map(|c| cfg.topic_for(*c))
            .filter(|t| t.is_fixed())
            .map(|t| t.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let cc = client_config(cfg, budget);
        let producer: FutureProducer = cc
            .create()
            .map_err(|e| scrub_known(format!("cannot create the Kafka producer: {e}")))?;
        if cfg.create_topics {
            let admin: AdminClient<DefaultClientContext> = cc
                .create()
                .map_err(|e| scrub_known(format!("cannot create the Kafka admin client: {e}")))?;
            // Every fixed topic once (the family may share one).
            let names: std::collections::BTreeSet<String> = cfg
                .topic_templates()
                .into_iter()
                .filter(|(_, t)| t.is_fixed())
                .map(|(_, t)| t.to_string())
                .collect();
            let topics: Vec<NewTopic> = names
                .iter()
                .map(|t| {
                    NewTopic::new(
                        t,
                        cfg.topic_partitions,
                        TopicReplication::Fixed(cfg.topic_replication_factor),
                    )
                })
                .collect();
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            match admin.create_topics(&topics, &opts).await {
                Ok(results) => {
                    for r in results {
                        match r {
                            Ok(t) => tracing::info!(topic = %t, "created Kafka topic"),
                            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                                tracing::debug!(topic = %t, "Kafka topic exists")
                            }
                            Err((t, code)) => {
                                return Err(format!("cannot create Kafka topic {t}: {code}"))
                            }
                        }
                    }
                }
                Err(e) => return Err(format!("cannot create Kafka topics: {e}")),
            }
        }
        Ok(Arc::new(KafkaSink {
            producer: std::sync::RwLock::new(producer),
            client_config: cc,
            waiting_since_ms: Default::default(),
            stall_after_ms: (2 * budget.as_millis() as i64).max(3000),
            cfg: cfg.clone(),
            required,
            mode,
        }))
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Recreate the producer if the current one hit a fatal error. Messages the old producer
    /// still held were already answered 503 (their timeout is the budget), so nothing is lost.
    fn recover_if_fatal(&self, current: &FutureProducer) {
        let Some(fatal) = current.client().fatal_error() else {
            return;
        };
        tracing::warn!(error = ?fatal.0, reason = %fatal.1, "Kafka producer hit a fatal error");
        self.replace_producer(current);
    }

    /// Swap in a new producer unless someone already replaced `current`.
    fn replace_producer(&self, current: &FutureProducer) {
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if !std::ptr::eq(slot.client().native_ptr(), current.client().native_ptr()) {
            return;
        }
        match self.client_config.create::<FutureProducer>() {
            Ok(p) => {
                tracing::warn!("recreated the Kafka producer");
                *slot = p;
                self.waiting_since_ms
                    .store(0, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "could not recreate the Kafka producer"),
        }
    }

    pub fn topic(&self, ev: &Outgoing) -> String {
        render_template(self.cfg.topic_for(ev.class), &ev.route, kafka_topic_char)
    }
}

fn classify(e: KafkaError) -> PublishError {
    let msg = format!("kafka: {e}");
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => PublishError::timeout(msg),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic,
        ) => PublishError::fatal(msg),
        _ => PublishError::retryable(msg),
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, ev: &Outgoing) -> Result<Ack, PublishError> {
        let topic = self.topic(ev);
        let payload = match self.mode {
            ContentMode::Structured => ev.structured_body(),
            ContentMode::Binary => ev.data.clone(),
        };
        let record = FutureRecord::to(&topic)
            .key(ev.key())
            .payload(payload.as_ref())
            .headers(headers(ev, self.mode));
        let producer = self.producer();
        let _ = self.waiting_since_ms.compare_exchange(
            0,
            now_ms(),
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
        // A full local queue is overload, not a reason to wait: fail at once.
        match producer.send(record, Timeout::After(Duration::ZERO)).await {
            Ok(d) => {
                self.waiting_since_ms
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                Ok(Ack {
                    location: format!("{topic}/{}@{}", d.partition, d.offset),
                    duplicate: false,
                })
            }
            Err((e, _)) => {
                self.recover_if_fatal(&producer);
                Err(classify(e))
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        let current = self.producer();
        self.recover_if_fatal(&current);
        let producer = self.producer();
        let required = self.required.clone();
        let probe = producer.clone();
        let r = tokio::task::spawn_blocking(move || {
            let producer = probe;
            // All topics' metadata: asking for one topic could auto-create it on some brokers.
            let md = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(1))
                .map_err(|e| scrub_known(format!("kafka: brokers unreachable: {e}")))?;
            let missing: Vec<&str> = required
                .iter()
                .map(String::as_str)
                .filter(|t| {
                    !md.topics().iter().any(|x| {
                        x.name() == *t && x.error().is_none() && !x.partitions().is_empty()
                    })
                })
                .collect();
            match missing.as_slice() {
                [] => Ok(()),
                [t] => Err(format!("kafka: topic {t} missing")),
                ts => Err(format!("kafka: topics {} missing", ts.join(", "))),
            }
        })
        .await
        .map_err(|e| scrub_known(format!("kafka: check failed: {e}")))?;
        // Brokers answer but deliveries keep timing out: the idempotent producer is wedged
        // (seen after a broker lost its state). A fresh producer recovers; the timed-out
        // messages were already answered 503, so Lark redelivers them.
        let since = self
            .waiting_since_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if r.is_ok() && since != 0 && now_ms() - since > self.stall_after_ms {
            tracing::warn!("Kafka deliveries keep timing out while the brokers answer");
            self.replace_producer(&producer);
        }
        r
    }

    async fn flush(&self) {
        let producer = self.producer();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    }
}
