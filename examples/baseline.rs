//! The benchmark's ceiling: the least an HTTP ingress can do — an axum handler that reads the
//! whole body and answers 200 with a small JSON body, on the same runtime and hyper settings as
//! the bridge (multi-threaded tokio, HTTP/1.1 keep-alive, `TCP_NODELAY`). `bench/run.sh`
//! measures it in the same run as the bridge, so the bridge's numbers are ratios to what this
//! machine can do for HTTP alone at that moment.
//!
//! Usage: `baseline [ADDR]` (default `127.0.0.1:8089`); prints `listening ADDR` once bound.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;

async fn handler(body: Bytes) -> impl IntoResponse {
    // Touch the body so the read cannot be optimised away.
    std::hint::black_box(body.len());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"msg":"success"}"#,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening {}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/webhook/event", post(handler));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
