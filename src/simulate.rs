//! `lark-bridge simulate`: the operator's smoke test against a deployment. It plays Lark's side
//! of the push protocol — realistic `helpdesk.ticket.created_v1` events, encrypted and signed
//! exactly as Lark does — sends them one at a time and prints each answer. The builders here
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

/// The plaintext of a `helpdesk.ticket.created_v1` event.
pub fn ticket_event(
    event_id: &str,
    helpdesk_id: &str,
    token: Option<&str>,
    legacy: bool,
) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp_millis();
    let ticket_id = format!("70{:017}", rand::random::<u64>() % 100_000_000_000_000_000);
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
    } else {
        (0..args.count)
            .map(|_| {
                let id = random_hex::<16>();
                let plain =
                    ticket_event(&id, &args.helpdesk_id, args.token.as_deref(), args.legacy);
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
