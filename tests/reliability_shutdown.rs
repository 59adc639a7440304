//! Graceful shutdown under load (issue 10): the real `lark-bridge` binary publishing to a real
//! NATS JetStream, four clients posting as fast as it answers, then SIGTERM while requests are
//! provably in flight (the broker is frozen with SIGSTOP so they cannot finish early). The
//! listener must close at once, the in-flight requests must still be answered (200 once the
//! broker is back, or 503), the process must exit 0 within `server.shutdown_grace_secs`, and
//! every event answered 200 must be in the stream exactly once.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_lark::kit::{metric, start_nats, ticket, KEY, TOKEN};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const GRACE_SECS: u64 = 8;
const WORKERS: usize = 4;

fn signal(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Start the binary with the NATS sink; returns it with its webhook and admin addresses (read
/// from its JSON "listening" logs, so both can bind port 0).
async fn start_bridge(
    nats_url: &str,
) -> (
    tokio::process::Child,
    String,
    String,
    Arc<Mutex<Vec<String>>>,
) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lark-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LARK_BRIDGE") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .env("LARK_BRIDGE__SERVER__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__ADMIN__LISTEN", "127.0.0.1:0")
        .env(
            "LARK_BRIDGE__SERVER__SHUTDOWN_GRACE_SECS",
            GRACE_SECS.to_string(),
        )
        .env("LARK_BRIDGE__LOG__FORMAT", "json")
        .env("LARK_BRIDGE__LARK__ENCRYPT_KEY", KEY)
        .env("LARK_BRIDGE__LARK__VERIFICATION_TOKEN", TOKEN)
        .env("LARK_BRIDGE__SINK__KIND", "nats")
        .env("LARK_BRIDGE__SINK__NATS__URL", nats_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the bridge starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (mut webhook, mut admin) = (None, None);
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while webhook.is_none() || admin.is_none() {
            let Some(line) = lines.next_line().await.unwrap() else {
                break;
            };
            logs.lock().unwrap().push(line.clone());
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "listening" {
                let addr = v["addr"].as_str().unwrap().to_string();
                match v["listener"].as_str() {
                    Some("webhook") => webhook = Some(addr),
                    _ => admin = Some(addr),
                }
            }
        }
    })
    .await;
    assert!(
        found.is_ok() && webhook.is_some(),
        "no listening logs: {:?}",
        logs.lock().unwrap()
    );
    // Keep draining stderr so the bridge never blocks on a full pipe.
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    (child, webhook.unwrap(), admin.unwrap(), logs)
}

async fn stream_ids(nats_url: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let mut s = js.get_stream("LARK_HELPDESK").await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut ids = Vec::new();
    if state.messages == 0 {
        return ids;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        ids.push(m.headers.get("Nats-Msg-Id").unwrap().as_str().to_string());
    }
    ids
}

#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<String>>,
    acked_count: AtomicU64,
    unavailable: AtomicU64,
    other: Mutex<Vec<String>>,
    /// Requests inside the bridge when SIGTERM was sent, and how they ended.
    in_flight_at_term: Mutex<Vec<String>>,
    transport_errors_after_term: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_in_flight_requests_and_loses_no_acknowledged_event() {
    let nats = start_nats().await;
    let nats_url = nats.url("nats");
    let (mut child, webhook, admin, logs) = start_bridge(&nats_url).await;
    let pid = child.id().unwrap();
    let url = format!("http://{webhook}/webhook/event");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let metrics = |client: reqwest::Client, admin: String| async move {
        client
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Ready: the sink is connected and the stream exists.
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(r) = client.get(format!("http://{admin}/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "the bridge never became ready");

    let tally = Arc::new(Tally::default());
    let term_sent = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, url, tally, term_sent) = (
            client.clone(),
            url.clone(),
            tally.clone(),
            term_sent.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Bounded: at most 5000 requests per worker; it stops at the first transport error
            // after SIGTERM (the listener is gone).
            for _ in 0..5000 {
                let before_term = !term_sent.load(Ordering::SeqCst);
                if !before_term && tally.transport_errors_after_term.load(Ordering::SeqCst) > 0 {
                    break;
                }
                let r = ticket("6626871355780366330");
                let mut req = client.post(&url).body(r.body.clone());
                for (k, v) in &r.headers {
                    req = req.header(*k, v);
                }
                let res = req.send().await;
                let after_term = term_sent.load(Ordering::SeqCst);
                let outcome = match &res {
                    Ok(resp) => resp.status().as_u16().to_string(),
                    Err(_) => "transport error".to_string(),
                };
                if before_term && after_term {
                    tally
                        .in_flight_at_term
                        .lock()
                        .unwrap()
                        .push(outcome.clone());
                }
                match res.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        tally.acked.lock().unwrap().push(r.event_id.clone());
                        tally.acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(503) => {
                        tally.unavailable.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(s) => tally.other.lock().unwrap().push(s.to_string()),
                    Err(e) if after_term => {
                        let _ = e;
                        tally
                            .transport_errors_after_term
                            .fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Err(e) => tally
                        .other
                        .lock()
                        .unwrap()
                        .push(format!("before SIGTERM: {e}")),
                }
            }
        }));
    }

    // Let the load run until a few dozen events are acknowledged.
    let warm = tokio::time::timeout(Duration::from_secs(20), async {
        while tally.acked_count.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        warm.is_ok(),
        "no load got through: {:?}",
        tally.other.lock().unwrap()
    );

    // Freeze the broker: every worker's next request is held inside the bridge, waiting for
    // its PubAck. Wait until the bridge reports all of them in flight.
    nats.signal("-STOP");
    let held = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let text = metrics(client.clone(), admin.clone()).await;
            if metric(&text, "lark_bridge_in_flight_requests", &[]) >= WORKERS as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if held.is_err() {
        nats.signal("-CONT");
        panic!("the requests never piled up in flight");
    }

    let term_at = Instant::now();
    term_sent.store(true, Ordering::SeqCst);
    signal("TERM", pid);

    // The listener closes at once, while the drain still waits on the frozen broker.
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match tokio::net::TcpStream::connect(&webhook).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    let still_running = child.try_wait().unwrap().is_none();
    nats.signal("-CONT");
    assert!(refused.is_ok(), "the listener still accepts after SIGTERM");
    assert!(
        still_running,
        "the bridge exited without draining its in-flight requests"
    );

    // The bridge finishes what it holds, then exits 0 within the grace.
    let exit = tokio::time::timeout(Duration::from_secs(GRACE_SECS + 2), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit {} s after SIGTERM", GRACE_SECS + 2))
        .unwrap();
    let took = term_at.elapsed();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(15), w)
            .await
            .expect("a client never finished")
            .unwrap();
    }
    let logs = logs.lock().unwrap().join("\n");
    assert_eq!(exit.code(), Some(0), "exit {exit:?}; logs:\n{logs}");
    assert!(
        took < Duration::from_secs(GRACE_SECS),
        "exit took {took:?} (grace {GRACE_SECS} s)"
    );
    assert!(
        logs.contains("\"stopped\""),
        "no clean stop in the logs:\n{logs}"
    );

    // Requests that were inside the bridge at SIGTERM were answered, not dropped.
    let in_flight = tally.in_flight_at_term.lock().unwrap().clone();
    assert!(
        in_flight.len() >= WORKERS,
        "expected the {WORKERS} held requests among {in_flight:?}"
    );
    let answered = in_flight
        .iter()
        .filter(|o| *o == "200" || *o == "503")
        .count();
    assert!(
        answered >= WORKERS,
        "in flight at SIGTERM ended as {in_flight:?}"
    );
    assert!(
        tally.other.lock().unwrap().is_empty(),
        "unexpected answers: {:?}",
        tally.other.lock().unwrap()
    );

    // Every 200 is in the stream, once.
    let acked = tally.acked.lock().unwrap().clone();
    let ids = stream_ids(&nats_url).await;
    let stored: HashSet<&String> = ids.iter().collect();
    assert_eq!(stored.len(), ids.len(), "duplicates in the stream");
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are not in the broker: {lost:?}",
        lost.len()
    );
    eprintln!(
        "acked {} (in flight at SIGTERM: {in_flight:?}), 503 {}, in stream {}, exit after {took:?}",
        acked.len(),
        tally.unavailable.load(Ordering::SeqCst),
        ids.len()
    );
}
