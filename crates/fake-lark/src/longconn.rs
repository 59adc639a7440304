//! A small fake of Lark's long-connection side, for the tests and for trying
//! `source.kind = "long_connection"` without a Lark account (the `fake-lark` binary): endpoint
//! discovery (`POST /callback/ws/endpoint`, with a configurable answer code) and the WebSocket
//! (`GET /ws/v2`, which can refuse the handshake as Lark does). It delivers events whole or in
//! fragments to one connected client at a time (round robin; Lark picks at random), redelivers
//! those not answered `200` when asked to, answers pings, and records every reply with the time
//! it arrived. It can also play a hostile or broken Lark (issue 15): a discovery answer that
//! redirects elsewhere or never ends, a `ClientConfig` with absurd values, a peer that never
//! reads what the bridge writes; [`RequestRecorder`] is the "elsewhere" that records what
//! reaches it.
//!
//! Over 600 lines on purpose: a fake of a whole server (discovery, handshake refusals, the
//! WebSocket with pings, fragments, redelivery and a recording of every reply) that tests drive
//! through one `FakeLark` handle; it is a test tool, never in the product binary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use lark_protocol::endpoint::ClientConfig;
use lark_protocol::frame::{reply_code, Frame, FrameType, Header, METHOD_CONTROL, METHOD_DATA};

/// How the fake answers a WebSocket handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    Accept,
    /// Answer `status` with Lark's `Handshake-*` headers instead of `101`.
    Refuse {
        status: u16,
        autherrcode: Option<i64>,
        msg: String,
    },
}

/// What the fake does; change it at any time with [`FakeLark::set`].
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// HTTP status of the discovery answer (Lark: 200).
    pub discovery_status: u16,
    /// `code` of the discovery answer: 0 = ok, e.g. 1000040350 = connection limit.
    pub discovery_code: i64,
    pub discovery_msg: String,
    /// `ClientConfig` in the discovery answer (absent when `None`).
    pub client_config: Option<ClientConfig>,
    pub handshake: Handshake,
    /// Answer pings with pongs (turn off to test the pong timeout).
    pub answer_pings: bool,
    /// `ClientConfig` carried by pongs (an empty payload when `None`).
    pub pong_config: Option<ClientConfig>,
    /// `service_id` in the URL and in every frame.
    pub service_id: i32,
    /// Resend an event not yet answered `200` this long after the last send; `None` = never.
    pub redeliver_after: Option<Duration>,
    /// Sends per event, first one included.
    pub max_attempts: u32,
    /// Answer discovery with `307 Temporary Redirect` to this URL (a hostile or hijacked
    /// endpoint: a client that follows it replays the App Secret there).
    pub discovery_redirect: Option<String>,
    /// Answer discovery `200` with a body of this many bytes (streamed, never all in memory).
    pub discovery_body_bytes: Option<u64>,
    /// Read what the client sends on connections made from now on; `false` plays a peer that
    /// never reads (the client's writes back up).
    pub read_frames: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            discovery_status: 200,
            discovery_code: 0,
            discovery_msg: "ok".into(),
            client_config: None,
            handshake: Handshake::Accept,
            answer_pings: true,
            pong_config: None,
            service_id: 33554678,
            redeliver_after: None,
            max_attempts: 5,
            discovery_redirect: None,
            discovery_body_bytes: None,
            read_frames: true,
        }
    }
}

/// A reply the fake received.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The connection it came on (numbered from 1 in connection order).
    pub conn: u64,
    pub device_id: String,
    pub message_id: String,
    pub trace_id: String,
    /// The payload's `code`; `None` when the payload is not a reply.
    pub code: Option<i64>,
    pub biz_rt: Option<u64>,
    /// When it arrived.
    pub at: Instant,
    /// When the fake last sent the event it answers (for delivered events).
    pub sent_at: Option<Instant>,
    pub frame: Frame,
}

/// What to push down a connection.
#[derive(Debug, Clone)]
pub enum Push {
    Frame(Frame),
    /// Any binary message (e.g. garbage that is no frame).
    Binary(Vec<u8>),
    Text(String),
}

enum Cmd {
    Send(Message),
    Close,
}

struct ConnHandle {
    device_id: String,
    tx: mpsc::UnboundedSender<Cmd>,
}

struct Delivery {
    payload: Vec<u8>,
    fragment_size: Option<usize>,
    attempts: u32,
    acked: bool,
    /// When to send next; `None` = not scheduled (acked, or attempts used up).
    due: Option<Instant>,
    last_sent: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    behaviour: Behaviour,
    conns: BTreeMap<u64, ConnHandle>,
    next_conn: u64,
    rr: usize,
    tickets: HashSet<String>,
    deliveries: HashMap<String, Delivery>,
    order: Vec<String>,
    replies: Vec<Reply>,
    discovery_calls: u64,
    handshakes: u64,
    refused_handshakes: u64,
    pings: u64,
    next_msg: u64,
    next_seq: u64,
    last_app: Option<(String, String)>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every change, so waiters wake on signals instead of polling.
    version: watch::Sender<u64>,
    /// Bytes of oversized discovery bodies handed to the socket so far.
    body_bytes_sent: Arc<AtomicU64>,
    addr: SocketAddr,
    stop: CancellationToken,
    /// The open API (token, subscription, ticket detail), served on the same address.
    api: crate::openapi::OpenApi,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

/// A running fake; stopped on drop.
pub struct FakeLark {
    shared: Arc<Shared>,
}

impl Drop for FakeLark {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl FakeLark {
    /// Serve on `listener` with `behaviour`.
    pub async fn start(listener: TcpListener, behaviour: Behaviour) -> std::io::Result<FakeLark> {
        let addr = listener.local_addr()?;
        let (version, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                behaviour,
                ..Inner::default()
            }),
            version,
            body_bytes_sent: Arc::default(),
            addr,
            stop: CancellationToken::new(),
            api: crate::openapi::OpenApi::default(),
        });
        let router = Router::new()
            .route("/callback/ws/endpoint", post(endpoint))
            .route("/ws/v2", get(ws_handshake))
            .with_state(shared.clone())
            .merge(shared.api.router());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        tokio::spawn(pump(shared.clone()));
        Ok(FakeLark { shared })
    }

    /// The open API's fake (token, subscription, ticket detail): its calls and behaviour.
    pub fn api(&self) -> &crate::openapi::OpenApi {
        &self.shared.api
    }

    /// The base URL, for `lark.domain`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Change the behaviour.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.shared.lock().behaviour);
        self.shared.bump();
    }

    pub fn connections(&self) -> usize {
        self.shared.lock().conns.len()
    }
    /// Device ids of the open connections, in connection order.
    pub fn device_ids(&self) -> Vec<String> {
        let g = self.shared.lock();
        g.conns.values().map(|c| c.device_id.clone()).collect()
    }
    pub fn discovery_calls(&self) -> u64 {
        self.shared.lock().discovery_calls
    }
    /// Handshakes accepted (connections made).
    pub fn handshakes(&self) -> u64 {
        self.shared.lock().handshakes
    }
    pub fn refused_handshakes(&self) -> u64 {
        self.shared.lock().refused_handshakes
    }
    /// Bytes of [`Behaviour::discovery_body_bytes`] bodies the client pulled so far (plus at
    /// most one chunk on its way).
    pub fn discovery_body_bytes_sent(&self) -> u64 {
        self.shared.body_bytes_sent.load(Ordering::Relaxed)
    }
    pub fn pings(&self) -> u64 {
        self.shared.lock().pings
    }
    /// App ID and App Secret of the last discovery request.
    pub fn last_app(&self) -> Option<(String, String)> {
        self.shared.lock().last_app.clone()
    }
    pub fn replies(&self) -> Vec<Reply> {
        self.shared.lock().replies.clone()
    }
    /// Whether the event sent as `message_id` was answered `200`.
    pub fn acked(&self, message_id: &str) -> bool {
        self.shared
            .lock()
            .deliveries
            .get(message_id)
            .is_some_and(|d| d.acked)
    }
    /// How often the event sent as `message_id` was sent.
    pub fn attempts(&self, message_id: &str) -> u32 {
        self.shared
            .lock()
            .deliveries
            .get(message_id)
            .map_or(0, |d| d.attempts)
    }
    /// Events answered `200`, and events given up on (every attempt used, none answered 200).
    pub fn settled(&self) -> (usize, usize) {
        let g = self.shared.lock();
        let acked = g.deliveries.values().filter(|d| d.acked).count();
        let gave_up = g
            .deliveries
            .values()
            .filter(|d| !d.acked && d.due.is_none())
            .count();
        (acked, gave_up)
    }

    /// Wait (on change signals, not by polling) until `f` returns `Some`, at most `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&FakeLark) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.shared.version.subscribe();
        let now = tokio::time::Instant::now();
        // `Duration::MAX` means "until it happens": cap it where Instant arithmetic is safe.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        loop {
            if let Some(t) = f(self) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return f(self),
            }
        }
    }

    /// Wait until `n` connections are open.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |f| (f.connections() == n).then_some(()))
            .await
            .is_some()
    }

    /// Wait until at least `n` replies arrived; returns them all.
    pub async fn wait_replies(&self, n: usize, timeout: Duration) -> Vec<Reply> {
        self.wait_until(timeout, |f| {
            let r = f.replies();
            (r.len() >= n).then_some(r)
        })
        .await
        .unwrap_or_else(|| self.replies())
    }

    /// Queue an event payload for delivery (in fragments of `fragment_size` bytes when given):
    /// it goes to the next connected client, now or as soon as one connects, and is resent per
    /// [`Behaviour::redeliver_after`]. Returns its `message_id`.
    pub fn deliver(&self, payload: Vec<u8>, fragment_size: Option<usize>) -> String {
        let mut g = self.shared.lock();
        g.next_msg += 1;
        let id = format!("msg_{}", g.next_msg);
        g.deliveries.insert(
            id.clone(),
            Delivery {
                payload,
                fragment_size,
                attempts: 0,
                acked: false,
                due: Some(Instant::now()),
                last_sent: None,
            },
        );
        g.order.push(id.clone());
        drop(g);
        self.shared.bump();
        id
    }

    /// Push one message down the next connection (round robin); `None` when none is open.
    pub fn push(&self, p: Push) -> Option<u64> {
        let msg = match p {
            Push::Frame(f) => Message::Binary(f.to_bytes().into()),
            Push::Binary(b) => Message::Binary(b.into()),
            Push::Text(t) => Message::Text(t.into()),
        };
        let mut g = self.shared.lock();
        let conn = next_conn(&mut g)?;
        let sent = g
            .conns
            .get(&conn)
            .is_some_and(|c| c.tx.send(Cmd::Send(msg)).is_ok());
        sent.then_some(conn)
    }

    /// A fresh SeqID for hand-built frames.
    pub fn next_seq_id(&self) -> u64 {
        let mut g = self.shared.lock();
        g.next_seq += 1;
        g.next_seq
    }

    pub fn service_id(&self) -> i32 {
        self.shared.lock().behaviour.service_id
    }

    /// Close every connection (a WebSocket close frame, as Lark does on its side's restart).
    pub fn close_all(&self) {
        let g = self.shared.lock();
        for c in g.conns.values() {
            let _ = c.tx.send(Cmd::Close);
        }
    }
}

/// The next connection in round-robin order.
fn next_conn(g: &mut Inner) -> Option<u64> {
    if g.conns.is_empty() {
        return None;
    }
    let i = g.rr % g.conns.len();
    g.rr = g.rr.wrapping_add(1);
    g.conns.keys().nth(i).copied()
}

/// The frames of one event: whole, or in fragments of `fragment_size` bytes.
pub fn event_frames(
    service_id: i32,
    first_seq_id: u64,
    message_id: &str,
    trace_id: &str,
    payload: &[u8],
    fragment_size: Option<usize>,
) -> Vec<Frame> {
    let size = fragment_size.filter(|s| *s > 0).unwrap_or(usize::MAX);
    let parts: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(size).collect()
    };
    let sum = parts.len();
    let now_ms = chrono::Utc::now().timestamp_millis().to_string();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let h = |k: &str, v: &str| Header {
                key: k.into(),
                value: v.into(),
            };
            Frame {
                seq_id: first_seq_id + i as u64,
                log_id: rand::random::<u32>() as u64,
                service: service_id,
                method: METHOD_DATA,
                headers: vec![
                    h("type", "event"),
                    h("message_id", message_id),
                    h("sum", &sum.to_string()),
                    h("seq", &i.to_string()),
                    h("trace_id", trace_id),
                    h("timestamp", &now_ms),
                ],
                payload_encoding: Some(String::new()),
                payload_type: Some(String::new()),
                payload: Some(part.to_vec()),
                log_id_new: Some(String::new()),
            }
        })
        .collect()
}

/// A `helpdesk.ticket.created_v1` event as the long connection carries it: plain JSON with an
/// empty token.
pub fn ticket_payload(event_id: &str, helpdesk_id: &str) -> Vec<u8> {
    let ev = lark_bridge::simulate::ticket_event(event_id, helpdesk_id, Some(""), false);
    serde_json::to_vec(&ev).unwrap_or_default()
}

/// Send due deliveries, then sleep until the next one is due or something changes.
async fn pump(shared: Arc<Shared>) {
    let mut rx = shared.version.subscribe();
    loop {
        let next_due = {
            let mut g = shared.lock();
            send_due(&mut g);
            g.deliveries.values().filter_map(|d| d.due).min()
        };
        let wake = async {
            match next_due {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                // Due now but no connection: wait for a change (a client connecting).
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = wake => {}
        }
    }
}

fn send_due(g: &mut Inner) {
    let now = Instant::now();
    let ids: Vec<String> = g
        .order
        .iter()
        .filter(|id| {
            g.deliveries
                .get(*id)
                .is_some_and(|d| d.due.is_some_and(|t| t <= now))
        })
        .cloned()
        .collect();
    for id in ids {
        let Some(conn) = next_conn(g) else { return };
        let service_id = g.behaviour.service_id;
        let redeliver = g.behaviour.redeliver_after;
        let max = g.behaviour.max_attempts;
        let first_seq = g.next_seq + 1;
        let Some(d) = g.deliveries.get_mut(&id) else {
            continue;
        };
        d.attempts += 1;
        let trace_id = format!("tr_{id}_{}", d.attempts);
        let frames = event_frames(
            service_id,
            first_seq,
            &id,
            &trace_id,
            &d.payload,
            d.fragment_size,
        );
        d.last_sent = Some(now);
        d.due = match redeliver {
            Some(after) if d.attempts < max => Some(now + after),
            _ => None,
        };
        g.next_seq += frames.len() as u64;
        if let Some(c) = g.conns.get(&conn) {
            for f in frames {
                let _ = c.tx.send(Cmd::Send(Message::Binary(f.to_bytes().into())));
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct EndpointRequest {
    #[serde(rename = "AppID", default)]
    app_id: String,
    #[serde(rename = "AppSecret", default)]
    app_secret: String,
}

async fn endpoint(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: Option<EndpointRequest> = serde_json::from_slice(&body).ok();
    let mut g = s.lock();
    g.discovery_calls += 1;
    let b = g.behaviour.clone();
    let answer = match req {
        _ if b.discovery_redirect.is_some() => {
            let to = b.discovery_redirect.clone().unwrap_or_default();
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
                .into_response()
        }
        _ if b.discovery_body_bytes.is_some() => huge_body(
            b.discovery_body_bytes.unwrap_or(0),
            s.body_bytes_sent.clone(),
        ),
        _ if b.discovery_status != 200 => {
            let status =
                StatusCode::from_u16(b.discovery_status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, "unavailable").into_response()
        }
        None => axum::Json(json!({"code": 10003, "msg": "invalid request body"})).into_response(),
        Some(r) if r.app_id.is_empty() || r.app_secret.is_empty() => {
            g.last_app = Some((r.app_id, r.app_secret));
            axum::Json(json!({"code": 10003, "msg": "AppID and AppSecret are required"}))
                .into_response()
        }
        Some(r) => {
            g.last_app = Some((r.app_id, r.app_secret));
            if b.discovery_code != 0 {
                axum::Json(json!({"code": b.discovery_code, "msg": b.discovery_msg, "data": {}}))
                    .into_response()
            } else {
                let n = g.discovery_calls;
                let ticket = format!("{:032x}", rand::random::<u128>());
                g.tickets.insert(ticket.clone());
                let url = format!(
                    "ws://{}/ws/v2?fpid=1&device_id=fake_dev_{n}&access_key={:032x}&service_id={}&ticket={ticket}",
                    s.addr,
                    rand::random::<u128>(),
                    b.service_id
                );
                let mut data = json!({ "URL": url });
                if let Some(cc) = &b.client_config {
                    data["ClientConfig"] = json!(cc);
                }
                axum::Json(json!({"code": 0, "msg": "ok", "data": data})).into_response()
            }
        }
    };
    drop(g);
    s.bump();
    answer
}

/// A `200` discovery answer of `total` bytes that looks like the start of a good one, made
/// 64 KiB at a time as the client pulls it (so the fake never holds it), counting what went out.
fn huge_body(total: u64, sent: Arc<AtomicU64>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from_static(br#"{"code":0,"msg":""#);
    let stream = futures::stream::unfold(0u64, move |done| {
        let sent = sent.clone();
        let head = head.clone();
        async move {
            if done >= total {
                return None;
            }
            let n = (total - done).min(CHUNK as u64);
            let chunk = if done == 0 {
                let mut v = head.to_vec();
                v.resize(n as usize, b'x');
                Bytes::from(v)
            } else {
                Bytes::from(vec![b'x'; n as usize])
            };
            sent.fetch_add(n, Ordering::Relaxed);
            Some((Ok::<_, std::convert::Infallible>(chunk), done + n))
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A plain TCP listener that records every byte sent to it, one entry per connection: the
/// "other host" a hostile redirect points at.
pub struct RequestRecorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RequestRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RequestRecorder {
    pub async fn start() -> std::io::Result<RequestRecorder> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let i = {
                        let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                        g.push(Vec::new());
                        g.len() - 1
                    };
                    // Until the client pauses (it waits for our answer) or closes.
                    let mut buf = [0u8; 4096];
                    let idle = Duration::from_millis(300);
                    while let Ok(Ok(n)) = tokio::time::timeout(idle, sock.read(&mut buf)).await {
                        if n == 0 {
                            break;
                        }
                        s.lock().unwrap_or_else(|p| p.into_inner())[i].extend_from_slice(&buf[..n]);
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Ok(RequestRecorder { addr, seen, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What each connection sent, in order.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn refuse(status: u16, autherrcode: Option<i64>, msg: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    };
    put("Handshake-Status", status.to_string());
    put("Handshake-Msg", msg.to_string());
    if let Some(c) = autherrcode {
        put("Handshake-Autherrcode", c.to_string());
    }
    (code, h, msg.to_string()).into_response()
}

async fn ws_handshake(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let mut g = s.lock();
    if let Handshake::Refuse {
        status,
        autherrcode,
        msg,
    } = g.behaviour.handshake.clone()
    {
        g.refused_handshakes += 1;
        drop(g);
        s.bump();
        return refuse(status, autherrcode, &msg);
    }
    // Tickets are single-use, as the credentials of a discovery answer: a client that redials
    // without discovering again is refused (retryably).
    let ticket_ok = q.get("ticket").is_some_and(|t| g.tickets.remove(t));
    if !ticket_ok {
        g.refused_handshakes += 1;
        drop(g);
        s.bump();
        return refuse(401, None, "ticket missing, unknown or already used");
    }
    g.handshakes += 1;
    g.next_conn += 1;
    let conn = g.next_conn;
    let device_id = q.get("device_id").cloned().unwrap_or_default();
    let read = g.behaviour.read_frames;
    drop(g);
    ws.on_upgrade(move |socket| serve_conn(s, socket, conn, device_id, read))
}

async fn serve_conn(s: Arc<Shared>, socket: WebSocket, conn: u64, device_id: String, read: bool) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    s.lock().conns.insert(
        conn,
        ConnHandle {
            device_id: device_id.clone(),
            tx: tx.clone(),
        },
    );
    s.bump();
    loop {
        tokio::select! {
            _ = s.stop.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
            cmd = rx.recv() => match cmd {
                Some(Cmd::Send(m)) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Cmd::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = stream.next(), if read => match msg {
                Some(Ok(Message::Binary(b))) => on_client_frame(&s, &tx, conn, &device_id, &b),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    s.lock().conns.remove(&conn);
    s.bump();
}

fn on_client_frame(
    s: &Shared,
    tx: &mpsc::UnboundedSender<Cmd>,
    conn: u64,
    device_id: &str,
    bytes: &[u8],
) {
    let Ok(frame) = Frame::decode_bytes(bytes) else {
        return;
    };
    let mut g = s.lock();
    if frame.method == METHOD_CONTROL && frame.frame_type() == FrameType::Ping {
        g.pings += 1;
        if g.behaviour.answer_pings {
            let pong = Frame {
                seq_id: 0,
                log_id: 0,
                service: frame.service,
                method: METHOD_CONTROL,
                headers: vec![Header {
                    key: "type".into(),
                    value: "pong".into(),
                }],
                payload: g
                    .behaviour
                    .pong_config
                    .as_ref()
                    .and_then(|c| serde_json::to_vec(c).ok()),
                ..Default::default()
            };
            let _ = tx.send(Cmd::Send(Message::Binary(pong.to_bytes().into())));
        }
    } else if frame.method == METHOD_DATA {
        let message_id = frame.header("message_id").unwrap_or("").to_string();
        let code = frame.payload.as_deref().and_then(reply_code);
        let sent_at = g.deliveries.get(&message_id).and_then(|d| d.last_sent);
        if code == Some(200) {
            if let Some(d) = g.deliveries.get_mut(&message_id) {
                d.acked = true;
                d.due = None;
            }
        }
        g.replies.push(Reply {
            conn,
            device_id: device_id.to_string(),
            trace_id: frame.header("trace_id").unwrap_or("").to_string(),
            biz_rt: frame.header("biz_rt").and_then(|v| v.parse().ok()),
            message_id,
            code,
            at: Instant::now(),
            sent_at,
            frame,
        });
    }
    drop(g);
    s.bump();
}

/// `fake-lark`: play Lark's long-connection side locally.
#[derive(Debug, Clone, clap::Args)]
pub struct FakeLarkArgs {
    /// Address to listen on; point the bridge's `lark.domain` at `http://` this.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Events to deliver once a bridge connects.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// helpdesk_id of the events (the partition key).
    #[arg(long, default_value = "7090000000000000001")]
    pub helpdesk_id: String,
    /// Send each event in fragments of this many bytes.
    #[arg(long)]
    pub fragment_size: Option<usize>,
    /// Resend events not answered 200 after this many ms (Lark: 15000, then minutes to hours).
    #[arg(long, default_value_t = 15000)]
    pub redeliver_ms: u64,
    /// Sends per event, the first included.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Answer discovery with this code (e.g. 1000040350: over 50 connections).
    #[arg(long, default_value_t = 0)]
    pub discovery_code: i64,
    /// Message of a non-zero discovery code.
    #[arg(long, default_value = "refused by fake-lark")]
    pub discovery_msg: String,
    /// Refuse WebSocket handshakes with this status (403 = banned, 514 = see --autherrcode).
    #[arg(long)]
    pub refuse_handshake: Option<u16>,
    /// `Handshake-Autherrcode` of a refused handshake (1000040350 = connection limit).
    #[arg(long)]
    pub autherrcode: Option<i64>,
    /// PingInterval (s) in the discovery answer's ClientConfig.
    #[arg(long, default_value_t = 120)]
    pub ping_interval: i64,
    /// ReconnectInterval (s) in the discovery answer's ClientConfig (Lark's is minutes; a
    /// short one suits a demo).
    #[arg(long, default_value_t = 3)]
    pub reconnect_interval: i64,
    /// ReconnectNonce (s): the jitter before the first reconnect.
    #[arg(long, default_value_t = 1)]
    pub reconnect_nonce: i64,
    /// ReconnectCount: reconnect attempts after a failure (-1 = forever).
    #[arg(long, default_value_t = -1)]
    pub reconnect_count: i64,
    /// Deliver `--count` ticket stories instead of single events: created (bot) → updated (bot →
    /// human) → a guest's message → an agent's message → updated (closed, rated) → a
    /// notification approved; each sent once the one before is acknowledged, so they reach the
    /// broker in order.
    #[arg(long)]
    pub story: bool,
    /// Lark event type of the `--count` events: any of the four helpdesk events.
    #[arg(long, default_value = "helpdesk.ticket.created_v1", value_parser = clap::builder::PossibleValuesParser::new(lark_protocol::normalize::HELPDESK_EVENTS))]
    pub event_type: String,
    /// Answer open-API calls (token, subscription, ticket detail) this much later, in ms.
    #[arg(long, default_value_t = 0)]
    pub api_delay_ms: u64,
    /// `expire` of the tenant tokens issued, in s (Lark: 7200).
    #[arg(long, default_value_t = 7200)]
    pub token_expire_secs: u64,
    /// The app ID the open API accepts, with `--app-secret` (any when unset).
    #[arg(long, requires = "app_secret")]
    pub app_id: Option<String>,
    /// The app secret the open API accepts.
    #[arg(long, requires = "app_id")]
    pub app_secret: Option<String>,
    /// The helpdesk ID the helpdesk calls must carry, with `--api-helpdesk-token` (any when
    /// unset).
    #[arg(long, requires = "api_helpdesk_token")]
    pub api_helpdesk_id: Option<String>,
    /// The helpdesk token the helpdesk calls must carry.
    #[arg(long, requires = "api_helpdesk_id")]
    pub api_helpdesk_token: Option<String>,
}

/// Run the fake until `shutdown`: deliver `--count` events to the first bridge that connects
/// and print every reply.
pub async fn run_cli(
    args: FakeLarkArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("fake-lark: cannot listen on {}: {e}", args.listen))?;
    let behaviour = Behaviour {
        discovery_code: args.discovery_code,
        discovery_msg: args.discovery_msg.clone(),
        // All four fields, as Lark sends them: the official SDKs copy the whole object and
        // compare each field on their next reconnect (a missing one crashed lark-oapi).
        client_config: Some(ClientConfig {
            reconnect_count: Some(args.reconnect_count),
            reconnect_interval: Some(args.reconnect_interval),
            reconnect_nonce: Some(args.reconnect_nonce),
            ping_interval: Some(args.ping_interval),
        }),
        handshake: match args.refuse_handshake {
            Some(status) => Handshake::Refuse {
                status,
                autherrcode: args.autherrcode,
                msg: "refused by fake-lark".into(),
            },
            None => Handshake::Accept,
        },
        redeliver_after: Some(Duration::from_millis(args.redeliver_ms)),
        max_attempts: args.max_attempts.max(1),
        ..Behaviour::default()
    };
    let fake = FakeLark::start(listener, behaviour)
        .await
        .map_err(|e| format!("fake-lark: {e}"))?;
    fake.api().set(|b| {
        b.delay = Duration::from_millis(args.api_delay_ms);
        b.token_expire_secs = args.token_expire_secs;
        b.app = args.app_id.clone().zip(args.app_secret.clone());
        b.helpdesk = args
            .api_helpdesk_id
            .clone()
            .zip(args.api_helpdesk_token.clone());
    });
    // Every open-API call, one JSON line each (`api {...}`), as it arrives.
    let api = fake.api().clone();
    let print_calls = async move {
        let mut printed = 0;
        loop {
            let calls = api
                .wait_until(Duration::MAX, |a| {
                    let c = a.calls();
                    (c.len() > printed).then_some(c)
                })
                .await
                .unwrap_or_default();
            for c in &calls[printed..] {
                println!("api {}", serde_json::to_string(c).unwrap_or_default());
            }
            printed = calls.len();
        }
    };
    println!(
        "fake Lark listening: set lark.domain = \"{}\" (any app_id / app_secret, helpdesk_id / helpdesk_token) and source.kind = \"long_connection\"",
        fake.base_url()
    );
    let work = async {
        fake.wait_until(Duration::MAX, |f| (f.connections() > 0).then_some(()))
            .await;
        println!("bridge connected: {}", fake.device_ids().join(", "));
        let mut ids = Vec::new();
        if args.story {
            for _ in 0..args.count {
                for (event_id, event_type, plain) in
                    lark_bridge::simulate::ticket_story(&args.helpdesk_id, Some(""))
                {
                    let msg = fake.deliver(
                        serde_json::to_vec(&plain).unwrap_or_default(),
                        args.fragment_size,
                    );
                    println!("sent {msg} ({event_id}, {event_type})");
                    // The next step of the story once this one is answered (or given up on).
                    fake.wait_until(Duration::MAX, |f| {
                        (f.acked(&msg) || f.attempts(&msg) >= args.max_attempts.max(1))
                            .then_some(())
                    })
                    .await;
                    ids.push((msg, event_id));
                }
            }
        }
        for _ in 0..if args.story { 0 } else { args.count } {
            let event_id = format!("ev_fake_{:016x}", rand::random::<u64>());
            let plain = lark_bridge::simulate::helpdesk_event(
                &args.event_type,
                &event_id,
                &args.helpdesk_id,
                &lark_bridge::simulate::ticket_id(),
                Some(""),
            );
            let msg = fake.deliver(
                serde_json::to_vec(&plain).unwrap_or_default(),
                args.fragment_size,
            );
            ids.push((msg, event_id));
        }
        let mut printed = 0;
        loop {
            let replies = fake.replies();
            for r in &replies[printed..] {
                let event = ids
                    .iter()
                    .find(|(m, _)| *m == r.message_id)
                    .map_or("", |(_, e)| e.as_str());
                let latency = r
                    .sent_at
                    .map(|t| format!(" in {} ms", r.at.duration_since(t).as_millis()))
                    .unwrap_or_default();
                println!(
                    "reply {} for {} ({event}) from {}{latency}",
                    r.code.map_or("?".to_string(), |c| c.to_string()),
                    r.message_id,
                    r.device_id
                );
            }
            printed = replies.len();
            let (acked, gave_up) = fake.settled();
            if acked + gave_up == ids.len() {
                println!(
                    "{acked} of {} events acknowledged with 200, {gave_up} given up; still serving (Ctrl-C to stop)",
                    ids.len()
                );
                break;
            }
            let seen = printed;
            fake.wait_until(Duration::MAX, |f| {
                let (a, g) = f.settled();
                (f.replies().len() > seen || a + g == ids.len()).then_some(())
            })
            .await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = shutdown => {}
        _ = work => {}
        _ = print_calls => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_split_the_payload_in_order() {
        let frames = event_frames(1, 10, "m", "t", b"abcdefg", Some(3));
        assert_eq!(frames.len(), 3);
        let joined: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.payload.clone().unwrap_or_default())
            .collect();
        assert_eq!(joined, b"abcdefg");
        assert_eq!(frames[2].header("sum"), Some("3"));
        assert_eq!(frames[2].header("seq"), Some("2"));
        assert_eq!(frames[2].seq_id, 12);
        let whole = event_frames(1, 1, "m", "t", b"abc", None);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].header("sum"), Some("1"));
    }
}
