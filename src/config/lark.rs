//! `[lark]` — the secrets that authenticate Lark's callbacks and the app's credentials.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{split_secret_list, Secret};
use super::{ConfigError, SecretFiles, SourceKind};

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
    /// Refuse signed requests whose timestamp is further than this from now, in s; 0 = off.
    /// Default 0 (decisions.md). 86400 (24 h) is the recommended setting: far past Lark's last
    /// redelivery (~7.1 h after the first push), so genuine redeliveries pass whether or not
    /// Lark re-signs them, while a captured request replayed after the dedup TTL (24 h) — or
    /// after a restart emptied the memory store — is refused once it is a day old. Keep it at
    /// or below `dedup.ttl_secs`.
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

impl LarkConfig {
    pub(super) fn validate(
        &self,
        source: SourceKind,
        mode: SecretFiles,
    ) -> Result<(), ConfigError> {
        if let Some(k) = &self.encrypt_key {
            if mode == SecretFiles::Read || self.encrypt_key_file.is_none() {
                split_secret_list(k.expose(), self.encrypt_key_file.is_some())
                    .map_err(|e| ConfigError::invalid("lark.encrypt_key", e))?;
            }
        }
        if let Some(t) = &self.verification_token {
            if mode == SecretFiles::Read || self.verification_token_file.is_none() {
                split_secret_list(t.expose(), self.verification_token_file.is_some())
                    .map_err(|e| ConfigError::invalid("lark.verification_token", e))?;
            }
        }
        match source {
            SourceKind::Webhook => {
                let has_key = self.encrypt_key.is_some() || self.encrypt_key_file.is_some();
                let has_token =
                    self.verification_token.is_some() || self.verification_token_file.is_some();
                if !has_key && !has_token && !self.allow_unverified {
                    return Err(ConfigError::invalid("lark.encrypt_key", "lark.encrypt_key or lark.verification_token must be set (or lark.allow_unverified = true, which accepts forged requests)"));
                }
            }
            SourceKind::LongConnection => {
                if self.app_id.as_deref().unwrap_or("").is_empty() {
                    return Err(ConfigError::invalid(
                        "lark.app_id",
                        "is required when source.kind = \"long_connection\"",
                    ));
                }
                if self.app_secret.is_none() && self.app_secret_file.is_none() {
                    return Err(ConfigError::invalid(
                        "lark.app_secret",
                        "is required when source.kind = \"long_connection\"",
                    ));
                }
                if !(self.domain.starts_with("http://") || self.domain.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        "lark.domain",
                        "must be an http(s) URL",
                    ));
                }
            }
        }
        Ok(())
    }
}
