//! Redis: the one home of every key family's commands and scripts. Services hold only their
//! decisions; the keys come from [`domain::KeySchema`].
//!
//! - this module: the pool, and a deadline around every Redis call so a stuck Redis becomes an
//!   error the caller can retry, not a hang; the server's `run_id`;
//! - [`records`]: the processed records (`processed:{<source>:<id>}`, `ingested:…`);
//! - [`announced`]: hashes every replica keeps a view of (sources, keys, subscriptions), changed
//!   with a pub/sub announcement, and the reloader that follows them;
//! - [`idempotency`]: the gateway's `Idempotency-Key` claims and answers (`idempotency:<key>`);
//! - [`markers`]: one-time markers (`dead-letters:replayed:<partition>:<offset>`);
//! - [`positions`]: where each consumer-api group is (`consume:{<group>}:…`), its leases and lock;
//! - [`pulse`]: every instance's readiness and metrics samples (`pulse:instances`, `pulse:samples`).

pub mod announced;
pub mod idempotency;
pub mod markers;
pub mod positions;
pub mod pulse;
pub mod records;

pub use announced::{announced, json_hash, json_hash_field, put_announced, spawn_reloader};
pub use records::{NewRecord, Records, Written};

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};

use crate::settings::RedisSettings;

/// Pooled Redis connections (deadpool, with the [`Manager`] below).
pub type Pool = managed::Pool<Manager, Connection>;
pub type PoolError = managed::PoolError<RedisError>;

/// A connection that answered within this long needs no check before its next use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A pool of multiplexed connections to one Redis (`redis://`, `rediss://`, `unix://`), or, with
/// `redis.cluster`, to a Redis Cluster found through the seed nodes `redis.urls` (the redis
/// crate's cluster client routes each command by its key's slot and follows `MOVED`/`ASK`
/// after a failover or a resharding).
///
/// # Errors
/// When a URL cannot be parsed.
pub fn pool(r: &RedisSettings) -> anyhow::Result<Pool> {
    let manager = if r.cluster {
        Manager::Cluster(deadpool_redis::cluster::Manager::new(r.seeds(), false).context("creating Redis Cluster pool (check redis.urls)")?)
    } else {
        Manager::Single(deadpool_redis::Manager::new(r.url.expose()).context("creating Redis pool (check redis.url)")?)
    };
    let mut config = PoolConfig::new(r.pool_size);
    config.timeouts = Timeouts { wait: Some(r.timeout()), create: Some(r.timeout()), recycle: Some(r.timeout()) };
    Pool::builder(manager).config(config).runtime(Runtime::Tokio1).build().context("creating Redis pool")
}

/// deadpool-redis' managers check every connection with a `PING` each time it leaves the pool:
/// a second round trip for every Redis call. This one checks only a connection that may be
/// unwell — a call on it failed on the connection or never finished (timed out), or it sat idle
/// for [`CHECK_IDLE_AFTER`] — and otherwise hands it out as it is.
pub enum Manager {
    Single(deadpool_redis::Manager),
    Cluster(deadpool_redis::cluster::Manager),
}

/// A connection to one Redis, or a cluster client's connection to every node of a cluster.
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

pub struct Pooled {
    conn: Conn,
    /// A call on it failed on the connection, or is (or was, when dropped) unfinished.
    suspect: bool,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        let conn = match self {
            Manager::Single(m) => Conn::Single(managed::Manager::create(m).await?),
            Manager::Cluster(m) => Conn::Cluster(managed::Manager::create(m).await?),
        };
        Ok(Pooled { conn, suspect: false })
    }

    async fn recycle(&self, pooled: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        if !pooled.suspect && metrics.last_used() < CHECK_IDLE_AFTER {
            return Ok(());
        }
        match (self, &mut pooled.conn) {
            (Manager::Single(m), Conn::Single(c)) => managed::Manager::recycle(m, c, metrics).await?,
            (Manager::Cluster(m), Conn::Cluster(c)) => managed::Manager::recycle(m, c, metrics).await?,
            _ => unreachable!("a pool's connections come from its own manager"),
        }
        pooled.suspect = false;
        Ok(())
    }
}

/// A connection taken from the [`Pool`]; back in the pool when dropped.
pub struct Connection(managed::Object<Manager>);

impl From<managed::Object<Manager>> for Connection {
    fn from(object: managed::Object<Manager>) -> Self {
        Connection(object)
    }
}

impl Connection {
    /// In cluster mode, a handle on the cluster connection for calls sent side by side (each
    /// to its key's node; calls to one node share its connection, pipelined).
    pub fn cluster(&self) -> Option<ClusterConnection> {
        match &self.0.conn {
            Conn::Cluster(c) => Some(c.clone()),
            Conn::Single(_) => None,
        }
    }

    /// Runs `call` on the connection, marking it suspect until the call returns well.
    async fn call<'a, T>(&'a mut self, call: impl FnOnce(&'a mut Conn) -> RedisFuture<'a, T>) -> Result<T, RedisError> {
        let pooled = &mut *self.0;
        pooled.suspect = true;
        let result = call(&mut pooled.conn).await;
        pooled.suspect = unwell(&result);
        result
    }
}

/// Whether a call's result leaves its connection in doubt.
fn unwell<T>(result: &Result<T, RedisError>) -> bool {
    matches!(result, Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error())
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.call(move |conn| match conn {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }))
    }

    fn req_packed_commands<'a>(&'a mut self, cmd: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.call(move |conn| match conn {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }))
    }

    fn get_db(&self) -> i64 {
        match &self.0.conn {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no redis connection: {0}")]
    Pool(#[from] PoolError),
    #[error("redis: {0}")]
    Redis(#[from] deadpool_redis::redis::RedisError),
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

/// Runs a Redis call with a deadline.
///
/// # Errors
/// The call's error, or [`StoreError::Timeout`].
pub async fn timed<T, E>(timeout: Duration, fut: impl Future<Output = Result<T, E>>) -> Result<T, StoreError>
where
    StoreError: From<E>,
{
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// Runs a prepared script on a connection of the pool, with a deadline.
///
/// # Errors
/// When Redis fails or does not answer in time.
pub async fn invoke<T: deadpool_redis::redis::FromRedisValue>(
    pool: &Pool,
    timeout: Duration,
    invocation: &deadpool_redis::redis::ScriptInvocation<'_>,
) -> Result<T, StoreError> {
    timed(timeout, async {
        let mut conn = pool.get().await?;
        Ok::<_, StoreError>(invocation.invoke_async(&mut conn).await?)
    })
    .await
}

/// Sends a pipeline on a connection of the pool, with a deadline.
///
/// # Errors
/// When Redis fails or does not answer in time.
pub async fn query_pipeline<T: deadpool_redis::redis::FromRedisValue>(pool: &Pool, timeout: Duration, pipeline: &Pipeline) -> Result<T, StoreError> {
    timed(timeout, async {
        let mut conn = pool.get().await?;
        Ok::<_, StoreError>(pipeline.query_async(&mut conn).await?)
    })
    .await
}

/// `PING`s Redis through the pool.
///
/// # Errors
/// When Redis does not answer.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), StoreError> {
    timed(timeout, async {
        let mut conn = pool.get().await?;
        deadpool_redis::redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, StoreError>(())
    })
    .await
}

/// Redis' `run_id`, which changes when the server restarts. In cluster mode, the `run_id`s of
/// every master, sorted and joined: it changes also when a replica is promoted in a failover
/// (or a master restarts), since the new master has its own.
///
/// # Errors
/// When Redis (any master) does not answer.
pub async fn run_id(pool: &Pool, timeout: Duration) -> Result<String, StoreError> {
    timed(timeout, async {
        let mut conn = pool.get().await?;
        // One node: the text; a cluster: the text of each master, by address.
        let info: Value = deadpool_redis::redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        Ok::<_, StoreError>(run_ids(&info))
    })
    .await
}

/// The `run_id:` lines of every `INFO` text in `info`, sorted and joined with `,`.
fn run_ids(info: &Value) -> String {
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::BulkString(b) => out.extend(String::from_utf8_lossy(b).lines().filter_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_owned())),
            Value::VerbatimString { text, .. } | Value::SimpleString(text) => {
                out.extend(text.lines().filter_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_owned()));
            }
            Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| collect(i, out)),
            Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect(v, out)),
            _ => {}
        }
    }
    let mut ids = Vec::new();
    collect(info, &mut ids);
    ids.sort();
    ids.join(",")
}

/// `SET key value NX PX ttl`: whether this call set the key (a claim, a lock).
///
/// # Errors
/// When Redis fails.
pub async fn set_nx_px(conn: &mut Connection, key: &str, value: &str, ttl: Duration) -> Result<bool, RedisError> {
    let set: Option<String> = deadpool_redis::redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}

/// The Redis pool's connections by state (`metastream_redis_pool_connections`), and consumer lag.
pub fn register_pool_gauge(metrics: &std::sync::Arc<crate::metrics::Metrics>, pool: &Pool) {
    let pool = pool.clone();
    metrics.gauge("metastream_redis_pool_connections", "Redis pool connections by state", move || {
        let status = pool.status();
        let idle = status.available as i64;
        vec![
            (status.size as i64 - idle, vec![opentelemetry::KeyValue::new("state", "in_use")]),
            (idle, vec![opentelemetry::KeyValue::new("state", "idle")]),
        ]
    });
    metrics.register_lag_gauge();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(run_id: &str) -> Value {
        Value::BulkString(format!("# Server\r\nredis_version:7.0.15\r\nrun_id:{run_id}\r\ntcp_port:7001\r\n").into_bytes())
    }

    #[test]
    fn one_redis_has_its_run_id() {
        assert_eq!(run_ids(&info("abc")), "abc");
    }

    #[test]
    fn a_cluster_has_every_masters_run_id_and_a_promoted_replica_changes_it() {
        let masters = |ids: [&str; 3]| {
            Value::Map(ids.iter().enumerate().map(|(i, id)| (Value::SimpleString(format!("127.0.0.1:700{i}")), info(id))).collect())
        };
        let before = run_ids(&masters(["b", "a", "c"]));
        assert_eq!(before, "a,b,c", "sorted: the order the nodes answer in does not matter");
        assert_eq!(run_ids(&masters(["c", "b", "a"])), before);
        // The master with run_id `a` died; its replica `r` took over its slots.
        assert_ne!(run_ids(&masters(["b", "r", "c"])), before);
    }
}
