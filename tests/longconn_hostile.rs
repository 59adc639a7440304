//! The long connection against a malicious or broken peer (issue 15, items 10–16): the fake
//! Lark plays a peer that sends absurd settings, redirects discovery elsewhere, answers with a
//! body that never ends, never reads, floods fragments or junk, and fails every dial. Each test
//! failed against the code before its fix; RELIABILITY.md ("Hostile long-connection peer") has
//! the figures.

use std::time::{Duration, Instant};

use fake_lark::kit::*;
use fake_lark::longconn::{
    event_frames, ticket_payload, Behaviour, FakeLark, Handshake, Push, RequestRecorder,
};
use lark_bridge::config::Config;
use lark_protocol::endpoint::ClientConfig;
use lark_protocol::frame::{Frame, Header};

const APP_ID: &str = "cli_test0000000001";
const APP_SECRET: &str = "app-secret-for-hostile-tests";

async fn start_fake(b: Behaviour) -> FakeLark {
    start_fake_lark(b).await
}

/// Long-connection config against `fake` with the stdout sink and memory dedup.
fn lc_cfg(fake: &FakeLark, extra: &[(&str, &str)]) -> Config {
    longconn_config(fake, (APP_ID, APP_SECRET), extra)
}

fn reconnects(b: &Bridge, reason: &str) -> f64 {
    b.metric(
        "lark_bridge_longconn_reconnects_total",
        &[("reason", reason)],
    )
}

fn h(k: &str, v: &str) -> Header {
    Header {
        key: k.into(),
        value: v.into(),
    }
}

/// An event frame with `headers` after `type=event`, and `payload`.
fn event_with(fake: &FakeLark, headers: Vec<Header>, payload: &[u8]) -> Frame {
    let mut all = vec![h("type", "event")];
    all.extend(headers);
    Frame {
        seq_id: fake.next_seq_id(),
        log_id: 1,
        service: fake.service_id(),
        method: 1,
        headers: all,
        payload: Some(payload.to_vec()),
        ..Default::default()
    }
}

/// Deliver one real event and return the time from its send to its `200`.
async fn real_event_answered(fake: &FakeLark) -> Duration {
    let msg = fake.deliver(ticket_payload(&new_event_id(), "1"), None);
    let r = fake
        .wait_until(WAIT, |f| {
            f.replies()
                .into_iter()
                .find(|r| r.message_id == msg && r.code == Some(200))
        })
        .await
        .expect("the real event is answered 200");
    r.at.duration_since(r.sent_at.unwrap())
}

/// Item 10: PingInterval 9223372036854775807 in the discovery answer, or 4e18 in a pong,
/// overflowed a `Duration` and panicked the process (exit 101, crash loop).
#[tokio::test]
async fn absurd_client_config_values_are_clamped_and_never_panic() {
    let max = ClientConfig {
        reconnect_count: Some(i64::MAX),
        reconnect_interval: Some(i64::MAX),
        reconnect_nonce: Some(i64::MAX),
        ping_interval: Some(i64::MAX),
    };
    let fake = start_fake(Behaviour {
        client_config: Some(max),
        pong_config: Some(ClientConfig {
            ping_interval: Some(4_000_000_000_000_000_000),
            reconnect_interval: Some(-4_000_000_000_000_000_000),
            ..Default::default()
        }),
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(&fake, &[])).await;
    assert!(fake.wait_connections(1, WAIT).await);
    // The first ping is answered with the 4e18 pong: applied (clamped), then used for the
    // next ping and the pong deadline.
    bridge
        .wait_metric("lark_bridge_longconn_ping_rtt_seconds_count", &[], |v| {
            v >= 1.0
        })
        .await;
    assert!(real_event_answered(&fake).await < Duration::from_secs(3));
    assert_eq!(fake.handshakes(), 1, "the connection stayed up");
    bridge.stop().await.expect("run returned without a panic");
}

/// Item 11: a 307 from discovery to another host made the bridge POST the App Secret there.
#[tokio::test]
async fn discovery_never_follows_a_redirect_with_the_app_secret() {
    let elsewhere = RequestRecorder::start().await.unwrap();
    let fake = start_fake(Behaviour {
        discovery_redirect: Some(format!("{}/callback/ws/endpoint", elsewhere.url())),
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(&fake, &[])).await;
    bridge
        .wait_metric(
            "lark_bridge_longconn_reconnects_total",
            &[("reason", "discovery_failed")],
            |v| v >= 2.0,
        )
        .await;
    assert!(
        fake.discovery_calls() >= 2,
        "redirect answered, then retried"
    );
    let seen = elsewhere.requests();
    assert!(
        seen.is_empty(),
        "the redirect target received {} request(s): {:?}",
        seen.len(),
        seen.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
    let body = bridge
        .wait_ready_where(503, |b| b["failed"]["lark"].as_str().is_some())
        .await;
    assert!(
        body["failed"]["lark"].as_str().unwrap().contains("307"),
        "{body}"
    );
    // The real endpoint back: connected.
    fake.set(|b| b.discovery_redirect = None);
    assert!(fake.wait_connections(1, WAIT).await);
    assert!(elsewhere.requests().is_empty());
    bridge.stop().await.unwrap();
}

/// Item 15: a 300 MiB discovery body was read whole (RSS 683 MiB).
#[tokio::test]
async fn a_huge_discovery_answer_is_not_read_whole() {
    let fake = start_fake(Behaviour {
        discovery_body_bytes: Some(300 << 20),
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(&fake, &[])).await;
    bridge
        .wait_metric(
            "lark_bridge_longconn_reconnects_total",
            &[("reason", "discovery_failed")],
            |v| v >= 1.0,
        )
        .await;
    // What left the fake: the 64 KiB read plus what the kernel buffers held, far from 300 MiB.
    let sent = fake.discovery_body_bytes_sent();
    eprintln!("figure: discovery body bytes pulled: {sent}");
    assert!(sent < 32 << 20, "{sent} bytes of the answer were pulled");
    let body = bridge
        .wait_ready_where(503, |b| b["failed"]["lark"].as_str().is_some())
        .await;
    assert!(
        body["failed"]["lark"]
            .as_str()
            .unwrap()
            .contains("larger than 65536 bytes"),
        "{body}"
    );
    fake.set(|b| b.discovery_body_bytes = None);
    assert!(fake.wait_connections(1, WAIT).await);
    bridge.stop().await.unwrap();
}

/// Item 12: a peer that never reads while sending frames with large headers (echoed in every
/// reply) grew the outgoing queue without bound (RSS 1,431 MiB).
#[tokio::test]
async fn a_peer_that_never_reads_is_disconnected_and_the_bridge_reconnects() {
    let fake = start_fake(Behaviour {
        read_frames: false,
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(&fake, &[])).await;
    assert!(fake.wait_connections(1, WAIT).await);
    // Connections from now on read again.
    fake.set(|b| b.read_frames = true);
    let pad = "p".repeat(200 * 1024);
    for i in 0..300 {
        let f = event_with(
            &fake,
            vec![h("message_id", &format!("big_{i}")), h("x-pad", &pad)],
            b"{}",
        );
        fake.push(Push::Frame(f)).unwrap();
    }
    bridge
        .wait_metric(
            "lark_bridge_longconn_reconnects_total",
            &[("reason", "write_stalled")],
            |v| v >= 1.0,
        )
        .await;
    let replied = bridge.metric(
        "lark_bridge_longconn_frames_total",
        &[("kind", "out_reply")],
    );
    eprintln!("figure: replies written before the stalled peer was dropped: {replied}");
    assert!(
        replied < 300.0,
        "dropped before answering everything: {replied}"
    );
    assert!(fake
        .wait_until(WAIT, |f| (f.handshakes() >= 2 && f.connections() == 1)
            .then_some(()))
        .await
        .is_some());
    assert!(real_event_answered(&fake).await < Duration::from_secs(3));
    bridge.stop().await.unwrap();
}

/// Item 13: ~49k distinct short fragment ids cost 17.5 s of CPU (every frame scanned every
/// pending message) and delayed a real event past Lark's 3 s.
#[tokio::test]
async fn a_flood_of_distinct_fragment_ids_does_not_delay_a_real_event() {
    let fake = start_fake(Behaviour::default()).await;
    let bridge = Bridge::from_config(lc_cfg(&fake, &[])).await;
    assert!(fake.wait_connections(1, WAIT).await);
    bridge.wait_ready(200).await;
    let started = Instant::now();
    for i in 0..49_000u32 {
        let f = event_with(
            &fake,
            vec![
                h("message_id", &format!("f{i}")),
                h("sum", "2"),
                h("seq", "0"),
            ],
            b"x",
        );
        fake.push(Push::Frame(f)).unwrap();
    }
    // Queued behind the flood on the same connection: answered only after every fragment was
    // read, so its latency includes the whole flood.
    let latency = real_event_answered(&fake).await;
    let total = started.elapsed();
    eprintln!("figure: 49k fragment ids + 1 event: {total:?}, the event {latency:?}");
    assert!(
        latency < Duration::from_secs(3),
        "the real event behind 49k fragments was answered after {latency:?} (all: {total:?})"
    );
    let dropped = bridge.metric(
        "lark_bridge_longconn_fragments_total",
        &[("result", "dropped_size")],
    );
    assert!(
        dropped >= 49_000.0 - 1024.0,
        "past the cap the oldest made room: {dropped}"
    );
    bridge.stop().await.unwrap();
}

/// Item 14: `ReconnectInterval` 0 plus failing dials made 5,573 discovery requests in 3 s.
#[tokio::test]
async fn reconnect_interval_zero_and_failing_dials_back_off_from_a_floor() {
    let fake = start_fake(Behaviour {
        client_config: Some(ClientConfig {
            reconnect_interval: Some(0),
            reconnect_nonce: Some(0),
            reconnect_count: Some(-1),
            ping_interval: Some(120),
        }),
        handshake: Handshake::Refuse {
            status: 502,
            autherrcode: None,
            msg: "gateway restarting".into(),
        },
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(
        &fake,
        &[("source.long_connection.reconnect_interval_secs", "0")],
    ))
    .await;
    bridge
        .wait_metric(
            "lark_bridge_longconn_reconnects_total",
            &[("reason", "handshake_failed")],
            |v| v >= 1.0,
        )
        .await;
    let t0 = Instant::now();
    let calls0 = fake.discovery_calls();
    // A measurement window, not a synchronization: count the attempts it holds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = fake.discovery_calls() - calls0;
    let window = t0.elapsed();
    eprintln!("figure: {calls} discovery requests in {window:?}");
    // Floor 1 s, then 1–2 s, 2–4 s: at most 3 attempts in 4 s (4 with scheduling slack).
    assert!(
        (1..=4).contains(&calls),
        "{calls} discovery requests in {window:?}"
    );
    assert_eq!(fake.refused_handshakes(), fake.discovery_calls());
    assert!(reconnects(&bridge, "handshake_failed") <= 5.0);
    bridge.stop().await.unwrap();
}

/// The bridge binary in long-connection mode against `fake`, logging in `format`; its stderr
/// is read from the start (a full pipe would stall the bridge's logging, and with it the
/// bridge).
struct Binary {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

fn spawn_binary(fake: &FakeLark, format: &str) -> Binary {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lark-bridge"))
        .env("LARK_BRIDGE__SOURCE__KIND", "long_connection")
        .env("LARK_BRIDGE__LARK__APP_ID", APP_ID)
        .env("LARK_BRIDGE__LARK__APP_SECRET", APP_SECRET)
        .env("LARK_BRIDGE__LARK__DOMAIN", fake.base_url())
        .env("LARK_BRIDGE__ADMIN__LISTEN", "127.0.0.1:0")
        .env(
            "LARK_BRIDGE__SOURCE__LONG_CONNECTION__RECONNECT_NONCE_SECS",
            "0",
        )
        .env("LARK_BRIDGE__LOG__FORMAT", format)
        .env("LARK_BRIDGE__LOG__LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s).await;
        s
    });
    Binary { child, stderr }
}

/// Stop the binary and return its stderr.
async fn stderr_of(mut b: Binary) -> String {
    b.child.start_kill().unwrap();
    let _ = b.child.wait().await;
    String::from_utf8_lossy(&b.stderr.await.unwrap()).into_owned()
}

/// Peer text meant to forge a log line and repaint a terminal.
const FORGED_ID: &str = "m_1\nFORGED INFO lark_bridge: all good \u{1b}[31mred\u{1b}[0m";

/// Item 16: peer-supplied ids were written raw in text logs (forged lines, ANSI escapes), and
/// 100k junk frames produced 199,874 WARN lines (56 MB) in 6 s.
#[tokio::test]
async fn junk_frames_give_a_bounded_number_of_warnings_and_peer_text_is_escaped() {
    let fake = start_fake(Behaviour::default()).await;
    let child = spawn_binary(&fake, "text");
    assert!(fake.wait_connections(1, WAIT).await);
    let started = Instant::now();
    for i in 0..100_000u32 {
        if i % 10 == 0 {
            // Refused events (not JSON), with forged ids.
            let f = event_with(
                &fake,
                vec![h("message_id", FORGED_ID), h("trace_id", FORGED_ID)],
                format!("{{not json {i}").as_bytes(),
            );
            fake.push(Push::Frame(f)).unwrap();
        } else {
            fake.push(Push::Binary(vec![0xff, 0xff, (i % 251) as u8]))
                .unwrap();
        }
    }
    let msg = fake.deliver(ticket_payload(&new_event_id(), "1"), None);
    let answered = fake
        .wait_until(Duration::from_secs(60), |f| f.acked(&msg).then_some(()))
        .await;
    let took = started.elapsed();
    // Lines held back are reported by the next line of the same kind after the one-second
    // window; on a fast machine the whole flood fits in one window, so send one more junk frame
    // once it has passed, and a real event behind it to know it has been read.
    tokio::time::sleep_until((started + Duration::from_millis(1100)).into()).await;
    fake.push(Push::Binary(vec![0xff, 0xff, 0])).unwrap();
    real_event_answered(&fake).await;
    let log = stderr_of(child).await;
    assert!(
        answered.is_some(),
        "the real event behind the junk was answered; log tail: {}",
        &log[log.len().saturating_sub(3000)..]
    );
    // "WARN" whether or not a colour code surrounds it.
    let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "figure: 100k junk frames in {took:?}: {} WARN lines, {} lines, {} bytes of log",
        warns.len(),
        log.lines().count(),
        log.len()
    );
    // Two kinds of warning, at most 5 lines per second each, over the run.
    let bound = 2 * 5 * (took.as_secs() as usize + 2);
    assert!(
        warns.len() <= bound,
        "{} WARN lines in {took:?} (bound {bound})",
        warns.len()
    );
    assert!(
        warns
            .iter()
            .any(|l| l.contains("undecodable frame ignored") && !l.contains("suppressed=0")),
        "the suppressed lines are counted: {warns:?}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no escape sequence reaches the log"
    );
    assert!(
        log.lines().all(|l| !l.starts_with("FORGED")),
        "no forged line"
    );
    assert!(
        log.contains("message_id=m_1\\u{a}FORGED INFO lark_bridge: all good \\u{1b}[31mred"),
        "the id is logged, escaped"
    );
    assert!(!log.contains(APP_SECRET));
}

#[tokio::test]
async fn peer_text_is_escaped_in_json_logs_too() {
    let fake = start_fake(Behaviour::default()).await;
    let child = spawn_binary(&fake, "json");
    assert!(fake.wait_connections(1, WAIT).await);
    let f = event_with(
        &fake,
        vec![h("message_id", FORGED_ID), h("trace_id", FORGED_ID)],
        b"{not json",
    );
    fake.push(Push::Frame(f)).unwrap();
    real_event_answered(&fake).await;
    let log = stderr_of(child).await;
    let mut seen = false;
    let lines: Vec<&str> = log.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // The last line may have been cut by the kill.
            Err(_) if i + 1 == lines.len() => continue,
            Err(e) => panic!("{e}: {line}\n{log}"),
        };
        if let Some(id) = v["span"]["message_id"].as_str() {
            if id.starts_with("m_1") {
                seen = true;
                assert!(!id.contains('\n') && !id.contains('\u{1b}'), "{id:?}");
                assert!(id.starts_with("m_1\\u{a}FORGED"), "{id:?}");
            }
        }
    }
    assert!(seen, "the refused event was logged with its id: {log}");
}

/// The frames of a real event still reassemble after everything above (a sanity check of the
/// fake's fragments against the new bookkeeping).
#[tokio::test]
async fn fragmented_events_still_reassemble() {
    let fake = start_fake(Behaviour::default()).await;
    let bridge = Bridge::from_config(lc_cfg(&fake, &[])).await;
    assert!(fake.wait_connections(1, WAIT).await);
    let frames = event_frames(
        fake.service_id(),
        fake.next_seq_id() + 10,
        "msg_frag",
        "tr",
        &ticket_payload(&new_event_id(), "1"),
        Some(64),
    );
    for f in frames.into_iter().rev() {
        fake.push(Push::Frame(f)).unwrap();
    }
    let r = fake.wait_replies(1, WAIT).await.remove(0);
    assert_eq!((r.message_id.as_str(), r.code), ("msg_frag", Some(200)));
    bridge.stop().await.unwrap();
}
