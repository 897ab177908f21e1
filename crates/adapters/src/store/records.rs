//! The processed records in Redis: the one place that knows their keys and commands.

use std::time::Duration;

use deadpool_redis::redis::cluster_async::ClusterConnection;

use super::{timed, Pool, StoreError};

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
