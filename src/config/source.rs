//! `[source]` — where events come from: the webhook or Lark's long connection, and the long
//! connection's timings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{positive, units, ConfigError};

/// Where events come from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `webhook` (default) or `long_connection`.
    pub kind: SourceKind,
    /// Long-connection timings (Lark's defaults; shrink them in tests).
    pub long_connection: LongConnConfig,
}

/// The entrance a replica runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Lark posts to our HTTP endpoint.
    #[default]
    Webhook,
    /// We dial Lark's WebSocket.
    LongConnection,
}

/// Timings of Lark's long connection (lark-longconn.md §4, §6); Lark's defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongConnConfig {
    /// Reconnect attempts after a failure; -1 = forever. Lark may override it.
    pub reconnect_count: i64,
    /// `reconnect_interval_secs`: between reconnect attempts. Lark may override it.
    #[serde(rename = "reconnect_interval_secs", with = "units::secs")]
    pub reconnect_interval: Duration,
    /// `reconnect_nonce_secs`: random jitter before the first reconnect, in [0, this). Lark may
    /// override it.
    #[serde(rename = "reconnect_nonce_secs", with = "units::secs")]
    pub reconnect_nonce: Duration,
    /// `ping_interval_secs`: between pings. Lark may override it.
    #[serde(rename = "ping_interval_secs", with = "units::secs")]
    pub ping_interval: Duration,
    /// `pong_timeout_secs`: no pong for this long → reconnect; 0 = 3 × ping interval (min 10 s).
    #[serde(rename = "pong_timeout_secs", with = "units::secs")]
    pub pong_timeout: Duration,
    /// `fragment_timeout_secs`: incomplete fragmented messages are dropped after this long.
    #[serde(rename = "fragment_timeout_secs", with = "units::secs")]
    pub fragment_timeout: Duration,
    /// `reconnect_min_secs`: the floor of every wait between connection attempts, whatever
    /// Lark's `ReconnectInterval` / `ReconnectNonce` say (at least 1), so that a peer answering
    /// 0 cannot make us dial in a tight loop.
    #[serde(rename = "reconnect_min_secs", with = "units::secs")]
    pub reconnect_min: Duration,
    /// `reconnect_max_secs`: the ceiling of the exponential backoff between failed attempts
    /// (the wait doubles from `max(reconnect_interval, reconnect_min)` per failure in a row).
    #[serde(rename = "reconnect_max_secs", with = "units::secs")]
    pub reconnect_max: Duration,
}

impl Default for LongConnConfig {
    fn default() -> Self {
        LongConnConfig {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
            pong_timeout: Duration::ZERO,
            fragment_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(300),
        }
    }
}

impl SourceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.kind == SourceKind::LongConnection {
            positive(
                self.long_connection.ping_interval.as_secs(),
                "source.long_connection.ping_interval_secs",
            )?;
            let lc = &self.long_connection;
            positive(
                lc.reconnect_min.as_secs(),
                "source.long_connection.reconnect_min_secs",
            )?;
            if lc.reconnect_max < lc.reconnect_min {
                return Err(ConfigError::invalid(
                    "source.long_connection.reconnect_max_secs",
                    "must be at least source.long_connection.reconnect_min_secs",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(min: u64, max: u64) -> SourceConfig {
        SourceConfig {
            kind: SourceKind::LongConnection,
            long_connection: LongConnConfig {
                reconnect_min: Duration::from_secs(min),
                reconnect_max: Duration::from_secs(max),
                ..LongConnConfig::default()
            },
        }
    }

    #[test]
    fn the_reconnect_floor_is_positive_and_below_the_ceiling() {
        let d = LongConnConfig::default();
        assert_eq!(
            (d.reconnect_min, d.reconnect_max),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
        assert!(lc(1, 300).validate().is_ok());
        assert!(lc(5, 5).validate().is_ok());
        let e = lc(0, 300).validate().unwrap_err().to_string();
        assert!(e.contains("reconnect_min_secs"), "{e}");
        let e = lc(10, 5).validate().unwrap_err().to_string();
        assert!(e.contains("reconnect_max_secs"), "{e}");
        // Webhook mode does not care.
        let mut w = lc(0, 0);
        w.kind = SourceKind::Webhook;
        assert!(w.validate().is_ok());
    }
}
