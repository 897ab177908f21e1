//! One record produced and its acknowledgement awaited: the gateway's ingest, its audit trail
//! and the dead-letter replay. (The stages produce through `stage::produce`, in order and in
//! transactions.)

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

/// A record to produce.
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// In order; a name may repeat.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

/// Where Kafka put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Larger than the topic takes: permanent for this record.
    #[error("kafka refused the record as too large ({0})")]
    TooLarge(KafkaError),
    /// The producer's local queue stayed full for the whole wait.
    #[error("the producer's queue is full")]
    QueueFull,
    /// Not acknowledged within `kafka.produce_timeout_ms` (`message.timeout.ms`) or the wait.
    #[error("kafka did not acknowledge the record in time")]
    TimedOut,
    #[error("kafka did not acknowledge the record ({0})")]
    Failed(KafkaError),
}

/// Produces `record`, waiting up to `queue_wait` for room in the producer's queue and up to
/// `ack_within` for the acknowledgement.
///
/// # Errors
/// [`SendError`]: too large (permanent), or Kafka not taking it now (transient).
pub async fn send(producer: &FutureProducer, record: Record<'_>, queue_wait: Duration, ack_within: Duration) -> Result<Delivered, SendError> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (key, value) in &record.headers {
        headers = headers.insert(Header { key, value: Some(*value) });
    }
    let mut outgoing = FutureRecord::to(record.topic).payload(record.payload).headers(headers);
    if let Some(key) = record.key {
        outgoing = outgoing.key(key);
    }
    match tokio::time::timeout(ack_within, producer.send(outgoing, Timeout::After(queue_wait))).await {
        Ok(Ok(d)) => Ok(Delivered { partition: d.partition, offset: d.offset }),
        Ok(Err((err, _))) => Err(match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => SendError::TooLarge(err),
            Some(RDKafkaErrorCode::QueueFull) => SendError::QueueFull,
            Some(RDKafkaErrorCode::MessageTimedOut) => SendError::TimedOut,
            _ => SendError::Failed(err),
        }),
        Err(_) => Err(SendError::TimedOut),
    }
}

/// Waits until every record handed to `producer` is acknowledged, or `deadline` passes
/// (blocking: call it from a blocking thread).
///
/// # Errors
/// When records are still unacknowledged at the deadline.
pub fn flush(producer: &FutureProducer, deadline: Duration) -> Result<(), KafkaError> {
    producer.flush(deadline)
}
