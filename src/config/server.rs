//! `[server]` — the webhook listener, and the per-event limits both entrances share
//! ([`Limits`]) — and `[admin]`, the admin listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{positive, units, ConfigError};

/// The webhook listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the webhook listener binds. Default `0.0.0.0:8080`.
    #[serde(with = "units::addr")]
    pub listen: SocketAddr,
    /// Path Lark posts to. Default `/webhook/event`.
    pub path: String,
    /// Largest body (or long-connection payload) accepted, in bytes; larger → 413 before
    /// anything else. Default 1 MiB.
    pub max_body_bytes: usize,
    /// `response_budget_ms`: time from an event's arrival to the answer. No broker ack within
    /// it → 503 (or a 500 frame reply), inside Lark's 3 s. Default 2500.
    #[serde(rename = "response_budget_ms", with = "units::millis")]
    pub response_budget: Duration,
    /// `shutdown_grace_secs`: on SIGTERM, how long in-flight requests may take. Default 20.
    #[serde(rename = "shutdown_grace_secs", with = "units::secs")]
    pub shutdown_grace: Duration,
    /// Requests processed at once; past it → 503 `overloaded` at once. Default 1024.
    pub max_in_flight: usize,
    /// `read_timeout_ms`: a body (or the request head) that has not fully arrived by then →
    /// 408. Default 10000.
    #[serde(rename = "read_timeout_ms", with = "units::millis")]
    pub read_timeout: Duration,
    /// Largest request head (request line + headers), in bytes; larger → 431. Default 16384.
    pub max_header_bytes: usize,
    /// Open connections at once. At the cap the oldest connection that has not sent a complete
    /// head is closed to make room; when all have a request in progress, new ones wait in the
    /// accept queue. Lowered at start to fit the open-file limit. Default 4096.
    pub max_connections: usize,
    /// Request-body bytes buffered at once, across all connections; a body that does not fit
    /// (its Content-Length, or its next chunk) → 503 `overloaded` at once. Default 64 MiB.
    pub max_buffered_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            path: "/webhook/event".into(),
            max_body_bytes: 1024 * 1024,
            response_budget: Duration::from_millis(2500),
            shutdown_grace: Duration::from_secs(20),
            max_in_flight: 1024,
            read_timeout: Duration::from_millis(10_000),
            max_header_bytes: 16_384,
            max_connections: 4096,
            max_buffered_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The limits every event is held to, whichever entrance it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From arrival to answer (`server.response_budget_ms`).
    pub budget: Duration,
    /// Largest body or payload (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Events processed at once (`server.max_in_flight`).
    pub max_in_flight: usize,
    /// At shutdown, how long in-flight events may take (`server.shutdown_grace_secs`).
    pub grace: Duration,
}

impl ServerConfig {
    /// The per-event limits both entrances apply.
    pub fn limits(&self) -> Limits {
        Limits {
            budget: self.response_budget,
            max_body_bytes: self.max_body_bytes,
            max_in_flight: self.max_in_flight,
            grace: self.shutdown_grace,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::invalid("server.path", "must start with '/'"));
        }
        positive(self.max_body_bytes as u64, "server.max_body_bytes")?;
        positive(
            self.response_budget.as_millis() as u64,
            "server.response_budget_ms",
        )?;
        positive(self.max_in_flight as u64, "server.max_in_flight")?;
        positive(
            self.read_timeout.as_millis() as u64,
            "server.read_timeout_ms",
        )?;
        positive(self.max_connections as u64, "server.max_connections")?;
        if self.max_buffered_body_bytes < self.max_body_bytes {
            return Err(ConfigError::invalid(
                "server.max_buffered_body_bytes",
                "must be at least server.max_body_bytes",
            ));
        }
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::invalid(
                "server.max_header_bytes",
                "must be at least 8192",
            ));
        }
        if self.response_budget >= Duration::from_millis(3000) {
            return Err(ConfigError::invalid(
                "server.response_budget_ms",
                "must be below 3000: Lark gives up after 3 s",
            ));
        }
        Ok(())
    }
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `0.0.0.0:9090`.
    #[serde(with = "units::addr")]
    pub listen: SocketAddr,
    /// Open admin connections at once, apart from the webhook's; at the cap the oldest idle
    /// one is closed. Default 64.
    pub max_connections: usize,
    /// `header_timeout_ms`: time to send a complete request head, counted from the connection's
    /// start or from its previous answer — so it is also the idle timeout of a kept-alive admin
    /// connection. Default 5000.
    #[serde(rename = "header_timeout_ms", with = "units::millis")]
    pub header_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            max_connections: 64,
            header_timeout: Duration::from_millis(5000),
        }
    }
}

impl AdminConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive(self.max_connections as u64, "admin.max_connections")?;
        positive(
            self.header_timeout.as_millis() as u64,
            "admin.header_timeout_ms",
        )
    }
}

/// Head buffer per admin connection (its requests are small GETs).
pub const ADMIN_HEADER_BYTES: usize = 8192;

/// The most memory requests can hold at once under the configured limits, by part: what an
/// attacker who opens every allowed connection and sends every allowed byte can pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    /// `server.max_buffered_body_bytes`.
    pub bodies: usize,
    /// `server.max_connections` × hyper's read buffer for `server.max_header_bytes`.
    pub webhook_heads: usize,
    /// `admin.max_connections` × the admin read buffer.
    pub admin_heads: usize,
}

impl WorstCase {
    /// The sum.
    pub fn total(&self) -> usize {
        self.bodies + self.webhook_heads + self.admin_heads
    }
}
