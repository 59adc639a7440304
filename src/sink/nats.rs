//! NATS sink: JetStream publish that resolves on the PubAck (default), or core NATS (no broker
//! acknowledgement: the message is flushed to the server's socket, nothing more).
//!
//! `Nats-Msg-Id` is the event id, so JetStream drops a redelivery that slips past our dedup
//! store (e.g. the commit failed after the ack) inside the stream's duplicate window. The
//! window we create (`sink.nats.duplicate_window_secs`, 24 h) covers Lark's whole redelivery
//! schedule (15 s, 5 min, 1 h, 6 h ≈ 7.1 h).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use async_trait::async_trait;

use super::route::{nats_token_char, render_template};
use super::{Ack, PublishError, Sink};
use crate::config::{ContentMode, NatsSinkConfig};
use lark_protocol::event::{Outgoing, DATA_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};

pub struct NatsSink {
    client: async_nats::Client,
    js: Option<jetstream::Context>,
    cfg: NatsSinkConfig,
    mode: ContentMode,
    /// Whether the stream is known to exist (bound or created).
    stream_ready: Arc<AtomicBool>,
    stream_error: Arc<std::sync::Mutex<Option<String>>>,
}

/// Percent-encode a header value per the CloudEvents NATS binding: space, `"`, `%` and
/// non-ASCII.
pub fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b == b' ' || b == b'"' || b == b'%' || !b.is_ascii() || b.is_ascii_control() {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The NATS headers of `ev` in `mode` (normalized-schema.md §3; schemas/asyncapi.yaml).
pub fn headers(ev: &Outgoing, mode: ContentMode) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", ev.msg_id().as_ref());
    match mode {
        ContentMode::Structured => {
            // No `ce-` header: the CloudEvents SDKs would take the message for binary mode.
            h.insert("Content-Type", STRUCTURED_CONTENT_TYPE);
        }
        ContentMode::Binary => {
            h.insert("Content-Type", DATA_CONTENT_TYPE);
            h.insert("ce-datacontenttype", DATA_CONTENT_TYPE);
            for (name, value) in ev.binary_pairs() {
                h.insert(
                    format!("ce-{name}").as_str(),
                    percent_encode(value).as_str(),
                );
            }
        }
    }
    h
}

impl NatsSink {
    /// Connect (in the background if the server is down: readiness reports it) and bind or
    /// create the stream.
    pub async fn connect(
        cfg: &NatsSinkConfig,
        mode: ContentMode,
        budget: Duration,
    ) -> Result<Arc<Self>, String> {
        let opts = crate::natsconn::connect_options(&cfg.auth, "sink.nats")
            .await?
            .retry_on_initial_connect();
        let client = opts
            .connect(cfg.url.expose())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", cfg.url.redacted()))?;
        let js = cfg.jetstream.then(|| {
            jetstream::ContextBuilder::new()
                .timeout(budget)
                .build(client.clone())
        });
        let sink = Arc::new(NatsSink {
            client,
            js,
            cfg: cfg.clone(),
            mode,
            stream_ready: Arc::new(AtomicBool::new(!cfg.jetstream)),
            stream_error: Default::default(),
        });
        if sink.js.is_some() {
            // Bind the stream now if the server is up; otherwise keep trying in the background
            // (readiness says why until it works).
            if let Err(e) = sink.ensure_stream().await {
                tracing::warn!(error = %e, stream = %cfg.stream, "JetStream stream not ready yet; retrying in the background");
                let weak = Arc::downgrade(&sink);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let Some(s) = weak.upgrade() else { return };
                        if s.ensure_stream().await.is_ok() {
                            tracing::info!(stream = %s.cfg.stream, "JetStream stream ready");
                            return;
                        }
                    }
                });
            }
        }
        Ok(sink)
    }

    async fn ensure_stream(&self) -> Result<(), String> {
        let Some(js) = &self.js else { return Ok(()) };
        let r = match js.get_stream(&self.cfg.stream).await {
            Ok(_) => Ok(()),
            Err(e) if self.cfg.create_stream => {
                tracing::debug!(error = %e, "stream lookup failed; creating it");
                js.get_or_create_stream(jetstream::stream::Config {
                    name: self.cfg.stream.clone(),
                    subjects: self.cfg.stream_subjects.clone(),
                    duplicate_window: self.cfg.duplicate_window,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot create stream {}: {e}", self.cfg.stream))
            }
            Err(e) => Err(format!("stream {} not found: {e}", self.cfg.stream)),
        };
        let ok = r.is_ok();
        self.stream_ready.store(ok, Ordering::SeqCst);
        *self.stream_error.lock().unwrap_or_else(|p| p.into_inner()) = r.clone().err();
        r
    }

    /// The subject an event goes to.
    pub fn subject(&self, ev: &Outgoing) -> String {
        render_template(self.cfg.subject_for(ev.class), &ev.route, nats_token_char)
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn publish(&self, ev: &Outgoing) -> Result<Ack, PublishError> {
        let subject = self.subject(ev);
        let headers = headers(ev, self.mode);
        let payload = match self.mode {
            ContentMode::Structured => ev.structured_body(),
            ContentMode::Binary => ev.data.clone(),
        };
        match &self.js {
            Some(js) => {
                use jetstream::context::PublishErrorKind as K;
                let classify = |e: jetstream::context::PublishError| match e.kind() {
                    K::TimedOut => PublishError::timeout(format!("jetstream: {e}")),
                    K::MaxPayloadExceeded => PublishError::fatal(format!("jetstream: {e}")),
                    _ => PublishError::retryable(format!("jetstream: {e}")),
                };
                let ack = js
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(classify)?
                    .await
                    .map_err(classify)?;
                Ok(Ack {
                    location: format!("{}#{}", ack.stream, ack.sequence),
                    duplicate: ack.duplicate,
                })
            }
            None => {
                if self.client.connection_state() != async_nats::connection::State::Connected {
                    return Err(PublishError::retryable("nats: not connected"));
                }
                self.client
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .map_err(|e| PublishError::retryable(format!("nats: {e}")))?;
                self.client
                    .flush()
                    .await
                    .map_err(|e| PublishError::retryable(format!("nats: {e}")))?;
                Ok(Ack {
                    location: subject,
                    duplicate: false,
                })
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(format!(
                "nats: not connected to {}",
                self.cfg.url.redacted()
            ));
        }
        if self.js.is_some() {
            // Re-verify the stream each probe: it may have been deleted or the server replaced.
            self.ensure_stream()
                .await
                .map_err(|e| format!("nats: {e}"))?;
        }
        Ok(())
    }

    async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_follows_the_binding() {
        assert_eq!(percent_encode("a b\"c%d"), "a%20b%22c%25d");
        assert_eq!(percent_encode("张"), "%E5%BC%A0");
        assert_eq!(percent_encode("urn:lark:app:cli_1"), "urn:lark:app:cli_1");
    }
}
