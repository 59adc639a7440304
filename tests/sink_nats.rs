//! The NATS sink against a real nats-server (JetStream): what reaches the stream, with which
//! subject and headers, and that Lark gets 200 only after the PubAck.

use std::time::{Duration, Instant};

use fake_lark::kit::*;

fn nats_cfg(nats: &Proc, extra: &[(&str, &str)]) -> lark_bridge::config::Config {
    let url = nats.url("nats");
    let mut pairs = vec![("sink.kind", "nats"), ("sink.nats.url", url.as_str())];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

#[tokio::test]
async fn events_reach_jetstream_with_subject_headers_and_body() {
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats, &[])).await;
    bridge.wait_ready(200).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let hd = format!("66268713557803663{i}");
        let r = ticket(&hd);
        let (status, body) = post(&bridge.url, &r).await;
        assert_eq!((status, body["msg"].as_str()), (200, Some("success")));
        ids.push((r.event_id.clone(), hd));
    }
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 5, "exactly N messages out");
    for (m, (id, hd)) in msgs.iter().zip(&ids) {
        assert_eq!(
            m.subject.as_str(),
            format!("lark.helpdesk.ticket.created.v1.{hd}")
        );
        let h = &m.headers;
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), id);
        // Structured mode: no `ce-` header at all (normalized-schema.md §3).
        assert!(
            h.iter()
                .all(|(k, _)| !k.to_string().to_ascii_lowercase().starts_with("ce-")),
            "structured mode must carry no ce- header: {h:?}"
        );
        assert_eq!(
            h.get("Content-Type").unwrap().as_str(),
            "application/cloudevents+json; charset=utf-8"
        );
        let ce: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(ce["id"], id.as_str());
        assert_eq!(ce["partitionkey"], hd.as_str());
        assert_eq!(ce["data"]["helpdesk_id"], hd.as_str());
    }
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "nats"), ("result", "ok")]
        ),
        5.0
    );
    assert_eq!(
        metric(&text, "lark_bridge_sink_up", &[("sink", "nats")]),
        1.0
    );
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn binary_mode_puts_attributes_in_headers_and_data_in_the_body() {
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats, &[("sink.mode", "binary")])).await;
    bridge.wait_ready(200).await;
    let r = ticket("42");
    assert_eq!(post(&bridge.url, &r).await.0, 200);
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    assert_eq!(msgs.len(), 1);
    let h = &msgs[0].headers;
    assert_eq!(h.get("Content-Type").unwrap().as_str(), "application/json");
    assert_eq!(h.get("ce-specversion").unwrap().as_str(), "1.0");
    assert_eq!(h.get("ce-id").unwrap().as_str(), r.event_id);
    assert_eq!(h.get("ce-partitionkey").unwrap().as_str(), "42");
    assert_eq!(
        h.get("ce-larkeventtype").unwrap().as_str(),
        "helpdesk.ticket.created_v1"
    );
    assert_eq!(
        h.get("ce-source").unwrap().as_str(),
        "urn:lark:app:cli_simulate0000001"
    );
    assert!(h.get("ce-time").unwrap().as_str().ends_with('Z'));
    let data: serde_json::Value = serde_json::from_slice(&msgs[0].payload).unwrap();
    assert_eq!(data["helpdesk_id"], "42");
    assert!(
        data.get("specversion").is_none(),
        "binary mode carries data only"
    );
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn broker_down_gives_503_and_redelivery_after_restart_is_published_once() {
    let mut nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(&nats, &[])).await;
    bridge.wait_ready(200).await;
    let first = ticket("1");
    assert_eq!(post(&bridge.url, &first).await.0, 200);

    nats.kill();
    let r = ticket("1");
    let t = Instant::now();
    let (status, body) = post(&bridge.url, &r).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        t.elapsed() < Duration::from_millis(3000),
        "answered inside Lark's 3 s"
    );
    let ready = bridge.wait_ready(503).await;
    assert!(
        ready["failed"]["sink"].as_str().unwrap().contains("nats"),
        "{ready}"
    );

    nats.restart().await;
    bridge.wait_ready(200).await;
    // Lark redelivers the same event (same id, fresh signature) until it gets a 200.
    let mut status = 0;
    for _ in 0..50 {
        status = post(&bridge.url, &ticket_with_id(&r.event_id, "1")).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    // Once more: a duplicate, not published again.
    assert_eq!(
        post(&bridge.url, &ticket_with_id(&r.event_id, "1")).await.0,
        200
    );
    let msgs = stream_messages(&nats.url("nats"), "LARK_HELPDESK").await;
    let ids: Vec<String> = msgs
        .iter()
        .map(|m| m.headers.get("Nats-Msg-Id").unwrap().as_str().to_string())
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == r.event_id).count(),
        1,
        "{ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|i| **i == first.event_id).count(),
        1,
        "{ids:?}"
    );
    assert_eq!(msgs.len(), 2);
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn stalled_broker_gives_503_within_the_budget() {
    let nats = start_nats().await;
    let bridge = Bridge::from_config(nats_cfg(
        &nats,
        &[
            ("server.response_budget_ms", "500"),
            ("dedup.lease_ms", "1000"),
        ],
    ))
    .await;
    bridge.wait_ready(200).await;
    // Freeze the server: connections stay open, nothing answers.
    nats.signal("-STOP");
    let t = Instant::now();
    let (status, body) = post(&bridge.url, &ticket("1")).await;
    let elapsed = t.elapsed();
    nats.signal("-CONT");
    assert_eq!(status, 503, "{body}");
    assert!(
        elapsed >= Duration::from_millis(450),
        "waited for the ack: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1200),
        "answered near the budget: {elapsed:?}"
    );
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "lark_bridge_publish_total",
            &[("sink", "nats"), ("result", "timeout")]
        ),
        1.0
    );
    bridge.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn core_nats_mode_publishes_without_jetstream() {
    let nats = start_nats().await;
    let client = async_nats::connect(nats.url("nats")).await.unwrap();
    let mut sub = client
        .subscribe("lark.helpdesk.ticket.created.v1.*")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let bridge = Bridge::from_config(nats_cfg(&nats, &[("sink.nats.jetstream", "false")])).await;
    bridge.wait_ready(200).await;
    let r = ticket("7");
    assert_eq!(post(&bridge.url, &r).await.0, 200);
    let m = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut sub))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "lark.helpdesk.ticket.created.v1.7");
    assert_eq!(
        m.headers.unwrap().get("Nats-Msg-Id").unwrap().as_str(),
        r.event_id
    );
    bridge.stop().await.expect("clean shutdown");
}
