//! The long connection's frame decoder (lark-longconn.md §4) and what the bridge does with a
//! decoded frame: read its headers, build the reply, feed fragments to the reassembler.
//!
//! Input: one binary WebSocket message, as a hostile peer would send it.
//!
//! Oracles: decoding never panics; a decoded frame re-encodes to bytes that decode to the same
//! frame; its reply decodes, echoes SeqID/LogID/service/method and the headers in order with
//! `biz_rt` appended, and carries the code; a header value made printable holds no control
//! character; fragments taken from the frame (`message_id`, `sum`, `seq` headers, any values)
//! never make the reassembler hold more than its bound or more messages than its cap.
#![no_main]

use std::time::{Duration, Instant};

use lark_protocol::endpoint::printable;
use lark_protocol::fragments::{Added, Reassembler};
use lark_protocol::frame::{reply_code, Frame};
use libfuzzer_sys::fuzz_target;

const MAX_BYTES: usize = 4096;
const MAX_MESSAGES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode_bytes(data) else {
        return;
    };
    let again = Frame::decode_bytes(&frame.to_bytes()).expect("our own encoding decodes");
    assert_eq!(again, frame, "encode/decode round trip");
    let _ = frame.frame_type();

    let reply = Frame::reply(&frame, 200, 3);
    let back = Frame::decode_bytes(&reply.to_bytes()).expect("a reply decodes");
    assert_eq!(
        (back.seq_id, back.log_id, back.service, back.method),
        (frame.seq_id, frame.log_id, frame.service, frame.method)
    );
    assert_eq!(back.headers.len(), frame.headers.len() + 1);
    assert_eq!(&back.headers[..frame.headers.len()], &frame.headers[..]);
    assert_eq!(back.headers.last().map(|h| h.key.as_str()), Some("biz_rt"));
    assert_eq!(back.payload.as_deref().and_then(reply_code), Some(200));

    for h in &frame.headers {
        for s in [printable(&h.key), printable(&h.value)] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
    }

    // Every header triple as a fragment, the payload split among them.
    let mut r = Reassembler::with_max_messages(Duration::from_secs(5), MAX_BYTES, MAX_MESSAGES);
    let t = Instant::now();
    let payload = frame.payload.clone().unwrap_or_default();
    let ids: Vec<&str> = frame.headers.iter().map(|h| h.value.as_str()).collect();
    for (i, h) in frame.headers.iter().enumerate() {
        let sum = h.key.len() % 4 + 2;
        let seq = h.value.len() % (sum + 1);
        let id = ids[i % ids.len().max(1)];
        let part = payload
            .get(i % (payload.len() + 1)..)
            .unwrap_or(&[])
            .to_vec();
        let now = t + Duration::from_millis(i as u64 * 700);
        match r.add(id, sum, seq, part, now) {
            Added::Complete(p) => assert!(p.len() <= MAX_BYTES),
            Added::Invalid(_) => assert!(seq >= sum || i > 0),
            _ => {}
        }
        assert!(r.held_bytes() <= MAX_BYTES, "held {}", r.held_bytes());
        assert!(r.pending() <= MAX_MESSAGES && r.tombstones() <= MAX_MESSAGES);
        r.expire(now);
        if let Some(d) = r.next_deadline() {
            assert!(d >= t);
        }
    }
    r.expire(t + Duration::from_secs(3600));
    assert_eq!(
        (r.pending(), r.held_bytes(), r.next_deadline()),
        (0, 0, None)
    );
});
