//! The Redis store where production runs it (issue 18): over TLS (with a client certificate), in
//! a Redis Cluster with a failover, and behind Sentinel with a failover. Every server is started
//! here on free loopback ports with temp dirs (`redis-server`, `redis-cli`, `openssl`); the
//! guarantees are the ones `dedup_shared.rs` shows for one plain server: two replicas racing →
//! one publish; store gone → 503 and nothing published; store back → the redelivery is
//! published once, without restarting the bridge.

use std::time::{Duration, Instant};

use fake_lark::kit::*;
use lark_bridge::config::Config;
use lark_bridge::metrics::{Metrics, Source};
use lark_bridge::simulate::LarkRequest;

/// The dedup guarantee across two replicas (the kit's [`race`]), then Lark's redelivery of
/// every event to both: 200, nothing published.
async fn race_and_redeliver(a: &mut Replica, b: &mut Replica, n: usize) {
    let r = race(a, b, n).await;
    redeliver_to_both(a, b, &r.events).await;
}

/// Lark redelivering `events` while the store is failing over: every answer is 200 or 503 (never
/// a 200 without dedup: the store is the only way to a publish), posted round-robin to
/// `replicas` until every event got its 200. Returns how long the 503s lasted from `since` and
/// how many there were.
async fn redeliver_until_published(
    replicas: &[&Replica],
    events: &[LarkRequest],
    since: Instant,
    within: Duration,
) -> (Duration, u32) {
    let mut pending: Vec<&LarkRequest> = events.iter().collect();
    let mut unavailable = 0;
    let mut healed = None;
    let mut turn = 0;
    while !pending.is_empty() {
        assert!(
            since.elapsed() < within,
            "{} events still unpublished after {within:?}",
            pending.len()
        );
        let mut still = Vec::new();
        for ev in pending {
            turn += 1;
            let r = replicas[turn % replicas.len()];
            let (status, body) = post(&r.bridge.url, ev).await;
            match status {
                200 => {
                    healed.get_or_insert_with(|| since.elapsed());
                }
                503 => {
                    unavailable += 1;
                    still.push(ev);
                }
                other => panic!("{}: {other} {body}", ev.event_id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            // Lark's redelivery pace, compressed: the loop polls the bridge's answer.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (healed.unwrap_or_default(), unavailable)
}

fn redis_cfg(extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![("dedup.backend", "redis")];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

// ---------------------------------------------------------------- TLS

/// Over TLS with a client certificate (`tls-auth-clients yes`): two replicas racing publish
/// each id once; the server killed → 503, nothing published, `/readyz` names the store; the
/// server back on the same port → the redelivery is published once, without a bridge restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_keeps_the_dedup_guarantees() {
    let pki = TestPki::new();
    let mut server = start_redis_tls(&pki, "server", true).await;
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let (ca, cert, key) = (
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let cfg = || {
        redis_cfg(&[
            ("dedup.redis.url", &url),
            ("dedup.redis.tls_ca_file", &ca),
            ("dedup.redis.tls_cert_file", &cert),
            ("dedup.redis.tls_key_file", &key),
        ])
    };
    let mut a = Replica::start(cfg()).await;
    let mut b = Replica::start(cfg()).await;
    race_and_redeliver(&mut a, &mut b, 10).await;

    server.kill();
    let ev = ticket("hd_tls");
    let started = Instant::now();
    let (status, body) = post(&a.bridge.url, &ev).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(a.published().is_empty(), "published without the store");
    let ready = a.bridge.wait_ready(503).await;
    assert!(ready["failed"]["dedup"].is_string(), "{ready}");

    server.restart().await;
    a.bridge.wait_ready(200).await;
    assert_eq!(post(&a.bridge.url, &ev).await.0, 200);
    assert_eq!(a.published(), vec![ev.event_id.clone()]);
    assert_eq!(post(&b.bridge.url, &ev).await.0, 200);
    assert!(b.published().is_empty());
}

/// The store refuses to start on a certificate it cannot trust: signed by another CA, issued
/// for another name, or no client certificate where the server requires one. The message names
/// the section, never the key file's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_untrusted_server_or_missing_client_certificate_is_refused() {
    let pki = TestPki::new();
    let good = start_redis_tls(&pki, "server", false).await;
    let wrong_name = start_redis_tls(&pki, "wrong-name", false).await;
    let needs_client = start_redis_tls(&pki, "server", true).await;
    let url = |p: &Proc| format!("rediss://127.0.0.1:{}", p.port);
    let key_pem = std::fs::read_to_string(pki.path("client.key")).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap().to_string();

    // Trusted: it connects (the control for the refusals below).
    let cfg = redis_cfg(&[
        ("dedup.redis.url", &url(&good)),
        ("dedup.redis.tls_ca_file", &pki.path("ca.crt")),
    ]);
    let m = Metrics::new(Source::Webhook, "channel", "redis");
    lark_bridge::build_dedup(&cfg, &m).await.expect("trusted");

    for (what, cfg) in [
        (
            "another CA",
            redis_cfg(&[
                ("dedup.redis.url", &url(&good)),
                ("dedup.redis.tls_ca_file", &pki.path("other-ca.crt")),
            ]),
        ),
        (
            "system roots only",
            redis_cfg(&[("dedup.redis.url", &url(&good))]),
        ),
        (
            "another name",
            redis_cfg(&[
                ("dedup.redis.url", &url(&wrong_name)),
                ("dedup.redis.tls_ca_file", &pki.path("ca.crt")),
            ]),
        ),
        (
            "no client certificate",
            redis_cfg(&[
                ("dedup.redis.url", &url(&needs_client)),
                ("dedup.redis.tls_ca_file", &pki.path("ca.crt")),
            ]),
        ),
        (
            "another CA, with a client certificate",
            redis_cfg(&[
                ("dedup.redis.url", &url(&needs_client)),
                ("dedup.redis.tls_ca_file", &pki.path("other-ca.crt")),
                ("dedup.redis.tls_cert_file", &pki.path("client.crt")),
                ("dedup.redis.tls_key_file", &pki.path("client.key")),
            ]),
        ),
    ] {
        let started = Instant::now();
        let Err(e) = lark_bridge::build_dedup(&cfg, &m).await else {
            panic!("{what}: connected")
        };
        assert!(started.elapsed() < Duration::from_secs(3), "{what}");
        let msg = e.to_string();
        assert!(msg.starts_with("dedup.redis: "), "{what}: {msg}");
        assert!(!msg.contains(&key_body), "{what}: {msg}");
        eprintln!("{what}: {msg}");
    }
}

// ---------------------------------------------------------------- Cluster

/// Event requests whose keys live on the master `port` of `cluster` now.
fn tickets_on(cluster: &RedisCluster, port: u16, n: usize) -> Vec<LarkRequest> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = ticket("hd_cluster");
        if cluster.master_of(&format!("lark-bridge:{}", ev.event_id)) == port {
            out.push(ev);
        }
    }
    out
}

/// Three masters with a replica each. Two replicas of the bridge race (one publish per id);
/// then a master is killed (SIGKILL): its ids get 503 during the gap, never a 200 without
/// dedup; once its replica is promoted the bridges heal by themselves, every redelivery is
/// published exactly once, and the ids committed before the kill stay duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_race_and_master_failover() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.urls().join(",");
    let cfg = || {
        redis_cfg(&[
            ("dedup.redis.mode", "cluster"),
            ("dedup.redis.nodes", &seeds),
        ])
    };
    let mut a = Replica::start(cfg()).await;
    let mut b = Replica::start(cfg()).await;
    eprintln!("cluster up, bridges ready: {:?}", started.elapsed());
    assert_eq!(
        a.bridge.metric(
            "lark_bridge_dedup_info",
            &[("backend", "redis"), ("mode", "cluster")]
        ),
        1.0
    );
    race_and_redeliver(&mut a, &mut b, 12).await;

    // Ids on one master, committed before it dies, and others that arrive after.
    let victim = cluster.master_of("lark-bridge:any");
    let before = tickets_on(&cluster, victim, 3);
    let after = tickets_on(&cluster, victim, 3);
    for ev in &before {
        assert_eq!(post(&a.bridge.url, ev).await.0, 200);
    }
    assert_eq!(count_published(&mut [&mut a, &mut b]).len(), 3);
    // Replication is asynchronous: kill only once the replica has every commit.
    poll("the replica caught up", WAIT, || {
        replicas_caught_up(victim).then_some(())
    })
    .await;

    cluster.node(victim).kill();
    let killed = Instant::now();
    let (healed, unavailable) =
        redeliver_until_published(&[&a, &b], &after, killed, Duration::from_secs(20)).await;
    eprintln!("cluster failover: 503 for {healed:?} ({unavailable} answers)");
    assert!(unavailable > 0, "no gap: the failover was not observed");
    assert_ne!(cluster.master_of("lark-bridge:any"), victim);

    let mut count = count_published(&mut [&mut a, &mut b]);
    for ev in &after {
        assert_eq!(count.remove(&ev.event_id), Some(1), "{}", ev.event_id);
    }
    assert!(count.is_empty(), "published again: {count:?}");
    // Every id, before and after the kill, is a duplicate now on either replica.
    for ev in before.iter().chain(&after) {
        assert_eq!(post(&a.bridge.url, ev).await.0, 200);
        assert_eq!(post(&b.bridge.url, ev).await.0, 200);
    }
    assert!(count_published(&mut [&mut a, &mut b]).is_empty());
    // And readiness recovered without a restart (every master answers again).
    a.bridge.wait_ready(200).await;
    b.bridge.wait_ready(200).await;
    eprintln!("cluster test: {:?}", started.elapsed());
}

// ---------------------------------------------------------------- Sentinel

/// One master, one replica, one sentinel. The bridge finds the master through the sentinel and
/// publishes once; the master is killed → 503 until the sentinel promotes the replica, then the
/// bridge follows by itself: the redeliveries are published once, earlier ids stay duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_discovery_and_failover() {
    let started = Instant::now();
    let mut s = RedisSentinel::start().await;
    let sentinel = s.sentinel.url("redis");
    let mut r = Replica::start(redis_cfg(&[
        ("dedup.redis.mode", "sentinel"),
        ("dedup.redis.nodes", &sentinel),
        ("dedup.redis.master_name", "mymaster"),
    ]))
    .await;
    assert_eq!(
        r.bridge.metric(
            "lark_bridge_dedup_info",
            &[("backend", "redis"), ("mode", "sentinel")]
        ),
        1.0
    );

    let before: Vec<_> = (0..3).map(|_| ticket("hd_sentinel")).collect();
    for ev in &before {
        assert_eq!(post(&r.bridge.url, ev).await.0, 200);
        assert_eq!(post(&r.bridge.url, ev).await.0, 200);
    }
    assert_eq!(count_published(&mut [&mut r]).len(), 3);
    let master = s.master.port;
    // The ids really are on the master the sentinel names.
    let key = format!("lark-bridge:{}", before[0].event_id);
    assert_eq!(redis_cli(master, &["get", &key]).trim(), "committed");
    poll("the replica caught up", WAIT, || {
        replicas_caught_up(master).then_some(())
    })
    .await;

    s.master.kill();
    let killed = Instant::now();
    let after: Vec<_> = (0..3).map(|_| ticket("hd_sentinel")).collect();
    let (healed, unavailable) =
        redeliver_until_published(&[&r], &after, killed, Duration::from_secs(30)).await;
    eprintln!("sentinel failover: 503 for {healed:?} ({unavailable} answers)");
    assert!(unavailable > 0, "no gap: the failover was not observed");
    assert_eq!(s.master_port(), s.replica.port);

    let mut count = count_published(&mut [&mut r]);
    for ev in &after {
        assert_eq!(count.remove(&ev.event_id), Some(1), "{}", ev.event_id);
    }
    assert!(count.is_empty(), "published again: {count:?}");
    for ev in before.iter().chain(&after) {
        assert_eq!(post(&r.bridge.url, ev).await.0, 200);
    }
    assert!(count_published(&mut [&mut r]).is_empty());
    r.bridge.wait_ready(200).await;
    eprintln!("sentinel test: {:?}", started.elapsed());
}
