//! The post-transformer: reads the pre stage's notices, loads each processed record from Redis,
//! applies its source's `post` operations and publishes the result on the output topic
//! (`post_process_meta_data_events`) for downstream systems.
//!
//! Per batch: read the records notices do not carry in one Redis round trip, hand the results
//! and dead letters to Kafka, and commit once Kafka acknowledged them all (under exactly once,
//! the default, in the same Kafka transaction as the output; under at least once, after it),
//! processing the next batch meanwhile (see [`adapters::stage::StageRunner::run`]).

use adapters::settings::Service;
use adapters::stage::{self, Applied, Failure, Interrupted, Outgoing, Processed, Processor, Shared, Transform, Transformer};
use adapters::store::Records;
use domain::{DeadLetterReason, Event, EventId, EventOutcome, Input, ProcessedNotice, SourceName, Stage};
use adapters::kafka::message::{Message, OwnedMessage};
use tracing::Instrument as _;

/// The post-transformer service: built with `PostTransformer::build(settings, shutdown)`, run with
/// `run_until_stopped` (see [`Transformer`]).
pub type PostTransformer = Transformer<PostProcessor>;

/// What the post-transformer does with a batch.
pub struct PostProcessor {
    shared: Shared,
    records: Records,
}

impl Transform for PostProcessor {
    const SERVICE: Service = Service::PostTransformer;

    fn new(shared: &Shared) -> Self {
        PostProcessor { shared: shared.clone(), records: shared.records() }
    }
}

/// What the post operations made of a record.
enum Transformed {
    Publish(Outgoing),
    DeadLetter(Outgoing),
    /// Filtered or skipped (the outcome counted).
    Dropped(EventOutcome),
}

impl Processor for PostProcessor {
    async fn process(&self, batch: &[OwnedMessage]) -> Result<Processed, Interrupted> {
        let s = &self.shared;
        let mut outgoing = Vec::with_capacity(batch.len());
        let mut published: Vec<(String, Option<String>)> = Vec::with_capacity(batch.len());
        // Notices carry their record; only older notices without one need a Redis read, and
        // those are read together in one round trip.
        let mut notices = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            match message.payload().map(ProcessedNotice::from_wire) {
                Some(Ok(notice)) => notices.push((index, notice)),
                Some(Err(err)) => outgoing.push((dead_letter(s, message, Failure::new(DeadLetterReason::Unparseable, err.to_string())), index)),
                None => outgoing.push((dead_letter(s, message, Failure::new(DeadLetterReason::Unparseable, "message has no payload")), index)),
            }
        }
        let missing: Vec<(SourceName, EventId)> =
            notices.iter().filter(|(_, n)| n.record.is_none()).map(|(_, n)| (n.source.clone(), n.id.clone())).collect();
        let mut fetched = self.fetch(&missing).await?.into_iter();
        let mut spans: Vec<tracing::Span> = Vec::with_capacity(batch.len());
        for (index, notice) in notices {
            let message = &batch[index];
            let span = stage::process_span(s, Stage::Post, message);
            span.record("metastream.event.id", notice.id.as_str());
            span.record("metastream.source", notice.source.as_str());
            let record = match notice.record {
                Some(record) => record,
                None => match fetched.next().flatten().map(|bytes| Event::from_wire(&bytes)) {
                    Some(Ok(record)) => record,
                    Some(Err(err)) => {
                        outgoing.push((dead_letter(s, message, Failure::new(DeadLetterReason::UnparseableRecord, err.to_string())), index));
                        continue;
                    }
                    None => {
                        let error = format!("no processed record for {}:{} in redis", notice.source, notice.id);
                        outgoing.push((dead_letter(s, message, Failure::new(DeadLetterReason::RecordMissing, error)), index));
                        continue;
                    }
                },
            };
            let source = record.source.to_string();
            let received_at = record.received_at.clone();
            let transformed = self.transform(message, record).instrument(span.clone()).await?;
            match transformed {
                Transformed::Publish(mut out) => {
                    out.headers = stage::with_headers(stage::with_hop_times(out.headers, message), &adapters::telemetry::propagation::headers_for(&span));
                    published.push((source, received_at));
                    outgoing.push((out, index));
                }
                Transformed::DeadLetter(out) => outgoing.push((out, index)),
                Transformed::Dropped(outcome) => s.count(Stage::Post, &source, outcome),
            }
            spans.push(span);
        }
        // Once published and acknowledged: count them, and how long each took since the
        // gateway's ack; the spans end.
        let s = s.clone();
        let on_delivered = move || {
            drop(spans);
            let now = chrono::Utc::now();
            let mut tally = stage::Tally::default();
            for (source, received_at) in published {
                tally.add(&source, EventOutcome::Published);
                if let Some(at) = received_at.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()) {
                    let latency = (now - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    s.metrics.e2e_latency.record(latency, &[opentelemetry::KeyValue::new("source", source)]);
                }
            }
            tally.record(&s, Stage::Post);
        };
        Ok(Processed { outgoing, on_delivered: Box::new(on_delivered) })
    }
}

impl PostProcessor {
    /// Reads records from Redis in one round trip (retrying until Redis answers).
    async fn fetch(&self, entities: &[(SourceName, EventId)]) -> Result<Vec<Option<Vec<u8>>>, Interrupted> {
        let s = &self.shared;
        adapters::retry::with_redis_retry(&s.health, &s.shutdown, || self.records.get_many(entities)).await
    }

    /// Applies the post operations.
    async fn transform(&self, message: &OwnedMessage, original: Event) -> Result<Transformed, Interrupted> {
        let s = &self.shared;
        let input = Input { topic: message.topic(), partition: message.partition(), offset: message.offset() };
        Ok(match stage::apply(s, Stage::Post, Service::PostTransformer, original, Some(input)).await? {
            Applied::Keep(mut event, version) => {
                event.provenance.post_config_version = Some(version);
                // What the operations decided about the Kafka message travels as its topic, key
                // and headers, not inside the published event.
                let routing = std::mem::take(&mut event.routing);
                let headers = stage::output_headers(&event.id, &event.source, &routing);
                let out = Outgoing {
                    topic: routing.topic.unwrap_or_else(|| s.topics.output.clone()),
                    key: Some(routing.key.unwrap_or_else(|| event.entity_key())),
                    payload: event.to_wire(),
                    headers,
                };
                // Operations that grew the event past what its topic takes dead-letter this
                // event, not the batch.
                match stage::oversize(s, &out) {
                    Some(failure) => Transformed::DeadLetter(dead_letter(s, message, failure)),
                    None => Transformed::Publish(out),
                }
            }
            Applied::Filtered => Transformed::Dropped(EventOutcome::Filtered),
            Applied::Skipped => Transformed::Dropped(EventOutcome::Skipped),
            Applied::DeadLetter(failure) => Transformed::DeadLetter(dead_letter(s, message, failure)),
        })
    }
}

fn dead_letter(s: &Shared, message: &OwnedMessage, failure: Failure) -> Outgoing {
    stage::dead_letter(s, message, Stage::Post, &failure)
}

/// The post-transformer's process from start to exit: settings, telemetry, signals, the service until
/// it stops. What its binary runs, and `metastream-services` when called as `post-transformer`.
pub fn run() -> std::process::ExitCode {
    adapters::process::run(adapters::settings::Service::PostTransformer, adapters::process::Threads::Current, |settings, shutdown| async move { PostTransformer::build(settings, shutdown).await?.run_until_stopped().await })
}
