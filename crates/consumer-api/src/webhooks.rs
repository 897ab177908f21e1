//! Webhook delivery (Standard Webhooks 1.0). Every consumer-api replica runs, for each active
//! subscription, a Kafka consumer in the subscription's group (`webhooks.group_prefix` + id):
//! Kafka shares the output topic's partitions among the replicas, so delivery scales with them
//! and survives any one of them.
//!
//! Per partition, events are delivered one at a time, in order (an entity's updates keep their
//! order); partitions go concurrently. An event's offset is stored for commit once it is
//! delivered (2xx), passed over by the filter, or kept as a dead letter — so a crash delivers
//! again what was not (at least once; the `webhook-id` is the same, the receiver's idempotency
//! key). Failures are retried with capped exponential backoff and jitter, or after the
//! receiver's `Retry-After`; after `webhooks.max_attempts` the event becomes one of the
//! subscription's dead letters (listed and replayed through the admin API). 410 Gone disables
//! the subscription, leaving its position on the event that got the 410.
//!
//! Subscriptions are reloaded on `subscriptions:changed` (pub/sub) and periodically; a changed
//! subscription (URL, filter, projection, format, secret) applies from the next attempt.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::kafka::{Commits, GroupConsumer};
use adapters::settings::{KafkaSettings, WebhookSettings};
use adapters::shutdown::CancellationToken;
use adapters::webhooks::{DeadDelivery, SubscriptionStore};
use chrono::Utc;
use domain::projection::Projection;
use domain::webhooks::{parse_retry_after, signature_header, Subscription, SubscriptionState, Verdict};
use domain::Condition;
use opentelemetry::KeyValue;
use adapters::kafka::message::{Message as _, OwnedMessage};
use serde_json::{json, Value};
use tokio::sync::watch;

/// The webhook deliveries of this replica.
pub(crate) struct Webhooks {
    store: SubscriptionStore,
    settings: WebhookSettings,
    kafka: KafkaSettings,
    topic: String,
    /// The server secret webhook secrets derive from (`auth.key_secret`); none: no deliveries.
    server_secret: Option<Vec<u8>>,
    http: reqwest::Client,
    metrics: Arc<adapters::metrics::Metrics>,
    running: Mutex<HashMap<String, Running>>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

struct Running {
    sub: watch::Sender<Subscription>,
    stop: CancellationToken,
}

/// What became of one event.
enum Outcome {
    /// Delivered, passed over by the filter, or dead-lettered: its offset may be committed.
    Done,
    /// The subscription is disabled or this worker stopping: nothing after it on the partition.
    Stop,
}

/// How a delivery's attempts ended.
enum Attempts {
    Delivered,
    Gone,
    Exhausted { attempts: u32, last_error: String },
    Stopped,
}

/// A subscription with its filter and projection compiled.
struct Prepared {
    sub: Subscription,
    filter: Option<Condition>,
    projection: Option<Projection>,
}

impl Prepared {
    fn new(sub: Subscription) -> Self {
        // The admin API checked both; a record that no longer compiles delivers unfiltered
        // rather than nothing (logged).
        let filter = sub.filter.as_ref().and_then(|f| match Condition::compile(f) {
            Ok(c) => Some(c),
            Err(_) => {
                tracing::error!(subscription = %sub.id, "the subscription's filter does not compile; delivering unfiltered");
                None
            }
        });
        let projection = sub.fields.as_deref().and_then(|f| Projection::parse(f).ok());
        Prepared { sub, filter, projection }
    }
}

impl Webhooks {
    pub fn start(settings: &adapters::Settings, pool: adapters::store::Pool, metrics: Arc<adapters::metrics::Metrics>, shutdown: CancellationToken) -> Arc<Self> {
        let store = SubscriptionStore::new(pool, domain::KeySchema::new(&settings.redis.key_prefix), settings.redis.timeout());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.webhooks.timeout_ms))
            .user_agent(concat!("metastream-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        let mut kafka = settings.kafka.clone();
        // An event being retried holds its partition (and this consumer's poll) for up to every
        // attempt and backoff: the group must not think the member dead meanwhile.
        let w = &settings.webhooks;
        let worst = u64::from(w.max_attempts) * (w.timeout_ms + w.backoff_max_ms.max(domain::webhooks::RetryPolicy::MAX_RETRY_AFTER.as_millis() as u64));
        kafka.consumer_properties.entry("max.poll.interval.ms".into()).or_insert_with(|| worst.clamp(300_000, 86_400_000).to_string());
        let server_secret = settings.auth.key_secret.as_ref().map(|s| s.expose().as_bytes().to_vec()).filter(|s| !s.is_empty());
        let webhooks = Arc::new(Webhooks {
            store,
            settings: settings.webhooks.clone(),
            kafka,
            topic: settings.kafka.topics.output.clone(),
            server_secret,
            http,
            metrics,
            running: Mutex::new(HashMap::new()),
            shutdown: shutdown.clone(),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        if webhooks.server_secret.is_none() {
            tracing::warn!("no auth.key_secret: webhook subscriptions are not delivered");
            return webhooks;
        }
        let reconciler = webhooks.clone();
        adapters::store::spawn_reloader(
            settings.redis.seeds(),
            webhooks.store.changed_channel(),
            Duration::from_millis(settings.sources.refresh_ms),
            shutdown,
            "webhook subscriptions",
            move || {
                let w = reconciler.clone();
                async move { w.reconcile().await }
            },
        );
        webhooks
    }

    /// Waits for every delivery worker to have committed and left its group.
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Starts a worker for each active subscription, hands changed ones their new record, stops
    /// the others.
    async fn reconcile(self: &Arc<Self>) -> Result<(), adapters::store::StoreError> {
        let subs = self.store.all().await?;
        let mut running = self.running.lock().expect("webhooks lock");
        let active: HashMap<&str, &Subscription> = subs.iter().filter(|s| s.state == SubscriptionState::Active).map(|s| (s.id.as_str(), s)).collect();
        running.retain(|id, r| {
            // A worker that ended by itself (its subscription was disabled from within) is
            // started again below if the subscription is active once more.
            let keep = active.contains_key(id.as_str()) && !r.sub.is_closed();
            if !keep {
                tracing::info!(subscription = %id, "subscription disabled or deleted: stopping its deliveries here");
                r.stop.cancel();
            }
            keep
        });
        for (id, sub) in active {
            match running.get(id) {
                Some(r) => {
                    r.sub.send_if_modified(|current| {
                        let changed = current != sub;
                        if changed {
                            *current = sub.clone();
                        }
                        changed
                    });
                }
                None if !self.shutdown.is_cancelled() => {
                    let (tx, rx) = watch::channel(sub.clone());
                    let stop = self.shutdown.child_token();
                    self.tasks.spawn(self.clone().deliver(rx, stop.clone()));
                    running.insert(id.to_owned(), Running { sub: tx, stop });
                }
                None => {}
            }
        }
        Ok(())
    }

    /// One subscription's deliveries on this replica, until it is stopped.
    async fn deliver(self: Arc<Self>, mut sub: watch::Receiver<Subscription>, stop: CancellationToken) {
        let id = sub.borrow().id.clone();
        let group = format!("{}{}", self.settings.group_prefix, id);
        let consumer = loop {
            match adapters::kafka::consumer(&self.kafka, &group, &[&self.topic], None, Commits::StoredEvery(Duration::from_secs(1)), None, None) {
                Ok(c) => break c,
                Err(err) => {
                    tracing::warn!(subscription = %id, error = %format!("{err:#}"), "creating the subscription's consumer failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        tracing::info!(subscription = %id, group, "delivering webhooks");
        let mut prepared = Prepared::new(sub.borrow_and_update().clone());
        let mut replays = tokio::time::interval(Duration::from_secs(1));
        replays.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => break,
                _ = replays.tick() => {
                    self.replay_dead_letters(&mut sub, &stop).await;
                    continue;
                }
                received = consumer.recv() => match received {
                    Ok(m) => m.detach(),
                    Err(err) => {
                        tracing::warn!(subscription = %id, error = %err, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if sub.has_changed().unwrap_or(false) {
                prepared = Prepared::new(sub.borrow_and_update().clone());
            }
            let batch = take_ready(&consumer, first, 500).await;
            let mut partitions: BTreeMap<i32, Vec<OwnedMessage>> = BTreeMap::new();
            for m in batch {
                partitions.entry(m.partition()).or_default().push(m);
            }
            let (prepared, consumer) = (&prepared, &consumer);
            let runs = partitions.into_values().map(|messages| {
                let (this, sub, stop) = (&self, sub.clone(), &stop);
                async move {
                    for m in &messages {
                        match this.deliver_one(prepared, m, sub.clone(), stop).await {
                            Outcome::Done => {
                                if let Err(err) = adapters::kafka::store_offsets(consumer, [m]) {
                                    // Revoked meanwhile: the new owner delivers it again (same webhook-id).
                                    tracing::debug!(error = %err, "storing a webhook offset failed");
                                }
                            }
                            Outcome::Stop => return false,
                        }
                    }
                    true
                }
            });
            let finished = futures_util::future::join_all(runs).await;
            if finished.contains(&false) {
                break;
            }
            // Everything handed out so far is done.
            adapters::kafka::store_position(consumer);
        }
        adapters::kafka::commit_stored(&consumer);
        tracing::info!(subscription = %id, "webhook deliveries stopped here");
    }

    /// Delivers `m` to the subscription, with its retries; dead-letters it when they are spent.
    async fn deliver_one(&self, prepared: &Prepared, m: &OwnedMessage, sub: watch::Receiver<Subscription>, stop: &CancellationToken) -> Outcome {
        let Some((body, content_type)) = render(prepared, m) else {
            return Outcome::Done;
        };
        let webhook_id = webhook_id(m);
        match self.attempt(sub, &webhook_id, &body, content_type, stop).await {
            Attempts::Delivered => Outcome::Done,
            Attempts::Gone | Attempts::Stopped => Outcome::Stop,
            Attempts::Exhausted { attempts, last_error } => {
                let dead = DeadDelivery {
                    webhook_id,
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    content_type: content_type.to_owned(),
                    attempts,
                    last_error,
                    failed_at: Utc::now(),
                };
                self.keep_dead_letter(&prepared.sub.id, &dead, stop).await
            }
        }
    }

    /// Stores a dead letter, retrying while Redis fails (the offset waits for it); disables the
    /// subscription after `webhooks.disable_after_dead_letters` in a row.
    async fn keep_dead_letter(&self, id: &str, dead: &DeadDelivery, stop: &CancellationToken) -> Outcome {
        let mut backoff = adapters::retry::Backoff::infra();
        loop {
            match self.store.dead_letter(id, dead).await {
                Ok(in_a_row) => {
                    self.metrics.webhook_attempts.add(1, &[KeyValue::new("outcome", "dead_lettered")]);
                    tracing::warn!(subscription = %id, webhook_id = %dead.webhook_id, attempts = dead.attempts, error = %dead.last_error, "webhook retries spent: kept as a dead letter");
                    if in_a_row >= self.settings.disable_after_dead_letters {
                        let reason = format!("{in_a_row} deliveries in a row were dead-lettered");
                        if let Err(err) = self.store.disable(id, &reason).await {
                            tracing::warn!(subscription = %id, error = %err, "disabling the subscription failed");
                        }
                        return Outcome::Stop;
                    }
                    return Outcome::Done;
                }
                Err(err) => {
                    tracing::warn!(subscription = %id, error = %err, "keeping a dead letter failed; retrying");
                    if adapters::retry::pause(&mut backoff, stop).await.is_err() {
                        return Outcome::Stop;
                    }
                }
            }
        }
    }

    /// POSTs `body` until it is delivered, the receiver is gone, the attempts are spent, or the
    /// worker stops. Each attempt reads the subscription anew (its URL or secret may change).
    async fn attempt(&self, mut sub: watch::Receiver<Subscription>, webhook_id: &str, body: &[u8], content_type: &str, stop: &CancellationToken) -> Attempts {
        let policy = self.settings.retry_policy();
        let secret = self.server_secret.as_deref().expect("workers run only with a server secret");
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let current = sub.borrow_and_update().clone();
            if current.state != SubscriptionState::Active {
                return Attempts::Stopped;
            }
            let host = url::Url::parse(&current.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
            if !self.settings.allows(&host) {
                // webhooks.allowed_hosts changed since the subscription was made.
                let reason = format!("host `{host}` is not in webhooks.allowed_hosts");
                tracing::warn!(subscription = %current.id, reason, "disabling the subscription");
                if let Err(err) = self.store.disable(&current.id, &reason).await {
                    tracing::warn!(error = %err, "disabling the subscription failed");
                }
                return Attempts::Stopped;
            }
            let now = Utc::now();
            let timestamp = now.timestamp();
            let signature = signature_header(&current.signing_secrets(secret, now), webhook_id, timestamp, body);
            let started = std::time::Instant::now();
            let sent = self
                .http
                .post(&current.url)
                .header("content-type", content_type)
                .header("webhook-id", webhook_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.to_vec())
                .send();
            let answer = tokio::select! {
                _ = stop.cancelled() => return Attempts::Stopped,
                answer = sent => answer,
            };
            let (error, retry_after) = match answer {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match Verdict::of(status) {
                        Verdict::Delivered => {
                            self.metrics.webhook_attempts.add(1, &[KeyValue::new("outcome", "delivered")]);
                            if let Err(err) = self.store.delivered(&current.id, Utc::now()).await {
                                tracing::debug!(error = %err, "recording a webhook delivery failed");
                            }
                            tracing::debug!(subscription = %current.id, webhook_id, status, took = ?started.elapsed(), "webhook delivered");
                            return Attempts::Delivered;
                        }
                        Verdict::Gone => {
                            self.metrics.webhook_attempts.add(1, &[KeyValue::new("outcome", "gone")]);
                            tracing::warn!(subscription = %current.id, url = %current.url, "the receiver answered 410 Gone: disabling the subscription");
                            let reason = format!("{} answered 410 Gone at {}", current.url, Utc::now().to_rfc3339());
                            let mut backoff = adapters::retry::Backoff::infra();
                            while let Err(err) = self.store.disable(&current.id, &reason).await {
                                tracing::warn!(error = %err, "disabling the subscription failed; retrying");
                                if adapters::retry::pause(&mut backoff, stop).await.is_err() {
                                    break;
                                }
                            }
                            return Attempts::Gone;
                        }
                        Verdict::Retry => {
                            let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, Utc::now()));
                            (format!("HTTP {status}"), retry_after)
                        }
                    }
                }
                Err(err) => (describe(&err), None),
            };
            self.metrics.webhook_attempts.add(1, &[KeyValue::new("outcome", "failed")]);
            if let Err(err) = self.store.failed(&current.id, Utc::now(), &error).await {
                tracing::debug!(error = %err, "recording a webhook failure failed");
            }
            let Some(delay) = policy.delay(attempt, retry_after, rand_fraction()) else {
                return Attempts::Exhausted { attempts: attempt, last_error: error };
            };
            tracing::info!(subscription = %current.id, webhook_id, attempt, error, retry_in = ?delay, "webhook delivery failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return Attempts::Stopped,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Delivers the dead letters an operator asked to replay, when this replica holds the
    /// subscription's replay lock.
    async fn replay_dead_letters(&self, sub: &mut watch::Receiver<Subscription>, stop: &CancellationToken) {
        let id = sub.borrow().id.clone();
        let owner = adapters::instance_id();
        let hold = Duration::from_secs(60);
        let wanted = match self.store.take_replays(&id, &owner, hold).await {
            Ok(w) => w,
            Err(err) => {
                tracing::debug!(subscription = %id, error = %err, "reading replay requests failed");
                return;
            }
        };
        if wanted.is_empty() {
            return;
        }
        tracing::info!(subscription = %id, count = wanted.len(), "replaying dead letters");
        for dead in wanted {
            let outcome = self.attempt(sub.clone(), &dead.webhook_id, dead.body.as_bytes(), &dead.content_type, stop).await;
            let again = match outcome {
                Attempts::Delivered => None,
                Attempts::Exhausted { attempts, last_error } => Some(DeadDelivery { attempts: dead.attempts + attempts, last_error, failed_at: Utc::now(), ..dead.clone() }),
                // Left asked for: replayed when the subscription delivers again.
                Attempts::Gone | Attempts::Stopped => break,
            };
            if let Err(err) = self.store.replayed(&id, &dead, again.as_ref()).await {
                tracing::warn!(subscription = %id, error = %err, "recording a replay failed; it may be delivered again");
            }
        }
        let _ = self.store.release_replay_lock(&id).await;
    }
}

/// The messages already fetched after `first`, up to `max`, without waiting for more.
async fn take_ready(consumer: &GroupConsumer, first: OwnedMessage, max: usize) -> Vec<OwnedMessage> {
    let mut batch = vec![first];
    while batch.len() < max {
        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            _ => break,
        }
    }
    batch
}

/// The `webhook-id` of the event at `m`'s position: the same on every retry and replay, and the
/// same as its CloudEvents `id`.
fn webhook_id(m: &OwnedMessage) -> String {
    format!("{}-{}-{}", m.topic(), m.partition(), m.offset())
}

/// The body and content type of `m` for the subscription; `None` when its filter passes it
/// over (or, with a filter or projection, when the event does not read back).
fn render(prepared: &Prepared, m: &OwnedMessage) -> Option<(Vec<u8>, &'static str)> {
    let payload = m.payload().unwrap_or_default();
    let record = if prepared.filter.is_some() || prepared.projection.is_some() { Some(crate::routes::published_event(m, payload, prepared.filter.is_some())?) } else { None };
    if let (Some(f), Some(r)) = (&prepared.filter, &record) {
        if !f.eval(r) {
            return None;
        }
    }
    let published = || serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
    let data = match (&prepared.projection, &record) {
        (Some(p), Some(r)) => p.apply(r),
        _ => published(),
    };
    let (body, content_type) = match prepared.sub.format {
        domain::webhooks::WebhookFormat::Metastream => {
            let timestamp = m
                .timestamp()
                .to_millis()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_else(Utc::now)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (json!({"type": "metadata.processed", "timestamp": timestamp, "data": data}), "application/json")
        }
        domain::webhooks::WebhookFormat::Cloudevents => {
            (crate::cloudevents::wrap(m.topic(), m.partition(), m.offset(), &published(), data), "application/cloudevents+json")
        }
    };
    Some((serde_json::to_vec(&body).expect("JSON serializes"), content_type))
}

/// A request error, as the subscription's status shows it.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "connection failed".into()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }
}

fn rand_fraction() -> f64 {
    rand::random::<f64>()
}
