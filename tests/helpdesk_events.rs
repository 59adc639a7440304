//! The helpdesk family end to end (helpdesk-events.md): Lark's signed, encrypted
//! `ticket.updated_v1`, `ticket_message.created_v1` and `notification.approve_v1` pushes reach
//! real NATS JetStream and Kafka with their own type, subject, key and topic/subject, valid
//! against their schemas; and with the family routed to one topic, a ticket's story arrives in
//! the order it happened.

use fake_lark::kit::*;
use lark_bridge::config::{Config, Template};
use lark_bridge::simulate::{lark_request, random_hex, LarkRequest};
use lark_protocol::consumer::{TicketMessageCreated, TicketUpdated};
use lark_protocol::crypto::EncryptKey;
use rdkafka::message::Message;
use serde_json::{json, Value};

const TICKET: &str = "7088000000000000001";

/// A signed, encrypted push of `event_type` with `event`, as Lark sends it.
fn push(event_type: &str, event: Value) -> LarkRequest {
    let id = format!("ev_{}", random_hex::<8>());
    let plain = json!({
        "schema": "2.0",
        "header": {
            "event_id": id,
            "event_type": event_type,
            "create_time": chrono::Utc::now().timestamp_millis().to_string(),
            "token": TOKEN,
            "app_id": "cli_9f5343c580712544",
            "tenant_key": "2ca1d211f64f6438"
        },
        "event": event
    });
    lark_request(
        &id,
        &serde_json::to_vec(&plain).unwrap(),
        Some(&EncryptKey::new(KEY)),
    )
}

fn agent() -> Value {
    json!({"id": {"open_id": "ou_agent", "union_id": "on_agent"}, "name": "Agent"})
}

fn ticket(helpdesk: &str, stage: i64, status: i64) -> Value {
    json!({"ticket_id": TICKET, "helpdesk_id": helpdesk, "stage": stage, "status": status,
           "guest": {"id": {"open_id": "ou_guest"}, "name": "Guest"},
           "created_at": 1616920429000i64, "chat_id": "oc_1"})
}

fn created(helpdesk: &str) -> LarkRequest {
    push("helpdesk.ticket.created_v1", ticket(helpdesk, 1, 1))
}

/// The bot hands the ticket to a human.
fn handed_off(helpdesk: &str) -> LarkRequest {
    let mut object = ticket(helpdesk, 2, 2);
    object["agents"] = json!([agent()]);
    push(
        "helpdesk.ticket.updated_v1",
        json!({"object": object, "old_object": {"stage": 1, "status": 1}}),
    )
}

fn message(helpdesk: &str) -> LarkRequest {
    push(
        "helpdesk.ticket_message.created_v1",
        json!({"ticket_message_id": "6949088240624222236", "message_id": "om_1",
               "msg_type": "text", "text": "How can I help?", "sender_type": 3,
               "sender_id": {"open_id": "ou_agent"}, "ticket": ticket(helpdesk, 2, 2),
               "content": {"msg_type": "text", "content": "How can I help?"}}),
    )
}

/// The agent closes the ticket; the guest rated it.
fn closed(helpdesk: &str) -> LarkRequest {
    let mut object = ticket(helpdesk, 2, 51);
    object["score"] = json!(3);
    object["closed_at"] = json!(1616920999000i64);
    object["closed_by"] = agent();
    push(
        "helpdesk.ticket.updated_v1",
        json!({"object": object, "old_object": {"status": 2}}),
    )
}

fn approve(helpdesk: &str) -> LarkRequest {
    push(
        "helpdesk.notification.approve_v1",
        json!({"notification_id": "6981801914270744596", "helpdesk_id": helpdesk,
               "approve_status": "APPROVED"}),
    )
}

async fn post_ok(bridge: &Bridge, r: &LarkRequest) {
    let (status, body) = post(&bridge.url, r).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (200, Some("success")),
        "{body}"
    );
}

/// (request, CloudEvents type, subject, default topic) of the three new types.
fn family(helpdesk: &str) -> Vec<(LarkRequest, &'static str, &'static str, &'static str)> {
    vec![
        (
            handed_off(helpdesk),
            "com.larksuite.helpdesk.ticket.updated.v1",
            TICKET,
            "lark.helpdesk.ticket.updated.v1",
        ),
        (
            message(helpdesk),
            "com.larksuite.helpdesk.ticket_message.created.v1",
            TICKET,
            "lark.helpdesk.ticket_message.created.v1",
        ),
        (
            approve(helpdesk),
            "com.larksuite.helpdesk.notification.approve.v1",
            "6981801914270744596",
            "lark.helpdesk.notification.approve.v1",
        ),
    ]
}

fn nats_cfg(nats: &Proc) -> Config {
    config(&[("sink.kind", "nats"), ("sink.nats.url", &nats.url("nats"))])
}

fn kafka_cfg(brokers: &str) -> Config {
    config(&[
        ("sink.kind", "kafka"),
        ("sink.kafka.brokers", brokers),
        ("sink.kafka.create_topics", "true"),
        ("sink.kafka.topic_partitions", "3"),
    ])
}

#[tokio::test]
async fn each_new_type_reaches_jetstream_on_its_own_subject() {
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats)).await;
    bridge.wait_ready(200).await;
    let helpdesk = "6626871355780366330";
    let sent = family(helpdesk);
    for (r, ..) in &sent {
        post_ok(&bridge, r).await;
    }
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 3, "exactly one message per event");
    for (m, (r, ty, subject, topic)) in msgs.iter().zip(&sent) {
        assert_eq!(m.subject.as_str(), format!("{topic}.{helpdesk}"));
        assert_eq!(m.headers.get("Nats-Msg-Id").unwrap().as_str(), r.event_id);
        let ce: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(ce["id"], r.event_id.as_str());
        assert_eq!(ce["type"], *ty);
        assert_eq!(ce["subject"], *subject);
        assert_eq!(ce["partitionkey"], helpdesk);
        assert_helpdesk_event_valid(&ce);
    }
    assert_eq!(
        bridge.metric(
            "lark_bridge_publish_total",
            &[("sink", "nats"), ("result", "ok")]
        ),
        3.0
    );
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn each_new_type_reaches_its_kafka_topic_keyed_by_helpdesk() {
    let tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    // create_topics makes every fixed topic, the family's included.
    let bridge = Bridge::from_config(kafka_cfg(&brokers)).await;
    bridge.wait_ready(200).await;
    let helpdesk = "6626871355780366331";
    let sent = family(helpdesk);
    for (r, ..) in &sent {
        post_ok(&bridge, r).await;
    }
    for (r, ty, subject, topic) in &sent {
        let msgs = consume(&brokers, topic, 3, 1);
        assert_eq!(msgs.len(), 1, "{topic}: exactly one message");
        let m = &msgs[0];
        assert_eq!(m.key(), Some(helpdesk.as_bytes()), "{topic}");
        assert_eq!(
            header(m, "content-type"),
            Some("application/cloudevents+json; charset=utf-8")
        );
        let ce: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(ce["id"], r.event_id.as_str());
        assert_eq!(ce["type"], *ty);
        assert_eq!(ce["subject"], *subject);
        assert_eq!(ce["partitionkey"], helpdesk);
        assert_helpdesk_event_valid(&ce);
    }
    bridge.stop().await.expect("clean shutdown");
}

/// created (bot) → updated (bot → human) → an agent's message → updated (closed, rated).
fn story(helpdesk: &str) -> Vec<LarkRequest> {
    vec![
        created(helpdesk),
        handed_off(helpdesk),
        message(helpdesk),
        closed(helpdesk),
    ]
}

/// The story as it arrived: types in order, and what a consumer checks on each.
fn assert_story(bodies: &[Vec<u8>], sent: &[LarkRequest]) {
    let types: Vec<String> = bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        types,
        [
            "com.larksuite.helpdesk.ticket.created.v1",
            "com.larksuite.helpdesk.ticket.updated.v1",
            "com.larksuite.helpdesk.ticket_message.created.v1",
            "com.larksuite.helpdesk.ticket.updated.v1",
        ],
        "the story arrives in order"
    );
    for (b, r) in bodies.iter().zip(sent) {
        let ce: Value = serde_json::from_slice(b).unwrap();
        assert_eq!(ce["id"], r.event_id.as_str());
        assert_eq!(ce["subject"], TICKET);
        assert_helpdesk_event_valid(&ce);
    }
    // Typed, as a Rust consumer reads them: the hand-off is one check.
    let handoff = TicketUpdated::from_structured(&bodies[1]).unwrap();
    assert!(handoff.data.changed("stage"));
    assert_eq!(handoff.data.ticket.fields.stage.as_deref(), Some("human"));
    assert_eq!(handoff.data.previous.stage.as_deref(), Some("bot"));
    let msg = TicketMessageCreated::from_structured(&bodies[2]).unwrap();
    assert_eq!(msg.data.sender.ty.as_deref(), Some("agent"));
    let close = TicketUpdated::from_structured(&bodies[3]).unwrap();
    assert!(close.data.changed("status") && !close.data.changed("stage"));
    assert_eq!(
        close.data.ticket.fields.status.as_deref(),
        Some("closed_by_agent")
    );
    assert_eq!(close.data.ticket.fields.score.as_deref(), Some("satisfied"));
    assert_eq!(
        close
            .data
            .ticket
            .closed_by
            .as_ref()
            .unwrap()
            .open_id
            .as_deref(),
        Some("ou_agent")
    );
}

#[tokio::test]
async fn a_ticket_story_arrives_in_order_on_one_kafka_topic_when_the_family_is_routed_there() {
    let tansu = start_tansu().await;
    let brokers = format!("127.0.0.1:{}", tansu.port);
    let one = Template::parse("lark.helpdesk.tickets.v1").unwrap();
    let mut cfg = kafka_cfg(&brokers);
    let k = &mut cfg.sink.kafka;
    k.topic = one.clone();
    k.topics.ticket_updated = one.clone();
    k.topics.ticket_message_created = one.clone();
    k.topics.notification_approve = one;
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    let helpdesk = "6626871355780366332";
    let sent = story(helpdesk);
    for r in &sent {
        post_ok(&bridge, r).await;
    }
    let msgs = consume(&brokers, "lark.helpdesk.tickets.v1", 3, 4);
    assert_eq!(msgs.len(), 4, "exactly the story");
    // One key, so one partition: Kafka keeps the order there.
    assert!(msgs.iter().all(|m| m.key() == Some(helpdesk.as_bytes())));
    assert!(msgs.iter().all(|m| m.partition() == msgs[0].partition()));
    let bodies: Vec<Vec<u8>> = msgs.iter().map(|m| m.payload().unwrap().to_vec()).collect();
    assert_story(&bodies, &sent);
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_ticket_story_arrives_in_order_under_one_nats_subject_when_the_family_is_routed_there() {
    let nats = start_nats().await;
    let one = Template::parse("lark.helpdesk.tickets.v1.{helpdesk_id}").unwrap();
    let mut cfg = nats_cfg(&nats);
    let n = &mut cfg.sink.nats;
    n.subject = one.clone();
    n.subjects.ticket_updated = one.clone();
    n.subjects.ticket_message_created = one.clone();
    n.subjects.notification_approve = one;
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    let helpdesk = "6626871355780366333";
    let sent = story(helpdesk);
    for r in &sent {
        post_ok(&bridge, r).await;
    }
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 4, "exactly the story");
    let subject = format!("lark.helpdesk.tickets.v1.{helpdesk}");
    assert!(msgs.iter().all(|m| m.subject.as_str() == subject));
    let bodies: Vec<Vec<u8>> = msgs.iter().map(|m| m.payload.to_vec()).collect();
    assert_story(&bodies, &sent);
    bridge.stop().await.expect("clean shutdown");
}
