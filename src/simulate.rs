//! `lark-bridge simulate`: Lark's side of the push protocol. It builds realistic
//! `helpdesk.ticket.created_v1` events, encrypts and signs them exactly as Lark does, and posts
//! them. One at a time it prints each answer (the quickstart); with `--concurrency` or
//! `--duration` it is a load generator over keep-alive connections that reports throughput,
//! latency percentiles and a count per status code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::lark::{crypto, signature, EncryptKey};

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
    /// Send every event this many times (redeliveries of the same event id).
    #[arg(long, default_value_t = 1)]
    pub copies: u32,
    /// Requests in flight at once (load mode when > 1).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Send for this long instead of `--count` events (e.g. `10s`, `2m`; load mode).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print the load report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Like Lark, resend every event that was not answered 200, after these delays (ms,
    /// comma-separated; Lark's are 15000,300000,3600000,21600000).
    #[arg(long, value_delimiter = ',')]
    pub retry_ms: Vec<u64>,
    /// Write each event id answered 200 to this file (one per line), for loss checks.
    #[arg(long)]
    pub acked_ids_file: Option<std::path::PathBuf>,
    /// Per-request timeout in ms (Lark waits 3 s).
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration '{s}'"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in '{s}' (use ms, s or m)")),
    }
}

/// One request as Lark would send it.
#[derive(Debug, Clone)]
pub struct LarkRequest {
    pub event_id: String,
    pub body: bytes::Bytes,
    pub headers: Vec<(&'static str, String)>,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
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
            let nonce = random_hex(8);
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

/// A new ticket event request with a fresh id.
pub fn new_ticket_request(args: &SimulateArgs, key: Option<&EncryptKey>) -> LarkRequest {
    let id = random_hex(16);
    let plain = ticket_event(&id, &args.helpdesk_id, args.token.as_deref(), args.legacy);
    lark_request(&id, &serde_json::to_vec(&plain).unwrap_or_default(), key)
}

/// The load report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub latency_ms: Percentiles,
    pub status: BTreeMap<String, u64>,
    pub errors: u64,
    pub events: u64,
    pub acked_events: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: v[v.len() - 1].as_secs_f64() * 1000.0,
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    r: &LarkRequest,
) -> Result<(u16, String), String> {
    let mut req = client.post(url).body(r.body.clone());
    for (k, v) in &r.headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Ok((status, text))
}

pub fn client(timeout: Duration, pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

/// Run `simulate`. Returns the report (and prints it, or each answer in one-at-a-time mode).
pub async fn run(args: SimulateArgs) -> Result<Report, String> {
    let key = args.encrypt_key.as_deref().map(EncryptKey::new);
    let client = client(
        Duration::from_millis(args.timeout_ms),
        args.concurrency.max(1),
    );
    if args.challenge {
        let c = format!("simulate-{}", random_hex(6));
        let r = challenge_request(&c, args.token.as_deref(), key.as_ref());
        let (status, text) = send(&client, &args.url, &r).await?;
        println!("challenge {c}: {status} {text}");
        return Ok(Report {
            requests: 1,
            seconds: 0.0,
            requests_per_sec: 0.0,
            latency_ms: Percentiles::default(),
            status: BTreeMap::from([(status.to_string(), 1)]),
            errors: 0,
            events: 0,
            acked_events: (status == 200) as u64,
        });
    }
    let load_mode = args.concurrency > 1 || args.duration.is_some() || args.json;
    // Pre-generate the bodies so encryption does not slow the generator down.
    let pregen = match args.duration {
        Some(_) => 0,
        None => args.count as usize,
    };
    let requests: Arc<Vec<LarkRequest>> = Arc::new(
        (0..pregen)
            .map(|_| new_ticket_request(&args, key.as_ref()))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let status: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let started = Instant::now();
    let until = args.duration.map(|d| started + d);
    let args = Arc::new(args);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, requests, next, sent, errors, acked, status, args, key) = (
            client.clone(),
            requests.clone(),
            next.clone(),
            sent.clone(),
            errors.clone(),
            acked.clone(),
            status.clone(),
            args.clone(),
            key.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let req = match until {
                    Some(u) => {
                        if Instant::now() >= u {
                            break;
                        }
                        new_ticket_request(&args, key.as_ref())
                    }
                    None => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests.len() {
                            break;
                        }
                        requests[i].clone()
                    }
                };
                let mut delays = args.retry_ms.iter();
                let mut copies = args.copies.max(1);
                loop {
                    let t = Instant::now();
                    let res = send(&client, &args.url, &req).await;
                    lat.push(t.elapsed());
                    sent.fetch_add(1, Ordering::Relaxed);
                    let code = match &res {
                        Ok((s, _)) => *s,
                        Err(_) => 0,
                    };
                    match &res {
                        Ok((s, text)) => {
                            *status
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(s.to_string())
                                .or_default() += 1;
                            if !load_mode {
                                println!("{} {s} {text}", req.event_id);
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            *status
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry("error".into())
                                .or_default() += 1;
                            if !load_mode {
                                println!("{} error {e}", req.event_id);
                            }
                        }
                    }
                    if code == 200 {
                        acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(req.event_id.clone());
                        copies -= 1;
                        if copies == 0 {
                            break;
                        }
                        continue;
                    }
                    match delays.next() {
                        Some(d) => tokio::time::sleep(Duration::from_millis(*d)).await,
                        None => break,
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.map_err(|e| e.to_string())?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    acked.sort();
    acked.dedup();
    if let Some(path) = &args.acked_ids_file {
        let mut text = acked.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let requests_sent = sent.load(Ordering::Relaxed);
    let report = Report {
        requests: requests_sent,
        seconds,
        requests_per_sec: requests_sent as f64 / seconds.max(1e-9),
        latency_ms: percentiles(lat),
        status: std::mem::take(&mut *status.lock().unwrap_or_else(|p| p.into_inner())),
        errors: errors.load(Ordering::Relaxed),
        events: match args.duration {
            Some(_) => requests_sent,
            None => requests.len() as u64,
        },
        acked_events: acked.len() as u64,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else if load_mode {
        println!(
            "requests: {}  in {:.2}s  = {:.0} req/s\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\nstatus: {}",
            report.requests, report.seconds, report.requests_per_sec, report.latency_ms.p50, report.latency_ms.p90,
            report.latency_ms.p99, report.latency_ms.max,
            report.status.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(report)
}
