//! The in-process store: one replica only (each replica would have its own memory). A hash map
//! keyed by a 128-bit digest of the id (16 bytes instead of the id's ~40, so 1 M ids fit in
//! ~100 MiB) plus a FIFO of commits: with one TTL for every id, commit order is expiry order, so
//! purging and evicting "the oldest committed" are pops from the front.
//!
//! A std `Mutex` is right here: every critical section is a few map operations with no `.await`
//! inside, far shorter than a tokio mutex's own bookkeeping.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{DedupStore, Owner, Reservation, Settled, StoreError};

type Key = [u8; 16];

fn key(id: &str) -> Key {
    let d = Sha256::digest(id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

#[derive(Debug)]
enum Entry {
    /// `owner` is a small per-store counter; the token handed out maps to it.
    Reserved { owner: u64, until: Instant },
    /// `seq` identifies this commit in the FIFO (a re-commit after expiry gets a new one).
    Committed { until: Instant, seq: u64 },
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    commits: VecDeque<(Key, u64)>,
    next_seq: u64,
}

/// Bounded TTL store; see the module doc.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    capacity: usize,
    next_owner: AtomicU64,
    evictions: AtomicU64,
    /// `lark_bridge_dedup_evictions_total`.
    evictions_metric: prometheus::IntCounter,
    instance: String,
}

impl MemoryStore {
    /// A store of `capacity` ids with a counter of its own (tests, benchmarks).
    pub fn new(capacity: usize) -> Arc<Self> {
        let unregistered = prometheus::IntCounter::new("evictions", "evictions")
            .unwrap_or_else(|_| unreachable!("a valid metric name"));
        Self::with_evictions(capacity, unregistered)
    }

    /// A store of `capacity` ids that counts early evictions on `evictions`
    /// (`Metrics::evictions_counter`).
    pub fn with_evictions(capacity: usize, evictions: prometheus::IntCounter) -> Arc<Self> {
        Arc::new(MemoryStore {
            inner: Mutex::new(Inner::default()),
            capacity,
            next_owner: AtomicU64::new(1),
            evictions: AtomicU64::new(0),
            evictions_metric: evictions,
            instance: super::instance_id(),
        })
    }

    /// Committed ids evicted early because the store was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Entries held (reserved + committed).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (no multi-step invariants
        // span an unwind point), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop expired commits from the front of the FIFO. Returns how many were removed.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut removed = 0;
        while let Some(&(k, seq)) = inner.commits.front() {
            match inner.map.get(&k) {
                Some(Entry::Committed { until, seq: s }) if *s == seq => {
                    if *until > now {
                        break;
                    }
                    inner.map.remove(&k);
                    removed += 1;
                }
                _ => {}
            }
            inner.commits.pop_front();
        }
        removed
    }

    /// Spawn the periodic purge; it stops when the store is dropped.
    pub fn spawn_purge(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.purge_expired();
            }
        })
    }

    fn owner_token(&self, n: u64) -> Owner {
        Owner(format!("{}.{n}", self.instance))
    }

    fn owner_number(&self, owner: &Owner) -> Option<u64> {
        owner
            .0
            .strip_prefix(&self.instance)?
            .strip_prefix('.')?
            .parse()
            .ok()
    }

    /// Make room for one entry: evict the oldest committed id. False when every entry is a
    /// live reservation (the caller answers 503).
    fn make_room(&self, inner: &mut Inner, now: Instant) -> bool {
        if inner.map.len() < self.capacity {
            return true;
        }
        while let Some((k, seq)) = inner.commits.pop_front() {
            if let Some(Entry::Committed { seq: s, until }) = inner.map.get(&k) {
                if *s == seq {
                    if *until > now {
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                        self.evictions_metric.inc();
                    }
                    inner.map.remove(&k);
                    return true;
                }
            }
        }
        // No commits left: drop reservations whose lease expired.
        let before = inner.map.len();
        inner
            .map
            .retain(|_, e| !matches!(e, Entry::Reserved { until, .. } if *until <= now));
        inner.map.len() < before
    }
}

#[async_trait]
impl DedupStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn reserve(&self, id: &str, lease: Duration) -> Result<Reservation, StoreError> {
        let k = key(id);
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.map.get(&k) {
            Some(Entry::Committed { until, .. }) if *until > now => {
                return Ok(Reservation::Duplicate)
            }
            Some(Entry::Reserved { until, .. }) if *until > now => {
                return Ok(Reservation::InFlight)
            }
            Some(_) => {} // expired: take it over
            None => {
                if !self.make_room(&mut inner, now) {
                    return Err(StoreError::Full);
                }
            }
        }
        let n = self.next_owner.fetch_add(1, Ordering::Relaxed);
        inner.map.insert(
            k,
            Entry::Reserved {
                owner: n,
                until: now + lease,
            },
        );
        Ok(Reservation::New(self.owner_token(n)))
    }

    async fn commit(&self, id: &str, owner: &Owner, ttl: Duration) -> Result<Settled, StoreError> {
        let k = key(id);
        let Some(n) = self.owner_number(owner) else {
            return Ok(Settled::Lost);
        };
        let mut inner = self.lock();
        match inner.map.get(&k) {
            Some(Entry::Reserved { owner, .. }) if *owner == n => {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.map.insert(
                    k,
                    Entry::Committed {
                        until: Instant::now() + ttl,
                        seq,
                    },
                );
                inner.commits.push_back((k, seq));
                Ok(Settled::Done)
            }
            _ => Ok(Settled::Lost),
        }
    }

    async fn release(&self, id: &str, owner: &Owner) -> Result<Settled, StoreError> {
        let k = key(id);
        let Some(n) = self.owner_number(owner) else {
            return Ok(Settled::Lost);
        };
        let mut inner = self.lock();
        match inner.map.get(&k) {
            Some(Entry::Reserved { owner, .. }) if *owner == n => {
                inner.map.remove(&k);
                Ok(Settled::Done)
            }
            _ => Ok(Settled::Lost),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(5);
    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn reserve_commit_duplicate() {
        let s = MemoryStore::new(10);
        let Reservation::New(o) = s.reserve("a", LEASE).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.reserve("a", LEASE).await.unwrap(), Reservation::InFlight);
        assert_eq!(s.commit("a", &o, TTL).await.unwrap(), Settled::Done);
        assert_eq!(s.reserve("a", LEASE).await.unwrap(), Reservation::Duplicate);
    }

    #[tokio::test]
    async fn release_lets_a_redelivery_publish() {
        let s = MemoryStore::new(10);
        let Reservation::New(o) = s.reserve("a", LEASE).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.release("a", &o).await.unwrap(), Settled::Done);
        assert!(matches!(
            s.reserve("a", LEASE).await.unwrap(),
            Reservation::New(_)
        ));
    }

    #[tokio::test]
    async fn expired_lease_is_taken_over_and_the_old_owner_cannot_commit() {
        let s = MemoryStore::new(10);
        let Reservation::New(old) = s.reserve("a", Duration::from_millis(1)).await.unwrap() else {
            panic!()
        };
        std::thread::sleep(Duration::from_millis(5));
        let Reservation::New(new) = s.reserve("a", LEASE).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.commit("a", &old, TTL).await.unwrap(), Settled::Lost);
        assert_eq!(s.release("a", &old).await.unwrap(), Settled::Lost);
        assert_eq!(s.commit("a", &new, TTL).await.unwrap(), Settled::Done);
    }

    #[tokio::test]
    async fn full_store_evicts_oldest_commit_never_a_reservation() {
        let s = MemoryStore::new(2);
        let Reservation::New(a) = s.reserve("a", LEASE).await.unwrap() else {
            panic!()
        };
        s.commit("a", &a, TTL).await.unwrap();
        let Reservation::New(_b) = s.reserve("b", LEASE).await.unwrap() else {
            panic!()
        };
        // Full: "c" evicts committed "a", not in-flight "b".
        assert!(matches!(
            s.reserve("c", LEASE).await.unwrap(),
            Reservation::New(_)
        ));
        assert_eq!(s.evictions(), 1);
        assert_eq!(s.reserve("b", LEASE).await.unwrap(), Reservation::InFlight);
        // Now both entries are in flight: no room.
        assert!(s.reserve("d", LEASE).await.is_err());
        assert_eq!(s.len(), 2);
    }

    #[tokio::test]
    async fn purge_drops_expired_commits() {
        let s = MemoryStore::new(10);
        let Reservation::New(o) = s.reserve("a", LEASE).await.unwrap() else {
            panic!()
        };
        s.commit("a", &o, Duration::from_millis(1)).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.purge_expired(), 1);
        assert!(s.is_empty());
    }
}
