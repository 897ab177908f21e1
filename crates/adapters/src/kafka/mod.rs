//! Kafka clients, set up once here so every service talks to the broker the same way.
//!
//! Producers are idempotent with `acks=all`. Consumers never store an offset by themselves:
//! services store an offset only after that message's effects are done ([`store_offsets`]), and
//! only stored offsets are committed ([`Commits`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
pub use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
pub use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use domain::TopicLimits;

use crate::settings::KafkaSettings;

fn base_config(k: &KafkaSettings, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers);
    for (key, value) in k.properties.iter().chain(extra) {
        c.set(key, value);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// An idempotent producer (`acks=all`) whose deliveries fail after `kafka.produce_timeout_ms`,
/// building record batches no larger than the smallest of `limits`, when known (the broker
/// refuses a whole batch larger than its topic's `max.message.bytes`, however small each message
/// in it).
///
/// # Errors
/// When librdkafka rejects the configuration.
pub fn producer(k: &KafkaSettings, limits: Option<&TopicLimits>) -> anyhow::Result<FutureProducer> {
    let mut c = base_config(k, &BTreeMap::new());
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", k.produce_timeout_ms.to_string());
    for (key, value) in &k.producer_properties {
        c.set(key, value);
    }
    let batch = property(k, "batch.size").unwrap_or(LIBRDKAFKA_BATCH_SIZE);
    if let Some(smallest) = limits.map(TopicLimits::smallest).filter(|s| *s < batch) {
        c.set("batch.size", smallest.max(1).to_string());
    }
    c.create().context("creating Kafka producer")
}

/// A producer shared by clones that can be replaced: a transactional producer fenced by the
/// broker (its transaction outlived `transaction.timeout.ms`, say during a broker outage) is
/// recreated, and every clone then uses the new one.
#[derive(Clone)]
pub struct SharedProducer(std::sync::Arc<std::sync::RwLock<FutureProducer>>);

impl SharedProducer {
    pub fn new(producer: FutureProducer) -> Self {
        SharedProducer(std::sync::Arc::new(std::sync::RwLock::new(producer)))
    }

    /// The current producer (cheap: a reference-counted handle).
    pub fn get(&self) -> FutureProducer {
        self.0.read().expect("producer lock").clone()
    }

    pub fn replace(&self, producer: FutureProducer) {
        *self.0.write().expect("producer lock") = producer;
    }
}

/// A transactional producer (see [`producer`]) with `transactional_id`, its transactions
/// initialised: a previous producer with the same id is fenced and its open transaction
/// aborted. `transaction.timeout.ms` defaults to 10 s: how long the open transaction of a
/// killed instance with another id can hold back `read_committed` readers.
///
/// # Errors
/// When librdkafka rejects the configuration or the broker does not answer.
pub async fn transactional_producer(k: &KafkaSettings, limits: &TopicLimits, transactional_id: &str) -> anyhow::Result<FutureProducer> {
    let mut k = k.clone();
    k.producer_properties.insert("transactional.id".into(), transactional_id.to_owned());
    k.producer_properties.entry("transaction.timeout.ms".into()).or_insert_with(|| "10000".into());
    let producer = producer(&k, Some(limits))?;
    // A broker that just restarted answers "coordinator load in progress" for a while: retry
    // for up to two minutes, as for topics.
    let started = std::time::Instant::now();
    let mut backoff = crate::retry::Backoff::infra();
    loop {
        let init = producer.clone();
        let result = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            crate::watchdog::watched("init_transactions", Duration::from_secs(90), || init.init_transactions(Duration::from_secs(30)))
        })
        .await?;
        match result {
            Ok(()) => return Ok(producer),
            Err(err) if started.elapsed() < Duration::from_secs(120) && !matches!(&err, KafkaError::Transaction(e) if e.is_fatal()) => {
                tracing::warn!(error = %err, "initialising transactions failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(err) => return Err(err).with_context(|| format!("initialising transactions (transactional.id {transactional_id})")),
        }
    }
}

/// librdkafka's defaults for `message.max.bytes` and `batch.size`.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;
const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;

/// A numeric librdkafka property as configured for producers (`producer_properties` over
/// `properties`).
fn property(k: &KafkaSettings, name: &str) -> Option<usize> {
    k.producer_properties.get(name).or_else(|| k.properties.get(name)).and_then(|v| v.parse().ok())
}

/// The largest message each pipeline topic takes, read from the broker (`max.message.bytes` of
/// each topic) and bounded by the producer's own `message.max.bytes`. A broker that is still
/// starting is waited for, up to a minute.
///
/// # Errors
/// When the broker cannot be reached in that time, or a topic does not exist.
pub async fn topic_limits(k: &KafkaSettings) -> anyhow::Result<TopicLimits> {
    let mut backoff = crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let started = std::time::Instant::now();
    loop {
        match try_topic_limits(k, Duration::from_secs(10)).await {
            Ok(limits) => return Ok(limits),
            Err(err) if started.elapsed() < Duration::from_secs(60) => {
                tracing::warn!(error = %format!("{err:#}"), "reading the topics' max.message.bytes failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Topic limits that arrive when the broker answers: for a service that must start, and answer
/// 503, while Kafka is unreachable (the gateway). Cheap to clone.
#[derive(Clone, Default)]
pub struct SharedLimits(std::sync::Arc<std::sync::OnceLock<TopicLimits>>);

impl SharedLimits {
    /// The limits, once read.
    pub fn get(&self) -> Option<TopicLimits> {
        self.0.get().copied()
    }

    /// Reads the limits now (attempts for up to `first_wait`: a topic made a moment ago may
    /// not report its configs yet) and, when that fails, keeps trying in the background with
    /// backoff until it succeeds or `shutdown` comes.
    pub async fn load(k: &KafkaSettings, first_wait: Duration, shutdown: crate::shutdown::CancellationToken) -> SharedLimits {
        let shared = SharedLimits::default();
        let started = std::time::Instant::now();
        let mut first = try_topic_limits(k, first_wait).await;
        while first.is_err() && started.elapsed() + Duration::from_millis(200) < first_wait {
            tokio::time::sleep(Duration::from_millis(200)).await;
            first = try_topic_limits(k, first_wait.saturating_sub(started.elapsed())).await;
        }
        match first {
            Ok(limits) => {
                let _ = shared.0.set(limits);
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot read the topics' max.message.bytes yet; retrying in the background");
                let (k, into) = (k.clone(), shared.clone());
                tokio::spawn(async move {
                    let mut backoff = crate::retry::Backoff::infra();
                    while !shutdown.is_cancelled() {
                        tokio::time::sleep(backoff.next_delay()).await;
                        match try_topic_limits(&k, Duration::from_secs(10)).await {
                            Ok(limits) => {
                                let _ = into.0.set(limits);
                                return;
                            }
                            Err(err) => tracing::warn!(error = %format!("{err:#}"), "reading the topics' max.message.bytes failed; retrying"),
                        }
                    }
                });
            }
        }
        shared
    }
}

async fn try_topic_limits(k: &KafkaSettings, timeout: Duration) -> anyhow::Result<TopicLimits> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<_> = base_config(k, &BTreeMap::new()).create().context("creating Kafka admin client")?;
    let topics = k.topics.all();
    let specifiers: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin.describe_configs(&specifiers, &opts).await.context("describing the topics' configs")?;
    let mut max = Vec::with_capacity(topics.len());
    for (topic, result) in topics.iter().zip(results) {
        let config = result.map_err(|code| anyhow::anyhow!("describing topic {topic}: {code}"))?;
        let bytes = config
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok())
            .with_context(|| format!("topic {topic} reports no max.message.bytes"))?;
        max.push(bytes);
    }
    let producer_max = property(k, "message.max.bytes").unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
    let limits = TopicLimits::from_max_message_bytes(max[0], max[1], max[2], max[3], producer_max);
    let batch = property(k, "batch.size").unwrap_or(LIBRDKAFKA_BATCH_SIZE);
    if limits.smallest() < batch {
        tracing::info!(batch_size = limits.smallest(), "a topic takes less than the producer's batch.size: producers build smaller batches");
    }
    tracing::info!(?limits, max_event_bytes = limits.max_event_bytes(), "message size limits read from the broker");
    Ok(limits)
}

/// Logs and counts rebalances, so operators can see partitions move between instances, and
/// turns librdkafka's statistics into consumer-lag gauges.
pub struct LoggingContext {
    group: String,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Under exactly once: what to do before partitions are revoked, instead of committing
    /// stored offsets (there are none: offsets travel in the transaction).
    on_revoke: Option<RevokeHook>,
    /// Set while the consumer waits for the group to assign partitions after it left and joined
    /// again ([`LoggingContext::await_assignment`]); dropped on the next assignment.
    awaiting_assignment: std::sync::Mutex<Option<crate::watchdog::Guard>>,
    /// For a transformer: watches its partitions and group membership for a stall
    /// ([`crate::liveness`]), fed by the statistics and rebalances.
    liveness: Option<std::sync::Arc<dyn ConsumerWatch>>,
}

impl LoggingContext {
    /// The consumer left its group and subscribed again: the group must assign its partitions
    /// within `limit`, or the process gives up ([`crate::watchdog`]) — a consumer that never
    /// rejoins would read nothing more while looking healthy.
    pub fn await_assignment(&self, limit: Duration) {
        *self.awaiting_assignment.lock().expect("assignment lock") = Some(crate::watchdog::guard("rejoining the consumer group (no assignment came)", limit));
    }
}

/// What watches a group consumer, fed on the consumer's thread by librdkafka's statistics and by
/// the assignment after each rebalance ([`crate::liveness::FetchWatch`] is one). A trait, so that
/// this module does not depend on what watches it.
pub trait ConsumerWatch: Send + Sync {
    fn statistics(&self, statistics: &rdkafka::Statistics);
    fn assigned(&self, partitions: Vec<(String, i32)>);
}

/// Called, on the consumer's thread, before partitions are revoked.
pub type RevokeHook = std::sync::Arc<dyn Fn() + Send + Sync>;

impl ClientContext for LoggingContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(watch) = &self.liveness {
            watch.statistics(&statistics);
        }
        let Some(metrics) = &self.metrics else { return };
        let lags = statistics.topics.values().flat_map(|t| {
            t.partitions
                .values()
                .filter(|p| p.partition >= 0)
                .filter_map(|p| Some((t.topic.clone(), p.partition, partition_lag(p, self.on_revoke.is_some())?)))
                .collect::<Vec<_>>()
        });
        metrics.set_lags(&self.group, lags);
    }
}

/// A partition's consumer lag, from librdkafka's statistics: behind the committed offset when
/// the consumer commits (at least once). When offsets travel in transactions instead
/// (`transactional`), the consumer never learns what was committed (its `consumer_lag` is -1,
/// or stale from the assignment), so the lag is taken behind what it has consumed, on the
/// partitions it is fetching. `None` when unknown.
fn partition_lag(p: &rdkafka::statistics::Partition, transactional: bool) -> Option<i64> {
    if !transactional {
        return (p.consumer_lag >= 0).then_some(p.consumer_lag);
    }
    let fetching = matches!(p.fetch_state.as_str(), "active" | "offset-query" | "offset-wait");
    if !fetching {
        return None;
    }
    // The last stable offset: what a read_committed consumer can reach.
    let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
    match p.app_offset {
        position if position >= 0 && end >= 0 => Some((end - position).max(0)),
        _ if end == 0 => Some(0),
        _ => None,
    }
}

impl ConsumerContext for LoggingContext {
    /// Before partitions go to another instance, commit what is finished on them, synchronously.
    /// Consumption happens between batches, so no batch is half done here: the stored offsets are
    /// exactly the finished work.
    fn pre_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Some(hook) = &self.on_revoke {
                hook();
                return;
            }
            match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                Ok(()) => tracing::info!(partitions = %describe(tpl), "committed finished work before revoke"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(err) => tracing::warn!(error = %err, "commit before revoke failed; the new owner redelivers"),
            }
        }
    }

    fn post_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Some(watch) = &self.liveness {
            match consumer.assignment() {
                Ok(tpl) => watch.assigned(tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()),
                Err(err) => tracing::warn!(error = %err, "reading the assignment after a rebalance failed"),
            }
        }
        if let Some(m) = &self.metrics {
            let kind = match rebalance {
                Rebalance::Assign(_) => "assign",
                Rebalance::Revoke(_) => "revoke",
                Rebalance::Error(_) => "error",
            };
            m.rebalances.add(1, &[opentelemetry::KeyValue::new("group", self.group.clone()), opentelemetry::KeyValue::new("kind", kind)]);
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.awaiting_assignment.lock().expect("assignment lock").take();
                tracing::info!(partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => tracing::info!(partitions = %describe(tpl), "partitions revoked"),
            Rebalance::Error(err) => tracing::warn!(error = %err, "rebalance error"),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements().iter().map(|e| format!("{}[{}]", e.topic(), e.partition())).collect::<Vec<_>>().join(",")
}

pub type GroupConsumer = StreamConsumer<LoggingContext>;

pub use crate::settings::FetchBatching;

pub mod groups;
mod reader;
mod scan;
mod send;

pub use reader::{AssignedReader, Start};
pub use scan::{last_offsets, scan, Bound, Scanned};
pub use send::{flush, send, Delivered, Record, SendError};

/// The message types the stages and readers hand to services: what a record is, not how it is
/// fetched or produced. Services name them from here, never from rdkafka.
pub mod message {
    pub use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
    pub use rdkafka::Timestamp;
}

/// A consumer in `group_id`, subscribed to `topics`, that starts at the earliest offset of a new
/// group and never commits on its own. Without `fetch` batching the broker answers a fetch as
/// soon as one record is ready (what a push reader wants); `kafka.consumer_properties` come last
/// and override either. With a `liveness` watch, partitions or a group membership that stand
/// still with work waiting end the process ([`crate::liveness`]).
///
/// # Errors
/// When librdkafka rejects the configuration or the subscription.
pub fn consumer(
    k: &KafkaSettings,
    group_id: &str,
    topics: &[&str],
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    commits: Commits,
    fetch: Option<FetchBatching>,
    liveness: Option<std::sync::Arc<dyn ConsumerWatch>>,
) -> anyhow::Result<GroupConsumer> {
    let mut c = base_config(k, &k.consumer_properties);
    if let Some(fetch) = fetch {
        c.set("fetch.min.bytes", fetch.min_bytes.max(1).to_string()).set("fetch.wait.max.ms", fetch.wait_ms.to_string());
    }
    let on_revoke = match commits {
        Commits::StoredEvery(interval) => {
            c.set("enable.auto.commit", "true").set("auto.commit.interval.ms", interval.as_millis().max(1).to_string());
            None
        }
        Commits::InTransaction(hook) => {
            c.set("enable.auto.commit", "false");
            Some(hook)
        }
    };
    // Only committed data: what an aborted transaction wrote is never read.
    c.set("isolation.level", "read_committed");
    c.set("group.id", group_id)
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    if metrics.is_some() || liveness.is_some() {
        // Consumer lag and the liveness watch's positions come from librdkafka's statistics.
        c.set("statistics.interval.ms", "5000");
    }
    for (key, value) in &k.consumer_properties {
        c.set(key, value);
    }
    let context = LoggingContext { group: group_id.to_owned(), metrics, on_revoke, awaiting_assignment: std::sync::Mutex::new(None), liveness };
    let consumer: GroupConsumer = c.create_with_context(context).context("creating Kafka consumer")?;
    consumer.subscribe(topics).with_context(|| format!("subscribing to {topics:?}"))?;
    Ok(consumer)
}

/// When a group consumer commits.
#[derive(Clone)]
pub enum Commits {
    /// librdkafka commits what is stored ([`store_offsets`]) at this interval, idle or not (and
    /// before a revoke).
    StoredEvery(std::time::Duration),
    /// Never by the consumer: the service sends its offsets in a producer's transaction. The
    /// hook runs before partitions are revoked (it aborts the open transaction).
    InTransaction(RevokeHook),
}

/// Client settings for a consumer that only reads assigned partitions (no group membership,
/// no commits), e.g. to browse the dead-letter topic.
pub fn reader_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = base_config(k, &k.consumer_properties);
    c.set("group.id", "metastream-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    c
}

/// Creates the pipeline's topics that do not exist yet, with the configured partitions.
/// A broker that is still starting is waited for, up to a minute.
///
/// # Errors
/// When the broker cannot be reached in that time or refuses to create a topic.
pub async fn ensure_topics(k: &KafkaSettings) -> anyhow::Result<()> {
    let mut backoff = crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let started = std::time::Instant::now();
    loop {
        match try_ensure_topics(k).await {
            Ok(()) => return Ok(()),
            Err(err) if started.elapsed() < Duration::from_secs(60) => {
                tracing::warn!(error = %format!("{err:#}"), "creating topics failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn try_ensure_topics(k: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<_> =
        base_config(k, &BTreeMap::new()).create().context("creating Kafka admin client")?;
    let mut topics: Vec<NewTopic<'_>> = k
        .topics
        .all()
        .iter()
        .map(|t| NewTopic::new(t, k.partitions, TopicReplication::Fixed(k.replication_factor)))
        .collect();
    // One partition keeps the audit trail in order; it is kept a year.
    topics.push(
        NewTopic::new(&k.topics.audit, 1, TopicReplication::Fixed(k.replication_factor)).set("retention.ms", "31536000000"),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&topics, &opts).await.context("creating topics")?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions = k.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Commits the offsets stored so far, waiting for the broker (nothing stored is not an error).
pub fn commit_stored(consumer: &GroupConsumer) {
    match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        // The messages will be redelivered to whoever owns the partition: at least once.
        Err(err) => tracing::warn!(error = %err, "offset commit failed; finished work may be redelivered"),
    }
}

/// Stores the consumer's position on every assigned partition for the next commit: once all it
/// handed out is done, this also steps over the transaction markers after it, so the committed
/// offset (and the lag an operator sees) reaches the end of each partition.
pub fn store_position(consumer: &GroupConsumer) {
    let Ok(position) = consumer.position() else { return };
    let mut done = TopicPartitionList::new();
    for e in position.elements() {
        if let Offset::Offset(o) = e.offset() {
            let _ = done.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o));
        }
    }
    if done.count() > 0 {
        let _ = consumer.store_offsets(&done);
    }
}

/// Stores `offsets` (per (topic, partition), the next offset to consume) for the next commit.
///
/// # Errors
/// When a partition is no longer assigned.
pub fn store_positions(consumer: &GroupConsumer, offsets: &BTreeMap<(String, i32), i64>) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.store_offsets(&tpl)
}

/// Marks the offsets after `messages` as done, to be committed by the consumer's next commit of
/// what is stored ([`Commits::StoredEvery`], [`commit_stored`]).
///
/// # Errors
/// When a partition is no longer assigned.
pub fn store_offsets<'a>(consumer: &GroupConsumer, messages: impl IntoIterator<Item = &'a OwnedMessage>) -> Result<(), KafkaError> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in messages {
        let e = next.entry((m.topic().to_owned(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    if next.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
    }
    // A partition revoked meanwhile refuses the store: its new owner redelivers (at least once).
    consumer.store_offsets(&tpl)
}

/// A readiness check that the broker answers (metadata of `topic` within 2 s), on a client of
/// its own so probes never wait behind the service's traffic.
///
/// # Errors
/// When librdkafka rejects the configuration.
pub fn probe(k: &KafkaSettings, topic: &str) -> anyhow::Result<crate::health::KafkaProbe> {
    let client: rdkafka::producer::BaseProducer =
        base_config(k, &BTreeMap::new()).create().context("creating Kafka probe client")?;
    let topic = topic.to_owned();
    Ok(std::sync::Arc::new(move || {
        use rdkafka::producer::Producer as _;
        client.client().fetch_metadata(Some(&topic), Duration::from_secs(2)).map(|_| ()).map_err(|e| e.to_string())
    }))
}

/// Messages waiting in the producer for an ack (`metastream_kafka_producer_queue_messages`).
pub fn register_producer_gauge(metrics: &std::sync::Arc<crate::metrics::Metrics>, producer: &FutureProducer) {
    use rdkafka::producer::Producer as _;
    let producer = producer.clone();
    metrics.gauge("metastream_kafka_producer_queue_messages", "Messages waiting in the producer for an ack", move || {
        vec![(i64::from(producer.in_flight_count()), Vec::new())]
    });
}
