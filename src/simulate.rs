//! `lark-bridge simulate`: the operator's smoke test against a deployment. It plays Lark's side
//! of the push protocol — realistic helpdesk events of any of the four types, or a whole
//! ticket's story, encrypted and signed exactly as Lark does — sends them one at a time and
//! prints each answer. The builders here
//! are also what the load generator (`lark-load`, in the `fake-lark` crate) sends.

use std::time::Duration;

use lark_protocol::crypto::{self, EncryptKey};
use lark_protocol::signature;
use serde_json::json;

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The bridge's webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook/event")]
    pub url: String,
    /// Encrypt Key: encrypt and sign every request (as Lark does when one is set).
    #[arg(long, env = "LARK_SIMULATE_ENCRYPT_KEY", hide_env_values = true)]
    pub encrypt_key: Option<String>,
    /// Verification Token to put in each body.
    #[arg(long, env = "LARK_SIMULATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Number of distinct events to send.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// helpdesk_id of the events (the partition key).
    #[arg(long, default_value = "7090000000000000001")]
    pub helpdesk_id: String,
    /// Send a URL-verification challenge instead of events.
    #[arg(long)]
    pub challenge: bool,
    /// Send the legacy v1 envelope instead of v2.
    #[arg(long)]
    pub legacy: bool,
    /// Per-request timeout in ms (Lark waits 3 s).
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// Lark event type to send: any of the four helpdesk events.
    #[arg(long, default_value = "helpdesk.ticket.created_v1", value_parser = clap::builder::PossibleValuesParser::new(lark_protocol::normalize::HELPDESK_EVENTS))]
    pub event_type: String,
    /// Send a whole ticket's story instead (`--count` stories): created (bot) → updated (bot →
    /// human) → a guest's message → an agent's message → updated (closed, rated) → a
    /// notification approved.
    #[arg(long, conflicts_with_all = ["challenge", "legacy"])]
    pub story: bool,
}

/// Why `simulate` could not do its job (an answer other than 200 is not an error: it is
/// printed, and counted in the exit status).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("cannot send to {url}: {source}")]
    Send {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{failed} of {sent} requests were not answered 200")]
    NotAccepted { failed: u64, sent: u64 },
}

/// One request as Lark would send it.
#[derive(Debug, Clone)]
pub struct LarkRequest {
    pub event_id: String,
    pub body: bytes::Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// `N` random bytes as lowercase hex (event ids, nonces).
pub fn random_hex<const N: usize>() -> String {
    hex::encode(rand::random::<[u8; N]>())
}

/// The plaintext of a `helpdesk.ticket.created_v1` event about a new ticket.
pub fn ticket_event(
    event_id: &str,
    helpdesk_id: &str,
    token: Option<&str>,
    legacy: bool,
) -> serde_json::Value {
    ticket_event_for(event_id, helpdesk_id, &ticket_id(), token, legacy)
}

/// The plaintext of a `helpdesk.ticket.created_v1` event about `ticket_id`.
pub fn ticket_event_for(
    event_id: &str,
    helpdesk_id: &str,
    ticket_id: &str,
    token: Option<&str>,
    legacy: bool,
) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp_millis();
    let event = json!({
        "ticket_id": ticket_id,
        "helpdesk_id": helpdesk_id,
        "guest": {
            "id": {"open_id": "ou_5ad573a6411d72b8305fda3a9c15c70e", "union_id": "on_9a1c0bd12cb4d6d4d4b0c24c94a95ff1", "user_id": "e33ggbyz"},
            "name": "Simulated Guest"
        },
        "stage": 1,
        "status": 1,
        "score": 0,
        "created_at": now,
        "updated_at": now,
        "closed_at": 0,
        "channel": 9,
        "solve": 1,
        "chat_id": "oc_a0553eda9014c201e6969b478895c230"
    });
    if legacy {
        let mut event = event;
        event["type"] = json!("helpdesk.ticket.created_v1");
        event["app_id"] = json!("cli_simulate0000001");
        event["tenant_key"] = json!("simulate");
        json!({"uuid": event_id, "token": token.unwrap_or(""), "ts": format!("{}.{:03}", now / 1000, now % 1000), "type": "event_callback", "event": event})
    } else {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": event_id,
                "event_type": "helpdesk.ticket.created_v1",
                "create_time": now.to_string(),
                "token": token.unwrap_or(""),
                "app_id": "cli_simulate0000001",
                "tenant_key": "simulate"
            },
            "event": event
        })
    }
}

const GUEST: (&str, &str, &str) = (
    "ou_5ad573a6411d72b8305fda3a9c15c70e",
    "on_9a1c0bd12cb4d6d4d4b0c24c94a95ff1",
    "e33ggbyz",
);
const AGENT: (&str, &str, &str) = (
    "ou_7d8a6e6df7621556ce0d21922b676706",
    "on_agent0000000000000000000000001",
    "agent01",
);

fn lark_user((open_id, union_id, user_id): (&str, &str, &str), name: &str) -> serde_json::Value {
    json!({"id": {"open_id": open_id, "union_id": union_id, "user_id": user_id}, "name": name,
        "email": format!("{user_id}@example.com")})
}

/// A v2 envelope around Lark's `event`, as Lark sends it.
pub fn envelope(
    event_id: &str,
    event_type: &str,
    token: Option<&str>,
    now_ms: i64,
    event: serde_json::Value,
) -> serde_json::Value {
    json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": event_type,
            "create_time": now_ms.to_string(),
            "token": token.unwrap_or(""),
            "app_id": "cli_simulate0000001",
            "tenant_key": "simulate"
        },
        "event": event
    })
}

/// One ticket at one moment of its life, in Lark's shape (the `object` of an update, the
/// `ticket` of a message, the `event` of a creation).
fn lark_ticket(
    ticket_id: &str,
    helpdesk_id: &str,
    stage: i64,
    status: i64,
    created: i64,
    now: i64,
) -> serde_json::Value {
    let closed = matches!(status, 50..=52);
    let mut t = json!({
        "ticket_id": ticket_id,
        "helpdesk_id": helpdesk_id,
        "guest": lark_user(GUEST, "Simulated Guest"),
        "stage": stage,
        "status": status,
        "score": if closed { 3 } else { 0 },
        "created_at": created,
        "updated_at": now,
        "closed_at": if closed { now } else { 0 },
        "channel": 9,
        "solve": if closed { 2 } else { 1 },
        "chat_id": "oc_a0553eda9014c201e6969b478895c230",
        "agents": if stage == 2 { json!([lark_user(AGENT, "Simulated Agent")]) } else { json!([]) },
        "collaborators": []
    });
    if closed {
        t["closed_by"] = lark_user(AGENT, "Simulated Agent");
    }
    t
}

/// A fresh ticket id, in Lark's style.
pub fn ticket_id() -> String {
    format!("70{:017}", rand::random::<u64>() % 100_000_000_000_000_000)
}

/// A realistic plaintext event of any helpdesk type (v2), about `ticket_id`.
pub fn helpdesk_event(
    event_type: &str,
    event_id: &str,
    helpdesk_id: &str,
    ticket_id: &str,
    token: Option<&str>,
) -> serde_json::Value {
    use lark_protocol::normalize as n;
    let now = chrono::Utc::now().timestamp_millis();
    let event = match event_type {
        n::TICKET_UPDATED => json!({
            "object": lark_ticket(ticket_id, helpdesk_id, 2, 2, now - 60_000, now),
            "old_object": {"stage": 1, "status": 1, "updated_at": now - 60_000}
        }),
        n::TICKET_MESSAGE_CREATED => message_event(
            ticket_id,
            helpdesk_id,
            2,
            "Hello, my order has not arrived.",
            now,
        ),
        n::NOTIFICATION_APPROVE => json!({
            "notification_id": format!("69{:017}", rand::random::<u64>() % 100_000_000_000_000_000),
            "helpdesk_id": helpdesk_id,
            "approve_status": "APPROVED"
        }),
        _ => return ticket_event_for(event_id, helpdesk_id, ticket_id, token, false),
    };
    envelope(event_id, event_type, token, now, event)
}

fn message_event(
    ticket_id: &str,
    helpdesk_id: &str,
    sender_type: i64,
    text: &str,
    now: i64,
) -> serde_json::Value {
    let (sender, stage) = if sender_type == 3 {
        (AGENT, 2)
    } else {
        (GUEST, 2)
    };
    json!({
        "ticket_message_id": format!("69{:017}", rand::random::<u64>() % 100_000_000_000_000_000),
        "message_id": format!("om_{}", random_hex::<16>()),
        "msg_type": "text",
        "position": "1",
        "sender_id": {"open_id": sender.0, "union_id": sender.1, "user_id": sender.2},
        "sender_type": sender_type,
        "text": text,
        "ticket": lark_ticket(ticket_id, helpdesk_id, stage, 2, now - 60_000, now),
        "chat_id": "oc_a0553eda9014c201e6969b478895c230",
        "content": {"content": text, "msg_type": "text"}
    })
}

/// A whole ticket's story, in the order Lark sends it, with all four helpdesk event types:
/// created (bot) → updated (bot → human) → a guest's message → an agent's message → updated
/// (closed by the agent, rated satisfied) → the helpdesk's push notification about it approved.
/// Each item is (event id, Lark event type, plaintext).
pub fn ticket_story(
    helpdesk_id: &str,
    token: Option<&str>,
) -> Vec<(String, &'static str, serde_json::Value)> {
    use lark_protocol::normalize as n;
    let ticket = ticket_id();
    let now = chrono::Utc::now().timestamp_millis();
    let created = now - 5_000;
    let id = || random_hex::<16>();
    let step = |event_type: &'static str, at: i64, event: serde_json::Value| {
        let e = id();
        let plain = envelope(&e, event_type, token, at, event);
        (e, event_type, plain)
    };
    let first = id();
    vec![
        (
            first.clone(),
            n::TICKET_CREATED,
            ticket_event_for(&first, helpdesk_id, &ticket, token, false),
        ),
        step(
            n::TICKET_UPDATED,
            now - 4_000,
            json!({
                "object": lark_ticket(&ticket, helpdesk_id, 2, 2, created, now - 4_000),
                "old_object": {"stage": 1, "status": 1, "updated_at": created}
            }),
        ),
        step(
            n::TICKET_MESSAGE_CREATED,
            now - 3_000,
            message_event(
                &ticket,
                helpdesk_id,
                2,
                "Hello, my order has not arrived.",
                now - 3_000,
            ),
        ),
        step(
            n::TICKET_MESSAGE_CREATED,
            now - 2_000,
            message_event(
                &ticket,
                helpdesk_id,
                3,
                "Sorry about that: it ships today.",
                now - 2_000,
            ),
        ),
        step(
            n::TICKET_UPDATED,
            now - 1_000,
            json!({
                "object": lark_ticket(&ticket, helpdesk_id, 2, 51, created, now - 1_000),
                "old_object": {"status": 2, "updated_at": now - 2_000}
            }),
        ),
        step(
            n::NOTIFICATION_APPROVE,
            now - 500,
            json!({
                "notification_id": format!("69{:017}", rand::random::<u64>() % 100_000_000_000_000_000),
                "helpdesk_id": helpdesk_id,
                "approve_status": "APPROVED"
            }),
        ),
    ]
}

/// Encrypt and sign a plaintext body as Lark does (or send it plain without a key).
pub fn lark_request(event_id: &str, plaintext: &[u8], key: Option<&EncryptKey>) -> LarkRequest {
    let mut headers = vec![("content-type", "application/json".to_string())];
    let body = match key {
        Some(k) => {
            let ct = crypto::encrypt(k, rand::random(), plaintext);
            let body = serde_json::to_vec(&json!({ "encrypt": ct })).unwrap_or_default();
            let ts = chrono::Utc::now().timestamp().to_string();
            let nonce = random_hex::<8>();
            let sig = signature::sign(&ts, &nonce, k, &body);
            headers.push(("x-lark-request-timestamp", ts));
            headers.push(("x-lark-request-nonce", nonce));
            headers.push(("x-lark-signature", sig));
            body
        }
        None => plaintext.to_vec(),
    };
    LarkRequest {
        event_id: event_id.to_string(),
        body: body.into(),
        headers,
    }
}

/// A URL-verification challenge (encrypted when a key is given; never signed, like Lark).
pub fn challenge_request(
    challenge: &str,
    token: Option<&str>,
    key: Option<&EncryptKey>,
) -> LarkRequest {
    let plain = serde_json::to_vec(
        &json!({"challenge": challenge, "token": token.unwrap_or(""), "type": "url_verification"}),
    )
    .unwrap_or_default();
    let body = match key {
        Some(k) => {
            serde_json::to_vec(&json!({"encrypt": crypto::encrypt(k, rand::random(), &plain)}))
                .unwrap_or_default()
        }
        None => plain,
    };
    LarkRequest {
        event_id: String::new(),
        body: body.into(),
        headers: vec![("content-type", "application/json".to_string())],
    }
}

/// Send what `args` asks for, one request at a time, printing `<event id> <status> <body>` per
/// request (the format the README shows).
pub async fn run(args: SimulateArgs) -> Result<(), SimulateError> {
    let key = args.encrypt_key.as_deref().map(EncryptKey::new);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
        .map_err(|source| SimulateError::Send {
            url: args.url.clone(),
            source,
        })?;
    let requests: Vec<(String, LarkRequest)> = if args.challenge {
        let c = format!("simulate-{}", random_hex::<6>());
        vec![(
            format!("challenge {c}:"),
            challenge_request(&c, args.token.as_deref(), key.as_ref()),
        )]
    } else if args.story {
        (0..args.count)
            .flat_map(|_| ticket_story(&args.helpdesk_id, args.token.as_deref()))
            .map(|(id, ty, plain)| {
                let r = lark_request(
                    &id,
                    &serde_json::to_vec(&plain).unwrap_or_default(),
                    key.as_ref(),
                );
                (format!("{id} {ty}"), r)
            })
            .collect()
    } else {
        (0..args.count)
            .map(|_| {
                let id = random_hex::<16>();
                let plain = if args.legacy {
                    ticket_event(&id, &args.helpdesk_id, args.token.as_deref(), true)
                } else {
                    helpdesk_event(
                        &args.event_type,
                        &id,
                        &args.helpdesk_id,
                        &ticket_id(),
                        args.token.as_deref(),
                    )
                };
                let r = lark_request(
                    &id,
                    &serde_json::to_vec(&plain).unwrap_or_default(),
                    key.as_ref(),
                );
                (id, r)
            })
            .collect()
    };
    let (mut sent, mut failed) = (0, 0);
    for (label, r) in requests {
        let mut req = client.post(&args.url).body(r.body.clone());
        for (k, v) in &r.headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|source| SimulateError::Send {
            url: args.url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        println!("{label} {status} {text}");
        sent += 1;
        failed += u64::from(status != 200);
    }
    if failed > 0 {
        return Err(SimulateError::NotAccepted { failed, sent });
    }
    Ok(())
}
