//! Every metric, defined once, on a registry the app owns (served at `/metrics` on the admin
//! listener). Names are fixed in decisions.md; label values come only from closed sets, and every
//! series is created at start-up so dashboards never reference a series that does not exist yet.
//!
//! [`Metrics`] is built first, from the configured entrance, sink and store names, and the
//! series the hot path touches are resolved then ([`Hot`]): no label lookup per request. What
//! happens on the hot path is reported through the event methods at the bottom (as Vector's
//! internal events do), each emitting its counter and its log line together.
//!
//! Over 600 lines on purpose: one file is the single place a metric is named, registered,
//! pre-created and reported, which is what keeps the names, the dashboards and the README list
//! in step (tests/contract.rs checks the README against it).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use lark_protocol::FailReason;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    LongConnection,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Webhook, Source::LongConnection];
    fn index(self) -> usize {
        self as usize
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::LongConnection => "long_connection",
        }
    }
}

/// How a request ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published,
    Duplicate,
    Challenge,
    Ignored,
    Forwarded,
    BadRequest,
    Unauthorized,
    MethodNotAllowed,
    TooLarge,
    RequestTimeout,
    Unavailable,
    Overloaded,
    DeadLettered,
}

impl Outcome {
    fn index(self) -> usize {
        self as usize
    }
    pub const ALL: [Outcome; 13] = [
        Outcome::Published,
        Outcome::Duplicate,
        Outcome::Challenge,
        Outcome::Ignored,
        Outcome::Forwarded,
        Outcome::BadRequest,
        Outcome::Unauthorized,
        Outcome::MethodNotAllowed,
        Outcome::TooLarge,
        Outcome::RequestTimeout,
        Outcome::Unavailable,
        Outcome::Overloaded,
        Outcome::DeadLettered,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Duplicate => "duplicate",
            Outcome::Challenge => "challenge",
            Outcome::Ignored => "ignored",
            Outcome::Forwarded => "forwarded",
            Outcome::BadRequest => "bad_request",
            Outcome::Unauthorized => "unauthorized",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::TooLarge => "too_large",
            Outcome::RequestTimeout => "request_timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::Overloaded => "overloaded",
            Outcome::DeadLettered => "deadlettered",
        }
    }
}

pub const PUBLISH_RESULTS: [&str; 3] = ["ok", "error", "timeout"];
pub const DEDUP_RESULTS: [&str; 4] = ["new", "duplicate", "in_flight", "error"];
pub const DEDUP_OPS: [&str; 3] = ["reserve", "commit", "release"];
pub const NORMALIZE_FIELDS: [&str; 4] = ["time", "created_at", "updated_at", "closed_at"];

/// Buckets that resolve 1 ms to 3 s (Lark's budget), in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0,
];

/// The `listener` label values.
pub const LISTENERS: [&str; 2] = ["webhook", "admin"];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub verification_failures: IntCounterVec,
    pub publish: IntCounterVec,
    pub publish_duration: HistogramVec,
    pub dedup: IntCounterVec,
    pub dedup_store_errors: IntCounterVec,
    pub dedup_store_duration: HistogramVec,
    pub dedup_commit_failures: IntCounterVec,
    pub dedup_lost_races: IntCounterVec,
    pub dedup_evictions: IntCounter,
    pub in_flight: IntGauge,
    pub sink_up: IntGaugeVec,
    pub dedup_store_up: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub normalize_warnings: IntCounterVec,
    pub unverified_mode: IntGauge,
    pub body_bytes: Histogram,
    pub source_info: IntGaugeVec,
    /// `lark_bridge_dedup_info{backend,mode}`: 1 for this replica's store and how it reaches it.
    pub dedup_info: IntGaugeVec,
    pub deadletters: IntCounterVec,
    /// `lark_bridge_enrich_total{result}`: enrichment attempts (`enrich.ticket_detail`).
    pub enrich: IntCounterVec,
    /// `lark_bridge_lark_api_requests_total{api,result}`: HTTP calls to Lark's open API.
    pub lark_api_requests: IntCounterVec,
    pub longconn: LongConnMetrics,
    /// `lark_bridge_connections{listener}`: open connections per listener.
    pub connections: IntGaugeVec,
    /// `lark_bridge_connections_shed_total{listener}`: connections closed at the cap because
    /// they had not sent a complete head.
    pub connections_shed: IntCounterVec,
    /// The series the hot path uses, resolved once for the configured names.
    hot: Hot,
}

/// Handles resolved at start-up for the configured sink and store (a `with_label_values`
/// lookup hashes the labels and takes a lock; per request that showed in the profiles).
struct Hot {
    /// `[source][outcome]` → requests counter and duration histogram.
    requests: Vec<Vec<(IntCounter, Histogram)>>,
    verification: Vec<(FailReason, IntCounter)>,
    publish_ok: IntCounter,
    publish_error: IntCounter,
    publish_timeout: IntCounter,
    publish_duration: Histogram,
    dedup_new: IntCounter,
    dedup_duplicate: IntCounter,
    dedup_in_flight: IntCounter,
    dedup_error: IntCounter,
    store_errors: IntCounter,
    store_duration: [Histogram; 3],
    commit_failures: IntCounter,
    lost_commit: IntCounter,
    lost_release: IntCounter,
    warnings: Vec<(&'static str, IntCounter)>,
}

/// A dedup store operation (the `op` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Reserve,
    Commit,
    Release,
}

/// What a reservation found (the `result` label of `lark_bridge_dedup_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupResult {
    New,
    Duplicate,
    InFlight,
    Error,
}

/// How a publish ended (the `result` label of `lark_bridge_publish_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult {
    Ok,
    Error,
    Timeout,
}

/// Long-connection metrics (issue 9), registered in every mode so the series always exist.
pub struct LongConnMetrics {
    pub connected: IntGauge,
    pub connects: IntCounter,
    pub reconnects: IntCounterVec,
    pub frames: IntCounterVec,
    pub replies: IntCounterVec,
    pub fragments: IntCounterVec,
    pub ping_rtt: Histogram,
}

pub const RECONNECT_REASONS: [&str; 7] = [
    "closed",
    "read_error",
    "pong_timeout",
    "write_stalled",
    "discovery_failed",
    "handshake_failed",
    "server_error",
];
pub const FRAME_KINDS: [&str; 6] = [
    "in_event",
    "in_card",
    "in_pong",
    "in_other",
    "out_ping",
    "out_reply",
];
/// The `result` label of `lark_bridge_enrich_total`.
pub const ENRICH_RESULTS: [&str; 3] = ["ok", "timeout", "error"];
/// The `api` label of `lark_bridge_lark_api_requests_total`.
pub const LARK_APIS: [&str; 4] = ["tenant_token", "subscribe", "unsubscribe", "ticket_detail"];
/// The `result` label of `lark_bridge_lark_api_requests_total`: `ok`; `error` (Lark answered
/// with an error: a non-zero `code` or a 4xx); `unavailable` (network error or 5xx, retried);
/// `timeout`.
pub const LARK_API_RESULTS: [&str; 4] = ["ok", "error", "unavailable", "timeout"];
pub const REPLY_CODES: [&str; 3] = ["200", "400", "500"];
pub const FRAGMENT_RESULTS: [&str; 3] = ["assembled", "dropped_timeout", "dropped_size"];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    /// Register everything and create every series for the configured entrance, sink and dedup
    /// backend; built before the components, which may take their handles from it.
    pub fn new(source: Source, sink: &str, backend: &str) -> Metrics {
        let mode = if backend == "memory" {
            "in_process"
        } else {
            "standalone"
        };
        Self::with_dedup_mode(source, sink, backend, mode)
    }

    /// [`Metrics::new`] for a store reached in `mode` (`dedup.redis.mode`; see
    /// [`crate::config::DedupConfig::mode_label`]).
    pub fn with_dedup_mode(source: Source, sink: &str, backend: &str, mode: &str) -> Metrics {
        let r = Registry::new();
        let requests: IntCounterVec = counter_vec(
            &r,
            "lark_bridge_requests_total",
            "Requests by source and outcome.",
            &["source", "outcome"],
        );
        let request_duration = histogram_vec(
            &r,
            "lark_bridge_request_duration_seconds",
            "Time from request to answer.",
            &["source", "outcome"],
        );
        let verification_failures = counter_vec(
            &r,
            "lark_bridge_verification_failures_total",
            "Requests refused by verification, by reason.",
            &["reason"],
        );
        let publish = counter_vec(
            &r,
            "lark_bridge_publish_total",
            "Publish attempts by sink and result.",
            &["sink", "result"],
        );
        let publish_duration = histogram_vec(
            &r,
            "lark_bridge_publish_duration_seconds",
            "Time from publish to broker acknowledgement.",
            &["sink"],
        );
        let dedup = counter_vec(
            &r,
            "lark_bridge_dedup_total",
            "Dedup reservations by result.",
            &["backend", "result"],
        );
        let dedup_store_errors = counter_vec(
            &r,
            "lark_bridge_dedup_store_errors_total",
            "Dedup store operations that failed or timed out.",
            &["backend"],
        );
        let dedup_store_duration = histogram_vec(
            &r,
            "lark_bridge_dedup_store_duration_seconds",
            "Dedup store latency by operation.",
            &["backend", "op"],
        );
        let dedup_commit_failures = counter_vec(
            &r,
            "lark_bridge_dedup_commit_failures_total",
            "Commits that failed after the broker acknowledged (a redelivery may publish again).",
            &["backend"],
        );
        let dedup_lost_races = counter_vec(
            &r,
            "lark_bridge_dedup_lost_races_total",
            "Commits or releases that found the reservation taken over.",
            &["backend", "op"],
        );
        let normalize_warnings = counter_vec(
            &r,
            "lark_bridge_normalize_warnings_total",
            "Unusable fields published as null.",
            &["field"],
        );
        let hot = Hot {
            requests: Source::ALL
                .iter()
                .map(|s| {
                    Outcome::ALL
                        .iter()
                        .map(|o| {
                            let l = [s.as_str(), o.as_str()];
                            (
                                requests.with_label_values(&l),
                                request_duration.with_label_values(&l),
                            )
                        })
                        .collect()
                })
                .collect(),
            verification: FailReason::ALL
                .iter()
                .map(|r| (*r, verification_failures.with_label_values(&[r.as_str()])))
                .collect(),
            publish_ok: publish.with_label_values(&[sink, "ok"]),
            publish_error: publish.with_label_values(&[sink, "error"]),
            publish_timeout: publish.with_label_values(&[sink, "timeout"]),
            publish_duration: publish_duration.with_label_values(&[sink]),
            dedup_new: dedup.with_label_values(&[backend, "new"]),
            dedup_duplicate: dedup.with_label_values(&[backend, "duplicate"]),
            dedup_in_flight: dedup.with_label_values(&[backend, "in_flight"]),
            dedup_error: dedup.with_label_values(&[backend, "error"]),
            store_errors: dedup_store_errors.with_label_values(&[backend]),
            store_duration: DEDUP_OPS
                .map(|op| dedup_store_duration.with_label_values(&[backend, op])),
            commit_failures: dedup_commit_failures.with_label_values(&[backend]),
            lost_commit: dedup_lost_races.with_label_values(&[backend, "commit"]),
            lost_release: dedup_lost_races.with_label_values(&[backend, "release"]),
            warnings: NORMALIZE_FIELDS
                .iter()
                .map(|f| (*f, normalize_warnings.with_label_values(&[f])))
                .collect(),
        };
        let m = Metrics {
            hot,
            requests,
            request_duration,
            verification_failures,
            publish,
            publish_duration,
            dedup,
            dedup_store_errors,
            dedup_store_duration,
            dedup_commit_failures,
            dedup_lost_races,
            normalize_warnings,
            deadletters: counter_vec(&r, "lark_bridge_deadletter_total", "Verified events the normalizer refused, published as dead letters, by event type and reason kind.", &["event_type", "reason"]),
            enrich: counter_vec(
                &r,
                "lark_bridge_enrich_total",
                "Ticket-detail enrichments by result (ok, timeout, error); the event is published either way.",
                &["result"],
            ),
            lark_api_requests: counter_vec(
                &r,
                "lark_bridge_lark_api_requests_total",
                "HTTP calls to Lark's open API by API and result (ok, error, unavailable, timeout).",
                &["api", "result"],
            ),
            dedup_info: gauge_vec(
                &r,
                "lark_bridge_dedup_info",
                "1 for the dedup store in use: its backend and mode (standalone, cluster, sentinel, in_process).",
                &["backend", "mode"],
            ),
            source_info: gauge_vec(
                &r,
                "lark_bridge_source_info",
                "1 for the entrance this replica runs (source.kind): webhook or long_connection.",
                &["source"],
            ),
            dedup_evictions: counter(
                &r,
                "lark_bridge_dedup_evictions_total",
                "Committed ids evicted from the full memory store before their TTL.",
            ),
            in_flight: gauge(
                &r,
                "lark_bridge_in_flight_requests",
                "Requests being processed.",
            ),
            sink_up: gauge_vec(
                &r,
                "lark_bridge_sink_up",
                "1 when the sink is reachable.",
                &["sink"],
            ),
            dedup_store_up: gauge_vec(
                &r,
                "lark_bridge_dedup_store_up",
                "1 when the dedup store is reachable.",
                &["backend"],
            ),
            build_info: gauge_vec(
                &r,
                "lark_bridge_build_info",
                "Build information.",
                &["version", "git_sha"],
            ),
            unverified_mode: gauge(
                &r,
                "lark_bridge_unverified_mode",
                "1 when running with neither encrypt key nor verification token.",
            ),
            body_bytes: {
                let h = Histogram::with_opts(
                    HistogramOpts::new("lark_bridge_request_body_bytes", "Size of request bodies.")
                        .buckets(vec![
                            256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                        ]),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            connections: {
                let g = gauge_vec(
                    &r,
                    "lark_bridge_connections",
                    "Open connections, per listener (webhook, admin).",
                    &["listener"],
                );
                for l in LISTENERS {
                    g.with_label_values(&[l]);
                }
                g
            },
            connections_shed: {
                let c = counter_vec(
                    &r,
                    "lark_bridge_connections_shed_total",
                    "Connections closed at the listener's cap because they had not sent a complete request head.",
                    &["listener"],
                );
                for l in LISTENERS {
                    c.with_label_values(&[l]);
                }
                c
            },
            longconn: LongConnMetrics {
                connected: gauge(
                    &r,
                    "lark_bridge_longconn_connected",
                    "1 while the long connection is up.",
                ),
                connects: counter(
                    &r,
                    "lark_bridge_longconn_connects_total",
                    "Successful long-connection handshakes.",
                ),
                reconnects: counter_vec(
                    &r,
                    "lark_bridge_longconn_reconnects_total",
                    "Reconnects by reason.",
                    &["reason"],
                ),
                frames: counter_vec(
                    &r,
                    "lark_bridge_longconn_frames_total",
                    "Frames by direction and type.",
                    &["kind"],
                ),
                replies: counter_vec(
                    &r,
                    "lark_bridge_longconn_replies_total",
                    "Replies sent by code.",
                    &["code"],
                ),
                fragments: counter_vec(
                    &r,
                    "lark_bridge_longconn_fragments_total",
                    "Fragmented messages by result.",
                    &["result"],
                ),
                ping_rtt: {
                    let h = Histogram::with_opts(
                        HistogramOpts::new(
                            "lark_bridge_longconn_ping_rtt_seconds",
                            "Ping to pong time.",
                        )
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    )
                    .expect("valid metric");
                    r.register(Box::new(h.clone())).expect("unique metric");
                    h
                },
            },
            registry: r,
        };
        for s in Source::ALL {
            for o in Outcome::ALL {
                m.requests.with_label_values(&[s.as_str(), o.as_str()]);
                m.request_duration
                    .with_label_values(&[s.as_str(), o.as_str()]);
            }
        }
        for reason in FailReason::ALL {
            m.verification_failures
                .with_label_values(&[reason.as_str()]);
        }
        for res in PUBLISH_RESULTS {
            m.publish.with_label_values(&[sink, res]);
        }
        m.publish_duration.with_label_values(&[sink]);
        for res in DEDUP_RESULTS {
            m.dedup.with_label_values(&[backend, res]);
        }
        m.dedup_store_errors.with_label_values(&[backend]);
        m.dedup_commit_failures.with_label_values(&[backend]);
        for op in DEDUP_OPS {
            m.dedup_store_duration.with_label_values(&[backend, op]);
        }
        for op in ["commit", "release"] {
            m.dedup_lost_races.with_label_values(&[backend, op]);
        }
        m.source_info.with_label_values(&[source.as_str()]).set(1);
        m.dedup_info.with_label_values(&[backend, mode]).set(1);
        for event_type in lark_protocol::normalize::HELPDESK_EVENTS {
            for kind in lark_protocol::normalize::NormalizeError::KINDS {
                m.deadletters.with_label_values(&[event_type, kind]);
            }
        }
        m.sink_up.with_label_values(&[sink]).set(0);
        m.dedup_store_up.with_label_values(&[backend]).set(0);
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("LARK_BRIDGE_GIT_SHA")])
            .set(1);
        for f in NORMALIZE_FIELDS {
            m.normalize_warnings.with_label_values(&[f]);
        }
        for r in ENRICH_RESULTS {
            m.enrich.with_label_values(&[r]);
        }
        for api in LARK_APIS {
            for r in LARK_API_RESULTS {
                m.lark_api_requests.with_label_values(&[api, r]);
            }
        }
        for r in RECONNECT_REASONS {
            m.longconn.reconnects.with_label_values(&[r]);
        }
        for k in FRAME_KINDS {
            m.longconn.frames.with_label_values(&[k]);
        }
        for c in REPLY_CODES {
            m.longconn.replies.with_label_values(&[c]);
        }
        for f in FRAGMENT_RESULTS {
            m.longconn.fragments.with_label_values(&[f]);
        }
        m
    }

    /// Count a finished request (the entrance's `finish` logs it).
    pub fn request(&self, source: Source, outcome: Outcome, elapsed: std::time::Duration) {
        let (count, duration) = &self.hot.requests[source.index()][outcome.index()];
        count.inc();
        duration.observe(elapsed.as_secs_f64());
    }

    /// A request refused by verification (the entrance logs the answer).
    pub fn verification_failed(&self, reason: FailReason) {
        if let Some((_, c)) = self.hot.verification.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }

    /// Unusable fields of one event, published as null.
    pub fn normalize_warnings(&self, fields: &[&'static str]) {
        for f in fields {
            if let Some((_, c)) = self.hot.warnings.iter().find(|(n, _)| n == f) {
                c.inc();
            }
        }
    }

    /// A reservation's result.
    pub fn dedup_reserved(&self, result: DedupResult) {
        match result {
            DedupResult::New => &self.hot.dedup_new,
            DedupResult::Duplicate => &self.hot.dedup_duplicate,
            DedupResult::InFlight => &self.hot.dedup_in_flight,
            DedupResult::Error => &self.hot.dedup_error,
        }
        .inc();
    }

    /// How long a store operation took.
    pub fn store_latency(&self, op: StoreOp, elapsed: std::time::Duration) {
        let i = match op {
            StoreOp::Reserve => 0,
            StoreOp::Commit => 1,
            StoreOp::Release => 2,
        };
        self.hot.store_duration[i].observe(elapsed.as_secs_f64());
    }

    /// A store operation failed or timed out: counted, and logged once with the error.
    pub fn store_failed(&self, op: StoreOp, backend: &str, error: &dyn std::fmt::Display) {
        self.hot.store_errors.inc();
        match op {
            StoreOp::Reserve => tracing::warn!(error = %error, backend, "dedup reserve failed"),
            StoreOp::Commit => {
                self.hot.commit_failures.inc();
                tracing::warn!(error = %error, backend, "dedup commit failed after the broker acknowledged");
            }
            StoreOp::Release => {
                tracing::debug!(error = %error, backend, "dedup release failed; the lease expires on its own")
            }
        }
    }

    /// A commit or release found its reservation taken over by another replica.
    pub fn lost_race(&self, op: StoreOp) {
        match op {
            StoreOp::Commit => self.hot.lost_commit.inc(),
            StoreOp::Release => self.hot.lost_release.inc(),
            StoreOp::Reserve => {}
        }
    }

    /// A publish ended: counted, timed, and a failure logged with its error.
    pub fn published(
        &self,
        result: PublishResult,
        sink: &str,
        elapsed: std::time::Duration,
        error: Option<&dyn std::fmt::Display>,
    ) {
        self.hot.publish_duration.observe(elapsed.as_secs_f64());
        match result {
            PublishResult::Ok => self.hot.publish_ok.inc(),
            PublishResult::Error => self.hot.publish_error.inc(),
            PublishResult::Timeout => self.hot.publish_timeout.inc(),
        }
        if let Some(e) = error {
            tracing::warn!(error = %e, sink, "publish failed");
        }
    }

    /// A verified event the normalizer refused was published as a dead letter: counted by
    /// event type and reason kind, and logged with the reason.
    pub fn dead_lettered(
        &self,
        event_type: &str,
        kind: &'static str,
        reason: &dyn std::fmt::Display,
    ) {
        self.deadletters
            .with_label_values(&[event_type, kind])
            .inc();
        tracing::warn!(reason = %reason, reason_kind = kind, "event dead-lettered: the normalizer refused it; redrive it after a fix");
    }

    /// The counter the memory store bumps when it evicts a committed id early.
    pub fn evictions_counter(&self) -> IntCounter {
        self.dedup_evictions.clone()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        if crate::alloc_count::enabled() {
            // Benchmarks only (`LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1`): not a metric to alert
            // on, so not in the registry or the docs' metric list.
            let a = crate::alloc_count::AllocStats::now();
            text.push_str(&format!(
                "# HELP lark_bridge_bench_allocations_total Heap allocations since start (only with LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1).\n\
                 # TYPE lark_bridge_bench_allocations_total counter\n\
                 lark_bridge_bench_allocations_total {}\n\
                 # HELP lark_bridge_bench_allocated_bytes_total Bytes asked of the allocator since start (only with LARK_BRIDGE_BENCH_COUNT_ALLOCATIONS=1).\n\
                 # TYPE lark_bridge_bench_allocated_bytes_total counter\n\
                 lark_bridge_bench_allocated_bytes_total {}\n",
                a.calls, a.bytes
            ));
        }
        text
    }
}
