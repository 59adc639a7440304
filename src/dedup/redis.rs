//! The Redis store, shared by every replica. A key (`key_prefix` + event id) holds
//! `reserved:<owner>` with a PX lease, then `committed` with a PX of the TTL; Redis expires both
//! itself, so an abandoned lease simply disappears and the next `SET NX` takes over. Commit and
//! release compare the owner inside a Lua script, so a replica whose lease was taken over cannot
//! touch the new owner's reservation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::{DedupStore, Owner, Reservation, Settled, StoreError};
use crate::config::DedupConfig;

/// A connection attempt longer than this is a dead server. Redis sits next to the bridge (one
/// network hop), so even a TLS handshake takes a few milliseconds; half a second fails fast
/// without mistaking a slow day for an outage.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// One command's answer. Our commands are O(1), so anything near this is a stalled server.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Bound on a whole store call (a reconnect plus up to three commands), kept well under the
/// default 2.5 s response budget so that the 503 is ours, with a reason, not the budget's.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

const RESERVED: &str = "reserved:";
const COMMITTED: &str = "committed";

/// Commit: replace our reservation by `committed` for the TTL, only if it is still ours.
const COMMIT_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Release: delete our reservation, only if it is still ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// See the module doc.
pub struct RedisStore {
    /// Multiplexed and cheap to clone; it reconnects on its own after an I/O error, so a Redis
    /// restart heals without restarting the bridge.
    conn: ConnectionManager,
    prefix: String,
    instance: String,
    commit: Script,
    release: Script,
    /// Redacted, for error messages.
    url: String,
    /// Strings scrubbed from every error message (the password), in case a driver echoes them.
    secrets: Vec<String>,
}

impl RedisStore {
    /// Connect to `dedup.redis.url` (with `dedup.redis.password` when set). Fails when the
    /// server cannot be reached now: a replica that starts without its store would only 503.
    pub async fn connect(cfg: &DedupConfig) -> Result<Arc<Self>, StoreError> {
        let rc = &cfg.redis;
        let url = rc.url.redacted();
        let mut secrets = Vec::new();
        // The driver's parse error can quote the URL, password included: say only which one.
        let mut info = rc.url.expose().into_connection_info().map_err(|_| {
            StoreError::Unavailable(format!(
                "{url} is not a usable Redis URL: redis://[user:password@]host[:port][/db] \
                     (this build has no TLS for rediss://)"
            ))
        })?;
        if let Some(p) = &info.redis.password {
            secrets.push(p.clone());
        }
        if let Some(p) = &rc.password {
            info.redis.password = Some(p.expose().to_string());
            secrets.push(p.expose().to_string());
        }
        let client =
            redis::Client::open(info).map_err(|e| scrub(format!("{url}: {e}"), &secrets))?;
        // No backoff retries inside the manager: its first delay is a fixed second, and a
        // failed reconnect makes every waiting call fail anyway. Instead each call after a
        // failure starts one new attempt (bounded by CONNECT_TIMEOUT); the readiness probe
        // calls every second, so a restarted Redis is picked up within about a second.
        let manager_cfg = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = tokio::time::timeout(
            OP_TIMEOUT,
            ConnectionManager::new_with_config(client, manager_cfg),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!("{url}: no connection within {OP_TIMEOUT:?}"))
        })?
        .map_err(|e| scrub(format!("{url}: {e}"), &secrets))?;
        let store = RedisStore {
            conn,
            prefix: rc.key_prefix.clone(),
            instance: super::instance_id(),
            commit: Script::new(COMMIT_LUA),
            release: Script::new(RELEASE_LUA),
            url,
            secrets,
        };
        // A wrong password or a server that is not Redis shows at start, not at the first event.
        store.check().await?;
        Ok(Arc::new(store))
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Run one store call under OP_TIMEOUT, turning driver errors into scrubbed StoreErrors.
    async fn bounded<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(scrub(
                format!("redis {op} ({}): {e}", self.url),
                &self.secrets,
            )),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis {op} ({}): no answer within {OP_TIMEOUT:?}",
                self.url
            ))),
        }
    }

    async fn reserve_inner(
        &self,
        key: &str,
        lease_ms: u64,
    ) -> redis::RedisResult<Option<Reservation>> {
        let mut conn = self.conn.clone();
        // Twice at most: the existing entry can expire between our SET NX and our GET.
        for _ in 0..2 {
            let owner = Owner::new(&self.instance);
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(format!("{RESERVED}{}", owner.0))
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(&mut conn)
                .await?;
            if set.is_some() {
                return Ok(Some(Reservation::New(owner)));
            }
            let current: Option<String> = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
            match current.as_deref() {
                Some(v) if v.starts_with(COMMITTED) => return Ok(Some(Reservation::Duplicate)),
                Some(v) if v.starts_with(RESERVED) => return Ok(Some(Reservation::InFlight)),
                Some(_) => return Ok(None),
                None => continue,
            }
        }
        // Reserved and gone twice in a row: someone is churning this id right now.
        Ok(Some(Reservation::InFlight))
    }
}

/// `msg` with every configured secret replaced by `***`, as a store error.
fn scrub(msg: String, secrets: &[String]) -> StoreError {
    StoreError::Unavailable(crate::secrets::scrub(msg, secrets))
}

/// Milliseconds for PX, at least 1 (Redis rejects `PX 0`).
fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl DedupStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn reserve(&self, id: &str, lease: Duration) -> Result<Reservation, StoreError> {
        let key = self.key(id);
        match self
            .bounded("reserve", self.reserve_inner(&key, px(lease)))
            .await?
        {
            Some(r) => Ok(r),
            None => Err(StoreError::Unavailable(format!(
                "redis reserve ({}): key {key} holds a value this bridge did not write",
                self.url
            ))),
        }
    }

    async fn commit(&self, id: &str, owner: &Owner, ttl: Duration) -> Result<Settled, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.commit.key(self.key(id));
        inv.arg(format!("{RESERVED}{}", owner.0))
            .arg(COMMITTED)
            .arg(px(ttl));
        let done: i64 = self.bounded("commit", inv.invoke_async(&mut conn)).await?;
        Ok(if done == 1 {
            Settled::Done
        } else {
            Settled::Lost
        })
    }

    async fn release(&self, id: &str, owner: &Owner) -> Result<Settled, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.release.key(self.key(id));
        inv.arg(format!("{RESERVED}{}", owner.0));
        let done: i64 = self.bounded("release", inv.invoke_async(&mut conn)).await?;
        Ok(if done == 1 {
            Settled::Done
        } else {
            Settled::Lost
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .bounded("ping", redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_every_secret() {
        let e = scrub(
            "auth failed for s3cret at redis://:s3cret@h".into(),
            &["s3cret".into(), String::new()],
        );
        assert_eq!(e.to_string(), "auth failed for *** at redis://:***@h");
    }

    #[test]
    fn px_is_never_zero() {
        assert_eq!(px(Duration::ZERO), 1);
        assert_eq!(px(Duration::from_millis(300)), 300);
        assert_eq!(px(Duration::from_secs(86_400)), 86_400_000);
    }

    #[tokio::test]
    async fn a_bad_url_never_echoes_the_password() {
        let mut cfg = DedupConfig::default();
        cfg.redis.url = crate::config::Url::new("redis://:hunter2@[bad");
        let Err(e) = RedisStore::connect(&cfg).await else {
            panic!("connected to a malformed URL")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
