//! API consumer groups. Where a group is lives in Redis (`adapters::store::positions`); on this replica a group
//! has a Kafka consumer outside any Kafka group, assigned at each call to the group's positions,
//! so any replica serves any call. Calls of one group are served one at a time across replicas
//! (the group's lock in Redis).
//!
//! What one key may hold on this replica is capped: the groups it keeps open
//! (`consumer_api.max_groups_per_key`; each is a Kafka consumer with its threads and prefetch)
//! and its calls in flight (`consumer_api.max_long_polls_per_key`); so is what the replica holds
//! over all keys (`consumer_api.max_groups`, `consumer_api.max_long_polls`). A group nobody used for
//! `consumer_api.group_idle_s` is closed on this replica: its consumer is dropped, and the next
//! call makes a new one at the group's positions in Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::http::RequestError;
use adapters::settings::{ConsumerApiSettings, KafkaSettings};
use adapters::shutdown::CancellationToken;
use futures_util::StreamExt as _;
use adapters::kafka::message::{BorrowedMessage, Message as _};
use adapters::kafka::AssignedReader;
pub(crate) use adapters::kafka::Start;

use adapters::store::positions::{GroupState, GroupStore, Lease};

pub(crate) struct Groups {
    kafka: KafkaSettings,
    prefix: String,
    max_per_key: usize,
    /// Groups this replica holds open at most, over all keys (`consumer_api.max_groups`).
    max_open: usize,
    idle: Duration,
    inner: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    groups: HashMap<String, Arc<ApiGroup>>,
    /// Key id → the groups it holds open here.
    held: HashMap<String, HashSet<String>>,
}

pub(crate) struct ApiGroup {
    name: String,
    consumer: Arc<AssignedReader>,
    /// Calls of this group on this replica, one at a time (across replicas: the Redis lock),
    /// and where this replica's consumer stands: the offset its next message of each partition
    /// has. When the group's positions in Redis are the same (this replica served the group's
    /// last call), the consumer streams on from its prefetch; otherwise it is assigned anew.
    serial: tokio::sync::Mutex<std::collections::HashMap<i32, i64>>,
    partitions: std::sync::OnceLock<Vec<i32>>,
    last_used: Mutex<Instant>,
}

/// What one call handed out.
pub(crate) struct Answer<'c> {
    /// The events, as fetched: borrowed from the Kafka client, never copied out of it here.
    pub messages: Vec<BorrowedMessage<'c>>,
    /// The lease the answer is, to acknowledge (none when the answer is empty).
    pub lease: Option<String>,
    /// The group's position was deleted by retention: it moved to the earliest offset left.
    pub reset: bool,
    /// Where the group stood on each partition when this answer was taken.
    pub from: std::collections::HashMap<i32, i64>,
}

impl Groups {
    pub fn new(kafka: KafkaSettings, settings: &ConsumerApiSettings) -> Self {
        let inner = Mutex::new(Open::default());
        Groups {
            kafka,
            prefix: settings.group_prefix.clone(),
            max_per_key: settings.max_groups_per_key,
            max_open: settings.max_groups,
            idle: Duration::from_secs(settings.group_idle_s),
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
        if !open.groups.contains_key(name) && open.groups.len() >= self.max_open {
            return Err(RequestError::LimitExceeded(format!(
                "this replica holds {} consumer groups, the most it may (consumer_api.max_groups); retry later, or on another replica",
                open.groups.len()
            )));
        }
        let group = match open.groups.get(name) {
            Some(g) => g.clone(),
            None => {
                let consumer = AssignedReader::new(&self.kafka, &format!("{}{name}", self.prefix), &self.kafka.topics.output)
                    .map_err(|e| RequestError::Unavailable { what: format!("cannot create a Kafka consumer: {e}"), retry_after_s: 1 })?;
                tracing::info!(group = %name, "api consumer group opened on this replica");
                let g = Arc::new(ApiGroup {
                    name: name.to_owned(),
                    consumer: Arc::new(consumer),
                    serial: tokio::sync::Mutex::new(std::collections::HashMap::new()),
                    partitions: std::sync::OnceLock::new(),
                    last_used: Mutex::new(Instant::now()),
                });
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
    /// Acknowledges what `owner` was handed before (its latest lease, or `ack` when given), then
    /// hands out the group's next events: waits up to `wait` for the first and takes whatever
    /// else is ready, up to `max`. The group is free for its next call (on this replica or
    /// another) as soon as this returns: rendering the answer is the caller's, outside the
    /// group's lock, so one caller's rendering overlaps the next call's fetch.
    ///
    /// # Errors
    /// 503 when Redis or Kafka cannot answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn next(
        &self,
        store: &GroupStore,
        owner: &str,
        ack: Option<&str>,
        start: Start,
        max: usize,
        wait: Duration,
        ack_timeout: Duration,
    ) -> Result<Answer<'_>, RequestError> {
        let unavailable = |what: String| RequestError::Unavailable { what, retry_after_s: 1 };
        let mut here = self.serial.lock().await;
        let group = self.name.as_str();
        if let Some(lease) = ack {
            store.ack(group, lease).await.map_err(|e| unavailable(format!("redis: {e}")))?;
        }
        let until = tokio::time::Instant::now() + wait;
        let token = uuid::Uuid::new_v4().simple().to_string();
        // The lock and the group's state in one round trip.
        let Some(loaded) = store.lock_and_load(group, &token, wait + Duration::from_secs(10), until).await.map_err(|e| unavailable(format!("redis: {e}")))? else {
            // Another call of this group held it all along: nothing for this one now.
            return Ok(Answer { messages: Vec::new(), lease: None, reset: false, from: std::collections::HashMap::new() });
        };
        let result = self.next_locked(store, &token, loaded, owner, ack.is_some(), start, max, until, ack_timeout, &mut here).await;
        if result.is_err() {
            // (On success, saving the call released the lock.)
            store.unlock(group, &token).await;
        }
        *self.last_used.lock().expect("last_used lock") = Instant::now();
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn next_locked(
        &self,
        store: &GroupStore,
        token: &str,
        (mut state, last): (GroupState, std::collections::HashMap<String, String>),
        owner: &str,
        explicit_ack: bool,
        start: Start,
        max: usize,
        until: tokio::time::Instant,
        ack_timeout: Duration,
        here: &mut std::collections::HashMap<i32, i64>,
    ) -> Result<Answer<'_>, RequestError> {
        let unavailable = |what: String| RequestError::Unavailable { what, retry_after_s: 1 };
        let group = self.name.as_str();
        // A stream connection that a resume took over from takes nothing more (checked under the
        // group's lock, which the resume also holds).
        if owner.starts_with("sse:") && store.is_superseded(group, owner).await.map_err(|e| unavailable(format!("redis: {e}")))? {
            return Err(RequestError::Gone(format!("a client resumed group `{group}`'s stream elsewhere")));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut gone = state.expire(now_ms);
        if !gone.is_empty() {
            tracing::info!(group, leases = gone.len(), "unacknowledged answers past consumer_api.ack_timeout_ms: handing them out again");
        }
        if !explicit_ack {
            if let Some(id) = last.get(owner) {
                if state.leases.remove(id).is_some() {
                    gone.push(id.clone());
                }
            }
        }
        // Pointers to answers no longer outstanding (acknowledged, expired) go, so the group's
        // state stays as small as its outstanding answers (each stream connection has an owner).
        gone.extend(last.iter().filter(|(o, id)| o.as_str() != owner && !state.leases.contains_key(*id)).map(|(o, _)| format!("last:{o}")));
        // Partitions, and where a new group starts on each.
        let (consumer, known) = (self.consumer.clone(), state.positions.clone());
        let partitions = self.partitions().await.map_err(|e| unavailable(format!("kafka: {e}")))?;
        let reassign = *here != known || known.len() != partitions.len();
        // Steady reading (this replica served the group's last call): nothing to ask the broker.
        let (positions, reset) = if !reassign {
            (known, false)
        } else {
            tokio::task::spawn_blocking(move || -> anyhow::Result<(std::collections::HashMap<i32, i64>, bool)> {
            let missing: Vec<i32> = partitions.iter().copied().filter(|p| !known.contains_key(p)).collect();
            let mut out = known;
            out.extend(consumer.offsets_at(&missing, start)?);
            // Where this replica is assigned anew, a position retention deleted moves to the
            // earliest offset left (the answer says so); so does one past the end of the
            // partition — the topic was deleted and made again while Redis kept the group, and
            // what it holds now is all new to the group.
            let mut reset = false;
            if reassign {
                for (p, pos) in out.iter_mut() {
                    let (low, high) = consumer.watermarks(*p)?;
                    if *pos < low || *pos > high {
                        *pos = low;
                        reset = true;
                    }
                }
            }
            Ok((out, reset))
            })
            .await
            .map_err(|e| unavailable(format!("kafka: {e}")))?
            .map_err(|e| unavailable(format!("kafka: {e}")))?
        };
        if reset {
            tracing::warn!(group, "the group's position was deleted by retention; moved to the earliest offset left");
        }
        if *here != positions {
            self.consumer.assign(&positions).map_err(|e| unavailable(format!("kafka: {e}")))?;
            *here = positions.clone();
        }
        let mut ranges: std::collections::BTreeMap<i32, (i64, i64)> = std::collections::BTreeMap::new();
        let mut batch = Vec::with_capacity(max.min(1000));
        // One stream for the call (each `recv` registers and drops a waker slot under a lock).
        let mut stream = self.consumer.stream();
        let never_ends = |m: Option<_>| m.expect("a Kafka message stream never ends");
        while batch.len() < max {
            // What is already fetched is taken without a timer or a clock read (a timer per
            // message was a tenth of a call's CPU); only an empty queue is waited on: for the
            // first event up to `until`, after it at most 10 ms (answer fast, not full).
            let ready = futures_util::FutureExt::now_or_never(stream.next());
            let received = match ready {
                Some(r) => Ok(never_ends(r)),
                None => {
                    let deadline = if batch.is_empty() { until } else { until.min(tokio::time::Instant::now() + Duration::from_millis(10)) };
                    tokio::time::timeout_at(deadline, stream.next()).await.map(never_ends)
                }
            };
            match received {
                Ok(Ok(m)) => {
                    // A fetch from before this assignment may still be in flight: keep only what
                    // follows the group's position.
                    if let Some(from) = positions.get(&m.partition()).filter(|pos| m.offset() >= **pos) {
                        here.insert(m.partition(), m.offset() + 1);
                        let r = ranges.entry(m.partition()).or_insert((*from, *from));
                        r.1 = r.1.max(m.offset() + 1);
                        batch.push(m);
                    }
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "kafka consumer error"),
                Err(_) => break,
            }
        }
        let mut moved = positions.clone();
        for (p, (_, to)) in &ranges {
            moved.insert(*p, *to);
        }
        let lease = (!ranges.is_empty()).then(|| Lease {
            owner: owner.to_owned(),
            deadline_ms: now_ms + ack_timeout.as_millis() as i64,
            ranges: ranges.iter().map(|(p, (from, to))| (*p, *from, *to)).collect(),
        });
        let lease_id = lease.as_ref().map(|_| uuid::Uuid::new_v4().simple().to_string());
        let saved = store.save_and_unlock(group, token, &moved, lease_id.as_deref().zip(lease.as_ref()), &gone).await;
        if !matches!(saved, Ok(true)) {
            // Not recorded: the group's positions did not move, so this consumer must be
            // reassigned to them on the next call.
            here.clear();
            return Err(match saved {
                Err(e) => unavailable(format!("redis: {e}")),
                _ => unavailable(format!("this call held group `{group}` longer than its lock lasts; another call may have taken it since")),
            });
        }
        Ok(Answer { messages: batch, lease: lease_id, reset, from: positions })
    }

    /// Resumes a stream from `positions` (see [`GroupStore::resume`]), under the group's lock.
    ///
    /// # Errors
    /// 503 when Redis cannot answer or another call holds the group for 5 s.
    pub async fn resume(&self, store: &GroupStore, owner: &str, positions: &std::collections::HashMap<i32, i64>) -> Result<(), RequestError> {
        let unavailable = |what: String| RequestError::Unavailable { what, retry_after_s: 1 };
        store.supersede(&self.name, owner).await.map_err(|e| unavailable(format!("redis: {e}")))?;
        let mut here = self.serial.lock().await;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        if !store.lock(&self.name, &token, Duration::from_secs(15), until).await.map_err(|e| unavailable(format!("redis: {e}")))? {
            return Err(unavailable(format!("group `{}` is busy", self.name)));
        }
        let result = match store.resume(&self.name, &token, owner, positions).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(unavailable(format!("group `{}` was busy", self.name))),
            Err(e) => {
                store.unlock(&self.name, &token).await;
                Err(unavailable(format!("redis: {e}")))
            }
        };
        here.clear();
        result
    }

    /// The output topic's partitions (asked of the broker once per open group).
    async fn partitions(&self) -> anyhow::Result<Vec<i32>> {
        if let Some(p) = self.partitions.get() {
            return Ok(p.clone());
        }
        let consumer = self.consumer.clone();
        let found = tokio::task::spawn_blocking(move || consumer.partitions()).await??;
        Ok(self.partitions.get_or_init(|| found).clone())
    }

    /// Moves the group to `to` on every partition and forgets its unacknowledged answers (a
    /// replay from a point, or a skip to the end). Returns the new positions.
    ///
    /// # Errors
    /// 503 when Redis or Kafka cannot answer, or another call holds the group for 5 s.
    pub async fn reset(&self, store: &GroupStore, to: Start) -> Result<std::collections::HashMap<i32, i64>, RequestError> {
        let unavailable = |what: String| RequestError::Unavailable { what, retry_after_s: 1 };
        let mut here = self.serial.lock().await;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        if !store.lock(&self.name, &token, Duration::from_secs(15), until).await.map_err(|e| unavailable(format!("redis: {e}")))? {
            return Err(unavailable(format!("group `{}` is busy", self.name)));
        }
        let result = async {
            let partitions = self.partitions().await.map_err(|e| unavailable(format!("kafka: {e}")))?;
            let consumer = self.consumer.clone();
            let positions = tokio::task::spawn_blocking(move || consumer.offsets_at(&partitions, to))
                .await
                .map_err(|e| unavailable(format!("kafka: {e}")))?
                .map_err(|e| unavailable(format!("kafka: {e}")))?;
            store.reset(&self.name, &positions).await.map_err(|e| unavailable(format!("redis: {e}")))?;
            here.clear();
            Ok(positions)
        }
        .await;
        store.unlock(&self.name, &token).await;
        result
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
    /// 429 when `key_id` already has `max` calls in flight, or this replica `max_total`.
    pub fn acquire(&self, key_id: &str, max: usize, max_total: usize) -> Result<Slot, RequestError> {
        let mut counts = self.0.lock().expect("per-key lock");
        let total: usize = counts.values().sum();
        if total >= max_total {
            return Err(RequestError::LimitExceeded(format!(
                "this replica serves {total} GET /consume and /stream calls, the most it may (consumer_api.max_long_polls); retry later"
            )));
        }
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
