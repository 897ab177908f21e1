//! Reading a range of a topic outside any group: the admin API's dead-letter browser, an
//! entity's recent history on the output topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

/// Reads `topic` from `start` (partition → offset; a partition not named starts at its low
/// watermark) up to the end each partition had when the scan began, keeping the messages `keep`
/// accepts, until `limit` are kept or `deadline` passes. Returns them and where each partition
/// stopped (the next offset to read). Blocking: call it from a blocking thread.
///
/// # Errors
/// When the client cannot be created or the broker does not answer.
pub fn scan(
    config: &ClientConfig,
    topic: &str,
    start: &BTreeMap<i32, i64>,
    limit: usize,
    deadline: Duration,
    keep: impl Fn(&OwnedMessage) -> bool,
) -> anyhow::Result<(Vec<OwnedMessage>, BTreeMap<i32, i64>)> {
    // A topic written in transactions ends in a commit marker, which is no message: the end of
    // such a partition is known from its end-of-partition event, not from a last message.
    let consumer: BaseConsumer = config.clone().set("enable.partition.eof", "true").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions: Vec<i32> = metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    let mut position = BTreeMap::new();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
        let from = start.get(&p).copied().unwrap_or(low).max(low);
        position.insert(p, from);
        if from < high {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
        }
    }
    let mut kept = Vec::new();
    if ends.is_empty() {
        return Ok((kept, position));
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + deadline;
    while kept.len() < limit && !ends.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let m = m.detach();
                position.insert(m.partition(), m.offset() + 1);
                if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&m.partition());
                }
                if keep(&m) {
                    kept.push(m);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                if let Some(end) = ends.remove(&p) {
                    position.insert(p, end);
                }
            }
            Some(Err(err)) => anyhow::bail!("reading {topic}: {err}"),
            None => {}
        }
    }
    Ok((kept, position))
}

/// Where the last `n` messages of each partition of `topic` start (a partition holding fewer:
/// its low watermark), to [`scan`] from. Blocking.
///
/// # Errors
/// When the client cannot be created or the broker does not answer.
pub fn last_offsets(config: &ClientConfig, topic: &str, n: i64) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions: Vec<i32> = metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions (does it exist?)");
    let mut start = BTreeMap::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
        start.insert(p, (high - n).max(low));
    }
    Ok(start)
}
