//! Overload fails fast (issue 8): past `server.max_in_flight` the bridge answers 503
//! `overloaded` at once instead of queueing, counts it, and never lets the excess touch the sink;
//! a burst at twice the bound is answered within the response budget, however slow the broker
//! is; and a full memory dedup store evicts the oldest commit (counted), never a reservation,
//! and answers 503 when every entry is in flight. The bridge runs in-process with a channel sink whose acknowledgements are delayed.
//!
//! Each request goes over its own connection, opened before the burst, so the times measured are
//! the bridge's and not the TCP handshakes'.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_lark::kit::{config, metric, ticket_with_id, Bridge, Channeled};
use fake_lark::sink::ChannelSink;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lark_bridge::dedup::memory::MemoryStore;
use lark_bridge::simulate::LarkRequest;
use lark_protocol::event::Outgoing;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

const BOUND: usize = 8;

struct T {
    bridge: Bridge,
    sink: Arc<ChannelSink>,
    rx: UnboundedReceiver<Outgoing>,
}

async fn start(pairs: &[(&str, &str)]) -> T {
    start_with_store(pairs, 10_000).await.0
}

/// A bridge over a memory store of `capacity` ids that counts its evictions in the bridge's
/// metrics, as `Components::from_config` builds it.
async fn start_with_store(pairs: &[(&str, &str)], capacity: usize) -> (T, Arc<MemoryStore>) {
    let c = Channeled::with_capacity(config(pairs), capacity).await;
    (
        T {
            bridge: c.bridge,
            sink: c.sink,
            rx: c.rx,
        },
        c.dedup,
    )
}

/// One answer, and how long it took from writing the request.
#[derive(Debug)]
struct Answer {
    id: String,
    status: u16,
    body: Value,
    took: Duration,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An open HTTP/1.1 connection to the bridge.
async fn connect(url: &str) -> Sender {
    let uri: hyper::Uri = url.parse().unwrap();
    let addr = uri.authority().unwrap().as_str().to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn post(mut sender: Sender, url: &str, r: LarkRequest) -> Answer {
    let uri: hyper::Uri = url.parse().unwrap();
    let mut req = hyper::Request::post(uri.path())
        .header("host", uri.authority().unwrap().as_str())
        .body(Full::new(r.body.clone()))
        .unwrap();
    for (k, v) in &r.headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    sender.ready().await.unwrap();
    let started = Instant::now();
    let resp = sender.send_request(req).await.expect("bridge answers");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let took = started.elapsed();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        id: r.event_id,
        status,
        body,
        took,
    }
}

/// `n` distinct ticket events, each on its own pre-opened connection, sent at once.
async fn burst(url: &str, n: usize, tag: &str) -> Vec<Answer> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect(url).await);
    }
    let reqs: Vec<LarkRequest> = (0..n)
        .map(|i| ticket_with_id(&format!("ev_{tag}_{i:03}"), "hd"))
        .collect();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(reqs)
        .map(|(c, r)| {
            let url = url.to_string();
            tokio::spawn(async move { post(c, &url, r).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

fn outcome(text: &str, o: &str) -> f64 {
    metric(
        text,
        "lark_bridge_requests_total",
        &[("source", "webhook"), ("outcome", o)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_excess_is_shed_fast_and_every_200_is_published_once() {
    let mut t = start(&[("server.max_in_flight", &BOUND.to_string())]).await;
    // Slow enough that the first BOUND requests are still in flight when the rest arrive.
    let delay = Duration::from_millis(1500);
    t.sink.set_delay(delay);
    let n = BOUND * 4;
    let answers = burst(&t.bridge.url, n, "shed").await;

    let ok: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(
        ok.len() + shed.len(),
        n,
        "only 200 and 503 expected: {answers:?}"
    );
    assert_eq!(
        ok.len(),
        BOUND,
        "exactly the bound is admitted: {answers:?}"
    );
    for a in &shed {
        assert_eq!(a.body, json!({"msg": "overloaded, retry later"}), "{a:?}");
        assert!(
            a.took < Duration::from_millis(100),
            "shedding must not wait: {a:?}"
        );
    }
    for a in &ok {
        assert_eq!(a.body, json!({"msg": "success"}), "{a:?}");
        assert!(
            a.took >= delay,
            "a 200 before the broker acknowledged: {a:?}"
        );
    }

    // Every 200 reached the sink exactly once; nothing shed did.
    let mut published = Vec::new();
    while let Ok(ev) = t.rx.try_recv() {
        published.push(ev.attrs.id.clone());
    }
    let acked: HashSet<&str> = ok.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(published.len(), BOUND, "published: {published:?}");
    assert_eq!(
        published.iter().map(String::as_str).collect::<HashSet<_>>(),
        acked,
        "published ids differ from the ids answered 200"
    );

    let text = t.bridge.metrics_text().await;
    assert_eq!(outcome(&text, "overloaded"), (n - BOUND) as f64);
    assert_eq!(outcome(&text, "published"), BOUND as f64);
    assert_eq!(
        t.bridge.metrics.in_flight.get(),
        0,
        "in-flight gauge leaked"
    );

    // The bound frees up: once the slow requests are done, the next one is admitted.
    t.sink.set_delay(Duration::ZERO);
    let again = burst(&t.bridge.url, 1, "after").await;
    assert_eq!(again[0].status, 200, "{again:?}");
    assert_eq!(t.rx.recv().await.unwrap().attrs.id, again[0].id);
    t.bridge.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_twice_the_bound_is_answered_within_the_budget() {
    let budget = Duration::from_millis(600);
    let mut t = start(&[
        ("server.max_in_flight", &BOUND.to_string()),
        ("server.response_budget_ms", &budget.as_millis().to_string()),
    ])
    .await;
    // The broker never acknowledges in time: the worst case for the answer's bound.
    t.sink.set_delay(Duration::from_secs(5));
    let n = BOUND * 2;
    let answers = burst(&t.bridge.url, n, "budget").await;

    let slack = Duration::from_millis(250);
    for a in &answers {
        assert_eq!(a.status, 503, "{a:?}");
        assert!(
            a.took <= budget + slack,
            "answered after the budget ({budget:?} + {slack:?}): {a:?}"
        );
    }
    let overloaded = answers
        .iter()
        .filter(|a| a.body == json!({"msg": "overloaded, retry later"}))
        .count();
    let timed_out = answers
        .iter()
        .filter(|a| {
            a.body == json!({"msg": "broker did not acknowledge within the response budget"})
        })
        .count();
    assert_eq!(
        (overloaded, timed_out),
        (BOUND, BOUND),
        "the bound's worth time out at the budget, the rest are shed: {answers:?}"
    );
    for a in answers
        .iter()
        .filter(|a| a.body["msg"] != "overloaded, retry later")
    {
        assert!(a.took >= budget, "gave up before the budget: {a:?}");
    }

    let text = t.bridge.metrics_text().await;
    assert_eq!(outcome(&text, "overloaded"), BOUND as f64);
    assert_eq!(outcome(&text, "unavailable"), BOUND as f64);
    assert_eq!(outcome(&text, "published"), 0.0);
    assert!(
        t.rx.try_recv().is_err(),
        "nothing is published unacknowledged"
    );
    t.bridge.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_store_evicts_the_oldest_commit_and_refuses_when_all_are_in_flight() {
    const CAPACITY: usize = 4;
    let (mut t, store) = start_with_store(&[], CAPACITY).await;
    // Fill the store with reservations still in flight.
    t.sink.set_delay(Duration::from_millis(800));
    let url = t.bridge.url.clone();
    let slow = tokio::spawn(async move { burst(&url, CAPACITY, "held").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.len() < CAPACITY {
        assert!(Instant::now() < deadline, "reservations never made");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every entry is a live reservation: no room, and none may be evicted.
    let refused = burst(&t.bridge.url, 1, "refused").await;
    assert_eq!(refused[0].status, 503, "{refused:?}");
    assert_eq!(refused[0].body, json!({"msg": "dedup store unavailable"}));
    let held = slow.await.unwrap();
    assert!(held.iter().all(|a| a.status == 200), "{held:?}");
    let text = t.bridge.metrics_text().await;
    assert_eq!(metric(&text, "lark_bridge_dedup_evictions_total", &[]), 0.0);

    // Now all four are committed: a new id evicts the oldest commit, and it is counted.
    t.sink.set_delay(Duration::ZERO);
    let fresh = burst(&t.bridge.url, 1, "fresh").await;
    assert_eq!(fresh[0].status, 200, "{fresh:?}");
    assert_eq!(store.len(), CAPACITY);
    assert_eq!(store.evictions(), 1);
    let text = t.bridge.metrics_text().await;
    assert_eq!(metric(&text, "lark_bridge_dedup_evictions_total", &[]), 1.0);
    assert_eq!(outcome(&text, "published"), (CAPACITY + 1) as f64);
    assert_eq!(outcome(&text, "unavailable"), 1.0);
    let mut published = 0;
    while t.rx.try_recv().is_ok() {
        published += 1;
    }
    assert_eq!(
        published,
        CAPACITY + 1,
        "the refused event was not published"
    );
    t.bridge.stop().await.expect("clean shutdown");
}
