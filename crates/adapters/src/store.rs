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
