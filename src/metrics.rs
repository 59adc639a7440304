//! Every metric, defined once, on a registry the app owns (served at `/metrics` on the admin
//! listener). Names are fixed in decisions.md; label values come only from closed sets, and every
//! series is created at start-up so dashboards never reference a series that does not exist yet.

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
}

impl Outcome {
    pub const ALL: [Outcome; 12] = [
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
    pub longconn: LongConnMetrics,
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

pub const RECONNECT_REASONS: [&str; 6] = [
    "closed",
    "read_error",
    "pong_timeout",
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
    /// Register everything and create every series for the configured sink and dedup backend.
    pub fn new(sink: &str, backend: &str) -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            requests: counter_vec(&r, "lark_bridge_requests_total", "Requests by source and outcome.", &["source", "outcome"]),
            request_duration: histogram_vec(&r, "lark_bridge_request_duration_seconds", "Time from request to answer.", &["source", "outcome"]),
            verification_failures: counter_vec(&r, "lark_bridge_verification_failures_total", "Requests refused by verification, by reason.", &["reason"]),
            publish: counter_vec(&r, "lark_bridge_publish_total", "Publish attempts by sink and result.", &["sink", "result"]),
            publish_duration: histogram_vec(&r, "lark_bridge_publish_duration_seconds", "Time from publish to broker acknowledgement.", &["sink"]),
            dedup: counter_vec(&r, "lark_bridge_dedup_total", "Dedup reservations by result.", &["backend", "result"]),
            dedup_store_errors: counter_vec(&r, "lark_bridge_dedup_store_errors_total", "Dedup store operations that failed or timed out.", &["backend"]),
            dedup_store_duration: histogram_vec(&r, "lark_bridge_dedup_store_duration_seconds", "Dedup store latency by operation.", &["backend", "op"]),
            dedup_commit_failures: counter_vec(&r, "lark_bridge_dedup_commit_failures_total", "Commits that failed after the broker acknowledged (a redelivery may publish again).", &["backend"]),
            dedup_lost_races: counter_vec(&r, "lark_bridge_dedup_lost_races_total", "Commits or releases that found the reservation taken over.", &["backend", "op"]),
            dedup_evictions: counter(&r, "lark_bridge_dedup_evictions_total", "Committed ids evicted from the full memory store before their TTL."),
            in_flight: gauge(&r, "lark_bridge_in_flight_requests", "Requests being processed."),
            sink_up: gauge_vec(&r, "lark_bridge_sink_up", "1 when the sink is reachable.", &["sink"]),
            dedup_store_up: gauge_vec(&r, "lark_bridge_dedup_store_up", "1 when the dedup store is reachable.", &["backend"]),
            build_info: gauge_vec(&r, "lark_bridge_build_info", "Build information.", &["version", "git_sha"]),
            normalize_warnings: counter_vec(&r, "lark_bridge_normalize_warnings_total", "Unusable fields published as null.", &["field"]),
            unverified_mode: gauge(&r, "lark_bridge_unverified_mode", "1 when running with neither encrypt key nor verification token."),
            body_bytes: {
                let h = Histogram::with_opts(
                    HistogramOpts::new("lark_bridge_request_body_bytes", "Size of request bodies.")
                        .buckets(vec![256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0]),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            longconn: LongConnMetrics {
                connected: gauge(&r, "lark_bridge_longconn_connected", "1 while the long connection is up."),
                connects: counter(&r, "lark_bridge_longconn_connects_total", "Successful long-connection handshakes."),
                reconnects: counter_vec(&r, "lark_bridge_longconn_reconnects_total", "Reconnects by reason.", &["reason"]),
                frames: counter_vec(&r, "lark_bridge_longconn_frames_total", "Frames by direction and type.", &["kind"]),
                replies: counter_vec(&r, "lark_bridge_longconn_replies_total", "Replies sent by code.", &["code"]),
                fragments: counter_vec(&r, "lark_bridge_longconn_fragments_total", "Fragmented messages by result.", &["result"]),
                ping_rtt: {
                    let h = Histogram::with_opts(
                        HistogramOpts::new("lark_bridge_longconn_ping_rtt_seconds", "Ping to pong time.")
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
        m.sink_up.with_label_values(&[sink]).set(0);
        m.dedup_store_up.with_label_values(&[backend]).set(0);
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("LARK_BRIDGE_GIT_SHA")])
            .set(1);
        for f in NORMALIZE_FIELDS {
            m.normalize_warnings.with_label_values(&[f]);
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

    /// Count a finished request.
    pub fn request(&self, source: Source, outcome: Outcome, elapsed: std::time::Duration) {
        let labels = [source.as_str(), outcome.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.request_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
