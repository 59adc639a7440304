//! Slow and hostile clients, and replay protection, through real sockets (issue 10): the bridge
//! runs in-process on port 0 (channel sink, memory store) and raw `TcpStream`s play the client,
//! so every byte and every pause is under the test's control.

use std::time::{Duration, Instant};

use fake_lark::kit::{config, metric, ticket_with_id, Bridge, Channeled, KEY, TOKEN};
use lark_bridge::simulate::{lark_request, ticket_event, LarkRequest};
use lark_protocol::event::Outgoing;
use lark_protocol::{signature, EncryptKey};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

struct T {
    bridge: Bridge,
    rx: UnboundedReceiver<Outgoing>,
    addr: String,
    path: String,
}

async fn start(pairs: &[(&str, &str)]) -> T {
    let Channeled { bridge, rx, .. } = Channeled::start(config(pairs)).await;
    let rest = bridge.url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    T {
        addr: addr.to_string(),
        path: path.to_string(),
        bridge,
        rx,
    }
}

impl T {
    /// Event ids that reached the sink so far.
    fn published(&mut self) -> Vec<String> {
        let mut ids = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            ids.push(ev.attrs.id);
        }
        ids
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).await.unwrap()
    }

    /// The request head for `r`, with `extra` header lines.
    fn head(&self, r: &LarkRequest, extra: &str) -> String {
        let mut h = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.path,
            self.addr,
            r.body.len()
        );
        for (k, v) in &r.headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str(extra);
        h.push_str("\r\n");
        h
    }

    async fn outcomes(&self, outcome: &str) -> f64 {
        metric(
            &self.bridge.metrics_text().await,
            "lark_bridge_requests_total",
            &[("source", "webhook"), ("outcome", outcome)],
        )
    }
}

/// One HTTP/1.1 response read off `s`: status and body (Content-Length framed). `None` when
/// the server closed the connection (or reset it) before a whole response arrived.
async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> Option<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return Some((status, buf[end + 4..end + 4 + len].to_vec()));
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the server closes `s` within `within` (EOF or reset, after any response bytes).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

fn msg(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["msg"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------- slow bodies and heads

#[tokio::test]
async fn a_body_trickling_in_slower_than_the_read_timeout_is_cut_off_with_408() {
    let mut t = start(&[("server.read_timeout_ms", "400")]).await;
    let r = ticket_with_id("ev_trickle", "hd");
    let mut s = t.connect().await;
    s.write_all(t.head(&r, "").as_bytes()).await.unwrap();
    // The body keeps coming (a byte every 50 ms, never stalling) but would take far longer
    // than the read timeout to finish: the timeout bounds the whole body, not each read.
    let started = Instant::now();
    let body = r.body.clone();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for b in body.iter() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut rd))
        .await
        .expect("no answer within 5 s");
    let elapsed = started.elapsed();
    writer.abort();
    let (status, body) = answer.expect("a whole response");
    assert_eq!(status, 408);
    assert_eq!(
        msg(&body),
        "body did not arrive within server.read_timeout_ms"
    );
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "408 after {elapsed:?}"
    );
    assert!(t.published().is_empty());
    assert_eq!(t.outcomes("request_timeout").await, 1.0);
}

#[tokio::test]
async fn a_slow_loris_head_is_dropped_at_the_read_timeout_while_others_are_served() {
    let t = start(&[("server.read_timeout_ms", "1500")]).await;
    let r = ticket_with_id("ev_loris", "hd");
    let head = t.head(&r, "");
    let loris = t.connect().await;
    let started = Instant::now();
    // Half the head at once, then one byte every 100 ms: it would take ~30 s to finish.
    let (first, rest) = head.as_bytes().split_at(head.len() / 2);
    let (mut loris_rd, mut loris_wr) = loris.into_split();
    loris_wr.write_all(first).await.unwrap();
    let rest = rest.to_vec();
    let trickle = tokio::spawn(async move {
        for b in rest {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if loris_wr.write_all(&[b]).await.is_err() {
                return;
            }
        }
    });
    // Meanwhile another client is served, while the loris connection is still open.
    let ok = ticket_with_id("ev_meanwhile", "hd");
    let (status, _) = fake_lark::kit::post(&t.bridge.url, &ok).await;
    assert_eq!(status, 200);
    let mut chunk = [0u8; 256];
    let open = tokio::time::timeout(Duration::ZERO, loris_rd.read(&mut chunk)).await;
    assert!(
        open.is_err(),
        "the other client was served only after the loris ended ({:?})",
        started.elapsed()
    );
    // The slow head is cut off: the connection ends shortly after the read timeout (hyper
    // may answer 408 first; either way no request is processed).
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match loris_rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(closed, "slow-loris connection still open after 5 s");
    assert!(
        elapsed >= Duration::from_millis(1450) && elapsed < Duration::from_millis(3500),
        "closed after {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(t.outcomes("published").await, 1.0);
}

#[tokio::test]
async fn a_slow_loris_holding_the_only_connection_slot_is_shed_for_a_real_event() {
    // Issue 15 item 5: at the cap, a connection that has not sent a complete head gives way.
    let t = start(&[
        ("server.read_timeout_ms", "10000"),
        ("server.max_connections", "1"),
    ])
    .await;
    let mut loris = t.connect().await;
    loris.write_all(b"POST ").await.unwrap();
    // The loris holds the only slot before the real client comes.
    t.bridge
        .wait_metric("lark_bridge_connections", &[("listener", "webhook")], |v| {
            v == 1.0
        })
        .await;
    let started = Instant::now();
    let r = ticket_with_id("ev_after_loris", "hd");
    let mut s = t.connect().await;
    s.write_all(t.head(&r, "").as_bytes()).await.unwrap();
    s.write_all(&r.body).await.unwrap();
    // Served at once, not after the loris's 10 s read timeout.
    let answer = tokio::time::timeout(Duration::from_secs(2), read_response(&mut s))
        .await
        .expect("the real client waited behind the slow loris");
    assert_eq!(answer.map(|a| a.0), Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut loris, Duration::from_secs(1)).await);
    let shed = t.bridge.metric(
        "lark_bridge_connections_shed_total",
        &[("listener", "webhook")],
    );
    assert_eq!(shed, 1.0);
}

// ---------------------------------------------------------------- header limits

#[tokio::test]
async fn too_many_header_fields_is_431_and_the_bridge_keeps_serving() {
    let mut t = start(&[]).await;
    let r = ticket_with_id("ev_many_headers", "hd");
    let extra: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut s = t.connect().await;
    s.write_all(t.head(&r, &extra).as_bytes()).await.unwrap();
    let _ = s.write_all(&r.body).await;
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(status, 431);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    assert!(t.published().is_empty());
    // Under the count limit, the same request is fine.
    let extra: String = (0..80).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut s = t.connect().await;
    s.write_all(t.head(&r, &extra).as_bytes()).await.unwrap();
    s.write_all(&r.body).await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|a| a.0), Some(200));
    assert_eq!(t.published(), vec!["ev_many_headers".to_string()]);
}

#[tokio::test]
async fn a_head_over_max_header_bytes_is_431_json_and_a_huge_one_is_431_too() {
    let mut t = start(&[("server.max_header_bytes", "8192")]).await;
    let r = ticket_with_id("ev_big_head", "hd");
    // Over the limit, under hyper's hard cap (4× it, at least 64 KiB): the bridge's JSON 431.
    let mut s = t.connect().await;
    let pad = format!("x-pad: {}\r\n", "p".repeat(9000));
    s.write_all(t.head(&r, &pad).as_bytes()).await.unwrap();
    s.write_all(&r.body).await.unwrap();
    let (status, body) = read_response(&mut s).await.expect("an answer");
    assert_eq!(status, 431);
    assert_eq!(
        msg(&body),
        "request head is larger than server.max_header_bytes"
    );
    // Far over it (128 KiB in one line, past hyper's cap): hyper refuses before the handler.
    let mut s = t.connect().await;
    let pad = format!("x-pad: {}\r\n", "p".repeat(128 * 1024));
    let _ = s.write_all(t.head(&r, &pad).as_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
        .await
        .unwrap();
    assert!(
        matches!(answer, None | Some((431, _))),
        "huge head got {:?}",
        answer.map(|a| a.0)
    );
    assert!(t.published().is_empty());
    // And it still serves.
    let (status, _) = fake_lark::kit::post(&t.bridge.url, &ticket_with_id("ev_fine", "hd")).await;
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------- connection cap

#[tokio::test]
async fn connections_past_max_connections_wait_while_every_one_is_busy() {
    let t = start(&[("server.max_connections", "2")]).await;
    // Two connections busy with a request: full head, body not finished (never shed).
    let mut held = Vec::new();
    for i in 0..2 {
        let r = ticket_with_id(&format!("ev_held_{i}"), "hd");
        let mut s = t.connect().await;
        s.write_all(t.head(&r, "").as_bytes()).await.unwrap();
        s.write_all(&r.body[..10]).await.unwrap();
        held.push((s, r));
    }
    t.bridge
        .wait_metric("lark_bridge_connections", &[("listener", "webhook")], |v| {
            v == 2.0
        })
        .await;
    // A third connection completes the TCP handshake (kernel backlog) but is not served.
    let r = ticket_with_id("ev_third", "hd");
    let mut third = t.connect().await;
    third.write_all(t.head(&r, "").as_bytes()).await.unwrap();
    third.write_all(&r.body).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(700), read_response(&mut third)).await;
    assert!(early.is_err(), "served past max_connections: {early:?}");
    // The held requests finish and are answered.
    for (s, r) in held.iter_mut() {
        s.write_all(&r.body[10..]).await.unwrap();
        assert_eq!(read_response(s).await.map(|a| a.0), Some(200));
    }
    // Now idle, they give way: the third is accepted and served.
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third))
        .await
        .expect("the third connection was never served once the others were idle");
    assert_eq!(answer.map(|a| a.0), Some(200));
    assert_eq!(t.outcomes("published").await, 3.0);
}

// ---------------------------------------------------------------- replay protection

/// A signed push of a fresh event with the timestamp header `ts` (the signature covers it).
fn push_at(id: &str, ts: &str) -> LarkRequest {
    let plain = serde_json::to_vec(&ticket_event(id, "hd", Some(TOKEN), false)).unwrap();
    let key = EncryptKey::new(KEY);
    let mut r = lark_request(id, &plain, Some(&key));
    let nonce = "0123456789abcdef";
    let sig = signature::sign(ts, nonce, &key, &r.body);
    r.headers.retain(|(k, _)| !k.starts_with("x-lark"));
    r.headers.push(("x-lark-request-timestamp", ts.to_string()));
    r.headers.push(("x-lark-request-nonce", nonce.to_string()));
    r.headers.push(("x-lark-signature", sig));
    r
}

#[tokio::test]
async fn skew_check_accepts_inside_the_window_and_refuses_outside_over_http() {
    let mut t = start(&[("lark.max_timestamp_skew_secs", "300")]).await;
    let now = chrono::Utc::now().timestamp();
    let inside = [
        ("ev_now", now.to_string()),
        ("ev_past_290", (now - 290).to_string()),
        ("ev_future_290", (now + 290).to_string()),
        ("ev_millis", (now * 1000 - 290_000).to_string()),
        ("ev_fraction", format!("{}.5", now - 10)),
    ];
    for (id, ts) in &inside {
        let (status, body) = fake_lark::kit::post(&t.bridge.url, &push_at(id, ts)).await;
        assert_eq!(
            (status, &body["msg"]),
            (200, &Value::from("success")),
            "{id} ts={ts}"
        );
    }
    let outside = [
        ("ev_past_310", (now - 310).to_string()),
        ("ev_future_310", (now + 310).to_string()),
        ("ev_millis_old", (now * 1000 - 310_000).to_string()),
        ("ev_2020", "1608725989".to_string()),
        ("ev_garbage", "yesterday".to_string()),
        ("ev_zero", "0".to_string()),
        ("ev_negative", "-5".to_string()),
        ("ev_huge", "99999999999999999999".to_string()),
    ];
    for (id, ts) in &outside {
        let (status, body) = fake_lark::kit::post(&t.bridge.url, &push_at(id, ts)).await;
        assert_eq!(
            (status, &body["msg"]),
            (
                401,
                &Value::from("request timestamp is outside the allowed window")
            ),
            "{id} ts={ts}"
        );
    }
    let mut published = t.published();
    published.sort();
    let mut want: Vec<String> = inside.iter().map(|(id, _)| id.to_string()).collect();
    want.sort();
    assert_eq!(published, want);
    let text = t.bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "lark_bridge_verification_failures_total",
            &[("reason", "timestamp")]
        ),
        outside.len() as f64
    );
    // A stale timestamp with a wrong signature is a signature failure: the skew check runs
    // only on authenticated requests, so it cannot be probed without the key.
    let mut forged = push_at("ev_forged_old", "1608725989");
    for (k, v) in forged.headers.iter_mut() {
        if *k == "x-lark-signature" {
            *v = "0".repeat(64);
        }
    }
    let (status, body) = fake_lark::kit::post(&t.bridge.url, &forged).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (401, Some("signature does not match"))
    );
}

#[tokio::test]
async fn with_the_skew_check_off_an_old_but_genuine_push_is_accepted_over_http() {
    let mut t = start(&[("lark.max_timestamp_skew_secs", "0")]).await;
    let (status, _) =
        fake_lark::kit::post(&t.bridge.url, &push_at("ev_old_ok", "1608725989")).await;
    assert_eq!(status, 200);
    assert_eq!(t.published(), vec!["ev_old_ok".to_string()]);
}

#[tokio::test]
async fn a_day_window_refuses_an_older_replay_and_admits_a_late_redelivery() {
    // Issue 15 item 9: the recommended window (24 h) admits Lark's last redelivery (~7.1 h
    // after the first push) even if Lark kept the first push's timestamp, and refuses a
    // captured request replayed after the dedup TTL.
    let mut t = start(&[("lark.max_timestamp_skew_secs", "86400")]).await;
    let now = chrono::Utc::now().timestamp();
    let late = (now - 7 * 3600 - 600).to_string();
    let (status, _) = fake_lark::kit::post(&t.bridge.url, &push_at("ev_late", &late)).await;
    assert_eq!(status, 200);
    let stale = (now - 86_400 - 60).to_string();
    let (status, body) = fake_lark::kit::post(&t.bridge.url, &push_at("ev_replay", &stale)).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (401, Some("request timestamp is outside the allowed window"))
    );
    assert_eq!(t.published(), vec!["ev_late".to_string()]);
}
