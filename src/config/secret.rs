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

/// Whether a librdkafka property holds a secret (decisions.md: password, secret or key; and
/// the SASL configuration strings that embed credentials: `sasl.jaas.config`,
/// `sasl.oauthbearer.config`, any `token` or `credentials`).
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key",
        "jaas",
        "oauthbearer.config",
        "token",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Whether a config key (its last segment) names a secret, or a table that may hold them
/// (`sink.kafka.properties`).
fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !n.ends_with("_file") && (is_secret_property(&n) || n == "properties")
}

/// Collect the string values of `tree` (the raw config) that sit under a secret-looking key,
/// and the user-info of every URL in it.
pub(super) fn raw_secrets(tree: &serde_json::Value, under_secret: bool, out: &mut Vec<String>) {
    match tree {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                raw_secrets(v, under_secret || is_secret_key(k), out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                raw_secrets(v, under_secret, out);
            }
        }
        serde_json::Value::String(s) => {
            if under_secret {
                out.push(s.clone());
                out.extend(split_secret_list(s, true).unwrap_or_default());
                out.extend(embedded_values(s));
            }
            out.extend(url_secrets(s));
        }
        other if under_secret => out.push(other.to_string()),
        _ => {}
    }
}

/// The user-info (and its password part) of every URL in a comma-separated list.
pub(crate) fn url_secrets(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(scheme) = list.find("://") else {
        return out;
    };
    // Everything between a `://` and the last `@` before the next URL is user-info.
    let rest = &list[scheme + 3..];
    let end = rest.find("://").unwrap_or(rest.len());
    if let Some(at) = rest[..end].rfind('@') {
        let info = &rest[..at];
        out.push(info.to_string());
        if let Some((_, pw)) = info.split_once(':') {
            out.push(pw.to_string());
        }
    }
    if end < rest.len() {
        out.extend(url_secrets(&rest[end..]));
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The parts of a SASL configuration string a library may quote alone: the double-quoted
/// values of a JAAS line (`password="…"`) and the values of `key=value` items
/// (`sasl.oauthbearer.config`).
pub(crate) fn embedded_values(s: &str) -> Vec<String> {
    let quoted = s.split('"').skip(1).step_by(2).map(str::to_string);
    let pairs = s
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter_map(|item| item.split_once('='))
        .map(|(_, v)| v.trim_matches('"').to_string());
    quoted.chain(pairs).filter(|v| !v.is_empty()).collect()
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
