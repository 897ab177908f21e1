//! Producing what a batch led to: messages handed to the producer in order, acks awaited,
//! transient failures retried with backoff, and what Kafka refuses for good replaced by a dead
//! letter (or a reference), so no message holds its partition.

use std::time::Duration;

use domain::schema::headers;
use domain::{DeadLetterReason, Stage};
use futures_util::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::dead_letter::{dead_letter, reference, Failure};
use super::runner::Shared;
use crate::retry::{pause, Backoff};
use crate::shutdown::Interrupted;

/// A message to produce, owned so it can be retried.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// What an outgoing message counts against its topic's limit.
fn outgoing_size(m: &Outgoing) -> usize {
    domain::limits::message_size(m.key.as_deref().map(str::as_bytes), &m.payload, m.headers.iter().map(|h| (h.key, h.value)))
}

pub(super) fn fits(m: &Outgoing, limit: usize) -> bool {
    outgoing_size(m) <= limit
}

/// Why `m` cannot be produced, when it is larger than its topic takes (one of the pipeline's
/// topics: the limit of a topic an operation routed to is known only to the broker, whose
/// refusal is handled in the same way).
pub fn oversize(s: &Shared, m: &Outgoing) -> Option<Failure> {
    let limit = s.limits.of(&s.topics, &m.topic)?;
    let size = outgoing_size(m);
    (size > limit).then(|| {
        Failure::new(DeadLetterReason::TooLarge, format!("the message for {} would be {size} bytes; the topic takes at most {limit}", m.topic))
    })
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
pub(super) type Sent = Result<DeliveryFuture, KafkaError>;

/// Hands `messages[i]` for each `i` of `which` to the producer, in order, without waiting for
/// their acks. Messages handed over later (the next batch's) queue behind these, so an entity's
/// messages keep their order across batches. Waits while the producer's queue is full.
///
/// # Errors
/// [`Interrupted`] when shutdown comes while waiting.
async fn enqueue(s: &Shared, messages: &[Outgoing], which: &[usize]) -> Result<Vec<Sent>, Interrupted> {
    let mut sent = Vec::with_capacity(which.len());
    let producer = s.producer.get();
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
            match producer.send_result(record) {
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
///
/// Under exactly once a message the broker failed to take dooms the open transaction: nothing
/// is retried or replaced; the failure is recorded in [`Shared::transaction`] and the runner
/// aborts the transaction and redoes its work (a message refused for good is then
/// dead-lettered instead). Messages never sent (refused by the client) are handled as always.
async fn settle(s: &Shared, messages: &[Outgoing], mut sent: Vec<Sent>) -> Result<Vec<(usize, KafkaError)>, Interrupted> {
    let mut refused = Vec::new();
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut backoff = Backoff::infra();
    loop {
        let was_sent: Vec<bool> = sent.iter().map(Result::is_ok).collect();
        let results = join_all(sent.into_iter().map(acknowledged)).await;
        let mut failed = Vec::new();
        let mut last_error = None;
        for ((i, result), was_sent) in pending.into_iter().zip(results).zip(was_sent) {
            let Err(err) = result else { continue };
            s.metrics.delivery_errors.add(1, &[opentelemetry::KeyValue::new("topic", messages[i].topic.clone())]);
            if was_sent {
                if let Some(txn) = &s.transaction {
                    txn.doom(&err);
                    if permanent(&err) {
                        refused.push((i, err));
                    }
                    continue;
                }
            }
            if permanent(&err) {
                refused.push((i, err));
            } else {
                last_error = Some(err);
                failed.push(i);
            }
        }
        if s.transaction.as_ref().is_some_and(|t| t.is_doomed()) {
            // Retrying into a doomed transaction cannot succeed; the runner aborts it.
            return Ok(refused);
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
pub(super) async fn enqueue_all(s: &Shared, messages: &[Outgoing]) -> Result<Vec<Sent>, Interrupted> {
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
pub(super) async fn deliver(
    s: &Shared,
    batch: &[OwnedMessage],
    stage: Stage,
    messages: &[Outgoing],
    origins: &[usize],
    sent: Vec<Sent>,
) -> Result<(), Interrupted> {
    let refused = settle(s, messages, sent).await?;
    if let Some(txn) = s.transaction.as_ref().filter(|t| t.is_doomed()) {
        // The transaction is aborted and its work redone: then these are dead-lettered.
        for (i, err) in refused {
            let reason = if err.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) { DeadLetterReason::TooLarge } else { DeadLetterReason::ProduceFailed };
            txn.refuse(&batch[origins[i]], Failure::new(reason, format!("{}: {err}", messages[i].topic)));
        }
        return Ok(());
    }
    let mut refused: Vec<(Outgoing, usize, KafkaError)> = refused.into_iter().map(|(i, err)| (messages[i].clone(), origins[i], err)).collect();
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
                    let reason = if too_large { DeadLetterReason::TooLarge } else { DeadLetterReason::ProduceFailed };
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
    let reason = header(headers::DLQ_REASON).and_then(DeadLetterReason::parse).unwrap_or(DeadLetterReason::ProduceFailed);
    let error = format!("{} (its dead letter was refused: {err})", header(headers::DLQ_ERROR).unwrap_or_default());
    Failure::new(reason, error)
}
