//! Exactly once: a transformer's output and its consumer offsets committed in one Kafka
//! transaction (KIP-447: the consumer group's metadata travels with the offsets, so a zombie
//! instance is fenced by the group's generation) — with a small pool of transactional producers
//! per stage that take turns, so that the stage goes on producing while a commit is in flight.
//!
//! [`super::turns`] decides which member holds which transaction and when one may commit (the
//! oldest, once its batches are acknowledged; one at a time, in order). This module makes the
//! calls: [`Pool::begin`], the commit ([`Pool::commit`], spawned, so the runner keeps going),
//! [`Pool::abort`] of every transaction when one cannot commit, a member recreated when the
//! broker fenced it, and the revoke hook. A produce the broker fails dooms its member's
//! transaction: it and every later one are aborted, and the partitions are rewound to their
//! committed offsets, so the work is redone and nothing is published twice to `read_committed`
//! readers.
//!
//! # Orphaned records
//!
//! A broker that restarts can complete a transaction without writing its marker to some of its
//! partitions: its transaction coordinator, loaded before the broker leads every partition
//! again, skips a partition without a leader as "likely deleted" (seen on a single broker with
//! a few thousand partitions, killed and started again: a transaction the coordinator aborted
//! on timeout). Those partitions keep the transaction's records open: `read_committed` readers
//! stop at them (the stage behind stalls), and the next transaction of the same producer that
//! writes the partition ends them with its own marker — a *commit* publishes the aborted
//! records as well, so the output holds them twice.
//!
//! So a member is *dirty* — swept before it carries work ([`Pool::sweep`]) — when its
//! transaction did not commit (aborted, fenced, given up), when it is new (its predecessor under
//! the same id may have left records open), and, for every member, when the committed offsets
//! cannot be read (pending offsets of an orphaned transaction make them unstable). A sweep is a
//! transaction that writes one empty record (header `metastream-sweep`) to every partition of
//! the topics the stage writes, adds the consumer group's offsets, and is aborted: its abort
//! marker ends whatever that producer left open there, as aborted. That is right for an aborted
//! transaction, and consistent for a committed one whose markers were all skipped (its output
//! and its offsets end aborted together: nothing of it was ever visible, and the work is redone
//! from the committed offsets) — so a sweep happens only where the partitions restart from their
//! committed offsets: at start, after an abort (the redo rewinds), after unreadable offsets (the
//! consumer rejoins). What no client can repair: a committed transaction whose markers reached
//! some partitions and not others. A stage with nothing to read sweeps too (the runner's idle
//! tick), since orphaned offsets of its own group can be what keeps it from reading.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer as _, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::dead_letter::Failure;
use super::ledger::TopicPartition;
use crate::kafka::{GroupConsumer, RevokeHook, SharedProducer};
use crate::watchdog::watched;

/// Consumed messages whose output the broker refused for good, and why: when their work is
/// redone, they are dead-lettered instead. One map for the whole pool (the redo may run on
/// another member).
type Refusals = Mutex<HashMap<(String, i32, i64), Failure>>;

/// What a member's delivery tasks tell the runner; each batch's tasks get their member's
/// (through [`super::Shared::transaction`]).
pub struct TxnState {
    /// Why the member's open transaction must be aborted, once it must.
    failure: Mutex<Option<String>>,
    refusals: Arc<Refusals>,
    /// Whether the member holds a transaction not yet committed or aborted (the revoke hook
    /// aborts it when set; a commit checks it before each call).
    open: AtomicBool,
    /// A commit call is under way on the member's producer (the revoke hook waits for it).
    in_call: AtomicBool,
    /// Its last transaction did not commit: it is swept before it carries work again (see
    /// "Orphaned records" in the module's doc).
    dirty: AtomicBool,
}

impl TxnState {
    fn new(refusals: Arc<Refusals>) -> Self {
        TxnState { failure: Mutex::new(None), refusals, open: AtomicBool::new(false), in_call: AtomicBool::new(false), dirty: AtomicBool::new(true) }
    }

    /// Records that the member's open transaction cannot commit.
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
    /// The transaction must be aborted, with every one after it; their work is redone.
    Aborted(String),
    /// The member's producer is fenced or broken for good: it is recreated, and the work redone.
    Fatal(String),
}

/// One transactional producer of the pool, and what its deliveries report.
pub(super) struct Member {
    pub producer: SharedProducer,
    pub state: Arc<TxnState>,
    transactional_id: String,
}

/// A stage's transactional producers (see the module's doc).
pub(super) struct Pool {
    members: Vec<Member>,
    /// What recreating a producer takes.
    kafka: crate::settings::KafkaSettings,
    limits: domain::TopicLimits,
    health: crate::health::Health,
    shutdown: crate::shutdown::CancellationToken,
    /// Taken by a commit to start a call (checking the transaction is still open and marking the
    /// call under way) and by the revoke hook for its whole run, so no commit call starts while
    /// the hook aborts. Never held across a librdkafka call: a call that hangs and is given up
    /// must not lock every later commit out.
    calls: Arc<Mutex<()>>,
    /// Set by the revoke hook when it aborted a transaction.
    revoked: Arc<AtomicBool>,
    /// What a sweep writes: every partition of these (the topics the stage writes) ...
    writes: Vec<String>,
    /// ... and an offset of this one (the stage's input), for its group.
    input: String,
}

impl Pool {
    /// `size` transactional producers (at least one), their transactions initialised: member
    /// `n` has the id `base` (the first) or `base.n`, stable across restarts where `base` is, so
    /// a restarted instance fences its predecessor's producers and aborts their transactions.
    ///
    /// # Errors
    /// When a producer cannot be created or the broker does not answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build(
        kafka: &crate::settings::KafkaSettings,
        limits: &domain::TopicLimits,
        base: &str,
        size: usize,
        (writes, input): (Vec<String>, String),
        health: crate::health::Health,
        shutdown: crate::shutdown::CancellationToken,
    ) -> anyhow::Result<Self> {
        let refusals = Arc::new(Refusals::default());
        let mut members = Vec::with_capacity(size.max(1));
        for n in 0..size.max(1) {
            let transactional_id = if n == 0 { base.to_owned() } else { format!("{base}.{n}") };
            let producer = SharedProducer::new(crate::kafka::transactional_producer(kafka, limits, &transactional_id).await?);
            members.push(Member { producer, state: Arc::new(TxnState::new(refusals.clone())), transactional_id });
        }
        tracing::info!(producers = members.len(), transactional_id = %base, "exactly once: output and offsets commit in one transaction; producers take turns");
        Ok(Pool {
            members,
            kafka: kafka.clone(),
            limits: *limits,
            health,
            shutdown,
            calls: Arc::new(Mutex::new(())),
            revoked: Arc::new(AtomicBool::new(false)),
            writes,
            input,
        })
    }

    pub(super) fn member(&self, n: usize) -> &Member {
        &self.members[n]
    }

    pub(super) fn members(&self) -> &[Member] {
        &self.members
    }

    /// What the consumer runs before partitions are revoked: it waits for a commit call under
    /// way, then aborts every transaction not committed (their output never becomes visible),
    /// and the runner redoes what it still owns.
    pub(super) fn revoke_hook(&self) -> RevokeHook {
        let members: Vec<(SharedProducer, Arc<TxnState>)> = self.members.iter().map(|m| (m.producer.clone(), m.state.clone())).collect();
        let (calls, revoked) = (self.calls.clone(), self.revoked.clone());
        Arc::new(move || {
            // On the consumer's poll, i.e. the runner's task: a hang here would stop the stage.
            let _calls = calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A commit call under way ends before anything is aborted — within a bound: a call
            // given up as hung (its producer replaced) never ends.
            let _watch = crate::watchdog::guard("waiting for a commit under way before a revoke", Duration::from_secs(90));
            let waiting = std::time::Instant::now();
            while members.iter().any(|(_, state)| state.in_call.load(Ordering::SeqCst)) && waiting.elapsed() < REVOKE_WAITS_FOR_CALL {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(_watch);
            for (producer, state) in &members {
                if !state.open.swap(false, Ordering::SeqCst) {
                    continue;
                }
                state.dirty.store(true, Ordering::SeqCst);
                let aborted = watched("abort_transaction before a revoke", Duration::from_secs(90), || producer.get().abort_transaction(Duration::from_secs(30)));
                match aborted {
                    Ok(()) => tracing::info!("partitions revoked: aborted an open transaction; its work is redone by their next owner"),
                    Err(err) => tracing::warn!(error = %err, "aborting a transaction before a revoke failed"),
                }
                revoked.store(true, Ordering::SeqCst);
            }
        })
    }

    /// Whether the revoke hook aborted a transaction (the flag is cleared).
    pub(super) fn take_revoked(&self) -> bool {
        self.revoked.swap(false, Ordering::SeqCst)
    }

    /// Begins a transaction on member `n`, swept first if it is dirty (until a sweep succeeds,
    /// or shutdown). A member that cannot begin — left fenced or in a fatal state by a failed
    /// call nobody else saw (an abort in the revoke hook during a broker outage, say) — is
    /// recreated once and begins on the new producer.
    ///
    /// # Errors
    /// When the member cannot be recreated, or the new producer cannot begin either.
    pub(super) async fn begin(&mut self, n: usize, group: impl Fn() -> Option<ConsumerGroupMetadata>) -> anyhow::Result<()> {
        let mut backoff = crate::retry::Backoff::infra();
        while self.is_dirty(n) && !self.shutdown.is_cancelled() {
            if self.sweep(n, group()).await.is_err() {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        if let Err(err) = self.try_begin(n) {
            tracing::warn!(error = %err, transactional_id = %self.members[n].transactional_id, "a producer could not begin a transaction; recreating it");
            self.recreate(n).await?;
            self.try_begin(n).context("beginning a transaction on a recreated producer")?;
        }
        Ok(())
    }

    fn try_begin(&self, n: usize) -> Result<(), KafkaError> {
        let m = &self.members[n];
        m.state.failure.lock().expect("txn lock").take();
        // Local, normally at once; seen to hang on a producer in a fatal state.
        watched("begin_transaction", Duration::from_secs(60), || m.producer.get().begin_transaction())?;
        m.state.open.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Commits member `n`'s transaction with `offsets` (every batch of it acknowledged, every
    /// transaction before it committed): a future that owns what it needs, for the runner to
    /// spawn and go on. Fails — without aborting: the runner aborts this transaction and every
    /// later one — when a delivery doomed it, a call failed, or the revoke hook aborted it.
    pub(super) fn commit(&self, n: usize, offsets: &BTreeMap<TopicPartition, i64>, group: Option<ConsumerGroupMetadata>) -> impl std::future::Future<Output = Result<(), NotCommitted>> + Send + 'static {
        let call = self.call(n);
        let mut tpl = TopicPartitionList::new();
        let added: Result<(), KafkaError> = offsets.iter().try_for_each(|((topic, partition), offset)| tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)));
        async move {
            let doomed = call.state.failure.lock().expect("txn lock").take();
            if let Some(why) = doomed {
                return Err(NotCommitted::Aborted(why));
            }
            added.map_err(|err| NotCommitted::Aborted(err.to_string()))?;
            let Some(group) = group else { return Err(NotCommitted::Aborted("the consumer has no group metadata".into())) };
            if tpl.count() > 0 {
                let group = Arc::new(group);
                call.retrying("sending offsets", SEND_OFFSETS_TIMEOUT, move |p, t| p.send_offsets_to_transaction(&tpl, &group, t)).await?;
            }
            let started = std::time::Instant::now();
            call.retrying("committing", COMMIT_TIMEOUT, |p, t| p.commit_transaction(t)).await?;
            if started.elapsed() > Duration::from_secs(1) {
                tracing::warn!(took = ?started.elapsed(), "a transaction commit was slow");
            }
            call.state.open.store(false, Ordering::SeqCst);
            call.health.clear_trouble();
            Ok(())
        }
    }

    /// Marks every member to be swept before it carries work (the committed offsets could not be
    /// read: see the module's doc).
    pub(super) fn mark_all_dirty(&self) {
        for m in &self.members {
            m.state.dirty.store(true, Ordering::SeqCst);
        }
    }

    /// Whether member `n` must be swept before it carries work.
    pub(super) fn is_dirty(&self, n: usize) -> bool {
        self.members[n].state.dirty.load(Ordering::SeqCst)
    }

    /// Sweeps member `n` (see "Orphaned records" in the module's doc): a transaction with an
    /// empty record on every partition the stage writes and an offset for `group`, aborted. The
    /// member is clean once the abort succeeded.
    ///
    /// # Errors
    /// What failed (logged): the member stays dirty, to be swept again.
    pub(super) async fn sweep(&mut self, n: usize, group: Option<ConsumerGroupMetadata>) -> Result<(), ()> {
        let transactional_id = self.members[n].transactional_id.clone();
        let written = self.sweep_writes(n, group).await;
        let broken = match &written {
            Err(SweepFailed { why, broken: true }) => Some(why.clone()),
            _ if !self.members[n].state.open.load(Ordering::SeqCst) => Some(written.as_ref().err().map(|e| e.why.clone()).unwrap_or_default()),
            _ => None,
        };
        if let Some(why) = broken {
            // It could not begin, or a call on it failed for good or hung (an abort would only
            // wait behind that call): a new producer, dirty too, is swept next time.
            tracing::warn!(%transactional_id, why, "a producer being swept is broken; recreating it");
            let _ = self.recreate(n).await;
            return Err(());
        }
        // Whatever was written, the transaction is aborted.
        let call = self.call(n);
        let aborted = call.attempts("aborting a sweep", Duration::from_secs(30), |p, t| p.abort_transaction(t)).await;
        self.members[n].state.open.store(false, Ordering::SeqCst);
        match (written, aborted) {
            (Ok(partitions), Ok(())) => {
                self.members[n].state.dirty.store(false, Ordering::SeqCst);
                tracing::info!(%transactional_id, partitions, "swept a producer whose transaction did not commit: whatever it left open is aborted");
                Ok(())
            }
            (written, aborted) => {
                let why = written.err().map(|e| e.why).or(aborted.as_ref().err().map(ToString::to_string)).unwrap_or_default();
                tracing::warn!(%transactional_id, why, "sweeping a producer whose transaction did not commit failed; it is swept again before it carries work");
                if aborted.as_ref().is_err_and(is_fatal) {
                    // The new producer is dirty too (recreate).
                    let _ = self.recreate(n).await;
                }
                Err(())
            }
        }
    }

    /// A sweep's writes, in a transaction begun on member `n`: how many partitions it wrote.
    async fn sweep_writes(&mut self, n: usize, group: Option<ConsumerGroupMetadata>) -> Result<usize, SweepFailed> {
        self.try_begin(n).map_err(|err| SweepFailed::retry(format!("beginning: {err}")))?;
        let producer = self.members[n].producer.get();
        let (p, topics) = (producer.clone(), self.writes.clone());
        let partitions = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for topic in &topics {
                let metadata = p.client().fetch_metadata(Some(topic), Duration::from_secs(10))?;
                all.extend(metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|pm| (topic.clone(), pm.id()))));
            }
            Ok::<_, KafkaError>(all)
        })
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("reading partitions: {err}"))?;
        let marker = OwnedHeaders::new().insert(Header { key: domain::schema::headers::SWEEP, value: Some("aborted") });
        let mut acks = Vec::with_capacity(partitions.len());
        for (topic, partition) in &partitions {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).partition(*partition).payload(&[][..]).headers(marker.clone());
            acks.push(producer.send_result(record).map_err(|(err, _)| format!("producing to {topic}[{partition}]: {err}"))?);
        }
        for ack in tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(acks)).await.map_err(|_| SweepFailed::retry("acknowledgements timed out".into()))? {
            match ack {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => return Err(SweepFailed::retry(format!("a record was not acknowledged: {err}"))),
                Err(_) => return Err(SweepFailed::retry("a record was cancelled".into())),
            }
        }
        if let Some(group) = group {
            // Adds the group's offsets partition to the transaction; the offset is never
            // committed (the transaction is aborted).
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.input, 0, Offset::Offset(0)).map_err(|err| err.to_string())?;
            let group = Arc::new(group);
            let call = self.call(n);
            // Adding the offsets partition comes first; the commit of offsets that follows can be
            // refused (a consumer not in its group yet has no generation) and the abort still
            // reaches that partition.
            match call.attempts("sweeping the group's offsets", SEND_OFFSETS_TIMEOUT, move |p, t| p.send_offsets_to_transaction(&tpl, &group, t)).await {
                Err(err) if is_fatal(&err) => return Err(SweepFailed { why: format!("adding the group's offsets: {err}"), broken: true }),
                Err(err) => tracing::debug!(error = %err, "a sweep's offsets were refused; it is aborted all the same"),
                Ok(()) => {}
            }
        }
        Ok(partitions.len())
    }

    /// Sweeps every dirty member, when none holds a transaction (the runner's idle tick).
    pub(super) async fn sweep_idle(&mut self, group: impl Fn() -> Option<ConsumerGroupMetadata>) {
        for n in 0..self.members.len() {
            if self.is_dirty(n) && !self.members[n].state.open.load(Ordering::SeqCst) {
                let _ = self.sweep(n, group()).await;
            }
        }
    }

    /// Aborts the transactions of `members` (oldest first; those the revoke hook already
    /// aborted are skipped), retrying while the broker cannot be reached: nothing more may be
    /// produced on a member until its transaction is aborted. A member fenced or broken for good
    /// is recreated. Each is dirty afterwards.
    ///
    /// # Errors
    /// When a broken member cannot be recreated: the stage cannot go on.
    pub(super) async fn abort(&mut self, members: &[usize]) -> anyhow::Result<()> {
        for &n in members {
            let m = &self.members[n];
            m.state.failure.lock().expect("txn lock").take();
            if !m.state.open.swap(false, Ordering::SeqCst) {
                continue;
            }
            m.state.dirty.store(true, Ordering::SeqCst);
            let call = self.call(n);
            match call.attempts("aborting", Duration::from_secs(30), |p, t| p.abort_transaction(t)).await {
                Err(err) if is_fatal(&err) => {
                    tracing::warn!(error = %err, transactional_id = %m.transactional_id, "aborting failed for good");
                    self.recreate(n).await?;
                }
                Err(err) => tracing::warn!(error = %err, "aborting the transaction failed"),
                Ok(()) => self.health.clear_trouble(),
            }
        }
        Ok(())
    }

    /// Replaces member `n`'s producer, which the broker fenced (its transaction outlived
    /// `transaction.timeout.ms` during a broker outage, or another instance took its id), with
    /// a new one under the same transactional id, so the stage goes on.
    ///
    /// # Errors
    /// When the new producer cannot be created.
    pub(super) async fn recreate(&mut self, n: usize) -> anyhow::Result<()> {
        self.health.set_trouble("a transactional producer was fenced; initialising a new one");
        let m = &self.members[n];
        let producer = crate::kafka::transactional_producer(&self.kafka, &self.limits, &m.transactional_id).await?;
        // The fenced producer goes (librdkafka's destroy) unless a delivery still holds it.
        watched("dropping a fenced producer", Duration::from_secs(60), || m.producer.replace(producer));
        m.state.open.store(false, Ordering::SeqCst);
        m.state.dirty.store(true, Ordering::SeqCst);
        // A call given up as hung still runs on the old producer: it no longer concerns anyone.
        m.state.in_call.store(false, Ordering::SeqCst);
        tracing::warn!(transactional_id = %m.transactional_id, "the producer was fenced; recreated it");
        Ok(())
    }

    /// What member `n`'s calls need, owned.
    fn call(&self, n: usize) -> Call {
        let m = &self.members[n];
        Call { producer: m.producer.clone(), state: m.state.clone(), calls: self.calls.clone(), health: self.health.clone(), shutdown: self.shutdown.clone() }
    }

    /// Purges what every member still holds for the broker (a delivery stuck past its limit):
    /// the deliveries fail, which dooms their transactions.
    pub(super) async fn purge(&self) {
        for m in &self.members {
            m.state.doom(&KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::MessageTimedOut));
            let producer = m.producer.get();
            let _ = tokio::task::spawn_blocking(move || {
                watched("purging the producer's queue", Duration::from_secs(60), || producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight()))
            })
            .await;
        }
    }
}

/// Why a sweep did not happen, and whether the member's producer is broken (a call on it failed
/// for good or was given up as hung: it is replaced rather than aborted).
struct SweepFailed {
    why: String,
    broken: bool,
}

impl SweepFailed {
    fn retry(why: String) -> Self {
        SweepFailed { why, broken: false }
    }
}

impl From<String> for SweepFailed {
    fn from(why: String) -> Self {
        SweepFailed::retry(why)
    }
}

/// What one member's transactional calls need, owned (a commit runs in a task of its own).
struct Call {
    producer: SharedProducer,
    state: Arc<TxnState>,
    calls: Arc<Mutex<()>>,
    health: crate::health::Health,
    shutdown: crate::shutdown::CancellationToken,
}

impl Call {
    /// A commit's call: [`Self::attempts`], each attempt started under the lock the revoke hook
    /// takes and only while the transaction is still open (the hook may have aborted it
    /// meanwhile), and marked under way until it returns.
    async fn retrying(
        &self,
        what: &'static str,
        timeout: Duration,
        call: impl Fn(&FutureProducer, Duration) -> Result<(), KafkaError> + Send + Sync + 'static,
    ) -> Result<(), NotCommitted> {
        let (calls, state) = (self.calls.clone(), self.state.clone());
        let guarded = move |p: &FutureProducer, t: Duration| {
            {
                let _calls = calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if !state.open.load(Ordering::SeqCst) {
                    return Err(KafkaError::Canceled);
                }
                state.in_call.store(true, Ordering::SeqCst);
            }
            let result = call(p, t);
            state.in_call.store(false, Ordering::SeqCst);
            result
        };
        match self.attempts(what, timeout, guarded).await {
            Ok(()) => Ok(()),
            Err(_) if !self.state.open.load(Ordering::SeqCst) => Err(NotCommitted::Aborted("partitions were revoked".into())),
            Err(err) if is_fatal(&err) => Err(NotCommitted::Fatal(err.to_string())),
            Err(err) => Err(NotCommitted::Aborted(err.to_string())),
        }
    }

    /// Runs a blocking transactional call (given its `timeout`) off the runtime, again (with
    /// backoff, reporting not ready) while librdkafka says the same call may succeed when
    /// retried — the broker is down, a request timed out — until it does, fails otherwise, or
    /// shutdown comes. A call that has not returned [`HUNG_AFTER`] past its own timeout is given
    /// up: `KafkaError::Canceled`, which [`is_fatal`] counts as fatal, so the producer is
    /// replaced and the work redone.
    async fn attempts(
        &self,
        what: &'static str,
        timeout: Duration,
        call: impl Fn(&FutureProducer, Duration) -> Result<(), KafkaError> + Send + Sync + 'static,
    ) -> Result<(), KafkaError> {
        let call = Arc::new(call);
        let mut backoff = crate::retry::Backoff::infra();
        loop {
            let (attempt, producer) = (call.clone(), self.producer.get());
            let result = match tokio::time::timeout(timeout + HUNG_AFTER, tokio::task::spawn_blocking(move || attempt(&producer, timeout))).await {
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
}

/// How long the revoke hook waits for a commit call under way to end before it aborts anyway
/// (the commit then fails and its work is redone): longer than any such call takes, since one
/// returns within its timeout or is given up [`HUNG_AFTER`] past it.
const REVOKE_WAITS_FOR_CALL: Duration = Duration::from_secs(COMMIT_TIMEOUT.as_secs() + HUNG_AFTER.as_secs() + 5);

/// The timeouts a commit (and a sweep) gives librdkafka's `send_offsets_to_transaction`, and a
/// commit gives `commit_transaction`. Short, because a call that times out is retried
/// (librdkafka says a timeout is retriable and resumes the same operation) while a call that
/// hangs is given up only [`HUNG_AFTER`] past its timeout, and delivery waits meanwhile: a
/// rolling restart saw `send_offsets_to_transaction` hang with 30 s (40 s without delivery). A
/// commit flushes the transaction's records first, which `transaction.timeout.ms` (10 s)
/// bounds, hence its 20 s.
const SEND_OFFSETS_TIMEOUT: Duration = Duration::from_secs(10);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long past its own timeout a blocking transactional call may take before the producer is
/// given up as stuck: librdkafka's `send_offsets_to_transaction` was seen waiting for ever (on
/// an internal condition, its timeout ignored) after the broker leading its partitions was
/// killed, and again during a rolling restart — the stage then published nothing more until it
/// was restarted. Upstream: librdkafka#5456 (a coordinator request's timeout is never checked;
/// fix proposed in librdkafka#5457) and librdkafka#5511 (a decommissioned coordinator stays
/// cached). A call cut short this way costs a redo of the transaction's work, never a loss.
const HUNG_AFTER: Duration = Duration::from_secs(5);

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

