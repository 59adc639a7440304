//! `[log]` — log format and level (logs always go to stderr).

use serde::{Deserialize, Serialize};

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

/// The log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Json,
}
