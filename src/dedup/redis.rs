//! The Redis store, shared by every replica. A key (`key_prefix` + event id) holds
//! `reserved:<owner>` with a PX lease, then `committed` with a PX of the TTL; Redis expires both
//! itself, so an abandoned lease simply disappears and the next `SET NX` takes over. Commit and
//! release compare the owner inside a Lua script, so a replica whose lease was taken over cannot
//! touch the new owner's reservation.
//!
//! One server, a Redis Cluster or a Sentinel-managed master (`dedup.redis.mode`), over TCP or
//! TLS. Every command and script touches one key, so a cluster routes each to the key's slot.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, ConnectionInfo, IntoConnectionInfo, RedisFuture,
    Script, TlsCertificates, TlsMode,
};

use super::{DedupStore, Owner, Reservation, Settled, StoreError};
use crate::config::{DedupConfig, RedisDedupConfig, RedisMode, Url};

/// A connection attempt longer than this is a dead server. Redis sits next to the bridge (one
/// network hop), so even a TLS handshake takes a few milliseconds; half a second fails fast
/// without mistaking a slow day for an outage.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// One command's answer. Our commands are O(1), so anything near this is a stalled server.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Bound on a whole store call (a reconnect or a sentinel lookup plus up to three commands),
/// kept well under the default 2.5 s response budget so that the 503 is ours, with a reason,
/// not the budget's.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Cluster: retries of one command inside the driver. A MOVED redirect (after a failover or a
/// resharding) costs one; a dead master costs the rest quickly, then the call fails (503) and
/// the driver refreshes its slot map, so a promoted replica is found within a call or two.
const CLUSTER_RETRIES: u32 = 2;
/// Cluster: wait before a retry (CLUSTERDOWN, TRYAGAIN), in ms; short, for the same budget.
const CLUSTER_RETRY_WAIT_MS: u64 = 50;

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
    link: Link,
    prefix: String,
    instance: String,
    commit: Script,
    release: Script,
    /// Redacted, for error messages: the mode and the URLs dialled first.
    url: String,
    /// Strings scrubbed from every error message (the password), in case a driver echoes them.
    secrets: Vec<String>,
}

/// How the store reaches Redis. Each keeps reconnecting by itself, so a restart or a failover
/// heals without restarting the bridge.
enum Link {
    /// Multiplexed and cheap to clone; it reconnects after an I/O error.
    Standalone(ConnectionManager),
    /// The driver keeps a slot map and a connection per node, refreshed on MOVED and on
    /// connection errors.
    Cluster(ClusterConnection),
    /// Boxed: the sentinel client is large and built once.
    Sentinel(Box<SentinelLink>),
}

/// The master the sentinels name. The connection is dropped after any failed call, and the
/// next call asks the sentinels again: after a failover that is the promoted replica, and an
/// old master that came back as a replica (READONLY) is left the same way.
struct SentinelLink {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelLink {
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another call may have connected while this one waited for the lock.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let conn = sentinels
            .get_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn forget(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Link {
    /// A handle for one store call.
    async fn handle(&self) -> redis::RedisResult<Handle> {
        Ok(match self {
            Link::Standalone(c) => Handle::Manager(c.clone()),
            Link::Cluster(c) => Handle::Cluster(c.clone()),
            Link::Sentinel(s) => Handle::Multiplexed(s.connection().await?),
        })
    }

    /// A call failed or timed out.
    fn failed(&self) {
        if let Link::Sentinel(s) = self {
            s.forget();
        }
    }
}

/// One connection of whichever kind, so that commands and scripts are written once.
enum Handle {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
    Multiplexed(MultiplexedConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Handle::Manager(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
            Handle::Multiplexed(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Handle::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Manager(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
            Handle::Multiplexed(c) => c.get_db(),
        }
    }
}

/// Parse one configured URL; the driver's error can quote the URL, password included, so say
/// only which one.
fn parse(url: &Url, key: &str) -> Result<ConnectionInfo, StoreError> {
    url.expose().into_connection_info().map_err(|_| {
        StoreError::Unavailable(format!(
            "{key}: {} is not a usable Redis URL: redis[s]://[user:password@]host[:port][/db]",
            url.redacted()
        ))
    })
}

/// The driver's TLS settings for `rc`, when it has files to add to the defaults (system roots,
/// no client certificate).
fn certificates(rc: &RedisDedupConfig) -> Result<Option<TlsCertificates>, StoreError> {
    if !rc.tls() {
        return Ok(None);
    }
    let files = rc
        .tls_files()
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    if files.ca.is_none() && files.client.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls: files
            .client
            .map(|(client_cert, client_key)| ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: files.ca,
    }))
}

/// Open the link `rc.mode` asks for (no timeout of its own: the caller bounds it).
async fn open(
    rc: &RedisDedupConfig,
    mut infos: Vec<ConnectionInfo>,
    password: Option<String>,
    certs: Option<TlsCertificates>,
    fail: impl Fn(redis::RedisError) -> StoreError + Copy,
) -> Result<Link, StoreError> {
    match rc.mode {
        RedisMode::Standalone => {
            let mut info = infos.remove(0);
            if let Some(p) = &password {
                info.redis.password = Some(p.clone());
            }
            let client = match &certs {
                Some(c) => redis::Client::build_with_tls(info, c.clone()),
                None => redis::Client::open(info),
            }
            .map_err(fail)?;
            // No backoff retries inside the manager: its first delay is a fixed second,
            // and a failed reconnect makes every waiting call fail anyway. Instead each
            // call after a failure starts one new attempt (bounded by CONNECT_TIMEOUT);
            // the readiness probe calls every second, so a restarted Redis is picked up
            // within about a second.
            let manager_cfg = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT);
            let conn = ConnectionManager::new_with_config(client, manager_cfg)
                .await
                .map_err(fail)?;
            Ok(Link::Standalone(conn))
        }
        RedisMode::Cluster => {
            let mut b = ClusterClientBuilder::new(infos)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(CLUSTER_RETRY_WAIT_MS)
                .max_retry_wait(CLUSTER_RETRY_WAIT_MS * 2)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT);
            if let Some(p) = &password {
                b = b.password(p.clone());
            }
            if let Some(c) = &certs {
                b = b.certs(c.clone());
            }
            let conn = b
                .build()
                .map_err(fail)?
                .get_async_connection()
                .await
                .map_err(fail)?;
            Ok(Link::Cluster(conn))
        }
        RedisMode::Sentinel => {
            let tls = rc.tls();
            // Each sentinel's own password rides in its URL's user-info.
            let sentinel_password = infos.iter().find_map(|i| i.redis.password.clone());
            let addrs = infos.into_iter().map(|i| i.addr);
            let mut b = SentinelClientBuilder::new(
                addrs,
                rc.master_name.clone(),
                SentinelServerType::Master,
            )
            .map_err(fail)?;
            if let Some(p) = &password {
                b = b.set_client_to_redis_password(p.clone());
            }
            if let Some(p) = sentinel_password {
                b = b.set_client_to_sentinel_password(p);
            }
            if tls {
                b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
            }
            if let Some(c) = &certs {
                b = b
                    .set_client_to_redis_certificates(c.clone())
                    .set_client_to_sentinel_certificates(c.clone());
            }
            let sentinels = b.build().map_err(fail)?;
            let link = SentinelLink {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: Mutex::new(None),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT),
            };
            link.connection().await.map_err(fail)?;
            Ok(Link::Sentinel(Box::new(link)))
        }
    }
}

impl RedisStore {
    /// Connect as `dedup.redis` says (with `dedup.redis.password` when set). Fails when Redis
    /// cannot be reached now: a replica that starts without its store would only 503.
    pub async fn connect(cfg: &DedupConfig) -> Result<Arc<Self>, StoreError> {
        let rc = &cfg.redis;
        let key = rc.entry_key();
        let entries = rc.entry_urls();
        let url = format!(
            "{} {}",
            rc.mode.as_str(),
            entries
                .iter()
                .map(|u| u.redacted())
                .collect::<Vec<_>>()
                .join(",")
        );
        let infos = entries
            .iter()
            .map(|u| parse(u, key))
            .collect::<Result<Vec<_>, _>>()?;
        let mut secrets: Vec<String> = infos
            .iter()
            .filter_map(|i| i.redis.password.clone())
            .collect();
        let password = rc.password.as_ref().map(|p| p.expose().to_string());
        secrets.extend(password.clone());
        let certs = certificates(rc)?;
        let fail = |e: redis::RedisError| scrub(format!("{url}: {e}"), &secrets);
        let link = open(rc, infos, password, certs, fail);
        let link = tokio::time::timeout(OP_TIMEOUT, link).await.map_err(|_| {
            StoreError::Unavailable(format!("{url}: no connection within {OP_TIMEOUT:?}"))
        })??;
        let store = RedisStore {
            link,
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

    /// Run one store call on a fresh handle under OP_TIMEOUT, turning driver errors into
    /// scrubbed StoreErrors.
    async fn bounded<T, F, Fut>(&self, op: &str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let fut = async { call(self.link.handle().await?).await };
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.link.failed();
                Err(scrub(
                    format!("redis {op} ({}): {e}", self.url),
                    &self.secrets,
                ))
            }
            Err(_) => {
                self.link.failed();
                Err(StoreError::Unavailable(format!(
                    "redis {op} ({}): no answer within {OP_TIMEOUT:?}",
                    self.url
                )))
            }
        }
    }

    async fn reserve_inner(
        &self,
        mut conn: Handle,
        key: &str,
        lease_ms: u64,
    ) -> redis::RedisResult<Option<Reservation>> {
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
            .bounded("reserve", |h| self.reserve_inner(h, &key, px(lease)))
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
        let mut inv = self.commit.key(self.key(id));
        inv.arg(format!("{RESERVED}{}", owner.0))
            .arg(COMMITTED)
            .arg(px(ttl));
        let done: i64 = self
            .bounded(
                "commit",
                |mut h| async move { inv.invoke_async(&mut h).await },
            )
            .await?;
        Ok(if done == 1 {
            Settled::Done
        } else {
            Settled::Lost
        })
    }

    async fn release(&self, id: &str, owner: &Owner) -> Result<Settled, StoreError> {
        let mut inv = self.release.key(self.key(id));
        inv.arg(format!("{RESERVED}{}", owner.0));
        let done: i64 = self
            .bounded(
                "release",
                |mut h| async move { inv.invoke_async(&mut h).await },
            )
            .await?;
        Ok(if done == 1 {
            Settled::Done
        } else {
            Settled::Lost
        })
    }

    async fn check(&self) -> Result<(), StoreError> {
        // In a cluster every master owns slots, so every master must answer; a replica that
        // is down costs nothing (and a dead node that was failed over is no master any more).
        let _: redis::Value = self
            .bounded("ping", |h| async move {
                match h {
                    Handle::Cluster(mut c) => {
                        c.route_command(
                            &redis::cmd("PING"),
                            RoutingInfo::MultiNode((
                                MultipleNodeRoutingInfo::AllMasters,
                                Some(ResponsePolicy::AllSucceeded),
                            )),
                        )
                        .await
                    }
                    mut h => redis::cmd("PING").query_async(&mut h).await,
                }
            })
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
