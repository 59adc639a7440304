//! Readiness of the dependencies, probed in the background so `/readyz` answers from memory and
//! never waits on a broker. Each dependency holds `None` when up or the reason it is down.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::dedup::DedupStore;
use crate::metrics::Metrics;
use crate::sink::Sink;

#[derive(Default)]
pub struct Health {
    // name → Some(reason) when failing.
    deps: RwLock<BTreeMap<&'static str, Option<String>>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// Record a dependency's state.
    pub fn set(&self, name: &'static str, failure: Option<String>) {
        // Reasons are client libraries' error text, shown on /readyz: scrub configured secrets.
        let failure = failure.map(crate::secrets::scrub_known);
        let mut d = self.deps.write().unwrap_or_else(|p| p.into_inner());
        d.insert(name, failure);
    }

    /// Failing dependencies with their reasons; empty when ready.
    pub fn failures(&self) -> BTreeMap<&'static str, String> {
        let d = self.deps.read().unwrap_or_else(|p| p.into_inner());
        d.iter()
            .filter_map(|(k, v)| v.as_ref().map(|r| (*k, r.clone())))
            .collect()
    }

    /// Probe sink and store every `every`, each probe bounded by `every`, until `stop`.
    pub fn spawn_probes(
        self: &Arc<Self>,
        sink: Arc<dyn Sink>,
        dedup: Arc<dyn DedupStore>,
        metrics: Arc<Metrics>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        // Not ready until the first probe says so.
        health.set("sink", Some("not checked yet".into()));
        health.set("dedup", Some("not checked yet".into()));
        tokio::spawn(async move {
            loop {
                let (s, d) = tokio::join!(
                    tokio::time::timeout(every, sink.check()),
                    tokio::time::timeout(every, dedup.check())
                );
                let s = match s {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("sink check timed out".into()),
                };
                let d = match d {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("dedup store check timed out".into()),
                };
                metrics
                    .sink_up
                    .with_label_values(&[sink.name()])
                    .set(s.is_none() as i64);
                metrics
                    .dedup_store_up
                    .with_label_values(&[dedup.backend()])
                    .set(d.is_none() as i64);
                health.set("sink", s);
                health.set("dedup", d);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    }
}
