//! Lark's open API from the bridge's side (issue 14, helpdesk-events.md §3), against
//! `fake-lark`'s API over real HTTP: the subscription the bridge makes at start (both
//! authorizations, readiness while it fails, retries until Lark accepts, both delivery modes)
//! and by `lark-bridge subscribe`; the tenant token reused until it must be refreshed; and the
//! ticket-detail enrichment — fields from the API when it answers, published in time without
//! them when it is slow or down, and never a credential in a log line.

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use fake_lark::kit::*;
use fake_lark::longconn::{Behaviour, FakeLark};
use lark_bridge::config::{Config, Template};
use lark_bridge::simulate::{helpdesk_event, lark_request, random_hex, LarkRequest};
use lark_protocol::crypto::EncryptKey;
use lark_protocol::event::Outgoing;
use serde_json::{json, Value};

const APP_ID: &str = "cli_api_test_0001";
const APP_SECRET: &str = "app-secret-7f3e9a1c55d2";
const HELPDESK_ID: &str = "7090000000000000001";
const HELPDESK_TOKEN: &str = "helpdesk-token-c0ffee42d00d";

async fn fake() -> FakeLark {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = FakeLark::start(listener, Behaviour::default())
        .await
        .unwrap();
    fake.api().set(|b| {
        b.app = Some((APP_ID.into(), APP_SECRET.into()));
        b.helpdesk = Some((HELPDESK_ID.into(), HELPDESK_TOKEN.into()));
    });
    fake
}

/// Webhook config with the app and helpdesk credentials, against `fake`.
fn cfg(fake: &FakeLark, extra: &[(&str, &str)]) -> Config {
    let domain = fake.base_url();
    let mut pairs = vec![
        ("lark.domain", domain.as_str()),
        ("lark.app_id", APP_ID),
        ("lark.app_secret", APP_SECRET),
        ("lark.helpdesk_id", HELPDESK_ID),
        ("lark.helpdesk_token", HELPDESK_TOKEN),
    ];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

fn helpdesk_header() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{HELPDESK_ID}:{HELPDESK_TOKEN}"))
}

/// The four subtypes as the fake holds them.
fn four() -> Vec<String> {
    let mut v = vec![
        "helpdesk.notification/notification.approve_v1".to_string(),
        "helpdesk.ticket/ticket.created_v1".into(),
        "helpdesk.ticket/ticket.updated_v1".into(),
        "helpdesk.ticket_message/ticket_message.created_v1".into(),
    ];
    v.sort();
    v
}

fn push(event_type: &str, ticket_id: &str) -> LarkRequest {
    let id = random_hex::<16>();
    let plain = helpdesk_event(event_type, &id, HELPDESK_ID, ticket_id, Some(TOKEN));
    lark_request(
        &id,
        &serde_json::to_vec(&plain).unwrap(),
        Some(&EncryptKey::new(KEY)),
    )
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outgoing>) -> Value {
    let out = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("published")
        .expect("channel open");
    serde_json::from_slice(&out.structured).unwrap()
}

#[tokio::test]
async fn the_bridge_subscribes_at_start_with_both_authorizations_and_is_ready_then() {
    let fake = fake().await;
    let c = Channeled::start(cfg(&fake, &[])).await;
    c.bridge.wait_ready(200).await;
    assert_eq!(
        fake.api().subscribed(),
        four(),
        "the four helpdesk subtypes"
    );
    let calls = fake.api().calls();
    let apis: Vec<&str> = calls.iter().map(|c| c.api).collect();
    assert_eq!(apis, ["tenant_token", "subscribe"]);
    let token_body = &calls[0].body;
    assert_eq!(token_body["app_id"], APP_ID);
    let sub = &calls[1];
    assert_eq!(sub.status, 200);
    assert!(
        sub.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer t-fake")),
        "{:?}",
        sub.authorization
    );
    assert_eq!(
        sub.helpdesk_authorization.as_deref(),
        Some(helpdesk_header().as_str())
    );
    assert_eq!(
        sub.body["events"][0],
        json!({"type": "helpdesk.ticket", "subtype": "ticket.created_v1"})
    );
    assert_eq!(
        c.bridge.metric(
            "lark_bridge_lark_api_requests_total",
            &[("api", "subscribe"), ("result", "ok")]
        ),
        1.0
    );
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_subscription_is_a_readiness_reason_and_is_retried_until_lark_accepts() {
    let fake = fake().await;
    fake.api()
        .set(|b| b.helpdesk_code = Some((154003, "no permission".into())));
    let c = Channeled::start(cfg(&fake, &[])).await;
    let body = c
        .bridge
        .wait_ready_where(503, |b| {
            b["failed"]["lark_subscription"]
                .as_str()
                .is_some_and(|r| r.contains("154003"))
        })
        .await;
    let reason = body["failed"]["lark_subscription"].as_str().unwrap();
    assert!(reason.contains("no permission"), "{reason}");
    assert!(!reason.contains(HELPDESK_TOKEN) && !reason.contains(APP_SECRET));
    // Lark accepts from now on: the next retry subscribes and the bridge becomes ready.
    fake.api().set(|b| b.helpdesk_code = None);
    c.bridge.wait_ready(200).await;
    assert_eq!(fake.api().subscribed(), four());
    let subs = fake.api().calls_to("subscribe");
    assert!(subs.len() >= 2, "retried");
    assert_eq!(subs.last().unwrap().status, 200);
    assert!(subs[..subs.len() - 1].iter().all(|c| c.status == 400));
    assert!(
        c.bridge.metric(
            "lark_bridge_lark_api_requests_total",
            &[("api", "subscribe"), ("result", "error")]
        ) >= 1.0
    );
    assert_eq!(fake.api().tokens_issued(), 1, "one token for every attempt");
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn server_errors_are_retried_within_one_attempt() {
    let fake = fake().await;
    fake.api().set(|b| b.fail_5xx = 2);
    let c = Channeled::start(cfg(&fake, &[])).await;
    c.bridge.wait_ready(200).await;
    // The token call met both 500s and was retried; then the subscription went through.
    let calls = fake.api().calls();
    let statuses: Vec<(&str, u16)> = calls.iter().map(|c| (c.api, c.status)).collect();
    assert_eq!(
        statuses,
        [
            ("tenant_token", 500),
            ("tenant_token", 500),
            ("tenant_token", 200),
            ("subscribe", 200)
        ]
    );
    assert_eq!(
        c.bridge.metric(
            "lark_bridge_lark_api_requests_total",
            &[("api", "tenant_token"), ("result", "unavailable")]
        ),
        2.0
    );
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn without_helpdesk_credentials_the_subscription_is_left_to_the_operator() {
    let fake = fake().await;
    let domain = fake.base_url();
    let c = Channeled::start(config(&[("lark.domain", &domain)])).await;
    let body = c.bridge.wait_ready(200).await;
    assert_eq!(body["status"], "ready");
    assert!(fake.api().calls().is_empty(), "no call without credentials");
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn the_long_connection_subscribes_too() {
    let fake = fake().await;
    let domain = fake.base_url();
    let cfg = config(&[
        ("source.kind", "long_connection"),
        ("lark.domain", &domain),
        ("lark.app_id", APP_ID),
        ("lark.app_secret", APP_SECRET),
        ("lark.helpdesk_id", HELPDESK_ID),
        ("lark.helpdesk_token", HELPDESK_TOKEN),
    ]);
    let c = Channeled::start(cfg).await;
    c.bridge.wait_ready(200).await;
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.api().subscribed(), four());
    c.bridge.stop().await.unwrap();
}

/// Enrichment: `enrich.ticket_detail` on, a short budget.
fn enrich_cfg(fake: &FakeLark, budget_ms: &str) -> Config {
    cfg(
        fake,
        &[
            ("enrich.ticket_detail", "true"),
            ("enrich.budget_ms", budget_ms),
        ],
    )
}

#[tokio::test]
async fn enrichment_fills_created_and_updated_tickets_from_the_api_and_reuses_the_token() {
    let fake = fake().await;
    let mut c = Channeled::start(enrich_cfg(&fake, "800")).await;
    c.bridge.wait_ready(200).await;
    let created = push("helpdesk.ticket.created_v1", "7001");
    assert_eq!(post(&c.bridge.url, &created).await.0, 200);
    let ce = next(&mut c.rx).await;
    assert_eq!(ce["data"]["customized_fields_source"], "api");
    assert_eq!(ce["data"]["customized_fields"][0]["key_name"], "tier");
    assert_eq!(ce["data"]["customized_fields"][1]["value"], "\"ORD-1024\"");
    assert_helpdesk_event_valid(&ce);

    let updated = push("helpdesk.ticket.updated_v1", "7001");
    assert_eq!(post(&c.bridge.url, &updated).await.0, 200);
    let ce = next(&mut c.rx).await;
    assert_eq!(ce["data"]["ticket"]["customized_fields_source"], "api");
    assert_eq!(
        ce["data"]["ticket"]["customized_fields"][0]["id"],
        "6834570289512112129"
    );
    assert_helpdesk_event_valid(&ce);

    // A message is not enriched: no call.
    let message = push("helpdesk.ticket_message.created_v1", "7001");
    assert_eq!(post(&c.bridge.url, &message).await.0, 200);
    let ce = next(&mut c.rx).await;
    assert_eq!(ce["data"]["ticket"]["customized_fields_source"], "event");

    let details = fake.api().calls_to("ticket_detail");
    assert_eq!(details.len(), 2);
    assert_eq!(details[0].path, "/open-apis/helpdesk/v1/tickets/7001");
    assert_eq!(
        details[0].helpdesk_authorization.as_deref(),
        Some(helpdesk_header().as_str())
    );
    assert_eq!(
        fake.api().tokens_issued(),
        1,
        "the subscription's token serves every call until it must be refreshed"
    );
    assert_eq!(
        c.bridge
            .metric("lark_bridge_enrich_total", &[("result", "ok")]),
        2.0
    );

    // A redelivery is a duplicate: answered without a call.
    assert_eq!(post(&c.bridge.url, &created).await.0, 200);
    assert_eq!(fake.api().calls_to("ticket_detail").len(), 2);
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires_and_replaced_when_lark_rejects_it() {
    let fake = fake().await;
    // Lark's tokens live 7200 s; these 2 s, so the bridge refreshes them after 1 s.
    fake.api().set(|b| b.token_expire_secs = 2);
    let mut c = Channeled::start(enrich_cfg(&fake, "800")).await;
    c.bridge.wait_ready(200).await;
    let issued_at = fake.api().calls_to("tenant_token")[0].at;
    assert_eq!(
        post(&c.bridge.url, &push("helpdesk.ticket.created_v1", "1"))
            .await
            .0,
        200
    );
    assert_eq!(
        next(&mut c.rx).await["data"]["customized_fields_source"],
        "api"
    );
    assert_eq!(fake.api().tokens_issued(), 1, "reused while fresh");
    // The token's own lifetime is what is under test here: wait past its refresh point.
    tokio::time::sleep_until((issued_at + Duration::from_millis(1100)).into()).await;
    assert_eq!(
        post(&c.bridge.url, &push("helpdesk.ticket.created_v1", "2"))
            .await
            .0,
        200
    );
    assert_eq!(
        next(&mut c.rx).await["data"]["customized_fields_source"],
        "api"
    );
    assert_eq!(fake.api().tokens_issued(), 2, "refreshed before it expired");

    // Lark drops the token early (99991663): the bridge fetches a new one and the call succeeds.
    fake.api().set(|b| b.token_expire_secs = 7200);
    fake.api().expire_tokens();
    assert_eq!(
        post(&c.bridge.url, &push("helpdesk.ticket.created_v1", "3"))
            .await
            .0,
        200
    );
    assert_eq!(
        next(&mut c.rx).await["data"]["customized_fields_source"],
        "api"
    );
    assert_eq!(fake.api().tokens_issued(), 3);
    let statuses: Vec<u16> = fake
        .api()
        .calls_to("ticket_detail")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [200, 200, 400, 200]);
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_api_does_not_delay_the_event_past_the_enrichment_budget() {
    let fake = fake().await;
    let mut c = Channeled::start(enrich_cfg(&fake, "300")).await;
    c.bridge.wait_ready(200).await;
    fake.api().set(|b| b.delay = Duration::from_millis(2000));
    let started = Instant::now();
    let (status, _) = post(&c.bridge.url, &push("helpdesk.ticket.created_v1", "1")).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(300 + 400),
        "answered {took:?} after the push, past the 300 ms budget"
    );
    let ce = next(&mut c.rx).await;
    assert_eq!(ce["data"]["customized_fields_source"], "unavailable");
    assert_eq!(ce["data"]["customized_fields"], json!([]));
    assert_eq!(
        c.bridge
            .metric("lark_bridge_enrich_total", &[("result", "timeout")]),
        1.0
    );
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn an_api_that_is_down_leaves_the_fields_unavailable_and_publishes_anyway() {
    let fake = fake().await;
    let mut c = Channeled::start(enrich_cfg(&fake, "800")).await;
    c.bridge.wait_ready(200).await;
    fake.api().set(|b| b.fail_5xx = u32::MAX);
    let (status, _) = post(&c.bridge.url, &push("helpdesk.ticket.updated_v1", "1")).await;
    assert_eq!(status, 200);
    let ce = next(&mut c.rx).await;
    assert_eq!(
        ce["data"]["ticket"]["customized_fields_source"],
        "unavailable"
    );
    assert_eq!(
        c.bridge
            .metric("lark_bridge_enrich_total", &[("result", "error")]),
        1.0
    );
    assert!(
        c.bridge.metric(
            "lark_bridge_lark_api_requests_total",
            &[("api", "ticket_detail"), ("result", "unavailable")]
        ) >= 2.0,
        "5xx retried"
    );
    c.bridge.stop().await.unwrap();
}

#[tokio::test]
async fn enrichment_without_credentials_publishes_unavailable_without_a_call() {
    let fake = fake().await;
    let domain = fake.base_url();
    let mut c = Channeled::start(config(&[
        ("lark.domain", &domain),
        ("enrich.ticket_detail", "true"),
    ]))
    .await;
    c.bridge.wait_ready(200).await;
    assert_eq!(
        post(&c.bridge.url, &push("helpdesk.ticket.created_v1", "1"))
            .await
            .0,
        200
    );
    assert_eq!(
        next(&mut c.rx).await["data"]["customized_fields_source"],
        "unavailable"
    );
    assert!(fake.api().calls().is_empty());
    assert_eq!(
        c.bridge
            .metric("lark_bridge_enrich_total", &[("result", "error")]),
        1.0
    );
    c.bridge.stop().await.unwrap();
}

/// The real binary, configured from the environment against `fake`.
fn bin(fake: &FakeLark, args: &[&str], extra: &[(&str, &str)]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_lark-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LARK_BRIDGE") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .env("LARK_BRIDGE__LARK__DOMAIN", fake.base_url())
        .env("LARK_BRIDGE__LARK__ENCRYPT_KEY", KEY)
        .env("LARK_BRIDGE__LARK__VERIFICATION_TOKEN", TOKEN)
        .env("LARK_BRIDGE__LARK__APP_ID", APP_ID)
        .env("LARK_BRIDGE__LARK__APP_SECRET", APP_SECRET)
        .env("LARK_BRIDGE__LARK__HELPDESK_ID", HELPDESK_ID)
        .env("LARK_BRIDGE__LARK__HELPDESK_TOKEN", HELPDESK_TOKEN)
        .env("LARK_BRIDGE__SERVER__LISTEN", "127.0.0.1:0")
        .env("LARK_BRIDGE__ADMIN__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

#[tokio::test]
async fn the_subscribe_command_subscribes_unsubscribes_dry_runs_and_reports_failures() {
    let fake = fake().await;
    let out = bin(&fake, &["subscribe"], &[]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tenant_access_token: ok"), "{stdout}");
    assert!(
        stdout.contains("subscribe helpdesk.ticket.created_v1"),
        "{stdout}"
    );
    assert_eq!(fake.api().subscribed(), four());

    let out = bin(&fake, &["subscribe", "--unsubscribe"], &[])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(fake.api().subscribed().is_empty());
    assert_eq!(fake.api().calls_to("unsubscribe").len(), 1);

    let before = fake.api().calls().len();
    let out = bin(&fake, &["subscribe", "--dry-run"], &[])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("/open-apis/helpdesk/v1/events/subscribe"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"subtype\":\"ticket_message.created_v1\""),
        "{stdout}"
    );
    assert!(!stdout.contains(APP_SECRET) && !stdout.contains(HELPDESK_TOKEN));
    assert_eq!(fake.api().calls().len(), before, "a dry run calls nothing");

    fake.api()
        .set(|b| b.helpdesk_code = Some((154001, "unauthorized".into())));
    let out = bin(&fake, &["subscribe"], &[]).output().await.unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("code 154001") && all.contains("unauthorized"),
        "{all}"
    );
    assert!(!all.contains(APP_SECRET) && !all.contains(HELPDESK_TOKEN));
}

#[tokio::test]
async fn no_credential_reaches_a_log_line_at_debug_level() {
    let fake = fake().await;
    // A refusal first (error paths log too), then acceptance.
    fake.api()
        .set(|b| b.helpdesk_code = Some((154001, "unauthorized".into())));
    let mut child = bin(
        &fake,
        &[],
        &[
            ("LARK_BRIDGE__LOG__LEVEL", "debug"),
            ("LARK_BRIDGE__LOG__FORMAT", "json"),
            ("LARK_BRIDGE__ENRICH__TICKET_DETAIL", "true"),
        ],
    )
    .spawn()
    .unwrap();
    let wait = fake
        .api()
        .wait_until(WAIT, |a| (a.calls_to("subscribe").len() >= 2).then_some(()))
        .await;
    assert!(wait.is_some(), "retried");
    fake.api().set(|b| b.helpdesk_code = None);
    let subscribed = fake
        .api()
        .wait_until(WAIT, |a| {
            a.calls_to("subscribe")
                .iter()
                .any(|c| c.status == 200)
                .then_some(())
        })
        .await;
    assert!(subscribed.is_some());
    let _ = child.start_kill();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let tokens: Vec<String> = fake
        .api()
        .calls()
        .iter()
        .filter_map(|c| c.authorization.clone())
        .filter_map(|a| a.strip_prefix("Bearer ").map(str::to_string))
        .collect();
    assert!(!tokens.is_empty());
    assert!(
        log.contains("subscribing to the helpdesk events failed"),
        "{log}"
    );
    for secret in [APP_SECRET, HELPDESK_TOKEN, &helpdesk_header()]
        .into_iter()
        .map(str::to_string)
        .chain(tokens)
    {
        assert!(!log.contains(&secret), "a credential in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_ticket_story_from_fake_lark_arrives_enriched_and_in_order_on_nats() {
    let nats = start_nats().await;
    let fake = fake().await;
    let domain = fake.base_url();
    let nats_url = nats.url("nats");
    let mut cfg = config(&[
        ("source.kind", "long_connection"),
        ("lark.domain", &domain),
        ("lark.app_id", APP_ID),
        ("lark.app_secret", APP_SECRET),
        ("lark.helpdesk_id", HELPDESK_ID),
        ("lark.helpdesk_token", HELPDESK_TOKEN),
        ("enrich.ticket_detail", "true"),
        ("sink.kind", "nats"),
        ("sink.nats.url", &nats_url),
    ]);
    // The ticket family routed to one subject per helpdesk, so that the stream keeps its order.
    let one = Template::parse("lark.helpdesk.tickets.v1.{helpdesk_id}").unwrap();
    let n = &mut cfg.sink.nats;
    n.subject = one.clone();
    n.subjects.ticket_updated = one.clone();
    n.subjects.ticket_message_created = one.clone();
    n.subjects.notification_approve = one;
    let bridge = Bridge::from_config(cfg).await;
    bridge.wait_ready(200).await;
    let story = lark_bridge::simulate::ticket_story(HELPDESK_ID, Some(""));
    for (_, _, plain) in &story {
        let msg = fake.deliver(serde_json::to_vec(plain).unwrap(), None);
        let acked = fake.wait_until(WAIT, |f| f.acked(&msg).then_some(())).await;
        assert!(acked.is_some(), "answered 200");
    }
    let msgs = stream_messages(&nats_url, "LARK_HELPDESK").await;
    let ces: Vec<Value> = msgs
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = ces
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = story
        .iter()
        .map(|(id, ..)| id.as_str())
        .zip([
            "com.larksuite.helpdesk.ticket.created.v1",
            "com.larksuite.helpdesk.ticket.updated.v1",
            "com.larksuite.helpdesk.ticket_message.created.v1",
            "com.larksuite.helpdesk.ticket_message.created.v1",
            "com.larksuite.helpdesk.ticket.updated.v1",
            "com.larksuite.helpdesk.notification.approve.v1",
        ])
        .collect();
    assert_eq!(got, want, "the whole story, in order, once");
    assert!(msgs
        .iter()
        .all(|m| m.subject.as_str() == format!("lark.helpdesk.tickets.v1.{HELPDESK_ID}")));
    assert_eq!(ces[0]["data"]["customized_fields_source"], "api");
    assert_eq!(ces[0]["data"]["customized_fields"][0]["key_name"], "tier");
    assert_eq!(
        ces[1]["data"]["changed"],
        json!(["stage", "status", "updated_at"])
    );
    assert_eq!(ces[1]["data"]["ticket"]["stage"], "human");
    assert_eq!(ces[1]["data"]["ticket"]["customized_fields_source"], "api");
    assert_eq!(ces[2]["data"]["sender"]["type"], "guest");
    assert_eq!(ces[3]["data"]["sender"]["type"], "agent");
    assert_eq!(ces[4]["data"]["ticket"]["status"], "closed_by_agent");
    assert_eq!(ces[4]["data"]["ticket"]["score"], "satisfied");
    assert_eq!(ces[5]["data"]["approve_status"], "approved");
    // Each type validates against its schema, the enriched fields included.
    for ce in &ces {
        assert_helpdesk_event_valid(ce);
    }
    assert_eq!(fake.api().subscribed(), four());
    bridge.stop().await.unwrap();
}
