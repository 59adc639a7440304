//! Lark's long-connection client (lark-longconn.md): discover an endpoint, dial it, keep it
//! alive with pings, and hand every event frame to the same [`Pipeline`] the webhook uses,
//! replying `200` only after the broker acknowledged. One task reads frames and owns the
//! connection state; each event runs in its own task (a slow publish never holds up the frames
//! behind it) and sends its reply through a writer task that owns the socket's write half.
//! This file is the connection's lifecycle; [`events`] handles event frames. It is a little
//! over 600 lines because discovery, dial, the read loop and the write loop share one state
//! (settings Lark may change, the pong clock, the close token) that splitting would only
//! thread through more parameters.

mod events;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, Limits, LongConnConfig, Secret};
use crate::entrance::Admission;
use crate::health::Health;
use crate::logging::warn_limited;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::secrets::redact_url;
use crate::StartError;
use lark_protocol::endpoint::{
    classify_handshake, discovery_body, parse_discovery, printable_max, ClientConfig, ConnectError,
    Endpoint, RetryReason, Settings,
};
use lark_protocol::fragments::Reassembler;
use lark_protocol::frame::{Frame, FrameType, METHOD_CONTROL, METHOD_DATA};
use lark_protocol::FailReason;

/// Bound on one discovery request and on one WebSocket dial: a hung attempt must turn into a
/// retry, not a silent stall. Well above Lark's normal answer times.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the close handshake may take at shutdown or after a lost connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for the frame's own fields on top of the largest payload accepted.
const FRAME_OVERHEAD: usize = 64 * 1024;
/// The largest discovery answer read (Lark's is about 500 bytes): a peer answering with
/// hundreds of MiB must not have them buffered (issue 15 item 15).
const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// Bound on what waits to be written, in bytes and in frames. Replies echo the received
/// frame's headers, so a peer that sends large frames and never reads would otherwise grow
/// the queue without bound (issue 15 item 12); past either bound the connection is dropped.
/// A real backlog (a thousand replies of a few hundred bytes) is far below both.
const OUT_QUEUE_BYTES: usize = 8 << 20;
const OUT_QUEUE_FRAMES: usize = 4096;
/// A single write that cannot finish for this long means the peer stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that stayed up this long resets the reconnect backoff; one lost sooner counts
/// as a failure, so a peer that accepts and drops at once is backed off too.
const STABLE_AFTER: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the client needs from the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_id: String,
    pub app_secret: Secret,
    /// Lark's open-platform base URL, e.g. `https://open.feishu.cn`.
    pub domain: String,
    pub timings: LongConnConfig,
    /// The per-event limits: the budget from a frame's arrival to its reply, the largest
    /// payload (also the bound on bytes held in incomplete fragmented messages), events in
    /// flight (past it the reply is `500` at once), and the shutdown grace.
    pub limits: Limits,
}

impl Options {
    pub fn from_config(cfg: &Config) -> Result<Options, StartError> {
        let app_id = cfg.lark.app_id.clone().unwrap_or_default();
        let app_secret = cfg.lark.app_secret.clone().unwrap_or_default();
        if app_id.is_empty() || app_secret.is_empty() {
            return Err(crate::config::ConfigError::invalid(
                "lark.app_id",
                "lark.app_id and lark.app_secret are required for the long connection",
            )
            .into());
        }
        Ok(Options {
            app_id,
            app_secret,
            domain: cfg.lark.domain.trim_end_matches('/').to_string(),
            timings: cfg.source.long_connection.clone(),
            limits: cfg.server.limits(),
        })
    }
}

/// The long-connection entrance.
pub struct LongConn {
    opts: Options,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    http: reqwest::Client,
    admission: Admission,
}

/// How a connection attempt (or a round of them) ended.
enum Attempt {
    Connected(Box<Ws>, Endpoint),
    /// Lark said no for good (a client error), or the reconnect count ran out.
    Refused(String),
    /// The shutdown signal came first.
    Shutdown,
}

/// Why a live connection ended: the `reason` label of the reconnect counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Closed,
    ReadError,
    PongTimeout,
    /// The peer stopped reading: the outgoing queue filled up or a write timed out.
    WriteStalled,
}

impl Lost {
    fn as_str(self) -> &'static str {
        match self {
            Lost::Closed => "closed",
            Lost::ReadError => "read_error",
            Lost::PongTimeout => "pong_timeout",
            Lost::WriteStalled => "write_stalled",
        }
    }
}

/// What goes out on the socket.
enum Out {
    Ping(Vec<u8>),
    Reply { bytes: Vec<u8>, code: u16 },
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Ping(b) | Out::Reply { bytes: b, .. } => b.len(),
        }
    }
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
enum NotQueued {
    /// The queue is at its bound: the connection is being dropped.
    Full,
    /// The writer is gone (the connection ended).
    Closed,
}

/// The sending side of a connection's bounded outgoing queue, shared by the read loop (pings)
/// and the event tasks (replies). Full → `stalled` is cancelled and the read loop drops the
/// connection: waiting could only hold replies Lark will never read.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Out>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    stalled: CancellationToken,
}

impl Outbox {
    fn new(max_bytes: usize, max_frames: usize) -> (Outbox, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(max_frames.max(1));
        let outbox = Outbox {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
            stalled: CancellationToken::new(),
        };
        (outbox, rx)
    }

    fn send(&self, out: Out) -> Result<(), NotQueued> {
        let n = out.len();
        let before = self.bytes.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max_bytes {
            self.bytes.fetch_sub(n, Ordering::AcqRel);
            self.stalled.cancel();
            return Err(NotQueued::Full);
        }
        match self.tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(n, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        self.stalled.cancel();
                        Err(NotQueued::Full)
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(NotQueued::Closed),
                }
            }
        }
    }

    /// Bytes queued or being written.
    fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl LongConn {
    pub fn new(
        cfg: &Config,
        pipeline: Arc<Pipeline>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<LongConn, StartError> {
        let opts = Options::from_config(cfg)?;
        // Discovery carries the App Secret: never follow a redirect, or a 307 would replay the
        // POST body to whatever host it names (issue 15 item 11). A 3xx is a failed attempt.
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(StartError::HttpClient)?;
        health.set("lark", Some("not connected to lark yet".into()));
        let admission = Admission::new(opts.limits.max_in_flight, metrics.clone());
        Ok(LongConn {
            opts,
            pipeline,
            metrics,
            health,
            http,
            admission,
        })
    }

    /// Connect and serve until `shutdown` resolves. Returns an error only when Lark refuses us
    /// (a client error, §2/§3) before the first connection: the binary then exits non-zero. A
    /// refusal later leaves `/readyz` at 503 with the reason and waits for the shutdown.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let stop = CancellationToken::new();
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop.cancel();
            })
        };
        let result = self.run_until(&stop).await;
        watcher.abort();
        result
    }

    async fn run_until(&self, stop: &CancellationToken) -> Result<(), StartError> {
        let t = &self.opts.timings;
        let mut settings = Settings::new(
            t.reconnect_count,
            t.reconnect_interval,
            t.reconnect_nonce,
            t.ping_interval,
        );
        let mut ever_connected = false;
        // Failures in a row (failed attempts, and connections lost before STABLE_AFTER): what
        // the backoff doubles on.
        let mut failures: u32 = 0;
        loop {
            let attempt = self
                .connect_round(&mut settings, !ever_connected, &mut failures, stop)
                .await;
            let (ws, endpoint) = match attempt {
                Attempt::Connected(ws, ep) => (ws, ep),
                Attempt::Shutdown => return Ok(()),
                Attempt::Refused(reason) => {
                    tracing::error!(%reason, "lark long connection stopped; not reconnecting");
                    self.metrics.longconn.connected.set(0);
                    self.health.set("lark", Some(reason.clone()));
                    if !ever_connected {
                        return Err(StartError::LarkRefused(reason));
                    }
                    stop.cancelled().await;
                    return Ok(());
                }
            };
            ever_connected = true;
            let span = tracing::info_span!("long_connection", device_id = %endpoint.device_id);
            let up_since = Instant::now();
            let lost = self
                .serve(*ws, &endpoint, &mut settings, stop)
                .instrument(span)
                .await;
            failures = if up_since.elapsed() >= STABLE_AFTER {
                0
            } else {
                failures.saturating_add(1)
            };
            self.metrics.longconn.connected.set(0);
            let Some(lost) = lost else {
                return Ok(());
            };
            self.metrics
                .longconn
                .reconnects
                .with_label_values(&[lost.as_str()])
                .inc();
            tracing::warn!(reason = lost.as_str(), device_id = %endpoint.device_id, "lark long connection lost; reconnecting");
            self.health.set(
                "lark",
                Some(format!(
                    "lark long connection lost ({}); reconnecting",
                    lost.as_str()
                )),
            );
        }
    }

    /// Connect, retrying per §6 with our floor and backoff: at start one attempt first; after a
    /// lost connection (or that first failure) a wait — a random part of `ReconnectNonce` after
    /// a connection that had been up a while, else the backoff — then attempts spaced by
    /// [`Settings::retry_delay`] (from `ReconnectInterval`, at least `reconnect_min_secs`,
    /// doubling per failure up to `reconnect_max_secs`, jittered), at most `ReconnectCount` of
    /// them (forever when negative). Every attempt does discovery again: the credentials live
    /// in the URL.
    async fn connect_round(
        &self,
        settings: &mut Settings,
        at_start: bool,
        failures: &mut u32,
        stop: &CancellationToken,
    ) -> Attempt {
        let floor = self.opts.timings.reconnect_min;
        let ceiling = self.opts.timings.reconnect_max;
        if at_start {
            match self.attempt(settings, stop).await {
                Ok(Some((ws, ep))) => return Attempt::Connected(Box::new(ws), ep),
                Ok(None) => return Attempt::Shutdown,
                Err(ConnectError::Stop(reason)) => return Attempt::Refused(reason),
                Err(ConnectError::Retry { reason, msg }) => {
                    *failures = failures.saturating_add(1);
                    self.failed_attempt(reason, &msg)
                }
            }
        }
        let first = settings.first_delay(floor, rand::random());
        let first = if *failures == 0 {
            first
        } else {
            first.max(settings.retry_delay(*failures, floor, ceiling, rand::random()))
        };
        if !sleep_or_stop(first, stop).await {
            return Attempt::Shutdown;
        }
        let mut tries: i64 = 0;
        loop {
            if settings.reconnect_count >= 0 && tries >= settings.reconnect_count {
                return Attempt::Refused(format!(
                    "gave up connecting to lark after {tries} reconnect attempts"
                ));
            }
            tries += 1;
            match self.attempt(settings, stop).await {
                Ok(Some((ws, ep))) => return Attempt::Connected(Box::new(ws), ep),
                Ok(None) => return Attempt::Shutdown,
                Err(ConnectError::Stop(reason)) => return Attempt::Refused(reason),
                Err(ConnectError::Retry { reason, msg }) => {
                    *failures = failures.saturating_add(1);
                    self.failed_attempt(reason, &msg)
                }
            }
            let wait = settings.retry_delay(*failures, floor, ceiling, rand::random());
            if !sleep_or_stop(wait, stop).await {
                return Attempt::Shutdown;
            }
        }
    }

    fn failed_attempt(&self, reason: RetryReason, msg: &str) {
        self.metrics
            .longconn
            .reconnects
            .with_label_values(&[reason.as_str()])
            .inc();
        tracing::warn!(reason = reason.as_str(), error = %msg, "cannot connect to lark; will retry");
        self.health
            .set("lark", Some(format!("cannot connect to lark: {msg}")));
    }

    /// One discovery + dial; `Ok(None)` when the shutdown signal came first.
    async fn attempt(
        &self,
        settings: &mut Settings,
        stop: &CancellationToken,
    ) -> Result<Option<(Ws, Endpoint)>, ConnectError> {
        let work = async {
            let ep = self.discover().await?;
            if let Some(cc) = &ep.client_config {
                settings.apply(cc);
            }
            let ws = self.dial(&ep).await?;
            Ok((ws, ep))
        };
        tokio::select! {
            r = work => r.map(Some),
            _ = stop.cancelled() => Ok(None),
        }
    }

    async fn discover(&self) -> Result<Endpoint, ConnectError> {
        let url = format!("{}/callback/ws/endpoint", self.opts.domain);
        let failed = |msg: String| ConnectError::Retry {
            reason: RetryReason::DiscoveryFailed,
            msg,
        };
        let resp = self
            .http
            .post(&url)
            .header("locale", "zh")
            .json(&discovery_body(
                &self.opts.app_id,
                self.opts.app_secret.expose(),
            ))
            .send()
            .await
            .map_err(|e| failed(format!("endpoint discovery failed: {}", e.without_url())))?;
        let status = resp.status().as_u16();
        if status != 200 {
            // Not read at all: the status decides (a 3xx included, never followed).
            return parse_discovery(status, &[]);
        }
        let too_large = || {
            failed(format!(
                "endpoint discovery answer is larger than {MAX_DISCOVERY_BYTES} bytes"
            ))
        };
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DISCOVERY_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(format!("endpoint discovery failed: {}", e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_DISCOVERY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_discovery(status, &body)
    }

    async fn dial(&self, ep: &Endpoint) -> Result<Ws, ConnectError> {
        let cfg = WebSocketConfig::default()
            .max_message_size(Some(self.opts.limits.max_body_bytes + FRAME_OVERHEAD))
            .max_frame_size(Some(self.opts.limits.max_body_bytes + FRAME_OVERHEAD));
        let failed = |msg: String| ConnectError::Retry {
            reason: RetryReason::HandshakeFailed,
            msg,
        };
        let dial = tokio_tungstenite::connect_async_with_config(ep.url.as_str(), Some(cfg), true);
        match tokio::time::timeout(ATTEMPT_TIMEOUT, dial).await {
            Err(_) => Err(failed(format!(
                "websocket handshake with {} timed out",
                redact_url(&ep.url)
            ))),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                Err(classify_handshake(resp.status().as_u16(), |k| {
                    resp.headers().get(k).and_then(|v| v.to_str().ok())
                }))
            }
            Ok(Err(e)) => Err(failed(format!(
                "websocket connect to {} failed: {}",
                redact_url(&ep.url),
                dial_error(&e)
            ))),
        }
    }

    /// Serve one connection until it is lost (`Some(reason)`) or the shutdown signal
    /// (`None`), after which in-flight events finish (bounded by the grace) and the socket is
    /// closed.
    async fn serve(
        &self,
        ws: Ws,
        ep: &Endpoint,
        settings: &mut Settings,
        stop: &CancellationToken,
    ) -> Option<Lost> {
        let m = &self.metrics.longconn;
        m.connected.set(1);
        m.connects.inc();
        self.health.set("lark", None);
        tracing::info!(url = %redact_url(&ep.url), device_id = %ep.device_id, service_id = ep.service_id, "connected to lark");

        let (sink, mut read) = ws.split();
        let (outbox, rx) = Outbox::new(OUT_QUEUE_BYTES, OUT_QUEUE_FRAMES);
        let stalled = outbox.stalled.clone();
        let close = CancellationToken::new();
        let mut writer = tokio::spawn(write_loop(
            sink,
            rx,
            outbox.bytes.clone(),
            close.clone(),
            self.metrics.clone(),
        ));

        let mut conn = Conn {
            lc: self,
            ep,
            tx: outbox,
            fragments: Reassembler::new(
                self.opts.timings.fragment_timeout,
                self.opts.limits.max_body_bytes,
            ),
            last_pong: Instant::now(),
            last_ping: None,
        };
        let mut writer_done = false;
        let lost = loop {
            let now = Instant::now();
            let next_ping = conn.last_ping.map_or(now, |t| t + settings.ping_interval);
            let pong_deadline =
                conn.last_pong + settings.pong_timeout(self.opts.timings.pong_timeout.as_secs());
            let frag_deadline = conn.fragments.next_deadline();
            // Timers before the socket, so that a stream of frames cannot starve the pings;
            // the pong deadline after it, so that a pong already received is read first.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break None,
                r = &mut writer => {
                    writer_done = true;
                    break Some(r.ok().flatten().unwrap_or(Lost::ReadError));
                }
                _ = stalled.cancelled() => {
                    tracing::warn!(
                        queued_bytes = conn.tx.queued_bytes(),
                        "lark is not reading our frames: outgoing queue full; dropping the connection"
                    );
                    break Some(Lost::WriteStalled);
                }
                _ = tokio::time::sleep_until(next_ping.into()) => {
                    conn.last_ping = Some(Instant::now());
                    let _ = conn.tx.send(Out::Ping(Frame::ping(ep.service_id).to_bytes()));
                }
                _ = tokio::time::sleep_until(frag_deadline.unwrap_or(now).into()), if frag_deadline.is_some() => {
                    let n = conn.fragments.expire(Instant::now());
                    if n > 0 {
                        m.fragments.with_label_values(&["dropped_timeout"]).inc_by(n as u64);
                        warn_limited!(messages = n, "incomplete fragmented messages dropped after the fragment timeout");
                    }
                }
                msg = read.next() => match msg {
                    None | Some(Ok(Message::Close(_))) => break Some(Lost::Closed),
                    Some(Err(e)) => {
                        tracing::warn!(error = %printable_max(&dial_error(&e), 200), "long connection read failed");
                        break Some(Lost::ReadError);
                    }
                    Some(Ok(Message::Binary(b))) => conn.on_frame(&b, settings),
                    Some(Ok(Message::Text(_))) => {
                        m.frames.with_label_values(&["in_other"]).inc();
                        tracing::debug!("text message ignored");
                    }
                    // WebSocket-level ping/pong: tungstenite answers pings itself.
                    Some(Ok(_)) => {}
                },
                _ = tokio::time::sleep_until(pong_deadline.into()) => break Some(Lost::PongTimeout),
            }
        };
        if lost.is_none() {
            // Let the events in flight finish and send their replies before closing.
            tracing::info!("shutting down the long connection: waiting for in-flight events");
            if !self.admission.drain(self.opts.limits.grace).await {
                tracing::warn!("in-flight events did not finish within the shutdown grace");
            }
        }
        drop(conn);
        close.cancel();
        if lost == Some(Lost::WriteStalled) {
            // The peer reads nothing: flushing the queue or a close frame would only wait.
            writer.abort();
        } else if !writer_done
            && tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
                .await
                .is_err()
        {
            writer.abort();
        }
        lost
    }
}

/// The state of one live connection, owned by the reading task.
struct Conn<'a> {
    lc: &'a LongConn,
    ep: &'a Endpoint,
    tx: Outbox,
    fragments: Reassembler,
    last_pong: Instant,
    last_ping: Option<Instant>,
}

impl Conn<'_> {
    fn on_frame(&mut self, bytes: &[u8], settings: &mut Settings) {
        let m = &self.lc.metrics;
        let frame = match Frame::decode_bytes(bytes) {
            Ok(f) => f,
            Err(e) => {
                m.longconn.frames.with_label_values(&["in_other"]).inc();
                m.verification_failed(FailReason::Parse);
                warn_limited!(error = %printable_max(&e.to_string(), 200), bytes = bytes.len(), "undecodable frame ignored");
                return;
            }
        };
        match (frame.method, frame.frame_type()) {
            (METHOD_CONTROL, FrameType::Pong) => {
                m.longconn.frames.with_label_values(&["in_pong"]).inc();
                let now = Instant::now();
                if let Some(sent) = self.last_ping {
                    m.longconn
                        .ping_rtt
                        .observe(now.duration_since(sent).as_secs_f64());
                }
                self.last_pong = now;
                if let Some(cc) = frame.payload.as_deref().and_then(ClientConfig::from_pong) {
                    let before = *settings;
                    settings.apply(&cc);
                    // Only a change is news (a peer can send pongs at will).
                    if *settings != before {
                        tracing::info!(?settings, "lark updated the connection settings");
                    }
                }
            }
            (METHOD_DATA, FrameType::Event) => {
                m.longconn.frames.with_label_values(&["in_event"]).inc();
                self.on_event(frame);
            }
            // Card callbacks are not ours to answer (the Go SDK ignores them too).
            (METHOD_DATA, FrameType::Card) => {
                m.longconn.frames.with_label_values(&["in_card"]).inc();
            }
            _ => {
                m.longconn.frames.with_label_values(&["in_other"]).inc();
                tracing::debug!(
                    method = frame.method,
                    r#type = %printable_max(frame.header("type").unwrap_or(""), 64),
                    "frame ignored"
                );
            }
        }
    }
}

/// Own the write half: send pings and replies in order, count them, release their bytes from
/// the queue's bound; on `close`, send what is queued, then a close frame. Returns why the
/// connection is lost when a write fails or stalls past [`WRITE_TIMEOUT`].
async fn write_loop(
    mut sink: futures::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Out>,
    queued: Arc<AtomicUsize>,
    close: CancellationToken,
    metrics: Arc<Metrics>,
) -> Option<Lost> {
    let m = &metrics.longconn;
    let count = |kind: &str, code: Option<u16>| {
        m.frames.with_label_values(&[kind]).inc();
        if let Some(code) = code {
            m.replies.with_label_values(&[code_label(code)]).inc();
        }
    };
    let split = |out: Out| {
        let n = out.len();
        match out {
            Out::Ping(b) => (Message::binary(b), "out_ping", None, n),
            Out::Reply { bytes, code } => (Message::binary(bytes), "out_reply", Some(code), n),
        }
    };
    loop {
        let out = tokio::select! {
            biased;
            out = rx.recv() => match out {
                Some(out) => out,
                None => break,
            },
            _ = close.cancelled() => break,
        };
        let (msg, kind, code, n) = split(out);
        let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await;
        queued.fetch_sub(n, Ordering::AcqRel);
        match sent {
            Ok(Ok(())) => count(kind, code),
            Ok(Err(e)) => {
                tracing::warn!(error = %printable_max(&dial_error(&e), 200), "long connection write failed");
                return Some(Lost::ReadError);
            }
            Err(_) => {
                tracing::warn!(
                    timeout_secs = WRITE_TIMEOUT.as_secs(),
                    "lark is not reading our frames: a write timed out; dropping the connection"
                );
                return Some(Lost::WriteStalled);
            }
        }
    }
    while let Ok(out) = rx.try_recv() {
        let (msg, kind, code, n) = split(out);
        let sent = sink.send(msg).await;
        queued.fetch_sub(n, Ordering::AcqRel);
        if sent.is_err() {
            return None;
        }
        count(kind, code);
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
    None
}

fn code_label(code: u16) -> &'static str {
    match code {
        200 => "200",
        400 => "400",
        _ => "500",
    }
}

/// A tungstenite error for logs: never the URL (its query holds the credentials).
fn dial_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Url(_) => "invalid websocket URL".into(),
        tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
        tungstenite::Error::HttpFormat(_) => "invalid handshake request".into(),
        other => other.to_string(),
    }
}

/// Sleep, unless the shutdown signal comes first (then `false`).
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    if d.is_zero() {
        return !stop.is_cancelled();
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_errors_never_show_the_url() {
        let e = tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(
            "wss://x/ws?access_key=SECRET&ticket=SECRET".into(),
        ));
        assert!(!dial_error(&e).contains("SECRET"));
    }

    /// `wss://` must get as far as a TLS handshake: the rustls client config (and its crypto
    /// provider) is built on the first dial, so a missing or ambiguous provider would only
    /// show against the real Lark.
    #[tokio::test]
    async fn wss_dials_reach_the_tls_handshake() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"not tls").await;
            }
        });
        let r = tokio_tungstenite::connect_async(format!("wss://localhost:{port}/ws/v2")).await;
        match r {
            Err(tungstenite::Error::Tls(_)) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {}
            other => panic!("expected a TLS failure, got {:?}", other.map(|_| ())),
        }
        server.abort();
    }

    /// Issue 15 item 12: the queue refuses past its bound and marks the connection stalled.
    #[test]
    fn the_outgoing_queue_is_bounded_in_bytes_and_frames() {
        let (out, mut rx) = Outbox::new(1000, 3);
        assert_eq!(out.send(Out::Ping(vec![0; 600])), Ok(()));
        assert_eq!(out.send(Out::Ping(vec![0; 600])), Err(NotQueued::Full));
        assert!(out.stalled.is_cancelled());
        assert_eq!(out.queued_bytes(), 600);

        let (out, rx2) = Outbox::new(1000, 2);
        assert_eq!(out.send(Out::Ping(vec![1])), Ok(()));
        assert_eq!(out.send(Out::Ping(vec![1])), Ok(()));
        assert_eq!(out.send(Out::Ping(vec![1])), Err(NotQueued::Full));
        assert_eq!(out.queued_bytes(), 2);
        drop(rx2);
        let (out2, _) = Outbox::new(1000, 2);
        drop(out2);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn reply_codes_have_fixed_labels() {
        assert_eq!(
            [200, 400, 500, 503].map(code_label),
            ["200", "400", "500", "500"]
        );
    }
}
