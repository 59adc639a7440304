//! The configuration tree: built-in defaults → optional TOML file → `LARK_BRIDGE__SECTION__KEY`
//! environment variables. Every struct rejects unknown keys, and [`Config::load`] validates values
//! so that start-up fails with a message naming the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

/// A configuration error. The message always names the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// A secret string: `Debug`, `Display` and `Serialize` print `***`, so it can never reach a log,
/// an error message or `check-config` output by accident.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A URL that may carry credentials (`redis://:pw@host`): printed with the user-info replaced.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Url(String);

impl Url {
    pub fn new(s: impl Into<String>) -> Self {
        Url(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any `user:password@` replaced by `***@`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

pub use crate::secrets::redact_url;

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
impl Serialize for Url {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub lark: LarkConfig,
    pub source: SourceConfig,
    pub routing: RoutingConfig,
    pub sink: SinkConfig,
    pub dedup: DedupConfig,
    pub log: LogConfig,
}

/// The webhook listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the webhook listener binds. Default `0.0.0.0:8080`.
    pub listen: String,
    /// Path Lark posts to. Default `/webhook/event`.
    pub path: String,
    /// Largest body accepted, in bytes; larger → 413 before anything else. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Time from the request's arrival to the answer, in ms. No broker ack within it → 503,
    /// inside Lark's 3 s. Default 2500.
    pub response_budget_ms: u64,
    /// On SIGTERM: how long in-flight requests may take before the process exits. Default 20.
    pub shutdown_grace_secs: u64,
    /// Requests processed at once; past it → 503 `overloaded` at once. Default 1024.
    pub max_in_flight: usize,
    /// A body (or the request head) that has not fully arrived by then → 408. Default 10000.
    pub read_timeout_ms: u64,
    /// Largest request head (request line + headers), in bytes; larger → 431. Default 16384.
    pub max_header_bytes: usize,
    /// Open connections at once; further connections wait in the accept queue. Default 4096.
    pub max_connections: usize,
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_path() -> String {
    "/webhook/event".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            path: default_path(),
            max_body_bytes: 1024 * 1024,
            response_budget_ms: 2500,
            shutdown_grace_secs: 20,
            max_in_flight: 1024,
            read_timeout_ms: 10_000,
            max_header_bytes: 16_384,
            max_connections: 4096,
        }
    }
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `0.0.0.0:9090`.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

/// Lark's side: the secrets that authenticate callbacks, and the app credentials of
/// long-connection mode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LarkConfig {
    /// Encrypt Key(s) from the Lark console, comma-separated for rotation.
    pub encrypt_key: Option<Secret>,
    /// File holding the Encrypt Key(s), separated by commas or newlines.
    pub encrypt_key_file: Option<PathBuf>,
    /// Verification Token(s), comma-separated for rotation.
    pub verification_token: Option<Secret>,
    /// File holding the Verification Token(s).
    pub verification_token_file: Option<PathBuf>,
    /// Run with neither key nor token (accepts forged requests). Default false.
    pub allow_unverified: bool,
    /// Reject signed requests whose timestamp is further than this from now, in s; 0 = off.
    pub max_timestamp_skew_secs: u64,
    /// App ID (long-connection mode).
    pub app_id: Option<String>,
    /// App Secret (long-connection mode).
    pub app_secret: Option<Secret>,
    /// File holding the App Secret.
    pub app_secret_file: Option<PathBuf>,
    /// Lark's open-platform base URL. Default `https://open.feishu.cn`.
    pub domain: String,
}

impl Default for LarkConfig {
    fn default() -> Self {
        LarkConfig {
            encrypt_key: None,
            encrypt_key_file: None,
            verification_token: None,
            verification_token_file: None,
            allow_unverified: false,
            max_timestamp_skew_secs: 0,
            app_id: None,
            app_secret: None,
            app_secret_file: None,
            domain: "https://open.feishu.cn".into(),
        }
    }
}

/// Where events come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `webhook` (default) or `long_connection`.
    pub kind: SourceKind,
    /// Long-connection timings (Lark's defaults; shrink them in tests).
    pub long_connection: LongConnConfig,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    #[default]
    Webhook,
    LongConnection,
}

/// Timings of Lark's long connection (lark-longconn.md §4, §6); Lark's defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongConnConfig {
    /// Reconnect attempts after a failure; -1 = forever. Lark may override it.
    pub reconnect_count: i64,
    /// Seconds between reconnect attempts. Lark may override it.
    pub reconnect_interval_secs: u64,
    /// Random jitter before the first reconnect, in [0, this) seconds. Lark may override it.
    pub reconnect_nonce_secs: u64,
    /// Seconds between pings. Lark may override it.
    pub ping_interval_secs: u64,
    /// No pong for this long → reconnect; 0 = 3 × ping interval (min 10 s).
    pub pong_timeout_secs: u64,
    /// Incomplete fragmented messages are dropped after this many seconds.
    pub fragment_timeout_secs: u64,
}

impl Default for LongConnConfig {
    fn default() -> Self {
        LongConnConfig {
            reconnect_count: -1,
            reconnect_interval_secs: 120,
            reconnect_nonce_secs: 30,
            ping_interval_secs: 120,
            pong_timeout_secs: 0,
            fragment_timeout_secs: 5,
        }
    }
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
    /// Subject template for ticket events. Default `lark.helpdesk.ticket.created.v1.{helpdesk_id}`.
    pub subject: String,
    /// Subject template for raw events. Default `lark.events.raw.v1.{event_type}`.
    pub raw_subject: String,
    /// JetStream stream to bind; created if absent. Default `LARK_HELPDESK`.
    pub stream: String,
    /// Create the stream when it does not exist. Default true.
    pub create_stream: bool,
    /// Subjects of a created stream. Default `lark.helpdesk.>` and `lark.events.raw.v1.>`.
    pub stream_subjects: Vec<String>,
    /// Duplicate window of a created stream, in seconds (`Nats-Msg-Id` dedup). Default 86400,
    /// covering Lark's redeliveries up to the 6 h retry with room to spare.
    pub duplicate_window_secs: u64,
    #[serde(flatten)]
    pub auth: NatsAuth,
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        NatsSinkConfig {
            url: Url::new("nats://127.0.0.1:4222"),
            jetstream: true,
            subject: "lark.helpdesk.ticket.created.v1.{helpdesk_id}".into(),
            raw_subject: "lark.events.raw.v1.{event_type}".into(),
            stream: "LARK_HELPDESK".into(),
            create_stream: true,
            stream_subjects: vec!["lark.helpdesk.>".into(), "lark.events.raw.v1.>".into()],
            duplicate_window_secs: 86_400,
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
    /// Topic template for ticket events. Default `lark.helpdesk.ticket.created.v1`.
    pub topic: String,
    /// Topic template for raw events. Default `lark.events.raw.v1`.
    pub raw_topic: String,
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
            topic: "lark.helpdesk.ticket.created.v1".into(),
            raw_topic: "lark.events.raw.v1".into(),
            properties: KafkaProperties::default(),
            properties_file: None,
            create_topics: false,
            topic_partitions: 12,
            topic_replication_factor: -1,
        }
    }
}

/// Whether a librdkafka property holds a secret (decisions.md: password, secret or key).
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.contains("key")
}

/// librdkafka properties. `Debug` and `Serialize` show secret-looking values as `***`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    fn shown(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect()
    }
}

impl std::ops::Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KafkaProperties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shown().fmt(f)
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

/// Deduplication by event id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// `memory` (default, one replica only), `redis` or `nats`.
    pub backend: DedupBackend,
    /// How long a published id is remembered, in seconds. Must cover Lark's redelivery
    /// window (~7.1 h). Default 86400.
    pub ttl_secs: u64,
    /// How long a reservation holds before another copy may take it over, in ms. Must be greater
    /// than `server.response_budget_ms`. Default 5000.
    pub lease_ms: u64,
    /// When the store fails: `reject` (503, Lark redelivers; default) or `publish` (publish
    /// without dedup: possible duplicates, never loss).
    pub on_store_error: OnStoreError,
    pub memory: MemoryDedupConfig,
    pub redis: RedisDedupConfig,
    pub nats: NatsDedupConfig,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            backend: DedupBackend::Memory,
            ttl_secs: 86_400,
            lease_ms: 5000,
            on_store_error: OnStoreError::Reject,
            memory: MemoryDedupConfig::default(),
            redis: RedisDedupConfig::default(),
            nats: NatsDedupConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DedupBackend {
    #[default]
    Memory,
    Redis,
    Nats,
}

impl DedupBackend {
    /// The `backend` label of the metrics (what the store's `backend()` returns).
    pub fn as_str(self) -> &'static str {
        match self {
            DedupBackend::Memory => "memory",
            DedupBackend::Redis => "redis",
            DedupBackend::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Reject,
    Publish,
}

/// The in-process store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryDedupConfig {
    /// Most ids held. When full the oldest committed id is evicted (counted); if every entry is
    /// in flight the request gets 503. Default 1000000 (~100 MiB).
    pub capacity: usize,
}

impl Default for MemoryDedupConfig {
    fn default() -> Self {
        MemoryDedupConfig {
            capacity: 1_000_000,
        }
    }
}

/// The Redis store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisDedupConfig {
    /// Default `redis://127.0.0.1:6379`.
    pub url: Url,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Prefix of every key. Default `lark-bridge:`.
    pub key_prefix: String,
}

impl Default for RedisDedupConfig {
    fn default() -> Self {
        RedisDedupConfig {
            url: Url::new("redis://127.0.0.1:6379"),
            password: None,
            password_file: None,
            key_prefix: "lark-bridge:".into(),
        }
    }
}

/// The NATS key-value store (nats-server ≥ 2.10).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsDedupConfig {
    /// Default `nats://127.0.0.1:4222`.
    pub url: Url,
    /// Key-value bucket; created with max age = `dedup.ttl_secs` if absent.
    pub bucket: String,
    #[serde(flatten)]
    pub auth: NatsAuth,
}

impl Default for NatsDedupConfig {
    fn default() -> Self {
        NatsDedupConfig {
            url: Url::new("nats://127.0.0.1:4222"),
            bucket: "lark_bridge_dedup".into(),
            auth: NatsAuth::default(),
        }
    }
}

/// Logs (always to stderr).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (text on a terminal, json otherwise), `text` or `json`.
    pub format: LogFormat,
    /// A level (`info`) or a tracing filter (`lark_bridge=debug,info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Json,
}

/// How to treat `_file` secrets while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFiles {
    /// Read them (a missing file is an error).
    Read,
    /// Check structure only (`check-config --skip-secret-files`).
    Skip,
}

impl Config {
    /// Load defaults → `file` (if any) → environment (`LARK_BRIDGE__…`), resolve `_file`
    /// secrets and validate.
    pub fn load(file: Option<&Path>, secret_files: SecretFiles) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env, secret_files)
    }

    /// Like [`Config::load`] with an explicit environment (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        secret_files: SecretFiles,
    ) -> Result<Config, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            if !f.exists() {
                return err(format!("config file {} does not exist", f.display()));
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        let env_map: std::collections::HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("LARK_BRIDGE__"))
            .cloned()
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("LARK_BRIDGE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("sink.nats.stream_subjects")
                .source(Some(env_map)),
        );
        let raw = b.build().map_err(|e| ConfigError(e.to_string()))?;
        let mut cfg: Config = raw
            .try_deserialize()
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.resolve_secret_files(secret_files)?;
        cfg.validate(secret_files)?;
        Ok(cfg)
    }

    fn resolve_secret_files(&mut self, mode: SecretFiles) -> Result<(), ConfigError> {
        let l = &mut self.lark;
        resolve(
            &mut l.encrypt_key,
            &l.encrypt_key_file,
            "lark.encrypt_key",
            mode,
        )?;
        resolve(
            &mut l.verification_token,
            &l.verification_token_file,
            "lark.verification_token",
            mode,
        )?;
        resolve(
            &mut l.app_secret,
            &l.app_secret_file,
            "lark.app_secret",
            mode,
        )?;
        let r = &mut self.dedup.redis;
        resolve(
            &mut r.password,
            &r.password_file,
            "dedup.redis.password",
            mode,
        )?;
        for (auth, at) in [
            (&mut self.sink.nats.auth, "sink.nats"),
            (&mut self.dedup.nats.auth, "dedup.nats"),
        ] {
            resolve(
                &mut auth.password,
                &auth.password_file,
                &format!("{at}.password"),
                mode,
            )?;
            resolve(
                &mut auth.token,
                &auth.token_file,
                &format!("{at}.token"),
                mode,
            )?;
        }
        if let (Some(path), SecretFiles::Read) = (&self.sink.kafka.properties_file, mode) {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "sink.kafka.properties_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((k, v)) = line.split_once('=') else {
                    return err(format!(
                        "sink.kafka.properties_file: line {} is not key=value",
                        n + 1
                    ));
                };
                self.sink
                    .kafka
                    .properties
                    .insert(k.trim().into(), v.trim().into());
            }
        }
        Ok(())
    }

    fn validate(&self, mode: SecretFiles) -> Result<(), ConfigError> {
        let s = &self.server;
        parse_addr(&s.listen, "server.listen")?;
        parse_addr(&self.admin.listen, "admin.listen")?;
        if !s.path.starts_with('/') {
            return err("server.path must start with '/'");
        }
        positive(s.max_body_bytes as u64, "server.max_body_bytes")?;
        positive(s.response_budget_ms, "server.response_budget_ms")?;
        positive(s.max_in_flight as u64, "server.max_in_flight")?;
        positive(s.read_timeout_ms, "server.read_timeout_ms")?;
        positive(s.max_connections as u64, "server.max_connections")?;
        if s.max_header_bytes < 8192 {
            return err("server.max_header_bytes must be at least 8192");
        }
        if s.response_budget_ms >= 3000 {
            return err("server.response_budget_ms must be below 3000: Lark gives up after 3 s");
        }
        let d = &self.dedup;
        positive(d.ttl_secs, "dedup.ttl_secs")?;
        if d.lease_ms <= s.response_budget_ms {
            return err(format!(
                "dedup.lease_ms ({}) must be greater than server.response_budget_ms ({})",
                d.lease_ms, s.response_budget_ms
            ));
        }
        positive(d.memory.capacity as u64, "dedup.memory.capacity")?;
        if d.nats.bucket.is_empty()
            || !d
                .nats
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return err("dedup.nats.bucket may only contain letters, digits, '_' and '-'");
        }
        let l = &self.lark;
        if let Some(k) = &l.encrypt_key {
            if mode == SecretFiles::Read || l.encrypt_key_file.is_none() {
                split_secret_list(k.expose(), l.encrypt_key_file.is_some())
                    .map_err(|e| ConfigError(format!("lark.encrypt_key: {e}")))?;
            }
        }
        if let Some(t) = &l.verification_token {
            if mode == SecretFiles::Read || l.verification_token_file.is_none() {
                split_secret_list(t.expose(), l.verification_token_file.is_some())
                    .map_err(|e| ConfigError(format!("lark.verification_token: {e}")))?;
            }
        }
        match self.source.kind {
            SourceKind::Webhook => {
                let has_key = l.encrypt_key.is_some() || l.encrypt_key_file.is_some();
                let has_token =
                    l.verification_token.is_some() || l.verification_token_file.is_some();
                if !has_key && !has_token && !l.allow_unverified {
                    return err("lark.encrypt_key or lark.verification_token must be set (or lark.allow_unverified = true, which accepts forged requests)");
                }
            }
            SourceKind::LongConnection => {
                if l.app_id.as_deref().unwrap_or("").is_empty() {
                    return err("lark.app_id is required when source.kind = \"long_connection\"");
                }
                if l.app_secret.is_none() && l.app_secret_file.is_none() {
                    return err(
                        "lark.app_secret is required when source.kind = \"long_connection\"",
                    );
                }
                if !(l.domain.starts_with("http://") || l.domain.starts_with("https://")) {
                    return err("lark.domain must be an http(s) URL");
                }
                positive(
                    self.source.long_connection.ping_interval_secs,
                    "source.long_connection.ping_interval_secs",
                )?;
            }
        }
        let n = &self.sink.nats;
        if n.url.expose().is_empty() {
            return err("sink.nats.url must not be empty");
        }
        if !n.subject.starts_with(|c: char| c.is_ascii_alphanumeric()) || n.subject.contains(' ') {
            return err("sink.nats.subject is not a valid subject template");
        }
        check_template(&n.subject, "sink.nats.subject")?;
        check_template(&n.raw_subject, "sink.nats.raw_subject")?;
        let k = &self.sink.kafka;
        check_template(&k.topic, "sink.kafka.topic")?;
        check_template(&k.raw_topic, "sink.kafka.raw_topic")?;
        if self.sink.kind == SinkKind::Kafka && k.brokers.trim().is_empty() {
            return err("sink.kafka.brokers must not be empty");
        }
        if k.topic_partitions < 1 {
            return err("sink.kafka.topic_partitions must be at least 1");
        }
        if let Some(v) = k.properties.get("message.timeout.ms") {
            let ms: u64 = v.parse().map_err(|_| {
                ConfigError("sink.kafka.properties.\"message.timeout.ms\" must be a number".into())
            })?;
            if ms > s.response_budget_ms {
                return err(format!(
                    "sink.kafka.properties.\"message.timeout.ms\" ({ms}) must not exceed server.response_budget_ms ({}): a message still retrying after the 503 would be published behind Lark's back",
                    s.response_budget_ms
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets shown as `***`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn resolve(
    value: &mut Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
    mode: SecretFiles,
) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        return err(format!("{key} and {key}_file are both set; set one"));
    }
    if mode == SecretFiles::Skip {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{key}_file: cannot read {}: {e}", path.display())))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return err(format!("{key}_file: {} is empty", path.display()));
    }
    *value = Some(Secret::new(text));
    Ok(())
}

/// Split a secret list: items separated by commas (and newlines when it came from a file), each
/// trimmed of surrounding whitespace; inner spaces are kept. An empty item is an error.
pub fn split_secret_list(s: &str, newlines_too: bool) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = if newlines_too {
        s.split([',', '\n']).collect()
    } else {
        s.split(',').collect()
    };
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let p = p.trim();
        if p.is_empty() {
            // A trailing newline at the end of a file is not an empty item.
            if newlines_too && i == parts.len() - 1 && i > 0 {
                continue;
            }
            return Err(format!("item {} of the list is empty", i + 1));
        }
        out.push(p.to_string());
    }
    Ok(out)
}

fn parse_addr(s: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError(format!("{key}: '{s}' is not an address like 0.0.0.0:8080")))
}

fn positive(v: u64, key: &str) -> Result<(), ConfigError> {
    if v == 0 {
        return err(format!("{key} must be greater than 0"));
    }
    Ok(())
}

fn check_template(t: &str, key: &str) -> Result<(), ConfigError> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return err(format!("{key}: unclosed '{{' in '{t}'"));
        };
        let name = &rest[open + 1..open + close];
        if !matches!(name, "helpdesk_id" | "event_type" | "tenant_key" | "app_id") {
            return err(format!(
                "{key}: unknown placeholder {{{name}}} (known: helpdesk_id, event_type, tenant_key, app_id)"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    if t.is_empty() {
        return err(format!("{key} must not be empty"));
    }
    Ok(())
}
