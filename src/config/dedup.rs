//! `[dedup]` — deduplication by event id, and the store that holds the ids.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, Secret, Url};
use super::sink::NatsAuth;
use super::{positive, units, ConfigError, SecretFiles};

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

impl DedupConfig {
    /// The `mode` label of `lark_bridge_dedup_info`: the Redis topology, `standalone` for NATS
    /// (its client follows a NATS cluster by itself), `in_process` for memory.
    pub fn mode_label(&self) -> &'static str {
        match self.backend {
            DedupBackend::Memory => "in_process",
            DedupBackend::Nats => "standalone",
            DedupBackend::Redis => self.redis.mode.as_str(),
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
    /// How the bridge finds Redis: `standalone` (default: one server at `url`), `cluster` (a
    /// Redis Cluster, discovered from the seed `nodes`) or `sentinel` (the master that the
    /// sentinels in `nodes` name `master_name`, followed through failovers).
    pub mode: RedisMode,
    /// The server in `standalone` mode, and the one seed node in `cluster` mode when `nodes` is
    /// empty. `rediss://` for TLS. Default `redis://127.0.0.1:6379`.
    pub url: Url,
    /// `cluster`: seed nodes (any few of the cluster's nodes; the rest are discovered), default
    /// none = `url` alone. `sentinel`: the sentinels' URLs (required). Every URL of one setting
    /// uses the same scheme: `rediss://` means TLS to every node, sentinels included. In the
    /// environment: comma-separated.
    pub nodes: Vec<Url>,
    /// `sentinel`: the master's name as the sentinels monitor it. Default `mymaster`.
    pub master_name: String,
    /// Password of the Redis nodes (not of the sentinels: put theirs in the sentinel URLs).
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// Prefix of every key. Default `lark-bridge:`.
    pub key_prefix: String,
    /// `rediss://` only: CA certificates (PEM) to trust for the servers' certificates, instead of
    /// the system's roots. The server name (or IP) in the URL must match the certificate: name
    /// verification cannot be turned off. Default none (system roots).
    pub tls_ca_file: Option<PathBuf>,
    /// `rediss://` only: client certificate chain (PEM) for servers that require one
    /// (`tls-auth-clients yes`); with `tls_key_file`. Default none.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM), a secret file: its content is never shown.
    /// Default none.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for RedisDedupConfig {
    fn default() -> Self {
        RedisDedupConfig {
            mode: RedisMode::Standalone,
            url: Url::new("redis://127.0.0.1:6379"),
            nodes: Vec::new(),
            master_name: "mymaster".into(),
            password: None,
            password_file: None,
            key_prefix: "lark-bridge:".into(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// How the Redis store finds its server.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    #[default]
    Standalone,
    Cluster,
    Sentinel,
}

impl RedisMode {
    /// The `mode` label of `lark_bridge_dedup_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// The PEM files of `dedup.redis.tls_*_file`, read and checked. `Debug` hides the key.
#[derive(Clone, Default)]
pub struct RedisTlsFiles {
    /// `tls_ca_file`'s certificates.
    pub ca: Option<Vec<u8>>,
    /// `tls_cert_file`'s chain and `tls_key_file`'s key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTlsFiles")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("client", &self.client.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RedisDedupConfig {
    /// The URLs the store dials first: the server, the cluster's seeds or the sentinels.
    pub fn entry_urls(&self) -> Vec<&Url> {
        match self.mode {
            RedisMode::Standalone => vec![&self.url],
            RedisMode::Cluster if self.nodes.is_empty() => vec![&self.url],
            RedisMode::Cluster | RedisMode::Sentinel => self.nodes.iter().collect(),
        }
    }

    /// The config key the entry URLs came from (for error messages).
    pub fn entry_key(&self) -> &'static str {
        match self.mode {
            RedisMode::Cluster if !self.nodes.is_empty() => "dedup.redis.nodes",
            RedisMode::Sentinel => "dedup.redis.nodes",
            _ => "dedup.redis.url",
        }
    }

    /// Whether the store talks TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.entry_urls()
            .first()
            .is_some_and(|u| u.expose().starts_with("rediss://"))
    }

    /// Read and check the TLS files. An error names the key and the path, never a file's
    /// content.
    pub fn tls_files(&self) -> Result<RedisTlsFiles, ConfigError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConfigError::SecretFile {
                key: key.into(),
                path: path.clone(),
                source,
            })
        };
        let certs = |key: &str, path: &PathBuf| -> Result<Vec<u8>, ConfigError> {
            let pem = read(key, path)?;
            let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
            match parsed {
                Ok(c) if !c.is_empty() => Ok(pem),
                _ => Err(ConfigError::invalid(
                    key,
                    format!("{} holds no PEM certificate", path.display()),
                )),
            }
        };
        let ca = match &self.tls_ca_file {
            Some(p) => Some(certs("dedup.redis.tls_ca_file", p)?),
            None => None,
        };
        let client = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => {
                let chain = certs("dedup.redis.tls_cert_file", c)?;
                let key = read("dedup.redis.tls_key_file", k)?;
                // The parser's error could describe the content: say only that it is not a key.
                if PrivateKeyDer::from_pem_slice(&key).is_err() {
                    return Err(ConfigError::invalid(
                        "dedup.redis.tls_key_file",
                        format!(
                            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                            k.display()
                        ),
                    ));
                }
                Some((chain, key))
            }
            _ => None,
        };
        Ok(RedisTlsFiles { ca, client })
    }

    fn validate(&self, mode: SecretFiles) -> Result<(), ConfigError> {
        match self.mode {
            RedisMode::Standalone if !self.nodes.is_empty() => {
                return Err(ConfigError::invalid(
                    "dedup.redis.nodes",
                    "is for mode = \"cluster\" or \"sentinel\"; standalone uses dedup.redis.url",
                ))
            }
            RedisMode::Sentinel if self.nodes.is_empty() => {
                return Err(ConfigError::invalid(
                    "dedup.redis.nodes",
                    "mode = \"sentinel\" needs the sentinels' URLs, e.g. \
                     [\"redis://sentinel-0:26379\", \"redis://sentinel-1:26379\"]",
                ))
            }
            RedisMode::Sentinel if self.master_name.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    "dedup.redis.master_name",
                    "mode = \"sentinel\" needs the name the sentinels monitor",
                ))
            }
            _ => {}
        }
        let key = self.entry_key();
        let tls = self.tls();
        for u in self.entry_urls() {
            let u = u.expose();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is not a redis:// or rediss:// URL", redact_url(u)),
                ));
            }
            if u.starts_with("rediss://") != tls {
                return Err(ConfigError::invalid(
                    key,
                    "mixes redis:// and rediss:// URLs; TLS is all or nothing",
                ));
            }
            if u.contains("#insecure") {
                return Err(ConfigError::invalid(
                    key,
                    "#insecure is not supported: server name verification is always on \
                     (trust a private CA with dedup.redis.tls_ca_file)",
                ));
            }
        }
        for (set, k) in [
            (&self.tls_ca_file, "dedup.redis.tls_ca_file"),
            (&self.tls_cert_file, "dedup.redis.tls_cert_file"),
            (&self.tls_key_file, "dedup.redis.tls_key_file"),
        ] {
            if set.is_some() && !tls {
                return Err(ConfigError::invalid(
                    k,
                    format!("is set, but {key} is not rediss:// (TLS)"),
                ));
            }
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "dedup.redis.tls_key_file",
                    "dedup.redis.tls_cert_file is set: its private key is needed too",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "dedup.redis.tls_cert_file",
                    "dedup.redis.tls_key_file is set: its certificate is needed too",
                ))
            }
            _ => {}
        }
        if mode == SecretFiles::Read {
            self.tls_files()?;
        }
        Ok(())
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
    pub(super) fn validate(&self, budget: Duration, mode: SecretFiles) -> Result<(), ConfigError> {
        positive(self.ttl.as_secs(), "dedup.ttl_secs")?;
        if self.backend == DedupBackend::Redis {
            self.redis.validate(mode)?;
        }
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
