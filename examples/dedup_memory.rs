//! Memory of the in-process dedup store (issue 8): the resident set size of this process idle,
//! then after 1,000,000 distinct ids were reserved and committed in a `MemoryStore` of the
//! default capacity, then after another 10 % pushed it past capacity (evicting the oldest
//! commits). Target: under 200 MiB with 1 M ids. Reads `VmRSS` from /proc/self/status (Linux).
//!
//! `cargo run --release --example dedup_memory [IDS]` — prints one JSON object.

use std::time::{Duration, Instant};

use lark_bridge::dedup::memory::MemoryStore;
use lark_bridge::dedup::{DedupStore, Reservation};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Reserve and commit `n` ids with the given prefix; ids look like Lark's (32 hex chars).
async fn fill(store: &MemoryStore, prefix: u64, n: u64) {
    let lease = Duration::from_secs(5);
    let ttl = Duration::from_secs(86_400);
    for i in 0..n {
        let id = format!("{prefix:016x}{i:016x}");
        match store.reserve(&id, lease).await {
            Ok(Reservation::New(owner)) => {
                store.commit(&id, &owner, ttl).await.expect("commit");
            }
            other => panic!("id {id}: {other:?}"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ids: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let idle = rss_kib();
    let store = MemoryStore::new(ids as usize);
    let empty = rss_kib();
    let t = Instant::now();
    fill(&store, 1, ids).await;
    let fill_secs = t.elapsed().as_secs_f64();
    let full = rss_kib();
    let len_full = store.len();
    // Past capacity: each new id evicts the oldest commit; memory must not grow.
    fill(&store, 2, ids / 10).await;
    let over = rss_kib();
    let report = serde_json::json!({
        "ids": ids,
        "rss_idle_mib": mib(idle),
        "rss_empty_store_mib": mib(empty),
        "rss_full_mib": mib(full),
        "store_growth_mib": mib(full.saturating_sub(empty)),
        "bytes_per_id": (full.saturating_sub(empty) * 1024) as f64 / ids as f64,
        "entries_when_full": len_full,
        "rss_after_10pct_more_mib": mib(over),
        "evictions": store.evictions(),
        "entries_after": store.len(),
        "reserve_commit_ns_per_id": fill_secs * 1e9 / ids as f64,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
