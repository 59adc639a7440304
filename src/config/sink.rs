//! `[sink]` — where events go (stdout, NATS JetStream, Kafka) and how they are laid out — and
//! `[routing]`, what happens to event types the bridge does not normalize.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use lark_protocol::event::EventClass;

use super::secret::{KafkaProperties, Secret, Url};
use super::template::Template;
use super::{units, ConfigError};

/// A built-in template (known to parse).
fn template(text: &str) -> Template {
    Template::parse(text).unwrap_or_else(|e| unreachable!("built-in template {text}: {e}"))
}

/// What happens to event types other than `helpdesk.ticket.created_v1`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Publish other event types in the generic `com.larksuite.raw.v1` envelope. Default false.
    pub forward_unknown: bool,
}

/// Where events go.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `stdout` (default), `nats` or `kafka`.
    pub kind: SinkKind,
    /// CloudEvents content mode on brokers: `structured` (default) or `binary`.
    pub mode: ContentMode,
    pub nats: NatsSinkConfig,
    pub kafka: KafkaSinkConfig,
}

/// The broker events go to.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    #[default]
    Stdout,
    Nats,
    Kafka,
}

impl SinkKind {
    /// The `sink` label of the metrics (what the sink's `name()` returns).
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::Nats => "nats",
            SinkKind::Kafka => "kafka",
        }
    }
}

/// CloudEvents content mode (normalized-schema.md §3).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContentMode {
    #[default]
    Structured,
    Binary,
}

/// Credentials for a NATS connection; shared by the sink and the NATS KV dedup store.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsAuth {
    /// User name (with `password`).
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Token authentication.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    /// A `.creds` file (JWT + NKey).
    pub creds_file: Option<PathBuf>,
    /// Require TLS on the connection.
    pub tls_required: bool,
    /// CA certificate (PEM) to trust for the server's TLS certificate.
    pub tls_ca_file: Option<PathBuf>,
}

/// The NATS sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma-separated. Default `nats://127.0.0.1:4222`.
    pub url: Url,
    /// Publish through JetStream and await the PubAck (default); false = core NATS (no ack).
    pub jetstream: bool,
    /// Subject template for `helpdesk.ticket.created_v1`. Default
    /// `lark.helpdesk.ticket.created.v1.{helpdesk_id}`.
    pub subject: Template,
    /// Subject templates of the other helpdesk events, keyed by Lark event type (set in the
    /// file: environment variable names cannot hold the dots).
    pub subjects: NatsSubjects,
    /// Subject template for raw events. Default `lark.events.raw.v1.{event_type}`.
    pub raw_subject: Template,
    /// Subject template for dead letters. Default `lark.deadletter.v1.{event_type}`.
    pub deadletter_subject: Template,
    /// JetStream stream to bind; created if absent. Default `LARK_HELPDESK`.
    pub stream: String,
    /// Create the stream when it does not exist. Default true.
    pub create_stream: bool,
    /// Subjects of a created stream. Default `lark.helpdesk.>`, `lark.events.raw.v1.>` and
    /// `lark.deadletter.v1.>`.
    pub stream_subjects: Vec<String>,
    /// `duplicate_window_secs`: duplicate window of a created stream (`Nats-Msg-Id` dedup).
    /// Default 86400, covering Lark's redeliveries up to the 6 h retry with room to spare.
    #[serde(rename = "duplicate_window_secs", with = "units::secs")]
    pub duplicate_window: Duration,
    #[serde(flatten)]
    pub auth: NatsAuth,
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        NatsSinkConfig {
            url: Url::new("nats://127.0.0.1:4222"),
            jetstream: true,
            subject: template("lark.helpdesk.ticket.created.v1.{helpdesk_id}"),
            subjects: NatsSubjects::default(),
            raw_subject: template("lark.events.raw.v1.{event_type}"),
            deadletter_subject: template("lark.deadletter.v1.{event_type}"),
            stream: "LARK_HELPDESK".into(),
            create_stream: true,
            stream_subjects: vec![
                "lark.helpdesk.>".into(),
                "lark.events.raw.v1.>".into(),
                "lark.deadletter.v1.>".into(),
            ],
            duplicate_window: Duration::from_secs(86_400),
            auth: NatsAuth::default(),
        }
    }
}

/// The Kafka sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, comma-separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic template for `helpdesk.ticket.created_v1`. Default
    /// `lark.helpdesk.ticket.created.v1`.
    pub topic: Template,
    /// Topic templates of the other helpdesk events, keyed by Lark event type (set in the
    /// file: environment variable names cannot hold the dots). Route the whole family to one
    /// topic (the same value here and in `topic`) when a consumer needs one ticket's events in
    /// order: Kafka orders only within a partition of one topic.
    pub topics: KafkaTopics,
    /// Topic template for raw events. Default `lark.events.raw.v1`.
    pub raw_topic: Template,
    /// Topic template for dead letters. Default `lark.deadletter.v1`.
    pub deadletter_topic: Template,
    /// Any librdkafka setting (SASL, TLS, linger.ms, …), passed through.
    pub properties: KafkaProperties,
    /// A file of `key=value` lines merged over `properties` (where SASL passwords go).
    pub properties_file: Option<PathBuf>,
    /// Create fixed topics at start. Default false.
    pub create_topics: bool,
    /// Partitions of a created topic. Default 12.
    pub topic_partitions: i32,
    /// Replication factor of a created topic; -1 = the broker's default.
    pub topic_replication_factor: i32,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: template("lark.helpdesk.ticket.created.v1"),
            topics: KafkaTopics::default(),
            raw_topic: template("lark.events.raw.v1"),
            deadletter_topic: template("lark.deadletter.v1"),
            properties: KafkaProperties::default(),
            properties_file: None,
            create_topics: false,
            topic_partitions: 12,
            topic_replication_factor: -1,
        }
    }
}

/// Kafka topic templates of the helpdesk events after `ticket.created`, keyed by Lark's event
/// type (helpdesk-events.md §1). Defaults: the CloudEvents type with `lark.` for `com.larksuite.`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTopics {
    /// Default `lark.helpdesk.ticket.updated.v1`.
    #[serde(rename = "helpdesk.ticket.updated_v1")]
    pub ticket_updated: Template,
    /// Default `lark.helpdesk.ticket_message.created.v1`.
    #[serde(rename = "helpdesk.ticket_message.created_v1")]
    pub ticket_message_created: Template,
    /// Default `lark.helpdesk.notification.approve.v1`.
    #[serde(rename = "helpdesk.notification.approve_v1")]
    pub notification_approve: Template,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            ticket_updated: template("lark.helpdesk.ticket.updated.v1"),
            ticket_message_created: template("lark.helpdesk.ticket_message.created.v1"),
            notification_approve: template("lark.helpdesk.notification.approve.v1"),
        }
    }
}

/// NATS subject templates of the helpdesk events after `ticket.created`, keyed by Lark's event
/// type. Defaults: the CloudEvents type with `lark.` for `com.larksuite.`, then `.{helpdesk_id}` — all
/// inside the stream's `lark.helpdesk.>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSubjects {
    /// Default `lark.helpdesk.ticket.updated.v1.{helpdesk_id}`.
    #[serde(rename = "helpdesk.ticket.updated_v1")]
    pub ticket_updated: Template,
    /// Default `lark.helpdesk.ticket_message.created.v1.{helpdesk_id}`.
    #[serde(rename = "helpdesk.ticket_message.created_v1")]
    pub ticket_message_created: Template,
    /// Default `lark.helpdesk.notification.approve.v1.{helpdesk_id}`.
    #[serde(rename = "helpdesk.notification.approve_v1")]
    pub notification_approve: Template,
}

impl Default for NatsSubjects {
    fn default() -> Self {
        NatsSubjects {
            ticket_updated: template("lark.helpdesk.ticket.updated.v1.{helpdesk_id}"),
            ticket_message_created: template(
                "lark.helpdesk.ticket_message.created.v1.{helpdesk_id}",
            ),
            notification_approve: template("lark.helpdesk.notification.approve.v1.{helpdesk_id}"),
        }
    }
}

impl NatsSinkConfig {
    /// The subject template of events of `class`.
    pub fn subject_for(&self, class: EventClass) -> &Template {
        match class {
            EventClass::TicketCreated => &self.subject,
            EventClass::TicketUpdated => &self.subjects.ticket_updated,
            EventClass::TicketMessageCreated => &self.subjects.ticket_message_created,
            EventClass::NotificationApprove => &self.subjects.notification_approve,
            EventClass::Raw => &self.raw_subject,
            EventClass::DeadLetter => &self.deadletter_subject,
        }
    }

    /// Every subject template with its config key.
    pub fn subject_templates(&self) -> [(String, &Template); 6] {
        templates(|c| self.subject_for(c), "sink.nats", "subject", "subjects")
    }
}

impl KafkaSinkConfig {
    /// The topic template of events of `class`.
    pub fn topic_for(&self, class: EventClass) -> &Template {
        match class {
            EventClass::TicketCreated => &self.topic,
            EventClass::TicketUpdated => &self.topics.ticket_updated,
            EventClass::TicketMessageCreated => &self.topics.ticket_message_created,
            EventClass::NotificationApprove => &self.topics.notification_approve,
            EventClass::Raw => &self.raw_topic,
            EventClass::DeadLetter => &self.deadletter_topic,
        }
    }

    /// Every topic template with its config key.
    pub fn topic_templates(&self) -> [(String, &Template); 6] {
        templates(|c| self.topic_for(c), "sink.kafka", "topic", "topics")
    }
}

/// Every class's template with its config key (`{section}.{one}` for ticket.created,
/// `{section}.{many}."<lark event type>"` for the others, `raw_`/`deadletter_` + `one`).
fn templates<'a>(
    of: impl Fn(EventClass) -> &'a Template,
    section: &str,
    one: &str,
    many: &str,
) -> [(String, &'a Template); 6] {
    use lark_protocol::normalize as n;
    [
        (format!("{section}.{one}"), of(EventClass::TicketCreated)),
        (
            format!("{section}.{many}.\"{}\"", n::TICKET_UPDATED),
            of(EventClass::TicketUpdated),
        ),
        (
            format!("{section}.{many}.\"{}\"", n::TICKET_MESSAGE_CREATED),
            of(EventClass::TicketMessageCreated),
        ),
        (
            format!("{section}.{many}.\"{}\"", n::NOTIFICATION_APPROVE),
            of(EventClass::NotificationApprove),
        ),
        (format!("{section}.raw_{one}"), of(EventClass::Raw)),
        (
            format!("{section}.deadletter_{one}"),
            of(EventClass::DeadLetter),
        ),
    ]
}

impl SinkConfig {
    pub(super) fn validate(&self, budget: Duration) -> Result<(), ConfigError> {
        let n = &self.nats;
        if n.url.expose().is_empty() {
            return Err(ConfigError::invalid("sink.nats.url", "must not be empty"));
        }
        for (key, t) in n.subject_templates() {
            let subject = t.to_string();
            if !subject.starts_with(|c: char| c.is_ascii_alphanumeric()) || subject.contains(' ') {
                return Err(ConfigError::invalid(key, "is not a valid subject template"));
            }
        }
        let k = &self.kafka;
        if self.kind == SinkKind::Kafka && k.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "sink.kafka.brokers",
                "must not be empty",
            ));
        }
        if k.topic_partitions < 1 {
            return Err(ConfigError::invalid(
                "sink.kafka.topic_partitions",
                "must be at least 1",
            ));
        }
        if let Some(v) = k.properties.get("message.timeout.ms") {
            let key = "sink.kafka.properties.\"message.timeout.ms\"";
            let ms: u64 = v
                .parse()
                .map_err(|_| ConfigError::invalid(key, "must be a number"))?;
            let budget_ms = budget.as_millis() as u64;
            if ms > budget_ms {
                return Err(ConfigError::invalid(key, format!(
                    "({ms}) must not exceed server.response_budget_ms ({budget_ms}): a message still retrying after the 503 would be published behind Lark's back"
                )));
            }
        }
        Ok(())
    }
}
