//! [`Pipeline`]: the batches a [`super::StageRunner`] has handed to Kafka and not yet
//! committed, and the transitions between them — a batch started, acknowledged or failed; a
//! commit started, done or failed; everything aborted and redone; a rewind after a Redis
//! restart. The decisions are pure and tested on their own ([`super::ledger`]: which offsets
//! may be stored; [`super::turns`]: which transaction commits when); this module applies them
//! to the consumer and the producers. Building the clients and polling are the runner's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::Stage;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use tokio::task::{JoinHandle, JoinSet};

use super::guard::StoreGuard;
use super::ledger::{BatchId, OffsetLedger, TopicPartition};
use super::produce::Outgoing;
use super::runner::Shared;
use super::transaction::{NotCommitted, Pool};
use super::turns::{Ready, TxnQueue};
use crate::kafka::GroupConsumer;
use crate::shutdown::Interrupted;

/// Why a runner stopped before shutdown was asked for, or that it was.
#[derive(Debug)]
pub(super) enum Stopped {
    /// Shutdown came while a batch was unfinished.
    Requested,
    /// The pipeline cannot go on: the runner ends with this error, so the process exits
    /// non-zero and the orchestrator restarts it (never a silent exit 0).
    Broken(String),
}

/// How long, under exactly once, a batch's deliveries may take before its transactions are
/// aborted: well past `kafka.produce_timeout_ms`, after which each message has an outcome.
const STUCK_DELIVERY: Duration = Duration::from_secs(30);

/// A batch, back from its delivery task, and whether everything it led to was acknowledged.
pub(super) type Delivered = (Vec<OwnedMessage>, Result<(), Interrupted>);

/// What the runner waits for besides messages: a delivery task or a commit ended.
pub(super) enum Event {
    Delivered(Result<(tokio::task::Id, (BatchId, Delivered)), tokio::task::JoinError>),
    CommitEnded(Result<(), NotCommitted>),
}

/// Under exactly once: the pool of transactional producers, whose turn it is, and the commit
/// under way.
pub(super) struct ExactlyOnce {
    pub pool: Pool,
    pub turns: TxnQueue<tokio::time::Instant>,
    /// The commit spawned from [`TxnQueue::ready`]: its transaction, member and offsets.
    committing: Option<(Ready, JoinHandle<Result<(), NotCommitted>>)>,
    /// Commits of this instance start at least this far apart (`delivery.transaction_min_ms`).
    min_gap: Duration,
    /// While the stage is behind its input, how long the oldest transaction may keep taking
    /// batches (`delivery.transaction_interval_ms`).
    max_open: Duration,
    /// When the last commit started.
    last_commit: tokio::time::Instant,
    stage: Stage,
}

impl ExactlyOnce {
    pub fn new(pool: Pool, delivery: &crate::settings::DeliverySettings, stage: Stage) -> Self {
        let turns = TxnQueue::new(pool.members().len());
        ExactlyOnce {
            pool,
            turns,
            committing: None,
            min_gap: delivery.transaction_min(),
            max_open: delivery.transaction_interval(),
            last_commit: tokio::time::Instant::now(),
            stage,
        }
    }
}

/// See the module's doc.
pub(super) struct Pipeline<'a> {
    pub consumer: &'a GroupConsumer,
    pub shared: &'a Shared,
    pub tasks: JoinSet<(BatchId, Delivered)>,
    /// Each task's batch and its size (the gauge's share), also when the task fails.
    sizes: HashMap<tokio::task::Id, (BatchId, usize)>,
    pub ledger: OffsetLedger,
    in_flight_messages: &'a AtomicUsize,
    guard: Option<StoreGuard>,
    /// Why the runner must stop, once it must: a batch was not finished, so nothing after it
    /// may be stored (its messages would be skipped) and they are redelivered.
    pub stopped: Option<Stopped>,
    pub exactly_once: Option<ExactlyOnce>,
    /// Per partition, the highest offset stored (at least once) or committed (exactly once) so
    /// far: the Redis-restart guard's replay ends there, and no commit moves the group back.
    released: BTreeMap<TopicPartition, i64>,
    /// Told what is committed: a partition's progress.
    liveness: &'a crate::liveness::FetchWatch,
    /// How many times the work was redone from the committed offsets.
    redos: u64,
    /// The last batch taken was at least a quarter of `batch_size`: the stage is behind its
    /// input. Under exactly once the oldest transaction then keeps taking batches for up to
    /// `transaction_interval_ms` — fewer, larger transactions while throughput matters; caught
    /// up, each commits at once.
    pub behind: bool,
}

impl<'a> Pipeline<'a> {
    pub fn new(
        consumer: &'a GroupConsumer,
        shared: &'a Shared,
        in_flight_messages: &'a AtomicUsize,
        guards_store: bool,
        exactly_once: Option<ExactlyOnce>,
        liveness: &'a crate::liveness::FetchWatch,
    ) -> Self {
        Pipeline {
            consumer,
            shared,
            tasks: JoinSet::new(),
            sizes: HashMap::new(),
            ledger: OffsetLedger::default(),
            in_flight_messages,
            guard: guards_store.then(StoreGuard::default),
            stopped: None,
            exactly_once,
            released: BTreeMap::new(),
            liveness,
            redos: 0,
            behind: false,
        }
    }

    /// Opens `batch` in the ledger and, under exactly once, adds it to the open transaction —
    /// or begins one on the next member when none is open, once every batch before it is
    /// acknowledged and a member is free (waiting for acknowledgements and for the commit under
    /// way meanwhile; see [`TxnQueue::join`]). Returns the batch's id and the clients its delivery
    /// uses — under exactly once, its member's producer. `None` when partitions were revoked
    /// meanwhile: the batch is dropped, and what is still owned is read again.
    ///
    /// # Errors
    /// When a transaction cannot begin: the stage cannot go on.
    pub async fn open(&mut self, batch: &[OwnedMessage]) -> anyhow::Result<Option<(BatchId, Shared)>> {
        let positions = || batch.iter().map(|m| ((rdkafka::message::Message::topic(m).to_owned(), rdkafka::message::Message::partition(m)), rdkafka::message::Message::offset(m)));
        if self.exactly_once.is_none() {
            return Ok(Some((self.ledger.open(positions()), self.shared.clone())));
        }
        loop {
            let redos = self.redos;
            if self.revoked().await {
                return Ok(None);
            }
            let eo = self.exactly_once.as_mut().expect("checked");
            if !eo.turns.can_join() {
                // Every member holds a transaction: wait for a delivery (the oldest commits once
                // acknowledged) or for the commit under way.
                self.start_commit_after_gap(false);
                if !self.is_busy() {
                    self.stopped = Some(Stopped::Broken("every transactional producer holds a transaction, and none is committing or delivering".into()));
                    return Ok(None);
                }
                let event = self.next_event().await;
                self.handle(event).await;
                self.start_commit();
                if self.redos != redos || self.stopped.is_some() {
                    // A commit failed and the partitions were rewound over this batch.
                    return Ok(None);
                }
                continue;
            }
            let id = self.ledger.open(positions());
            let joined = eo.turns.join(id, positions(), tokio::time::Instant::now()).expect("a member is free");
            if joined.began {
                let consumer = self.consumer;
                eo.pool.begin(joined.member, || consumer.group_metadata()).await?;
            }
            let member = eo.pool.member(joined.member);
            let mut shared = self.shared.clone();
            shared.producer = member.producer.clone();
            shared.transaction = Some(member.state.clone());
            return Ok(Some((id, shared)));
        }
    }

    /// Hands batch `id` to its delivery task, `task`.
    pub fn start(&mut self, id: BatchId, batch_len: usize, task: impl std::future::Future<Output = Delivered> + Send + 'static) {
        self.in_flight_messages.fetch_add(batch_len, Ordering::Relaxed);
        let handle = self.tasks.spawn(async move { (id, task.await) });
        self.sizes.insert(handle.id(), (id, batch_len));
    }

    /// Finishes the batches whose tasks are already done.
    pub fn finish_acknowledged(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }

    /// Waits for the next task to end and finishes its batch.
    pub async fn finish_next(&mut self) {
        if self.exactly_once.is_none() {
            if let Some(done) = self.tasks.join_next_with_id().await {
                self.finished(done);
            }
            return;
        }
        // Under exactly once, a delivery that neither succeeds nor fails (the producer waiting
        // for the broker to hand it a transactional id again) must not hold the stage for
        // ever: past the limit, what the producers hold is purged, which fails the deliveries
        // and dooms their transactions.
        match tokio::time::timeout(STUCK_DELIVERY, self.tasks.join_next_with_id()).await {
            Ok(Some(done)) => self.finished(done),
            Ok(None) => {}
            Err(_) => {
                tracing::warn!(after = ?STUCK_DELIVERY, "deliveries did not complete; aborting their transactions");
                if let Some(eo) = &self.exactly_once {
                    eo.pool.purge().await;
                }
            }
        }
    }

    pub async fn finish_all(&mut self) {
        while !self.tasks.is_empty() {
            self.finish_next().await;
        }
    }

    /// Records how a batch's delivery ended. Done: under exactly once its transaction counts
    /// it acknowledged; at least once, the offsets the ledger releases are stored (and
    /// committed by librdkafka every `commit_interval_ms`). Interrupted or failed: that batch
    /// and everything after it are held back.
    pub fn finished(&mut self, done: Result<(tokio::task::Id, (BatchId, Delivered)), tokio::task::JoinError>) {
        let task = match &done {
            Ok((task, _)) => *task,
            Err(err) => err.id(),
        };
        let (id, size) = self.sizes.remove(&task).expect("every task is recorded");
        self.in_flight_messages.fetch_sub(size, Ordering::Relaxed);
        let (batch, result) = match done {
            Ok((_, (_, delivered))) => delivered,
            Err(err) => {
                self.ledger.fail(id);
                self.stopped = Some(Stopped::Broken(format!("a batch's delivery task failed: {err}")));
                return;
            }
        };
        if result.is_err() {
            self.ledger.fail(id);
            self.stopped.get_or_insert(Stopped::Requested);
            return;
        }
        if let Some(guard) = self.guard.as_mut() {
            guard.record(&batch);
        }
        let released = self.ledger.finish(id);
        if let Some(eo) = self.exactly_once.as_mut() {
            // Committed with its transaction (see `start_commit`).
            eo.turns.acknowledged(id);
            return;
        }
        if released.offsets.is_empty() {
            return;
        }
        self.shared.health.clear_trouble();
        let advancing = self.advancing(released.offsets);
        if advancing.is_empty() {
            return;
        }
        match crate::kafka::store_positions(self.consumer, &advancing) {
            // librdkafka commits what is stored within `commit_interval_ms`.
            Ok(()) => {
                self.released.extend(advancing.clone());
                self.liveness.committed(&advancing);
            }
            // Revoked meanwhile: the partition's new owner redelivers (at least once).
            Err(err) => tracing::warn!(error = %err, "storing offsets failed; the batch may be redelivered"),
        }
    }

    /// Of `offsets`, those past what is already released: batches redone after a Redis restart
    /// release offsets below it, which must not move the group back.
    fn advancing(&self, offsets: BTreeMap<TopicPartition, i64>) -> BTreeMap<TopicPartition, i64> {
        offsets.into_iter().filter(|(tp, offset)| self.released.get(tp).is_none_or(|done| offset > done)).collect()
    }

    /// Under exactly once: when to look again for a commit that waits only for time — for
    /// `delivery.transaction_min_ms` since the last one started, or, while the stage is behind,
    /// for the oldest transaction to have been open `delivery.transaction_interval_ms`.
    pub fn commit_wakeup(&self) -> Option<tokio::time::Instant> {
        let eo = self.exactly_once.as_ref()?;
        if eo.committing.is_some() || eo.turns.is_empty() {
            return None;
        }
        let mut at = eo.last_commit + eo.min_gap;
        if self.behind {
            if let Some(opened) = eo.turns.head_opened() {
                at = at.max(opened + eo.max_open);
            }
        }
        (at > tokio::time::Instant::now()).then_some(at)
    }

    /// Under exactly once, starts the next commit if one may start (see [`TxnQueue::ready`]):
    /// spawned, so the stage keeps consuming and producing on the other members meanwhile.
    pub fn start_commit(&mut self) {
        self.start_commit_after_gap(true);
    }

    fn start_commit_after_gap(&mut self, gap: bool) {
        let Some(eo) = self.exactly_once.as_mut() else { return };
        let now = tokio::time::Instant::now();
        if eo.committing.is_some() || (gap && now < eo.last_commit + eo.min_gap) {
            return;
        }
        // Caught up, the oldest transaction is sealed at once; behind, once it is old enough
        // (always when draining).
        let seal = !gap || !self.behind || eo.turns.head_opened().is_some_and(|opened| now >= opened + eo.max_open);
        let Some(mut ready) = eo.turns.ready(seal) else { return };
        ready.offsets.retain(|tp, offset| self.released.get(tp).is_none_or(|done| *offset > *done));
        let commit = eo.pool.commit(ready.member, &ready.offsets, self.consumer.group_metadata());
        eo.last_commit = now;
        eo.committing = Some((ready, tokio::spawn(commit)));
    }

    /// Whether a commit is under way.
    pub fn is_committing(&self) -> bool {
        self.exactly_once.as_ref().is_some_and(|eo| eo.committing.is_some())
    }

    /// Whether a delivery or a commit is under way, whose end [`Self::next_event`] waits for.
    pub fn is_busy(&self) -> bool {
        !self.tasks.is_empty() || self.is_committing()
    }

    /// Waits for the next delivery task or the commit under way to end (cancel-safe: both go
    /// on as tasks). Never resolves when neither is under way.
    pub async fn next_event(&mut self) -> Event {
        let mut committing = self.exactly_once.as_mut().and_then(|eo| eo.committing.as_mut()).map(|(_, handle)| handle);
        let has_commit = committing.is_some();
        tokio::select! {
            biased;
            Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Event::Delivered(done),
            outcome = async { committing.as_mut().expect("checked").await }, if has_commit => {
                Event::CommitEnded(outcome.unwrap_or_else(|err| Err(NotCommitted::Fatal(format!("the commit task failed: {err}")))))
            }
            else => std::future::pending().await,
        }
    }

    /// Records what [`Self::next_event`] returned.
    pub async fn handle(&mut self, event: Event) {
        match event {
            Event::Delivered(done) => self.finished(done),
            Event::CommitEnded(outcome) => self.committed(outcome).await,
        }
    }

    /// Records how the commit under way ended: done, its offsets are the group's. Returns why
    /// it did not commit, and on which member.
    fn record_commit(&mut self, outcome: Result<(), NotCommitted>) -> Option<(usize, NotCommitted)> {
        let eo = self.exactly_once.as_mut()?;
        let (ready, _) = eo.committing.take()?;
        let attrs = [
            opentelemetry::KeyValue::new("stage", eo.stage.as_str()),
            opentelemetry::KeyValue::new("transaction", if outcome.is_ok() { domain::TransactionOutcome::Committed } else { domain::TransactionOutcome::Aborted }.as_str()),
        ];
        self.shared.metrics.transaction_commit.record(eo.last_commit.elapsed().as_secs_f64(), &attrs);
        match outcome {
            Ok(()) => {
                eo.turns.committed(ready.txn);
                self.released.extend(ready.offsets.clone());
                self.liveness.committed(&ready.offsets);
                self.shared.health.clear_trouble();
                None
            }
            Err(why) => Some((ready.member, why)),
        }
    }

    /// Whether a member whose transaction did not commit waits to be swept while none holds a
    /// transaction (see `transaction`, "Orphaned records").
    pub fn needs_sweep(&self) -> bool {
        self.exactly_once.as_ref().is_some_and(|eo| eo.turns.is_empty() && (0..eo.pool.members().len()).any(|n| eo.pool.is_dirty(n)))
    }

    /// Sweeps the members that need it (the runner's idle tick: a stage that cannot read —
    /// orphaned offsets of its own group can be why — still sweeps).
    pub async fn sweep_idle(&mut self) {
        let consumer = self.consumer;
        if let Some(eo) = self.exactly_once.as_mut().filter(|eo| eo.turns.is_empty()) {
            eo.pool.sweep_idle(|| consumer.group_metadata()).await;
        }
    }

    /// Records how the commit under way ended; when it did not commit, every transaction is
    /// aborted and the work redone (a fenced member recreated first).
    async fn committed(&mut self, outcome: Result<(), NotCommitted>) {
        let Some((member, failure)) = self.record_commit(outcome) else { return };
        let why = match failure {
            NotCommitted::Aborted(why) => why,
            NotCommitted::Fatal(why) => {
                let eo = self.exactly_once.as_mut().expect("a commit was under way");
                if let Err(err) = eo.pool.recreate(member).await {
                    self.stopped = Some(Stopped::Broken(format!("a transaction failed for good ({why}) and a new producer could not be made: {err:#}")));
                    return;
                }
                why
            }
        };
        self.redo(&why).await;
        // Not ready until a transaction commits again: a stage that keeps aborting (a topic that
        // refuses its output, a broker that fails its produces) publishes nothing.
        self.shared.health.set_trouble(format!("a transaction could not commit: {why}"));
    }

    /// The commit under way's outcome, once it ended (`None`: none was under way).
    async fn commit_outcome(&mut self) -> Option<Result<(), NotCommitted>> {
        let (_, handle) = self.exactly_once.as_mut()?.committing.as_mut()?;
        Some(handle.await.unwrap_or_else(|err| Err(NotCommitted::Fatal(format!("the commit task failed: {err}")))))
    }

    /// Waits for the commit under way, if any, and records how it ended.
    pub async fn await_commit(&mut self) {
        if let Some(outcome) = self.commit_outcome().await {
            self.committed(outcome).await;
        }
    }

    /// Finishes every batch and commits every transaction, in order (shutdown, or before a
    /// rewind). What cannot commit — a batch left unfinished at shutdown holds its transaction
    /// and every later one — is aborted.
    pub async fn drain(&mut self) {
        if self.exactly_once.is_none() {
            self.finish_all().await;
            return;
        }
        loop {
            self.finish_all().await;
            self.await_commit().await;
            self.start_commit_after_gap(false);
            if !self.is_committing() {
                break;
            }
        }
        if self.exactly_once.as_ref().is_some_and(|eo| !eo.turns.is_empty()) {
            self.abort_all().await;
        }
    }

    /// Aborts every transaction: waits for the commit under way (its transaction may have
    /// committed) and every delivery, then aborts what is left, in order.
    pub async fn abort_all(&mut self) {
        if let Some(outcome) = self.commit_outcome().await {
            // Committed: recorded. Not: aborted below with the rest (a fenced member is
            // recreated when its abort fails for good).
            let _ = self.record_commit(outcome);
        }
        self.finish_all().await;
        let Some(eo) = self.exactly_once.as_mut() else { return };
        let members = eo.turns.abort_all();
        if let Err(err) = eo.pool.abort(&members).await {
            self.stopped = Some(Stopped::Broken(format!("aborting failed and a new producer could not be made: {err:#}")));
        }
    }

    /// After a transaction could not commit: every transaction aborted, the assigned
    /// partitions back to their committed offsets, nothing pending.
    async fn redo(&mut self, why: &str) {
        tracing::warn!(why, "a transaction was not committed; aborting the ones after it and redoing their work from the committed offsets");
        self.shared.metrics.delivery_errors.add(1, &[opentelemetry::KeyValue::new("topic", "(transaction aborted)")]);
        self.abort_all().await;
        self.redos += 1;
        self.ledger = OffsetLedger::default();
        // What earlier transactions committed stays released, so a Redis-restart rewind over it
        // (the outage that failed the commit is often the same one) restores the store without
        // publishing it twice. Where the committed offsets cannot be read, nothing is assumed.
        let rewound = super::transaction::rewind_to_committed(self.consumer);
        if rewound.is_none() {
            // Unreadable committed offsets are, after a broker restart, offsets a transaction
            // left pending there (see `transaction`, "Orphaned records"): every member is swept,
            // which is safe, as the partitions come back from their committed offsets.
            if let Some(eo) = self.exactly_once.as_ref() {
                eo.pool.mark_all_dirty();
            }
        }
        self.released = rewound.unwrap_or_default();
    }

    /// Whether partitions were revoked with a transaction open (the revoke hook aborted it):
    /// then every transaction is aborted, and the partitions still owned rewound.
    pub async fn revoked(&mut self) -> bool {
        if !self.exactly_once.as_ref().is_some_and(|eo| eo.pool.take_revoked()) {
            return false;
        }
        self.redo("partitions were revoked").await;
        true
    }

    /// Under exactly once, the output of a message the broker refused for good in an aborted
    /// transaction is replaced by that message's dead letter.
    pub fn replace_refused(&self, batch: &[OwnedMessage], stage: Stage, outgoing: Vec<(Outgoing, usize)>) -> Vec<(Outgoing, usize)> {
        let Some(state) = &self.shared.transaction else { return outgoing };
        let mut replaced = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(outgoing.len());
        for (m, origin) in outgoing {
            if replaced.contains(&origin) {
                continue;
            }
            match state.refusal(&batch[origin]) {
                Some(failure) => {
                    replaced.insert(origin);
                    out.push((super::dead_letter::dead_letter(self.shared, &batch[origin], stage, &failure), origin));
                }
                None => out.push((m, origin)),
            }
        }
        out
    }

    /// Whether Redis restarted since the last look (only for the stage that writes the store).
    pub async fn redis_restarted(&mut self) -> bool {
        match self.guard.as_mut() {
            Some(guard) => guard.restarted(self.shared).await,
            None => false,
        }
    }

    /// Seeks back over the recent batches a restarted Redis may have lost, and over `dropped`
    /// (taken, not processed). What they publish was published already (released): redone,
    /// they only restore the store.
    pub fn rewind(&mut self, dropped: &[OwnedMessage]) {
        if let Some(guard) = self.guard.as_mut() {
            self.shared.replay.set(self.released.clone());
            guard.rewind(self.consumer, dropped);
            self.ledger = OffsetLedger::default();
        }
    }
}
