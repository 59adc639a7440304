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

/// The range each setting is held to, whatever Lark (or the config) says: a peer that sends
/// `PingInterval` 9223372036854775807 must not overflow a `Duration` or an `Instant`, and one
/// that sends `ReconnectInterval` 0 must not make us dial in a tight loop (the floor and the
/// backoff of [`Settings::retry_delay`] see to that). Lark's own values (120 s, 30 s) sit well
/// inside.
pub mod bounds {
    /// Seconds between pings.
    pub const PING_INTERVAL_SECS: (i64, i64) = (1, 3_600);
    /// Seconds between reconnect attempts (before the floor and backoff).
    pub const RECONNECT_INTERVAL_SECS: (i64, i64) = (0, 3_600);
    /// Seconds of jitter before the first reconnect attempt.
    pub const RECONNECT_NONCE_SECS: (i64, i64) = (0, 600);
    /// Reconnect attempts; any negative value means forever and is held as -1.
    pub const RECONNECT_COUNT: (i64, i64) = (-1, 1_000_000);
    /// Longest pong timeout, configured or derived (3 × the longest ping interval).
    pub const PONG_TIMEOUT_SECS: u64 = 3 * PING_INTERVAL_SECS.1 as u64;
    /// Largest reconnect backoff, whatever the config says.
    pub const RECONNECT_MAX_SECS: u64 = 3_600;
}

fn secs_in(v: i64, (lo, hi): (i64, i64)) -> Duration {
    Duration::from_secs(v.clamp(lo, hi) as u64)
}

/// The settings Lark controls: from the config at start, then replaced by the latest endpoint
/// response or pong that carries a `ClientConfig`. Every value is held inside [`bounds`], so no
/// arithmetic on them can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Reconnect attempts after a failure; -1 = forever.
    pub reconnect_count: i64,
    /// Base wait between reconnect attempts after a retryable failure (then the floor and the
    /// exponential backoff of [`Settings::retry_delay`] apply).
    pub reconnect_interval: Duration,
    /// Jitter before the first reconnect attempt: uniform in `[0, nonce)`.
    pub reconnect_nonce: Duration,
    /// Interval between pings.
    pub ping_interval: Duration,
}

impl Settings {
    /// Settings from configured values, clamped to [`bounds`].
    pub fn new(
        reconnect_count: i64,
        reconnect_interval: Duration,
        reconnect_nonce: Duration,
        ping_interval: Duration,
    ) -> Settings {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Settings {
            reconnect_count: reconnect_count
                .clamp(bounds::RECONNECT_COUNT.0, bounds::RECONNECT_COUNT.1),
            reconnect_interval: secs_in(secs(reconnect_interval), bounds::RECONNECT_INTERVAL_SECS),
            reconnect_nonce: secs_in(secs(reconnect_nonce), bounds::RECONNECT_NONCE_SECS),
            ping_interval: secs_in(secs(ping_interval), bounds::PING_INTERVAL_SECS),
        }
    }

    /// Take Lark's values, each clamped to [`bounds`]. A field Lark leaves out keeps its
    /// current value (rather than the Go SDK's zero), and a ping interval that is not positive
    /// is ignored: pinging in a tight loop would help nobody.
    pub fn apply(&mut self, c: &ClientConfig) {
        if let Some(n) = c.reconnect_count {
            self.reconnect_count = n.clamp(bounds::RECONNECT_COUNT.0, bounds::RECONNECT_COUNT.1);
        }
        if let Some(s) = c.reconnect_interval {
            self.reconnect_interval = secs_in(s, bounds::RECONNECT_INTERVAL_SECS);
        }
        if let Some(s) = c.reconnect_nonce {
            self.reconnect_nonce = secs_in(s, bounds::RECONNECT_NONCE_SECS);
        }
        if let Some(s) = c.ping_interval.filter(|s| *s > 0) {
            self.ping_interval = secs_in(s, bounds::PING_INTERVAL_SECS);
        }
    }

    /// How long without a pong before the connection counts as dead: `pong_timeout_secs` when
    /// set, else 3 × the ping interval, at least 10 s (our rule, §4); never more than
    /// [`bounds::PONG_TIMEOUT_SECS`].
    pub fn pong_timeout(&self, configured_secs: u64) -> Duration {
        let d = if configured_secs > 0 {
            Duration::from_secs(configured_secs)
        } else {
            self.ping_interval
                .saturating_mul(3)
                .max(Duration::from_secs(10))
        };
        d.min(Duration::from_secs(bounds::PONG_TIMEOUT_SECS))
    }

    /// The wait before the next attempt after `failures` failures in a row (≥ 1): the larger of
    /// `ReconnectInterval` and `floor`, doubled per further failure, capped at `ceiling`, then
    /// jittered into its upper half by `unit` (uniform in `[0, 1)`) so that replicas do not
    /// redial in step — and never below `floor`, whatever Lark sent. Lark's rule (§6) is a
    /// fixed interval; ours keeps a peer that answers `ReconnectInterval` 0 and then fails
    /// every dial from turning us into a discovery storm.
    pub fn retry_delay(
        &self,
        failures: u32,
        floor: Duration,
        ceiling: Duration,
        unit: f64,
    ) -> Duration {
        let ceiling = ceiling
            .min(Duration::from_secs(bounds::RECONNECT_MAX_SECS))
            .max(floor);
        let base = self.reconnect_interval.max(floor);
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        let d = base.saturating_mul(factor).min(ceiling);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        d.mul_f64(0.5 + unit / 2.0).max(floor).min(ceiling)
    }

    /// The wait before the first attempt after a connection that had been up: a random part of
    /// `ReconnectNonce` (§6, by `unit` in `[0, 1)`), at least `floor`.
    pub fn first_delay(&self, floor: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.reconnect_nonce.mul_f64(unit).max(floor)
    }
}

/// Lark's `ClientConfig` object (seconds), in the endpoint response and in pong payloads.
/// Each field is read leniently (an integer, a float or a numeric string, saturated to `i64`;
/// anything else counts as absent), so a strange value is clamped rather than failing the whole
/// answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientConfig {
    /// `ReconnectCount`: reconnect attempts after a failure; negative = forever.
    #[serde(
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_count: Option<i64>,
    /// `ReconnectInterval`: seconds to wait between reconnect attempts.
    #[serde(
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_interval: Option<i64>,
    /// `ReconnectNonce`: upper bound, in seconds, of the random wait before the first reconnect.
    #[serde(
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconnect_nonce: Option<i64>,
    /// `PingInterval`: seconds between pings.
    #[serde(
        default,
        deserialize_with = "lenient_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ping_interval: Option<i64>,
}

/// A number as Lark might write it: `120`, `1.2e2`, `"120"`, or one past `i64` (saturated).
fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            // `as` saturates; JSON has no NaN or infinity.
            .or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    })
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

/// Text from a peer made fit for a log line, an error or a readiness reason: at most 200
/// characters (then `…`), with every control character (newlines, `ESC` of ANSI sequences,
/// …), bidi override and backslash escaped as `\u{…}` / `\\`, so that no value a peer
/// chose can forge a log line or repaint a terminal.
pub fn printable(s: &str) -> String {
    printable_max(s, 200)
}

/// [`printable`] with its own length limit, in characters.
pub fn printable_max(s: &str, max_chars: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len().min(max_chars) + 2);
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn clip(s: &str) -> String {
    printable(s.trim())
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
            // Only ever logged: escaped once here.
            "device_id" if !v.is_empty() => device_id = Some(printable_max(&v, 128)),
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

    /// Issue 15 item 10: values that once overflowed a `Duration` (and panicked) are clamped.
    #[test]
    fn any_value_lark_sends_is_clamped_and_no_arithmetic_overflows() {
        let mut s = Settings::new(
            -1,
            Duration::from_secs(120),
            Duration::from_secs(30),
            Duration::from_secs(120),
        );
        for body in [
            r#"{"PingInterval":9223372036854775807,"ReconnectInterval":9223372036854775807,"ReconnectNonce":9223372036854775807,"ReconnectCount":9223372036854775807}"#,
            r#"{"PingInterval":4e18,"ReconnectInterval":1e300,"ReconnectNonce":-1e300,"ReconnectCount":-9223372036854775808}"#,
            r#"{"PingInterval":18446744073709551615,"ReconnectInterval":"99999999999999999999","ReconnectNonce":"7","ReconnectCount":[1]}"#,
        ] {
            let cc = ClientConfig::from_pong(body.as_bytes()).expect(body);
            s.apply(&cc);
            assert!(
                s.ping_interval >= Duration::from_secs(1)
                    && s.ping_interval <= Duration::from_secs(3600),
                "{s:?}"
            );
            assert!(s.reconnect_interval <= Duration::from_secs(3600), "{s:?}");
            assert!(s.reconnect_nonce <= Duration::from_secs(600), "{s:?}");
            assert!((-1..=1_000_000).contains(&s.reconnect_count), "{s:?}");
            let now = std::time::Instant::now();
            let _ = now + s.ping_interval + s.pong_timeout(0) + s.pong_timeout(u64::MAX);
            let _ = now + s.retry_delay(u32::MAX, Duration::from_secs(1), Duration::MAX, 0.99);
        }
        assert_eq!(
            s.reconnect_nonce,
            Duration::from_secs(7),
            "a numeric string is read"
        );
        // The same values in the discovery answer parse, and are clamped when applied.
        let e = parse_discovery(
            200,
            &ok_body(
                URL,
                r#"{"PingInterval":9223372036854775807,"ReconnectInterval":4e18}"#,
            ),
        )
        .unwrap();
        let mut s2 = s;
        s2.apply(&e.client_config.unwrap());
        assert_eq!(s2.ping_interval, Duration::from_secs(3600));
        let huge = Settings::new(i64::MAX, Duration::MAX, Duration::MAX, Duration::MAX);
        assert_eq!(huge.ping_interval, Duration::from_secs(3600));
        assert_eq!(huge.pong_timeout(0), Duration::from_secs(3 * 3600));
    }

    /// Issue 15 item 14: a floor and exponential backoff with jitter, whatever Lark sends.
    #[test]
    fn retries_back_off_exponentially_from_a_floor() {
        let floor = Duration::from_secs(1);
        let ceiling = Duration::from_secs(300);
        let mut s = Settings::new(-1, Duration::ZERO, Duration::ZERO, Duration::from_secs(120));
        // ReconnectInterval 0: the floor, then doubling, jitter in the upper half.
        let top: Vec<u64> = (1..=12)
            .map(|n| s.retry_delay(n, floor, ceiling, 0.999_999).as_secs())
            .collect();
        assert_eq!(top, [1, 1, 3, 7, 15, 31, 63, 127, 255, 299, 299, 299]);
        let low: Vec<u64> = (1..=4)
            .map(|n| s.retry_delay(n, floor, ceiling, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(low, [1000, 1000, 2000, 4000]);
        assert_eq!(s.first_delay(floor, 0.0), floor);
        // Lark's 120 s: 60–120 s, then 120–240 s, then capped at 300 s.
        s.apply(&ClientConfig {
            reconnect_interval: Some(120),
            ..Default::default()
        });
        assert_eq!(
            s.retry_delay(1, floor, ceiling, 0.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            s.retry_delay(3, floor, ceiling, 0.0),
            Duration::from_secs(150)
        );
        assert_eq!(
            s.retry_delay(u32::MAX, floor, ceiling, f64::NAN),
            Duration::from_secs(150)
        );
        // A ceiling below the floor cannot undercut it.
        assert_eq!(
            s.retry_delay(9, Duration::from_secs(5), Duration::ZERO, 0.5),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn text_from_a_peer_is_printable() {
        assert_eq!(printable("msg_1"), "msg_1");
        assert_eq!(
            printable("a\nINFO forged\r\u{1b}[31mred\\u{7f}\u{202e}"),
            "a\\u{a}INFO forged\\u{d}\\u{1b}[31mred\\\\u{7f}\\u{202e}"
        );
        assert_eq!(printable_max("abcdef", 3), "abc…");
        assert!(!printable(&"\u{1b}".repeat(10_000)).contains('\u{1b}'));
        let ep = parse_discovery(
            200,
            &ok_body("wss://x/ws/v2?device_id=d%0Aforged%1B&service_id=1", "null"),
        )
        .unwrap();
        assert_eq!(ep.device_id, "d\\u{a}forged\\u{1b}");
    }
}
