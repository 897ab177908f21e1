//! [`StageRunner`]: a transformer's consume loop. Batches are taken, run through a
//! [`Processor`], handed to Kafka, and delivered by tasks running side by side (up to
//! `pipeline_depth` batches unreleased); the [`OffsetLedger`] decides which offsets each
//! finished batch releases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::store::Pool;
use domain::Stage;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer as _;
use tokio::time::sleep_until;

use super::ledger::TopicPartition;
use super::pipeline::{Pipeline, Stopped};
use super::produce::{deliver, enqueue_all, Outgoing};
use super::transaction::TxnState;
use crate::health::Health;
use crate::kafka::GroupConsumer;
use crate::shutdown::{CancellationToken, Interrupted};

/// Starting from `first`, takes what the consumer already holds, up to `max` messages; then,
/// only when more than one message was waiting (the stage is under load), whatever else arrives
/// within `linger`. A lone message — an idle stage — goes on at once: the wait pays off only
/// when there is more to batch. Never abandons a message it has taken (it is not cancelled
/// midway).
async fn fill_batch(consumer: &GroupConsumer, first: OwnedMessage, max: usize, linger: Duration) -> Vec<OwnedMessage> {
    use futures_util::FutureExt as _;
    let mut batch = Vec::with_capacity(max.min(1024));
    batch.push(first);
    // `recv` is cancel-safe: a poll that finds nothing loses nothing.
    while batch.len() < max {
        match consumer.recv().now_or_never() {
            Some(Ok(m)) => batch.push(m.detach()),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "kafka consumer error");
                return batch;
            }
            None => break,
        }
    }
    if batch.len() == 1 {
        return batch;
    }
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
    let span = crate::telemetry::propagation::consumer_span("process", "process", message, &s.group);
    span.record("metastream.stage", stage.as_str());
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

    pub(super) fn set(&self, released: BTreeMap<TopicPartition, i64>) {
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
    /// Under exactly once, the stage's transactional producers and their turns.
    exactly_once: Option<super::pipeline::ExactlyOnce>,
    /// How long the loop has been on one step ([`crate::liveness`]).
    loop_watch: Arc<crate::liveness::LoopWatch>,
    /// This instance's readiness and metrics in Redis, for the console ([`crate::pulse`]).
    pulse: crate::pulse::Pulse,
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
        let pool = crate::store::pool(&settings.redis)?;
        let probe = crate::kafka::probe(&settings.kafka, input_topic)?;
        let health = Health::new(Some((pool.clone(), settings.redis.timeout())), Some(probe));
        let pulse = crate::store::pulse::PulseStore::new(pool.clone(), domain::KeySchema::new(&settings.redis.key_prefix), settings.redis.timeout());
        let pulse = crate::pulse::spawn(service, health.clone(), metrics.clone(), pulse, shutdown.clone());
        let (producer, txn_pool, commits) = if exactly_once {
            let id = transactional_id(&t.group_id, &t.listen);
            let topics = &settings.kafka.topics;
            let writes = match service {
                Service::PreTransformer => vec![topics.processed.clone(), topics.dead_letter.clone()],
                _ => vec![topics.output.clone(), topics.dead_letter.clone()],
            };
            let sweep = (writes, input_topic.clone());
            let txns = super::transaction::Pool::build(&settings.kafka, &limits, &id, settings.delivery.transaction_producers, sweep, health.clone(), shutdown.clone()).await?;
            let commits = crate::kafka::Commits::InTransaction(txns.revoke_hook());
            (txns.member(0).producer.clone(), Some(txns), commits)
        } else {
            let producer = crate::kafka::SharedProducer::new(crate::kafka::producer(&settings.kafka, Some(&limits))?);
            (producer, None, crate::kafka::Commits::StoredEvery(Duration::from_millis(t.commit_interval_ms)))
        };

        // The gateway writes the ingest topic without transactions; the processed topic is the
        // pre-transformer's transactional output.
        let input = if service == Service::PreTransformer { crate::liveness::Input::Plain } else { crate::liveness::Input::Transactional };
        let fetch_watch = crate::liveness::FetchWatch::start(&settings.kafka, input)?;
        let consumer = crate::kafka::consumer(&settings.kafka, &t.group_id, &[input_topic], Some(metrics.clone()), commits, Some(t.fetch()), Some(fetch_watch.clone()))?;
        crate::kafka::register_producer_gauge(&metrics, &producer.get());
        crate::store::register_pool_gauge(&metrics, &pool);
        let catalog = crate::SourceCatalog::start(&settings, pool.clone(), shutdown.clone(), metrics.clone()).await?;
        let (health_server, port) = crate::http::health_server(&t.listen, health.clone(), metrics.clone())?;
        let loop_watch = crate::liveness::LoopWatch::start(health.clone(), shutdown.clone())?;
        fetch_watch.watch_health(health.clone());
        let txn_state = txn_pool.as_ref().map(|p| p.member(0).state.clone());
        let stage = if service == Service::PreTransformer { Stage::Pre } else { Stage::Post };
        let exactly_once = txn_pool.map(|p| super::pipeline::ExactlyOnce::new(p, &settings.delivery, stage));
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
            exactly_once,
            pulse,
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
    /// to is acknowledged — under exactly once, with the transaction that holds its output,
    /// committed as soon as its batches are acknowledged while the next transaction takes
    /// batches on another producer ([`super::turns`]).
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
        let mut pipeline = Pipeline::new(&self.consumer, s, &self.in_flight, self.guards_store, self.exactly_once.take(), &self.fetch_watch);
        let depth = self.settings.pipeline_depth.max(1);
        while pipeline.stopped.is_none() {
            pipeline.start_commit();
            let commit_wakeup = pipeline.commit_wakeup();
            // Waiting here for work is never a stall; every step taken from here must end.
            self.loop_watch.waiting();
            // Waiting for a message is also when acknowledged batches are finished and commits
            // started and recorded, so an idle stage leaves nothing uncommitted. `recv`,
            // `join_next` and a commit's end are cancel-safe.
            let first = tokio::select! {
                biased;
                _ = s.shutdown.cancelled() => break,
                event = pipeline.next_event(), if pipeline.is_busy() => {
                    self.loop_watch.busy();
                    pipeline.handle(event).await;
                    continue;
                }
                _ = sleep_until(commit_wakeup.unwrap_or_else(tokio::time::Instant::now)), if commit_wakeup.is_some() => continue,
                _ = tokio::time::sleep(SWEEP_TICK), if pipeline.needs_sweep() => {
                    self.loop_watch.busy();
                    pipeline.sweep_idle().await;
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
            pipeline.behind = batch.len() >= (self.settings.batch_size / 4).max(1);
            if pipeline.revoked().await {
                // The transactions these messages would join were aborted: what is still owned
                // was rewound and is read again.
                continue;
            }
            pipeline.finish_acknowledged();
            if pipeline.redis_restarted().await {
                pipeline.drain().await;
                // The batch just taken is dropped unprocessed: the rewind covers it too.
                pipeline.rewind(&batch);
                continue;
            }
            if pipeline.stopped.is_some() {
                break;
            }
            let started = std::time::Instant::now();
            let Ok(processed) = processor.process(&batch).await else { break };
            let (id, shared) = match pipeline.open(&batch).await {
                Ok(Some(opened)) => opened,
                // Revoked meanwhile: the batch is dropped, what is still owned read again.
                Ok(None) => continue,
                Err(err) => {
                    pipeline.stopped = Some(Stopped::Broken(format!("beginning a transaction failed: {err:#}")));
                    break;
                }
            };
            let (messages, origins): (Vec<Outgoing>, Vec<usize>) = pipeline.replace_refused(&batch, self.stage, processed.outgoing).into_iter().unzip();
            let Ok(sent) = enqueue_all(&shared, &messages).await else { break };
            let stage = self.stage;
            let on_delivered = processed.on_delivered;
            pipeline.start(id, batch.len(), async move {
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
        }
        match &pipeline.stopped {
            Some(Stopped::Broken(cause)) => {
                tracing::error!(cause = %cause, "the pipeline cannot go on; stopping without committing past the unfinished batch");
            }
            _ => tracing::info!("stopping: finishing batches in flight, committing finished work and flushing the producer"),
        }
        if pipeline.exactly_once.is_some() {
            if matches!(pipeline.stopped, Some(Stopped::Broken(_))) {
                pipeline.abort_all().await;
            } else {
                pipeline.drain().await;
            }
        } else {
            pipeline.finish_all().await;
            crate::kafka::commit_stored(&self.consumer);
        }
        let producers: Vec<_> = match &pipeline.exactly_once {
            Some(eo) => eo.pool.members().iter().map(|m| m.producer.get()).collect(),
            None => vec![s.producer.get()],
        };
        let deadline = self.deadline;
        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || producers.iter().try_for_each(|p| p.flush(deadline))).await {
            tracing::warn!(error = %err, "flushing the producer failed");
        }
        handle.stop(true).await;
        server.await??;
        self.pulse.stopped().await;
        match pipeline.stopped {
            Some(Stopped::Broken(cause)) => Err(anyhow::anyhow!(cause)),
            None | Some(Stopped::Requested) => Ok(()),
        }
    }
}

/// How long a stage with a member to sweep and nothing to read waits before it sweeps.
const SWEEP_TICK: Duration = Duration::from_secs(1);

/// How long the stage's thread may be blocked before the process gives up ([`crate::watchdog`]).
const RUNTIME_STALL: Duration = Duration::from_secs(120);

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
