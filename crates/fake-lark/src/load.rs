//! `lark-load`: the load generator. It plays Lark's side of the push protocol at volume — the
//! requests are built by the bridge's own `simulate` (realistic `helpdesk.ticket.created_v1`
//! events, encrypted and signed exactly as Lark does) — and reports throughput, latency
//! percentiles and a count per status code. Without `--concurrency`, `--duration`, `--rate` or
//! `--json` it sends one at a time and prints each answer, like `lark-bridge simulate`; with
//! `--retry-ms` and `--acked-ids-file` it also plays Lark's redelivery for the fault soak.
//!
//! The load generator must never be what limits a benchmark, so the expensive part — building,
//! encrypting and signing a body, each with its own event id — happens before the clock starts
//! (a pool for `--duration`, every request for `--count`), on every core. During the run each
//! worker owns one keep-alive HTTP/1.1 connection (hyper's client connection, no pool, no URL
//! parsing per request) and keeps its counters to itself until the end; the only shared state
//! is the atomic index of the next request.
//!
//! Over 600 lines on purpose: the request pool, the two transports, the paced and closed-loop
//! workers and the report are one engine whose parts only make sense together; it is a test
//! tool, never in the product binary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use lark_bridge::simulate::{
    challenge_request, helpdesk_event, lark_request, random_hex, ticket_event, ticket_id,
    LarkRequest, SimulateArgs,
};
use lark_protocol::crypto::EncryptKey;

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// What every request is: the same flags as `lark-bridge simulate`.
    #[command(flatten)]
    pub send: SimulateArgs,
    /// Send every event this many times (redeliveries of the same event id).
    #[arg(long, default_value_t = 1)]
    pub copies: u32,
    /// This share of the events (0–1) lacks its `helpdesk_id`: genuinely Lark's but refused by
    /// the normalizer, so the bridge dead-letters them (the fault soak checks none is lost).
    #[arg(long, default_value_t = 0.0)]
    pub unnormalizable_share: f64,
    /// Requests in flight at once (load mode when > 1).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Send for this long instead of `--count` events (e.g. `10s`, `2m`; load mode).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Start requests at this steady rate (requests per second) instead of as fast as the
    /// answers come back; `--concurrency` bounds how many may be in flight (load mode).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests built before a `--duration` run starts (default: rate × duration + 10 %, or
    /// 200000 without `--rate`). Past the pool, requests are built during the run and counted
    /// as `generated_live`.
    #[arg(long)]
    pub pool: Option<usize>,
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

/// A new event request with a fresh id, of `--event-type` (ticket.created unless told).
pub fn new_ticket_request(args: &LoadArgs, key: Option<&EncryptKey>) -> LarkRequest {
    use lark_protocol::normalize as n;
    let id = random_hex::<16>();
    let mut plain = if args.send.legacy {
        ticket_event(
            &id,
            &args.send.helpdesk_id,
            args.send.token.as_deref(),
            true,
        )
    } else {
        helpdesk_event(
            &args.send.event_type,
            &id,
            &args.send.helpdesk_id,
            &ticket_id(),
            args.send.token.as_deref(),
        )
    };
    if args.unnormalizable_share > 0.0 && rand::random::<f64>() < args.unnormalizable_share {
        // Drop a field the type's normalizer requires.
        let (at, field): (&[&str], &str) = match args.send.event_type.as_str() {
            n::TICKET_UPDATED => (&["event", "object"], "helpdesk_id"),
            n::TICKET_MESSAGE_CREATED => (&["event"], "ticket_message_id"),
            n::NOTIFICATION_APPROVE => (&["event"], "notification_id"),
            _ => (&["event"], "helpdesk_id"),
        };
        let mut v = &mut plain;
        for k in at {
            v = &mut v[*k];
        }
        if let Some(o) = v.as_object_mut() {
            o.remove(field);
        }
    }
    lark_request(&id, &serde_json::to_vec(&plain).unwrap_or_default(), key)
}

/// The load report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests sent, redeliveries and copies included.
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    /// From writing the request to reading the whole answer.
    pub latency_ms: Percentiles,
    /// Answers per status code; `error` for no answer (connection failure or timeout).
    pub status: BTreeMap<String, u64>,
    pub errors: u64,
    /// Distinct events sent.
    pub events: u64,
    /// Distinct events answered 200 at least once.
    pub acked_events: u64,
    pub concurrency: usize,
    /// `--rate`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// With `--rate`: how late each event was sent against its schedule. A large value means
    /// the generator (or too small a `--concurrency`) could not hold the rate, and the latency
    /// above understates the wait an evenly paced sender would have seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_lag_ms: Option<Percentiles>,
    /// Requests built during the run because the pre-built pool ran out (each costs the
    /// generator an encryption and a signature while measuring).
    pub generated_live: u64,
    /// CPU time this process used while measuring (user + system, Linux only): the share of
    /// the machine the generator took from the server it measures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_cpu_seconds: Option<f64>,
}

/// User + system CPU time of this process so far, from /proc/self/stat (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace().skip(11);
    let ticks: f64 = f.next()?.parse::<f64>().ok()? + f.next()?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Some(ticks / 100.0)
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

pub fn client(timeout: Duration, pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

/// A request ready to send many times: the body and the headers that differ per request (the
/// shared ones are added by the transport).
#[derive(Debug, Clone)]
struct Prepared {
    event_id: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Prepared {
    fn new(r: LarkRequest) -> Prepared {
        let headers = r
            .headers
            .into_iter()
            .filter(|(k, _)| *k != "content-type")
            .filter_map(|(k, v)| Some((HeaderName::from_static(k), HeaderValue::try_from(v).ok()?)))
            .collect();
        Prepared {
            event_id: r.event_id,
            // A copy sized to the body: the pool holds hundreds of thousands of these, and the
            // serializer's buffer has up to twice the capacity.
            body: Bytes::copy_from_slice(&r.body),
            headers,
        }
    }
}

/// Build `n` ticket requests on every core (encryption and signing are the costly part).
fn pregenerate(n: usize, args: &LoadArgs, key: Option<&EncryptKey>) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, n.max(1));
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let len = per.min(n.saturating_sub(t * per));
                s.spawn(move || {
                    (0..len)
                        .map(|_| Prepared::new(new_ticket_request(args, key)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(v) => all.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        all
    })
}

/// Where requests go: an `http://` URL gets one bare keep-alive connection per worker; any
/// other URL (e.g. `https://` through a proxy) goes through reqwest.
enum Transport {
    Direct {
        addr: String,
        host: HeaderValue,
        path: Uri,
        sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    },
    Client {
        client: reqwest::Client,
        url: String,
    },
}

impl Transport {
    fn new(url: &str, timeout: Duration, concurrency: usize) -> Result<Transport, String> {
        let uri: Uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Ok(Transport::Client {
                client: client(timeout, concurrency),
                url: url.to_string(),
            });
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--url {url}: no host"))?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|e| format!("--url {url}: {e}"))?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|e| format!("--url {url}: {e}"))?;
        Ok(Transport::Direct {
            addr,
            host,
            path,
            sender: None,
        })
    }

    /// Another transport to the same place (each worker owns one).
    fn fork(&self) -> Transport {
        match self {
            Transport::Direct {
                addr, host, path, ..
            } => Transport::Direct {
                addr: addr.clone(),
                host: host.clone(),
                path: path.clone(),
                sender: None,
            },
            Transport::Client { client, url } => Transport::Client {
                client: client.clone(),
                url: url.clone(),
            },
        }
    }

    /// Open the connection now, so that connecting is not part of the measurement. A failure
    /// here is retried (and counted) by the first `send`.
    async fn connect(&mut self) -> Result<(), String> {
        let Transport::Direct { addr, sender, .. } = self else {
            return Ok(());
        };
        let tcp = tokio::net::TcpStream::connect(addr.as_str())
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *sender = Some(s);
        Ok(())
    }

    /// Post `r`; returns the status and the answer body.
    async fn send(&mut self, r: &Prepared, timeout: Duration) -> Result<(u16, Bytes), String> {
        if let Transport::Client { client, url } = self {
            let mut req = client
                .post(url.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .body(r.body.clone());
            for (k, v) in &r.headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
            let status = resp.status().as_u16();
            return Ok((status, resp.bytes().await.unwrap_or_default()));
        }
        let r = tokio::time::timeout(timeout, self.send_direct(r)).await;
        let r = r.unwrap_or_else(|_| Err("timed out".to_string()));
        if r.is_err() {
            // The connection's state is unknown: start over on a new one.
            if let Transport::Direct { sender, .. } = self {
                *sender = None;
            }
        }
        r
    }

    async fn send_direct(&mut self, r: &Prepared) -> Result<(u16, Bytes), String> {
        if matches!(self, Transport::Direct { sender, .. } if sender.as_ref().is_none_or(|s| s.is_closed()))
        {
            self.connect().await?;
        }
        let Transport::Direct {
            host,
            path,
            sender: Some(sender),
            ..
        } = self
        else {
            return Err("no connection".into());
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = Request::new(Full::new(r.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = path.clone();
        let h = req.headers_mut();
        h.reserve(r.headers.len() + 3);
        h.insert(header::HOST, host.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.body.len()));
        for (k, v) in &r.headers {
            h.insert(k.clone(), v.clone());
        }
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// What every worker reads. Built after the pool, so `started` excludes pre-generation.
struct Plan {
    args: LoadArgs,
    key: Option<EncryptKey>,
    pool: Vec<Prepared>,
    /// `--count` mode: how many events in all.
    limit: Option<u64>,
    until: Option<Instant>,
    started: Instant,
    next: AtomicU64,
    live: AtomicU64,
    load_mode: bool,
}

/// One worker's counts, merged at the end (no shared counters while measuring).
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    lags: Vec<Duration>,
    status: BTreeMap<u16, u64>,
    sent: u64,
    errors: u64,
    events: u64,
    acked: u64,
    acked_ids: Vec<String>,
}

async fn worker(plan: Arc<Plan>, mut transport: Transport) -> Tally {
    let mut t = Tally::default();
    let timeout = Duration::from_millis(plan.args.send.timeout_ms);
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if plan.limit.is_some_and(|n| i >= n) {
            break;
        }
        let scheduled = match plan.args.rate {
            Some(rate) => {
                let at = plan.started + Duration::from_secs_f64(i as f64 / rate);
                if plan.until.is_some_and(|u| at >= u) {
                    break;
                }
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                Some(at)
            }
            None => {
                if plan.until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                None
            }
        };
        let built;
        let req = match plan.pool.get(i as usize) {
            Some(r) => r,
            None => {
                plan.live.fetch_add(1, Ordering::Relaxed);
                built = Prepared::new(new_ticket_request(&plan.args, plan.key.as_ref()));
                &built
            }
        };
        t.events += 1;
        let mut delays = plan.args.retry_ms.iter();
        let mut copies = plan.args.copies.max(1);
        let mut acked = false;
        let mut first = true;
        loop {
            let sent_at = Instant::now();
            if let (Some(at), true) = (scheduled, first) {
                t.lags.push(sent_at.saturating_duration_since(at));
            }
            first = false;
            let res = transport.send(req, timeout).await;
            t.latencies.push(sent_at.elapsed());
            t.sent += 1;
            let code = match &res {
                Ok((s, _)) => *s,
                Err(_) => 0,
            };
            *t.status.entry(code).or_default() += 1;
            match &res {
                Ok((s, text)) if !plan.load_mode => {
                    println!("{} {s} {}", req.event_id, String::from_utf8_lossy(text))
                }
                Err(e) => {
                    t.errors += 1;
                    if !plan.load_mode {
                        println!("{} error {e}", req.event_id);
                    }
                }
                Ok(_) => {}
            }
            if code == 200 {
                if !acked && plan.args.acked_ids_file.is_some() {
                    t.acked_ids.push(req.event_id.clone());
                }
                acked = true;
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
        t.acked += acked as u64;
    }
    t
}

/// Run `simulate`. Returns the report (and prints it, or each answer in one-at-a-time mode).
pub async fn run(args: LoadArgs) -> Result<Report, String> {
    if args.send.story {
        return Err(
            "--story is simulate's (a story is sent in order, one event at a time); lark-load sends independent events of --event-type"
                .into(),
        );
    }
    let key = args.send.encrypt_key.as_deref().map(EncryptKey::new);
    let concurrency = args.concurrency.max(1);
    let timeout = Duration::from_millis(args.send.timeout_ms);
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("--rate must be a positive number, not {rate}"));
        }
    }
    let mut transport = Transport::new(&args.send.url, timeout, concurrency)?;
    if args.send.challenge {
        let c = format!("simulate-{}", random_hex::<6>());
        let r = Prepared::new(challenge_request(
            &c,
            args.send.token.as_deref(),
            key.as_ref(),
        ));
        let (status, text) = transport.send(&r, timeout).await?;
        println!("challenge {c}: {status} {}", String::from_utf8_lossy(&text));
        return Ok(Report {
            requests: 1,
            seconds: 0.0,
            requests_per_sec: 0.0,
            latency_ms: Percentiles::default(),
            status: BTreeMap::from([(status.to_string(), 1)]),
            errors: 0,
            events: 0,
            acked_events: (status == 200) as u64,
            concurrency: 1,
            target_rate: None,
            schedule_lag_ms: None,
            generated_live: 0,
            generator_cpu_seconds: None,
        });
    }
    let load_mode =
        args.concurrency > 1 || args.duration.is_some() || args.rate.is_some() || args.json;
    // Build the bodies before the clock starts: encryption must not slow the generator down.
    let pool_size = match args.duration {
        None => args.send.count as usize,
        Some(d) => args.pool.unwrap_or_else(|| {
            let estimate = match args.rate {
                Some(r) => r * d.as_secs_f64() * 1.1,
                None => 20_000.0 * d.as_secs_f64(),
            };
            (estimate as usize).clamp(10_000, 1_000_000) + concurrency
        }),
    };
    let pool = pregenerate(pool_size, &args, key.as_ref());
    let mut transports = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut t = transport.fork();
        let _ = t.connect().await;
        transports.push(t);
    }
    drop(transport);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let plan = Arc::new(Plan {
        limit: args.duration.is_none().then_some(args.send.count),
        until: args.duration.map(|d| started + d),
        started,
        next: AtomicU64::new(0),
        live: AtomicU64::new(0),
        load_mode,
        pool,
        key,
        args,
    });
    let workers: Vec<_> = transports
        .into_iter()
        .map(|t| tokio::spawn(worker(plan.clone(), t)))
        .collect();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.map_err(|e| e.to_string())?;
        all.latencies.extend(t.latencies);
        all.lags.extend(t.lags);
        for (k, v) in t.status {
            *all.status.entry(k).or_default() += v;
        }
        all.sent += t.sent;
        all.errors += t.errors;
        all.events += t.events;
        all.acked += t.acked;
        all.acked_ids.extend(t.acked_ids);
    }
    let seconds = started.elapsed().as_secs_f64();
    let generator_cpu_seconds = cpu_before.zip(cpu_seconds()).map(|(a, b)| b - a);
    let args = &plan.args;
    if let Some(path) = &args.acked_ids_file {
        all.acked_ids.sort();
        let mut text = all.acked_ids.join("\n");
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let report = Report {
        requests: all.sent,
        seconds,
        requests_per_sec: all.sent as f64 / seconds.max(1e-9),
        latency_ms: percentiles(all.latencies),
        status: all
            .status
            .into_iter()
            .map(|(k, v)| {
                (
                    if k == 0 {
                        "error".into()
                    } else {
                        k.to_string()
                    },
                    v,
                )
            })
            .collect(),
        errors: all.errors,
        events: all.events,
        acked_events: all.acked,
        concurrency,
        target_rate: args.rate,
        schedule_lag_ms: args.rate.map(|_| percentiles(all.lags)),
        generated_live: plan.live.load(Ordering::Relaxed),
        generator_cpu_seconds,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else if load_mode {
        println!(
            "requests: {}  in {:.2}s  = {:.0} req/s  (concurrency {}{})\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\nstatus: {}",
            report.requests, report.seconds, report.requests_per_sec, report.concurrency,
            report.target_rate.map(|r| format!(", target {r:.0} req/s")).unwrap_or_default(),
            report.latency_ms.p50, report.latency_ms.p90, report.latency_ms.p99, report.latency_ms.max,
            report.status.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
        if let Some(lag) = &report.schedule_lag_ms {
            println!(
                "schedule lag ms: p50 {:.2}  p99 {:.2}  max {:.2}",
                lag.p50, lag.p99, lag.max
            );
        }
        if report.generated_live > 0 {
            println!(
                "note: {} requests were built during the run (raise --pool)",
                report.generated_live
            );
        }
    }
    Ok(report)
}
