//! Deduplication by event id, two-phase: `reserve` (a lease of `dedup.lease_ms`) → publish →
//! `commit` (remembered for `dedup.ttl_secs`), or `release` on failure so that Lark's redelivery
//! can publish. A reservation carries an owner token: a replica whose lease expired and was taken
//! over can neither commit nor release the new owner's reservation.

pub mod memory;
pub mod nats_kv;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

/// The owner of one reservation (a random instance id plus a per-reservation nonce).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(pub String);

impl Owner {
    /// A fresh owner token for `instance`.
    pub fn new(instance: &str) -> Owner {
        Owner(format!("{instance}.{:016x}", rand::random::<u64>()))
    }
}

/// A random id for this process, used in owner tokens.
pub fn instance_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The answer to `reserve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Not seen (or its previous lease expired): this caller owns it now.
    New(Owner),
    /// Already published and committed.
    Duplicate,
    /// Another copy holds a live reservation.
    InFlight,
}

/// The store failed or did not answer in time. Carries no secret (URLs are redacted, client
/// errors scrubbed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No answer within the time the caller had (the response budget, or a client timeout).
    #[error("dedup store did not answer within the response budget")]
    Timeout,
    /// The memory store holds only live reservations: nothing can be evicted.
    #[error("memory dedup store is full of in-flight reservations")]
    Full,
    /// The store is unreachable or refused; the message says why.
    #[error("{0}")]
    Unavailable(String),
}

/// Whether a commit or release took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Done,
    /// The reservation was no longer ours (lease expired and taken over, or gone).
    Lost,
}

/// A dedup store. Implementations make each step atomic on the server.
#[async_trait]
pub trait DedupStore: Send + Sync + 'static {
    /// `memory`, `redis` or `nats` (the metric label).
    fn backend(&self) -> &'static str;
    /// Reserve `id` for `lease`.
    async fn reserve(&self, id: &str, lease: Duration) -> Result<Reservation, StoreError>;
    /// Mark `id` published, remembered for `ttl`, if `owner` still holds it.
    async fn commit(&self, id: &str, owner: &Owner, ttl: Duration) -> Result<Settled, StoreError>;
    /// Drop `owner`'s reservation of `id` so that a redelivery may publish.
    async fn release(&self, id: &str, owner: &Owner) -> Result<Settled, StoreError>;
    /// Whether the store is reachable (`/readyz`).
    async fn check(&self) -> Result<(), StoreError>;
}
