//! The `kafka-transform` mode: the floor under a transformer's CPU per event. A raw consume →
//! produce loop in Kafka transactions, run as a transformer runs its own (a `read_committed`
//! group consumer, one transactional producer, each batch's consumer offsets committed with its
//! output), with none of a transformer's work: no Redis, no operations, no headers added. Each
//! message of `--topic` is written, key and payload as read, to `--to-topic`; a batch of up to
//! `--transaction-events` messages is one transaction, committed once all its messages are
//! acknowledged. Fed from a topic a raw producer filled beforehand, it reads a backlog: full
//! batches, the cheapest per event a transactional stage can be.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::args::Args;
use crate::report::{now_us, Counters};

/// How long a batch waits for more messages after its first (a transformer's `batch_linger_ms`).
const LINGER: Duration = Duration::from_millis(2);
/// How long the first message may take: the group's join and first fetch.
const FIRST_WAIT: Duration = Duration::from_secs(60);
/// Once reading, the input counts as read through after this long without a message.
const IDLE_END: Duration = Duration::from_secs(1);
/// How long a blocking transaction call may take before the floor gives up.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer a transformer runs (adapters' `kafka::consumer` with config/default.yaml's
/// settings): `read_committed`, no commits of its own, fetches answered as soon as anything is there
/// (`fetch_min_bytes` 1, `fetch_wait_ms` 10), a bounded prefetch; a new group each run, from the start of the topic.
fn consumer(args: &Args) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("group.id", format!("loadgen-transform-{}", now_us()))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "10")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.queue.backoff.ms", "20")
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    Ok(consumer)
}

/// The transactional producer a transformer runs (adapters' `kafka::transactional_producer` with
/// config/default.yaml's settings), its transactions initialised.
fn producer(args: &Args) -> anyhow::Result<FutureProducer> {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("transactional.id", format!("loadgen-transform-{}", now_us()))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "5000")
        .set("transaction.timeout.ms", "10000")
        .set("linger.ms", "1")
        .set("queue.buffering.max.kbytes", "32768")
        .create()?;
    tokio::task::block_in_place(|| producer.init_transactions(TXN_TIMEOUT)).context("initialising transactions")?;
    Ok(producer)
}

/// Runs the loop until `--max-events` are committed, `--seconds` passed since the first message,
/// or the input is read through. Counts committed messages as acknowledged and records each
/// transaction's time (its first message read → committed) as a request's latency. Returns the
/// time it ran for, from the first message (joining the group is not transforming).
///
/// # Errors
/// When a client cannot be created, `--to-topic` is missing, or a transaction fails: a floor
/// with an aborted transaction measured something else, so the run stops there.
pub async fn run_kafka_transform(args: &Args, counters: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>) -> anyhow::Result<Duration> {
    let to = args.to_topic.as_deref().context("kafka-transform needs --to-topic")?;
    let consumer = consumer(args)?;
    let producer = producer(args)?;
    let max = args.max_events.unwrap_or(u64::MAX);
    let run_for = Duration::from_secs(args.seconds);
    let size = args.transaction_events.max(1);
    let mut started: Option<Instant> = None;
    let mut committed = 0u64;
    let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(size);
    while committed < max && started.is_none_or(|s| s.elapsed() < run_for) {
        // A batch: its first message as it comes, then whatever more arrives within the linger.
        batch.clear();
        let wait = if started.is_none() { FIRST_WAIT } else { IDLE_END };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(err)) => {
                eprintln!("  consume error: {err}");
                continue;
            }
            Ok(Ok(m)) => batch.push(m),
        }
        let first = Instant::now();
        started.get_or_insert(first);
        while batch.len() < size {
            match tokio::time::timeout_at((first + LINGER).into(), consumer.recv()).await {
                Err(_) => break,
                Ok(Err(err)) => eprintln!("  consume error: {err}"),
                Ok(Ok(m)) => batch.push(m),
            }
        }
        transact(&producer, &consumer, to, &batch).await?;
        committed += batch.len() as u64;
        counters.acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let _ = latency.lock().unwrap().record((first.elapsed().as_micros() as u64).max(1));
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

/// One transaction: `batch` written to `to`, every message acknowledged, then the offsets after
/// it sent with the consumer's group metadata and the transaction committed — the order a
/// transformer keeps (no offset committed before its output). On any failure the transaction is
/// aborted and the error returned.
async fn transact(producer: &FutureProducer, consumer: &StreamConsumer, to: &str, batch: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
    producer.begin_transaction().context("begin_transaction")?;
    let result = async {
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in batch {
            let mut record = FutureRecord::to(to).payload(m.payload().unwrap_or_default()).key(m.key().unwrap_or_default());
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // The producer's queue is full: wait for its deliveries to make room.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((err, _)) => anyhow::bail!("producing: {err}"),
                }
            }
            next.insert(m.partition(), m.offset() + 1);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => anyhow::bail!("delivery: {err}"),
                Err(_) => anyhow::bail!("delivery: the producer dropped it"),
            }
        }
        let mut offsets = TopicPartitionList::new();
        let topic = batch.first().map(|m| m.topic()).unwrap_or_default();
        for (partition, offset) in next {
            offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        let group = consumer.group_metadata().context("the consumer has no group metadata")?;
        tokio::task::block_in_place(|| {
            producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
            producer.commit_transaction(TXN_TIMEOUT)
        })
        .context("committing the transaction")
    }
    .await;
    if result.is_err() {
        let _ = tokio::task::block_in_place(|| producer.abort_transaction(TXN_TIMEOUT));
    }
    result
}
