//! Event frames of the long connection, through the shared entrance contract: reassemble the
//! payload, read it as an event (the connection authenticates it), admit, walk, and reply with
//! the frame code [`reply_code`] decides — `200` only after the broker acknowledged.

use std::time::Instant;

use tracing::Instrument;

use super::{Conn, NotQueued, Out, Outbox};
use crate::entrance::{finish, rejected, walk, Ending, Refusal};
use crate::logging::warn_limited;
use crate::metrics::Source;
use lark_protocol::endpoint::printable_max;
use lark_protocol::fragments::Added;
use lark_protocol::frame::Frame;
use lark_protocol::{FailReason, VerifiedEvent};

/// The frame reply code for an ending: the one place codes are decided. Lark redelivers on
/// anything but `200`; `400` says the event itself is at fault.
fn reply_code(ending: &Ending) -> u16 {
    match ending {
        Ending::Accepted(_) | Ending::Challenge(_) => 200,
        Ending::Refused(r) if r.is_final() => 400,
        Ending::Refused(_) => 500,
    }
}

impl Conn<'_> {
    pub(super) fn on_event(&mut self, mut frame: Frame) {
        let started = Instant::now();
        let lc = self.lc;
        let m = &lc.metrics;
        let message_id = frame.header("message_id").unwrap_or("").to_string();
        // Peer-chosen text: escaped and clipped before it reaches a log line (issue 15 item 16).
        let span = tracing::info_span!(
            parent: None,
            "event",
            source = "long_connection",
            device_id = %self.ep.device_id,
            trace_id = %printable_max(frame.header("trace_id").unwrap_or(""), 128),
            message_id = %printable_max(&message_id, 128),
            event_id = tracing::field::Empty,
            event_type = tracing::field::Empty,
        );
        let payload = frame.payload.take().unwrap_or_default();
        let sum = frame
            .header("sum")
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(1);
        let payload = if sum > 1 {
            let seq = frame
                .header("seq")
                .and_then(|s| s.trim().parse::<usize>().ok());
            let added = match seq {
                Some(seq) if !message_id.is_empty() => {
                    self.fragments.add(&message_id, sum, seq, payload, started)
                }
                _ => Added::Invalid("fragment without message_id or numeric seq"),
            };
            // Older incomplete messages that made room for this one (the bound on ids,
            // bytes and messages held).
            let evicted = self.fragments.take_evicted();
            if evicted > 0 {
                m.longconn
                    .fragments
                    .with_label_values(&["dropped_size"])
                    .inc_by(evicted as u64);
                warn_limited!(
                    messages = evicted,
                    "incomplete fragmented messages dropped to make room for newer ones"
                );
            }
            match added {
                Added::Complete(p) => {
                    m.longconn.fragments.with_label_values(&["assembled"]).inc();
                    p
                }
                Added::Pending | Added::AlreadyDropped => return,
                Added::DroppedSize => {
                    m.longconn
                        .fragments
                        .with_label_values(&["dropped_size"])
                        .inc();
                    span.in_scope(|| warn_limited!(limit = lc.opts.limits.max_body_bytes, "fragmented message dropped: fragments held would exceed server.max_body_bytes"));
                    // No reply: the message never completed; Lark redelivers it.
                    finish(
                        m,
                        Source::LongConnection,
                        &Refusal::TooLarge.into(),
                        0,
                        started,
                        &span,
                    );
                    return;
                }
                Added::Invalid(msg) => {
                    m.verification_failed(FailReason::Parse);
                    span.in_scope(|| warn_limited!(error = msg, "fragment refused"));
                    self.reply_now(&frame, Refusal::Unreadable(msg).into(), started, &span);
                    return;
                }
            }
        } else {
            payload
        };
        if payload.len() > lc.opts.limits.max_body_bytes {
            span.in_scope(|| {
                warn_limited!(
                    bytes = payload.len(),
                    "event payload larger than server.max_body_bytes"
                )
            });
            self.reply_now(&frame, Refusal::TooLarge.into(), started, &span);
            return;
        }
        m.body_bytes.observe(payload.len() as f64);
        let read = |p: &[u8]| VerifiedEvent::from_long_connection(p);
        let ev = if crate::telemetry::enabled() {
            // Traces only: the connection authenticated the frame, reading it is the check.
            let v = tracing::info_span!(
                target: "lark_bridge::otel",
                parent: &span,
                "verify",
                outcome = tracing::field::Empty
            );
            let r = v.in_scope(|| read(&payload));
            let outcome = match &r {
                Ok(_) => "ok",
                Err(rej) => rej.reason().as_str(),
            };
            crate::telemetry::step_outcome(&v, outcome, false);
            r
        } else {
            read(&payload)
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(rej) => {
                span.in_scope(|| warn_limited!(error = %rej, "event refused"));
                self.reply_now(&frame, rejected(m, rej).into(), started, &span);
                return;
            }
        };
        span.record("event_id", ev.event_id());
        span.record("event_type", ev.event_type());
        let Some(permit) = lc.admission.try_admit() else {
            span.in_scope(|| {
                warn_limited!(
                    "too many events in flight (server.max_in_flight); Lark will redeliver"
                )
            });
            self.reply_now(&frame, Refusal::Overloaded.into(), started, &span);
            return;
        };
        let pipeline = lc.pipeline.clone();
        let metrics = lc.metrics.clone();
        let tx = self.tx.clone();
        let deadline = started + lc.opts.limits.budget;
        // Its own task: the read loop goes on with the frames behind this one.
        tokio::spawn(
            async move {
                let ending =
                    walk(&pipeline, &metrics, ev, deadline, tracing::Span::current()).await;
                match &ending {
                    Ending::Refused(r) if r.is_final() => {
                        warn_limited!(error = %r, "event refused")
                    }
                    Ending::Refused(r) => {
                        warn_limited!(error = %r, "event not accepted; Lark will redeliver")
                    }
                    _ => {}
                }
                let code = reply_code(&ending);
                send_reply(&tx, &frame, code, started);
                finish(
                    &metrics,
                    Source::LongConnection,
                    &ending,
                    code,
                    started,
                    &tracing::Span::current(),
                );
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Reply at once (the event never reached the pipeline) and finish it.
    fn reply_now(&self, frame: &Frame, ending: Ending, started: Instant, span: &tracing::Span) {
        let code = reply_code(&ending);
        send_reply(&self.tx, frame, code, started);
        finish(
            &self.lc.metrics,
            Source::LongConnection,
            &ending,
            code,
            started,
            span,
        );
    }
}

fn send_reply(tx: &Outbox, frame: &Frame, code: u16, started: Instant) {
    let biz_rt = started.elapsed().as_millis() as u64;
    let bytes = Frame::reply(frame, code, biz_rt).to_bytes();
    match tx.send(Out::Reply { bytes, code }) {
        Ok(()) => {}
        // The read loop drops the connection and says why, once.
        Err(NotQueued::Full) => tracing::debug!(code, "outgoing queue full; reply dropped"),
        Err(NotQueued::Closed) => tracing::debug!(
            code,
            "connection gone before the reply; Lark will redeliver"
        ),
    }
}
