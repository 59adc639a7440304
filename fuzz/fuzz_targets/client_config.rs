//! `ClientConfig` handling (lark-longconn.md §2, §4, §6): the settings Lark may send in a
//! discovery answer or any pong, and every duration the bridge derives from them.
//!
//! Input: `F U J`: byte F picks the failures-in-a-row count, byte U the jitter, the rest J is
//! read both as a pong payload and as the `ClientConfig` of a discovery answer.
//!
//! Oracles: nothing panics (issue 15 item 10: `PingInterval` 9223372036854775807 or 4e18 once
//! overflowed a `Duration`); after applying, every setting is inside `endpoint::bounds`; the
//! pong timeout, the first wait and the retry wait are inside their bounds and can be added to
//! an `Instant`; the retry wait is never below the floor, whatever Lark sent.
#![no_main]

use std::time::{Duration, Instant};

use lark_protocol::endpoint::{bounds, parse_discovery, ClientConfig, Settings};
use libfuzzer_sys::fuzz_target;

fn check(s: &Settings, failures: u32, unit: f64) {
    let secs = |d: Duration| d.as_secs() as i64;
    assert!(
        (bounds::PING_INTERVAL_SECS.0..=bounds::PING_INTERVAL_SECS.1)
            .contains(&secs(s.ping_interval))
    );
    assert!(secs(s.reconnect_interval) <= bounds::RECONNECT_INTERVAL_SECS.1);
    assert!(secs(s.reconnect_nonce) <= bounds::RECONNECT_NONCE_SECS.1);
    assert!((bounds::RECONNECT_COUNT.0..=bounds::RECONNECT_COUNT.1).contains(&s.reconnect_count));
    let floor = Duration::from_secs(1);
    let ceiling = Duration::from_secs(300);
    for configured in [0, 1, u64::MAX] {
        let p = s.pong_timeout(configured);
        assert!(p <= Duration::from_secs(bounds::PONG_TIMEOUT_SECS));
        assert!(p >= Duration::from_secs(1));
    }
    let first = s.first_delay(floor, unit);
    assert!(first >= floor && first <= s.reconnect_nonce.max(floor));
    let retry = s.retry_delay(failures, floor, ceiling, unit);
    assert!(retry >= floor && retry <= ceiling, "{retry:?}");
    let now = Instant::now();
    let _ = now + s.ping_interval + s.pong_timeout(0) + first + retry;
}

fuzz_target!(|data: &[u8]| {
    let (failures, unit, json) = match data {
        [f, u, rest @ ..] => (
            u32::from(*f) * 0x0101_0101 >> (f % 32),
            f64::from(*u) / 256.0,
            rest,
        ),
        _ => return,
    };
    let mut s = Settings::new(
        -1,
        Duration::from_secs(120),
        Duration::from_secs(30),
        Duration::from_secs(120),
    );
    if let Some(cc) = ClientConfig::from_pong(json) {
        s.apply(&cc);
        check(&s, failures, unit);
        // What we send back round-trips.
        let again: ClientConfig =
            serde_json::from_slice(&serde_json::to_vec(&cc).unwrap()).unwrap();
        assert_eq!(again, cc);
    }
    let body = [
        br#"{"code":0,"msg":"ok","data":{"URL":"wss://x/ws/v2?device_id=d&service_id=1","ClientConfig":"#.as_slice(),
        json,
        b"}}",
    ]
    .concat();
    if let Ok(ep) = parse_discovery(200, &body) {
        if let Some(cc) = ep.client_config {
            s.apply(&cc);
        }
    }
    check(&s, failures, unit);
});
