//! OpenTelemetry traces (`[otel]`): the existing `tracing` spans — the request span of each
//! webhook request or long-connection frame — are bridged to OTLP by `tracing-opentelemetry`,
//! with children for verify, dedup reserve, publish and commit created only here (target
//! [`TARGET`], never shown in logs). The publish span's W3C trace context goes into the message
//! (CloudEvents distributed-tracing extension), so a consumer's span joins the trace.
//!
//! Off (no endpoint) costs nothing per request: the layer is not installed, the child spans are
//! not created and no `traceparent` is formatted — every hot-path use first asks [`enabled`],
//! one atomic load. The provider is process-global, as the `tracing` subscriber it feeds is.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

use crate::config::{LogConfig, OtelConfig, OtelProtocol};
use crate::metrics::Outcome;
use lark_protocol::event::TraceContext;

/// The target of the spans that exist for traces only (verify, reserve, publish, commit).
pub const TARGET: &str = "lark_bridge::otel";

/// Set once the OTLP layer is installed; its presence is what "traces on" means.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Why traces could not be set up; start-up stops with it.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter could not be built from `otel.*`.
    #[error("otel.endpoint: cannot build the OTLP {protocol} exporter: {reason}")]
    Exporter {
        /// `http` or `grpc`.
        protocol: &'static str,
        /// The exporter's message.
        reason: String,
    },
    /// A global `tracing` subscriber was installed before (a second bridge in one process).
    #[error("otel: a tracing subscriber is already installed in this process")]
    AlreadyInstalled,
}

/// Whether traces are exported (the OTLP layer is installed).
#[inline]
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Install the global subscriber: logs as `log` says, plus the OTLP layer when `otel` has an
/// endpoint. Call once, inside the Tokio runtime (the exporters run their I/O on it). Without
/// an endpoint this is exactly [`crate::logging::init`].
pub fn init(log: &LogConfig, otel: &OtelConfig) -> Result<(), TelemetryError> {
    let Some(url) = &otel.export_url else {
        crate::logging::init(log);
        return Ok(());
    };
    if PROVIDER.get().is_some() {
        return Err(TelemetryError::AlreadyInstalled);
    }
    let exporter = exporter(otel.protocol(), url)?;
    let mut resource = Resource::builder_empty()
        .with_service_name(otel.service_name().to_string())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    for (k, v) in &otel.resource_attributes {
        if k != "service.name" {
            resource = resource.with_attribute(KeyValue::new(k.clone(), v.clone()));
        }
    }
    let provider = SdkTracerProvider::builder()
        // The batch processor (its own thread; `OTEL_BSP_*` tune it): a request never waits
        // for the collector, and a dead collector only drops spans.
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otel.sample_ratio(),
        ))))
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("lark-bridge"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        // Spans only, and only ours: no log line becomes a span event (a peer-controlled
        // message or a client library's error text never reaches the collector).
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span()
                && (m.target() == TARGET
                    || (matches!(m.name(), "request" | "event")
                        && m.target().starts_with("lark_bridge::entrance")))
        }));
    if !crate::logging::init_with(log, Some(Box::new(layer))) {
        return Err(TelemetryError::AlreadyInstalled);
    }
    let _ = PROVIDER.set(provider);
    tracing::info!(
        endpoint = %crate::secrets::redact_url(url.as_str()),
        protocol = ?otel.protocol(),
        service_name = otel.service_name(),
        sample_ratio = otel.sample_ratio(),
        "exporting traces"
    );
    Ok(())
}

fn exporter(
    protocol: OtelProtocol,
    url: &url::Url,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let fail = |protocol: &'static str| {
        move |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
            protocol,
            reason: crate::secrets::scrub_known(e.to_string()),
        }
    };
    match protocol {
        OtelProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ReqwestClient::new().map_err(|e| TelemetryError::Exporter {
                protocol: "http",
                reason: e.to_string(),
            })?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .build()
            .map_err(fail("http")),
        OtelProtocol::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(Protocol::Grpc)
                .with_endpoint(url.as_str());
            let b = if url.scheme() == "https" {
                b.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_webpki_roots(),
                )
            } else {
                b
            };
            b.build().map_err(fail("grpc"))
        }
    }
}

/// The OTLP/HTTP exporter's client: the bridge's own reqwest (rustls), its requests run on the
/// Tokio runtime. The batch processor calls it from its own thread through a plain executor,
/// where a Tokio-bound future could not make progress, so each request is spawned onto the
/// runtime and only its handle awaited.
#[derive(Debug, Clone)]
struct ReqwestClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ReqwestClient {
    fn new() -> Result<ReqwestClient, reqwest::Error> {
        Ok(ReqwestClient {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestClient {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let call = async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut out = axum::http::Response::builder().status(response.status());
            if let Some(h) = out.headers_mut() {
                *h = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(out.body(body)?)
        };
        self.runtime.spawn(call).await?
    }
}

/// Export what the batch processor holds (the planned shutdown calls it after the last request;
/// bounded by `within`). Off the runtime's threads: the export itself runs on the runtime.
pub async fn flush(within: Duration) {
    let Some(p) = PROVIDER.get() else { return };
    let p = p.clone();
    let done = tokio::task::spawn_blocking(move || p.force_flush());
    match tokio::time::timeout(within, done).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not export the last spans"),
        _ => tracing::warn!("exporting the last spans did not finish in time"),
    }
}

/// Flush and stop the exporter (the process is about to exit).
pub async fn shutdown(within: Duration) {
    let Some(p) = PROVIDER.get() else { return };
    let p = p.clone();
    let done = tokio::task::spawn_blocking(move || p.shutdown_with_timeout(within));
    let _ = tokio::time::timeout(within + Duration::from_secs(1), done).await;
}

/// The W3C trace context naming `span` (the publish span), sampled or not: an unsampled trace
/// is still propagated, with flags `00`, so the consumer does not start a new sampled trace of
/// its own (W3C Trace Context §3.2). `None` when the span has no valid context (traces off).
pub fn trace_context(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some(TraceContext {
        traceparent: format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8() & 1
        ),
        tracestate: (!state.is_empty()).then_some(state),
    })
}

/// Continue the caller's trace: `span`'s parent becomes the W3C `traceparent` (and
/// `tracestate`) of `headers`, if valid. Call before the span is first entered.
pub fn set_parent_from(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::propagation::TextMapPropagator;
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Record the request's outcome on its span (at its end): the `outcome` label, the answer's
/// status code, and an error status for the answers that ask Lark to retry.
pub fn record_outcome(span: &tracing::Span, outcome: Outcome, status: u16) {
    span.set_attribute("outcome", outcome.as_str());
    span.set_attribute("status", i64::from(status));
    if matches!(outcome, Outcome::Unavailable | Outcome::Overloaded) {
        span.set_status(Status::error(outcome.as_str()));
    }
}

/// Mark a step's span (`outcome` field) and, for a failure, its status.
pub fn step_outcome(span: &tracing::Span, outcome: &'static str, failed: bool) {
    span.record("outcome", outcome);
    if failed {
        span.set_status(Status::error(outcome));
    }
}

/// A span for traces only (target [`TARGET`]), child of the current span; a disabled span
/// when traces are off, so the hot path pays one atomic load.
macro_rules! step_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        if $crate::telemetry::enabled() {
            tracing::info_span!(target: "lark_bridge::otel", $name, outcome = tracing::field::Empty $(, $($fields)*)?)
        } else {
            tracing::Span::none()
        }
    };
}
pub(crate) use step_span;
