//! The NATS JetStream key-value store (nats-server ≥ 2.10), shared by every replica. Each id is
//! one key whose value says `reserved` or `committed`, who owns it and until when; every write is
//! conditional on the key's last revision, which is what makes reserve, takeover, commit and
//! release atomic without a server-side script.
//!
//! The owner token carries the revision of its own reservation: `<instance>.<nonce>@<revision>`.
//! Commit and release are "write if the key is still at that revision", so the store keeps no
//! per-request state in memory (nothing to bound, nothing lost if a task is dropped).

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::ServerAddr;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{DedupStore, Owner, Reservation, Settled, StoreError};
use crate::config::DedupConfig;

/// One JetStream request (a conditional write's ack, a get, bucket status).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// A whole store call (up to three requests), well under the default 2.5 s response budget.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EntryState {
    Reserved,
    Committed,
}

/// The value of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Value {
    state: EntryState,
    /// The reserving owner (without the revision, which is only known after the write).
    owner: String,
    /// Unix ms: the lease deadline when reserved; the end of the TTL when committed.
    until_ms: i64,
}

impl Value {
    fn encode(&self) -> Bytes {
        // A struct of a string and two plain fields always serializes.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// KV keys allow only `[-/_=.A-Za-z0-9]`; Lark's ids are not promised to fit, so hash them.
fn kv_key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn with_revision(owner: Owner, revision: u64) -> Owner {
    Owner(format!("{}@{revision}", owner.0))
}

/// The revision of the reservation `owner` holds, if it is one of ours.
fn revision_of(owner: &Owner) -> Option<u64> {
    owner.0.rsplit_once('@')?.1.parse().ok()
}

use crate::secrets::now_ms;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// See the module doc.
pub struct NatsKvStore {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    kv: kv::Store,
    /// The bucket's stream, `KV_<bucket>`, asked for its info by `check`.
    stream: String,
    instance: String,
    /// Redacted, for error messages.
    url: String,
    /// Scrubbed from every error message (password, token), in case a driver echoes them.
    secrets: Vec<String>,
}

impl NatsKvStore {
    /// Connect to `dedup.nats.url` and open the bucket, creating it (history 1, max age =
    /// `dedup.ttl_secs`) if absent. Fails when the server cannot be reached now.
    pub async fn connect(cfg: &DedupConfig) -> Result<Arc<Self>, StoreError> {
        let nc = &cfg.nats;
        let url = nc.url.redacted();
        let mut secrets: Vec<String> = [&nc.auth.password, &nc.auth.token]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_string())
            .collect();
        // The user-info of the URL is a secret too.
        for u in nc.url.expose().split(',') {
            if let Some((_, rest)) = u.split_once("://") {
                if let Some((userinfo, _)) = rest.rsplit_once('@') {
                    secrets.extend(userinfo.split(':').map(str::to_string));
                }
            }
        }
        let addrs = nc
            .url
            .expose()
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            // The parse error may quote the URL: say only which one.
            .map_err(|_| StoreError::Unavailable(format!("{url} is not a valid NATS URL list")))?;
        let opts = crate::natsconn::connect_options(&nc.auth, "dedup.nats")
            .await
            .map_err(StoreError::Unavailable)?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| scrub(format!("{url}: {e}"), &secrets))?;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let ttl = cfg.ttl;
        let kv = match js.get_key_value(nc.bucket.as_str()).await {
            Ok(kv) => kv,
            // Absent (or unreadable): create it. Two replicas creating the same bucket at once
            // is fine; JetStream treats an identical create as a no-op.
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: nc.bucket.clone(),
                    description: "lark-bridge: event ids reserved or published".into(),
                    history: 1,
                    max_age: ttl,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    scrub(
                        format!(
                            "{url}: cannot open or create bucket {} (JetStream enabled? nats-server >= 2.10?): {e}",
                            nc.bucket
                        ),
                        &secrets,
                    )
                })?,
        };
        let store = NatsKvStore {
            client,
            js,
            kv,
            stream: format!("KV_{}", nc.bucket),
            instance: super::instance_id(),
            url,
            secrets,
        };
        if let Ok(Ok(status)) = tokio::time::timeout(OP_TIMEOUT, store.kv.status()).await {
            let max_age = status.info.config.max_age;
            // Commits carry their own deadline, so a longer max age only costs storage; a
            // shorter one forgets ids before the TTL and lets late redeliveries through.
            if max_age != ttl {
                tracing::warn!(
                    bucket = %nc.bucket,
                    max_age_secs = max_age.as_secs(),
                    ttl_secs = cfg.ttl.as_secs(),
                    "the existing dedup bucket's max age differs from dedup.ttl_secs"
                );
            }
        }
        Ok(Arc::new(store))
    }

    /// Fail at once while disconnected. The client would otherwise queue our writes and send
    /// them after reconnecting — a reservation nobody waits for any more, blocking the id for a
    /// lease.
    fn connected(&self, op: &str) -> Result<(), StoreError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "nats {op} ({}): not connected",
                self.url
            ))),
        }
    }

    fn error(&self, op: &str, e: impl std::fmt::Display) -> StoreError {
        scrub(format!("nats {op} ({}): {e}", self.url), &self.secrets)
    }

    /// Run one store call under OP_TIMEOUT.
    async fn bounded<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.connected(op)?;
        tokio::time::timeout(OP_TIMEOUT, fut)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "nats {op} ({}): no answer within {OP_TIMEOUT:?}",
                    self.url
                )))
            })
    }

    /// Write `value` if the key's last revision is `last` (0 = absent). `None` = lost the race.
    async fn write_if(
        &self,
        key: &str,
        value: Bytes,
        last: u64,
    ) -> Result<Option<u64>, StoreError> {
        match self.kv.update(key, value, last).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(self.error("write", e)),
        }
    }

    async fn reserve_inner(&self, id: &str, lease: Duration) -> Result<Reservation, StoreError> {
        let key = kv_key(id);
        let owner = Owner::new(&self.instance);
        let now = now_ms();
        let value = Value {
            state: EntryState::Reserved,
            owner: owner.0.clone(),
            until_ms: now.saturating_add(ms(lease)),
        }
        .encode();
        let new = |rev| Reservation::New(with_revision(owner.clone(), rev));

        // Create if absent.
        if let Some(rev) = self.write_if(&key, value.clone(), 0).await? {
            return Ok(new(rev));
        }
        let entry = self
            .kv
            .entry(key.as_str())
            .await
            .map_err(|e| self.error("get", e))?;
        let Some(entry) = entry else {
            // It aged out between our two calls: one more create, else someone beat us to it.
            return Ok(match self.write_if(&key, value, 0).await? {
                Some(rev) => new(rev),
                None => Reservation::InFlight,
            });
        };
        if entry.operation == Operation::Put {
            let current: Value = serde_json::from_slice(&entry.value).map_err(|_| {
                self.error(
                    "reserve",
                    format!("key {key} holds a value this bridge did not write"),
                )
            })?;
            if current.until_ms > now {
                return Ok(match current.state {
                    EntryState::Committed => Reservation::Duplicate,
                    EntryState::Reserved => Reservation::InFlight,
                });
            }
        }
        // Free to take: a tombstone left by a release, a lease whose owner died, or a commit
        // past dedup.ttl_secs (a bucket whose max age is longer than the TTL).
        // Take over, unless another replica does so first.
        Ok(match self.write_if(&key, value, entry.revision).await? {
            Some(rev) => new(rev),
            None => Reservation::InFlight,
        })
    }

    async fn commit_inner(
        &self,
        key: &str,
        rev: u64,
        ttl: Duration,
        owner: &str,
    ) -> Result<Settled, StoreError> {
        let value = Value {
            state: EntryState::Committed,
            owner: owner.to_string(),
            until_ms: now_ms().saturating_add(ms(ttl)),
        }
        .encode();
        Ok(match self.write_if(key, value, rev).await? {
            Some(_) => Settled::Done,
            None => Settled::Lost,
        })
    }

    async fn release_inner(&self, key: &str, rev: u64) -> Result<Settled, StoreError> {
        // A delete leaves a tombstone; reserve treats it as free.
        match self.kv.delete_expect_revision(key, Some(rev)).await {
            Ok(()) => Ok(Settled::Done),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Settled::Lost),
            Err(e) => Err(self.error("release", e)),
        }
    }
}

/// `msg` with every configured secret replaced by `***`, as a store error.
fn scrub(msg: String, secrets: &[String]) -> StoreError {
    StoreError::Unavailable(crate::secrets::scrub(msg, secrets))
}

#[async_trait]
impl DedupStore for NatsKvStore {
    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn reserve(&self, id: &str, lease: Duration) -> Result<Reservation, StoreError> {
        self.bounded("reserve", self.reserve_inner(id, lease)).await
    }

    async fn commit(&self, id: &str, owner: &Owner, ttl: Duration) -> Result<Settled, StoreError> {
        let Some(rev) = revision_of(owner) else {
            return Ok(Settled::Lost);
        };
        let base = owner.0.rsplit_once('@').map_or("", |(b, _)| b);
        self.bounded("commit", self.commit_inner(&kv_key(id), rev, ttl, base))
            .await
    }

    async fn release(&self, id: &str, owner: &Owner) -> Result<Settled, StoreError> {
        let Some(rev) = revision_of(owner) else {
            return Ok(Settled::Lost);
        };
        self.bounded("release", self.release_inner(&kv_key(id), rev))
            .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        // A stream-info request: a JetStream round trip (`kv.status()` only returns the info
        // cached at start) that fails when the server is down or stalled, when JetStream is
        // unavailable — which a plain PING would not notice — and when the bucket is gone.
        self.bounded("check", async {
            self.js
                .get_stream(self.stream.as_str())
                .await
                .map_err(|e| self.error("check", e))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercase_hex_sha256_and_valid_kv_keys() {
        let k = kv_key("ev_1/with spaces:and*wildcards>");
        assert_eq!(k.len(), 64);
        assert!(k
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(
            kv_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_owner_token_carries_its_revision() {
        let o = with_revision(Owner("0123456789abcdef.00000000000000ff".into()), 42);
        assert_eq!(o.0, "0123456789abcdef.00000000000000ff@42");
        assert_eq!(revision_of(&o), Some(42));
        assert_eq!(revision_of(&Owner("no-revision".into())), None);
        assert_eq!(revision_of(&Owner("x@notanumber".into())), None);
    }

    #[test]
    fn the_value_is_the_documented_json() {
        let v = Value {
            state: EntryState::Reserved,
            owner: "a.b".into(),
            until_ms: 1_700_000_000_000,
        };
        let json: serde_json::Value = serde_json::from_slice(&v.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "reserved", "owner": "a.b", "until_ms": 1_700_000_000_000i64})
        );
        let back: Value = serde_json::from_slice(&v.encode()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn scrub_hides_every_secret() {
        assert_eq!(
            scrub("bad tok3n".into(), &["tok3n".into()]).to_string(),
            "bad ***"
        );
    }
}
