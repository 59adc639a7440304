//! Long-connection mode (issue 9) end to end: the bridge dials the fake Lark (`fakelark`),
//! publishes to a real nats-server and dedups in memory or a real Redis. Every timing is shrunk
//! through the config, so the suite stays fast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_trait::async_trait;
use fake_lark::kit::*;
use fake_lark::longconn::{event_frames, ticket_payload, Behaviour, FakeLark, Handshake, Push};
use lark_bridge::config::Config;
use lark_bridge::metrics::Metrics;
use lark_bridge::sink::{Ack, PublishError, Sink};
use lark_bridge::Components;
use lark_protocol::endpoint::ClientConfig;
use lark_protocol::event::Outgoing;
use lark_protocol::frame::{Frame, Header};

const APP_ID: &str = "cli_test0000000001";
const APP_SECRET: &str = "app-secret-for-tests";

// ---------- harness ----------

async fn start_fake(b: Behaviour) -> FakeLark {
    start_fake_lark(b).await
}

/// Long-connection config against `fake`, NATS sink on `nats` (or stdout).
fn lc_cfg(fake: &FakeLark, nats: Option<&Proc>, extra: &[(&str, &str)]) -> Config {
    let nats_url = nats.map(|n| n.url("nats")).unwrap_or_default();
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if nats.is_some() {
        pairs.push(("sink.kind", "nats"));
        pairs.push(("sink.nats.url", nats_url.as_str()));
    }
    pairs.extend_from_slice(extra);
    longconn_config(fake, (APP_ID, APP_SECRET), &pairs)
}

/// The NATS sink, remembering when the broker acknowledged each event id, and optionally
/// slowed down (to hold events in flight).
struct Recording {
    inner: Arc<dyn Sink>,
    acks: Arc<Mutex<HashMap<String, Instant>>>,
    delay: Duration,
}

#[async_trait]
impl Sink for Recording {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn publish(&self, ev: &Outgoing) -> Result<Ack, PublishError> {
        tokio::time::sleep(self.delay).await;
        let r = self.inner.publish(ev).await;
        if r.is_ok() {
            self.acks
                .lock()
                .unwrap()
                .insert(ev.attrs.id.clone(), Instant::now());
        }
        r
    }
    async fn check(&self) -> Result<(), String> {
        self.inner.check().await
    }
    async fn flush(&self) {
        self.inner.flush().await
    }
}

type Acks = Arc<Mutex<HashMap<String, Instant>>>;

async fn recording_components(cfg: &Config, delay: Duration) -> (Components, Acks) {
    let inner = lark_bridge::build_sink(cfg).await.unwrap();
    let acks: Acks = Arc::default();
    let sink: Arc<dyn Sink> = Arc::new(Recording {
        inner,
        acks: acks.clone(),
        delay,
    });
    let metrics = Arc::new(Metrics::new(
        lark_bridge::metrics::Source::LongConnection,
        sink.name(),
        cfg.dedup.backend.as_str(),
    ));
    let dedup = lark_bridge::build_dedup(cfg, &metrics).await.unwrap();
    (
        Components {
            sink,
            dedup,
            metrics,
        },
        acks,
    )
}

fn requests(b: &Bridge, outcome: &str) -> f64 {
    b.metric(
        "lark_bridge_requests_total",
        &[("source", "long_connection"), ("outcome", outcome)],
    )
}

fn lc(b: &Bridge, name: &str, label: (&str, &str)) -> f64 {
    b.metric(&format!("lark_bridge_longconn_{name}"), &[label])
}

async fn stream_ids(nats: &Proc) -> Vec<String> {
    let client = async_nats::connect(nats.url("nats")).await.unwrap();
    let js = jetstream::new(client);
    let mut s = js.get_stream("LARK_HELPDESK").await.unwrap();
    let info = s.info().await.unwrap().clone();
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return out;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(m.headers.get("Nats-Msg-Id").unwrap().as_str().to_string());
        }
    }
    out
}

/// An event frame pushed by hand, with `payload` as given.
fn raw_event_frame(fake: &FakeLark, message_id: &str, payload: &[u8]) -> Frame {
    event_frames(
        fake.service_id(),
        fake.next_seq_id(),
        message_id,
        "tr_raw",
        payload,
        None,
    )
    .remove(0)
}

async fn connected(fake: &FakeLark, bridge: &Bridge, n: usize) {
    assert!(fake.wait_connections(n, WAIT).await, "bridge connected");
    bridge.wait_ready(200).await;
}

// ---------- tests ----------

#[tokio::test]
async fn events_are_published_and_acknowledged_only_after_the_broker_ack() {
    let nats = start_nats().await;
    let fake = start_fake(Behaviour::default()).await;
    let cfg = lc_cfg(&fake, Some(&nats), &[]);
    let (c, acks) = recording_components(&cfg, Duration::ZERO).await;
    let bridge = Bridge::start(cfg, c).await;
    connected(&fake, &bridge, 1).await;

    let mut sent = HashMap::new();
    for i in 0..5 {
        let id = new_event_id();
        let msg = fake.deliver(ticket_payload(&id, &format!("4200{i}")), None);
        sent.insert(msg, id);
    }
    let replies = fake.wait_replies(5, WAIT).await;
    assert_eq!(replies.len(), 5, "{replies:?}");
    let mut ids = stream_ids(&nats).await;
    ids.sort();
    let mut want: Vec<String> = sent.values().cloned().collect();
    want.sort();
    assert_eq!(ids, want, "exactly the N events in the stream");
    let acks = acks.lock().unwrap().clone();
    for r in &replies {
        assert_eq!(r.code, Some(200), "{r:?}");
        let event_id = &sent[&r.message_id];
        let acked_at = acks.get(event_id).expect("broker acknowledged the event");
        assert!(*acked_at <= r.at, "reply arrived before the broker ack");
        assert!(r.biz_rt.is_some(), "biz_rt appended");
        assert!(r.trace_id.starts_with("tr_"), "headers echoed");
        assert!(r.at.duration_since(r.sent_at.unwrap()) < Duration::from_millis(2500));
    }
    // Lark's side: app credentials sent at discovery.
    assert_eq!(
        fake.last_app(),
        Some((APP_ID.to_string(), APP_SECRET.to_string()))
    );
    assert_eq!(requests(&bridge, "published"), 5.0);
    assert_eq!(lc(&bridge, "replies_total", ("code", "200")), 5.0);
    assert_eq!(lc(&bridge, "frames_total", ("kind", "in_event")), 5.0);
    assert_eq!(lc(&bridge, "frames_total", ("kind", "out_reply")), 5.0);
    assert!(lc(&bridge, "frames_total", ("kind", "out_ping")) >= 1.0);
    assert_eq!(
        bridge.metric("lark_bridge_longconn_connects_total", &[]),
        1.0
    );
    assert_eq!(bridge.metric("lark_bridge_longconn_connected", &[]), 1.0);
    assert_eq!(fake.replies().len(), 5, "exactly one reply per event");
    assert!(fake.pings() >= 1, "pinged right after connecting");
    bridge.stop().await.unwrap();
    assert_eq!(bridge_gone(&fake).await, 0, "socket closed at shutdown");
}

async fn bridge_gone(fake: &FakeLark) -> usize {
    fake.wait_connections(0, WAIT).await;
    fake.connections()
}

#[tokio::test]
async fn a_duplicate_event_id_is_acknowledged_and_not_published_again() {
    let nats = start_nats().await;
    let fake = start_fake(Behaviour::default()).await;
    let bridge = Bridge::from_config(lc_cfg(&fake, Some(&nats), &[])).await;
    connected(&fake, &bridge, 1).await;
    let id = new_event_id();
    fake.deliver(ticket_payload(&id, "1"), None);
    assert_eq!(fake.wait_replies(1, WAIT).await[0].code, Some(200));
    fake.deliver(ticket_payload(&id, "1"), None);
    let replies = fake.wait_replies(2, WAIT).await;
    assert_eq!(replies[1].code, Some(200));
    assert_eq!(stream_ids(&nats).await, vec![id]);
    assert_eq!(requests(&bridge, "published"), 1.0);
    assert_eq!(requests(&bridge, "duplicate"), 1.0);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn broker_down_gives_500_without_commit_and_the_redelivery_publishes_once() {
    let mut nats = start_nats().await;
    let fake = start_fake(Behaviour {
        redeliver_after: Some(Duration::from_millis(700)),
        max_attempts: 100,
        ..Behaviour::default()
    })
    .await;
    let cfg = lc_cfg(
        &fake,
        Some(&nats),
        &[
            ("server.response_budget_ms", "1000"),
            ("dedup.lease_ms", "1500"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    connected(&fake, &bridge, 1).await;

    nats.kill();
    let id = new_event_id();
    let msg = fake.deliver(ticket_payload(&id, "1"), None);
    let first = fake.wait_replies(1, WAIT).await.remove(0);
    assert_eq!(first.code, Some(500), "{first:?}");
    let took = first.at.duration_since(first.sent_at.unwrap());
    assert!(
        took < Duration::from_millis(1500),
        "inside the budget: {took:?}"
    );
    assert!(!fake.acked(&msg));
    assert!(lc(&bridge, "replies_total", ("code", "500")) >= 1.0);
    assert!(requests(&bridge, "unavailable") >= 1.0);
    assert_eq!(requests(&bridge, "published"), 0.0);

    nats.restart().await;
    let acked = fake
        .wait_until(Duration::from_secs(30), |f| f.acked(&msg).then_some(()))
        .await;
    assert!(acked.is_some(), "redelivery answered 200 after the restart");
    // Published on redelivery: the failed attempt had committed nothing.
    assert_eq!(stream_ids(&nats).await, vec![id.clone()]);
    assert_eq!(requests(&bridge, "published"), 1.0);
    assert_eq!(requests(&bridge, "duplicate"), 0.0);
    let codes: Vec<Option<i64>> = fake.replies().iter().map(|r| r.code).collect();
    assert_eq!(codes.last(), Some(&Some(200)), "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == Some(200)).count(), 1);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_broker_gives_500_within_the_budget() {
    let nats = start_nats().await;
    let fake = start_fake(Behaviour::default()).await;
    let cfg = lc_cfg(
        &fake,
        Some(&nats),
        &[
            ("server.response_budget_ms", "500"),
            ("dedup.lease_ms", "1000"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    connected(&fake, &bridge, 1).await;
    nats.signal("-STOP");
    fake.deliver(ticket_payload(&new_event_id(), "1"), None);
    let replies = fake.wait_replies(1, WAIT).await;
    nats.signal("-CONT");
    let r = &replies[0];
    assert_eq!(r.code, Some(500));
    let took = r.at.duration_since(r.sent_at.unwrap());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1200),
        "answered at the budget: {took:?}"
    );
    assert!(r.biz_rt.unwrap() <= 600, "biz_rt {:?}", r.biz_rt);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn fragmented_payloads_are_reassembled_in_any_order() {
    let nats = start_nats().await;
    let fake = start_fake(Behaviour::default()).await;
    let bridge = Bridge::from_config(lc_cfg(&fake, Some(&nats), &[])).await;
    connected(&fake, &bridge, 1).await;

    // In order, as Lark sends them.
    let a = new_event_id();
    fake.deliver(ticket_payload(&a, "1"), Some(100));
    let r = fake.wait_replies(1, WAIT).await.remove(0);
    assert_eq!(r.code, Some(200));
    let sum: usize = r.frame.header("sum").unwrap().parse().unwrap();
    assert!(sum > 3, "really fragmented: {sum}");
    assert_eq!(
        r.frame.header("seq"),
        Some((sum - 1).to_string().as_str()),
        "reply built from the completing fragment"
    );

    // Reversed: the message completes with fragment 0.
    let b = new_event_id();
    let frames = event_frames(
        fake.service_id(),
        fake.next_seq_id() + 100,
        "msg_reversed",
        "tr_rev",
        &ticket_payload(&b, "2"),
        Some(150),
    );
    for f in frames.into_iter().rev() {
        fake.push(Push::Frame(f)).unwrap();
    }
    let r = fake.wait_replies(2, WAIT).await.remove(1);
    assert_eq!((r.code, r.frame.header("seq")), (Some(200), Some("0")));
    assert_eq!(r.message_id, "msg_reversed");

    let mut ids = stream_ids(&nats).await;
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(lc(&bridge, "fragments_total", ("result", "assembled")), 2.0);
    assert_eq!(
        fake.replies().len(),
        2,
        "one reply per message, not per fragment"
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn incomplete_or_oversized_fragmented_messages_are_dropped_and_counted() {
    let fake = start_fake(Behaviour::default()).await;
    let cfg = lc_cfg(
        &fake,
        None,
        &[
            ("source.long_connection.fragment_timeout_secs", "1"),
            ("server.max_body_bytes", "2000"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    connected(&fake, &bridge, 1).await;

    // Half a message: dropped after the fragment timeout.
    let frames = event_frames(
        fake.service_id(),
        1000,
        "msg_half",
        "tr_half",
        &ticket_payload(&new_event_id(), "1"),
        Some(200),
    );
    fake.push(Push::Frame(frames[0].clone())).unwrap();
    bridge
        .wait_metric(
            "lark_bridge_longconn_fragments_total",
            &[("result", "dropped_timeout")],
            |v| v == 1.0,
        )
        .await;

    // More bytes than server.max_body_bytes: dropped at once, never answered.
    let mut big =
        serde_json::from_slice::<serde_json::Value>(&ticket_payload(&new_event_id(), "1")).unwrap();
    big["event"]["padding"] = serde_json::json!("x".repeat(3000));
    let big = serde_json::to_vec(&big).unwrap();
    for f in event_frames(
        fake.service_id(),
        2000,
        "msg_big",
        "tr_big",
        &big,
        Some(500),
    ) {
        fake.push(Push::Frame(f)).unwrap();
    }
    bridge
        .wait_metric(
            "lark_bridge_longconn_fragments_total",
            &[("result", "dropped_size")],
            |v| v == 1.0,
        )
        .await;
    assert_eq!(requests(&bridge, "too_large"), 1.0);

    // The connection goes on: a fragmented event that fits is published.
    fake.deliver(ticket_payload(&new_event_id(), "1"), Some(300));
    let replies = fake.wait_replies(1, WAIT).await;
    assert_eq!(replies.len(), 1, "no reply for the dropped messages");
    assert_eq!(replies[0].code, Some(200));
    assert_eq!(requests(&bridge, "published"), 1.0);
    assert_eq!(fake.handshakes(), 1);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_frames_and_encrypted_payloads_are_counted_and_the_connection_survives() {
    let fake = start_fake(Behaviour::default()).await;
    let bridge = Bridge::from_config(lc_cfg(&fake, None, &[])).await;
    connected(&fake, &bridge, 1).await;

    fake.push(Push::Binary(b"\xff\xff\xff garbage".to_vec()))
        .unwrap();
    fake.push(Push::Text("hello".into())).unwrap();
    let card = {
        let mut f = raw_event_frame(&fake, "msg_card", b"{}");
        f.set_header("type", "card");
        f
    };
    fake.push(Push::Frame(card)).unwrap();
    fake.push(Push::Frame(raw_event_frame(
        &fake,
        "msg_encrypted",
        br#"{"encrypt":"FIDxGxYjWnkB3Qb2jPyV/w=="}"#,
    )))
    .unwrap();
    fake.push(Push::Frame(raw_event_frame(
        &fake,
        "msg_notjson",
        b"{not json",
    )))
    .unwrap();
    // A control frame nobody asked for.
    fake.push(Push::Frame(Frame {
        method: 0,
        headers: vec![Header {
            key: "type".into(),
            value: "ping".into(),
        }],
        ..Default::default()
    }))
    .unwrap();
    let good = new_event_id();
    fake.deliver(ticket_payload(&good, "1"), None);

    let replies = fake.wait_replies(3, WAIT).await;
    let codes: HashMap<&str, Option<i64>> = replies
        .iter()
        .map(|r| (r.message_id.as_str(), r.code))
        .collect();
    assert_eq!(codes["msg_encrypted"], Some(400));
    assert_eq!(codes["msg_notjson"], Some(400));
    assert_eq!(codes["msg_1"], Some(200), "the connection survived");
    assert!(
        !codes.contains_key("msg_card"),
        "card frames are not answered"
    );
    assert_eq!(replies.len(), 3);
    assert_eq!(requests(&bridge, "bad_request"), 2.0);
    assert_eq!(requests(&bridge, "published"), 1.0);
    assert_eq!(lc(&bridge, "replies_total", ("code", "400")), 2.0);
    assert_eq!(lc(&bridge, "frames_total", ("kind", "in_card")), 1.0);
    assert_eq!(lc(&bridge, "frames_total", ("kind", "in_other")), 3.0);
    assert!(
        bridge.metric(
            "lark_bridge_verification_failures_total",
            &[("reason", "parse")]
        ) >= 3.0
    );
    assert_eq!(
        bridge.metric("lark_bridge_longconn_connects_total", &[]),
        1.0
    );
    assert_eq!(fake.handshakes(), 1);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_closed_socket_reconnects_with_fresh_discovery_and_no_event_is_lost() {
    let nats = start_nats().await;
    let fake = start_fake(Behaviour {
        redeliver_after: Some(Duration::from_millis(1500)),
        max_attempts: 20,
        ..Behaviour::default()
    })
    .await;
    let cfg = lc_cfg(&fake, Some(&nats), &[]);
    // A slow broker keeps events in flight when the socket closes: their replies are lost
    // and only Lark's redelivery (a duplicate by then) gets them acknowledged.
    let (c, _acks) = recording_components(&cfg, Duration::from_millis(300)).await;
    let bridge = Bridge::start(cfg, c).await;
    connected(&fake, &bridge, 1).await;

    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    for round in 0..2 {
        for _ in 0..10 {
            let id = new_event_id();
            msgs.push(fake.deliver(ticket_payload(&id, "1"), None));
            ids.push(id);
        }
        if round == 0 {
            bridge
                .wait_metric("lark_bridge_in_flight_requests", &[], |v| v >= 5.0)
                .await;
            fake.close_all();
        }
    }
    let all = fake
        .wait_until(Duration::from_secs(30), |f| {
            msgs.iter().all(|m| f.acked(m)).then_some(())
        })
        .await;
    assert!(all.is_some(), "every event acknowledged in the end");
    let mut got = stream_ids(&nats).await;
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "each event in the stream exactly once");
    assert!(lc(&bridge, "reconnects_total", ("reason", "closed")) >= 1.0);
    assert!(bridge.metric("lark_bridge_longconn_connects_total", &[]) >= 2.0);
    assert!(fake.handshakes() >= 2);
    assert_eq!(
        fake.discovery_calls(),
        fake.handshakes() + fake.refused_handshakes(),
        "every (re)connect did discovery again"
    );
    assert_eq!(fake.refused_handshakes(), 0, "no stale ticket reused");
    assert!(
        requests(&bridge, "duplicate") >= 1.0,
        "some events were redelivered after their reply was lost"
    );
    bridge.wait_ready(200).await;
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn connection_limit_at_the_handshake_stops_startup_with_a_clear_error() {
    let fake = start_fake(Behaviour {
        handshake: Handshake::Refuse {
            status: 514,
            autherrcode: Some(1000040350),
            msg: "connection limit reached".into(),
        },
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(&fake, None, &[])).await;
    let err = bridge.exit().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "lark refused the connection: code 1000040350, connection limit reached"
    );
    assert_eq!(
        fake.refused_handshakes(),
        1,
        "no retry after a client error"
    );
}

#[tokio::test]
async fn a_banned_app_stops_startup() {
    let fake = start_fake(Behaviour {
        handshake: Handshake::Refuse {
            status: 403,
            autherrcode: None,
            msg: "app is banned".into(),
        },
        ..Behaviour::default()
    })
    .await;
    let err = Bridge::from_config(lc_cfg(&fake, None, &[]))
        .await
        .exit()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert!(err.to_string().contains("app is banned"), "{err}");
}

#[tokio::test]
async fn discovery_client_error_stops_startup_with_a_clear_error() {
    let fake = start_fake(Behaviour {
        discovery_code: 1000040350,
        discovery_msg: "connection limit reached".into(),
        ..Behaviour::default()
    })
    .await;
    let err = Bridge::from_config(lc_cfg(&fake, None, &[]))
        .await
        .exit()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "lark refused the connection: code 1000040350, connection limit reached"
    );
    assert_eq!(fake.discovery_calls(), 1);
    assert_eq!(fake.handshakes() + fake.refused_handshakes(), 0);
}

#[tokio::test]
async fn the_binary_exits_non_zero_with_the_refusal() {
    let fake = start_fake(Behaviour {
        discovery_code: 1000040351,
        discovery_msg: "wrong domain".into(),
        ..Behaviour::default()
    })
    .await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lark-bridge"))
        .env("LARK_BRIDGE__SOURCE__KIND", "long_connection")
        .env("LARK_BRIDGE__LARK__APP_ID", APP_ID)
        .env("LARK_BRIDGE__LARK__APP_SECRET", APP_SECRET)
        .env("LARK_BRIDGE__LARK__DOMAIN", fake.base_url())
        .env("LARK_BRIDGE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__LOG__FORMAT", "text")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: lark refused the connection: code 1000040351, wrong domain"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(APP_SECRET),
        "the App Secret is never logged"
    );
}

#[tokio::test]
async fn readiness_follows_the_connection_and_a_later_refusal_stops_reconnecting() {
    let fake = start_fake(Behaviour {
        handshake: Handshake::Refuse {
            status: 502,
            autherrcode: None,
            msg: "gateway restarting".into(),
        },
        ..Behaviour::default()
    })
    .await;
    let bridge = Bridge::from_config(lc_cfg(&fake, None, &[])).await;
    // Retryable: not ready, with the reason, and retrying.
    let body = bridge
        .wait_ready_where(503, |b| {
            b["failed"]["lark"]
                .as_str()
                .is_some_and(|r| r.contains("status 502"))
        })
        .await;
    assert!(
        body["failed"]["lark"]
            .as_str()
            .unwrap()
            .contains("gateway restarting"),
        "{body}"
    );
    bridge
        .wait_metric(
            "lark_bridge_longconn_reconnects_total",
            &[("reason", "handshake_failed")],
            |v| v >= 1.0,
        )
        .await;
    fake.set(|b| b.handshake = Handshake::Accept);
    connected(&fake, &bridge, 1).await;

    // Later Lark refuses for good: 503 with the reason, no more attempts, still running.
    fake.set(|b| {
        b.discovery_code = 1000040350;
        b.discovery_msg = "connection limit reached".into();
    });
    fake.close_all();
    let body = bridge
        .wait_ready_where(503, |b| {
            b["failed"]["lark"]
                .as_str()
                .is_some_and(|r| r.contains("1000040350"))
        })
        .await;
    assert_eq!(
        body["failed"]["lark"],
        "lark refused the connection: code 1000040350, connection limit reached"
    );
    let calls = fake.discovery_calls();
    tokio::time::sleep(Duration::from_millis(2500)).await; // > 2 reconnect intervals
    assert_eq!(fake.discovery_calls(), calls, "stopped reconnecting");
    assert_eq!(bridge.metric("lark_bridge_longconn_connected", &[]), 0.0);
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_pong_reconnects_and_a_pong_config_changes_the_ping_interval() {
    let fake = start_fake(Behaviour {
        answer_pings: false,
        ..Behaviour::default()
    })
    .await;
    let cfg = lc_cfg(
        &fake,
        None,
        &[
            ("source.long_connection.ping_interval_secs", "60"),
            ("source.long_connection.pong_timeout_secs", "1"),
        ],
    );
    let bridge = Bridge::from_config(cfg).await;
    bridge
        .wait_metric(
            "lark_bridge_longconn_reconnects_total",
            &[("reason", "pong_timeout")],
            |v| v >= 1.0,
        )
        .await;
    assert!(fake
        .wait_until(WAIT, |f| (f.handshakes() >= 2).then_some(()))
        .await
        .is_some());

    // Pongs again, carrying PingInterval = 1 s: the 60 s of the config is replaced.
    fake.set(|b| {
        b.answer_pings = true;
        b.pong_config = Some(ClientConfig {
            ping_interval: Some(1),
            ..Default::default()
        });
    });
    let base = fake.pings();
    let started = Instant::now();
    assert!(fake
        .wait_until(WAIT, |f| (f.pings() >= base + 3).then_some(()))
        .await
        .is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pinging every second"
    );
    assert!(
        metric(
            &bridge.metrics.render(),
            "lark_bridge_longconn_ping_rtt_seconds_count",
            &[]
        ) >= 1.0
    );
    bridge.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_events_finish_and_closes_the_socket() {
    let nats = start_nats().await;
    let fake = start_fake(Behaviour::default()).await;
    let cfg = lc_cfg(&fake, Some(&nats), &[]);
    let (c, _acks) = recording_components(&cfg, Duration::from_millis(400)).await;
    let bridge = Bridge::start(cfg, c).await;
    connected(&fake, &bridge, 1).await;
    let id = new_event_id();
    let msg = fake.deliver(ticket_payload(&id, "1"), None);
    bridge
        .wait_metric("lark_bridge_in_flight_requests", &[], |v| v == 1.0)
        .await;
    bridge.stop().await.unwrap();
    // The fake reads a connection in order: once it saw the close, it saw every reply before.
    assert_eq!(bridge_gone(&fake).await, 0, "socket closed");
    assert!(
        fake.acked(&msg),
        "the in-flight event was answered 200 before closing"
    );
    assert_eq!(stream_ids(&nats).await, vec![id]);
}

#[tokio::test]
async fn two_replicas_share_the_events_and_a_redis_store_keeps_them_once() {
    let nats = start_nats().await;
    let redis = start_redis().await;
    let fake = start_fake(Behaviour::default()).await;
    let redis_url = redis.url("redis");
    let extra = [
        ("dedup.backend", "redis"),
        ("dedup.redis.url", redis_url.as_str()),
    ];
    let a = Bridge::from_config(lc_cfg(&fake, Some(&nats), &extra)).await;
    let b = Bridge::from_config(lc_cfg(&fake, Some(&nats), &extra)).await;
    assert!(fake.wait_connections(2, WAIT).await);
    a.wait_ready(200).await;
    b.wait_ready(200).await;

    let ids: Vec<String> = (0..20).map(|_| new_event_id()).collect();
    for id in &ids {
        fake.deliver(ticket_payload(id, "1"), None);
    }
    let first = fake.wait_replies(20, WAIT).await;
    // One more new event shifts the round robin by one, so that when Lark redelivers every
    // event, each copy goes to the replica that did not publish it.
    let extra = new_event_id();
    fake.deliver(ticket_payload(&extra, "1"), None);
    for id in &ids {
        fake.deliver(ticket_payload(id, "1"), None);
    }
    let replies = fake.wait_replies(41, WAIT).await;
    assert!(replies.iter().all(|r| r.code == Some(200)), "{replies:?}");
    let mut per_conn: HashMap<u64, usize> = HashMap::new();
    for r in &first {
        *per_conn.entry(r.conn).or_default() += 1;
    }
    assert_eq!(per_conn.len(), 2, "both replicas got events: {per_conn:?}");
    let mut got = stream_ids(&nats).await;
    got.sort();
    let mut want = ids.clone();
    want.push(extra);
    want.sort();
    assert_eq!(got, want, "each event published once");
    let published = requests(&a, "published") + requests(&b, "published");
    let duplicates = requests(&a, "duplicate") + requests(&b, "duplicate");
    assert_eq!((published, duplicates), (21.0, 20.0));
    // The redeliveries went to the other replica: only the shared store caught them.
    assert!(requests(&a, "duplicate") > 0.0 && requests(&b, "duplicate") > 0.0);
    assert!(requests(&a, "published") > 0.0 && requests(&b, "published") > 0.0);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
