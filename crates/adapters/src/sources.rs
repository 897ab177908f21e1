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
use deadpool_redis::Pool;
use domain::{CompiledSource, KeySchema, SourceConfig};
use serde::Deserialize;

use crate::shutdown::CancellationToken;
use crate::store::{timed, StoreError};

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
        let seed: SeedFile = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
            .build()
            .and_then(config::Config::try_deserialize)
            .with_context(|| format!("parsing {}", path.display()))?;
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

/// The compiled configs of every source, refreshed from Redis.
pub struct SourceCatalog {
    store: SourceStore,
    sources: RwLock<Option<HashMap<String, Arc<CompiledSource>>>>,
}

impl SourceCatalog {
    pub fn new(store: SourceStore) -> Arc<Self> {
        Arc::new(SourceCatalog { store, sources: RwLock::new(None) })
    }

    /// The compiled config of `source`, if it has a valid one.
    pub fn get(&self, source: &str) -> Option<Arc<CompiledSource>> {
        self.sources.read().expect("catalog lock").as_ref()?.get(source).cloned()
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

    /// Refreshes every `interval` until `shutdown` is cancelled.
    pub fn spawn_refresh(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let catalog = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(err) = catalog.refresh().await {
                    tracing::warn!(error = %err, "refreshing source configs failed; keeping the cached ones");
                }
            }
        })
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
    ) -> anyhow::Result<Arc<SourceCatalog>> {
        let store = SourceStore::new(pool, KeySchema::new(&settings.redis.key_prefix), settings.redis.timeout());
        let catalog = SourceCatalog::new(store.clone());
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
        catalog.spawn_refresh(Duration::from_millis(settings.sources.refresh_ms), shutdown);
        Ok(catalog)
    }
}
