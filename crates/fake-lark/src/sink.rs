//! A channel-backed sink for tests and benchmarks: every published event is sent on an
//! unbounded channel, and failures or delays can be injected to make faults a real broker can't
//! make on cue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use lark_bridge::sink::{Ack, PublishError, Sink};
use lark_protocol::event::Outgoing;

#[derive(Debug)]
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<Outgoing>,
    fail_next: AtomicUsize,
    delay_ms: AtomicU64,
    down: std::sync::atomic::AtomicBool,
}

impl ChannelSink {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(ChannelSink {
                tx,
                fail_next: AtomicUsize::new(0),
                delay_ms: AtomicU64::new(0),
                down: Default::default(),
            }),
            rx,
        )
    }
    /// The next `n` publishes fail (retryable).
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
    /// Every publish waits this long before acknowledging.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
    /// `check()` fails while down.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl Sink for ChannelSink {
    fn name(&self) -> &'static str {
        "channel"
    }

    async fn publish(&self, ev: &Outgoing) -> Result<Ack, PublishError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PublishError::retryable("injected failure"));
        }
        self.tx
            .send(ev.clone())
            .map_err(|_| PublishError::retryable("channel closed"))?;
        Ok(Ack::default())
    }

    async fn check(&self) -> Result<(), String> {
        if self.down.load(Ordering::SeqCst) {
            Err("channel sink is down".into())
        } else {
            Ok(())
        }
    }
}
