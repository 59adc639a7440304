//! The webhook entrance: an axum handler that applies the HTTP-level checks of
//! lark-protocol.md §6 (overload, method, size, read timeout), hands the raw body to
//! [`lark_protocol::Verifier`], and the verified event to the [`Pipeline`]. Every answer is JSON.

use std::sync::atomic::{AtomicUsize, Ordering};
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
use tracing::Instrument;

use crate::metrics::{Metrics, Outcome, Source};
use crate::pipeline::{detached, Pipeline, PipelineError, Processed};
use lark_protocol::{Inbound, Rejection, SignatureHeaders, Verifier};

/// What the webhook handler needs.
pub struct IngressState {
    pub verifier: Verifier,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub budget: Duration,
    pub read_timeout: Duration,
    pub max_in_flight: usize,
    pub in_flight: AtomicUsize,
    /// Largest request head; larger → 431 (JSON, outcome `bad_request`). hyper's own buffer
    /// is four times this (≥ 64 KiB), so only absurd heads get hyper's bare 431.
    pub max_header_bytes: usize,
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

/// The span of a request that never became an event (its fields stay empty).
fn request_span() -> tracing::Span {
    tracing::info_span!(
        "request",
        source = "webhook",
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
    )
}

/// Decrements the in-flight count however the request ends.
struct InFlight<'a>(&'a IngressState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.in_flight.dec();
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
    let (outcome, response) = handle(&s, started, method, uri, headers, body, &mut span).await;
    let span = span.unwrap_or_else(request_span);
    let elapsed = started.elapsed();
    s.metrics.request(Source::Webhook, outcome, elapsed);
    let _e = span.enter();
    tracing::info!(
        outcome = outcome.as_str(),
        status = response.status().as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request finished"
    );
    response
}

async fn handle(
    s: &IngressState,
    started: Instant,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
    span: &mut Option<tracing::Span>,
) -> (Outcome, Response) {
    // Overload first: shedding must cost nothing.
    if s.in_flight.fetch_add(1, Ordering::AcqRel) >= s.max_in_flight {
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
        return (
            Outcome::Overloaded,
            reply(StatusCode::SERVICE_UNAVAILABLE, "overloaded, retry later"),
        );
    }
    s.metrics.in_flight.inc();
    let _guard = InFlight(s);

    if head_size(&method, &uri, &headers) > s.max_header_bytes {
        return (
            Outcome::BadRequest,
            reply(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head is larger than server.max_header_bytes",
            ),
        );
    }
    if method != Method::POST {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed, use POST",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return (Outcome::MethodNotAllowed, r);
    }
    let too_large = || {
        (
            Outcome::TooLarge,
            reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body is larger than server.max_body_bytes",
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body_bytes as u64) {
        return too_large();
    }
    let read = tokio::time::timeout(
        s.read_timeout,
        http_body_util::Limited::new(body, s.max_body_bytes).collect(),
    )
    .await;
    let bytes = match read {
        Err(_) => {
            return (
                Outcome::RequestTimeout,
                reply(
                    StatusCode::REQUEST_TIMEOUT,
                    "body did not arrive within server.read_timeout_ms",
                ),
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(_)) => {
            return (
                Outcome::BadRequest,
                reply(StatusCode::BAD_REQUEST, "body could not be read"),
            )
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    s.metrics.body_bytes.observe(bytes.len() as f64);

    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sig = SignatureHeaders {
        timestamp: h("x-lark-request-timestamp"),
        nonce: h("x-lark-request-nonce"),
        signature: h("x-lark-signature"),
    };
    let now = chrono::Utc::now().timestamp();
    let inbound = match s.verifier.verify(sig, &bytes, now) {
        Ok(i) => i,
        Err(rej) => {
            s.metrics
                .verification_failures
                .with_label_values(&[rej.reason().as_str()])
                .inc();
            return match rej {
                Rejection::BadRequest { msg, .. } => {
                    (Outcome::BadRequest, reply(StatusCode::BAD_REQUEST, msg))
                }
                Rejection::Unauthorized { msg, .. } => {
                    (Outcome::Unauthorized, reply(StatusCode::UNAUTHORIZED, msg))
                }
            };
        }
    };
    let ev = match inbound {
        Inbound::Challenge(c) => {
            return (
                Outcome::Challenge,
                (StatusCode::OK, axum::Json(json!({ "challenge": c }))).into_response(),
            )
        }
        Inbound::Event(ev) => ev,
    };
    let request = tracing::info_span!(
        "request",
        source = "webhook",
        event_id = ev.event_id(),
        event_type = ev.event_type(),
    );
    *span = Some(request.clone());

    // Detached, so that a client hanging up cannot cancel the walk between publish and commit.
    let deadline = started + s.budget;
    let walk = s.pipeline.clone().process(ev, deadline).instrument(request);
    match detached(walk).await {
        Some(Ok(p)) => {
            let outcome = match p {
                Processed::Published => Outcome::Published,
                Processed::Duplicate => Outcome::Duplicate,
                Processed::Ignored => Outcome::Ignored,
                Processed::Forwarded => Outcome::Forwarded,
            };
            (outcome, reply(StatusCode::OK, "success"))
        }
        Some(Err(PipelineError::BadEvent(e))) => {
            s.metrics
                .verification_failures
                .with_label_values(&["parse"])
                .inc();
            (
                Outcome::BadRequest,
                reply(StatusCode::BAD_REQUEST, &e.to_string()),
            )
        }
        Some(Err(PipelineError::Unavailable(msg))) => (
            Outcome::Unavailable,
            reply(StatusCode::SERVICE_UNAVAILABLE, msg),
        ),
        None => (
            Outcome::Unavailable,
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal error, retry later",
            ),
        ),
    }
}
