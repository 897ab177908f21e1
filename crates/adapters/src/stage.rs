//! The machinery both transformers share: take a batch of messages, and, once their effects are
//! done, produce what they lead to and commit their offsets. Every effect is retried with
//! backoff until it succeeds or the service shuts down; nothing is committed before its effects.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_redis::Pool;
use domain::schema::headers;
use domain::Stage;
use futures_util::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders, OwnedMessage};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use crate::health::Health;
use crate::kafka::GroupConsumer;
use crate::retry::Backoff;
use crate::shutdown::CancellationToken;
use crate::store::StoreError;

/// The service is shutting down; the batch was not finished and must not be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutting down before the batch was done")]
pub struct Interrupted;

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

/// A message to produce, owned so it can be retried.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
pub struct Failure {
    /// A stable word: `unparseable`, `missing_config`, `operation_failed`, `produce_failed`, ...
    pub reason: &'static str,
    pub error: String,
    /// The failing operation's index in its list and its name, for `operation_failed`.
    pub operation: Option<(usize, &'static str)>,
}

impl Failure {
    pub fn new(reason: &'static str, error: impl Into<String>) -> Self {
        Failure { reason, error: error.into(), operation: None }
    }
}

/// The dead-letter form of `original`: same key and payload, with headers naming the stage,
/// the reason, the failing operation, the error and where the message came from. When that does
/// not fit the dead-letter topic, a [reference](reference) to the original instead: a dead
/// letter always fits, so no message can hold a partition.
pub fn dead_letter(s: &Shared, original: &OwnedMessage, stage: Stage, failure: &Failure) -> Outgoing {
    let full = dead_letter_copy(original, &s.topics.dead_letter, stage, failure);
    if fits(&full, s.limits.dead_letter) {
        return full;
    }
    reference(s, original, stage, failure)
}

fn dead_letter_copy(original: &OwnedMessage, topic: &str, stage: Stage, failure: &Failure) -> Outgoing {
    let mut h = OwnedHeaders::new_with_capacity(10);
    if let Some(orig) = original.headers() {
        for header in orig.iter().filter(|h| h.key != "traceparent" && h.key != "tracestate") {
            h = h.insert(Header { key: header.key, value: header.value });
        }
    }
    Outgoing {
        topic: topic.to_owned(),
        key: original.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: original.payload().unwrap_or_default().to_vec(),
        headers: failure_headers(h, original, stage, failure),
    }
}

/// A dead letter that stands for `original` without copying it: a small JSON document naming
/// where the original is (topic, partition, offset), its size, key, event id and source, and
/// why it failed; headers as a full dead letter's, plus [`headers::DLQ_REFERENCE`]. Counted in
/// `metastream_dead_letter_references_total`.
pub fn reference(s: &Shared, original: &OwnedMessage, stage: Stage, failure: &Failure) -> Outgoing {
    let source = source_of(original);
    let event_id = header_of(original, headers::EVENT_ID);
    let key = original.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let size = message_size(original);
    let payload = serde_json::json!({
        "dead_letter_reference": {
            "topic": original.topic(),
            "partition": original.partition(),
            "offset": original.offset(),
            "size": size,
            "key": key,
            "event_id": event_id,
            "source": source,
            "stage": stage.as_str(),
            "reason": failure.reason,
            "error": domain::limits::truncate(&failure.error, domain::limits::MAX_ERROR_HEADER),
        }
    });
    let mut h = OwnedHeaders::new_with_capacity(12);
    if let Some(id) = &event_id {
        h = h.insert(Header { key: headers::EVENT_ID, value: Some(id) });
    }
    let size = size.to_string();
    h = h
        .insert(Header { key: headers::SOURCE, value: Some(&source) })
        .insert(Header { key: headers::DLQ_REFERENCE, value: Some("true") })
        .insert(Header { key: headers::DLQ_ORIGINAL_SIZE, value: Some(&size) });
    s.metrics.dead_letter_references.add(
        1,
        &[
            opentelemetry::KeyValue::new("stage", stage.as_str()),
            opentelemetry::KeyValue::new("source", source.clone()),
            opentelemetry::KeyValue::new("reason", failure.reason),
        ],
    );
    tracing::warn!(topic = original.topic(), partition = original.partition(), offset = original.offset(), size = %size,
        "the message does not fit the dead-letter topic; dead-lettering a reference to it");
    Outgoing {
        topic: s.topics.dead_letter.clone(),
        key,
        payload: serde_json::to_vec(&payload).expect("a reference serializes"),
        headers: failure_headers(h, original, stage, failure),
    }
}

/// Adds the headers that say why and where from (the error cut to
/// [`MAX_ERROR_HEADER`](domain::limits::MAX_ERROR_HEADER) bytes).
fn failure_headers(mut h: OwnedHeaders, original: &OwnedMessage, stage: Stage, failure: &Failure) -> OwnedHeaders {
    let error = domain::limits::truncate(&failure.error, domain::limits::MAX_ERROR_HEADER);
    let partition = original.partition().to_string();
    let offset = original.offset().to_string();
    h = h
        .insert(Header { key: headers::DLQ_STAGE, value: Some(stage.as_str()) })
        .insert(Header { key: headers::DLQ_REASON, value: Some(failure.reason) })
        .insert(Header { key: headers::DLQ_ERROR, value: Some(error.as_ref()) })
        .insert(Header { key: headers::DLQ_TOPIC, value: Some(original.topic()) })
        .insert(Header { key: headers::DLQ_PARTITION, value: Some(&partition) })
        .insert(Header { key: headers::DLQ_OFFSET, value: Some(&offset) });
    if let Some((index, op)) = failure.operation {
        let index = index.to_string();
        h = h
            .insert(Header { key: headers::DLQ_OPERATION_INDEX, value: Some(&index) })
            .insert(Header { key: headers::DLQ_OPERATION, value: Some(op) });
    }
    h
}

/// What a consumed message counts against a topic's limit.
fn message_size(m: &OwnedMessage) -> usize {
    domain::limits::message_size(m.key(), m.payload().unwrap_or_default(), m.headers().into_iter().flat_map(|h| h.iter().map(|h| (h.key, h.value))))
}

/// What an outgoing message counts against its topic's limit.
fn outgoing_size(m: &Outgoing) -> usize {
    domain::limits::message_size(m.key.as_deref().map(str::as_bytes), &m.payload, m.headers.iter().map(|h| (h.key, h.value)))
}

fn fits(m: &Outgoing, limit: usize) -> bool {
    outgoing_size(m) <= limit
}

/// Why `m` cannot be produced, when it is larger than its topic takes (one of the pipeline's
/// topics: the limit of a topic an operation routed to is known only to the broker, whose
/// refusal is handled in the same way).
pub fn oversize(s: &Shared, m: &Outgoing) -> Option<Failure> {
    let limit = s.limits.of(&s.topics, &m.topic)?;
    let size = outgoing_size(m);
    (size > limit).then(|| {
        Failure::new("too_large", format!("the message for {} would be {size} bytes; the topic takes at most {limit}", m.topic))
    })
}

/// The value of header `name` of a consumed message, as text.
fn header_of(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?.iter().find(|h| h.key == name)?;
    Some(String::from_utf8_lossy(h.value?).into_owned())
}

/// Headers naming the event, for messages about one event.
pub fn event_headers(id: &str, source: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header { key: headers::EVENT_ID, value: Some(id) })
        .insert(Header { key: headers::SOURCE, value: Some(source) })
}

/// Adds `(name, value)` headers, e.g. the trace context.
pub fn with_headers(mut h: OwnedHeaders, extra: &[(String, String)]) -> OwnedHeaders {
    for (name, value) in extra {
        h = h.insert(Header { key: name, value: Some(value) });
    }
    h
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

/// An event's headers (`id`, `source`) plus those its operations decided (`routing.headers`).
pub fn output_headers(id: &domain::EventId, source: &domain::SourceName, routing: &domain::Routing) -> OwnedHeaders {
    let mut h = event_headers(id.as_str(), source.as_str());
    for (name, value) in &routing.headers {
        if name != headers::EVENT_ID && name != headers::SOURCE {
            h = h.insert(Header { key: name, value: Some(value) });
        }
    }
    h
}

/// Counts outcomes per (source, outcome) and adds each total once: one counter update per
/// batch and source instead of one per event.
/// A batch holds few sources, so a list beats a map.
#[derive(Default)]
pub struct Tally(Vec<(String, &'static str, u64)>);

impl Tally {
    pub fn add(&mut self, source: &str, outcome: &'static str) {
        match self.0.iter_mut().find(|(s, o, _)| s == source && *o == outcome) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((source.to_owned(), outcome, 1)),
        }
    }

    /// Adds the totals to `metastream_events_processed_total` for `stage`.
    pub fn record(self, s: &Shared, stage: Stage) {
        for (source, outcome, n) in self.0 {
            s.count_n(stage, &source, outcome, n);
        }
    }
}

/// The headers of a consumed message, as (name, UTF-8 value) pairs.
pub fn message_headers(message: &OwnedMessage) -> Vec<(String, String)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a produce error will not go away by retrying (a routed topic that does not exist,
/// a message the broker refuses): such a message is dead-lettered instead of blocking.
fn permanent(err: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        err.rdkafka_error_code(),
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::InvalidTopic | C::MessageSizeTooLarge | C::InvalidRecord | C::TopicAuthorizationFailed)
    )
}

/// A message handed to the producer: its pending ack, or why the producer would not take it.
type Sent = Result<DeliveryFuture, KafkaError>;

/// Hands `messages[i]` for each `i` of `which` to the producer, in order, without waiting for
/// their acks. Messages handed over later (the next batch's) queue behind these, so an entity's
/// messages keep their order across batches. Waits while the producer's queue is full.
///
/// # Errors
/// [`Interrupted`] when shutdown comes while waiting.
async fn enqueue(s: &Shared, messages: &[Outgoing], which: &[usize]) -> Result<Vec<Sent>, Interrupted> {
    let mut sent = Vec::with_capacity(which.len());
    for m in which.iter().map(|&i| &messages[i]) {
        if s.limits.of(&s.topics, &m.topic).is_some_and(|limit| !fits(m, limit)) {
            // The broker would refuse it: do not send it, treat it as refused for good.
            sent.push(Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)));
            continue;
        }
        loop {
            let mut record = FutureRecord::to(&m.topic).payload(&m.payload).headers(m.headers.clone());
            if let Some(key) = &m.key {
                record = record.key(key);
            }
            match s.producer.send_result(record) {
                Ok(delivery) => sent.push(Ok(delivery)),
                Err((err, _)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    tokio::select! {
                        _ = s.shutdown.cancelled() => return Err(Interrupted),
                        _ = tokio::time::sleep(Duration::from_millis(5)) => continue,
                    }
                }
                Err((err, _)) => sent.push(Err(err)),
            }
            break;
        }
    }
    Ok(sent)
}

/// Waits for the acks of `sent` (one per message of `messages`); retries the messages that
/// failed, with backoff, until all are acknowledged — except those Kafka refuses for good,
/// returned by index.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
async fn settle(s: &Shared, messages: &[Outgoing], mut sent: Vec<Sent>) -> Result<Vec<(usize, KafkaError)>, Interrupted> {
    let mut refused = Vec::new();
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut backoff = Backoff::infra();
    loop {
        let results = join_all(sent.into_iter().map(acknowledged)).await;
        let mut failed = Vec::new();
        let mut last_error = None;
        for (i, result) in pending.into_iter().zip(results) {
            let Err(err) = result else { continue };
            s.metrics.delivery_errors.add(1, &[opentelemetry::KeyValue::new("topic", messages[i].topic.clone())]);
            if permanent(&err) {
                refused.push((i, err));
            } else {
                last_error = Some(err);
                failed.push(i);
            }
        }
        let Some(err) = last_error else { return Ok(refused) };
        tracing::warn!(error = %err, failed = failed.len(), "kafka did not acknowledge; retrying");
        s.health.set_trouble(format!("kafka produce failing: {err}"));
        pause(&mut backoff, &s.shutdown).await?;
        sent = enqueue(s, messages, &failed).await?;
        pending = failed;
    }
}

/// Produces every message and waits for Kafka's acks; retries the ones that failed, with
/// backoff, until all are acknowledged — except those Kafka refuses for good, returned by index.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
pub async fn produce_all(s: &Shared, messages: &[Outgoing]) -> Result<Vec<(usize, KafkaError)>, Interrupted> {
    let sent = enqueue_all(s, messages).await?;
    settle(s, messages, sent).await
}

/// [`enqueue`] for every message, in order.
async fn enqueue_all(s: &Shared, messages: &[Outgoing]) -> Result<Vec<Sent>, Interrupted> {
    enqueue(s, messages, &(0..messages.len()).collect::<Vec<_>>()).await
}

/// A sent message's ack.
async fn acknowledged(sent: Sent) -> Result<(), KafkaError> {
    match sent?.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((err, _))) => Err(err),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Waits until what a batch led to is acknowledged (see [`settle`]). A message Kafka refuses
/// for good is replaced by a dead letter of the batch message it came from (`origins`): reason
/// `too_large` when it was too large, `produce_failed` otherwise. A dead letter refused as too
/// large is replaced by a [reference](reference). Any other refusal of a dead letter, or of a
/// reference, means the dead-letter topic itself is broken (missing, forbidden, a limit below a
/// few kilobytes): it is retried with backoff while the stage reports not ready, and the batch
/// is never committed past it.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
async fn deliver(
    s: &Shared,
    batch: &[OwnedMessage],
    stage: Stage,
    messages: &[Outgoing],
    origins: &[usize],
    sent: Vec<Sent>,
) -> Result<(), Interrupted> {
    let mut refused: Vec<(Outgoing, usize, KafkaError)> =
        settle(s, messages, sent).await?.into_iter().map(|(i, err)| (messages[i].clone(), origins[i], err)).collect();
    let mut backoff = Backoff::infra();
    while !refused.is_empty() {
        let mut broken = None;
        let (replacements, from): (Vec<Outgoing>, Vec<usize>) = refused
            .into_iter()
            .map(|(m, origin, err)| {
                let original = &batch[origin];
                let too_large = err.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge);
                let replacement = if m.topic == s.topics.dead_letter && (is_reference(&m) || !too_large) {
                    // A reference would not help: the topic itself refuses (missing, forbidden).
                    broken = Some(err);
                    m
                } else if m.topic == s.topics.dead_letter {
                    tracing::warn!(error = %err, "kafka refused a dead letter for good; dead-lettering a reference instead");
                    reference(s, original, stage, &refused_dead_letter(&m, &err))
                } else {
                    tracing::warn!(topic = %m.topic, error = %err, "kafka refused a message for good; dead-lettering its source message");
                    let reason = if too_large { "too_large" } else { "produce_failed" };
                    s.count_dead_letter(stage, &source_of(original), reason);
                    dead_letter(s, original, stage, &Failure::new(reason, format!("{}: {err}", m.topic)))
                };
                (replacement, origin)
            })
            .unzip();
        if let Some(err) = broken {
            s.health.set_trouble(format!("the dead-letter topic {} refuses messages: {err}", s.topics.dead_letter));
            tracing::error!(topic = %s.topics.dead_letter, error = %err, "the dead-letter topic refuses messages; holding the batch and retrying");
            pause(&mut backoff, &s.shutdown).await?;
        }
        refused = produce_all(s, &replacements).await?.into_iter().map(|(i, err)| (replacements[i].clone(), from[i], err)).collect();
    }
    Ok(())
}

fn is_reference(m: &Outgoing) -> bool {
    m.headers.iter().any(|h| h.key == headers::DLQ_REFERENCE)
}

/// The failure a refused dead letter recorded (its reason and error headers), with the refusal.
fn refused_dead_letter(m: &Outgoing, err: &KafkaError) -> Failure {
    let header = |name: &str| m.headers.iter().find(|h| h.key == name).and_then(|h| std::str::from_utf8(h.value?).ok());
    let reason = match header(headers::DLQ_REASON) {
        Some(r) => domain_reason(r),
        None => "produce_failed",
    };
    let error = format!("{} (its dead letter was refused: {err})", header(headers::DLQ_ERROR).unwrap_or_default());
    Failure::new(reason, error)
}

/// The `&'static str` of a reason a dead letter names.
fn domain_reason(reason: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "unparseable",
        "unparseable_record",
        "record_missing",
        "missing_config",
        "operation_failed",
        "produce_failed",
        "too_large",
    ];
    REASONS.iter().find(|r| **r == reason).copied().unwrap_or("produce_failed")
}

/// Runs a Redis operation until it succeeds, with backoff; reports not ready meanwhile.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
pub async fn with_redis_retry<T, F, Fut>(
    pool: &Pool,
    health: &Health,
    shutdown: &CancellationToken,
    mut op: F,
) -> Result<T, Interrupted>
where
    F: FnMut(Pool) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::infra();
    loop {
        match op(pool.clone()).await {
            Ok(v) => return Ok(v),
            Err(err) => {
                tracing::warn!(error = %err, "redis call failed; retrying");
                health.set_trouble(format!("redis failing: {err}"));
                pause(&mut backoff, shutdown).await?;
            }
        }
    }
}

/// Sleeps for the next backoff delay, unless shutdown comes first.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
pub async fn pause(backoff: &mut Backoff, shutdown: &CancellationToken) -> Result<(), Interrupted> {
    tokio::select! {
        _ = shutdown.cancelled() => Err(Interrupted),
        _ = tokio::time::sleep(backoff.next_delay()) => Ok(()),
    }
}

/// Marks the batch's offsets done and commits them (after its effects are done).
pub fn commit(consumer: &GroupConsumer, batch: &[OwnedMessage], mode: CommitMode) {
    if let Err(err) = crate::kafka::commit_offsets(consumer, batch, mode) {
        // The messages will be redelivered to whoever owns the partition: at least once.
        tracing::warn!(error = %err, "offset commit failed; the batch may be redelivered");
    }
}

impl Shared {
    /// Counts an event's outcome in a stage: `stored`, `published`, `filtered`, `skipped`,
    /// `dead_lettered`.
    pub fn count(&self, stage: Stage, source: &str, outcome: &'static str) {
        self.count_n(stage, source, outcome, 1);
    }

    /// Counts `n` events of one outcome (see [`Tally`]).
    pub fn count_n(&self, stage: Stage, source: &str, outcome: &'static str, n: u64) {
        self.metrics.events_processed.add(
            n,
            &[
                opentelemetry::KeyValue::new("stage", stage.as_str()),
                opentelemetry::KeyValue::new("source", source.to_owned()),
                opentelemetry::KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Counts a dead letter (and the `dead_lettered` outcome).
    pub fn count_dead_letter(&self, stage: Stage, source: &str, reason: &'static str) {
        self.count(stage, source, "dead_lettered");
        self.metrics.dead_letters.add(
            1,
            &[
                opentelemetry::KeyValue::new("stage", stage.as_str()),
                opentelemetry::KeyValue::new("source", source.to_owned()),
                opentelemetry::KeyValue::new("reason", reason),
            ],
        );
    }
}

/// The source a consumed message names in its headers, or `unknown`.
pub fn source_of(message: &OwnedMessage) -> String {
    message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == headers::SOURCE).and_then(|h| h.value))
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("unknown")
        .to_owned()
}

/// What a transformer does with a batch; the [`StageRunner`] does the rest.
pub trait Processor {
    /// Makes the batch's effects before Kafka durable (Redis written) and says what to produce.
    ///
    /// # Errors
    /// [`Interrupted`] when shutdown came first: the batch is then not committed.
    fn process(&self, batch: &[OwnedMessage]) -> impl std::future::Future<Output = Result<Processed, Interrupted>> + Send;
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
    pub producer: FutureProducer,
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
}

/// Closes the window Redis' `appendfsync everysec` leaves: a Redis that crashes may lose up to
/// about a second of acknowledged writes whose Kafka offsets are already committed. The guard
/// remembers the offsets of the batches of the last [`StoreGuard::WINDOW`]; when Redis' `run_id`
/// changes (it restarted), it seeks each partition back to the oldest of them, so those events
/// are processed and stored again. The store's versioned writes keep newer records; the output
/// topic may see duplicates (at least once).
/// A batch's first offset in one partition: (topic, partition, offset).
type FirstOffset = (String, i32, i64);

#[derive(Default)]
struct StoreGuard {
    run_id: Option<String>,
    /// When `run_id` was last read: at most every [`StoreGuard::CHECK_EVERY`], well inside the
    /// window, rather than once per batch.
    checked: Option<std::time::Instant>,
    /// When each recent batch finished, and its first offset per (topic, partition).
    recent: std::collections::VecDeque<(std::time::Instant, Vec<FirstOffset>)>,
}

impl StoreGuard {
    const WINDOW: Duration = Duration::from_secs(5);
    const CHECK_EVERY: Duration = Duration::from_millis(250);

    fn record(&mut self, batch: &[OwnedMessage]) {
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in batch {
            let e = first.entry((m.topic().to_owned(), m.partition())).or_insert(m.offset());
            *e = (*e).min(m.offset());
        }
        let now = std::time::Instant::now();
        self.recent.push_back((now, first.into_iter().map(|((t, p), o)| (t, p, o)).collect()));
        while self.recent.front().is_some_and(|(at, _)| now.duration_since(*at) > Self::WINDOW) {
            self.recent.pop_front();
        }
    }

    /// Whether Redis' `run_id` changed since the last look.
    async fn restarted(&mut self, s: &Shared) -> bool {
        if self.checked.is_some_and(|at| at.elapsed() < Self::CHECK_EVERY) {
            return false;
        }
        self.checked = Some(std::time::Instant::now());
        let Ok(current) = crate::store::run_id(&s.pool, s.redis_timeout).await else { return false };
        let restarted = self.run_id.as_ref().is_some_and(|known| *known != current);
        self.run_id = Some(current);
        restarted
    }

    /// Seeks each partition back to the oldest offset of the batches of the last window.
    fn rewind(&mut self, consumer: &GroupConsumer) {
        let mut rewind: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (_, parts) in self.recent.drain(..) {
            for (t, p, o) in parts {
                let e = rewind.entry((t, p)).or_insert(o);
                *e = (*e).min(o);
            }
        }
        for ((topic, partition), offset) in rewind {
            match consumer.seek(&topic, partition, rdkafka::Offset::Offset(offset), Duration::from_secs(5)) {
                Ok(()) => tracing::warn!(topic, partition, offset, "redis restarted: reprocessing recent events it may have lost"),
                Err(err) => tracing::warn!(topic, partition, error = %err, "redis restarted but rewinding failed"),
            }
        }
    }
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
        let producer = crate::kafka::producer(&settings.kafka, Some(&limits))?;
        let consumer = crate::kafka::consumer(
            &settings.kafka,
            &t.group_id,
            &[input_topic],
            Some(metrics.clone()),
            crate::kafka::Commits::StoredEvery(Duration::from_millis(t.commit_interval_ms)),
        )?;
        let pool = crate::store::pool(&settings.redis)?;
        crate::metrics::register_client_gauges(&metrics, &producer, &pool);
        let catalog = crate::SourceCatalog::start(&settings, pool.clone(), shutdown.clone(), metrics.clone()).await?;
        let probe = crate::kafka::probe(&settings.kafka, input_topic)?;
        let health = Health::new(Some((pool.clone(), settings.redis.timeout())), Some(probe));
        let (health_server, port) = crate::http::health_server(&t.listen, health.clone(), metrics.clone())?;
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
            },
            health_server,
            port,
            settings: t.clone(),
            input_topic: input_topic.clone(),
            deadline: settings.shutdown.deadline(),
            guards_store: service == Service::PreTransformer,
            stage,
            in_flight,
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
    pub async fn run(self, processor: impl Processor) -> anyhow::Result<()> {
        let handle = self.health_server.handle();
        let server = tokio::spawn(self.health_server);
        let s = &self.shared;
        tracing::info!(group = %self.settings.group_id, topic = %self.input_topic, depth = self.settings.pipeline_depth, "consuming");
        let linger = Duration::from_millis(self.settings.batch_linger_ms);
        let mut pipeline = Pipeline {
            consumer: &self.consumer,
            shared: s,
            in_flight: std::collections::VecDeque::new(),
            in_flight_messages: &self.in_flight,
            guard: self.guards_store.then(StoreGuard::default),
            last_done: Vec::new(),
            stopped: None,
        };
        while pipeline.stopped.is_none() {
            // Waiting for a message is also when acknowledged batches are finished, so an idle
            // stage leaves nothing unmarked. `recv` is cancel-safe: no message is dropped.
            let first = tokio::select! {
                biased;
                _ = s.shutdown.cancelled() => break,
                done = async { pipeline.in_flight.front_mut().expect("checked").await }, if !pipeline.in_flight.is_empty() => {
                    pipeline.in_flight.pop_front();
                    pipeline.finished(done);
                    continue;
                }
                received = self.consumer.recv() => match received {
                    Ok(m) => m.detach(),
                    Err(err) => {
                        tracing::warn!(error = %err, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let batch = fill_batch(&self.consumer, first, self.settings.batch_size, linger).await;
            pipeline.finish_acknowledged().await;
            if pipeline.redis_restarted().await {
                pipeline.finish_all().await;
                pipeline.rewind();
            }
            if pipeline.stopped.is_some() {
                break;
            }
            let started = std::time::Instant::now();
            let Ok(processed) = processor.process(&batch).await else { break };
            let (messages, origins): (Vec<Outgoing>, Vec<usize>) = processed.outgoing.into_iter().unzip();
            let Ok(sent) = enqueue_all(s, &messages).await else { break };
            self.in_flight.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
            let (shared, stage) = (s.clone(), self.stage);
            let on_delivered = processed.on_delivered;
            pipeline.in_flight.push_back(tokio::spawn(async move {
                let result = deliver(&shared, &batch, stage, &messages, &origins, sent).await;
                if result.is_ok() {
                    on_delivered();
                }
                let stage_attr = [opentelemetry::KeyValue::new("stage", stage.as_str())];
                shared.metrics.batch_duration.record(started.elapsed().as_secs_f64(), &stage_attr);
                shared.metrics.batch_size.record(batch.len() as u64, &stage_attr);
                (batch, result)
            }));
            while pipeline.in_flight.len() >= self.settings.pipeline_depth.max(1) {
                pipeline.finish_oldest().await;
            }
        }
        match &pipeline.stopped {
            Some(Stopped::Broken(cause)) => {
                tracing::error!(cause = %cause, "the pipeline cannot go on; stopping without committing past the unfinished batch");
            }
            _ => tracing::info!("stopping: finishing batches in flight, committing finished work and flushing the producer"),
        }
        pipeline.finish_all().await;
        commit(&self.consumer, &pipeline.last_done, CommitMode::Sync);
        let producer = s.producer.clone();
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

/// A batch, back from its delivery task, and whether everything it led to was acknowledged.
type Delivered = (Vec<OwnedMessage>, Result<(), Interrupted>);

/// The batches a [`StageRunner`] has handed to Kafka and not yet committed, oldest first.
struct Pipeline<'a> {
    consumer: &'a GroupConsumer,
    shared: &'a Shared,
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Delivered>>,
    in_flight_messages: &'a std::sync::atomic::AtomicUsize,
    guard: Option<StoreGuard>,
    /// The last batch committed, committed again synchronously at shutdown.
    last_done: Vec<OwnedMessage>,
    /// Why a batch was not finished, once one was not: nothing after it may be committed (its
    /// messages would be skipped), so the runner stops and they are redelivered.
    stopped: Option<Stopped>,
}

impl Pipeline<'_> {
    /// Commits the oldest batches already acknowledged, in order.
    async fn finish_acknowledged(&mut self) {
        while self.in_flight.front().is_some_and(tokio::task::JoinHandle::is_finished) {
            self.finish_oldest().await;
        }
    }

    async fn finish_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.finish_oldest().await;
        }
    }

    /// Waits for the oldest batch and finishes it.
    async fn finish_oldest(&mut self) {
        let Some(task) = self.in_flight.pop_front() else { return };
        self.finished(task.await);
    }

    /// Finishes the oldest batch, just taken off `in_flight`: if its effects are done and
    /// nothing before it broke, marks its offsets done (librdkafka commits what is marked every
    /// `commit_interval_ms`).
    fn finished(&mut self, done: Result<Delivered, tokio::task::JoinError>) {
        let (batch, result) = match done {
            Ok(done) => done,
            Err(err) => {
                self.stopped = Some(Stopped::Broken(format!("a batch's delivery task failed: {err}")));
                return;
            }
        };
        self.in_flight_messages.fetch_sub(batch.len(), std::sync::atomic::Ordering::Relaxed);
        if self.stopped.is_some() {
            return;
        }
        if result.is_err() {
            self.stopped = Some(Stopped::Requested);
            return;
        }
        self.shared.health.clear_trouble();
        if let Err(err) = crate::kafka::store_offsets(self.consumer, &batch) {
            // Revoked meanwhile: the partition's new owner redelivers (at least once).
            tracing::warn!(error = %err, "storing offsets failed; the batch may be redelivered");
        }
        if let Some(guard) = self.guard.as_mut() {
            guard.record(&batch);
        }
        self.last_done = batch;
    }

    /// Whether Redis restarted since the last look (only for the stage that writes the store).
    async fn redis_restarted(&mut self) -> bool {
        match self.guard.as_mut() {
            Some(guard) => guard.restarted(self.shared).await,
            None => false,
        }
    }

    /// Seeks back over the recent batches a restarted Redis may have lost.
    fn rewind(&mut self) {
        if let Some(guard) = self.guard.as_mut() {
            guard.rewind(self.consumer);
        }
    }
}

/// What a stage's operations made of an event.
#[derive(Debug)]
pub enum Applied {
    /// Transformed, by the source config of the given version.
    Keep(domain::Event, u64),
    /// An operation dropped it on purpose.
    Filtered,
    /// An operation failed and the source's policy is `skip`.
    Skipped,
    /// To the dead-letter topic, for this reason.
    DeadLetter(Failure),
}

/// Applies `stage`'s operations of the event's source, following the source's `on_error`
/// policy. Under `fail`, waits (reporting not ready) until a config change lets it through.
///
/// # Errors
/// [`Interrupted`] when shutdown comes while waiting.
pub async fn apply(
    s: &Shared,
    stage: Stage,
    service: crate::settings::Service,
    original: domain::Event,
    input: Option<domain::Input<'_>>,
) -> Result<Applied, Interrupted> {
    use domain::{OnError, Outcome};
    let mut backoff = Backoff::infra();
    let mut pending = Some(original);
    loop {
        let current = pending.as_ref().expect("kept while retrying");
        let Some(source) = s.catalog.resolve(current.source.as_str()) else {
            let error = format!("source `{}` has no configuration", current.source);
            return Ok(Applied::DeadLetter(Failure::new("missing_config", error)));
        };
        // Only `fail` retries the same event; otherwise it is transformed in place, uncopied.
        let mut event = if source.config().on_error == OnError::Fail {
            current.clone()
        } else {
            pending.take().expect("present")
        };
        let ctx = domain::Context {
            stage,
            service: service.name(),
            instance: &s.instance,
            version: crate::VERSION,
            config_version: source.version(),
            now: chrono::Utc::now(),
            input,
        };
        let (id, src) = (event.id.clone(), event.source.clone());
        match source.run(stage, &mut event, &ctx) {
            Ok(Outcome::Keep) => return Ok(Applied::Keep(event, source.version())),
            Ok(Outcome::Dropped { index, op }) => {
                tracing::debug!(event_id = %id, source = %src, index, op, "event filtered");
                return Ok(Applied::Filtered);
            }
            Err(err) => {
                s.metrics.operation_failures.add(
                    1,
                    &[
                        opentelemetry::KeyValue::new("stage", stage.as_str()),
                        opentelemetry::KeyValue::new("source", src.to_string()),
                        opentelemetry::KeyValue::new("operation", err.op),
                    ],
                );
                match source.config().on_error {
                    OnError::DeadLetter => {
                        let operation = Some((err.index, err.op));
                        return Ok(Applied::DeadLetter(Failure { reason: "operation_failed", error: err.to_string(), operation }));
                    }
                    OnError::Skip => {
                        tracing::warn!(event_id = %id, source = %src, error = %err, "operation failed; skipping the event (on_error: skip)");
                        return Ok(Applied::Skipped);
                    }
                    OnError::Fail => {
                        tracing::error!(event_id = %id, source = %src, error = %err, "operation failed; holding until the config is fixed (on_error: fail)");
                        s.health.set_trouble(format!("source {src} failing: {err}"));
                        pause(&mut backoff, &s.shutdown).await?;
                    }
                }
            }
        }
    }
}
