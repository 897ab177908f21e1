//! [`StageRunner`]: a transformer's consume loop. Batches are taken, run through a
//! [`Processor`], handed to Kafka, and delivered by tasks running side by side (up to
//! `pipeline_depth` batches unreleased); the [`OffsetLedger`] decides which offsets each
//! finished batch releases.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::store::Pool;
use domain::Stage;
use rdkafka::consumer::CommitMode;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer as _;
use tokio::task::JoinSet;
use tokio::time::sleep_until;

use super::guard::StoreGuard;
use super::ledger::{BatchId, OffsetLedger, TopicPartition};
use super::transaction::{NotCommitted, Transaction, TxnState};
use super::produce::{deliver, enqueue_all, Outgoing};
use crate::health::Health;
use crate::kafka::GroupConsumer;
use crate::shutdown::{CancellationToken, Interrupted};

/// Starting from `first`, takes whatever else arrives within `linger`, up to `max` messages.
/// Never abandons a message it has taken (it is not cancelled midway).
async fn fill_batch(consumer: &GroupConsumer, first: OwnedMessage, max: usize, linger: Duration) -> Vec<OwnedMessage> {
    let mut batch = Vec::with_capacity(max.min(1024));
    batch.push(first);
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "kafka consumer error");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// A span for processing one consumed message, a child of the trace context it carries, with
/// the OpenTelemetry messaging attributes.
pub fn process_span(s: &Shared, stage: Stage, message: &OwnedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {}", message.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = message.topic(),
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.consumer.group.name = %s.group,
        metastream.stage = stage.as_str(),
        metastream.event.id = tracing::field::Empty,
        metastream.source = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    crate::telemetry::propagation::set_parent(&span, crate::telemetry::propagation::from_kafka(message));
    crate::telemetry::propagation::record_trace_id(&span);
    span
}

/// What a transformer does with a batch; the [`StageRunner`] does the rest.
pub trait Processor {
    /// Makes the batch's effects before Kafka durable (Redis written) and says what to produce.
    ///
    /// # Errors
    /// [`Interrupted`] when shutdown came first: the batch is then not committed.
    fn process(&self, batch: &[OwnedMessage]) -> impl std::future::Future<Output = Result<Processed, Interrupted>> + Send;
}

/// A transformer's processing, as a service: which one it is and how it is made from the
/// stage's clients. [`Transformer`] does the rest.
pub trait Transform: Processor + Sized {
    const SERVICE: crate::settings::Service;

    /// The processor, made from the stage's clients.
    fn new(shared: &Shared) -> Self;
}

/// A transformer service: a [`StageRunner`] with its [`Transform`] — what each transformer
/// binary builds and runs (`Transformer<PreProcessor>` is the pre-transformer).
pub struct Transformer<T> {
    runner: StageRunner,
    transform: std::marker::PhantomData<T>,
}

impl<T: Transform> Transformer<T> {
    /// Connects to Kafka and Redis, loads source configs and binds the health endpoint.
    ///
    /// # Errors
    /// When the settings are invalid or a client cannot be created.
    pub async fn build(settings: crate::Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Ok(Transformer { runner: StageRunner::build(settings, T::SERVICE, shutdown).await?, transform: std::marker::PhantomData })
    }

    /// The port of `/healthz` and `/readyz`.
    pub fn port(&self) -> u16 {
        self.runner.port()
    }

    /// Processes batches until shutdown; then commits what is done and flushes the producer.
    ///
    /// # Errors
    /// When the pipeline cannot go on, or the health server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let transform = T::new(self.runner.shared());
        self.runner.run(transform).await
    }
}

/// What a [`Processor`] made of a batch.
pub struct Processed {
    /// The messages to produce, each with the index of the batch message it came from (its
    /// dead letter replaces it if Kafka refuses it for good).
    pub outgoing: Vec<(Outgoing, usize)>,
    /// Runs once Kafka acknowledged every message (counts, ends spans).
    pub on_delivered: Box<dyn FnOnce() + Send>,
}

/// The clients a transformer's processing uses; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    /// The producer (replaced when a transactional one is fenced).
    pub producer: crate::kafka::SharedProducer,
    pub pool: Pool,
    pub catalog: std::sync::Arc<crate::SourceCatalog>,
    pub health: Health,
    pub keys: domain::KeySchema,
    pub topics: domain::Topics,
    pub redis_timeout: Duration,
    pub instance: String,
    pub shutdown: CancellationToken,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The consumer group of this stage.
    pub group: String,
    /// The largest message each pipeline topic takes (read from the broker at start-up).
    pub limits: domain::TopicLimits,
    /// Under exactly once: what delivery tasks report about the open transaction.
    pub transaction: Option<Arc<TxnState>>,
    /// Messages already published, being redone only to restore the store (after a Redis
    /// restart): their output must not be published again.
    pub replay: Replay,
    /// How long the first ingest position of a keyed request is remembered
    /// (`gateway.idempotency_window_s`).
    pub dedupe_window: Duration,
}

/// Per partition, the offset below which every consumed message's output is already published
/// (released); set when the Redis-restart guard rewinds. Cheap to clone.
#[derive(Clone, Default)]
pub struct Replay(Arc<std::sync::Mutex<BTreeMap<TopicPartition, i64>>>);

impl Replay {
    /// Whether `m`'s output was already published: redo only its effects on the store.
    pub fn covers(&self, m: &OwnedMessage) -> bool {
        let below = self.0.lock().expect("replay lock");
        !below.is_empty() && below.get(&(m.topic().to_owned(), m.partition())).is_some_and(|end| m.offset() < *end)
    }

    fn set(&self, released: BTreeMap<TopicPartition, i64>) {
        *self.0.lock().expect("replay lock") = released;
    }
}

impl Shared {
    /// The processed records in Redis, through this stage's pool.
    pub fn records(&self) -> crate::store::Records {
        crate::store::Records::new(self.pool.clone(), self.keys.clone(), self.redis_timeout, self.metrics.clone(), self.dedupe_window)
    }
}

/// A transformer's consume loop: batches in, [`Processor`] over them, offsets committed after.
pub struct StageRunner {
    consumer: GroupConsumer,
    shared: Shared,
    health_server: actix_web::dev::Server,
    port: u16,
    settings: crate::settings::TransformerSettings,
    input_topic: String,
    deadline: Duration,
    /// Whether this stage writes the store (the pre-transformer), and so must redo recent work
    /// when Redis restarts having lost its last writes.
    guards_store: bool,
    stage: Stage,
    /// Messages of the batch being processed (the in-flight gauge).
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Under exactly once, the runner's transaction.
    transaction: Option<Transaction>,
    /// How long the loop has been on one step ([`crate::liveness`]).
    loop_watch: Arc<crate::liveness::LoopWatch>,
    /// Whether the partitions move ([`crate::liveness`]); told what the stage commits.
    fetch_watch: Arc<crate::liveness::FetchWatch>,
}

impl StageRunner {
    /// Creates the clients of `service` (a transformer), loads source configs and binds the
    /// health endpoint.
    ///
    /// # Errors
    /// When the settings are invalid or a client cannot be created.
    pub async fn build(
        settings: crate::Settings,
        service: crate::settings::Service,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        use crate::settings::Service;
        settings.validate(service)?;
        let (t, input_topic) = match service {
            Service::PreTransformer => (&settings.pre_transformer, &settings.kafka.topics.ingest),
            Service::PostTransformer => (&settings.post_transformer, &settings.kafka.topics.processed),
            other => anyhow::bail!("{} is not a transformer", other.name()),
        };
        if settings.kafka.create_topics {
            crate::kafka::ensure_topics(&settings.kafka).await?;
        }
        let limits = crate::kafka::topic_limits(&settings.kafka).await?;
        let metrics = crate::metrics::Metrics::new(service.name(), &settings.telemetry.otlp_endpoint);
        let exactly_once = settings.delivery.guarantee == crate::settings::Guarantee::ExactlyOnce;
        let transactional_id = exactly_once.then(|| transactional_id(&t.group_id, &t.listen));
        let (producer, txn_state, commits) = match &transactional_id {
            Some(id) => {
                let producer = crate::kafka::SharedProducer::new(crate::kafka::transactional_producer(&settings.kafka, &limits, id).await?);
                let state = Arc::new(TxnState::default());
                let hook = Transaction::revoke_hook(producer.clone(), state.clone());
                tracing::info!(transactional_id = %id, "exactly once: output and offsets commit in one transaction");
                (producer, Some(state), crate::kafka::Commits::InTransaction(hook))
            }
            None => {
                let producer = crate::kafka::SharedProducer::new(crate::kafka::producer(&settings.kafka, Some(&limits))?);
                (producer, None, crate::kafka::Commits::StoredEvery(Duration::from_millis(t.commit_interval_ms)))
            }
        };

        // The gateway writes the ingest topic without transactions; the processed topic is the
        // pre-transformer's transactional output.
        let input = if service == Service::PreTransformer { crate::liveness::Input::Plain } else { crate::liveness::Input::Transactional };
        let fetch_watch = crate::liveness::FetchWatch::start(&settings.kafka, input)?;
        let consumer = crate::kafka::consumer(&settings.kafka, &t.group_id, &[input_topic], Some(metrics.clone()), commits, Some(t.fetch()), Some(fetch_watch.clone()))?;
        let pool = crate::store::pool(&settings.redis)?;
        crate::metrics::register_client_gauges(&metrics, &producer.get(), &pool);
        let catalog = crate::SourceCatalog::start(&settings, pool.clone(), shutdown.clone(), metrics.clone()).await?;
        let probe = crate::kafka::probe(&settings.kafka, input_topic)?;
        let health = Health::new(Some((pool.clone(), settings.redis.timeout())), Some(probe));
        let (health_server, port) = crate::http::health_server(&t.listen, health.clone(), metrics.clone())?;
        let loop_watch = crate::liveness::LoopWatch::start(health.clone(), shutdown.clone())?;
        fetch_watch.watch_health(health.clone());
        let transaction = txn_state.clone().zip(transactional_id).map(|(state, id)| {
            let window = super::transaction::Window { min: settings.delivery.transaction_min(), max: settings.delivery.transaction_interval() };
            Transaction::new(producer.clone(), settings.kafka.clone(), limits, id, state, window, health.clone(), shutdown.clone())
        });
        let stage = if service == Service::PreTransformer { Stage::Pre } else { Stage::Post };
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gauge = in_flight.clone();
        metrics.gauge("metastream_batch_in_flight_messages", "Messages of the batch being processed", move || {
            vec![(gauge.load(std::sync::atomic::Ordering::Relaxed) as i64, vec![opentelemetry::KeyValue::new("stage", stage.as_str())])]
        });
        Ok(StageRunner {
            consumer,
            shared: Shared {
                producer,
                pool,
                catalog,
                health,
                keys: domain::KeySchema::new(&settings.redis.key_prefix),
                topics: settings.kafka.topics.clone(),
                redis_timeout: settings.redis.timeout(),
                instance: crate::instance_id(),
                shutdown,
                metrics,
                group: t.group_id.clone(),
                limits,
                transaction: txn_state,
                replay: Replay::default(),
                dedupe_window: Duration::from_secs(settings.gateway.idempotency_window_s),
            },
            transaction,
            health_server,
            port,
            settings: t.clone(),
            input_topic: input_topic.clone(),
            deadline: settings.shutdown.deadline(),
            guards_store: service == Service::PreTransformer,
            stage,
            in_flight,
            loop_watch,
            fetch_watch,
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The port of `/healthz` and `/readyz`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs batches through `processor` until shutdown; then commits what is done
    /// synchronously and flushes the producer.
    ///
    /// Batches are pipelined: once a batch's messages are handed to the producer, the next
    /// batch is taken while Kafka acknowledges them, up to `pipeline_depth` batches in flight.
    /// Offsets are committed strictly in batch order, each batch only once everything it led
    /// to is acknowledged.
    ///
    /// # Errors
    /// When the health server fails.
    pub async fn run(mut self, processor: impl Processor) -> anyhow::Result<()> {
        let handle = self.health_server.handle();
        let server = tokio::spawn(self.health_server);
        // The stage and its health server share one thread: a call that hangs on it would
        // stop both for good. The longest bounded blocking call on it (a rewind's reads and
        // seeks, a revoke's abort) takes well under this.
        crate::watchdog::watch_runtime(RUNTIME_STALL);
        let s = &self.shared;
        tracing::info!(group = %self.settings.group_id, topic = %self.input_topic, depth = self.settings.pipeline_depth, "consuming");
        let linger = Duration::from_millis(self.settings.batch_linger_ms);
        let mut pipeline = Pipeline {
            consumer: &self.consumer,
            tasks: JoinSet::new(),
            sizes: HashMap::new(),
            ledger: OffsetLedger::default(),
            in_flight_messages: &self.in_flight,
            guard: self.guards_store.then(StoreGuard::default),
            shared: s,
            stopped: None,
            transaction: self.transaction.take(),
            released: BTreeMap::new(),
            idle_since: tokio::time::Instant::now(),
            linger: linger.max(Duration::from_millis(1)),
            liveness: &self.fetch_watch,
        };
        let depth = self.settings.pipeline_depth.max(1);
        while pipeline.stopped.is_none() {
            // Waiting for a message is also when acknowledged batches are finished, so an idle
            // stage leaves nothing unmarked. `recv` and `join_next` are cancel-safe.
            let commit_due = pipeline.commit_due();
            // Waiting here for work is never a stall; every step taken from here must end.
            self.loop_watch.waiting();
            let first = tokio::select! {
                biased;
                _ = s.shutdown.cancelled() => break,
                Some(done) = pipeline.tasks.join_next_with_id(), if !pipeline.tasks.is_empty() => {
                    pipeline.finished(done);
                    continue;
                }
                _ = sleep_until(commit_due.unwrap_or_else(tokio::time::Instant::now)), if commit_due.is_some() => {
                    self.loop_watch.busy();
                    pipeline.commit().await;
                    continue;
                }
                received = self.consumer.recv() => {
                    self.loop_watch.busy();
                    match received {
                        Ok(m) => m.detach(),
                        Err(err) => {
                            tracing::warn!(error = %err, "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
            };
            let batch = fill_batch(&self.consumer, first, self.settings.batch_size, linger).await;
            if pipeline.revoked().await {
                // The transaction these messages would join was aborted: what is still owned
                // was rewound and is read again.
                continue;
            }
            pipeline.finish_acknowledged();
            if pipeline.redis_restarted().await {
                pipeline.finish_all().await;
                pipeline.commit().await;
                // The batch just taken is dropped unprocessed: the rewind covers it too.
                pipeline.rewind(&batch);
                continue;
            }
            if pipeline.stopped.is_some() {
                break;
            }
            match pipeline.begin().await {
                Ok(true) => {}
                // Revoked meanwhile: the batch is dropped, what is still owned read again.
                Ok(false) => continue,
                Err(err) => {
                    pipeline.stopped = Some(Stopped::Broken(format!("opening a transaction failed: {err}")));
                    break;
                }
            }
            let started = std::time::Instant::now();
            let Ok(processed) = processor.process(&batch).await else { break };
            let (messages, origins): (Vec<Outgoing>, Vec<usize>) = pipeline.replace_refused(&batch, self.stage, processed.outgoing).into_iter().unzip();
            let Ok(sent) = enqueue_all(s, &messages).await else { break };
            let (shared, stage) = (s.clone(), self.stage);
            let on_delivered = processed.on_delivered;
            pipeline.start(batch, move |batch| async move {
                let result = deliver(&shared, &batch, stage, &messages, &origins, sent).await;
                if result.is_ok() {
                    on_delivered();
                }
                let stage_attr = [opentelemetry::KeyValue::new("stage", stage.as_str())];
                shared.metrics.batch_duration.record(started.elapsed().as_secs_f64(), &stage_attr);
                shared.metrics.batch_size.record(batch.len() as u64, &stage_attr);
                (batch, result)
            });
            // At most `depth` batches unreleased: a batch stuck retrying holds the stage there.
            while pipeline.ledger.len() >= depth && pipeline.stopped.is_none() {
                pipeline.finish_next().await;
            }
            if pipeline.commit_due().is_some_and(|at| at <= tokio::time::Instant::now()) {
                pipeline.commit().await;
            }
        }
        match &pipeline.stopped {
            Some(Stopped::Broken(cause)) => {
                tracing::error!(cause = %cause, "the pipeline cannot go on; stopping without committing past the unfinished batch");
            }
            _ => tracing::info!("stopping: finishing batches in flight, committing finished work and flushing the producer"),
        }
        pipeline.finish_all().await;
        if pipeline.transaction.is_some() {
            if matches!(pipeline.stopped, Some(Stopped::Broken(_))) {
                pipeline.abort("stopping on an error".into()).await;
            } else {
                pipeline.commit().await;
            }
        } else {
            crate::kafka::commit_stored(&self.consumer, CommitMode::Sync);
        }
        let producer = s.producer.get();
        let deadline = self.deadline;
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || producer.flush(deadline)).await {
            tracing::warn!(error = %err, "flushing the producer failed");
        }
        handle.stop(true).await;
        server.await??;
        match pipeline.stopped {
            Some(Stopped::Broken(cause)) => Err(anyhow::anyhow!(cause)),
            None | Some(Stopped::Requested) => Ok(()),
        }
    }
}

/// Why a [`StageRunner`] stopped before shutdown was asked for, or that it was.
#[derive(Debug)]
enum Stopped {
    /// Shutdown came while a batch was unfinished.
    Requested,
    /// The pipeline cannot go on: the runner ends with this error, so the process exits
    /// non-zero and the orchestrator restarts it (never a silent exit 0).
    Broken(String),
}

/// How long the stage's thread may be blocked before the process gives up ([`crate::watchdog`]).
const RUNTIME_STALL: Duration = Duration::from_secs(120);

/// How long, under exactly once, a batch's deliveries may take before the transaction is
/// aborted: well past `kafka.produce_timeout_ms`, after which each message has an outcome.
const STUCK_DELIVERY: Duration = Duration::from_secs(30);

/// A batch, back from its delivery task, and whether everything it led to was acknowledged.
type Delivered = (Vec<OwnedMessage>, Result<(), Interrupted>);

/// The batches a [`StageRunner`] has handed to Kafka and not yet released: their delivery
/// tasks, the [`OffsetLedger`] that says which offsets each completion releases, and the
/// in-flight gauge.
struct Pipeline<'a> {
    consumer: &'a GroupConsumer,
    shared: &'a Shared,
    tasks: JoinSet<(BatchId, Delivered)>,
    /// Each task's batch and its size (the gauge's share), also when the task fails.
    sizes: HashMap<tokio::task::Id, (BatchId, usize)>,
    ledger: OffsetLedger,
    in_flight_messages: &'a AtomicUsize,
    guard: Option<StoreGuard>,
    /// Why the runner must stop, once it must: a batch was not finished, so nothing after it
    /// may be stored (its messages would be skipped) and they are redelivered.
    stopped: Option<Stopped>,
    /// Under exactly once, the open transaction.
    transaction: Option<Transaction>,
    /// Per partition, the highest offset released so far (for the Redis-restart guard).
    released: BTreeMap<TopicPartition, i64>,
    /// When a batch last started or finished.
    idle_since: tokio::time::Instant,
    /// How long the stage waits for more of a batch: having had nothing to do for this long,
    /// it has nothing more to read.
    linger: Duration,
    /// Told what is committed: a partition's progress.
    liveness: &'a crate::liveness::FetchWatch,
}

impl Pipeline<'_> {
    /// Hands `batch` to a delivery task made by `deliver`, recording it in the ledger.
    fn start<F, Fut>(&mut self, batch: Vec<OwnedMessage>, deliver: F)
    where
        F: FnOnce(Vec<OwnedMessage>) -> Fut,
        Fut: std::future::Future<Output = Delivered> + Send + 'static,
    {
        let id = self.ledger.open(batch.iter().map(|m| ((m.topic().to_owned(), m.partition()), m.offset())));
        let size = batch.len();
        self.in_flight_messages.fetch_add(size, Ordering::Relaxed);
        let task = deliver(batch);
        self.idle_since = tokio::time::Instant::now();
        let handle = self.tasks.spawn(async move { (id, task.await) });
        self.sizes.insert(handle.id(), (id, size));
    }

    /// Finishes the batches whose tasks are already done.
    fn finish_acknowledged(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }

    /// Waits for the next task to end and finishes its batch.
    async fn finish_next(&mut self) {
        if self.transaction.is_none() {
            if let Some(done) = self.tasks.join_next_with_id().await {
                self.finished(done);
            }
            return;
        }
        // Under exactly once, a delivery that neither succeeds nor fails (the producer waiting
        // for the broker to hand it a transactional id again) must not hold the stage for
        // ever: past the limit, the transaction is aborted, which fails what it still holds.
        match tokio::time::timeout(STUCK_DELIVERY, self.tasks.join_next_with_id()).await {
            Ok(Some(done)) => self.finished(done),
            Ok(None) => {}
            Err(_) => {
                if let Some(state) = &self.shared.transaction {
                    state.doom(&rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::MessageTimedOut));
                }
                let producer = self.shared.producer.get();
                tracing::warn!(after = ?STUCK_DELIVERY, "the transaction's deliveries did not complete; aborting it");
                let _ = tokio::task::spawn_blocking(move || {
                    use rdkafka::producer::Producer as _;
                    crate::watchdog::watched("purging the producer's queue", Duration::from_secs(60), || {
                        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight())
                    })
                })
                .await;
            }
        }
    }

    async fn finish_all(&mut self) {
        while !self.tasks.is_empty() {
            self.finish_next().await;
        }
    }

    /// Records how a batch's delivery ended: done releases the offsets the ledger allows
    /// (stored, and committed by librdkafka every `commit_interval_ms`); interrupted or failed
    /// holds back that batch and everything after it.
    fn finished(&mut self, done: Result<(tokio::task::Id, (BatchId, Delivered)), tokio::task::JoinError>) {
        let task = match &done {
            Ok((task, _)) => *task,
            Err(err) => err.id(),
        };
        let (id, size) = self.sizes.remove(&task).expect("every task is recorded");
        self.idle_since = tokio::time::Instant::now();
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
        if released.offsets.is_empty() {
            return;
        }
        self.shared.health.clear_trouble();
        // Only offsets that advance: batches redone after a Redis restart release offsets below
        // what is already released, which must not move the group back.
        let mut advancing = BTreeMap::new();
        for (tp, offset) in released.offsets {
            if self.released.get(&tp).is_none_or(|done| offset > *done) {
                self.released.insert(tp.clone(), offset);
                advancing.insert(tp, offset);
            }
        }
        if advancing.is_empty() {
            return;
        }
        match self.transaction.as_mut() {
            // Committed with the transaction.
            Some(txn) => txn.release(&advancing),
            None => match crate::kafka::store_positions(self.consumer, &advancing) {
                // librdkafka commits what is stored within `commit_interval_ms`.
                Ok(()) => self.liveness.committed(&advancing),
                // Revoked meanwhile: the partition's new owner redelivers (at least once).
                Err(err) => tracing::warn!(error = %err, "storing offsets failed; the batch may be redelivered"),
            },
        }
    }

    /// Opens a transaction for the next batch (under exactly once, unless one is open).
    /// `false` when partitions were revoked since the batch was taken: the transaction it would
    /// have joined is aborted and the batch must be dropped (what is still owned is re-read).
    async fn begin(&mut self) -> Result<bool, rdkafka::error::KafkaError> {
        if self.revoked().await {
            return Ok(false);
        }
        match self.transaction.as_mut() {
            Some(txn) => txn.begin().map(|()| true),
            None => Ok(true),
        }
    }

    /// When the open transaction is due to commit: once its batches are acknowledged and the
    /// stage has had nothing to do for its linger (nothing more to read), though not before the
    /// window's minimum; at the window's maximum in any case.
    fn commit_due(&self) -> Option<tokio::time::Instant> {
        self.transaction.as_ref()?.due_at(self.tasks.is_empty(), self.idle_since, self.linger)
    }

    /// Under exactly once: waits for every batch of the open transaction, then commits it with
    /// the offsets they released — or, when that cannot be, aborts it and rewinds to the
    /// committed offsets, so the work is redone.
    async fn commit(&mut self) {
        if !self.transaction.as_ref().is_some_and(Transaction::is_open) || self.revoked().await {
            return;
        }
        let started = std::time::Instant::now();
        self.finish_all().await;
        if started.elapsed() > Duration::from_secs(1) {
            tracing::warn!(took = ?started.elapsed(), "waiting for the transaction's batches was slow");
        }
        if matches!(self.stopped, Some(Stopped::Requested)) {
            // A batch was left unfinished: its output is incomplete.
            self.abort("shutting down with a batch unfinished".into()).await;
            return;
        }
        let txn = self.transaction.as_mut().expect("checked");
        let offsets = txn.offsets().clone();
        match txn.commit(self.consumer).await {
            Ok(()) => self.liveness.committed(&offsets),
            Err(NotCommitted::Aborted(why)) => self.redo(&why),
            Err(NotCommitted::Fatal(why)) => self.fenced(why).await,
        }
    }

    /// The producer was fenced (its transaction outlived `transaction.timeout.ms` during a
    /// broker outage, or another instance took its id): a new producer takes over, and the work
    /// since the last commit is redone.
    async fn fenced(&mut self, why: String) {
        let Some(txn) = self.transaction.as_mut() else { return };
        match txn.recreate().await {
            Ok(()) => self.redo(&why),
            Err(err) => self.stopped = Some(Stopped::Broken(format!("the transaction failed for good ({why}) and a new producer could not be made: {err:#}"))),
        }
    }

    /// Aborts the open transaction and rewinds, so its work is redone.
    async fn abort(&mut self, why: String) {
        self.finish_all().await;
        if let Some(txn) = self.transaction.as_mut() {
            match txn.abort(why).await {
                NotCommitted::Aborted(why) => self.redo(&why),
                NotCommitted::Fatal(why) => self.fenced(why).await,
            }
        }
    }

    /// After an aborted transaction: the assigned partitions back to their committed offsets,
    /// nothing released pending.
    fn redo(&mut self, why: &str) {
        tracing::warn!(why, "the transaction was aborted; redoing its work from the committed offsets");
        self.shared.metrics.delivery_errors.add(1, &[opentelemetry::KeyValue::new("topic", "(transaction aborted)")]);
        self.ledger = OffsetLedger::default();
        // What the aborted transaction released is released again when redone; what earlier
        // transactions committed stays released, so a Redis-restart rewind over it (the outage
        // that outlived the transaction is often the same one) restores the store without
        // publishing it twice. Where the committed offsets cannot be read, nothing is assumed.
        self.released = super::transaction::rewind_to_committed(self.consumer).unwrap_or_default();
    }

    /// Whether partitions were revoked with a transaction open (the revoke hook aborted it):
    /// then the batches in flight are finished, and the partitions still owned rewound.
    async fn revoked(&mut self) -> bool {
        if !self.transaction.as_mut().is_some_and(Transaction::take_revoked) {
            return false;
        }
        self.abort("partitions were revoked".into()).await;
        true
    }

    /// Under exactly once, the output of a message the broker refused for good in an aborted
    /// transaction is replaced by that message's dead letter.
    fn replace_refused(&self, batch: &[OwnedMessage], stage: Stage, outgoing: Vec<(Outgoing, usize)>) -> Vec<(Outgoing, usize)> {
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
    async fn redis_restarted(&mut self) -> bool {
        match self.guard.as_mut() {
            Some(guard) => guard.restarted(self.shared).await,
            None => false,
        }
    }

    /// Seeks back over the recent batches a restarted Redis may have lost, and over `dropped`
    /// (taken, not processed). What they publish was published already (released): redone,
    /// they only restore the store.
    fn rewind(&mut self, dropped: &[OwnedMessage]) {
        if let Some(guard) = self.guard.as_mut() {
            self.shared.replay.set(self.released.clone());
            guard.rewind(self.consumer, dropped);
            self.ledger = OffsetLedger::default();
        }
    }
}

/// A transactional id unique to this producer, and stable across restarts where the instance
/// is: `<group>.<instance>.<port>` with the health listener's port (a pod's name survives a
/// container restart; two instances on one host listen on different ports), or
/// `<group>.<instance>.<pid>.<n>` when the port is chosen at random (0, tests). A restarted
/// instance with the same id fences its predecessor and aborts its open transaction at once;
/// with another id, a killed instance's transaction is aborted after `transaction.timeout.ms`.
/// Either way the consumer group's generation (KIP-447) fences a zombie.
fn transactional_id(group: &str, listen: &str) -> String {
    static RUNNERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let instance = crate::instance_id();
    match listen.rsplit_once(':').map(|(_, port)| port) {
        Some(port) if port != "0" => format!("{group}.{instance}.{port}"),
        _ => format!("{group}.{instance}.{}.{}", std::process::id(), RUNNERS.fetch_add(1, Ordering::Relaxed)),
    }
}
