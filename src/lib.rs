//! lark-bridge: a stateless ingress between Lark (Feishu) event delivery and a message broker.
//!
//! The data walks one way, and the module map follows it:
//!
//! - [`entrance`] — the webhook entrance and the long-connection entrance, over one contract;
//!   [`http`] — the accept loop and the admin listener. Both entrances hand verified events
//!   (`lark_protocol::VerifiedEvent`, constructed only by `lark_protocol::Verifier`) to the
//!   pipeline.
//! - [`pipeline`] — normalize (pure, in `lark_protocol::normalize`) → dedup reserve → enrich
//!   (optional) → publish → dedup commit.
//! - [`dedup`] and [`sink`] — the ports: stores and brokers behind small traits.
//! - [`lark_api`] — Lark's open API (tenant token, helpdesk subscription, ticket detail);
//!   [`subscription`] — subscribing at start and `lark-bridge subscribe`.
//! - [`config`], [`metrics`], [`health`], [`logging`], [`secrets`], [`telemetry`]
//!   (OpenTelemetry traces) — the supporting cast.
//! - [`simulate`] — Lark's side of the push protocol, for the smoke test (and the load
//!   generator of the `fake-lark` crate); [`redrive`] — dead letters back after a fix.

pub mod alloc_count;
pub mod config;
pub mod dedup;
pub mod entrance;
pub mod fdlimit;
pub mod health;
pub mod http;
pub mod lark_api;
pub mod logging;
pub mod metrics;
pub mod natsconn;
pub mod pipeline;
pub mod redrive;
pub mod secrets;
pub mod simulate;
pub mod sink;
pub mod subscription;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::{Config, DedupBackend, SinkKind, SourceKind};
use dedup::DedupStore;
use lark_protocol::{crypto::EncryptKey, Verifier};
use metrics::Metrics;
use pipeline::{Pipeline, PipelineSettings};
use sink::Sink;

/// Start-up failed; the message names what and why (never a secret). Callers branch on the
/// kind: a refusal by Lark is final (exit non-zero, do not restart in a loop), a broker or store
/// that cannot be reached at start is an operator's problem of the moment.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The sink could not be set up (`sink.nats`, `sink.kafka`).
    #[error("{key}: {reason}")]
    Sink {
        /// The config section.
        key: &'static str,
        /// Why, scrubbed of secrets.
        reason: String,
    },
    /// The dedup store could not be set up (`dedup.redis`, `dedup.nats`).
    #[error("{key}: {source}")]
    Dedup {
        /// The config section.
        key: &'static str,
        /// The store's error.
        #[source]
        source: dedup::StoreError,
    },
    /// Lark refused the long connection for good (a client error, lark-longconn.md §2–3).
    #[error("{0}")]
    LarkRefused(String),
    /// Traces could not be set up (`otel.*`).
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    /// An HTTP client (long connection, Lark's open API) could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// The verifier for the configured keys and tokens.
pub fn verifier(cfg: &Config) -> Result<Verifier, StartError> {
    let keys = match &cfg.lark.encrypt_key {
        Some(k) => config::split_secret_list(k.expose(), cfg.lark.encrypt_key_file.is_some())
            .map_err(|e| config::ConfigError::invalid("lark.encrypt_key", e))?
            .iter()
            .map(|k| EncryptKey::new(k))
            .collect(),
        None => Vec::new(),
    };
    let tokens = match &cfg.lark.verification_token {
        Some(t) => {
            config::split_secret_list(t.expose(), cfg.lark.verification_token_file.is_some())
                .map_err(|e| config::ConfigError::invalid("lark.verification_token", e))?
        }
        None => Vec::new(),
    };
    Ok(Verifier::new(
        keys,
        tokens,
        cfg.lark.max_timestamp_skew_secs,
    ))
}

fn budget(cfg: &Config) -> Duration {
    cfg.server.response_budget
}

/// The event classes this configuration can publish: the helpdesk types of `lark.events`, raw
/// events when forwarded, dead letters when enabled.
pub fn used_classes(cfg: &Config) -> Vec<lark_protocol::event::EventClass> {
    use lark_protocol::event::EventClass;
    let mut v: Vec<EventClass> = EventClass::HELPDESK
        .into_iter()
        .filter(|c| c.lark_event_type().is_some_and(|t| cfg.lark.normalizes(t)))
        .collect();
    if cfg.routing.forward_unknown {
        v.push(EventClass::Raw);
    }
    if cfg.deadletter.enabled {
        v.push(EventClass::DeadLetter);
    }
    v
}

/// Connect the configured sink.
pub async fn build_sink(cfg: &Config) -> Result<Arc<dyn Sink>, StartError> {
    match cfg.sink.kind {
        SinkKind::Stdout => Ok(Arc::new(sink::stdout::StdoutSink::new())),
        SinkKind::Nats => {
            Ok(
                sink::nats::NatsSink::connect(&cfg.sink.nats, cfg.sink.mode, budget(cfg))
                    .await
                    .map_err(|reason| StartError::Sink {
                        key: "sink.nats",
                        reason,
                    })?,
            )
        }
        SinkKind::Kafka => Ok(sink::kafka::KafkaSink::connect(
            &cfg.sink.kafka,
            cfg.sink.mode,
            budget(cfg),
            &used_classes(cfg),
        )
        .await
        .map_err(|reason| StartError::Sink {
            key: "sink.kafka",
            reason,
        })?),
    }
}

/// Connect the configured dedup store.
pub async fn build_dedup(
    cfg: &Config,
    metrics: &Metrics,
) -> Result<Arc<dyn DedupStore>, StartError> {
    match cfg.dedup.backend {
        DedupBackend::Memory => {
            let store = dedup::memory::MemoryStore::with_evictions(
                cfg.dedup.memory.capacity,
                metrics.evictions_counter(),
            );
            store.spawn_purge(Duration::from_secs(10));
            Ok(store)
        }
        DedupBackend::Redis => Ok(dedup::redis::RedisStore::connect(&cfg.dedup)
            .await
            .map_err(|source| StartError::Dedup {
                key: "dedup.redis",
                source,
            })?),
        DedupBackend::Nats => Ok(dedup::nats_kv::NatsKvStore::connect(&cfg.dedup)
            .await
            .map_err(|source| StartError::Dedup {
                key: "dedup.nats",
                source,
            })?),
    }
}

/// The parts `run` wires together; tests may build their own (e.g. a channel sink).
pub struct Components {
    pub sink: Arc<dyn Sink>,
    pub dedup: Arc<dyn DedupStore>,
    pub metrics: Arc<Metrics>,
}

impl Components {
    /// Connect everything the config names. The metrics come first, from the configured names,
    /// so that each component can take its handles at construction.
    pub async fn from_config(cfg: &Config) -> Result<Components, StartError> {
        let metrics = Arc::new(Metrics::with_dedup_mode(
            metrics_source(cfg.source.kind),
            cfg.sink.kind.as_str(),
            cfg.dedup.backend.as_str(),
            cfg.dedup.mode_label(),
        ));
        let sink = build_sink(cfg).await?;
        let dedup = build_dedup(cfg, &metrics).await?;
        Ok(Components {
            sink,
            dedup,
            metrics,
        })
    }
}

/// The metrics' `source` for the configured entrance.
pub fn metrics_source(kind: SourceKind) -> metrics::Source {
    match kind {
        SourceKind::Webhook => metrics::Source::Webhook,
        SourceKind::LongConnection => metrics::Source::LongConnection,
    }
}

/// The bound listeners: the webhook one is absent in long-connection mode.
pub struct Listeners {
    pub webhook: Option<TcpListener>,
    pub admin: TcpListener,
}

/// The client of Lark's open API for `cfg` (subscription, enrichment).
pub fn build_lark_api(
    cfg: &Config,
    metrics: Arc<Metrics>,
) -> Result<Arc<lark_api::LarkApi>, StartError> {
    Ok(Arc::new(
        lark_api::LarkApi::new(&cfg.lark, metrics).map_err(StartError::HttpClient)?,
    ))
}

/// Build the pipeline for `cfg` over `c`; `api` serves the enrichment when it is on.
pub fn pipeline(cfg: &Config, c: &Components, api: Arc<lark_api::LarkApi>) -> Arc<Pipeline> {
    let enricher = cfg.enrich.ticket_detail.then(|| {
        if !api.can_call_helpdesk() {
            tracing::warn!("enrich.ticket_detail = true but lark.app_id/app_secret and lark.helpdesk_id/helpdesk_token are not all set: every ticket will be published with customized_fields_source = \"unavailable\"");
        }
        pipeline::Enricher::new(api, cfg.enrich.budget)
    });
    Pipeline::new(
        c.dedup.clone(),
        c.sink.clone(),
        c.metrics.clone(),
        PipelineSettings {
            lease: cfg.dedup.lease,
            ttl: cfg.dedup.ttl,
            forward_unknown: cfg.routing.forward_unknown,
            on_store_error: cfg.dedup.on_store_error,
            deadletter: cfg.deadletter.enabled,
            events: cfg.lark.events.clone(),
        },
        enricher,
    )
}

/// The webhook router for `cfg` over `pipeline` (tests drive it without sockets).
pub fn webhook_router(
    cfg: &Config,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
) -> Result<axum::Router, StartError> {
    let state = Arc::new(entrance::webhook::IngressState {
        verifier: verifier(cfg)?,
        pipeline,
        admission: entrance::Admission::new(cfg.server.max_in_flight, metrics.clone()),
        metrics,
        max_body_bytes: cfg.server.max_body_bytes,
        budget: cfg.server.response_budget,
        read_timeout: cfg.server.read_timeout,
        max_header_bytes: cfg.server.max_header_bytes,
        body_budget: entrance::webhook::BodyBudget::new(cfg.server.max_buffered_body_bytes),
        parent_from_request: cfg.otel.parent_from_request,
    });
    Ok(entrance::webhook::router(&cfg.server.path, state))
}

fn listener_gauges(m: &Metrics, listener: &str) -> (prometheus::IntGauge, prometheus::IntCounter) {
    (
        m.connections.with_label_values(&[listener]),
        m.connections_shed.with_label_values(&[listener]),
    )
}

/// `server.max_connections`, lowered when the open-file limit cannot hold it beside the admin
/// listener and [`fdlimit::RESERVE`] (logged: the operator should raise the limit).
fn webhook_connection_cap(cfg: &Config) -> usize {
    let wanted = cfg.server.max_connections;
    let Some(nofile) = fdlimit::raise_to_hard() else {
        return wanted;
    };
    let cap = fdlimit::fitting_cap(wanted, cfg.admin.max_connections, nofile);
    if cap < wanted {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = nofile,
            reserve = fdlimit::RESERVE + cfg.admin.max_connections as u64,
            using = cap,
            "server.max_connections does not fit the open-file limit (RLIMIT_NOFILE hard limit); using the lower cap — raise LimitNOFILE / ulimit -n"
        );
    }
    cap
}

/// Run until `shutdown` resolves: serve the webhook and admin listeners, probe dependencies,
/// then drain in-flight requests (bounded by `server.shutdown_grace_secs`) and flush the sink.
pub async fn run(
    cfg: Config,
    components: Components,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let metrics = components.metrics.clone();
    if cfg.lark.allow_unverified
        && cfg.lark.encrypt_key.is_none()
        && cfg.lark.verification_token.is_none()
    {
        metrics.unverified_mode.set(1);
        tracing::warn!("lark.allow_unverified = true and no encrypt key or token: forged requests will be accepted");
    }
    let api = build_lark_api(&cfg, metrics.clone())?;
    let pipeline = pipeline(&cfg, &components, api.clone());
    let health = health::Health::new();
    let stop = CancellationToken::new();
    let subscription = subscription::start(&cfg.lark, api, health.clone(), stop.clone());
    let probes = health.spawn_probes(
        components.sink.clone(),
        components.dedup.clone(),
        metrics.clone(),
        Duration::from_secs(1),
        stop.clone(),
    );

    if cfg.source.kind == SourceKind::LongConnection {
        // Not ready until the long connection is up (the client clears it).
        health.set("lark", Some("not connected to lark yet".into()));
    }
    let admin_router = http::admin::router(http::admin::AdminState {
        health: health.clone(),
        metrics: metrics.clone(),
    });
    let admin_stop = stop.clone();
    tracing::info!(addr = %listeners.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(), listener = "admin", "listening");
    let grace = cfg.server.shutdown_grace;
    // Its own connection cap and head/idle timeout: idle or slow admin clients can neither
    // exhaust the webhook's connections nor the process's file descriptors (issue 15).
    let admin_limits = http::server::Limits {
        name: "admin",
        max_connections: cfg.admin.max_connections,
        max_header_bytes: config::ADMIN_HEADER_BYTES,
        read_timeout: cfg.admin.header_timeout,
        grace: Duration::from_secs(1),
        gauges: Some(listener_gauges(&metrics, "admin")),
    };
    let admin = tokio::spawn(http::server::serve(
        listeners.admin,
        admin_router,
        admin_limits,
        async move { admin_stop.cancelled().await },
    ));

    // From the signal on, /readyz says so: load balancers stop sending while we drain.
    let draining = health.clone();
    let shutdown = async move {
        shutdown.await;
        draining.set("shutdown", Some("shutting down".into()));
    };
    let mut outcome = Ok(());
    if let Some(listener) = listeners.webhook {
        let router = webhook_router(&cfg, pipeline.clone(), metrics.clone())?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), listener = "webhook", path = %cfg.server.path, sink = components.sink.name(), dedup = components.dedup.backend(), "listening");
        http::server::serve(
            listener,
            router,
            http::server::Limits {
                name: "webhook",
                max_connections: webhook_connection_cap(&cfg),
                gauges: Some(listener_gauges(&metrics, "webhook")),
                max_header_bytes: cfg.server.max_header_bytes,
                read_timeout: cfg.server.read_timeout,
                grace,
            },
            shutdown,
        )
        .await;
    } else if cfg.source.kind == SourceKind::LongConnection {
        outcome = match entrance::longconn::LongConn::new(
            &cfg,
            pipeline.clone(),
            metrics.clone(),
            health.clone(),
        ) {
            Ok(client) => client.run(shutdown).await,
            Err(e) => Err(e),
        };
    } else {
        shutdown.await;
    }
    tracing::info!("shutting down: flushing the sink");
    let _ = tokio::time::timeout(grace, components.sink.flush()).await;
    // The spans of the last requests, before the process may exit.
    telemetry::flush(grace).await;
    stop.cancel();
    let _ = probes.await;
    if let Some(s) = subscription {
        let _ = s.await;
    }
    let _ = admin.await;
    tracing::info!("stopped");
    outcome
}
