//! A fake of the part of Lark's open API the bridge calls (helpdesk-events.md §3): the tenant
//! access token, the helpdesk event subscription and a ticket's detail. It records every call
//! with its headers, checks the credentials it was given, and can play Lark having a bad day:
//! slow answers, 5xx, a non-zero `code`, tokens that expire at once. Served by [`FakeLark`]
//! beside the long connection, so one `lark.domain` serves both.
//!
//! [`FakeLark`]: crate::longconn::FakeLark

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the fake API does; change it at any time with [`OpenApi::set`].
#[derive(Debug, Clone)]
pub struct ApiBehaviour {
    /// The app credentials it accepts (any when `None`).
    pub app: Option<(String, String)>,
    /// The helpdesk credentials it accepts (any when `None`).
    pub helpdesk: Option<(String, String)>,
    /// `expire` of the tokens it issues, in seconds (Lark: 7200).
    pub token_expire_secs: u64,
    /// Answer every call this much later.
    pub delay: Duration,
    /// Answer this many of the next calls with HTTP 500 and code 155000.
    pub fail_5xx: u32,
    /// Answer every helpdesk call (not the token) with HTTP 400 and this code and message.
    pub helpdesk_code: Option<(i64, String)>,
    /// The `customized_fields` of every ticket's detail.
    pub customized_fields: Value,
}

impl Default for ApiBehaviour {
    fn default() -> Self {
        ApiBehaviour {
            app: None,
            helpdesk: None,
            token_expire_secs: 7200,
            delay: Duration::ZERO,
            fail_5xx: 0,
            helpdesk_code: None,
            customized_fields: json!([
                {"id": "6834570289512112129", "value": "\"gold\"", "key_name": "tier",
                 "display_name": "Customer tier", "position": "1", "required": false, "editable": true},
                {"id": "6834570289512112130", "value": "\"ORD-1024\"", "key_name": "order",
                 "display_name": "Order number", "position": "2", "required": true, "editable": true}
            ]),
        }
    }
}

/// One call the fake received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiCall {
    /// `tenant_token`, `subscribe`, `unsubscribe` or `ticket_detail`.
    pub api: &'static str,
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `X-Lark-Helpdesk-Authorization` header.
    pub helpdesk_authorization: Option<String>,
    /// The JSON body (`Null` for a GET).
    pub body: Value,
    /// The HTTP status it was answered with.
    pub status: u16,
    #[serde(skip)]
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    behaviour: ApiBehaviour,
    calls: Vec<ApiCall>,
    /// Tokens issued and still valid.
    tokens: HashSet<String>,
    issued: u64,
    /// The subscription as Lark would hold it: `type/subtype` pairs.
    subscribed: HashSet<String>,
}

/// The fake API's state; cheap to clone.
#[derive(Clone)]
pub struct OpenApi {
    inner: Arc<Mutex<Inner>>,
    version: watch::Sender<u64>,
}

impl Default for OpenApi {
    fn default() -> Self {
        OpenApi {
            inner: Arc::default(),
            version: watch::channel(0).0,
        }
    }
}

impl OpenApi {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the behaviour.
    pub fn set(&self, f: impl FnOnce(&mut ApiBehaviour)) {
        f(&mut self.lock().behaviour);
    }

    /// Invalidate every token issued so far (Lark answers 99991663 to them).
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.lock().calls.clone()
    }

    /// The calls of one API.
    pub fn calls_to(&self, api: &str) -> Vec<ApiCall> {
        self.calls().into_iter().filter(|c| c.api == api).collect()
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().issued
    }

    /// What is subscribed now, as sorted `type/subtype` strings.
    pub fn subscribed(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().subscribed.iter().cloned().collect();
        v.sort();
        v
    }

    /// Wait until `f` gives `Some` (re-checked on every call), or `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        f: impl Fn(&OpenApi) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.version.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if let Some(v) = f(self) {
                    return v;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }

    fn record(&self, call: ApiCall) {
        self.lock().calls.push(call);
        self.version.send_modify(|v| *v += 1);
    }

    /// The routes, to merge into a server.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/open-apis/auth/v3/tenant_access_token/internal",
                post(tenant_token),
            )
            .route(
                "/open-apis/helpdesk/v1/events/subscribe",
                post(|s: State<OpenApi>, h: HeaderMap, b: Bytes| subscription(s, h, b, true)),
            )
            .route(
                "/open-apis/helpdesk/v1/events/unsubscribe",
                post(|s: State<OpenApi>, h: HeaderMap, b: Bytes| subscription(s, h, b, false)),
            )
            .route("/open-apis/helpdesk/v1/tickets/{id}", get(ticket_detail))
            .with_state(self.clone())
    }
}

fn lark(status: u16, code: i64, msg: &str, extra: Value) -> Response {
    let mut body = json!({"code": code, "msg": msg});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

/// Delay and injected 5xx, common to every call: `Some` answer when a fault decides it.
async fn faults(api: &OpenApi) -> Option<Response> {
    let delay = api.lock().behaviour.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut g = api.lock();
    if g.behaviour.fail_5xx > 0 {
        g.behaviour.fail_5xx -= 1;
        return Some(lark(500, 155000, "internal error (fake-lark)", json!({})));
    }
    None
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn tenant_token(State(api): State<OpenApi>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let resp = match faults(&api).await {
        Some(r) => r,
        None => {
            let mut g = api.lock();
            let given = (
                body.get("app_id").and_then(Value::as_str).unwrap_or(""),
                body.get("app_secret").and_then(Value::as_str).unwrap_or(""),
            );
            let ok = match &g.behaviour.app {
                Some((id, secret)) => given == (id.as_str(), secret.as_str()),
                None => !given.0.is_empty() && !given.1.is_empty(),
            };
            if ok {
                g.issued += 1;
                let token = format!("t-fake{:016x}{}", rand::random::<u64>(), g.issued);
                g.tokens.insert(token.clone());
                let expire = g.behaviour.token_expire_secs;
                lark(
                    200,
                    0,
                    "ok",
                    json!({"tenant_access_token": token, "expire": expire}),
                )
            } else {
                lark(400, 10014, "app secret invalid", json!({}))
            }
        }
    };
    // The body holds the app secret: record only the app id.
    let app_id = body.get("app_id").cloned().unwrap_or(Value::Null);
    api.record(ApiCall {
        api: "tenant_token",
        path: "/open-apis/auth/v3/tenant_access_token/internal".into(),
        authorization: None,
        helpdesk_authorization: None,
        body: json!({"app_id": app_id}),
        status: resp.status().as_u16(),
        at: Instant::now(),
    });
    resp
}

/// The checks of a helpdesk call: both authorizations, then the configured code.
fn helpdesk_auth(api: &OpenApi, h: &HeaderMap) -> Option<Response> {
    let g = api.lock();
    let bearer = header(h, "authorization");
    let token_ok = bearer
        .as_deref()
        .and_then(|b| b.strip_prefix("Bearer "))
        .is_some_and(|t| g.tokens.contains(t));
    if !token_ok {
        return Some(lark(
            400,
            99991663,
            "Invalid access token for authorization. Please make a request with token attached.",
            json!({}),
        ));
    }
    let expected = g.behaviour.helpdesk.as_ref().map(|(id, token)| {
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"))
    });
    // The documented value is the bare base64 (the Go SDK sends that); the Node SDK prefixes
    // it with "Bearer ". Lark takes both, and so does the fake.
    let given = header(h, "x-lark-helpdesk-authorization");
    let given = given
        .as_deref()
        .map(|g| g.strip_prefix("Bearer ").unwrap_or(g));
    let helpdesk_ok = match (&expected, given) {
        (Some(e), Some(g)) => e == g,
        (None, Some(g)) => !g.is_empty(),
        _ => false,
    };
    if !helpdesk_ok {
        return Some(lark(
            401,
            154001,
            "unauthorized: check the helpdesk token",
            json!({}),
        ));
    }
    if let Some((code, msg)) = &g.behaviour.helpdesk_code {
        return Some(lark(400, *code, msg, json!({})));
    }
    None
}

async fn subscription(
    State(api): State<OpenApi>,
    h: HeaderMap,
    body: Bytes,
    subscribe: bool,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let resp = match faults(&api).await {
        Some(r) => r,
        None => match helpdesk_auth(&api, &h) {
            Some(r) => r,
            None => {
                let pairs: Option<Vec<String>> =
                    body.get("events").and_then(Value::as_array).map(|events| {
                        events
                            .iter()
                            .map(|e| {
                                format!(
                                    "{}/{}",
                                    e.get("type").and_then(Value::as_str).unwrap_or(""),
                                    e.get("subtype").and_then(Value::as_str).unwrap_or("")
                                )
                            })
                            .collect()
                    });
                match pairs {
                    Some(pairs) if !pairs.is_empty() => {
                        let mut g = api.lock();
                        for p in pairs {
                            if subscribe {
                                g.subscribed.insert(p);
                            } else {
                                g.subscribed.remove(&p);
                            }
                        }
                        lark(200, 0, "success", json!({}))
                    }
                    _ => lark(400, 154000, "bad request: events", json!({})),
                }
            }
        },
    };
    api.record(ApiCall {
        api: if subscribe {
            "subscribe"
        } else {
            "unsubscribe"
        },
        path: format!(
            "/open-apis/helpdesk/v1/events/{}",
            if subscribe {
                "subscribe"
            } else {
                "unsubscribe"
            }
        ),
        authorization: header(&h, "authorization"),
        helpdesk_authorization: header(&h, "x-lark-helpdesk-authorization"),
        body,
        status: resp.status().as_u16(),
        at: Instant::now(),
    });
    resp
}

async fn ticket_detail(
    State(api): State<OpenApi>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Response {
    let resp = match faults(&api).await {
        Some(r) => r,
        None => match helpdesk_auth(&api, &h) {
            Some(r) => r,
            None => {
                let fields = api.lock().behaviour.customized_fields.clone();
                lark(
                    200,
                    0,
                    "success",
                    json!({"data": {"ticket": {
                        "ticket_id": id,
                        "helpdesk_id": "7090000000000000001",
                        "stage": 2,
                        "status": 2,
                        "customized_fields": fields
                    }}}),
                )
            }
        },
    };
    api.record(ApiCall {
        api: "ticket_detail",
        path: format!("/open-apis/helpdesk/v1/tickets/{id}"),
        authorization: header(&h, "authorization"),
        helpdesk_authorization: header(&h, "x-lark-helpdesk-authorization"),
        body: Value::Null,
        status: resp.status().as_u16(),
        at: Instant::now(),
    });
    resp
}
