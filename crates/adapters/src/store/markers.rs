//! One-time markers: that something was done once, so that it is not done again by accident.
//! Today the replayed dead letters (`<prefix>dead-letters:replayed:<partition>:<offset>`,
//! [`domain::KeySchema::replayed`]).

use std::time::Duration;

use deadpool_redis::redis::AsyncCommands as _;

use super::{timed, Pool, StoreError};

/// Markers of replayed dead letters. Cheap to clone.
#[derive(Clone)]
pub struct ReplayMarkers {
    pool: Pool,
    keys: domain::KeySchema,
    timeout: Duration,
}

impl ReplayMarkers {
    pub fn new(pool: Pool, keys: domain::KeySchema, timeout: Duration) -> Self {
        ReplayMarkers { pool, keys, timeout }
    }

    /// Marks the dead letter at `partition`/`offset` replayed by `by`: whether this call set
    /// the marker (false: it was replayed before).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn mark(&self, partition: i32, offset: i64, by: &str) -> Result<bool, StoreError> {
        let key = self.keys.replayed(partition, offset);
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let set: bool = conn.set_nx(&key, by).await?;
            Ok::<_, StoreError>(set)
        })
        .await
    }

    /// Removes the marker (the replay failed: it may be tried again).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn unmark(&self, partition: i32, offset: i64) -> Result<(), StoreError> {
        let key = self.keys.replayed(partition, offset);
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.del(&key).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }
}
