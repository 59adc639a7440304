//! The Kafka sink against a real Kafka-protocol broker (tansu): keys, Java-compatible
//! partitioning, headers, bodies, and 503 while the broker is down.

use std::time::{Duration, Instant};

use fake_lark::kit::*;
use rdkafka::message::{Headers, Message};

const TOPIC: &str = "lark.helpdesk.ticket.created.v1";

/// Kafka's Java `Utils.murmur2`, the hash behind `murmur2_random`.
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafkas_own_test_vectors() {
    assert_eq!(murmur2(b"21"), -973_932_308);
    assert_eq!(murmur2(b"foobar"), -790_332_482);
    assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
    assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
    assert_eq!(
        murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
        -58_897_971
    );
    assert_eq!(murmur2(b"abc"), 479_470_107);
}

/// Kafka with ticket.created only (no dead letters): the tests create just its topic.
fn kafka_cfg(brokers: &str, extra: &[(&str, &str)]) -> lark_bridge::config::Config {
    let mut pairs = vec![
        ("sink.kind", "kafka"),
        ("sink.kafka.brokers", brokers),
        ("lark.events", "helpdesk.ticket.created_v1"),
        ("deadletter.enabled", "false"),
    ];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

#[tokio::test]
async fn events_are_keyed_partitioned_like_java_and_carry_headers() {
    let tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    create_topic(&brokers, TOPIC, 3).await;
    let bridge = Bridge::from_config(kafka_cfg(&brokers, &[])).await;
    bridge.wait_ready(200).await;
    let mut sent = Vec::new();
    for i in 0..6 {
        let hd = format!("70900000000000000{i:02}");
        let r = ticket(&hd);
        let (status, body) = post(&bridge.url, &r).await;
        assert_eq!(status, 200, "{body}");
        sent.push((r.event_id.clone(), hd));
    }
    let msgs = consume(&brokers, TOPIC, 3, 6);
    assert_eq!(msgs.len(), 6, "exactly N messages out");
    for (id, hd) in &sent {
        let m = msgs
            .iter()
            .find(|m| payload_id(m).as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not consumed"));
        assert_eq!(m.key(), Some(hd.as_bytes()));
        assert_eq!(
            m.partition(),
            java_partition(hd, 3),
            "partition agrees with Java clients"
        );
        assert_eq!(
            header(m, "content-type"),
            Some("application/cloudevents+json; charset=utf-8")
        );
        // Structured mode: the content type is the only header (normalized-schema.md §3).
        let names: Vec<&str> = m
            .headers()
            .map(|h| h.iter().map(|x| x.key).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            vec!["content-type"],
            "no ce_ header in structured mode"
        );
        let ce: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(ce["id"], id.as_str());
        assert_eq!(ce["data"]["helpdesk_id"], hd.as_str());
    }
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "kafka"), ("result", "ok")]
        ),
        6.0
    );
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn binary_mode_headers() {
    let tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    create_topic(&brokers, TOPIC, 1).await;
    let bridge = Bridge::from_config(kafka_cfg(&brokers, &[("sink.mode", "binary")])).await;
    bridge.wait_ready(200).await;
    let r = ticket("55");
    assert_eq!(post(&bridge.url, &r).await.0, 200);
    let msgs = consume(&brokers, TOPIC, 1, 1);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(header(m, "content-type"), Some("application/json"));
    for (k, v) in [
        ("ce_specversion", "1.0"),
        ("ce_id", r.event_id.as_str()),
        ("ce_type", "com.larksuite.helpdesk.ticket.created.v1"),
        ("ce_partitionkey", "55"),
        ("ce_larkeventtype", "helpdesk.ticket.created_v1"),
        (
            "ce_dataschema",
            "urn:lark-bridge:schema:helpdesk.ticket.created:v1",
        ),
    ] {
        assert_eq!(header(m, k), Some(v), "{k}");
    }
    assert!(
        header(m, "ce_time").is_some()
            && header(m, "ce_source").is_some()
            && header(m, "ce_subject").is_some()
    );
    let data: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(data["helpdesk_id"], "55");
    assert!(data.get("specversion").is_none());
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn missing_topic_is_reported_by_readyz_and_create_topics_creates_it() {
    let tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    let first_probe = |b: &serde_json::Value| b["failed"]["sink"] != "not checked yet";
    let bridge = Bridge::from_config(kafka_cfg(&brokers, &[])).await;
    let ready = bridge.wait_ready_where(503, first_probe).await;
    assert_eq!(
        ready["failed"]["sink"], "kafka: topic lark.helpdesk.ticket.created.v1 missing",
        "{ready}"
    );
    bridge.stop().await.expect("clean shutdown");

    // With the defaults, every topic an event may go to is required: the four helpdesk
    // types of lark.events and the dead letters (raw events are not forwarded by default).
    let mut created_only = kafka_cfg(&brokers, &[]);
    created_only.lark.events = lark_protocol::normalize::HELPDESK_EVENTS
        .map(String::from)
        .to_vec();
    created_only.deadletter.enabled = true;
    create_topic(&brokers, TOPIC, 4).await;
    let bridge = Bridge::from_config(created_only).await;
    let ready = bridge.wait_ready_where(503, first_probe).await;
    assert_eq!(
        ready["failed"]["sink"],
        "kafka: topics lark.deadletter.v1, lark.helpdesk.notification.approve.v1, lark.helpdesk.ticket.updated.v1, lark.helpdesk.ticket_message.created.v1 missing",
        "{ready}"
    );
    bridge.stop().await.expect("clean shutdown");

    let bridge = Bridge::from_config(kafka_cfg(
        &brokers,
        &[
            ("sink.kafka.create_topics", "true"),
            ("sink.kafka.topic_partitions", "4"),
        ],
    ))
    .await;
    bridge.wait_ready(200).await;
    let r = ticket("9");
    assert_eq!(post(&bridge.url, &r).await.0, 200);
    let msgs = consume(&brokers, TOPIC, 4, 1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].partition(), java_partition("9", 4));
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn broker_down_gives_503_without_committing_and_redelivery_publishes() {
    let mut tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    create_topic(&brokers, TOPIC, 1).await;
    let bridge = Bridge::from_config(kafka_cfg(
        &brokers,
        &[
            ("server.response_budget_ms", "1000"),
            ("dedup.lease_ms", "1500"),
        ],
    ))
    .await;
    bridge.wait_ready(200).await;
    assert_eq!(post(&bridge.url, &ticket("1")).await.0, 200);

    tansu.kill();
    let r = ticket("1");
    let t = Instant::now();
    let (status, body) = post(&bridge.url, &r).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    bridge.wait_ready(503).await;

    // The memory-backed broker comes back empty: recreate the topic as an operator would.
    tansu.restart().await;
    create_topic(&brokers, TOPIC, 1).await;
    bridge.wait_ready(200).await;
    let mut status = 0;
    for _ in 0..60 {
        status = post(&bridge.url, &ticket_with_id(&r.event_id, "1")).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status, 200,
        "Lark's redelivery succeeds once the broker is back"
    );
    let msgs = consume(&brokers, TOPIC, 1, 1);
    let ids: Vec<_> = msgs.iter().filter_map(payload_id).collect();
    assert_eq!(
        ids,
        vec![r.event_id.clone()],
        "the event the 503 refused was not committed: it is published now"
    );
    bridge.stop().await.expect("clean shutdown");
}
