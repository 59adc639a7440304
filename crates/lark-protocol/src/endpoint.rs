//! Endpoint discovery and handshake outcomes (lark-longconn.md §2, §3, §6), pure: what Lark's
//! answers mean — dial, retry, or stop — and the four settings Lark may change at any time.
//! The I/O lives in the service's long-connection entrance; everything that decides lives here so it is tested without
//! sockets.

use std::time::Duration;

use serde::Deserialize;

/// Discovery `code`: Lark is busy (server error, retry).
pub const CODE_BUSY: i64 = 1;
/// Discovery `code`: Lark's internal error (server error, retry).
pub const CODE_INTERNAL: i64 = 1000040343;
/// Discovery or handshake `code`: more than 50 connections for the app (client error, stop).
pub const CODE_CONNECTION_LIMIT: i64 = 1000040350;

/// The settings Lark controls: from the config at start, then replaced by the latest endpoint
/// response or pong that carries a `ClientConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Reconnect attempts after a failure; negative = forever.
    pub reconnect_count: i64,
    /// Wait between reconnect attempts after a retryable failure (fixed, no backoff).
    pub reconnect_interval: Duration,
    /// Jitter before the first reconnect attempt: uniform in `[0, nonce)`.
    pub reconnect_nonce: Duration,
    /// Interval between pings on an open connection.
    pub ping_interval: Duration,
}

impl Settings {
    /// Take Lark's values. A field Lark leaves out keeps its current value (rather than the
    /// Go SDK's zero), and a ping interval that is not positive is ignored: pinging in a
    /// tight loop would help nobody.
    pub fn apply(&mut self, c: &ClientConfig) {
        if let Some(n) = c.reconnect_count {
            self.reconnect_count = n;
        }
        if let Some(s) = c.reconnect_interval {
            self.reconnect_interval = Duration::from_secs(s.max(0) as u64);
        }
        if let Some(s) = c.reconnect_nonce {
            self.reconnect_nonce = Duration::from_secs(s.max(0) as u64);
        }
        if let Some(s) = c.ping_interval.filter(|s| *s > 0) {
            self.ping_interval = Duration::from_secs(s as u64);
        }
    }

    /// How long without a pong before the connection counts as dead: `pong_timeout_secs` when
    /// set, else 3 × the ping interval, at least 10 s (our rule, §4).
    pub fn pong_timeout(&self, configured_secs: u64) -> Duration {
        if configured_secs > 0 {
            Duration::from_secs(configured_secs)
        } else {
            (self.ping_interval * 3).max(Duration::from_secs(10))
        }
    }
}

/// Lark's `ClientConfig` object (seconds), in the endpoint response and in pong payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientConfig {
    /// `ReconnectCount`: reconnect attempts after a failure; negative = forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_count: Option<i64>,
    /// `ReconnectInterval`: seconds to wait between reconnect attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_interval: Option<i64>,
    /// `ReconnectNonce`: upper bound, in seconds, of the random wait before the first reconnect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_nonce: Option<i64>,
    /// `PingInterval`: seconds between pings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<i64>,
}

impl ClientConfig {
    /// A pong payload: `None` when empty or not a ClientConfig.
    pub fn from_pong(payload: &[u8]) -> Option<ClientConfig> {
        if payload.is_empty() {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }
}

/// Why a connection attempt failed, as the `reason` label of
/// `lark_bridge_longconn_reconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// Discovery could not be done: transport error, HTTP status ≠ 200, unreadable answer.
    DiscoveryFailed,
    /// Lark answered with a server error (busy, internal, empty URL, URL without ids).
    ServerError,
    /// The WebSocket handshake failed in a retryable way.
    HandshakeFailed,
}

impl RetryReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::DiscoveryFailed => "discovery_failed",
            RetryReason::ServerError => "server_error",
            RetryReason::HandshakeFailed => "handshake_failed",
        }
    }
}

/// A failed connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Try again after `ReconnectInterval`.
    #[error("{msg}")]
    Retry {
        /// Why, as a metric label.
        reason: RetryReason,
        /// What happened, for logs (endpoint URLs redacted).
        msg: String,
    },
    /// A client error: retrying cannot help. The message is the readiness reason.
    #[error("{0}")]
    Stop(String),
}

impl ConnectError {
    fn retry(reason: RetryReason, msg: impl Into<String>) -> ConnectError {
        ConnectError::Retry {
            reason,
            msg: msg.into(),
        }
    }
}

/// Where to dial, from a successful discovery.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The WebSocket URL as given; its query holds credentials (`access_key`, `ticket`), so it
    /// is never logged: use [`redact_url`].
    pub url: String,
    /// The connection's id, for logs.
    pub device_id: String,
    /// Goes into every frame's `service`.
    pub service_id: i32,
    /// Lark's settings from the discovery answer, when it sent them.
    pub client_config: Option<ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact_url(&self.url))
            .field("device_id", &self.device_id)
            .field("service_id", &self.service_id)
            .field("client_config", &self.client_config)
            .finish()
    }
}

/// The discovery request body.
pub fn discovery_body(app_id: &str, app_secret: &str) -> serde_json::Value {
    serde_json::json!({ "AppID": app_id, "AppSecret": app_secret })
}

/// Text from Lark, cut short enough for a log line and a readiness reason.
fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Read a discovery answer (HTTP status and body) per the table of §2.
pub fn parse_discovery(http_status: u16, body: &[u8]) -> Result<Endpoint, ConnectError> {
    #[derive(Deserialize)]
    struct Resp {
        code: i64,
        #[serde(default)]
        msg: String,
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "URL", default)]
        url: String,
        #[serde(rename = "ClientConfig")]
        client_config: Option<ClientConfig>,
    }
    if http_status != 200 {
        return Err(ConnectError::retry(
            RetryReason::DiscoveryFailed,
            format!("endpoint discovery answered HTTP {http_status}"),
        ));
    }
    let resp: Resp = serde_json::from_slice(body).map_err(|_| {
        ConnectError::retry(
            RetryReason::DiscoveryFailed,
            "endpoint discovery answer is not the expected JSON",
        )
    })?;
    match resp.code {
        0 => {}
        CODE_BUSY | CODE_INTERNAL => {
            return Err(ConnectError::retry(
                RetryReason::ServerError,
                format!(
                    "endpoint discovery: lark server error, code {}, {}",
                    resp.code,
                    clip(&resp.msg)
                ),
            ))
        }
        code => {
            return Err(ConnectError::Stop(format!(
                "lark refused the connection: code {code}, {}",
                clip(&resp.msg)
            )))
        }
    }
    let data = resp.data.unwrap_or(Data {
        url: String::new(),
        client_config: None,
    });
    if data.url.is_empty() {
        return Err(ConnectError::retry(
            RetryReason::ServerError,
            "endpoint discovery returned no URL",
        ));
    }
    let (device_id, service_id) = connection_ids(&data.url)?;
    Ok(Endpoint {
        url: data.url,
        device_id,
        service_id,
        client_config: data.client_config,
    })
}

/// `device_id` and `service_id` from the URL's query; either missing is a server error.
fn connection_ids(raw: &str) -> Result<(String, i32), ConnectError> {
    let bad = |what: &str| {
        ConnectError::retry(
            RetryReason::ServerError,
            format!("endpoint URL {what}: {}", redact_url(raw)),
        )
    };
    let url = url::Url::parse(raw).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(bad("is not a ws:// or wss:// URL"));
    }
    let mut device_id = None;
    let mut service_id = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "device_id" if !v.is_empty() => device_id = Some(v.into_owned()),
            "service_id" => service_id = v.parse::<i32>().ok(),
            _ => {}
        }
    }
    match (device_id, service_id) {
        (Some(d), Some(s)) => Ok((d, s)),
        (None, _) => Err(bad("has no device_id")),
        (_, None) => Err(bad("has no numeric service_id")),
    }
}

/// A URL fit for logs: the query (which carries `access_key` and `ticket`) replaced by `…`.
pub fn redact_url(raw: &str) -> String {
    let no_fragment = raw.split('#').next().unwrap_or("");
    match no_fragment.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => no_fragment.to_string(),
    }
}

/// A handshake answered with something other than `101`, per §3: the `Handshake-*` headers
/// (looked up case-insensitively by `header`), else the HTTP status.
pub fn classify_handshake<'a>(
    http_status: u16,
    header: impl Fn(&str) -> Option<&'a str>,
) -> ConnectError {
    let status = header("handshake-status")
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(http_status);
    let msg = clip(header("handshake-msg").unwrap_or(""));
    let auth_code = header("handshake-autherrcode").and_then(|s| s.trim().parse::<i64>().ok());
    let detail = if msg.is_empty() {
        String::new()
    } else {
        format!(", {msg}")
    };
    match (status, auth_code) {
        (403, _) => ConnectError::Stop(format!(
            "lark refused the connection: handshake status 403 (forbidden){detail}"
        )),
        (514, Some(code @ CODE_CONNECTION_LIMIT)) => {
            ConnectError::Stop(format!("lark refused the connection: code {code}{detail}"))
        }
        (status, code) => ConnectError::retry(
            RetryReason::HandshakeFailed,
            match code {
                Some(code) => {
                    format!("websocket handshake failed: status {status}, code {code}{detail}")
                }
                None => format!("websocket handshake failed: status {status}{detail}"),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "wss://msg-frontier.feishu.cn/ws/v2?fpid=493&device_id=7412&access_key=SECRETKEY&service_id=33554678&ticket=SECRETTICKET";

    fn ok_body(url: &str, cc: &str) -> Vec<u8> {
        format!(r#"{{"code":0,"msg":"ok","data":{{"URL":"{url}","ClientConfig":{cc}}}}}"#)
            .into_bytes()
    }

    #[test]
    fn a_good_answer_gives_the_url_ids_and_settings() {
        let body = ok_body(
            URL,
            r#"{"ReconnectCount":-1,"ReconnectInterval":120,"ReconnectNonce":30,"PingInterval":120}"#,
        );
        let e = parse_discovery(200, &body).unwrap();
        assert_eq!(e.url, URL);
        assert_eq!(e.device_id, "7412");
        assert_eq!(e.service_id, 33554678);
        let cc = e.client_config.unwrap();
        assert_eq!(cc.ping_interval, Some(120));
        assert_eq!(cc.reconnect_count, Some(-1));
    }

    #[test]
    fn server_errors_are_retried() {
        for (status, body) in [
            (500, ok_body(URL, "null")),
            (200, br#"{"code":1,"msg":"system busy"}"#.to_vec()),
            (200, br#"{"code":1000040343,"msg":"internal"}"#.to_vec()),
            (200, br#"{"code":0,"msg":"ok","data":{"URL":""}}"#.to_vec()),
            (200, br#"{"code":0,"msg":"ok"}"#.to_vec()),
            (200, b"<html>".to_vec()),
            (200, ok_body("wss://x/ws/v2?service_id=1", "null")),
            (
                200,
                ok_body("wss://x/ws/v2?device_id=d&service_id=abc", "null"),
            ),
            (
                200,
                ok_body("https://x/ws/v2?device_id=d&service_id=1", "null"),
            ),
        ] {
            match parse_discovery(status, &body) {
                Err(ConnectError::Retry { .. }) => {}
                other => panic!("{status} {}: {other:?}", String::from_utf8_lossy(&body)),
            }
        }
    }

    #[test]
    fn client_errors_stop_with_the_code_and_message() {
        let e = parse_discovery(
            200,
            br#"{"code":1000040350,"msg":"connection limit reached"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ConnectError::Stop(
                "lark refused the connection: code 1000040350, connection limit reached".into()
            )
        );
        let e = parse_discovery(200, br#"{"code":1000040351,"msg":"wrong domain"}"#).unwrap_err();
        assert!(matches!(e, ConnectError::Stop(m) if m.contains("1000040351")));
    }

    #[test]
    fn the_credentials_in_the_url_are_never_shown() {
        let shown = redact_url(URL);
        assert_eq!(shown, "wss://msg-frontier.feishu.cn/ws/v2?…");
        let e = parse_discovery(
            200,
            &ok_body(
                "wss://x/ws/v2?access_key=SECRETKEY&ticket=SECRETTICKET",
                "null",
            ),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let ep = parse_discovery(200, &ok_body(URL, "null")).unwrap();
        assert!(!format!("{ep:?}").contains("SECRET"));
    }

    #[test]
    fn handshake_outcomes_follow_the_table() {
        let none = |_: &str| None;
        assert!(matches!(
            classify_handshake(403, none),
            ConnectError::Stop(_)
        ));
        let limit = |k: &str| match k {
            "handshake-status" => Some("514"),
            "handshake-autherrcode" => Some("1000040350"),
            "handshake-msg" => Some("connection limit reached"),
            _ => None,
        };
        assert_eq!(
            classify_handshake(200, limit),
            ConnectError::Stop(
                "lark refused the connection: code 1000040350, connection limit reached".into()
            )
        );
        let other_514 = |k: &str| match k {
            "handshake-status" => Some("514"),
            "handshake-autherrcode" => Some("1000040999"),
            _ => None,
        };
        assert!(matches!(
            classify_handshake(200, other_514),
            ConnectError::Retry {
                reason: RetryReason::HandshakeFailed,
                ..
            }
        ));
        let banned = |k: &str| (k == "handshake-status").then_some("403");
        assert!(matches!(
            classify_handshake(200, banned),
            ConnectError::Stop(_)
        ));
        assert!(matches!(
            classify_handshake(502, none),
            ConnectError::Retry { .. }
        ));
    }

    #[test]
    fn client_config_replaces_present_settings_only() {
        let mut s = Settings {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
        };
        assert_eq!(s.ping_interval, Duration::from_secs(120));
        assert_eq!(s.pong_timeout(0), Duration::from_secs(360));
        let cc = ClientConfig::from_pong(br#"{"PingInterval":2,"ReconnectCount":3}"#).unwrap();
        s.apply(&cc);
        assert_eq!(s.ping_interval, Duration::from_secs(2));
        assert_eq!(s.reconnect_count, 3);
        assert_eq!(s.reconnect_interval, Duration::from_secs(120));
        assert_eq!(s.pong_timeout(0), Duration::from_secs(10), "at least 10 s");
        assert_eq!(s.pong_timeout(1), Duration::from_secs(1), "configured wins");
        s.apply(&ClientConfig {
            ping_interval: Some(0),
            ..Default::default()
        });
        assert_eq!(s.ping_interval, Duration::from_secs(2));
        assert_eq!(ClientConfig::from_pong(b""), None);
        assert_eq!(ClientConfig::from_pong(b"garbage"), None);
    }
}
