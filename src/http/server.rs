//! The accept loop for the webhook and admin listeners. axum's `serve` has no connection cap or
//! header limits, so this drives hyper directly: at most `max_connections` open connections, a
//! request head larger than `max_header_bytes` → 431, a head that has not arrived within
//! `read_timeout` (counted from the connection's start or from its previous answer, so it is also
//! the idle timeout of a kept-alive connection) → connection closed, and a graceful drain bounded
//! by the shutdown grace.
//!
//! At the cap, a new connection does not wait behind connections that never sent a complete
//! head (slow heads, idle keep-alives): the oldest such connection is closed to make room
//! ("shedding"). Only when every open connection has a request in progress does the new one wait
//! in the kernel's accept queue. Accept errors (EMFILE …) back off exponentially and are logged
//! at most once a second, with the count of those not logged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Which listener, for logs (`webhook`, `admin`).
    pub name: &'static str,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    /// Time to send a complete head, from the connection's start or its previous answer.
    pub read_timeout: Duration,
    pub grace: Duration,
    /// `lark_bridge_connections{listener}` and `…_shed_total{listener}` for this listener.
    pub gauges: Option<(prometheus::IntGauge, prometheus::IntCounter)>,
}

/// hyper's read buffer per connection for a `max_header_bytes` limit. The handler enforces
/// `max_header_bytes` with a JSON 431; this is the hard cap behind it (hyper answers a bare 431
/// past it): twice the limit, at least 16 KiB. It also bounds what a connection can hold before
/// its head is complete, so `max_connections` × this is the worst case of head buffers.
pub fn read_buffer_bytes(max_header_bytes: usize) -> usize {
    (max_header_bytes * 2).max(16 * 1024)
}

/// One open connection, as the shedding sees it.
struct Conn {
    /// Requests whose head is complete and whose answer is not yet written.
    busy: AtomicUsize,
    /// The registry's "a connection became idle" signal.
    idle: Arc<Notify>,
    /// Closes the connection (drops hyper's future) when notified.
    shed: Notify,
}

/// The open connections of a listener, oldest first (ids grow).
#[derive(Default)]
struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// Notified when a connection finishes its request: the accept loop, waiting at the cap,
    /// may now shed it.
    idle: Arc<Notify>,
}

impl Registry {
    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle: self.idle.clone(),
            shed: Notify::new(),
        });
        lock(&self.conns).insert(id, c.clone());
        (id, c)
    }

    fn remove(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Close the oldest connection without a request in progress; false when every one is busy.
    fn shed_oldest_idle(&self) -> bool {
        let mut conns = lock(&self.conns);
        let victim = conns
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.shed.notify_one();
                true
            }
            None => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a connection busy while a request is handled (head complete → answer ready).
struct Busy(Arc<Conn>);

impl Busy {
    fn new(c: &Arc<Conn>) -> Busy {
        c.busy.fetch_add(1, Ordering::AcqRel);
        Busy(c.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// Accept-error back-off: 5 ms doubling to 1 s, one log line a second at most.
struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    fn new() -> Self {
        AcceptBackoff {
            delay: Duration::ZERO,
            last_log: None,
            suppressed: 0,
        }
    }

    fn ok(&mut self) {
        self.delay = Duration::ZERO;
    }

    async fn failed(&mut self, listener: &'static str, e: &std::io::Error) {
        self.delay = (self.delay * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(listener, error = %e, suppressed = self.suppressed, retry_in_ms = self.delay.as_millis() as u64, "accept failed");
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(self.delay).await;
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let registry = Arc::new(Registry::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(read_buffer_bytes(limits.max_header_bytes))
        .max_headers(100)
        .keep_alive(true);
    let mut backoff = AcceptBackoff::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => { backoff.ok(); stream }
                Err(e) => { backoff.failed(limits.name, &e).await; continue; }
            },
            _ = &mut shutdown => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the cap: make room by closing the oldest connection that has not sent a
                // complete head; when every connection is busy, wait for one to end or to
                // finish its request (then shed it).
                let (mut got, mut shed_one) = (None, false);
                loop {
                    // One victim per new connection: its permit is on its way back.
                    if !shed_one && registry.shed_oldest_idle() {
                        shed_one = true;
                        if let Some((_, shed)) = &limits.gauges {
                            shed.inc();
                        }
                    }
                    tokio::select! {
                        p = permits.clone().acquire_owned() => { got = p.ok(); break }
                        _ = registry.idle.notified() => continue,
                        _ = &mut shutdown => break,
                    }
                }
                match got {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = registry.add();
        let svc_conn = conn.clone();
        let router = router.clone();
        let svc = hyper::service::service_fn(move |req| {
            let busy = Busy::new(&svc_conn);
            let fut = tower::ServiceExt::oneshot(router.clone(), req);
            async move {
                let r = fut.await;
                drop(busy);
                r
            }
        });
        let served = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        let registry = registry.clone();
        let open = limits.gauges.as_ref().map(|(g, _)| g.clone());
        if let Some(g) = &open {
            g.inc();
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = served => {}
                _ = conn.shed.notified() => {}
            }
            registry.remove(id);
            if let Some(g) = open {
                g.dec();
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => {
            tracing::warn!(listener = limits.name, "shutdown grace ran out with connections still open");
        }
    }
}
