//! The configuration tree: built-in defaults → optional TOML file → `LARK_BRIDGE__SECTION__KEY`
//! environment variables. Every struct rejects unknown keys; values are read straight into
//! typed ones (`SocketAddr`, `Duration`, parsed [`Template`]s) at this boundary, and each
//! section validates itself beside its definition, so start-up fails with a message naming the
//! offending key.
//!
//! One file per section: [`server`] (and `[admin]`), [`lark`], [`source`], [`sink`] (and
//! `[routing]`), [`dedup`], [`deadletter`], [`enrich`], [`log`], [`otel`]; [`secret`] for secret values, [`template`] for topic and
//! subject templates, `units` for the serde helpers.

pub mod deadletter;
pub mod dedup;
pub mod enrich;
pub mod lark;
pub mod log;
pub mod otel;
pub mod secret;
pub mod server;
pub mod sink;
pub mod source;
pub mod template;
mod units;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use deadletter::DeadLetterConfig;
pub use dedup::{
    DedupBackend, DedupConfig, MemoryDedupConfig, NatsDedupConfig, OnStoreError, RedisDedupConfig,
    RedisMode, RedisTlsFiles,
};
pub use enrich::EnrichConfig;
pub use lark::LarkConfig;
pub use log::{LogConfig, LogFormat};
pub use otel::{OtelConfig, OtelProtocol};
pub use secret::{is_secret_property, redact_url, split_secret_list, KafkaProperties, Secret, Url};
pub use server::{AdminConfig, Limits, ServerConfig, WorstCase, ADMIN_HEADER_BYTES};
pub use sink::{
    ContentMode, KafkaSinkConfig, NatsAuth, NatsSinkConfig, RoutingConfig, SinkConfig, SinkKind,
};
pub use source::{LongConnConfig, SourceConfig, SourceKind};
pub use template::{Placeholder, Template, TemplateError};

/// A configuration error. The message always names the key, and never holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error("config: config file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// The layered sources could not be read into the tree (syntax, type, unknown key); the
    /// config crate's message names the key.
    #[error("config: {0}")]
    Load(String),
    /// A value is out of its allowed range or shape.
    #[error("config: {key}: {reason}")]
    Invalid {
        /// The key, e.g. `server.listen`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret and its `_file` are both set.
    #[error("config: {key} and {key}_file are both set; set one")]
    BothSet {
        /// The secret's key.
        key: String,
    },
    /// A `_file` could not be read.
    #[error("config: {key}: cannot read {}: {source}", path.display())]
    SecretFile {
        /// The `_file` key.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// `key` has a value that is not allowed, because `reason`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The key the error is about, when it names one on its own.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. }
            | ConfigError::BothSet { key }
            | ConfigError::SecretFile { key, .. } => Some(key),
            ConfigError::MissingFile(_) | ConfigError::Load(_) => None,
        }
    }
}

fn positive(v: u64, key: &str) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "sink.nats.stream_subjects",
    "lark.events",
    "dedup.redis.nodes",
];

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the webhook listener and the per-event limits.
    pub server: ServerConfig,
    /// `[admin]`: the admin listener.
    pub admin: AdminConfig,
    /// `[lark]`: secrets and app credentials.
    pub lark: LarkConfig,
    /// `[source]`: the entrance.
    pub source: SourceConfig,
    /// `[routing]`: other event types.
    pub routing: RoutingConfig,
    /// `[sink]`: the broker.
    pub sink: SinkConfig,
    /// `[dedup]`: the dedup store.
    pub dedup: DedupConfig,
    /// `[deadletter]`: verified events the normalizer refuses.
    pub deadletter: DeadLetterConfig,
    /// `[enrich]`: what the bridge fetches from Lark's API to complete an event.
    pub enrich: EnrichConfig,
    /// `[log]`: logs.
    pub log: LogConfig,
    /// `[otel]`: OpenTelemetry traces (off by default).
    pub otel: OtelConfig,
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
                return Err(ConfigError::MissingFile(f.to_path_buf()));
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        // Environment values go in as the exact strings they are. The config crate's own
        // `Environment` source with `try_parsing` turned `007` into 7, `1e3` into 1000 and a
        // 23-digit key into a float — secrets that then matched nothing (issue 15). Numbers and
        // booleans are still read from these strings by the typed fields that want them.
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("LARK_BRIDGE__") else {
                continue;
            };
            let key = rest.to_lowercase().replace("__", ".");
            b = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = v.split(',').map(str::to_string).collect();
                b.set_override(key, items)
            } else {
                b.set_override(key, v.as_str())
            }
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        }
        let raw = b.build().map_err(|e| ConfigError::Load(e.to_string()))?;
        // A type error may quote the value it could not read: scrub every secret-looking
        // value of the raw tree out of the message (issue 15).
        let load_error = |e: config::ConfigError| {
            let mut secrets = Vec::new();
            if let Ok(tree) = raw.clone().try_deserialize::<serde_json::Value>() {
                secret::raw_secrets(&tree, false, &mut secrets);
            }
            // As for the log scrubber: shorter values would mangle the message, hiding nothing.
            secrets.retain(|s| s.chars().count() >= 4);
            ConfigError::Load(crate::secrets::scrub(e.to_string(), &secrets))
        };
        let mut cfg: Config = raw.clone().try_deserialize().map_err(load_error)?;
        cfg.resolve_secret_files(secret_files)?;
        // The standard `OTEL_*` variables, from the same environment as ours.
        cfg.otel.resolve(env)?;
        crate::secrets::register(cfg.secret_values());
        cfg.validate(secret_files)?;
        Ok(cfg)
    }

    fn resolve_secret_files(&mut self, mode: SecretFiles) -> Result<(), ConfigError> {
        let l = &mut self.lark;
        secret::resolve(
            &mut l.encrypt_key,
            &l.encrypt_key_file,
            "lark.encrypt_key",
            mode,
        )?;
        secret::resolve(
            &mut l.verification_token,
            &l.verification_token_file,
            "lark.verification_token",
            mode,
        )?;
        secret::resolve(
            &mut l.app_secret,
            &l.app_secret_file,
            "lark.app_secret",
            mode,
        )?;
        secret::resolve(
            &mut l.helpdesk_token,
            &l.helpdesk_token_file,
            "lark.helpdesk_token",
            mode,
        )?;
        let r = &mut self.dedup.redis;
        secret::resolve(
            &mut r.password,
            &r.password_file,
            "dedup.redis.password",
            mode,
        )?;
        for (auth, at) in [
            (&mut self.sink.nats.auth, "sink.nats"),
            (&mut self.dedup.nats.auth, "dedup.nats"),
        ] {
            secret::resolve(
                &mut auth.password,
                &auth.password_file,
                &format!("{at}.password"),
                mode,
            )?;
            secret::resolve(
                &mut auth.token,
                &auth.token_file,
                &format!("{at}.token"),
                mode,
            )?;
        }
        if let (Some(path), SecretFiles::Read) = (&self.sink.kafka.properties_file, mode) {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: "sink.kafka.properties_file".into(),
                path: path.clone(),
                source,
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((k, v)) = line.split_once('=') else {
                    return Err(ConfigError::invalid(
                        "sink.kafka.properties_file",
                        format!("line {} is not key=value", n + 1),
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
        self.server.validate()?;
        self.admin.validate()?;
        let budget = self.server.response_budget;
        self.dedup.validate(budget, mode)?;
        self.lark.validate(self.source.kind, mode)?;
        self.source.validate()?;
        self.sink.validate(budget)?;
        self.enrich.validate(budget)?;
        Ok(())
    }

    /// Every configured secret value, as given and as used (each item of a rotation list, the
    /// password and user-info of every URL, secret-looking librdkafka properties): what is
    /// scrubbed from client libraries' error text and from every log line.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        let l = &self.lark;
        for s in [
            &l.encrypt_key,
            &l.verification_token,
            &l.app_secret,
            &l.helpdesk_token,
        ]
        .into_iter()
        .flatten()
        {
            out.push(s.expose().to_string());
            out.extend(split_secret_list(s.expose(), true).unwrap_or_default());
        }
        for s in [
            &self.dedup.redis.password,
            &self.sink.nats.auth.password,
            &self.sink.nats.auth.token,
            &self.dedup.nats.auth.password,
            &self.dedup.nats.auth.token,
        ]
        .into_iter()
        .flatten()
        {
            out.push(s.expose().to_string());
        }
        for u in self.dedup.redis.nodes.iter() {
            out.extend(secret::url_secrets(u.expose()));
        }
        for u in [
            self.dedup.redis.url.expose(),
            self.sink.nats.url.expose(),
            self.dedup.nats.url.expose(),
            self.sink.kafka.brokers.as_str(),
            self.otel.endpoint.as_ref().map_or("", |u| u.expose()),
        ] {
            out.extend(secret::url_secrets(u));
        }
        for (k, v) in self.sink.kafka.properties.iter() {
            if is_secret_property(k) {
                out.push(v.clone());
                // A JAAS line holds its password as password="…": scrub that alone too, in
                // case a library quotes only the part it failed on.
                out.extend(secret::embedded_values(v));
            }
        }
        out.extend(self.otel.header_values.iter().cloned());
        out.retain(|v| !v.is_empty());
        out
    }

    /// The memory requests can pin at once under these limits (printed by `check-config`; the
    /// chart's memory limit must cover it plus the process's own).
    pub fn worst_case_buffers(&self) -> WorstCase {
        WorstCase {
            bodies: self.server.max_buffered_body_bytes,
            webhook_heads: self.server.max_connections
                * crate::http::server::read_buffer_bytes(self.server.max_header_bytes),
            admin_heads: self.admin.max_connections
                * crate::http::server::read_buffer_bytes(ADMIN_HEADER_BYTES),
        }
    }

    /// The effective configuration as TOML, secrets shown as `***`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
