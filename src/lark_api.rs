//! Lark's open API: the few calls the bridge makes (helpdesk-events.md §3) — the tenant access
//! token, the helpdesk event subscription and a ticket's detail. One small client, so that the
//! token cache, the retries and the rule "no credential in any log line or error" live in one
//! place.
//!
//! Retries: network errors and 5xx only (a 4xx or a non-zero `code` will not change by asking
//! again), with full-jitter exponential backoff, inside the caller's deadline. A helpdesk call
//! answered "token invalid" drops the cached token and is tried once more with a fresh one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};

use crate::config::{LarkConfig, Secret};
use crate::metrics::Metrics;

/// Which call (the `api` label of `lark_bridge_lark_api_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    TenantToken,
    Subscribe,
    Unsubscribe,
    TicketDetail,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::TenantToken => "tenant_token",
            Api::Subscribe => "subscribe",
            Api::Unsubscribe => "unsubscribe",
            Api::TicketDetail => "ticket_detail",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call. Messages carry Lark's `code` and `msg`, never a token or secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// `lark.app_id` / `lark.app_secret` are not set.
    #[error("{0}: lark.app_id and lark.app_secret are not set")]
    NoAppCredentials(Api),
    /// `lark.helpdesk_id` / `lark.helpdesk_token` are not set.
    #[error("{0}: lark.helpdesk_id and lark.helpdesk_token are not set")]
    NoHelpdeskCredentials(Api),
    /// Lark answered with a non-zero `code` (or an HTTP error with a Lark body).
    #[error("{api}: Lark answered HTTP {status}, code {code}: {msg}")]
    Lark {
        api: Api,
        status: u16,
        code: i64,
        msg: String,
    },
    /// An HTTP error without a readable Lark body.
    #[error("{api}: Lark answered HTTP {status}")]
    Http { api: Api, status: u16 },
    /// The request did not get an answer (connection refused, reset, DNS, TLS).
    #[error("{api}: {reason}")]
    Network { api: Api, reason: String },
    /// No answer within the call's time.
    #[error("{0}: no answer in time")]
    Timeout(Api),
    /// A 2xx answer that is not what the API documents.
    #[error("{api}: unreadable answer: {reason}")]
    Decode { api: Api, reason: &'static str },
}

impl ApiError {
    /// Worth another try: the network or Lark's side failed, not the request.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Network { .. } => true,
            ApiError::Http { status, .. } | ApiError::Lark { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The `result` label of `lark_bridge_lark_api_requests_total`.
    fn result(&self) -> &'static str {
        match self {
            ApiError::Timeout(_) => "timeout",
            e if e.retryable() => "unavailable",
            _ => "error",
        }
    }

    /// Lark's `code`, when it sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ApiError::Lark { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn token_rejected(&self) -> bool {
        self.code().is_some_and(|c| TOKEN_REJECTED.contains(&c))
    }
}

/// Lark's codes for a tenant token it no longer accepts (invalid, expired, missing): the cached
/// one is dropped and the call tried once more.
const TOKEN_REJECTED: [i64; 5] = [99991661, 99991663, 99991664, 99991665, 99991668];

/// Attempts per call, the first included.
const ATTEMPTS: u32 = 3;
/// First backoff ceiling; doubled per attempt (full jitter: a random wait up to it).
const BACKOFF: Duration = Duration::from_millis(100);
/// A token is refreshed this long before Lark's `expire` (or at half its life, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

struct Token {
    value: Secret,
    refresh_at: Instant,
}

/// The client. Cheap to share (`Arc`); the token is cached across calls and tasks.
pub struct LarkApi {
    http: reqwest::Client,
    base: String,
    app: Option<(String, Secret)>,
    /// `X-Lark-Helpdesk-Authorization`: base64 of `helpdesk_id:helpdesk_token`.
    helpdesk_auth: Option<Secret>,
    timeout: Duration,
    token: tokio::sync::Mutex<Option<Token>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for LarkApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LarkApi").field("base", &self.base).finish()
    }
}

/// The subscription body's `{type, subtype}` of a Lark event type: split after its first two
/// dot-separated components (`helpdesk.ticket` + `ticket.created_v1`; helpdesk-events.md §3).
pub fn event_pair(event_type: &str) -> Option<(&str, &str)> {
    let first = event_type.find('.')?;
    let second = first + 1 + event_type[first + 1..].find('.')?;
    Some((&event_type[..second], &event_type[first + 1..]))
}

/// The body of a subscribe or unsubscribe call for `events`.
pub fn subscription_body(events: &[String]) -> Value {
    let items: Vec<Value> = events
        .iter()
        .filter_map(|e| event_pair(e))
        .map(|(t, s)| json!({"type": t, "subtype": s}))
        .collect();
    json!({ "events": items })
}

impl LarkApi {
    /// A client for `cfg` (`lark.domain`, the app and helpdesk credentials, `api_timeout_ms`).
    pub fn new(cfg: &LarkConfig, metrics: Arc<Metrics>) -> Result<LarkApi, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirect would replay the app secret or the tokens elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("lark-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let app = cfg
            .app_credentials()
            .map(|(id, s)| (id.to_string(), s.clone()));
        let helpdesk_auth = cfg.helpdesk_credentials().map(|(id, token)| {
            Secret::new(
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{id}:{}", token.expose())),
            )
        });
        Ok(LarkApi {
            http,
            base: cfg.domain.trim_end_matches('/').to_string(),
            app,
            helpdesk_auth,
            timeout: cfg.api_timeout,
            token: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    /// The deadline of a call that is not bounded by an event's budget (token, subscription):
    /// every attempt its full `lark.api_timeout_ms`.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout * ATTEMPTS
    }

    /// True when the helpdesk calls can be made (app and helpdesk credentials set).
    pub fn can_call_helpdesk(&self) -> bool {
        self.app.is_some() && self.helpdesk_auth.is_some()
    }

    /// Subscribe to `events` (idempotent on Lark's side).
    pub async fn subscribe(&self, events: &[String]) -> Result<(), ApiError> {
        self.subscription(Api::Subscribe, events).await
    }

    /// Unsubscribe from `events`.
    pub async fn unsubscribe(&self, events: &[String]) -> Result<(), ApiError> {
        self.subscription(Api::Unsubscribe, events).await
    }

    async fn subscription(&self, api: Api, events: &[String]) -> Result<(), ApiError> {
        let path = match api {
            Api::Unsubscribe => "/open-apis/helpdesk/v1/events/unsubscribe",
            _ => "/open-apis/helpdesk/v1/events/subscribe",
        };
        let deadline = self.deadline();
        let body = subscription_body(events);
        self.helpdesk_call(api, reqwest::Method::POST, path, Some(&body), deadline)
            .await
            .map(|_| ())
    }

    /// The `data` of a ticket's detail (`data.ticket` holds the ticket), by `deadline`.
    pub async fn ticket_detail(
        &self,
        ticket_id: &str,
        deadline: Instant,
    ) -> Result<Value, ApiError> {
        // The id comes from a verified event, but keep it to one path segment anyway.
        let id: String = url::form_urlencoded::byte_serialize(ticket_id.as_bytes()).collect();
        let path = format!("/open-apis/helpdesk/v1/tickets/{id}");
        self.helpdesk_call(
            Api::TicketDetail,
            reqwest::Method::GET,
            &path,
            None,
            deadline,
        )
        .await
    }

    /// The tenant access token, from the cache while it is fresh.
    pub async fn tenant_token(&self, deadline: Instant) -> Result<Secret, ApiError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let Some((app_id, app_secret)) = &self.app else {
            return Err(ApiError::NoAppCredentials(Api::TenantToken));
        };
        let body = json!({"app_id": app_id, "app_secret": app_secret.expose()});
        let answer = self
            .with_retries(Api::TenantToken, deadline, |remaining| {
                self.http
                    .post(format!(
                        "{}/open-apis/auth/v3/tenant_access_token/internal",
                        self.base
                    ))
                    .json(&body)
                    .timeout(remaining)
            })
            .await?;
        let value = answer
            .get("tenant_access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Decode {
                api: Api::TenantToken,
                reason: "no tenant_access_token",
            })?;
        let expire = answer
            .get("expire")
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .ok_or(ApiError::Decode {
                api: Api::TenantToken,
                reason: "no expire",
            })?;
        let margin = REFRESH_MARGIN.min(expire / 2);
        let token = Token {
            value: Secret::new(value),
            refresh_at: Instant::now() + expire - margin,
        };
        let value = token.value.clone();
        *cached = Some(token);
        tracing::debug!(
            expire_secs = expire.as_secs(),
            "lark tenant access token obtained"
        );
        Ok(value)
    }

    /// A helpdesk call with both authorizations; a rejected tenant token is replaced once.
    async fn helpdesk_call(
        &self,
        api: Api,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, ApiError> {
        let Some(helpdesk) = &self.helpdesk_auth else {
            return Err(ApiError::NoHelpdeskCredentials(api));
        };
        if self.app.is_none() {
            return Err(ApiError::NoAppCredentials(api));
        }
        let url = format!("{}{path}", self.base);
        let mut renewed = false;
        loop {
            let token = self.tenant_token(deadline).await?;
            let r = self
                .with_retries(api, deadline, |remaining| {
                    let mut req = self
                        .http
                        .request(method.clone(), &url)
                        .bearer_auth(token.expose())
                        .header("X-Lark-Helpdesk-Authorization", helpdesk.expose())
                        .timeout(remaining);
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    req
                })
                .await;
            match r {
                Err(e) if e.token_rejected() && !renewed => {
                    renewed = true;
                    *self.token.lock().await = None;
                    tracing::info!(api = %api, code = e.code(), "lark rejected the cached tenant token; fetching a new one");
                }
                Err(e) => return Err(e),
                Ok(answer) => return Ok(answer.get("data").cloned().unwrap_or(Value::Null)),
            }
        }
    }

    /// Send what `build` makes (given the time left) until an answer that is not worth
    /// retrying, or `ATTEMPTS`, or `deadline`. Counts each attempt. Returns the whole JSON answer
    /// of a `code: 0`.
    async fn with_retries(
        &self,
        api: Api,
        deadline: Instant,
        build: impl Fn(Duration) -> reqwest::RequestBuilder,
    ) -> Result<Value, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .min(self.timeout);
            let r = if remaining.is_zero() {
                Err(ApiError::Timeout(api))
            } else {
                match tokio::time::timeout(remaining, self.once(api, build(remaining))).await {
                    Ok(r) => r,
                    Err(_) => Err(ApiError::Timeout(api)),
                }
            };
            let result = match &r {
                Ok(_) => "ok",
                Err(e) => e.result(),
            };
            self.metrics
                .lark_api_requests
                .with_label_values(&[api.as_str(), result])
                .inc();
            let e = match r {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !e.retryable() || attempt >= ATTEMPTS {
                return Err(e);
            }
            let ceiling = BACKOFF * 2u32.pow(attempt - 1);
            let wait = ceiling.mul_f64(rand::rng().random::<f64>());
            if Instant::now() + wait >= deadline {
                return Err(e);
            }
            tracing::debug!(api = %api, attempt, error = %e, "lark api call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(&self, api: Api, req: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let resp = req.send().await.map_err(|e| network(api, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| network(api, e))?;
        let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
        let code = answer
            .as_ref()
            .and_then(|a| a.get("code"))
            .and_then(Value::as_i64);
        match (answer, code) {
            (Some(answer), Some(0)) if (200..300).contains(&status) => Ok(answer),
            (Some(answer), Some(code)) => Err(ApiError::Lark {
                api,
                status,
                code,
                msg: crate::secrets::scrub_known(
                    answer
                        .get("msg")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect(),
                ),
            }),
            _ if (200..300).contains(&status) => Err(ApiError::Decode {
                api,
                reason: "not a JSON object with a code",
            }),
            _ => Err(ApiError::Http { api, status }),
        }
    }
}

/// A reqwest error as text without the URL's query (none of ours carries a secret, but the
/// rule is cheap) and scrubbed of known secrets.
fn network(api: Api, e: reqwest::Error) -> ApiError {
    let reason = if e.is_timeout() {
        return ApiError::Timeout(api);
    } else if e.is_connect() {
        "cannot connect to Lark".to_string()
    } else {
        format!("request failed: {}", e.without_url())
    };
    ApiError::Network {
        api,
        reason: crate::secrets::scrub_known(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_split_into_lark_type_and_subtype() {
        assert_eq!(
            event_pair("helpdesk.ticket.created_v1"),
            Some(("helpdesk.ticket", "ticket.created_v1"))
        );
        assert_eq!(
            event_pair("helpdesk.ticket_message.created_v1"),
            Some(("helpdesk.ticket_message", "ticket_message.created_v1"))
        );
        assert_eq!(
            event_pair("helpdesk.notification.approve_v1"),
            Some(("helpdesk.notification", "notification.approve_v1"))
        );
        assert_eq!(event_pair("helpdesk"), None);
        assert_eq!(event_pair("helpdesk.ticket"), None);
    }

    #[test]
    fn only_network_errors_and_5xx_are_retried() {
        let lark = |status, code| ApiError::Lark {
            api: Api::Subscribe,
            status,
            code,
            msg: String::new(),
        };
        assert!(lark(500, 155000).retryable());
        assert!(!lark(400, 154000).retryable());
        assert!(!lark(200, 154001).retryable());
        assert!(ApiError::Http {
            api: Api::Subscribe,
            status: 503
        }
        .retryable());
        assert!(!ApiError::Timeout(Api::Subscribe).retryable());
        assert!(lark(401, 99991663).token_rejected());
    }
}
