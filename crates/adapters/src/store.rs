//! The Redis pool, and a deadline around every Redis call so a stuck Redis becomes an error
//! the caller can retry, not a hang.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::settings::RedisSettings;

/// A pool of multiplexed Redis connections. Accepts `redis://` and `rediss://` URLs.
///
/// # Errors
/// When the URL cannot be parsed.
pub fn pool(r: &RedisSettings) -> anyhow::Result<Pool> {
    let mut cfg = Config::from_url(r.url.expose());
    let mut pool_cfg = PoolConfig::new(r.pool_size);
    pool_cfg.timeouts = Timeouts {
        wait: Some(r.timeout()),
        create: Some(r.timeout()),
        recycle: Some(r.timeout()),
    };
    cfg.pool = Some(pool_cfg);
    cfg.create_pool(Some(Runtime::Tokio1)).context("creating Redis pool (check redis.url)")
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no redis connection: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
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

/// Redis' `run_id`: changes when the server restarts.
///
/// # Errors
/// When Redis does not answer.
pub async fn run_id(pool: &Pool, timeout: Duration) -> Result<String, StoreError> {
    timed(timeout, async {
        let mut conn = pool.get().await?;
        let info: String = deadpool_redis::redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        let id = info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap_or_default().trim().to_owned();
        Ok::<_, StoreError>(id)
    })
    .await
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
}

/// The processed records in Redis (`processed:<source>:<id>`): the one place that knows their
/// keys and commands. Every call has the store's deadline and is timed in
/// `metastream_redis_command_duration_seconds`. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    pool: Pool,
    keys: domain::KeySchema,
    timeout: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// Writes each record unless the store already holds a newer update of the entity: one from
/// the same ingest partition with a higher offset (every update of an entity goes to one
/// partition, so its offsets order them). A redelivered or stale update never overwrites a
/// newer one. ARGV holds partition, offset, record per key. Returns how many were stale.
///
/// Records start with their ingest position ([`domain::Event::to_record`]), read with an
/// anchored match; a record stored in another form is parsed (`cjson`, about 5 µs for 1 KB of
/// Redis' single thread, per write).
static WRITE_NEWEST: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        r#"
local stale = 0
for i = 1, #KEYS do
  local partition = tonumber(ARGV[3 * i - 2])
  local offset = tonumber(ARGV[3 * i - 1])
  local current = redis.call('GET', KEYS[i])
  local newer = false
  if current then
    local p, o = string.match(current, '^{"provenance":{"ingest_partition":(%-?%d+),"ingest_offset":(%-?%d+)')
    if p then
      newer = tonumber(p) == partition and tonumber(o) > offset
    else
      local ok, doc = pcall(cjson.decode, current)
      local prov = ok and doc['provenance'] or nil
      if prov and prov['ingest_partition'] == partition and prov['ingest_offset'] and prov['ingest_offset'] > offset then
        newer = true
      end
    end
  end
  if newer then stale = stale + 1 else redis.call('SET', KEYS[i], ARGV[3 * i]) end
end
return stale
"#,
    )
});

impl Records {
    pub fn new(pool: Pool, keys: domain::KeySchema, timeout: Duration, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Records { pool, keys, timeout, metrics }
    }

    /// Writes every record in one call, each only if it is the entity's newest update so far
    /// (see the script above). Returns how many were older than what the store holds.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time: nothing or part may be written, and the
    /// call is safe to repeat.
    pub async fn write_newest(&self, records: &[NewRecord]) -> Result<i64, StoreError> {
        let started = std::time::Instant::now();
        let result = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let mut invocation = WRITE_NEWEST.prepare_invoke();
            for r in records {
                invocation.key(self.keys.processed(&r.source, &r.id)).arg(r.partition).arg(r.offset).arg(&r.value);
            }
            let stale: i64 = invocation.invoke_async(&mut conn).await?;
            Ok::<_, StoreError>(stale)
        })
        .await;
        self.metrics.redis("store_records", started, &result);
        result
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
