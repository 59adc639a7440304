//! Dead letters against real brokers (issue 17): a verified event the normalizer refuses ends
//! in the broker as a dead letter, once, with its reason; a forged one writes nothing; a broker
//! outage during the dead-letter publish is a 503 that commits nothing; and `redrive` moves
//! what the current normalizer accepts to its normal destination exactly once.

use std::time::Duration;

use fake_lark::kit::*;
use lark_bridge::redrive::{self, RedriveArgs, RedriveSink};
use lark_bridge::simulate::{lark_request, ticket_event, LarkRequest};
use lark_protocol::normalize::deadletter;
use lark_protocol::EncryptKey;
use serde_json::Value;

const NORMAL: &str = "lark.helpdesk.ticket.created.v1";
const LETTERS: &str = "lark.deadletter.v1";

/// A signed, encrypted ticket.created event without a `helpdesk_id`: genuinely Lark's, but one
/// the normalizer refuses.
fn without_helpdesk(id: &str) -> LarkRequest {
    let mut plain = ticket_event(id, "hd", Some(TOKEN), false);
    plain["event"]
        .as_object_mut()
        .unwrap()
        .remove("helpdesk_id");
    lark_request(
        id,
        &serde_json::to_vec(&plain).unwrap(),
        Some(&EncryptKey::new(KEY)),
    )
}

fn nats_cfg(nats: &Proc) -> lark_bridge::config::Config {
    let url = nats.url("nats");
    config(&[("sink.kind", "nats"), ("sink.nats.url", url.as_str())])
}

fn kafka_cfg(brokers: &str) -> lark_bridge::config::Config {
    config(&[
        ("sink.kind", "kafka"),
        ("sink.kafka.brokers", brokers),
        ("sink.kafka.create_topics", "true"),
    ])
}

fn structured(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("a structured CloudEvent")
}

fn redrive_args(sink: RedriveSink) -> RedriveArgs {
    RedriveArgs {
        sink,
        dry_run: false,
        limit: None,
        reason: None,
        idle_ms: 1500,
    }
}

/// A letter as an older bridge would have filed it for an event today's normalizer accepts
/// ("after the fix"): a complete ticket, refused back then.
fn old_letter(id: &str, helpdesk_id: &str) -> lark_protocol::event::Outgoing {
    let plain = ticket_event(id, helpdesk_id, Some(TOKEN), false);
    let ev = plain_event(&serde_json::to_vec(&plain).unwrap()).unwrap();
    let mut warnings = Vec::new();
    deadletter::normalize(
        &ev,
        "helpdesk_id is missing",
        1_700_000_000_000,
        &mut warnings,
    )
    .unwrap()
}

#[tokio::test]
async fn nats_a_refused_event_is_dead_lettered_once_and_a_forgery_writes_nothing() {
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats)).await;
    bridge.wait_ready(200).await;
    let r = without_helpdesk("ev_dl_nats_1");
    let (status, body) = post(&bridge.url, &r).await;
    assert_eq!((status, body["msg"].as_str()), (200, Some("success")));
    // Lark redelivers the same event: a duplicate, not a second letter.
    let (status, _) = post(&bridge.url, &r).await;
    assert_eq!(status, 200);
    // The same body under a forged signature: 401, nothing written.
    let mut forged = r.clone();
    let sig = forged
        .headers
        .iter_mut()
        .find(|(k, _)| *k == "x-lark-signature")
        .unwrap();
    sig.1 = "0".repeat(64);
    assert_eq!(post(&bridge.url, &forged).await.0, 401);

    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(
        msgs.len(),
        1,
        "exactly one message in the stream: the dead letter"
    );
    let m = &msgs[0];
    assert_eq!(
        m.subject.as_str(),
        "lark.deadletter.v1.helpdesk_ticket_created_v1"
    );
    assert_eq!(
        m.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "deadletter:ev_dl_nats_1"
    );
    let ce = structured(&m.payload);
    assert_eq!(ce["type"], "com.larksuite.raw.v1");
    assert_eq!(ce["id"], "ev_dl_nats_1");
    assert_eq!(ce["deadletterreason"], "helpdesk_id is missing");
    assert!(ce["data"]["header"].get("token").is_none(), "token removed");
    let schema = schema_validator("cloudevent.deadletter.v1.json", "raw.v1.json");
    let errors: Vec<String> = schema.iter_errors(&ce).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");

    let text = bridge.metrics_text().await;
    let requests = |o: &str| {
        metric(
            &text,
            "lark_bridge_requests_total",
            &[("source", "webhook"), ("outcome", o)],
        )
    };
    assert_eq!(requests("deadlettered"), 1.0);
    assert_eq!(requests("duplicate"), 1.0);
    assert_eq!(requests("unauthorized"), 1.0);
    assert_eq!(requests("bad_request"), 0.0);
    assert_eq!(
        metric(
            &text,
            "lark_bridge_deadletter_total",
            &[
                ("event_type", "helpdesk.ticket.created_v1"),
                ("reason", "missing_helpdesk_id")
            ]
        ),
        1.0
    );
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn nats_broker_down_during_the_dead_letter_is_503_and_the_redelivery_files_one() {
    let mut nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats)).await;
    bridge.wait_ready(200).await;
    nats.kill();
    let r = without_helpdesk("ev_dl_down");
    let (status, _) = post(&bridge.url, &r).await;
    assert_eq!(status, 503, "no ack, no 200");
    nats.restart().await;
    bridge.wait_ready(200).await;
    // Lark's redelivery (15 s later in real life): the id was not committed, so it is filed now.
    let mut status = 0;
    for _ in 0..40 {
        status = post(&bridge.url, &r).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    let letters: Vec<_> = msgs
        .iter()
        .filter(|m| m.subject.starts_with(LETTERS))
        .collect();
    assert_eq!(letters.len(), 1, "one dead letter");
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn nats_redrive_moves_what_now_normalizes_once_and_refiles_what_still_fails() {
    let nats = start_nats().await;
    let cfg = nats_cfg(&nats);
    let bridge = Bridge::from_config(cfg.clone()).await;
    bridge.wait_ready(200).await;
    // One letter the bridge files today (still failing after the "fix")…
    assert_eq!(
        post(&bridge.url, &without_helpdesk("ev_still_bad")).await.0,
        200
    );
    // …and one an older normalizer filed for an event today's accepts.
    let sink = lark_bridge::build_sink(&cfg).await.unwrap();
    sink.publish(&old_letter("ev_fixed", "7090000000000000042"))
        .await
        .unwrap();
    bridge.stop().await.expect("clean shutdown");

    let first = redrive::run(&cfg, &redrive_args(RedriveSink::Nats))
        .await
        .unwrap();
    assert_eq!(
        (first.read, first.redriven, first.still_failing),
        (2, 1, 1),
        "{first:?}"
    );
    let second = redrive::run(&cfg, &redrive_args(RedriveSink::Nats))
        .await
        .unwrap();
    assert_eq!(second.redriven, 0, "nothing left to move: {second:?}");

    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    let normal: Vec<_> = msgs
        .iter()
        .filter(|m| m.subject.starts_with(NORMAL))
        .collect();
    assert_eq!(
        normal.len(),
        1,
        "the fixed event reached its normal subject once"
    );
    assert_eq!(
        normal[0].subject.as_str(),
        "lark.helpdesk.ticket.created.v1.7090000000000000042"
    );
    assert_eq!(
        normal[0].headers.get("Nats-Msg-Id").unwrap().as_str(),
        "ev_fixed",
        "the normal broker id"
    );
    let ce = structured(&normal[0].payload);
    assert_eq!(ce["type"], "com.larksuite.helpdesk.ticket.created.v1");
    assert!(ce.get("deadletterreason").is_none());
    // The still-failing one is on file again, with its reason.
    let refiled: Vec<Value> = msgs
        .iter()
        .filter(|m| m.subject.starts_with(LETTERS))
        .map(|m| structured(&m.payload))
        .filter(|ce| ce["id"] == "ev_still_bad")
        .collect();
    assert!(refiled.len() >= 2, "the original letter and its re-filing");
    assert!(refiled
        .iter()
        .all(|ce| ce["deadletterreason"] == "helpdesk_id is missing"));
}

#[tokio::test]
async fn nats_redrive_dry_run_and_reason_filter_touch_nothing() {
    let nats = start_nats().await;
    let cfg = nats_cfg(&nats);
    let sink = lark_bridge::build_sink(&cfg).await.unwrap();
    sink.publish(&old_letter("ev_dry", "7090000000000000043"))
        .await
        .unwrap();
    let mut args = redrive_args(RedriveSink::Nats);
    args.dry_run = true;
    let dry = redrive::run(&cfg, &args).await.unwrap();
    assert_eq!((dry.read, dry.redriven), (1, 1), "judged as movable");
    let mut args = redrive_args(RedriveSink::Nats);
    args.reason = Some("missing_ticket_id".into());
    let filtered = redrive::run(&cfg, &args).await.unwrap();
    assert_eq!(filtered.redriven, 0);
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert!(
        msgs.iter().all(|m| !m.subject.starts_with(NORMAL)),
        "a dry run and a filtered run publish nothing"
    );
    let mut args = redrive_args(RedriveSink::Nats);
    args.reason = Some("no_such_reason".into());
    assert!(
        redrive::run(&cfg, &args).await.is_err(),
        "unknown kind refused"
    );
    // Both runs handed the letter back at once: a real run right after moves it.
    let real = redrive::run(&cfg, &redrive_args(RedriveSink::Nats))
        .await
        .unwrap();
    assert_eq!((real.read, real.redriven), (1, 1), "{real:?}");
}

#[tokio::test]
async fn kafka_a_refused_event_is_dead_lettered_and_redrive_moves_the_fixed_one_once() {
    let tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    let cfg = kafka_cfg(&brokers);
    let bridge = Bridge::from_config(cfg.clone()).await;
    bridge.wait_ready(200).await;
    let r = without_helpdesk("ev_dl_kafka");
    assert_eq!(post(&bridge.url, &r).await.0, 200);
    assert_eq!(post(&bridge.url, &r).await.0, 200, "redelivery: duplicate");
    let letters = consume(&brokers, LETTERS, 12, 1);
    assert_eq!(letters.len(), 1, "one dead letter");
    let ce = structured(rdkafka::Message::payload(&letters[0]).unwrap());
    assert_eq!(ce["deadletterreason"], "helpdesk_id is missing");
    assert_eq!(
        rdkafka::Message::key(&letters[0]),
        Some("simulate".as_bytes()),
        "key: the tenant key"
    );
    assert!(
        consume(&brokers, NORMAL, 12, 0).is_empty(),
        "nothing on the normal topic"
    );

    let sink = lark_bridge::build_sink(&cfg).await.unwrap();
    sink.publish(&old_letter("ev_fixed_k", "7090000000000000044"))
        .await
        .unwrap();
    bridge.stop().await.expect("clean shutdown");
    let first = redrive::run(&cfg, &redrive_args(RedriveSink::Kafka))
        .await
        .unwrap();
    assert_eq!(
        (first.read, first.redriven, first.still_failing),
        (2, 1, 1),
        "{first:?}"
    );
    let second = redrive::run(&cfg, &redrive_args(RedriveSink::Kafka))
        .await
        .unwrap();
    assert_eq!(second.redriven, 0, "{second:?}");
    let normal = consume(&brokers, NORMAL, 12, 1);
    let ids: Vec<_> = normal.iter().filter_map(payload_id).collect();
    assert_eq!(ids, vec!["ev_fixed_k".to_string()], "moved exactly once");
}

#[tokio::test]
async fn with_dead_letters_off_a_refused_event_is_400_as_before() {
    let nats = start_nats().await;
    let mut cfg = nats_cfg(&nats);
    cfg.deadletter.enabled = false;
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    let (status, body) = post(&bridge.url, &without_helpdesk("ev_off")).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (400, Some("helpdesk_id is missing"))
    );
    assert!(stream_messages(&nats.url("nats"), "LARK_HELPDESK")
        .await
        .is_empty());
    bridge.stop().await.expect("clean shutdown");
}
