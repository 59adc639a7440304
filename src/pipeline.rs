//! The walk every event takes, independent of how it arrived (webhook or long connection):
//! normalize (pure) → dedup reserve → publish → dedup commit. The answer is decided here; the
//! entrances only translate it (HTTP status, frame reply code).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::Instrument;

use crate::config::OnStoreError;
use crate::dedup::{DedupStore, Owner, Reservation, Settled};
use crate::lark_api::LarkApi;
use crate::logging::warn_limited;
use crate::metrics::{DedupResult, Metrics, PublishResult, StoreOp};
use crate::sink::{PublishErrorKind, Sink};
use crate::telemetry::{self, step_span};
use lark_protocol::event::{EventClass, Outgoing};
use lark_protocol::normalize::{self, enrich, NormalizeError};
use lark_protocol::VerifiedEvent;

/// What happened to an event that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// The broker acknowledged it.
    Published,
    /// Already published (committed in the dedup store): not published again.
    Duplicate,
    /// Another event type, not forwarded.
    Ignored,
    /// Another event type, published in the raw envelope.
    Forwarded,
    /// Verified but refused by the normalizer: published as a dead letter.
    DeadLettered,
}

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The event can never be normalized: 400, nothing reserved.
    #[error("{0}")]
    BadEvent(#[from] NormalizeError),
    /// Try again later (503): sink or store failed, budget ran out, or a copy is in flight.
    #[error("{0}")]
    Unavailable(&'static str),
}

/// Settings the pipeline needs from the config.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub lease: Duration,
    pub ttl: Duration,
    pub forward_unknown: bool,
    pub on_store_error: OnStoreError,
    /// Publish what the normalizer refuses as a dead letter (else: 400).
    pub deadletter: bool,
    /// `lark.events`: the Lark event types normalized; any other is treated as unknown.
    pub events: Vec<String>,
}

pub struct Pipeline {
    dedup: Arc<dyn DedupStore>,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    settings: PipelineSettings,
    enricher: Option<Enricher>,
}

/// `enrich.ticket_detail`: a created or updated ticket's customized fields, fetched from Lark
/// after the reservation (a duplicate costs no call) and before the publish, within
/// `enrich.budget_ms`. Best effort: on a timeout or an error the event is published with the
/// fields it carried and `customized_fields_source = "unavailable"`.
pub struct Enricher {
    api: Arc<LarkApi>,
    budget: Duration,
}

impl Enricher {
    pub fn new(api: Arc<LarkApi>, budget: Duration) -> Enricher {
        Enricher { api, budget }
    }

    /// `out` enriched, by `deadline` at the latest.
    async fn enrich(&self, out: Outgoing, deadline: Instant, metrics: &Metrics) -> Outgoing {
        let Some(ticket_id) = enrich::ticket_to_enrich(&out) else {
            return out;
        };
        let until = deadline.min(Instant::now() + self.budget);
        let span = step_span!("enrich", lark.ticket_id = ticket_id);
        let fetched = if self.api.can_call_helpdesk() {
            tokio::time::timeout_at(until.into(), self.api.ticket_detail(ticket_id, until))
                .instrument(span.clone())
                .await
        } else {
            Ok(Err(crate::lark_api::ApiError::NoHelpdeskCredentials(
                crate::lark_api::Api::TicketDetail,
            )))
        };
        let (found, result) = match fetched {
            Ok(Ok(data)) => {
                match enrich::detail_customized_fields(&data) {
                    Some(fields) => (Some(fields), "ok"),
                    None => {
                        warn_limited!("ticket detail holds no ticket: published without its customized fields");
                        (None, "error")
                    }
                }
            }
            Ok(Err(crate::lark_api::ApiError::Timeout(_))) | Err(_) => {
                warn_limited!(budget_ms = self.budget.as_millis() as u64, "ticket detail not fetched within enrich.budget_ms: published without its customized fields");
                (None, "timeout")
            }
            Ok(Err(e)) => {
                warn_limited!(error = %e, "ticket detail not fetched: published without its customized fields");
                (None, "error")
            }
        };
        metrics.enrich.with_label_values(&[result]).inc();
        telemetry::step_outcome(&span, result, result != "ok");
        match enrich::with_customized_fields(&out, found) {
            Ok(enriched) => enriched,
            // Cannot happen for what the normalizer made; publish it as it was rather than lose it.
            Err(_) => out,
        }
    }
}

use crate::secrets::now_ms;

/// Run `fut` to completion even if the caller goes away, as `tokio::spawn(fut).await` would,
/// without a task when it need not wait: it is polled once here, and moved to its own task only
/// if that poll is pending. With the memory store and the stdout sink the whole walk finishes
/// in that first poll, and a task spawn plus a cross-thread wake-up per request was a
/// measurable share of the bridge's CPU (BENCHMARKS.md). A poll cannot be interrupted, so the
/// caller can be dropped only before the first poll or once the task owns the future: the
/// guarantee is the same. `None` means it panicked (as `JoinError` did).
pub async fn detached<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
    match futures::poll!(fut.as_mut()) {
        Poll::Ready(r) => r.ok(),
        Poll::Pending => tokio::spawn(fut).await.ok().and_then(Result::ok),
    }
}

impl Pipeline {
    pub fn new(
        dedup: Arc<dyn DedupStore>,
        sink: Arc<dyn Sink>,
        metrics: Arc<Metrics>,
        settings: PipelineSettings,
        enricher: Option<Enricher>,
    ) -> Arc<Self> {
        Arc::new(Pipeline {
            dedup,
            sink,
            metrics,
            settings,
            enricher,
        })
    }

    /// Normalize an event, or decide it is ignored (`Ok(None)`). Pure; counts warnings. An
    /// event the normalizer refuses becomes a dead letter when those are enabled (and the
    /// refusal comes back with it).
    pub fn prepare(
        &self,
        ev: &VerifiedEvent,
    ) -> Result<Option<(Outgoing, Option<NormalizeError>)>, PipelineError> {
        let mut warnings = Vec::new();
        let now = now_ms();
        let normalizer = normalize::normalizer(ev.event_type())
            .filter(|_| self.settings.events.iter().any(|e| e == ev.event_type()));
        let normalized = if let Some(normalize) = normalizer {
            normalize(ev, now, &mut warnings)
        } else if self.settings.forward_unknown {
            normalize::raw::normalize(ev, now, &mut warnings)
        } else {
            return Ok(None);
        };
        let (out, refused) = match normalized {
            Ok(out) => (out, None),
            Err(e) if self.settings.deadletter && e != NormalizeError::Serialize => {
                warnings.clear();
                let letter =
                    normalize::deadletter::normalize(ev, &e.to_string(), now, &mut warnings)?;
                (letter, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        self.metrics.normalize_warnings(&warnings);
        Ok(Some((out, refused)))
    }

    /// The whole walk, answered by `deadline`. Runs to completion even if the caller goes away
    /// (the entrances spawn it), so a reservation is always committed or released.
    pub async fn process(
        self: Arc<Self>,
        ev: VerifiedEvent,
        deadline: Instant,
    ) -> Result<Processed, PipelineError> {
        let Some((out, refused)) = self.prepare(&ev)? else {
            return Ok(Processed::Ignored);
        };
        let done = match out.class {
            EventClass::TicketCreated
            | EventClass::TicketUpdated
            | EventClass::TicketMessageCreated
            | EventClass::NotificationApprove => Processed::Published,
            EventClass::Raw => Processed::Forwarded,
            EventClass::DeadLetter => Processed::DeadLettered,
        };
        let backend = self.dedup.backend();

        // Reserve. (Each step has a span for traces only: `step_span!` is a no-op when off.)
        let span = step_span!("dedup.reserve", dedup.backend = backend);
        let reserved = self
            .timed_store(
                StoreOp::Reserve,
                deadline,
                self.dedup.reserve(&out.attrs.id, self.settings.lease),
            )
            .instrument(span.clone())
            .await;
        let owner = match reserved {
            Ok(Reservation::New(owner)) => {
                self.metrics.dedup_reserved(DedupResult::New);
                telemetry::step_outcome(&span, "new", false);
                Some(owner)
            }
            Ok(Reservation::Duplicate) => {
                self.metrics.dedup_reserved(DedupResult::Duplicate);
                telemetry::step_outcome(&span, "duplicate", false);
                return Ok(Processed::Duplicate);
            }
            Ok(Reservation::InFlight) => {
                self.metrics.dedup_reserved(DedupResult::InFlight);
                telemetry::step_outcome(&span, "in_flight", false);
                return Err(PipelineError::Unavailable(
                    "another copy of this event is being published; retry later",
                ));
            }
            Err(_) => {
                self.metrics.dedup_reserved(DedupResult::Error);
                telemetry::step_outcome(&span, "error", true);
                match self.settings.on_store_error {
                    OnStoreError::Reject => {
                        return Err(PipelineError::Unavailable("dedup store unavailable"))
                    }
                    // Publish without a reservation: a duplicate is possible, a loss is not.
                    OnStoreError::Publish => None,
                }
            }
        };

        // Enrich (only what will be published: a duplicate has returned above).
        let mut out = match &self.enricher {
            Some(e) => e.enrich(out, deadline, &self.metrics).await,
            None => out,
        };

        // Publish. The message carries the publish span's trace context, so that a consumer's
        // span is its child.
        let sink = self.sink.name();
        let span = step_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = sink,
            messaging.message.id = out.attrs.id.as_str(),
        );
        if telemetry::enabled() {
            out.trace = telemetry::trace_context(&span);
        }
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let result = match tokio::time::timeout(remaining, self.sink.publish(&out))
            .instrument(span.clone())
            .await
        {
            Ok(r) => r,
            Err(_) => Err(crate::sink::PublishError::timeout(
                "no acknowledgement within the response budget",
            )),
        };
        match result {
            Ok(ack) => {
                telemetry::step_outcome(&span, "ok", false);
                self.metrics
                    .published(PublishResult::Ok, sink, started.elapsed(), None);
                tracing::debug!(location = %ack.location, broker_duplicate = ack.duplicate, "published");
            }
            Err(e) => {
                let result = if e.kind == PublishErrorKind::Timeout {
                    PublishResult::Timeout
                } else {
                    PublishResult::Error
                };
                let outcome = if result == PublishResult::Timeout {
                    "timeout"
                } else {
                    "error"
                };
                telemetry::step_outcome(&span, outcome, true);
                self.metrics
                    .published(result, sink, started.elapsed(), Some(&e));
                if let Some(owner) = owner {
                    self.spawn_release(out.attrs.id.clone(), owner);
                }
                return Err(PipelineError::Unavailable(match e.kind {
                    PublishErrorKind::Timeout => {
                        "broker did not acknowledge within the response budget"
                    }
                    PublishErrorKind::Fatal => "broker refused the event",
                    PublishErrorKind::Retryable => "broker unavailable",
                }));
            }
        }

        // Commit. The broker holds the event: the answer is 200 whatever happens here. The commit
        // is detached so that it finishes even when the budget is spent (in the request's span,
        // so a failure log names the event).
        if let Some(owner) = owner {
            let this = self.clone();
            let id = out.attrs.id.clone();
            let span = step_span!("dedup.commit", dedup.backend = backend);
            let step = span.clone();
            let commit = detached(
                async move {
                    let t = Instant::now();
                    let r = this.dedup.commit(&id, &owner, this.settings.ttl).await;
                    this.metrics.store_latency(StoreOp::Commit, t.elapsed());
                    let current = step;
                    match r {
                        Ok(Settled::Done) => telemetry::step_outcome(&current, "ok", false),
                        Ok(Settled::Lost) => {
                            telemetry::step_outcome(&current, "lost", true);
                            this.metrics.lost_race(StoreOp::Commit)
                        }
                        Err(e) => {
                            telemetry::step_outcome(&current, "error", true);
                            this.metrics.store_failed(StoreOp::Commit, backend, &e)
                        }
                    }
                }
                .instrument(span)
                .in_current_span(),
            );
            let remaining = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(remaining, commit).await;
        }
        if let Some(reason) = refused {
            self.metrics
                .dead_lettered(&out.attrs.larkeventtype, reason.kind(), &reason);
        }
        Ok(done)
    }

    /// A store call bounded by the deadline; a timeout is a store error (counted and logged).
    async fn timed_store<T>(
        &self,
        op: StoreOp,
        deadline: Instant,
        fut: impl std::future::Future<Output = Result<T, crate::dedup::StoreError>>,
    ) -> Result<T, crate::dedup::StoreError> {
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let r = match tokio::time::timeout(remaining, fut).await {
            Ok(r) => r,
            Err(_) => Err(crate::dedup::StoreError::Timeout),
        };
        self.metrics.store_latency(op, started.elapsed());
        if let Err(e) = &r {
            self.metrics.store_failed(op, self.dedup.backend(), e);
        }
        r
    }

    /// Release in the background: the 503 need not wait for it, and if it fails the lease
    /// expires on its own (well before Lark's first redelivery after 15 s).
    fn spawn_release(self: &Arc<Self>, id: String, owner: Owner) {
        let this = self.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r =
                tokio::time::timeout(this.settings.lease, this.dedup.release(&id, &owner)).await;
            this.metrics.store_latency(StoreOp::Release, t.elapsed());
            let backend = this.dedup.backend();
            match r {
                Ok(Ok(Settled::Done)) => {}
                Ok(Ok(Settled::Lost)) => this.metrics.lost_race(StoreOp::Release),
                Ok(Err(e)) => this.metrics.store_failed(StoreOp::Release, backend, &e),
                Err(_) => this
                    .metrics
                    .store_failed(StoreOp::Release, backend, &"timed out"),
            }
        });
    }
}
