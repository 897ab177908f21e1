//! Hashes every replica keeps a view of (sources, API keys, subscriptions): a change is written
//! and announced on a pub/sub channel in one script, and [`spawn_reloader`] keeps each replica's
//! view current.

use std::future::Future;
use std::time::Duration;

use deadpool_redis::redis::RedisError;

use super::{timed, Connection, Pool, StoreError};

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

/// The JSON record in `field` of the hash `key`, `None` when there is none; `what` names it in
/// the error when it does not parse.
///
/// # Errors
/// When Redis fails or does not answer in time, or the record is not one.
pub async fn json_hash_field<T: serde::de::DeserializeOwned>(pool: &Pool, key: &str, field: &str, timeout: Duration, what: &str) -> Result<Option<T>, StoreError> {
    use deadpool_redis::redis::AsyncCommands as _;
    let raw: Option<String> = timed(timeout, async {
        let mut conn = pool.get().await?;
        Ok::<_, StoreError>(conn.hget(key, field).await?)
    })
    .await?;
    raw.map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("{what} `{field}`: {e}")))).transpose()
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
