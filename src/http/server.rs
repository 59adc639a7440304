//! The accept loop for the webhook listener. axum's `serve` has no connection cap or header
//! limits, so this drives hyper directly: at most `max_connections` open connections (further
//! ones wait in the kernel's accept queue), a request head larger than `max_header_bytes` → 431,
//! a head that has not arrived within `read_timeout` → connection closed, and a graceful drain
//! bounded by the shutdown grace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of the webhook listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub read_timeout: Duration,
    pub grace: Duration,
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        // The handler enforces max_header_bytes with a JSON 431; this is the hard cap behind it
        // (hyper answers a bare 431 past it). Four times the limit, at least 64 KiB: room for
        // the JSON answer on any head a real client sends, bounded memory per connection.
        .max_buf_size((limits.max_header_bytes * 4).max(64 * 1024))
        .max_headers(100)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => {
            tracing::warn!("shutdown grace ran out with connections still open");
        }
    }
}
