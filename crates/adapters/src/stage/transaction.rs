//! Exactly once: a transformer's output and its consumer offsets committed in one Kafka
//! transaction (KIP-447: the consumer group's metadata travels with the offsets, so a zombie
//! instance is fenced by the group's generation).
//!
//! The runner opens a transaction before the first batch, hands batch after batch to it, and
//! commits their output together with the offsets they release once the batches are
//! acknowledged: when the stage idles (nothing more to read), but not sooner than
//! `delivery.transaction_min_ms` after the transaction opened, and at
//! `delivery.transaction_interval_ms` at the latest (a stage under full load never idles). A produce the broker fails dooms the
//! transaction: it is aborted, and the partitions are rewound to their committed offsets, so
//! the work is redone and nothing is published twice to `read_committed` readers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::dead_letter::Failure;
use super::ledger::TopicPartition;
use crate::kafka::{GroupConsumer, RevokeHook, SharedProducer};
use crate::watchdog::watched;

/// How long a transaction stays open: at least `min`, at most `max` (see the module's doc).
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub min: Duration,
    pub max: Duration,
}

impl Window {
    /// When a transaction opened at `opened` commits: at `max` after it while batches are
    /// unacknowledged; once they all are, as soon as the stage has had nothing to do for
    /// `linger` since `idle_since` (nothing more to read), but not before `min` after it.
    fn commit_at<T: Copy + Ord + std::ops::Add<Duration, Output = T>>(&self, opened: T, all_acknowledged: bool, idle_since: T, linger: Duration) -> T {
        let latest = opened + self.max;
        if !all_acknowledged {
            return latest;
        }
        (opened + self.min).max(idle_since + linger).min(latest)
    }
}

/// What a transaction's delivery tasks tell the runner; shared through [`super::Shared`].
#[derive(Default)]
pub struct TxnState {
    /// Why the open transaction must be aborted, once it must.
    failure: Mutex<Option<String>>,
    /// Consumed messages whose output the broker refused for good, and why: when their work is
    /// redone, they are dead-lettered instead.
    refusals: Mutex<HashMap<(String, i32, i64), Failure>>,
    /// Whether a transaction is open (read by the revoke hook).
    open: AtomicBool,
    /// Set by the revoke hook when it aborted the open transaction.
    revoked: AtomicBool,
}

impl TxnState {
    /// Records that the open transaction cannot commit.
    pub fn doom(&self, err: &KafkaError) {
        self.failure.lock().expect("txn lock").get_or_insert_with(|| err.to_string());
    }

    pub fn is_doomed(&self) -> bool {
        self.failure.lock().expect("txn lock").is_some()
    }

    /// Records that `original`'s output is refused for good.
    pub fn refuse(&self, original: &OwnedMessage, failure: Failure) {
        self.refusals.lock().expect("txn lock").insert(position(original), failure);
    }

    /// Why `original`'s output was refused for good, if it was (once).
    pub fn refusal(&self, original: &OwnedMessage) -> Option<Failure> {
        self.refusals.lock().expect("txn lock").remove(&position(original))
    }
}

fn position(m: &OwnedMessage) -> (String, i32, i64) {
    (m.topic().to_owned(), m.partition(), m.offset())
}

/// Why a commit did not happen.
#[derive(Debug)]
pub(super) enum NotCommitted {
    /// Aborted; the work since the last commit must be redone.
    Aborted(String),
    /// The producer is fenced or broken for good: the instance must stop.
    Fatal(String),
}

/// The transaction a runner has open, and the offsets its batches released.
pub(super) struct Transaction {
    producer: SharedProducer,
    /// What recreating the producer takes.
    kafka: crate::settings::KafkaSettings,
    limits: domain::TopicLimits,
    transactional_id: String,
    state: Arc<TxnState>,
    health: crate::health::Health,
    shutdown: crate::shutdown::CancellationToken,
    window: Window,
    opened: Option<Instant>,
    offsets: BTreeMap<TopicPartition, i64>,
}

impl Transaction {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        producer: SharedProducer,
        kafka: crate::settings::KafkaSettings,
        limits: domain::TopicLimits,
        transactional_id: String,
        state: Arc<TxnState>,
        window: Window,
        health: crate::health::Health,
        shutdown: crate::shutdown::CancellationToken,
    ) -> Self {
        Transaction { producer, kafka, limits, transactional_id, state, health, shutdown, window, opened: None, offsets: BTreeMap::new() }
    }

    /// Replaces a producer the broker fenced with a new one under the same transactional id
    /// (its transactions initialised again), so the stage goes on.
    ///
    /// # Errors
    /// When the new producer cannot be created.
    pub(super) async fn recreate(&mut self) -> anyhow::Result<()> {
        self.health.set_trouble("the transactional producer was fenced; initialising a new one");
        let producer = crate::kafka::transactional_producer(&self.kafka, &self.limits, &self.transactional_id).await?;
        // The fenced producer goes (librdkafka's destroy) unless a delivery still holds it.
        watched("dropping a fenced producer", Duration::from_secs(60), || self.producer.replace(producer));
        self.closed();
        tracing::warn!(transactional_id = %self.transactional_id, "the producer was fenced; recreated it");
        Ok(())
    }

    /// What the consumer runs before partitions are revoked: the open transaction is aborted
    /// (its output never becomes visible), and the runner redoes what it still owns.
    pub(super) fn revoke_hook(producer: SharedProducer, state: Arc<TxnState>) -> RevokeHook {
        Arc::new(move || {
            if state.open.swap(false, Ordering::SeqCst) {
                // On the consumer's poll, i.e. the runner's task: a hang here would stop the stage.
                let aborted = watched("abort_transaction before a revoke", Duration::from_secs(90), || producer.get().abort_transaction(Duration::from_secs(30)));
                match aborted {
                    Ok(()) => tracing::info!("partitions revoked: aborted the open transaction; its work is redone by their next owner"),
                    Err(err) => tracing::warn!(error = %err, "aborting the transaction before a revoke failed"),
                }
                state.revoked.store(true, Ordering::SeqCst);
            }
        })
    }

    /// Opens a transaction unless one is open.
    pub(super) fn begin(&mut self) -> Result<(), KafkaError> {
        if self.opened.is_none() {
            // Local, normally at once; seen to hang on a producer in a fatal state.
            watched("begin_transaction", Duration::from_secs(60), || self.producer.get().begin_transaction())?;
            self.opened = Some(Instant::now());
            self.state.open.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    pub(super) fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    /// When the open transaction is due to commit (see [`Window::commit_at`]).
    pub(super) fn due_at(&self, all_acknowledged: bool, idle_since: tokio::time::Instant, linger: Duration) -> Option<tokio::time::Instant> {
        self.opened.map(|at| self.window.commit_at(tokio::time::Instant::from_std(at), all_acknowledged, idle_since, linger))
    }

    /// Whether the revoke hook aborted the open transaction (the flag is cleared).
    pub(super) fn take_revoked(&mut self) -> bool {
        self.state.revoked.swap(false, Ordering::SeqCst)
    }

    /// The offsets the open transaction commits.
    pub(super) fn offsets(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.offsets
    }

    /// Adds offsets released by finished batches, to commit with the transaction.
    pub(super) fn release(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        for (tp, offset) in offsets {
            let e = self.offsets.entry(tp.clone()).or_insert(*offset);
            *e = (*e).max(*offset);
        }
    }

    /// Commits the open transaction with the released offsets (every batch of it must be
    /// finished). Aborts it instead when a delivery doomed it or the commit fails.
    pub(super) async fn commit(&mut self, consumer: &GroupConsumer) -> Result<(), NotCommitted> {
        if self.opened.is_none() {
            return Ok(());
        }
        let doomed = self.state.failure.lock().expect("txn lock").take();
        if let Some(why) = doomed {
            return Err(self.abort(why).await);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.offsets {
            if let Err(err) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                return Err(self.abort(err.to_string()).await);
            }
        }
        let Some(group) = consumer.group_metadata() else {
            return Err(self.abort("the consumer has no group metadata".into()).await);
        };
        if tpl.count() > 0 {
            let producer = self.producer.get();
            let sent = self.retrying("sending offsets", Duration::from_secs(30), move |t| producer.send_offsets_to_transaction(&tpl, &group, t)).await;
            if let Err(err) = sent {
                return Err(self.after_failure(err).await);
            }
        }
        let producer = self.producer.get();
        let started = Instant::now();
        let committed = self.retrying("committing", Duration::from_secs(60), move |t| producer.commit_transaction(t)).await;
        if started.elapsed() > Duration::from_secs(1) {
            tracing::warn!(took = ?started.elapsed(), ok = committed.is_ok(), "a transaction commit was slow");
        }
        match committed {
            Ok(()) => {
                self.closed();
                self.health.clear_trouble();
                Ok(())
            }
            Err(err) => Err(self.after_failure(err).await),
        }
    }

    /// A transactional call failed for other reasons than a retriable one: fatal, or abort.
    async fn after_failure(&mut self, err: KafkaError) -> NotCommitted {
        if is_fatal(&err) {
            self.closed();
            NotCommitted::Fatal(err.to_string())
        } else {
            self.abort(err.to_string()).await
        }
    }

    /// Runs a blocking transactional call (given its `timeout`) off the runtime, again (with
    /// backoff, reporting not ready) while librdkafka says the same call may succeed when
    /// retried — the broker is down, a request timed out — until it does, fails otherwise, or
    /// shutdown comes. A call that has not returned [`HUNG_AFTER`] past its own timeout is given
    /// up: `KafkaError::Canceled`, which [`is_fatal`] counts as fatal, so the producer is
    /// replaced and the work redone.
    async fn retrying(
        &self,
        what: &'static str,
        timeout: Duration,
        call: impl Fn(Duration) -> Result<(), KafkaError> + Send + Sync + 'static,
    ) -> Result<(), KafkaError> {
        let call = Arc::new(call);
        let mut backoff = crate::retry::Backoff::infra();
        loop {
            let attempt = call.clone();
            let result = match tokio::time::timeout(timeout + HUNG_AFTER, tokio::task::spawn_blocking(move || attempt(timeout))).await {
                Ok(joined) => joined.unwrap_or(Err(KafkaError::Canceled)),
                Err(_) => {
                    tracing::error!(what, timeout = ?timeout + HUNG_AFTER, "a transactional call did not return; giving the producer up");
                    Err(KafkaError::Canceled)
                }
            };
            match result {
                Err(err) if is_retriable(&err) && !self.shutdown.is_cancelled() => {
                    tracing::warn!(error = %err, what, "a transactional call failed; retrying");
                    self.health.set_trouble(format!("kafka transaction {what} failing: {err}"));
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                other => return other,
            }
        }
    }

    /// Aborts the open transaction (unless the revoke hook already did), retrying while the
    /// broker cannot be reached: nothing more may be produced until it is aborted.
    pub(super) async fn abort(&mut self, why: String) -> NotCommitted {
        self.state.failure.lock().expect("txn lock").take();
        if self.state.open.swap(false, Ordering::SeqCst) {
            let producer = self.producer.get();
            match self.retrying("aborting", Duration::from_secs(30), move |t| producer.abort_transaction(t)).await {
                Err(err) if is_fatal(&err) => {
                    self.closed();
                    return NotCommitted::Fatal(format!("{why}; aborting failed: {err}"));
                }
                Err(err) => tracing::warn!(error = %err, "aborting the transaction failed"),
                Ok(()) => self.health.clear_trouble(),
            }
        }
        self.closed();
        NotCommitted::Aborted(why)
    }

    fn closed(&mut self) {
        self.opened = None;
        self.offsets.clear();
        self.state.open.store(false, Ordering::SeqCst);
    }
}

/// How long past its own timeout a blocking transactional call may take before the producer is
/// given up as stuck: librdkafka's `send_offsets_to_transaction` was seen waiting for ever (on
/// an internal condition, its timeout ignored) after the broker leading its partitions was
/// killed — the stage then published nothing more until it was restarted.
const HUNG_AFTER: Duration = Duration::from_secs(10);

/// Whether the producer must be replaced: librdkafka says so, or a call on it hung or was
/// cancelled (its state is unknown).
fn is_fatal(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(e) => e.is_fatal(),
        KafkaError::Canceled => true,
        _ => false,
    }
}

fn is_retriable(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(e) => e.is_retriable(),
        _ => false,
    }
}

/// How long a consumer that left its group and joined again may go without an assignment.
const REJOIN_LIMIT: Duration = Duration::from_secs(120);

/// Leaves the consumer group and subscribes again to the same topics: the partitions come back
/// (to this or another instance) at their committed offsets.
fn rejoin(consumer: &GroupConsumer) {
    let _watch = crate::watchdog::guard("leaving and joining the consumer group", Duration::from_secs(60));
    let topics: Vec<String> = match consumer.subscription() {
        Ok(tpl) => tpl.elements().iter().map(|e| e.topic().to_owned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
        // Going on from the current positions would skip the aborted transaction's work.
        Err(err) => crate::watchdog::give_up("reading the subscription to rejoin the group", &err.to_string()),
    };
    tracing::warn!(?topics, "committed offsets unreadable; leaving the consumer group and joining again, so that the partitions restart from their committed offsets");
    consumer.unsubscribe();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    match consumer.subscribe(&names) {
        // Two session timeouts and a margin: the group must hand the partitions back by then.
        Ok(()) => consumer.context().await_assignment(REJOIN_LIMIT),
        Err(err) => crate::watchdog::give_up("subscribing again after leaving the group", &err.to_string()),
    }
}

/// Seeks every assigned partition back to its committed offset (the beginning where the group
/// has none): after an abort, the work since the last commit is redone. Returns the committed
/// offsets, or `None` when they could not be read (the consumer then rejoins its group).
pub(super) fn rewind_to_committed(consumer: &GroupConsumer) -> Option<std::collections::BTreeMap<super::ledger::TopicPartition, i64>> {
    // Bounded calls (5 × 3 s to read, 10 s per seek), on the runner's task.
    let _watch = crate::watchdog::guard("rewinding to the committed offsets", Duration::from_secs(180));
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(err) => {
            tracing::warn!(error = %err, "reading the assignment to rewind failed");
            return None;
        }
    };
    // A transaction still pending on these partitions (another instance's) makes the
    // committed offsets unstable for a moment: ask again, briefly.
    let mut committed = None;
    for _ in 0..5 {
        match consumer.committed_offsets(assignment.clone(), Duration::from_secs(3)) {
            Ok(tpl) => {
                committed = Some(tpl);
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading committed offsets failed; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    let Some(committed) = committed else {
        // The group coordinator does not answer: typically after a broker outage, when this
        // member's session expired and its rejoin waits for the consumer to be polled, which
        // this thread is not doing. Leave the group and join again: the new assignment starts
        // every partition at its committed offset, which is what the rewind is for. Continuing
        // from the current position instead would skip the aborted transaction's work.
        rejoin(consumer);
        return None;
    };
    let mut offsets = std::collections::BTreeMap::new();
    for e in committed.elements() {
        let to = match e.offset() {
            Offset::Offset(o) => {
                offsets.insert((e.topic().to_owned(), e.partition()), o);
                Offset::Offset(o)
            }
            _ => Offset::Beginning,
        };
        match consumer.seek(e.topic(), e.partition(), to, Duration::from_secs(10)) {
            Ok(()) => tracing::info!(topic = e.topic(), partition = e.partition(), offset = ?to, "rewound to the committed offset"),
            Err(err) => tracing::warn!(topic = e.topic(), partition = e.partition(), error = %err, "rewinding failed"),
        }
    }
    Some(offsets)
}

#[cfg(test)]
mod tests {
    use super::Window;
    use std::time::{Duration, Instant};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_busy_stage_commits_at_the_interval_an_idle_one_as_soon_as_it_may() {
        let w = Window { min: 10 * MS, max: 100 * MS };
        let opened = Instant::now();
        // Batches still unacknowledged: the interval.
        assert_eq!(w.commit_at(opened, false, opened + 50 * MS, 2 * MS), opened + 100 * MS);
        // All acknowledged, the last at +30 ms: the linger after it.
        assert_eq!(w.commit_at(opened, true, opened + 30 * MS, 2 * MS), opened + 32 * MS);
        // ...never before the minimum,
        assert_eq!(w.commit_at(opened, true, opened + MS, 2 * MS), opened + 10 * MS);
        // ...never after the maximum.
        assert_eq!(w.commit_at(opened, true, opened + 99 * MS, 2 * MS), opened + 100 * MS);
    }
}
