//! The webhook entrance: an axum handler that applies the HTTP-level checks of
//! lark-protocol.md §6 (overload, method, size, read timeout), hands the raw body to
//! [`lark_protocol::Verifier`], and the verified event to the pipeline through the shared
//! contract ([`super`]). It reads as admit → read → verify → walk; [`respond`] is the one place
//! an [`Ending`] becomes an HTTP answer. Every answer is JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::json;

use super::{finish, rejected, walk, Admission, Ending, Refusal};
use crate::metrics::{Metrics, Source};
use crate::pipeline::Pipeline;
use lark_protocol::{Inbound, SignatureHeaders, Verifier};

/// What the webhook handler needs.
pub struct IngressState {
    pub verifier: Verifier,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub admission: Admission,
    pub max_body_bytes: usize,
    pub budget: Duration,
    pub read_timeout: Duration,
    /// Largest request head; larger → 431 (JSON, outcome `bad_request`). hyper's own buffer
    /// is twice this (≥ 16 KiB), so only absurd heads get hyper's bare 431.
    pub max_header_bytes: usize,
    /// The global bound on buffered body bytes (`server.max_buffered_body_bytes`).
    pub body_budget: BodyBudget,
    /// Continue the trace of a request's W3C `traceparent` (`otel.parent_from_request`).
    pub parent_from_request: bool,
}

/// The global bound on request-body bytes held in memory at once, across every connection
/// (`server.max_buffered_body_bytes`). A body reserves its declared length before its first
/// byte is read (a chunked one, each chunk as it arrives); no room → 503 `overloaded` at once.
/// The reservation is held until the request is answered, which is as long as the bytes live.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
}

impl BodyBudget {
    /// At most `max_bytes` buffered at once (clamped to what a semaphore can count).
    pub fn new(max_bytes: usize) -> BodyBudget {
        let n = max_bytes.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(n)),
        }
    }

    /// Reserve `n` more bytes into `held`, or refuse at once.
    fn reserve(&self, held: &mut Option<tokio::sync::OwnedSemaphorePermit>, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                match held {
                    Some(h) => h.merge(p),
                    None => *held = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Approximate size of the request head as it came on the wire.
fn head_size(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) -> usize {
    // The URI's printed length, counted without building the string.
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut uri_len = Count(0);
    let _ = std::fmt::Write::write_fmt(&mut uri_len, format_args!("{uri}"));
    let line = method.as_str().len() + uri_len.0 + 12;
    line + headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

pub fn router(path: &str, state: Arc<IngressState>) -> Router {
    Router::new()
        .route(path, any(webhook))
        .fallback(|| async { reply(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

/// Every answer's body: `{"msg": …}` (a struct, not a `json!` map, to spare two allocations).
#[derive(serde::Serialize)]
struct Msg<'a> {
    msg: &'a str,
}

fn reply(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(Msg { msg })).into_response()
}

/// The answer to every accepted event, `{"msg":"success"}`, from static bytes: no serialization
/// and no buffer per request (issue 19).
fn success() -> Response {
    let mut r = Response::new(Body::from(bytes::Bytes::from_static(
        br#"{"msg":"success"}"#,
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The span of a request that never became an event (its fields stay empty).
fn request_span() -> tracing::Span {
    tracing::info_span!(
        "request",
        source = "webhook",
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
    )
}

/// The HTTP answer to an ending: the one place statuses are decided.
fn respond(ending: &Ending) -> Response {
    match ending {
        Ending::Accepted(_) => success(),
        Ending::Challenge(c) => {
            (StatusCode::OK, axum::Json(json!({ "challenge": c }))).into_response()
        }
        Ending::Refused(r) => {
            let status = match r {
                Refusal::Overloaded | Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
                Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
                Refusal::Unreadable(_) | Refusal::BadEvent(_) => StatusCode::BAD_REQUEST,
                Refusal::Rejected(lark_protocol::Rejection::BadRequest { .. }) => {
                    StatusCode::BAD_REQUEST
                }
                Refusal::Rejected(lark_protocol::Rejection::Unauthorized { .. }) => {
                    StatusCode::UNAUTHORIZED
                }
            };
            let mut resp = reply(status, &r.to_string());
            if *r == Refusal::MethodNotAllowed {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            resp
        }
    }
}

async fn webhook(
    State(s): State<Arc<IngressState>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // The span is made once the event's id and type are known, with them, rather than made
    // empty up front and filled in: with the JSON log format each `record` re-serializes the
    // span's fields, which cost about 4 % of the bridge's CPU. Nothing logs before that point,
    // so every line carries the same fields as before.
    let mut span = None;
    let ending = handle(&s, started, method, uri, headers, body, &mut span).await;
    let response = respond(&ending);
    let span = span.unwrap_or_else(request_span);
    finish(
        &s.metrics,
        Source::Webhook,
        &ending,
        response.status().as_u16(),
        started,
        &span,
    );
    response
}

/// Read → admit → verify → walk. The body is read *before* admission: a request holds an
/// in-flight slot only while it is processed, never while its body trickles in (issue 15), so
/// slow bodies are bounded by the read deadline, the buffered-bytes budget and the connection
/// cap, and cannot starve real events of slots.
async fn handle(
    s: &IngressState,
    started: Instant,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
    span: &mut Option<tracing::Span>,
) -> Ending {
    let (bytes, _reserved) = match read(s, &method, &uri, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r.into(),
    };
    // Shedding must cost nothing beyond the read, which the budget already bounds.
    let Some(_permit) = s.admission.try_admit() else {
        return Refusal::Overloaded.into();
    };
    s.metrics.body_bytes.observe(bytes.len() as f64);

    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sig = SignatureHeaders {
        timestamp: h("x-lark-request-timestamp"),
        nonce: h("x-lark-request-nonce"),
        signature: h("x-lark-signature"),
    };
    let now = chrono::Utc::now().timestamp();
    // With traces on, the request span exists before verification (verify is its first child)
    // and takes the event's id and type once known; off, it is made after, with them.
    let traced = crate::telemetry::enabled().then(|| {
        let request = request_span();
        if s.parent_from_request {
            crate::telemetry::set_parent_from(&request, &headers);
        }
        *span = Some(request.clone());
        request
    });
    let verified = match &traced {
        Some(request) => {
            let v = tracing::info_span!(
                target: "lark_bridge::otel",
                parent: request,
                "verify",
                outcome = tracing::field::Empty
            );
            let r = v.in_scope(|| s.verifier.verify(sig, &bytes, now));
            let outcome = match &r {
                Ok(_) => "ok",
                Err(rej) => rej.reason().as_str(),
            };
            crate::telemetry::step_outcome(&v, outcome, false);
            r
        }
        None => s.verifier.verify(sig, &bytes, now),
    };
    let ev = match verified {
        Ok(Inbound::Event(ev)) => ev,
        Ok(Inbound::Challenge(c)) => return Ending::Challenge(c),
        Err(rej) => return rejected(&s.metrics, rej).into(),
    };
    let request = match traced {
        Some(request) => {
            request.record("event_id", ev.event_id());
            request.record("event_type", ev.event_type());
            request
        }
        None => {
            let request = tracing::info_span!(
                "request",
                source = "webhook",
                event_id = ev.event_id(),
                event_type = ev.event_type(),
            );
            *span = Some(request.clone());
            request
        }
    };
    walk(&s.pipeline, &s.metrics, ev, started + s.budget, request).await
}

/// The HTTP checks of §6, then the body under its size bound, the buffered-bytes budget and its
/// own deadline. Returns the body and its reservation in the budget (held until answered).
async fn read(
    s: &IngressState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(bytes::Bytes, Option<tokio::sync::OwnedSemaphorePermit>), Refusal> {
    if head_size(method, uri, headers) > s.max_header_bytes {
        return Err(Refusal::HeadTooLarge);
    }
    if method != Method::POST {
        return Err(Refusal::MethodNotAllowed);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body_bytes as u64) {
        return Err(Refusal::TooLarge);
    }
    let mut reserved = None;
    let declared = declared.map(|n| n as usize);
    if let Some(n) = declared {
        if !s.body_budget.reserve(&mut reserved, n) {
            return Err(Refusal::Overloaded);
        }
    }
    let collect = async {
        let mut body = body;
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Refusal::Unreadable("body could not be read"))?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + chunk.len() > s.max_body_bytes {
                return Err(Refusal::TooLarge);
            }
            // A chunked body reserves as it comes; a declared one reserved it all up front
            // (hyper never yields more than Content-Length).
            if declared.is_none() && !s.body_budget.reserve(&mut reserved, chunk.len()) {
                return Err(Refusal::Overloaded);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(s.read_timeout, collect).await {
        Err(_) => Err(Refusal::Timeout),
        Ok(Err(r)) => Err(r),
        Ok(Ok(b)) => Ok((b, reserved)),
    }
}
