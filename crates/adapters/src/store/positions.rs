//! Where each API group is, in Redis, so that any consumer-api replica serves any call of any
//! group (no sticky sessions, nothing kept in one replica's memory).
//!
//! Per group `G` (keys hash-tagged `{G}`, one slot):
//! - `consume:{G}:pos`: partition → the next offset to hand out;
//! - `consume:{G}:leases`: lease id → `{"owner", "deadline_ms", "ranges": [[partition, from, to]…]}`,
//!   an answer handed out and not yet acknowledged, and `last:<owner>` → the owner's latest lease;
//! - `consume:{G}:lock`: held by the one call that reads positions, fetches and hands out (calls
//!   of one group are serialized across replicas, so two clients never get the same events).
//!
//! A lease is acknowledged by the owner's next call (implicitly), or explicitly by its cursor
//! (`GET /consume?cursor=`, `POST /consume/ack`). A lease not acknowledged by its deadline
//! (`consumer_api.ack_timeout_ms`) is handed out again: the group's position moves back to its
//! start. Delivery is at least once.

use std::collections::HashMap;
use std::time::Duration;

use super::{timed, StoreError};
use deadpool_redis::redis::AsyncCommands as _;
use super::Pool;
use serde::{Deserialize, Serialize};

/// An answer handed out and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub deadline_ms: i64,
    /// `[partition, from, to)`: the offsets the answer covered (filtered-out events included).
    pub ranges: Vec<(i32, i64, i64)>,
}

/// A group's state as one call reads it under the lock.
#[derive(Debug, Default)]
pub struct GroupState {
    pub positions: HashMap<i32, i64>,
    pub leases: HashMap<String, Lease>,
}

impl GroupState {
    /// Moves the position back to the start of every lease past its deadline and forgets those
    /// leases; returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self.leases.iter().filter(|(_, l)| l.deadline_ms <= now_ms).map(|(id, _)| id.clone()).collect();
        for id in &expired {
            if let Some(lease) = self.leases.remove(id) {
                for (p, from, _) in lease.ranges {
                    let pos = self.positions.entry(p).or_insert(from);
                    *pos = (*pos).min(from);
                }
            }
        }
        expired
    }
}

#[derive(Clone)]
pub struct GroupStore {
    pool: Pool,
    keys: domain::KeySchema,
    timeout: Duration,
}

impl GroupStore {
    pub fn new(pool: Pool, keys: domain::KeySchema, timeout: Duration) -> Self {
        GroupStore { pool, keys, timeout }
    }

    fn key(&self, group: &str, what: &str) -> String {
        self.keys.consume_group(group, what)
    }

    /// Takes the group's lock for `ttl`, retrying until `until`. Returns whether it was taken.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn lock(&self, group: &str, token: &str, ttl: Duration, until: tokio::time::Instant) -> Result<bool, StoreError> {
        let key = self.key(group, "lock");
        loop {
            let taken: bool = timed(self.timeout, async {
                let mut conn = self.pool.get().await?;
                Ok::<_, StoreError>(super::set_nx_px(&mut conn, &key, token, ttl).await?)
            })
            .await?;
            if taken {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Releases the lock if this call still holds it.
    pub async fn unlock(&self, group: &str, token: &str) {
        let key = self.key(group, "lock");
        let _ = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = UNLOCK.key(key).arg(token).invoke_async(&mut conn).await?;
            Ok::<_, StoreError>(())
        })
        .await;
    }

    /// Takes the group's lock for `ttl` (retrying until `until`) and reads its state, in one
    /// round trip: `None` when the lock was not taken.
    ///
    /// # Errors
    /// When Redis fails or holds something unreadable.
    pub async fn lock_and_load(&self, group: &str, token: &str, ttl: Duration, until: tokio::time::Instant) -> Result<Option<(GroupState, HashMap<String, String>)>, StoreError> {
        loop {
            let loaded: Option<(HashMap<String, String>, HashMap<String, String>)> = timed(self.timeout, async {
                let mut conn = self.pool.get().await?;
                let r = LOCK_AND_LOAD
                    .key(self.key(group, "lock"))
                    .key(self.key(group, "pos"))
                    .key(self.key(group, "leases"))
                    .arg(token)
                    .arg(ttl.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await?;
                Ok::<_, StoreError>(r)
            })
            .await?;
            if let Some((pos, leases)) = loaded {
                let pos = pos
                    .into_iter()
                    .map(|(p, o)| o.parse().map(|o| (p, o)).map_err(|_| StoreError::Corrupt(format!("group {group}: offset `{o}`"))))
                    .collect::<Result<_, _>>()?;
                return Self::parse(group, pos, leases).map(Some);
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// # Errors
    /// When Redis fails or holds something unreadable.
    pub async fn load(&self, group: &str) -> Result<(GroupState, HashMap<String, String>), StoreError> {
        let (pos, leases): (HashMap<String, i64>, HashMap<String, String>) = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let r = deadpool_redis::redis::pipe()
                .hgetall(self.key(group, "pos"))
                .hgetall(self.key(group, "leases"))
                .query_async(&mut conn)
                .await?;
            Ok::<_, StoreError>(r)
        })
        .await?;
        Self::parse(group, pos, leases)
    }

    fn parse(group: &str, pos: HashMap<String, i64>, leases: HashMap<String, String>) -> Result<(GroupState, HashMap<String, String>), StoreError> {
        let mut state = GroupState::default();
        for (p, o) in pos {
            state.positions.insert(p.parse().map_err(|_| StoreError::Corrupt(format!("group {group}: partition `{p}`")))?, o);
        }
        let mut last = HashMap::new();
        for (id, json) in leases {
            if let Some(owner) = id.strip_prefix("last:") {
                last.insert(owner.to_owned(), json);
            } else {
                let lease = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("group {group}: lease {id}: {e}")))?;
                state.leases.insert(id, lease);
            }
        }
        Ok((state, last))
    }

    /// Writes what one call changed — positions, the new lease (and its owner's latest), the
    /// leases it acknowledged or expired — and releases the group's lock, in one round trip, only
    /// while `token` still holds the lock: `false` (nothing written) when the call outlived its
    /// hold and another may have taken the group since.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn save_and_unlock(&self, group: &str, token: &str, positions: &HashMap<i32, i64>, new: Option<(&str, &Lease)>, gone: &[String]) -> Result<bool, StoreError> {
        let mut invocation = SAVE_AND_UNLOCK.key(self.key(group, "lock"));
        invocation.key(self.key(group, "pos")).key(self.key(group, "leases")).arg(token).arg(positions.len());
        for (p, o) in positions {
            invocation.arg(p).arg(o);
        }
        invocation.arg(gone.len()).arg(gone);
        if let Some((id, lease)) = new {
            invocation.arg(id).arg(serde_json::to_string(lease).expect("a lease serializes")).arg(format!("last:{}", lease.owner));
        }
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let saved: bool = invocation.invoke_async(&mut conn).await?;
            Ok::<_, StoreError>(saved)
        })
        .await
    }

    /// Puts the group at `positions` and forgets its unacknowledged answers (under its lock).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn reset(&self, group: &str, positions: &HashMap<i32, i64>) -> Result<(), StoreError> {
        let items: Vec<(String, i64)> = positions.iter().map(|(p, o)| (p.to_string(), *o)).collect();
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let mut pipe = deadpool_redis::redis::pipe();
            pipe.atomic().del(self.key(group, "leases")).ignore().del(self.key(group, "pos")).ignore();
            if !items.is_empty() {
                pipe.hset_multiple(self.key(group, "pos"), &items).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Resumes a stream: the group goes on from `positions` (where a client's last received event
    /// left it) and forgets what `owner` (the client's previous connection) was handed.
    ///
    /// Done under the lock `token` holds, and releases it (`false`: it no longer held it).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn resume(&self, group: &str, token: &str, owner: &str, positions: &HashMap<i32, i64>) -> Result<bool, StoreError> {
        let (state, _) = self.load(group).await?;
        let mut gone: Vec<String> = state.leases.iter().filter(|(_, l)| l.owner == owner).map(|(id, _)| id.clone()).collect();
        gone.push(format!("last:{owner}"));
        self.save_and_unlock(group, token, positions, None, &gone).await
    }

    /// Marks the stream connection `owner` as taken over: it may still be running on some replica
    /// (its client is gone, its server has not noticed yet), and must take nothing more. Done
    /// before waiting for the group's lock, which that connection may be taking again and again.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn supersede(&self, group: &str, owner: &str) -> Result<(), StoreError> {
        let key = self.key(group, &format!("superseded:{owner}"));
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.set_ex(key, 1, 3600).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Whether a resumed stream took over from the connection `owner`.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn is_superseded(&self, group: &str, owner: &str) -> Result<bool, StoreError> {
        let key = self.key(group, &format!("superseded:{owner}"));
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            Ok::<_, StoreError>(conn.exists(key).await?)
        })
        .await
    }

    /// Acknowledges a lease (no lock needed: one atomic delete). Returns whether it was there.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn ack(&self, group: &str, lease_id: &str) -> Result<bool, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let n: i64 = conn.hdel(self.key(group, "leases"), lease_id).await?;
            Ok::<_, StoreError>(n == 1)
        })
        .await
    }

    /// The deployment's cursor-signing secret, made on first use (tamper evidence for cursors,
    /// shared by every replica; it authenticates nothing).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn cursor_secret(&self) -> Result<String, StoreError> {
        let key = self.keys.consume_cursor_secret();
        let candidate = format!("{:032x}{:032x}", rand_u128(), rand_u128());
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let _: bool = conn.set_nx(&key, &candidate).await?;
            let secret: String = conn.get(&key).await?;
            Ok::<_, StoreError>(secret)
        })
        .await
    }
}

fn rand_u128() -> u128 {
    u128::from(uuid::Uuid::new_v4().as_u64_pair().0) << 64 | u128::from(uuid::Uuid::new_v4().as_u64_pair().1)
}

static UNLOCK: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0")
});

/// KEYS: lock, pos, leases; ARGV: token, ttl (ms). The group's positions and leases (flat
/// field/value arrays), or nil when another call holds the lock.
static LOCK_AND_LOAD: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end \
         return {redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}",
    )
});

/// KEYS: lock, pos, leases; ARGV: token, n, n × (partition, offset), m, m × gone lease field,
/// then optionally the new lease's id, its JSON and its owner's `last:` field. 1 when saved (and
/// the lock released), 0 when `token` no longer holds the lock.
static SAVE_AND_UNLOCK: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
          local i = 2
          local n = tonumber(ARGV[i]); i = i + 1
          for _ = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
          n = tonumber(ARGV[i]); i = i + 1
          for _ = 1, n do redis.call('HDEL', KEYS[3], ARGV[i]); i = i + 1 end
          if ARGV[i] then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i]) end
          redis.call('DEL', KEYS[1])
          return 1",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_lease_moves_the_position_back_to_its_start() {
        let mut state = GroupState::default();
        state.positions.insert(0, 50);
        state.positions.insert(1, 7);
        state.leases.insert("a".into(), Lease { owner: "k".into(), deadline_ms: 100, ranges: vec![(0, 40, 50)] });
        state.leases.insert("b".into(), Lease { owner: "k".into(), deadline_ms: 300, ranges: vec![(1, 5, 7)] });
        assert_eq!(state.expire(200), vec!["a".to_owned()]);
        assert_eq!(state.positions[&0], 40);
        assert_eq!(state.positions[&1], 7);
        assert!(state.leases.contains_key("b"));
    }
}
