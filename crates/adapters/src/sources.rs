//! Source configurations in Redis, and the catalog every service keeps of them.
//!
//! Configs live in the Redis hash `<prefix>sources` (source name → JSON). [`SourceStore`] reads
//! and writes it; [`SourceCatalog`] holds the compiled configs in memory and re-reads the hash
//! every `sources.refresh_ms`, so a change made at run time reaches every service without a
//! restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use deadpool_redis::redis::AsyncCommands;
use crate::store::Pool;
use domain::{CompiledSource, KeySchema, SourceConfig};
use serde::Deserialize;

use crate::shutdown::CancellationToken;
use crate::store::{invoke, timed, StoreError};

/// Reads and writes source configs in Redis.
#[derive(Clone)]
pub struct SourceStore {
    pool: Pool,
    keys: KeySchema,
    timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    sources: Vec<SourceConfig>,
}

impl SourceStore {
    pub fn new(pool: Pool, keys: KeySchema, timeout: Duration) -> Self {
        SourceStore { pool, keys, timeout }
    }

    /// Writes each config of the seed file whose source has none in Redis yet (`HSETNX`).
    /// Returns how many were written.
    ///
    /// # Errors
    /// When the file cannot be read, a config in it does not compile, or Redis fails.
    pub async fn seed_from_file(&self, path: &Path) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading source seed file {}", path.display()))?;
        // Not through the `config` crate: it lowercases keys and splits them on dots, and
        // operation params hold field paths as keys (`cast: {fields: {payload.n: int}}`).
        let seed: SeedFile =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for config in &seed.sources {
            if let Err(errors) = CompiledSource::compile(config.clone()) {
                let list: Vec<_> = errors.iter().map(ToString::to_string).collect();
                anyhow::bail!("{}: source `{}`: {}", path.display(), config.source, list.join("; "));
            }
        }
        let mut written = 0;
        for config in &seed.sources {
            if self.put_if_absent(config).await? {
                tracing::info!(source = %config.source, "seeded source config");
                written += 1;
            }
        }
        Ok(written)
    }

    /// Stores a config unless its source already has one. Returns whether it was written.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn put_if_absent(&self, config: &SourceConfig) -> Result<bool, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let written: bool =
                conn.hset_nx(self.keys.sources(), config.source.as_str(), config.to_json()).await?;
            Ok::<_, StoreError>(written)
        })
        .await
    }

    /// The channel on which every change of a source config is announced (payload: the source).
    pub fn changes_channel(&self) -> String {
        self.keys.sources_changed()
    }

    /// The stored config of `source`, if any.
    ///
    /// # Errors
    /// When Redis fails or the stored JSON is not a config.
    pub async fn get(&self, source: &str) -> Result<Option<SourceConfig>, StoreError> {
        let raw: Option<String> = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let raw: Option<String> = conn.hget(self.keys.sources(), source).await?;
            Ok::<_, StoreError>(raw)
        })
        .await?;
        raw.map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("source `{source}`: {e}"))))
            .transpose()
    }

    /// Stores `config` with the next version, unless `expected` is given and differs from the
    /// stored version (0 when absent). Announces the change on [`SourceStore::changes_channel`].
    /// Atomic: one Lua script.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn put(&self, config: &SourceConfig, expected: Option<u64>) -> Result<Versioned, StoreError> {
        let mut body = serde_json::to_value(config).expect("a SourceConfig serializes");
        body.as_object_mut().expect("an object").remove("version");
        let (written, version): (i64, u64) = invoke(
            &self.pool,
            self.timeout,
            PUT_SCRIPT
                .key(self.keys.sources())
                .arg(config.source.as_str())
                .arg(body.to_string())
                .arg(expected.map(|v| v.to_string()).unwrap_or_default())
                .arg(self.changes_channel()),
        )
        .await?;
        Ok(if written == 1 { Versioned::Done(version) } else { Versioned::Conflict(version) })
    }

    /// Deletes the config of `source`, unless `expected` differs from its version.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn delete(&self, source: &str, expected: Option<u64>) -> Result<Option<Versioned>, StoreError> {
        let (deleted, version): (i64, u64) = invoke(
            &self.pool,
            self.timeout,
            DELETE_SCRIPT
                .key(self.keys.sources())
                .arg(source)
                .arg(expected.map(|v| v.to_string()).unwrap_or_default())
                .arg(self.changes_channel()),
        )
        .await?;
        Ok(match deleted {
            1 => Some(Versioned::Done(version)),
            0 => Some(Versioned::Conflict(version)),
            _ => None,
        })
    }

    /// Every stored config, as raw JSON by source name.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn load_all(&self) -> Result<HashMap<String, String>, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let all: HashMap<String, String> = conn.hgetall(self.keys.sources()).await?;
            Ok::<_, StoreError>(all)
        })
        .await
    }
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioned {
    /// Written; the version now stored.
    Done(u64),
    /// Not written: the stored version is another one.
    Conflict(u64),
}

/// Compare-and-set of one config: the stored version must equal ARGV[3] (when given; 0 when
/// absent); the new JSON is ARGV[2] without its version, which the script appends.
static PUT_SCRIPT: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local curv = 0
if cur then curv = tonumber(cjson.decode(cur)['version']) or 0 end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= curv then return {0, curv} end
local newv = curv + 1
local body = string.sub(ARGV[2], 1, -2)
local sep = ','
if body == '{' then sep = '' end
redis.call('HSET', KEYS[1], ARGV[1], body .. sep .. '"version":' .. newv .. '}')
redis.call('PUBLISH', ARGV[4], ARGV[1])
return {1, newv}
"#,
    )
});

static DELETE_SCRIPT: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {-1, 0} end
local curv = tonumber(cjson.decode(cur)['version']) or 0
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= curv then return {0, curv} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {1, curv}
"#,
    )
});

/// The compiled configs of every source, refreshed from Redis.
pub struct SourceCatalog {
    store: SourceStore,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    sources: RwLock<Option<HashMap<String, Arc<CompiledSource>>>>,
    /// The config applied to sources that have none (`sources.unknown: default`).
    fallback: Option<String>,
}

impl SourceCatalog {
    pub fn new(store: SourceStore, fallback: Option<String>) -> Arc<Self> {
        Arc::new(SourceCatalog { store, metrics: None, sources: RwLock::new(None), fallback })
    }

    pub fn store(&self) -> &SourceStore {
        &self.store
    }

    /// The config that applies to events of `source`: its own, or the default config when the
    /// unknown-source policy is `default`.
    pub fn resolve(&self, source: &str) -> Option<Arc<CompiledSource>> {
        self.get(source).or_else(|| self.fallback.as_deref().and_then(|f| self.get(f)))
    }

    /// The compiled config of `source`, if it has a valid one.
    pub fn get(&self, source: &str) -> Option<Arc<CompiledSource>> {
        self.sources.read().expect("catalog lock").as_ref()?.get(source).cloned()
    }

    /// The sources whose configuration is of `kind`, by name.
    pub fn of_kind(&self, kind: domain::source::SourceKind) -> Vec<String> {
        let sources = self.sources.read().expect("catalog lock");
        let mut names: Vec<String> = sources.iter().flatten().filter(|(_, c)| c.config().kind == kind).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// Whether configs have been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.sources.read().expect("catalog lock").is_some()
    }

    /// Re-reads every config from Redis. Configs whose version is unchanged are kept as
    /// compiled; a config that does not compile is logged and its previous version kept.
    ///
    /// # Errors
    /// When Redis fails; the catalog then keeps what it had.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let raw = self.store.load_all().await?;
        let old = self.sources.read().expect("catalog lock").clone().unwrap_or_default();
        let mut next = HashMap::with_capacity(raw.len());
        for (name, json) in raw {
            let parsed = serde_json::from_str::<SourceConfig>(&json).map_err(|e| vec![e.to_string()]);
            let compiled = parsed.and_then(|config| {
                if let Some(current) = old.get(&name).filter(|c| c.config() == &config) {
                    return Ok(current.clone());
                }
                CompiledSource::compile(config)
                    .map(Arc::new)
                    .map_err(|errs| errs.iter().map(ToString::to_string).collect())
            });
            match compiled {
                Ok(c) => {
                    if old.get(&name).is_none_or(|o| o.version() != c.version()) {
                        tracing::info!(source = %name, version = c.version(), "source config loaded");
                        if let Some(m) = &self.metrics {
                            m.config_reloads.add(1, &[]);
                        }
                    }
                    next.insert(name, c);
                }
                Err(errors) => {
                    tracing::error!(source = %name, errors = ?errors, "invalid source config in redis; keeping the previous one");
                    if let Some(previous) = old.get(&name) {
                        next.insert(name, previous.clone());
                    }
                }
            }
        }
        *self.sources.write().expect("catalog lock") = Some(next);
        Ok(())
    }
}

impl SourceCatalog {
    /// Seeds Redis from `sources.seed_file`, loads the catalog and keeps it refreshed until
    /// `shutdown`. If Redis is unreachable now, seeding and loading are retried in the
    /// background (the catalog reports [`SourceCatalog::is_loaded`] false meanwhile).
    ///
    /// # Errors
    /// When the seed file is missing or invalid: that is a deployment error, not a transient one.
    pub async fn start(
        settings: &crate::Settings,
        pool: Pool,
        shutdown: CancellationToken,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Arc<SourceCatalog>> {
        let store = SourceStore::new(pool, KeySchema::new(&settings.redis.key_prefix), settings.redis.timeout());
        let fallback = match settings.sources.unknown {
            crate::settings::UnknownSourcePolicy::Reject => None,
            crate::settings::UnknownSourcePolicy::Default => Some(settings.sources.default_config.clone()),
        };
        let catalog = Arc::new(SourceCatalog { store: store.clone(), metrics: Some(metrics.clone()), sources: RwLock::new(None), fallback });
        let weak = Arc::downgrade(&catalog);
        metrics.gauge("metastream_source_config_version", "The config version each source runs with", move || {
            let Some(c) = weak.upgrade() else { return Vec::new() };
            let sources = c.sources.read().expect("catalog lock");
            sources
                .iter()
                .flat_map(|m| m.iter())
                .map(|(name, s)| (s.version() as i64, vec![opentelemetry::KeyValue::new("source", name.clone())]))
                .collect()
        });
        let seed_file = settings.sources.seed_file.clone();
        let first = async {
            store.seed_from_file(&seed_file).await?;
            catalog.refresh().await?;
            anyhow::Ok(())
        };
        match first.await {
            Ok(()) => {}
            Err(err) if err.downcast_ref::<StoreError>().is_some() => {
                tracing::warn!(error = %err, "redis unavailable at start; seeding and loading source configs in the background");
                let (store, catalog, shutdown) = (store.clone(), catalog.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let mut backoff = crate::retry::Backoff::infra();
                    while !shutdown.is_cancelled() {
                        tokio::time::sleep(backoff.next_delay()).await;
                        match store.seed_from_file(&seed_file).await {
                            Ok(_) => {
                                let _ = catalog.refresh().await;
                                return;
                            }
                            Err(err) => tracing::warn!(error = %err, "seeding source configs failed; retrying"),
                        }
                    }
                });
            }
            Err(err) => return Err(err),
        }
        let reloaded = catalog.clone();
        crate::store::spawn_reloader(
            settings.redis.seeds(),
            store.changes_channel(),
            Duration::from_millis(settings.sources.refresh_ms),
            shutdown,
            "source configs",
            move || {
                let catalog = reloaded.clone();
                async move { catalog.refresh().await }
            },
        );
        Ok(catalog)
    }
}
