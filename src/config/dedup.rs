//! `[dedup]` — deduplication by event id, and the store that holds the ids.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{Secret, Url};
use super::sink::NatsAuth;
use super::{positive, units, ConfigError};

/// Deduplication by event id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// `memory` (default, one replica only), `redis` or `nats`.
    pub backend: DedupBackend,
    /// `ttl_secs`: how long a published id is remembered. Must cover Lark's redelivery window
    /// (~7.1 h). Default 86400.
    #[serde(rename = "ttl_secs", with = "units::secs")]
    pub ttl: Duration,
    /// `lease_ms`: how long a reservation holds before another copy may take it over. Must be
    /// greater than `server.response_budget_ms`. Default 5000.
    #[serde(rename = "lease_ms", with = "units::millis")]
    pub lease: Duration,
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
            ttl: Duration::from_secs(86_400),
            lease: Duration::from_millis(5000),
            on_store_error: OnStoreError::Reject,
            memory: MemoryDedupConfig::default(),
            redis: RedisDedupConfig::default(),
            nats: NatsDedupConfig::default(),
        }
    }
}

/// The dedup store.
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

/// What to do when the dedup store fails.
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

impl DedupConfig {
    pub(super) fn validate(&self, budget: Duration) -> Result<(), ConfigError> {
        positive(self.ttl.as_secs(), "dedup.ttl_secs")?;
        if self.lease <= budget {
            return Err(ConfigError::invalid(
                "dedup.lease_ms",
                format!(
                    "({}) must be greater than server.response_budget_ms ({})",
                    self.lease.as_millis(),
                    budget.as_millis()
                ),
            ));
        }
        positive(self.memory.capacity as u64, "dedup.memory.capacity")?;
        let bucket = &self.nats.bucket;
        if bucket.is_empty()
            || !bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::invalid(
                "dedup.nats.bucket",
                "may only contain letters, digits, '_' and '-'",
            ));
        }
        Ok(())
    }
}
