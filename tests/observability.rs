//! What an operator watches: a black-box run of the real binary that drives every request
//! outcome once and finds each in `/metrics` and in the JSON logs (without a secret), and a check
//! that the dashboard and alert rules reference only metrics the bridge really exports.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_lark::kit::*;
use lark_bridge::simulate::{challenge_request, lark_request};
use lark_protocol::EncryptKey;
use serde_json::{json, Value};

/// The outcomes the first test drives, once each (`forwarded` needs its own bridge).
const DRIVEN: [&str; 11] = [
    "published",
    "duplicate",
    "challenge",
    "ignored",
    "bad_request",
    "unauthorized",
    "method_not_allowed",
    "too_large",
    "overloaded",
    "request_timeout",
    "unavailable",
];

const OBS_KEY: &str = "obs-secret-encrypt-key-91ab";
const OBS_TOKEN: &str = "obs-secret-token-77cd";

struct Running {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    url: String,
    admin: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary with JSON debug logs and wait for both "listening" lines.
fn spawn_bridge(env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lark-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LARK_BRIDGE") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LARK_BRIDGE__SERVER__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__LOG__FORMAT", "json")
        .env("LARK_BRIDGE__LOG__LEVEL", "debug")
        .env("LARK_BRIDGE__LARK__ENCRYPT_KEY", OBS_KEY)
        .env("LARK_BRIDGE__LARK__VERIFICATION_TOKEN", OBS_TOKEN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["message"] == "listening" {
                    let _ = tx.send((
                        v["listener"].as_str().unwrap_or("").to_string(),
                        v["addr"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            sink.lock().unwrap().push(line);
        }
    });
    let (mut url, mut admin) = (String::new(), String::new());
    while url.is_empty() || admin.is_empty() {
        let (which, addr) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("bridge starts");
        match which.as_str() {
            "webhook" => url = format!("http://{addr}/webhook/event"),
            "admin" => admin = format!("http://{addr}"),
            _ => {}
        }
    }
    Running {
        child,
        logs,
        url,
        admin,
    }
}

fn signed(plain: Value, key: &str) -> lark_bridge::simulate::LarkRequest {
    let id = plain["header"]["event_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    lark_request(
        &id,
        &serde_json::to_vec(&plain).unwrap(),
        Some(&EncryptKey::new(key)),
    )
}

fn ticket_plain(id: &str) -> Value {
    lark_bridge::simulate::ticket_event(id, "6626871355780366330", Some(OBS_TOKEN), false)
}

fn other_plain(id: &str) -> Value {
    json!({"schema":"2.0","header":{"event_id":id,"event_type":"im.message.receive_v1","create_time":"1735689600000","token":OBS_TOKEN,"app_id":"cli_x","tenant_key":"tk"},"event":{"message":{"text":"hi"}}})
}

async fn scrape(admin: &str) -> String {
    reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn wait_ready(admin: &str) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{admin}/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never ready");
}

#[tokio::test]
async fn every_outcome_moves_its_counter_and_is_logged_without_secrets() {
    let mut nats = start_nats().await;
    let nats_url = nats.url("nats");
    let b = spawn_bridge(&[
        ("LARK_BRIDGE__SINK__KIND", "nats"),
        ("LARK_BRIDGE__SINK__NATS__URL", &nats_url),
        ("LARK_BRIDGE__SERVER__MAX_BODY_BYTES", "4096"),
        ("LARK_BRIDGE__SERVER__MAX_BUFFERED_BODY_BYTES", "4096"),
        ("LARK_BRIDGE__SERVER__READ_TIMEOUT_MS", "1500"),
        ("LARK_BRIDGE__SERVER__MAX_IN_FLIGHT", "1"),
        ("LARK_BRIDGE__SERVER__RESPONSE_BUDGET_MS", "1000"),
        ("LARK_BRIDGE__DEDUP__LEASE_MS", "2000"),
    ]);
    wait_ready(&b.admin).await;
    let client = reqwest::Client::new();

    // published, duplicate
    let t = signed(ticket_plain("obs_ev_1"), OBS_KEY);
    assert_eq!(post(&b.url, &t).await.0, 200);
    assert_eq!(
        post(&b.url, &signed(ticket_plain("obs_ev_1"), OBS_KEY))
            .await
            .0,
        200
    );
    // challenge
    let c = challenge_request(
        "obs-challenge",
        Some(OBS_TOKEN),
        Some(&EncryptKey::new(OBS_KEY)),
    );
    assert_eq!(post(&b.url, &c).await.0, 200);
    // ignored
    assert_eq!(
        post(&b.url, &signed(other_plain("obs_ev_other"), OBS_KEY))
            .await
            .0,
        200
    );
    // bad_request: not JSON
    let r = client.post(&b.url).body("nope").send().await.unwrap();
    assert_eq!(r.status(), 400);
    // unauthorized: signed with another key
    assert_eq!(
        post(&b.url, &signed(ticket_plain("obs_ev_2"), "another key"))
            .await
            .0,
        401
    );
    // method_not_allowed
    assert_eq!(client.get(&b.url).send().await.unwrap().status(), 405);
    // too_large
    assert_eq!(
        client
            .post(&b.url)
            .body(vec![b'x'; 8192])
            .send()
            .await
            .unwrap()
            .status(),
        413
    );
    // overloaded + request_timeout: a body that never finishes holds the whole body budget.
    let addr = b
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(slow, "POST /webhook/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{{\"a\":").unwrap();
    let mut overloaded = 0;
    for _ in 0..100 {
        let (status, body) = post(&b.url, &signed(ticket_plain("obs_ev_3"), OBS_KEY)).await;
        if status == 503 {
            assert_eq!(body["msg"], "overloaded, retry later");
            overloaded += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        overloaded, 1,
        "a second request while the body budget is held is shed"
    );
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // unavailable: the broker is gone.
    nats.kill();
    let (status, _) = post(&b.url, &signed(ticket_plain("obs_ev_4"), OBS_KEY)).await;
    assert_eq!(status, 503);

    let text = scrape(&b.admin).await;
    for outcome in DRIVEN {
        assert_eq!(
            metric(
                &text,
                "lark_bridge_requests_total",
                &[("source", "webhook"), ("outcome", outcome)]
            ),
            1.0,
            "outcome {outcome}"
        );
        assert_eq!(
            metric(
                &text,
                "lark_bridge_request_duration_seconds_count",
                &[("source", "webhook"), ("outcome", outcome)]
            ),
            1.0,
            "latency of {outcome}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "lark_bridge_verification_failures_total",
            &[("reason", "signature")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_verification_failures_total",
            &[("reason", "parse")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "nats"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "nats"), ("result", "error")]
        ) + metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "nats"), ("result", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "lark_bridge_dedup_total",
            &[("backend", "memory"), ("result", "duplicate")]
        ),
        1.0
    );
    assert_eq!(metric(&text, "lark_bridge_in_flight_requests", &[]), 0.0);
    assert_eq!(
        metric(
            &text,
            "lark_bridge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // The JSON logs: one line per request with its outcome; event requests carry the event id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = b.logs.lock().unwrap().clone();
        let finished: Vec<Value> = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "request finished")
            .collect();
        if finished.len() >= 12 || Instant::now() > deadline {
            for outcome in DRIVEN {
                assert!(
                    finished.iter().any(|v| v["outcome"] == outcome),
                    "no log line for {outcome}"
                );
            }
            let published = finished
                .iter()
                .find(|v| v["outcome"] == "published")
                .unwrap();
            assert_eq!(published["span"]["event_id"], "obs_ev_1");
            assert_eq!(
                published["span"]["event_type"],
                "helpdesk.ticket.created_v1"
            );
            assert!(published["latency_ms"].is_number());
            let all = logs.join("\n");
            assert!(
                !all.contains(OBS_KEY),
                "the encrypt key leaked into the logs"
            );
            assert!(!all.contains(OBS_TOKEN), "the token leaked into the logs");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn forwarded_outcome_is_counted_and_logged() {
    let nats = start_nats().await;
    let nats_url = nats.url("nats");
    let b = spawn_bridge(&[
        ("LARK_BRIDGE__SINK__KIND", "nats"),
        ("LARK_BRIDGE__SINK__NATS__URL", &nats_url),
        ("LARK_BRIDGE__ROUTING__FORWARD_UNKNOWN", "true"),
    ]);
    wait_ready(&b.admin).await;
    assert_eq!(
        post(&b.url, &signed(other_plain("obs_fwd_1"), OBS_KEY))
            .await
            .0,
        200
    );
    let text = scrape(&b.admin).await;
    assert_eq!(
        metric(
            &text,
            "lark_bridge_requests_total",
            &[("source", "webhook"), ("outcome", "forwarded")]
        ),
        1.0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"outcome\":\"forwarded\""))
    {
        assert!(Instant::now() < deadline, "no log line for forwarded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Metric names a PromQL expression or dashboard references.
fn referenced_metrics(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("lark_bridge_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_string());
        i = end;
    }
    out
}

#[tokio::test]
async fn dashboard_and_alerts_reference_only_exported_metrics() {
    let (sink, _rx) = fake_lark::sink::ChannelSink::new();
    let dedup = lark_bridge::dedup::memory::MemoryStore::new(10);
    let metrics = Arc::new(lark_bridge::metrics::Metrics::new(
        lark_bridge::metrics::Source::Webhook,
        "nats",
        "redis",
    ));
    let bridge = Bridge::start(
        config(&[]),
        lark_bridge::Components {
            sink,
            dedup,
            metrics,
        },
    )
    .await;
    let exported = bridge.metrics_text().await;
    // Every sample name, plus every family name (a histogram's base name, as in prose).
    let mut names: std::collections::BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    names.extend(
        exported
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for file in [
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/lark-bridge.json",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let refs = referenced_metrics(&text);
        assert!(!refs.is_empty(), "{file} references no metric");
        for r in refs {
            assert!(
                names.contains(&r),
                "{file} references {r}, which the bridge does not export"
            );
            checked += 1;
        }
    }
    assert!(checked > 5);
    bridge.stop().await.expect("clean shutdown");
}
