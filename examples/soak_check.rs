//! The soak test's consumer (scripts/soak.sh): reads every event back from the broker and
//! compares it with the ids the generator was answered 200 for.
//!
//! Usage:
//!   soak_check nats  NATS_URL STREAM         ACKED_IDS_FILE
//!   soak_check kafka BROKERS  TOPIC[,TOPIC…] PARTITIONS ACKED_IDS_FILE
//!
//! Dead letters count as present under their event id (NATS: `Nats-Msg-Id` `deadletter:{id}`;
//! Kafka: pass the dead-letter topic as a second topic).
//!
//! Prints one JSON object: `in_broker` (messages), `distinct`, `duplicates` (messages beyond
//! the first per id), `acked`, `lost` (acked ids not in the broker) and up to ten lost and
//! ten duplicated ids.
//! Exit status 0 whatever the figures; the script decides what fails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ids, acked_file) = match args.first().map(String::as_str) {
        Some("nats") if args.len() == 4 => (nats_ids(&args[1], &args[2]).await, &args[3]),
        Some("kafka") if args.len() == 5 => {
            let partitions: i32 = args[3].parse().expect("PARTITIONS is a number");
            let ids = args[2]
                .split(',')
                .flat_map(|topic| kafka_ids(&args[1], topic, partitions))
                .collect();
            (ids, &args[4])
        }
        _ => {
            eprintln!(
                "usage: soak_check nats NATS_URL STREAM ACKED_IDS_FILE\n       soak_check kafka BROKERS TOPIC PARTITIONS ACKED_IDS_FILE"
            );
            std::process::exit(2);
        }
    };
    let text = std::fs::read_to_string(acked_file).unwrap_or_else(|e| panic!("{acked_file}: {e}"));
    let acked: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for id in &ids {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let lost: Vec<&str> = acked
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(id))
        .collect();
    let report = serde_json::json!({
        "in_broker": ids.len(),
        "distinct": seen.len(),
        "duplicates": ids.len() - seen.len(),
        "acked": acked.len(),
        "lost": lost.len(),
        "lost_ids": lost.iter().take(10).collect::<Vec<_>>(),
        "duplicate_ids": seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).take(10).collect::<Vec<_>>(),
    });
    println!("{report}");
}

/// Every message of the JetStream stream, through an ordered consumer; the id is the
/// `Nats-Msg-Id` header (the CloudEvent id).
async fn nats_ids(url: &str, stream: &str) -> Vec<String> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("the stream exists");
    let total = s.info().await.expect("stream info").state.messages;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("consume");
    let mut ids = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (ids.len() as u64) < total && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(Ok(m))) => {
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                let id = id
                    .strip_prefix("deadletter:")
                    .map(str::to_string)
                    .unwrap_or(id);
                ids.push(id);
            }
            Ok(Some(Err(e))) => eprintln!("soak_check: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        ids.len() as u64,
        total,
        "read fewer messages than the stream holds"
    );
    ids
}

/// Every message of every partition of the topic, from the beginning to the high watermark
/// (partitions assigned by hand: no consumer group); the id is the `ce_id` header in binary
/// mode, else the structured body's `id`.
fn kafka_ids(brokers: &str, topic: &str, partitions: i32) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "lark-bridge-soak-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in 0..partitions {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        remaining += hi - lo;
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut ids = Vec::with_capacity(remaining as usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (ids.len() as i64) < remaining && Instant::now() < deadline {
        let Some(r) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = r.expect("consume");
        let id = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "ce_id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .or_else(|| {
                let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
                v["id"].as_str().map(str::to_string)
            })
            .unwrap_or_default();
        ids.push(id);
    }
    assert_eq!(
        ids.len() as i64,
        remaining,
        "read fewer messages than the topic holds"
    );
    ids
}
