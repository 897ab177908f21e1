//! Webhook subscriptions in Redis: the records (hash `subscriptions`, announced on
//! `subscriptions:changed`), each one's delivery status, and its dead letters. The gateway's
//! admin API writes them; every consumer-api replica delivers (see `consumer-api`'s
//! `webhooks`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::AsyncCommands as _;
use crate::store::Pool;
use domain::webhooks::Subscription;
use domain::KeySchema;
use serde::{Deserialize, Serialize};

use crate::store::{query_pipeline, timed, StoreError};

/// A delivery that used up its retry budget, kept until replayed or the subscription deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = WebhookDeadLetter)]
pub struct DeadDelivery {
    /// The delivery's `webhook-id`, kept on replay.
    pub webhook_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The body as sent (filtered, projected and formatted).
    pub body: String,
    pub content_type: String,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: DateTime<Utc>,
}

/// A subscription's delivery status, as `GET /v1/subscriptions/{id}` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryStatus {
    /// Events of the output topic not yet delivered, passed over or dead-lettered (null when
    /// Kafka could not be asked).
    // Asked of Kafka (`lag`) by whoever shows the status; the store leaves it `None`.
    pub lag: Option<i64>,
    pub last_success_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub dead_letters_pending: u64,
}

/// The subscriptions in Redis. Cheap to clone.
#[derive(Clone)]
pub struct SubscriptionStore {
    pool: Pool,
    keys: KeySchema,
    timeout: Duration,
}

impl SubscriptionStore {
    pub fn new(pool: Pool, keys: KeySchema, timeout: Duration) -> Self {
        SubscriptionStore { pool, keys, timeout }
    }

    /// The channel announcing changes.
    pub fn changed_channel(&self) -> String {
        self.keys.subscriptions_changed()
    }

    /// Stores `sub` (new or changed) and announces it.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn put(&self, sub: &Subscription) -> Result<(), StoreError> {
        let json = serde_json::to_string(sub).expect("a subscription serializes");
        crate::store::put_announced(&self.pool, self.timeout, &self.keys.subscriptions(), &sub.id, json, &self.keys.subscriptions_changed()).await
    }

    /// Deletes a subscription with its status and dead letters, and announces it. Returns
    /// whether it existed.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let deleted: i64 = crate::store::announced(&mut conn, "HDEL", &self.keys.subscriptions(), &[id], &self.keys.subscriptions_changed(), id).await?;
            // Its own keys share a hash tag, not the subscriptions' slot: a second call.
            let () = conn.del(&[self.keys.subscription(id, "status"), self.keys.subscription(id, "dead"), self.keys.subscription(id, "replay")]).await?;
            Ok::<_, StoreError>(deleted == 1)
        })
        .await
    }

    /// # Errors
    /// When Redis fails or the record is not one.
    pub async fn get(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        crate::store::json_hash_field(&self.pool, &self.keys.subscriptions(), id, self.timeout, "subscription").await
    }

    /// Every subscription; a record that does not parse is logged and left out.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn all(&self) -> Result<Vec<Subscription>, StoreError> {
        // A record that does not parse delivers nothing.
        let mut subs: Vec<Subscription> = crate::store::json_hash(&self.pool, &self.keys.subscriptions(), self.timeout, "subscription").await?;
        subs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(subs)
    }

    /// Disables `id` (its receiver answered 410, or too many deliveries were dead-lettered in a
    /// row), unless it was deleted or changed meanwhile.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn disable(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        if let Some(mut sub) = self.get(id).await? {
            sub.state = domain::webhooks::SubscriptionState::Disabled;
            sub.disabled_reason = Some(reason.to_owned());
            self.put(&sub).await?;
        }
        Ok(())
    }

    /// Records a delivered event.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn delivered(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.record_attempt(id, &[("last_success_at", at.to_rfc3339()), ("consecutive_failures", "0".into())], "delivered").await
    }

    /// Records a failed attempt.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn failed(&self, id: &str, at: DateTime<Utc>, error: &str) -> Result<(), StoreError> {
        self.record_attempt(id, &[("last_error_at", at.to_rfc3339()), ("last_error", error.to_owned())], "consecutive_failures").await
    }

    /// Sets `fields` of the subscription's status and counts one more in `counter`, at once.
    async fn record_attempt(&self, id: &str, fields: &[(&str, String)], counter: &str) -> Result<(), StoreError> {
        let key = self.keys.subscription(id, "status");
        query_pipeline(&self.pool, self.timeout, deadpool_redis::redis::pipe().hset_multiple(&key, fields).ignore().hincr(&key, counter, 1).ignore()).await
    }

    /// Keeps a delivery whose retries are spent. Returns the number of dead letters the
    /// subscription had in a row (reset by a delivery).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn dead_letter(&self, id: &str, dead: &DeadDelivery) -> Result<u64, StoreError> {
        let status = self.keys.subscription(id, "status");
        let json = serde_json::to_string(dead).expect("a dead delivery serializes");
        let (_, _, in_a_row): (i64, i64, u64) = query_pipeline(
            &self.pool,
            self.timeout,
            deadpool_redis::redis::pipe()
                .atomic()
                .hset(self.keys.subscription(id, "dead"), &dead.webhook_id, json)
                .hincr(&status, "dead_lettered", 1)
                .hincr(&status, "dead_in_a_row", 1),
        )
        .await?;
        Ok(in_a_row)
    }

    /// Clears the dead-letter run after a delivery.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn clear_dead_run(&self, id: &str) -> Result<(), StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.hset(self.keys.subscription(id, "status"), "dead_in_a_row", 0).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// The status of `id`.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn status(&self, id: &str) -> Result<DeliveryStatus, StoreError> {
        let (fields, pending): (HashMap<String, String>, u64) = query_pipeline(
            &self.pool,
            self.timeout,
            deadpool_redis::redis::pipe().hgetall(self.keys.subscription(id, "status")).hlen(self.keys.subscription(id, "dead")),
        )
        .await?;
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(DeliveryStatus {
            lag: None,
            last_success_at: fields.get("last_success_at").cloned(),
            last_error_at: fields.get("last_error_at").cloned(),
            last_error: fields.get("last_error").cloned(),
            consecutive_failures: number("consecutive_failures"),
            delivered: number("delivered"),
            dead_lettered: number("dead_lettered"),
            dead_letters_pending: pending,
        })
    }

    /// The dead letters of `id`, oldest first.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn dead_letters(&self, id: &str) -> Result<Vec<DeadDelivery>, StoreError> {
        let mut dead: Vec<DeadDelivery> = crate::store::json_hash(&self.pool, &self.keys.subscription(id, "dead"), self.timeout, "webhook dead letter").await?;
        dead.sort_by(|a, b| a.failed_at.cmp(&b.failed_at).then_with(|| (a.partition, a.offset).cmp(&(b.partition, b.offset))));
        Ok(dead)
    }

    /// Asks for `ids` (all when `None`) of the dead letters of `id` to be delivered again.
    /// Returns how many were asked for.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn request_replay(&self, id: &str, ids: Option<&[String]>) -> Result<usize, StoreError> {
        let present: Vec<String> = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            Ok::<_, StoreError>(conn.hkeys(self.keys.subscription(id, "dead")).await?)
        })
        .await?;
        let chosen: Vec<String> = match ids {
            Some(ids) => ids.iter().filter(|i| present.contains(i)).cloned().collect(),
            None => present,
        };
        if chosen.is_empty() {
            return Ok(0);
        }
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let chosen: Vec<&str> = chosen.iter().map(String::as_str).collect();
            let _: i64 = crate::store::announced(&mut conn, "SADD", &self.keys.subscription(id, "replay"), &chosen, &self.keys.subscriptions_changed(), id).await?;
            Ok::<_, StoreError>(())
        })
        .await?;
        Ok(chosen.len())
    }

    /// The dead letters of `id` asked to be replayed, once this replica holds the subscription's
    /// replay lock (for `hold`): one replica replays at a time. Empty when none are asked for or
    /// another replica holds the lock.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn take_replays(&self, id: &str, owner: &str, hold: Duration) -> Result<Vec<DeadDelivery>, StoreError> {
        let replay = self.keys.subscription(id, "replay");
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let wanted: Vec<String> = conn.smembers(&replay).await?;
            if wanted.is_empty() {
                return Ok(Vec::new());
            }
            if !crate::store::set_nx_px(&mut conn, &self.keys.subscription(id, "replay-lock"), owner, hold).await? {
                return Ok(Vec::new());
            }
            let raw: Vec<Option<String>> = conn.hget(self.keys.subscription(id, "dead"), &wanted).await?;
            let mut out = Vec::new();
            for (webhook_id, json) in wanted.iter().zip(raw) {
                match json.and_then(|j| serde_json::from_str::<DeadDelivery>(&j).ok()) {
                    Some(d) => out.push(d),
                    // Gone meanwhile (deleted): nothing to replay.
                    None => {
                        let () = conn.srem(&replay, webhook_id).await?;
                    }
                }
            }
            out.sort_by_key(|d| (d.partition, d.offset));
            Ok::<_, StoreError>(out)
        })
        .await
    }

    /// A replayed dead letter was delivered (or dead-lettered again, `again`): it leaves the
    /// replay set, and the dead letters unless it failed again.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn replayed(&self, id: &str, dead: &DeadDelivery, again: Option<&DeadDelivery>) -> Result<(), StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let mut pipe = deadpool_redis::redis::pipe();
            pipe.atomic().srem(self.keys.subscription(id, "replay"), &dead.webhook_id).ignore();
            match again {
                Some(d) => pipe.hset(self.keys.subscription(id, "dead"), &d.webhook_id, serde_json::to_string(d).expect("serializes")).ignore(),
                None => pipe.hdel(self.keys.subscription(id, "dead"), &dead.webhook_id).ignore(),
            };
            let () = pipe.query_async(&mut conn).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Lets another replica replay.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn release_replay_lock(&self, id: &str) -> Result<(), StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.del(self.keys.subscription(id, "replay-lock")).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }
}

