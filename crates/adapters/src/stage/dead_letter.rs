//! Dead letters: the original message with headers saying why and where from — or, when that
//! would not fit the dead-letter topic, a reference to it. A dead letter always fits.

use domain::schema::headers;
use domain::{DeadLetterReason, Stage};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders, OwnedMessage};

use super::headers::{header_of, source_of};
use super::produce::{fits, Outgoing};
use super::runner::Shared;

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: DeadLetterReason,
    pub error: String,
    /// The failing operation's index in its list and its name, for `operation_failed`.
    pub operation: Option<(usize, &'static str)>,
}

impl Failure {
    pub fn new(reason: DeadLetterReason, error: impl Into<String>) -> Self {
        Failure { reason, error: error.into(), operation: None }
    }
}

/// The dead-letter form of `original`: same key and payload, with headers naming the stage,
/// the reason, the failing operation, the error and where the message came from. When that does
/// not fit the dead-letter topic, a [reference](reference) to the original instead: a dead
/// letter always fits, so no message can hold a partition.
///
/// Counts it (`metastream_dead_letters_total` and the `dead_lettered` outcome) and logs it.
pub fn dead_letter(s: &Shared, original: &OwnedMessage, stage: Stage, failure: &Failure) -> Outgoing {
    s.count_dead_letter(stage, &source_of(original), failure.reason);
    tracing::warn!(reason = %failure.reason, error = %failure.error, partition = original.partition(), offset = original.offset(), "dead-lettering message");
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
            "reason": failure.reason.as_str(),
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
            opentelemetry::KeyValue::new("reason", failure.reason.as_str()),
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
        .insert(Header { key: headers::DLQ_REASON, value: Some(failure.reason.as_str()) })
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
