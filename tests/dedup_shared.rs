//! The shared dedup stores (issue 4) against real servers: `redis-server` and `nats-server`
//! (≥ 2.10, from the tools cache). Every scenario is written once and run for both backends
//! (`with_redis::…` and `with_nats::…`), each test with its own server. Run `scripts/ensure-tools.sh` once
//! first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_lark::kit::*;
use lark_bridge::config::Config;
use lark_bridge::dedup::{DedupStore, Owner, Reservation, Settled};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redis,
    Nats,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Nats => "nats",
        }
    }
}

/// A store server of one backend, killed on drop.
struct Server {
    backend: Backend,
    proc: Proc,
}

impl Server {
    async fn start(backend: Backend) -> Server {
        let proc = match backend {
            Backend::Redis => start_redis().await,
            Backend::Nats => start_nats().await,
        };
        Server { backend, proc }
    }

    /// A bridge config using this store, plus `extra` pairs.
    fn config(&self, extra: &[(&str, &str)]) -> Config {
        let url = match self.backend {
            Backend::Redis => self.proc.url("redis"),
            Backend::Nats => self.proc.url("nats"),
        };
        let url_key = format!("dedup.{}.url", self.backend.name());
        let mut pairs = vec![
            ("dedup.backend", self.backend.name()),
            (url_key.as_str(), url.as_str()),
        ];
        pairs.extend_from_slice(extra);
        config(&pairs)
    }

    /// A fresh store client, as a new replica would open it (its own instance id).
    async fn store(&self) -> Arc<dyn DedupStore> {
        lark_bridge::build_dedup(&self.config(&[]), &scratch_metrics())
            .await
            .unwrap()
    }
}

/// `lark_bridge_dedup_total{backend,result}` of one replica, over HTTP.
async fn dedup_metric(r: &Replica, backend: Backend, result: &str) -> f64 {
    metric(
        &r.bridge.metrics_text().await,
        "lark_bridge_dedup_total",
        &[("backend", backend.name()), ("result", result)],
    )
}

/// `lark_bridge_dedup_store_errors_total{backend}` of one replica, over HTTP.
async fn store_errors(r: &Replica, backend: Backend) -> f64 {
    metric(
        &r.bridge.metrics_text().await,
        "lark_bridge_dedup_store_errors_total",
        &[("backend", backend.name())],
    )
}

const LEASE: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(3600);

fn owner(r: Reservation) -> Owner {
    match r {
        Reservation::New(o) => o,
        other => panic!("expected a new reservation, got {other:?}"),
    }
}

// ---------------------------------------------------------------- scenarios

/// Reserve → commit → duplicate, across two replicas' store clients.
async fn reserve_commit_duplicate(backend: Backend) {
    let server = Server::start(backend).await;
    let (a, b) = (server.store().await, server.store().await);
    assert_eq!(a.backend(), backend.name());
    // Characters a NATS KV key may not hold: the store must hash them away.
    let id = "ev:1 with spaces/*>";

    let o = owner(a.reserve(id, LEASE).await.unwrap());
    assert_eq!(b.reserve(id, LEASE).await.unwrap(), Reservation::InFlight);
    assert_eq!(a.reserve(id, LEASE).await.unwrap(), Reservation::InFlight);
    assert_eq!(a.commit(id, &o, TTL).await.unwrap(), Settled::Done);
    assert_eq!(b.reserve(id, LEASE).await.unwrap(), Reservation::Duplicate);
    // Settling twice does nothing.
    assert_eq!(a.commit(id, &o, TTL).await.unwrap(), Settled::Lost);
    assert_eq!(a.release(id, &o).await.unwrap(), Settled::Lost);
    assert_eq!(b.reserve(id, LEASE).await.unwrap(), Reservation::Duplicate);
    // Another id is independent.
    assert!(matches!(
        b.reserve("ev:2", LEASE).await.unwrap(),
        Reservation::New(_)
    ));
    a.check().await.unwrap();
    assert_stored_committed(&server, id).await;
}

/// What an operator finds in the store: Redis `key_prefix` + id = "committed"; NATS KV key =
/// hex SHA-256 of the id, value JSON with state "committed".
async fn assert_stored_committed(server: &Server, id: &str) {
    match server.backend {
        Backend::Redis => {
            let client = redis::Client::open(server.proc.url("redis")).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let v: String = redis::cmd("GET")
                .arg(format!("lark-bridge:{id}"))
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(v, "committed");
            let ttl_ms: i64 = redis::cmd("PTTL")
                .arg(format!("lark-bridge:{id}"))
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(ttl_ms > 3_500_000 && ttl_ms <= 3_600_000, "PTTL {ttl_ms}");
        }
        Backend::Nats => {
            use sha2::Digest;
            let client = async_nats::connect(server.proc.url("nats")).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let kv = js.get_key_value("lark_bridge_dedup").await.unwrap();
            let key = hex::encode(sha2::Sha256::digest(id.as_bytes()));
            let v = kv.get(key).await.unwrap().expect("the key exists");
            let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
            assert_eq!(v["state"], "committed", "{v}");
            assert!(v["owner"].is_string() && v["until_ms"].is_i64(), "{v}");
            let status = kv.status().await.unwrap();
            assert_eq!(status.history(), 1);
            assert_eq!(status.max_age(), Duration::from_secs(86_400));
        }
    }
}

/// A released id can be reserved again (on NATS: over the delete tombstone), and the released
/// owner can no longer settle it.
async fn release_then_reserve_again(backend: Backend) {
    let server = Server::start(backend).await;
    let (a, b) = (server.store().await, server.store().await);
    let id = "ev_release";

    let first = owner(a.reserve(id, LEASE).await.unwrap());
    assert_eq!(a.release(id, &first).await.unwrap(), Settled::Done);
    assert_eq!(a.release(id, &first).await.unwrap(), Settled::Lost);
    let second = owner(b.reserve(id, LEASE).await.unwrap());
    assert_ne!(first, second);
    assert_eq!(a.commit(id, &first, TTL).await.unwrap(), Settled::Lost);
    assert_eq!(a.reserve(id, LEASE).await.unwrap(), Reservation::InFlight);
    assert_eq!(b.commit(id, &second, TTL).await.unwrap(), Settled::Done);
    assert_eq!(a.reserve(id, LEASE).await.unwrap(), Reservation::Duplicate);
}

/// A lease that expires is taken over; the late owner's commit and release are Lost and leave
/// the new owner's reservation in place.
async fn expired_lease_is_taken_over(backend: Backend) {
    let server = Server::start(backend).await;
    let (a, b) = (server.store().await, server.store().await);
    let id = "ev_lease";
    let short = Duration::from_millis(300);

    let old = owner(a.reserve(id, short).await.unwrap());
    assert_eq!(b.reserve(id, LEASE).await.unwrap(), Reservation::InFlight);
    // Time itself is the signal here: wait past the lease.
    tokio::time::sleep(short + Duration::from_millis(150)).await;
    let new = owner(b.reserve(id, LEASE).await.unwrap());
    assert_eq!(a.commit(id, &old, TTL).await.unwrap(), Settled::Lost);
    assert_eq!(a.release(id, &old).await.unwrap(), Settled::Lost);
    // The new owner still holds it …
    assert_eq!(a.reserve(id, LEASE).await.unwrap(), Reservation::InFlight);
    // … and settles it.
    assert_eq!(b.commit(id, &new, TTL).await.unwrap(), Settled::Done);
    assert_eq!(a.reserve(id, LEASE).await.unwrap(), Reservation::Duplicate);
    assert_eq!(a.release(id, &old).await.unwrap(), Settled::Lost);
    assert_eq!(a.reserve(id, LEASE).await.unwrap(), Reservation::Duplicate);
}

/// Two replicas get the same 20 events at the same moment: each id is published exactly once
/// across both sinks; the copy that finds it in flight gets 503 (Lark redelivers), and a
/// redelivery gets 200 without publishing.
async fn two_replicas_same_event(backend: Backend) {
    let server = Server::start(backend).await;
    let mut a = Replica::start(server.config(&[])).await;
    let mut b = Replica::start(server.config(&[])).await;
    let Race {
        events,
        unavailable,
        ok,
    } = race(&mut a, &mut b, 20).await;

    assert_eq!(sum(&a, &b, backend, "new").await, 20.0);
    assert_eq!(sum(&a, &b, backend, "in_flight").await, unavailable as f64);
    // A 200 that did not publish was a duplicate (the winner had already committed).
    assert_eq!(sum(&a, &b, backend, "duplicate").await, (ok - 20) as f64);

    // Lark's redelivery, to either replica: 200, nothing published.
    redeliver_to_both(&mut a, &mut b, &events).await;
    assert_eq!(
        sum(&a, &b, backend, "duplicate").await,
        (ok - 20 + 40) as f64
    );
    assert_eq!(sum(&a, &b, backend, "new").await, 20.0);
    assert_eq!(sum(&a, &b, backend, "error").await, 0.0);
}

/// `lark_bridge_dedup_total{result}` summed over two replicas.
async fn sum(a: &Replica, b: &Replica, backend: Backend, result: &str) -> f64 {
    dedup_metric(a, backend, result).await + dedup_metric(b, backend, result).await
}

/// The store dies mid-run: 503 within the budget and nothing published, `/readyz` 503; it comes
/// back: without restarting the bridge, the redelivery is published once and `/readyz` is 200.
async fn store_killed_and_restarted(backend: Backend) {
    let mut server = Server::start(backend).await;
    let mut r = Replica::start(server.config(&[])).await;
    // Every series exists before its first event.
    assert_eq!(dedup_metric(&r, backend, "error").await, 0.0);
    assert_eq!(store_errors(&r, backend).await, 0.0);

    let warm = ticket("hd_1");
    assert_eq!(post(&r.bridge.url, &warm).await.0, 200);
    assert_eq!(r.published(), vec![warm.event_id.clone()]);

    server.proc.kill();
    let ev = ticket("hd_1");
    let started = Instant::now();
    let (status, body) = post(&r.bridge.url, &ev).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    assert!(r.published().is_empty(), "published without the store");
    let ready = r.bridge.wait_ready(503).await;
    assert!(ready["failed"]["dedup"].is_string(), "{ready}");
    assert!(dedup_metric(&r, backend, "error").await >= 1.0);
    assert!(store_errors(&r, backend).await >= 1.0);
    let text = r.bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "lark_bridge_dedup_store_up",
            &[("backend", backend.name())]
        ),
        0.0
    );
    assert!(
        metric(
            &text,
            "lark_bridge_requests_total",
            &[("source", "webhook"), ("outcome", "unavailable")]
        ) >= 1.0
    );

    server.proc.restart().await;
    r.bridge.wait_ready(200).await;
    let (status, body) = post(&r.bridge.url, &ev).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(r.published(), vec![ev.event_id.clone()]);
    // And it is remembered again.
    assert_eq!(post(&r.bridge.url, &ev).await.0, 200);
    assert!(r.published().is_empty());
    assert_eq!(dedup_metric(&r, backend, "duplicate").await, 1.0);
    assert_eq!(dedup_metric(&r, backend, "new").await, 2.0);
}

/// `dedup.on_store_error = "publish"`: with the store down the event is still published and
/// answered 200 — possibly twice (no dedup), never lost.
async fn on_store_error_publish(backend: Backend) {
    let mut server = Server::start(backend).await;
    let mut r = Replica::start(server.config(&[("dedup.on_store_error", "publish")])).await;
    server.proc.kill();

    let ev = ticket("hd_1");
    let started = Instant::now();
    let (status, body) = post(&r.bridge.url, &ev).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(r.published(), vec![ev.event_id.clone()]);
    // The redelivery is published again: the documented price of this setting.
    assert_eq!(post(&r.bridge.url, &ev).await.0, 200);
    assert_eq!(r.published(), vec![ev.event_id.clone()]);
    assert_eq!(dedup_metric(&r, backend, "error").await, 2.0);
    assert!(store_errors(&r, backend).await >= 2.0);
    assert_eq!(dedup_metric(&r, backend, "new").await, 0.0);
}

macro_rules! for_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod with_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Redis).await
                }
            )*
        }
        mod with_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Nats).await
                }
            )*
        }
    };
}

for_both_backends!(
    reserve_commit_duplicate,
    release_then_reserve_again,
    expired_lease_is_taken_over,
    two_replicas_same_event,
    store_killed_and_restarted,
    on_store_error_publish,
);

/// A stalled server (SIGSTOP: the connection stays open, nothing answers) makes store calls
/// fail well within the response budget instead of hanging; after SIGCONT the same client works
/// again. A reservation sent into the stall may still land when the server wakes: it blocks that
/// id for one lease only.
async fn stalled_store_fails_fast_and_recovers(backend: Backend) {
    let server = Server::start(backend).await;
    let cfg = server.config(&[]);
    let store = lark_bridge::build_dedup(&cfg, &scratch_metrics())
        .await
        .unwrap();
    owner(store.reserve("ev_before", LEASE).await.unwrap());

    server.proc.signal("-STOP");
    let short = Duration::from_millis(300);
    let started = Instant::now();
    let r = store.reserve("ev_stalled", short).await;
    assert!(r.is_err(), "{r:?}");
    assert!(store.check().await.is_err());
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "two calls took {elapsed:?}"
    );
    server.proc.signal("-CONT");

    // Bounded poll: the first call after the stall may still meet the backlog.
    let mut recovered = None;
    for _ in 0..40 {
        if let Ok(r) = store.reserve("ev_after", LEASE).await {
            recovered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(recovered, Some(Reservation::New(_))),
        "{recovered:?}"
    );
    store.check().await.unwrap();
    // The stalled reservation, if it landed, expires with its short lease.
    tokio::time::sleep(short).await;
    owner(store.reserve("ev_stalled", LEASE).await.unwrap());
}

mod stalled {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_redis() {
        super::stalled_store_fails_fast_and_recovers(super::Backend::Redis).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_nats() {
        super::stalled_store_fails_fast_and_recovers(super::Backend::Nats).await
    }
}

/// `dedup.redis.password` (here from `_file`) reaches Redis; a wrong one fails at start with a
/// message that names neither password.
#[tokio::test]
async fn redis_password_is_used_and_never_shown() {
    let server = start_redis_with(&["--requirepass", "right-pw-4711"]).await;
    let url = server.url("redis");

    let pw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw_file.path(), "right-pw-4711\n").unwrap();
    let cfg = config(&[
        ("dedup.backend", "redis"),
        ("dedup.redis.url", &url),
        (
            "dedup.redis.password_file",
            &pw_file.path().display().to_string(),
        ),
    ]);
    let store = lark_bridge::build_dedup(&cfg, &scratch_metrics())
        .await
        .unwrap();
    let o = owner(store.reserve("ev_pw", LEASE).await.unwrap());
    assert_eq!(store.commit("ev_pw", &o, TTL).await.unwrap(), Settled::Done);

    let cfg = config(&[
        ("dedup.backend", "redis"),
        ("dedup.redis.url", &url),
        ("dedup.redis.password", "wrong-pw-0815"),
    ]);
    let Err(e) = lark_bridge::build_dedup(&cfg, &scratch_metrics()).await else {
        panic!("a wrong password connected")
    };
    let msg = e.to_string();
    assert!(msg.starts_with("dedup.redis: "), "{msg}");
    assert!(
        !msg.contains("wrong-pw-0815") && !msg.contains("right-pw-4711"),
        "{msg}"
    );

    // The password in the URL's user-info: redacted in the message.
    let bad_url = url.replace("redis://", "redis://:wrong-pw-0815@");
    let cfg = config(&[("dedup.backend", "redis"), ("dedup.redis.url", &bad_url)]);
    let Err(e) = lark_bridge::build_dedup(&cfg, &scratch_metrics()).await else {
        panic!("a wrong password connected")
    };
    let msg = e.to_string();
    assert!(!msg.contains("wrong-pw-0815"), "{msg}");
    assert!(msg.contains("***@127.0.0.1"), "{msg}");
}

/// `dedup.nats.token` reaches nats-server; a wrong token fails at start, fast, without showing
/// either token.
#[tokio::test]
async fn nats_token_is_used_and_never_shown() {
    let server = start_nats_with(&["--auth", "right-token-4711"]).await;
    let url = server.url("nats");

    let cfg = config(&[
        ("dedup.backend", "nats"),
        ("dedup.nats.url", &url),
        ("dedup.nats.token", "right-token-4711"),
    ]);
    let store = lark_bridge::build_dedup(&cfg, &scratch_metrics())
        .await
        .unwrap();
    let o = owner(store.reserve("ev_tok", LEASE).await.unwrap());
    assert_eq!(
        store.commit("ev_tok", &o, TTL).await.unwrap(),
        Settled::Done
    );
    store.check().await.unwrap();

    let cfg = config(&[
        ("dedup.backend", "nats"),
        ("dedup.nats.url", &url),
        ("dedup.nats.token", "wrong-token-0815"),
    ]);
    let started = Instant::now();
    let Err(e) = lark_bridge::build_dedup(&cfg, &scratch_metrics()).await else {
        panic!("a wrong token connected")
    };
    assert!(started.elapsed() < Duration::from_secs(3));
    let msg = e.to_string();
    assert!(msg.starts_with("dedup.nats: "), "{msg}");
    assert!(
        !msg.contains("wrong-token-0815") && !msg.contains("right-token-4711"),
        "{msg}"
    );
}

/// Metrics for a store built outside a bridge (nothing reads them).
fn scratch_metrics() -> lark_bridge::metrics::Metrics {
    lark_bridge::metrics::Metrics::new(lark_bridge::metrics::Source::Webhook, "channel", "memory")
}
