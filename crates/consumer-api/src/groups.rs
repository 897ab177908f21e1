//! API consumer groups: one Kafka consumer per group name on this instance, created on first
//! use. Calls of one group are served one at a time; each first commits what the previous call
//! handed out.
//!
//! What one key may hold on this replica is capped: the groups it keeps open
//! (`consumer_api.max_groups_per_key`; each is a Kafka consumer with its threads and prefetch)
//! and its calls in flight (`consumer_api.max_long_polls_per_key`). A group nobody used for
//! `consumer_api.group_idle_s` is closed: its consumer leaves the Kafka group, and the next call
//! rejoins it (its last unacknowledged answer is delivered again, as after a crash).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::http::RequestError;
use adapters::kafka::GroupConsumer;
use adapters::settings::{ConsumerApiSettings, KafkaSettings};
use adapters::shutdown::CancellationToken;
use rdkafka::consumer::CommitMode;
use rdkafka::message::OwnedMessage;

pub(crate) struct Groups {
    kafka: KafkaSettings,
    prefix: String,
    max_per_key: usize,
    idle: Duration,
    metrics: Arc<adapters::metrics::Metrics>,
    inner: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    groups: HashMap<String, Arc<ApiGroup>>,
    /// Key id → the groups it holds open here.
    held: HashMap<String, HashSet<String>>,
}

pub(crate) struct ApiGroup {
    consumer: GroupConsumer,
    /// What the previous call handed out, committed by the next call.
    handed_out: tokio::sync::Mutex<Vec<OwnedMessage>>,
    last_used: Mutex<Instant>,
}

impl Groups {
    pub fn new(kafka: KafkaSettings, settings: &ConsumerApiSettings, metrics: Arc<adapters::metrics::Metrics>) -> Self {
        let inner = Mutex::new(Open::default());
        Groups {
            kafka,
            prefix: settings.group_prefix.clone(),
            max_per_key: settings.max_groups_per_key,
            idle: Duration::from_secs(settings.group_idle_s),
            metrics,
            inner,
        }
    }

    /// The group's consumer for `key_id`, created and subscribed on first use.
    ///
    /// # Errors
    /// 429 when the key already holds its cap of groups here; 503 when the consumer cannot be
    /// created.
    pub fn get(&self, name: &str, key_id: &str) -> Result<Arc<ApiGroup>, RequestError> {
        let mut open = self.inner.lock().expect("groups lock");
        let held = open.held.get(key_id).map_or(0, HashSet::len);
        let holds_it = open.held.get(key_id).is_some_and(|h| h.contains(name));
        if !holds_it && held >= self.max_per_key {
            return Err(RequestError::LimitExceeded(format!(
                "this key holds {held} consumer groups on this replica, the most it may (consumer_api.max_groups_per_key); \
                 reuse one, or wait for an idle one to close"
            )));
        }
        let group = match open.groups.get(name) {
            Some(g) => g.clone(),
            None => {
                let group_id = format!("{}{name}", self.prefix);
                let consumer = adapters::kafka::consumer(&self.kafka, &group_id, &[&self.kafka.topics.output], Some(self.metrics.clone()), adapters::kafka::Commits::Explicit)
                    .map_err(|e| RequestError::Unavailable { what: format!("cannot create a Kafka consumer: {e}"), retry_after_s: 1 })?;
                tracing::info!(group = %group_id, "api consumer group created");
                let g = Arc::new(ApiGroup { consumer, handed_out: tokio::sync::Mutex::new(Vec::new()), last_used: Mutex::new(Instant::now()) });
                open.groups.insert(name.to_owned(), g.clone());
                g
            }
        };
        *group.last_used.lock().expect("last_used lock") = Instant::now();
        open.held.entry(key_id.to_owned()).or_default().insert(name.to_owned());
        Ok(group)
    }

    /// Closes groups unused for `consumer_api.group_idle_s`, until `shutdown`.
    pub fn spawn_idle_release(self: &Arc<Self>, shutdown: CancellationToken) {
        let groups = Arc::downgrade(self);
        let every = (self.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(groups) = groups.upgrade() else { return };
                let closed = groups.release_idle();
                if !closed.is_empty() {
                    // Closing a consumer leaves its group, which waits on the broker.
                    tokio::task::spawn_blocking(move || drop(closed));
                }
            }
        });
    }

    /// Takes the idle groups out (their consumers close when the returned handles drop).
    fn release_idle(&self) -> Vec<Arc<ApiGroup>> {
        let mut open = self.inner.lock().expect("groups lock");
        let idle: Vec<String> = open
            .groups
            .iter()
            .filter(|(_, g)| Arc::strong_count(g) == 1 && g.last_used.lock().expect("last_used lock").elapsed() >= self.idle)
            .map(|(name, _)| name.clone())
            .collect();
        let mut closed = Vec::with_capacity(idle.len());
        for name in idle {
            if let Some(g) = open.groups.remove(&name) {
                tracing::info!(group = %format!("{}{name}", self.prefix), "idle api consumer group closed");
                closed.push(g);
            }
            for held in open.held.values_mut() {
                held.remove(&name);
            }
        }
        open.held.retain(|_, h| !h.is_empty());
        closed
    }

    pub fn open_count(&self) -> usize {
        self.inner.lock().expect("groups lock").groups.len()
    }
}

impl ApiGroup {
    /// Commits the previous call's events, then waits up to `wait` for the first event and
    /// takes whatever else is ready, up to `max`.
    pub async fn next(&self, max: usize, wait: Duration) -> Vec<OwnedMessage> {
        let mut handed_out = self.handed_out.lock().await;
        adapters::kafka::commit(&self.consumer, &handed_out, CommitMode::Async);
        handed_out.clear();
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = Vec::new();
        // After the first event, wait only briefly for more: answer fast, not full.
        let mut until = deadline;
        while batch.len() < max {
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    batch.push(m.detach());
                    until = until.min(tokio::time::Instant::now() + Duration::from_millis(10));
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "kafka consumer error"),
                Err(_) => break,
            }
        }
        handed_out.extend(batch.iter().cloned());
        *self.last_used.lock().expect("last_used lock") = Instant::now();
        batch
    }
}

/// Calls in flight per key, capped; a slot is freed when its [`Slot`] drops.
#[derive(Default, Clone)]
pub(crate) struct PerKey(Arc<Mutex<HashMap<String, usize>>>);

pub(crate) struct Slot {
    counts: PerKey,
    key_id: String,
}

impl PerKey {
    /// # Errors
    /// 429 when `key_id` already has `max` calls in flight.
    pub fn acquire(&self, key_id: &str, max: usize) -> Result<Slot, RequestError> {
        let mut counts = self.0.lock().expect("per-key lock");
        let n = counts.entry(key_id.to_owned()).or_default();
        if *n >= max {
            return Err(RequestError::LimitExceeded(format!(
                "this key has {n} GET /consume calls in flight on this replica, the most it may (consumer_api.max_long_polls_per_key)"
            )));
        }
        *n += 1;
        Ok(Slot { counts: self.clone(), key_id: key_id.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("per-key lock");
        if let Some(n) = counts.get_mut(&self.key_id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key_id);
            }
        }
    }
}
