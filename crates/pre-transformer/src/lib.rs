//! The pre-transformer: reads raw events, applies each source's `pre` operations, stores the
//! processed record in Redis (`processed:{<source>:<id>}`), and tells the post stage through the
//! `processed` topic.
//!
//! Messages are handled in batches: decide what each message becomes, write every record of the
//! batch to Redis in one call, and hand the notices and dead letters to Kafka. The batch's
//! offsets are committed only once Kafka acknowledged them all: under exactly once (the
//! default) with the notices, in one Kafka transaction; under at least once, stored after them.
//! The next batch is processed while Kafka acknowledges (see
//! [`adapters::stage::StageRunner::run`]).

use adapters::settings::Service;
use adapters::stage::{self, Applied, Failure, Interrupted, Outgoing, Processed, Processor, Shared, Transform, Transformer};
use adapters::store::{NewRecord, Records, Written};
use domain::schema::headers;
use domain::{DeadLetterReason, Event, EventOutcome, Input, ProcessedNotice, Stage};
use adapters::kafka::message::{Message, OwnedMessage};
use tracing::Instrument as _;

/// The pre-transformer service: built with `PreTransformer::build(settings, shutdown)`, run with
/// `run_until_stopped` (see [`Transformer`]).
pub type PreTransformer = Transformer<PreProcessor>;

/// What the pre-transformer does with a batch.
pub struct PreProcessor {
    shared: Shared,
    records: Records,
}

impl Transform for PreProcessor {
    const SERVICE: Service = Service::PreTransformer;

    fn new(shared: &Shared) -> Self {
        PreProcessor { shared: shared.clone(), records: shared.records() }
    }
}

/// What one consumed message leads to.
enum Disposition {
    Store(Box<Event>),
    DeadLetter(Failure),
    /// Filtered or skipped (the outcome counted).
    Skip(EventOutcome),
}

impl Processor for PreProcessor {
    async fn process(&self, batch: &[OwnedMessage]) -> Result<Processed, Interrupted> {
        let s = &self.shared;
        let mut records: Vec<NewRecord> = Vec::new();
        // Per record: its notice's place in `outgoing` (none when redone after a Redis
        // restart), and its source.
        let mut notices: Vec<(Option<usize>, String)> = Vec::new();
        let mut outgoing: Vec<(Outgoing, usize)> = Vec::new();
        // One span per event, a child of the gateway's; alive until the batch's effects are done.
        let mut spans: Vec<tracing::Span> = Vec::with_capacity(batch.len());
        let mut tally = stage::Tally::default();
        for (index, message) in batch.iter().enumerate() {
            let span = stage::process_span(s, Stage::Pre, message);
            match self.decide(message).instrument(span.clone()).await? {
                Disposition::Store(event) => {
                    span.record("metastream.event.id", event.id.as_str());
                    span.record("metastream.source", event.source.as_str());
                    let value = event.to_record();
                    let notice = ProcessedNotice::wire_with_record(&event.source, &event.id, &value);
                    let headers = stage::with_headers(
                        stage::with_ingest_time(stage::event_headers(event.id.as_str(), event.source.as_str()), message),
                        &adapters::telemetry::propagation::headers_for(&span),
                    );
                    let out = Outgoing { topic: s.topics.processed.clone(), key: Some(event.entity_key()), payload: notice, headers };
                    // A notice its topic would refuse (operations grew the event past the
                    // budget): the event is dead-lettered, and not stored, before anything.
                    if let Some(failure) = stage::oversize(s, &out) {
                        outgoing.push((stage::dead_letter(s, message, Stage::Pre, &failure), index));
                        continue;
                    }
                    records.push(NewRecord {
                        source: event.source.clone(),
                        id: event.id.clone(),
                        partition: message.partition(),
                        offset: message.offset(),
                        value,
                        idempotency_key: event.routing.header(headers::IDEMPOTENCY_KEY).map(str::to_owned),
                    });
                    spans.push(span);
                    // Redone after a Redis restart, its notice already published: restore the
                    // record only.
                    let notice_at = (!s.replay.covers(message)).then(|| {
                        outgoing.push((out, index));
                        outgoing.len() - 1
                    });
                    notices.push((notice_at, event.source.to_string()));
                }
                Disposition::DeadLetter(failure) => outgoing.push((stage::dead_letter(s, message, Stage::Pre, &failure), index)),
                Disposition::Skip(outcome) => tally.add(&stage::source_of(message), outcome),
            }
        }
        if !records.is_empty() {
            // The records go to Redis in one call: each event's trace shows it as a child span.
            let redis_spans: Vec<tracing::Span> = spans
                .iter()
                .map(|parent| {
                    tracing::info_span!(parent: parent, "redis", otel.name = "EVALSHA store_records", otel.kind = "client",
                        db.system.name = "redis", db.operation.name = "EVALSHA", db.operation.batch.size = records.len())
                })
                .collect();
            let written = adapters::retry::with_redis_retry(&s.health, &s.shutdown, || self.records.write_newest(&records)).await?;
            drop(redis_spans);
            let mut dropped = std::collections::HashSet::new();
            for ((notice_at, source), written) in notices.into_iter().zip(&written) {
                match written {
                    // A client's retry written to Kafka a second time: not published again.
                    Written::Duplicate => {
                        dropped.extend(notice_at);
                        tally.add(&source, EventOutcome::Duplicate);
                    }
                    Written::Stored | Written::Stale => tally.add(&source, EventOutcome::Stored),
                }
            }
            if !dropped.is_empty() {
                tracing::info!(duplicates = dropped.len(), "dropped second copies of keyed requests");
                let mut at = 0;
                outgoing.retain(|_| {
                    at += 1;
                    !dropped.contains(&(at - 1))
                });
            }
            let stale = written.iter().filter(|w| **w == Written::Stale).count();
            if stale > 0 {
                tracing::info!(stale, "kept newer stored versions over redelivered updates");
            }
        }
        tally.record(s, Stage::Pre);
        // The spans end when the notices are acknowledged.
        Ok(Processed { outgoing, on_delivered: Box::new(move || drop(spans)) })
    }
}

impl PreProcessor {

    async fn decide(&self, message: &OwnedMessage) -> Result<Disposition, Interrupted> {
        let s = &self.shared;
        let Some(bytes) = message.payload() else {
            return Ok(Disposition::DeadLetter(Failure::new(DeadLetterReason::Unparseable, "message has no payload")));
        };
        let mut original = match Event::from_wire(bytes) {
            Ok(e) => e,
            Err(err) => return Ok(Disposition::DeadLetter(Failure::new(DeadLetterReason::Unparseable, err.to_string()))),
        };
        // The ingest topic is where events enter: a payload is checked as the gateway checks it
        // (written there by something else, it may hold what no JSON parser reads back), so
        // whatever the pipeline stores and publishes reads back — whether or not an operation
        // reads it. Past here the payload stays text until an operation reads a field.
        if let Err(err) = original.payload.check() {
            return Ok(Disposition::DeadLetter(Failure::new(DeadLetterReason::Unparseable, format!("payload: {err}"))));
        }
        // Operations may read the incoming headers, and decide the downstream ones.
        original.routing.headers = stage::message_headers(message);
        let input = Input { topic: message.topic(), partition: message.partition(), offset: message.offset() };
        Ok(match stage::apply(s, Stage::Pre, Service::PreTransformer, original, Some(input)).await? {
            Applied::Keep(mut event, version) => {
                event.provenance.ingest_partition = Some(message.partition());
                event.provenance.ingest_offset = Some(message.offset());
                event.provenance.pre_config_version = Some(version);
                Disposition::Store(Box::new(event))
            }
            Applied::Filtered => Disposition::Skip(EventOutcome::Filtered),
            Applied::Skipped => Disposition::Skip(EventOutcome::Skipped),
            Applied::DeadLetter(failure) => Disposition::DeadLetter(failure),
        })
    }
}

/// The pre-transformer's process from start to exit: settings, telemetry, signals, the service until
/// it stops. What its binary runs, and `metastream-services` when called as `pre-transformer`.
pub fn run() -> std::process::ExitCode {
    adapters::process::run(adapters::settings::Service::PreTransformer, adapters::process::Threads::Current, |settings, shutdown| async move { PreTransformer::build(settings, shutdown).await?.run_until_stopped().await })
}
