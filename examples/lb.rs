//! A tiny round-robin HTTP front, the load balancer of the soak test (scripts/soak.sh). Each
//! request goes to the next backend in turn (per request, not per connection, so a restarted
//! replica gets traffic again at once); a backend that refuses the connection (a killed
//! replica) is skipped for the next one — safe, since nothing was sent. A backend that dies
//! with the request in flight gives the client a 502, as a real load balancer would: the
//! event's fate is unknown, and the client (Lark) retries.
//!
//! Usage: `cargo run --example lb -- LISTEN_ADDR BACKEND_URL [BACKEND_URL ...]`
//! (e.g. `127.0.0.1:18080 http://127.0.0.1:18081 http://127.0.0.1:18082`). Prints
//! `listening on ADDR` once bound. A test tool for loopback use, not a product.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

struct Front {
    backends: Vec<String>,
    next: AtomicUsize,
    client: reqwest::Client,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), backends) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: lb LISTEN_ADDR BACKEND_URL [BACKEND_URL ...]");
        std::process::exit(2);
    };
    if backends.is_empty() {
        eprintln!("lb: at least one backend is needed");
        std::process::exit(2);
    }
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lb: cannot bind {listen}: {e}");
            std::process::exit(1);
        }
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client");
    let front = Arc::new(Front {
        backends,
        next: AtomicUsize::new(0),
        client,
    });
    println!("listening on {}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(forward).with_state(front);
    axum::serve(listener, app).await.expect("serve");
}

async fn forward(
    State(f): State<Arc<Front>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = f.next.fetch_add(1, Ordering::Relaxed);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    for i in 0..f.backends.len() {
        let backend = &f.backends[(start + i) % f.backends.len()];
        let mut req = f
            .client
            .request(method.clone(), format!("{backend}{path}"))
            .body(body.clone());
        for (k, v) in &headers {
            if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
                req = req.header(k, v);
            }
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let mut out = Response::builder().status(status);
                for (k, v) in resp.headers() {
                    if k != axum::http::header::CONTENT_LENGTH
                        && k != axum::http::header::TRANSFER_ENCODING
                        && k != axum::http::header::CONNECTION
                    {
                        out = out.header(k, v);
                    }
                }
                return match resp.bytes().await {
                    Ok(b) => out.body(Body::from(b)).unwrap(),
                    Err(_) => bad_gateway(),
                };
            }
            // Nothing was sent: try the next backend.
            Err(e) if e.is_connect() => continue,
            Err(_) => return bad_gateway(),
        }
    }
    bad_gateway()
}

fn bad_gateway() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(serde_json::json!({"msg": "lb: no backend answered"})),
    )
        .into_response()
}
