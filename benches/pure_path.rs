//! The pure part of a request, without I/O (issue 8): signature check, AES-256-CBC decryption,
//! JSON parsing and envelope detection (`Verifier::verify`), then normalization to the
//! CloudEvent and its serialization (`normalize`), for one realistic `ticket.created` event
//! exactly as Lark sends it. Target: under 10 µs per event. Each stage is also measured alone,
//! so a regression points at its layer.
//!
//! Measured with the binary's allocator (mimalloc), wrapped in a counter: after the timings it
//! prints the heap allocations one whole pure path makes (issue 19).
//!
//! `cargo bench --bench pure_path` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use lark_bridge::alloc_count::AllocStats;
use lark_bridge::simulate::{lark_request, ticket_event, LarkRequest};
use lark_protocol::event::Outgoing;
use lark_protocol::normalize::ticket_created::normalize;
use lark_protocol::{crypto, signature, EncryptKey, Inbound, SignatureHeaders, Verifier};

#[global_allocator]
static GLOBAL: lark_bridge::alloc_count::Counting<mimalloc::MiMalloc> =
    lark_bridge::alloc_count::Counting(mimalloc::MiMalloc);

const KEY: &str = "bench encrypt key";
const TOKEN: &str = "bench verification token";

struct Fixture {
    verifier: Verifier,
    key: EncryptKey,
    req: LarkRequest,
    plaintext: Vec<u8>,
    ciphertext: String,
}

fn fixture() -> Fixture {
    let key = EncryptKey::new(KEY);
    let id = "2c9f5e3a41b06d7e8f90a1b2c3d4e5f6";
    let plaintext =
        serde_json::to_vec(&ticket_event(id, "7090000000000000001", Some(TOKEN), false)).unwrap();
    let req = lark_request(id, &plaintext, Some(&key));
    let outer: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let ciphertext = outer["encrypt"].as_str().unwrap().to_string();
    Fixture {
        verifier: Verifier::new(vec![key.clone()], vec![TOKEN.to_string()], 0),
        key,
        req,
        plaintext,
        ciphertext,
    }
}

fn header<'a>(r: &'a LarkRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn sig(r: &LarkRequest) -> SignatureHeaders<'_> {
    SignatureHeaders {
        timestamp: header(r, "x-lark-request-timestamp"),
        nonce: header(r, "x-lark-request-nonce"),
        signature: header(r, "x-lark-signature"),
    }
}

fn verify(f: &Fixture) -> lark_protocol::VerifiedEvent {
    match f.verifier.verify(sig(&f.req), &f.req.body, 0) {
        Ok(Inbound::Event(ev)) => ev,
        other => panic!("the fixture does not verify: {other:?}"),
    }
}

/// The whole pure path of one request, as the handler and pipeline run it.
fn whole_path(f: &Fixture, now_ms: i64) -> Outgoing {
    let Ok(Inbound::Event(ev)) = f.verifier.verify(sig(&f.req), black_box(&f.req.body), 0) else {
        unreachable!()
    };
    let mut warnings = Vec::new();
    normalize(&ev, now_ms, &mut warnings).unwrap()
}

fn pure_path(c: &mut Criterion) {
    lark_bridge::alloc_count::enable();
    let f = fixture();
    let now_ms = 1_700_000_000_000;
    let mut g = c.benchmark_group("pure_path");
    g.throughput(Throughput::Elements(1));

    g.bench_function("verify_decrypt_parse_normalize_serialize", |b| {
        b.iter(|| black_box(whole_path(&f, now_ms).structured.len()))
    });

    // The stages alone.
    g.bench_function("signature", |b| {
        let s = sig(&f.req);
        let keys = std::slice::from_ref(&f.key);
        b.iter(|| {
            signature::verify(
                s.timestamp.unwrap(),
                s.nonce.unwrap(),
                s.signature.unwrap(),
                keys,
                black_box(&f.req.body),
            )
        })
    });
    g.bench_function("decrypt_and_parse", |b| {
        let keys = std::slice::from_ref(&f.key);
        b.iter(|| crypto::decrypt_json(keys, black_box(&f.ciphertext)).unwrap())
    });
    g.bench_function("verify", |b| b.iter(|| verify(black_box(&f))));
    g.bench_function("normalize_serialize", |b| {
        let ev = verify(&f);
        b.iter(|| {
            let mut warnings = Vec::new();
            normalize(black_box(&ev), now_ms, &mut warnings).unwrap()
        })
    });
    g.finish();

    // Allocations of one whole pure path (the first run warms nothing that later runs reuse).
    const RUNS: u64 = 1000;
    let before = AllocStats::now();
    for _ in 0..RUNS {
        black_box(whole_path(&f, now_ms));
    }
    let used = AllocStats::now().since(before);
    println!(
        "allocations per pure path: {:.1} ({:.0} bytes)",
        used.calls as f64 / RUNS as f64,
        used.bytes as f64 / RUNS as f64
    );
    println!(
        "fixture: plaintext {} B, request body {} B",
        f.plaintext.len(),
        f.req.body.len()
    );
}

criterion_group!(benches, pure_path);

/// `PURE_PATH_RUNS=N` runs the whole pure path N times and nothing else: for an instruction
/// count (`valgrind --tool=callgrind`, N = 0 and N = 10000, difference ÷ 10000), which is
/// repeatable where this host's wall-clock timings move by ±30 % between minutes.
fn main() {
    if let Some(runs) = std::env::var("PURE_PATH_RUNS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let f = fixture();
        for _ in 0..runs {
            black_box(whole_path(&f, 1_700_000_000_000));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
