//! Secrets in the config: values whose `Debug`, `Display` and `Serialize` print `***`, URLs
//! printed with their credentials redacted, librdkafka properties with secret-looking values
//! masked, and `_file` secrets read from their files. Redaction itself lives in
//! [`crate::secrets`], the one place for it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use super::{ConfigError, SecretFiles};
pub use crate::secrets::redact_url;

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

pub(super) fn resolve(
    value: &mut Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
    mode: SecretFiles,
) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        return Err(ConfigError::BothSet {
            key: key.to_string(),
        });
    }
    if mode == SecretFiles::Skip {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key: format!("{key}_file"),
        path: path.clone(),
        source,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}_file"),
            format!("{} is empty", path.display()),
        ));
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
