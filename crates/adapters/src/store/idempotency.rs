//! The gateway's `Idempotency-Key` records (`<prefix>idempotency:<key>`, [`domain::KeySchema`]):
//! claimed with `SET NX PX` while the request is in flight, overwritten with the answer for the
//! window, deleted after a failure. What the records hold is the gateway's decision
//! (`gateway::idempotency`); this is how they are kept.

use std::time::Duration;

use deadpool_redis::redis::AsyncCommands as _;

use super::{timed, Pool, StoreError};

/// The `Idempotency-Key` records. Cheap to clone.
#[derive(Clone)]
pub struct Claims {
    pool: Pool,
    keys: domain::KeySchema,
    timeout: Duration,
}

impl Claims {
    pub fn new(pool: Pool, keys: domain::KeySchema, timeout: Duration) -> Self {
        Claims { pool, keys, timeout }
    }

    /// The Redis key of the client's `key` (already scoped by the caller).
    pub fn key(&self, key: &str) -> String {
        self.keys.idempotency(key)
    }

    /// Claims `redis_key` with `pending` for `hold`: `None` when the claim is this call's,
    /// else the record that holds the key. A claim that expires between the two calls is claimed
    /// again rather than compared with nothing.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn claim(&self, redis_key: &str, pending: &str, hold: Duration) -> Result<Option<String>, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            loop {
                if super::set_nx_px(&mut conn, redis_key, pending, hold).await? {
                    return Ok::<_, StoreError>(None);
                }
                if let Some(current) = conn.get::<_, Option<String>>(redis_key).await? {
                    return Ok(Some(current));
                }
            }
        })
        .await
    }

    /// Replaces the claim with the answer `record`, kept for `window`.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn complete(&self, redis_key: &str, record: String, window: Duration) -> Result<(), StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.set_ex(redis_key, record, window.as_secs().max(1)).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Frees the key (after a failure, so the client's retry can go ahead).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn release(&self, redis_key: &str) -> Result<(), StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.del(redis_key).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }
}
