//! The Redis pool, and a deadline around every Redis call so a stuck Redis becomes an error
//! the caller can retry, not a hang.

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

/// A processed record to store, with the ingest position that orders the entity's updates.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub source: domain::SourceName,
    pub id: domain::EventId,
    /// Where the update was assigned at ingest: the store keeps the highest offset per entity.
    pub partition: i32,
    pub offset: i64,
    /// The record as stored (`Event::to_record`).
    pub value: Vec<u8>,
    /// The client's `Idempotency-Key`, when the request had one.
    pub idempotency_key: Option<String>,
}

/// What [`Records::write_newest`] did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored: the entity's newest update so far.
    Stored,
    /// Not stored: the store holds a newer update of the entity (a redelivery); still an
    /// update to publish, in order.
    Stale,
    /// Not stored, not to publish: a second copy of a keyed request — a client's retry whose
    /// first answer was lost — at another ingest position than the first.
    Duplicate,
}

/// The processed records in Redis (`processed:{<source>:<id>}`): the one place that knows their
/// keys and commands. Every call has the store's deadline and is timed in
/// `metastream_redis_command_duration_seconds`. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    pool: Pool,
    keys: domain::KeySchema,
    timeout: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// How long the first position of a keyed request is remembered.
    dedupe_window: Duration,
}

/// For each record (KEYS[2i-1] its key, KEYS[2i] the `ingested:<idempotency-key>` key or its
/// own key again; ARGV partition, offset, record, whether it is keyed; the last ARGV the dedupe
/// window in seconds): a keyed record whose request was first ingested at another position is
/// a duplicate (2); otherwise it is written unless the store already holds a newer update of
/// the entity — one from the same ingest partition with a higher offset (1, stale) — else 0.
/// Every update of an entity goes to one partition, so its offsets order them: a redelivered or
/// stale update never overwrites a newer one.
///
/// Records start with their ingest position ([`domain::Event::to_record`]), read with an
/// anchored match; a record stored in another form is parsed (`cjson`, about 5 µs for 1 KB of
/// Redis' single thread, per write).
static WRITE_NEWEST: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        r#"
local window = tonumber(ARGV[#ARGV])
local result = {}
for i = 1, #KEYS / 2 do
  local key = KEYS[2 * i - 1]
  local partition = tonumber(ARGV[4 * i - 3])
  local offset = tonumber(ARGV[4 * i - 2])
  local code = 0
  if ARGV[4 * i] == '1' then
    local position = ARGV[4 * i - 3] .. ':' .. ARGV[4 * i - 2]
    local first = redis.call('GET', KEYS[2 * i])
    if first and first ~= position then
      code = 2
    elseif not first then
      redis.call('SET', KEYS[2 * i], position, 'EX', window)
    end
  end
  if code == 0 then
    local current = redis.call('GET', key)
    if current then
      local p, o = string.match(current, '^{"provenance":{"ingest_partition":(%-?%d+),"ingest_offset":(%-?%d+)')
      if p then
        if tonumber(p) == partition and tonumber(o) > offset then code = 1 end
      else
        local ok, doc = pcall(cjson.decode, current)
        local prov = ok and doc['provenance'] or nil
        if prov and prov['ingest_partition'] == partition and prov['ingest_offset'] and prov['ingest_offset'] > offset then
          code = 1
        end
      end
    end
    if code == 0 then redis.call('SET', key, ARGV[4 * i - 1]) end
  end
  result[i] = code
end
return result
"#,
    )
});

impl Records {
    pub fn new(pool: Pool, keys: domain::KeySchema, timeout: Duration, metrics: std::sync::Arc<crate::metrics::Metrics>, dedupe_window: Duration) -> Self {
        Records { pool, keys, timeout, metrics, dedupe_window }
    }

    /// Writes every record in one call, each only if it is the entity's newest update so far
    /// and not a second copy of a keyed request (see the script above). Returns what became of
    /// each, in order.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time: nothing or part may be written, and the
    /// call is safe to repeat.
    pub async fn write_newest(&self, records: &[NewRecord]) -> Result<Vec<Written>, StoreError> {
        let started = std::time::Instant::now();
        let result = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            match conn.cluster() {
                None => Ok::<_, StoreError>(self.write_script(records.iter()).invoke_async(&mut conn).await?),
                Some(cluster) => self.write_per_entity(cluster, records).await,
            }
        })
        .await;
        self.metrics.redis("store_records", started, &result);
        let codes = result?;
        Ok(codes
            .into_iter()
            .map(|c| match c {
                1 => Written::Stale,
                2 => Written::Duplicate,
                _ => Written::Stored,
            })
            .collect())
    }

    /// One call of [`WRITE_NEWEST`] writing `records`.
    fn write_script<'r>(&self, records: impl Iterator<Item = &'r NewRecord>) -> deadpool_redis::redis::ScriptInvocation<'static> {
        let mut invocation = WRITE_NEWEST.prepare_invoke();
        for r in records {
            let key = self.keys.processed(&r.source, &r.id);
            let dedupe = r.idempotency_key.as_deref().map(|k| self.keys.ingested(&r.source, &r.id, k));
            invocation.key(&key).key(dedupe.as_deref().unwrap_or(&key));
            invocation.arg(r.partition).arg(r.offset).arg(&r.value).arg(if dedupe.is_some() { "1" } else { "0" });
        }
        invocation.arg(self.dedupe_window.as_secs().max(1));
        invocation
    }

    /// Cluster mode: a script may touch one slot only, so the batch is written one entity at a
    /// time (an entity's keys share its hash tag; its updates stay in order, in one call), every
    /// entity's call sent at once — the cluster client sends each to its node, and the calls to
    /// one node go down its connection pipelined.
    async fn write_per_entity(&self, cluster: ClusterConnection, records: &[NewRecord]) -> Result<Vec<i64>, StoreError> {
        let mut entities: Vec<Vec<usize>> = Vec::new();
        let mut index: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
        for (i, r) in records.iter().enumerate() {
            let entity = *index.entry((r.source.as_str(), r.id.as_str())).or_insert_with(|| {
                entities.push(Vec::new());
                entities.len() - 1
            });
            entities[entity].push(i);
        }
        let calls = entities.iter().map(|members| {
            let mut conn = cluster.clone();
            let invocation = self.write_script(members.iter().map(|&i| &records[i]));
            async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await }
        });
        let answers = futures_util::future::try_join_all(calls).await?;
        let mut codes = vec![0; records.len()];
        for (members, answer) in entities.iter().zip(answers) {
            if answer.len() != members.len() {
                return Err(StoreError::Corrupt(format!("store_records answered {} codes for {} records", answer.len(), members.len())));
            }
            for (&i, code) in members.iter().zip(answer) {
                codes[i] = code;
            }
        }
        Ok(codes)
    }

    /// The records of `entities`, in order (`None` where there is none), in one round trip.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn get_many(&self, entities: &[(domain::SourceName, domain::EventId)]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if entities.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = entities.iter().map(|(source, id)| self.keys.processed(source, id)).collect();
        let started = std::time::Instant::now();
        let result = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let values: Vec<Option<Vec<u8>>> = deadpool_redis::redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            Ok::<_, StoreError>(values)
        })
        .await;
        self.metrics.redis("mget", started, &result);
        result
    }

    /// The record of one entity.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn get(&self, source: &domain::SourceName, id: &domain::EventId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.keys.processed(source, id);
        let started = std::time::Instant::now();
        let result = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let value: Option<Vec<u8>> = deadpool_redis::redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            Ok::<_, StoreError>(value)
        })
        .await;
        self.metrics.redis("get", started, &result);
        result
    }
}

/// Sets `field` of the hash `key` to `json` and announces `field` on the pub/sub `channel`, in
/// one script: every replica's [`spawn_reloader`] reloads at once.
///
/// # Errors
/// When Redis fails or does not answer in time.
pub async fn put_announced(pool: &Pool, timeout: Duration, key: &str, field: &str, json: String, channel: &str) -> Result<(), StoreError> {
    timed(timeout, async {
        let mut conn = pool.get().await?;
        let _: i64 = announced(&mut conn, "HSET", key, &[field, &json], channel, field).await?;
        Ok::<_, StoreError>(())
    })
    .await
}

/// `redis.call(ARGV[1], KEYS[1], ARGV[4], …)`, then `PUBLISH ARGV[2] ARGV[3]`; returns the first
/// call's answer.
static ANNOUNCED: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new("local r = redis.call(ARGV[1], KEYS[1], unpack(ARGV, 4)) redis.call('PUBLISH', ARGV[2], ARGV[3]) return r")
});

/// Runs `command key args…` and publishes `message` on `channel`, atomically, and answers what
/// the command answered. A script rather than a transaction: a cluster client routes a
/// transaction by every name in it, the channel's too, and refuses one whose channel hashes to
/// another slot than its key; a script publishes on any channel from the key's node (a cluster
/// forwards every `PUBLISH` to every node).
///
/// # Errors
/// When Redis fails.
pub async fn announced<T: deadpool_redis::redis::FromRedisValue>(
    conn: &mut Connection,
    command: &str,
    key: &str,
    args: &[&str],
    channel: &str,
    message: &str,
) -> Result<T, RedisError> {
    let mut invocation = ANNOUNCED.key(key);
    invocation.arg(command).arg(channel).arg(message);
    for a in args {
        invocation.arg(*a);
    }
    invocation.invoke_async(conn).await
}

/// Every value of the hash `key`, parsed as JSON. A value that does not parse is logged at ERROR
/// (naming `what` and its field) and left out, so one bad record does not hide the others.
///
/// # Errors
/// When Redis fails or does not answer in time.
pub async fn json_hash<T: serde::de::DeserializeOwned>(pool: &Pool, key: &str, timeout: Duration, what: &str) -> Result<Vec<T>, StoreError> {
    use deadpool_redis::redis::AsyncCommands as _;
    let raw: std::collections::HashMap<String, String> = timed(timeout, async {
        let mut conn = pool.get().await?;
        Ok::<_, StoreError>(conn.hgetall(key).await?)
    })
    .await?;
    Ok(raw
        .into_iter()
        .filter_map(|(field, json)| match serde_json::from_str(&json) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::error!(what, field = %field, error = %err, "unreadable record in redis; left out");
                None
            }
        })
        .collect())
}

/// Keeps an in-memory view of something in Redis current until `shutdown`: calls `reload` at
/// once, whenever a message arrives on `channel` (pub/sub, so a change reaches every replica
/// within milliseconds), after each resubscription (what was announced meanwhile), and every
/// `interval` (heals a missed message). `what` names the view in logs. A failed reload keeps
/// the previous view.
///
/// `seeds` are [`RedisSettings::seeds`]: the one Redis, or a cluster's seed nodes — it
/// subscribes on one of them (a cluster forwards every `PUBLISH` to every node) and moves on
/// to the next when that one fails.
pub fn spawn_reloader<F, Fut>(seeds: Vec<String>, channel: String, interval: Duration, shutdown: crate::shutdown::CancellationToken, what: &'static str, reload: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    use futures_util::StreamExt as _;
    let reload = std::sync::Arc::new(reload);
    let periodic = reload.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = periodic().await {
                tracing::warn!(error = %err, what, "periodic reload failed; keeping the cached view");
            }
        }
    });
    tokio::spawn(async move {
        let mut backoff = crate::retry::Backoff::infra();
        let mut seeds = seeds.iter().cycle();
        while !shutdown.is_cancelled() {
            let Some(url) = seeds.next() else { return };
            let subscribed = async {
                let client = deadpool_redis::redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, deadpool_redis::redis::RedisError>(pubsub)
            };
            let mut pubsub = match subscribed.await {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(error = %err, what, "subscribing to changes failed; retrying");
                    if crate::retry::pause(&mut backoff, &shutdown).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            backoff = crate::retry::Backoff::infra();
            // Anything announced while we were not subscribed.
            let _ = reload().await;
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    msg = messages.next() => match msg {
                        Some(msg) => {
                            tracing::debug!(what, changed = msg.get_payload::<String>().unwrap_or_default(), "change announced");
                            if let Err(err) = reload().await {
                                tracing::warn!(error = %err, what, "reload after a change failed; the periodic one retries");
                            }
                        }
                        None => break,
                    }
                }
            }
            tracing::warn!(what, "change subscription lost; resubscribing");
        }
    });
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
