//! The embedded default sink: one structured CloudEvent per line on stdout (logs go to stderr).
//! The line is written and flushed before the publish resolves, so "200" still means "out".

use std::io::Write;

use async_trait::async_trait;

use super::{Ack, PublishError, Sink};
use lark_protocol::event::Outgoing;

#[derive(Debug, Default)]
pub struct StdoutSink {
    // Serializes whole lines: two events never interleave.
    lock: std::sync::Mutex<()>,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    async fn publish(&self, ev: &Outgoing) -> Result<Ack, PublishError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        let body = ev.structured_body();
        let mut line = Vec::with_capacity(body.len() + 1);
        line.extend_from_slice(&body);
        line.push(b'\n');
        out.write_all(&line)
            .and_then(|_| out.flush())
            .map_err(|e| PublishError::retryable(format!("stdout: {e}")))?;
        Ok(Ack {
            location: "stdout".into(),
            duplicate: false,
        })
    }

    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
