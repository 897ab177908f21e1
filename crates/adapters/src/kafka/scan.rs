//! Reading a range of a topic outside any group: the admin API's dead-letter browser, an
//! entity's recent history on the output topic.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

/// How many of the messages it keeps a [`scan`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The first `n` kept over all partitions; the scan stops there (a page).
    First(usize),
    /// The newest `n` kept of each partition, older ones dropped as newer ones come; the scan
    /// reads to the end (the newest versions of an entity), holding at most `n` per partition.
    NewestPerPartition(usize),
}

/// The messages a scan keeps, within its [`Bound`].
enum Kept {
    /// In the order read.
    First { n: usize, messages: Vec<OwnedMessage> },
    /// Per partition, oldest first.
    Newest { n: usize, by_partition: BTreeMap<i32, VecDeque<OwnedMessage>> },
}

impl Kept {
    fn new(bound: Bound) -> Self {
        match bound {
            Bound::First(n) => Kept::First { n, messages: Vec::new() },
            Bound::NewestPerPartition(n) => Kept::Newest { n, by_partition: BTreeMap::new() },
        }
    }

    fn full(&self) -> bool {
        matches!(self, Kept::First { n, messages } if messages.len() >= *n)
    }

    fn push(&mut self, m: OwnedMessage) {
        match self {
            Kept::First { messages, .. } => messages.push(m),
            Kept::Newest { n, by_partition } => {
                let queue = by_partition.entry(m.partition()).or_default();
                queue.push_back(m);
                if queue.len() > *n {
                    queue.pop_front();
                }
            }
        }
    }

    fn into_vec(self) -> Vec<OwnedMessage> {
        match self {
            Kept::First { messages, .. } => messages,
            Kept::Newest { by_partition, .. } => by_partition.into_values().flatten().collect(),
        }
    }
}

/// What a [`scan`] read.
#[derive(Debug)]
pub struct Scanned {
    /// The messages kept, within the scan's [`Bound`].
    pub messages: Vec<OwnedMessage>,
    /// Where each partition stopped: the next offset to read.
    pub position: BTreeMap<i32, i64>,
    /// Whether every partition was read to the end it had when the scan began (not stopped by
    /// the deadline or a full [`Bound::First`]). Known here rather than from the watermarks
    /// after: a transaction's marker written meanwhile moves them without adding a message.
    pub complete: bool,
}

/// Reads `topic` from `start` (partition → offset; a partition not named starts at its low
/// watermark) up to the end each partition had when the scan began, keeping the messages `keep`
/// accepts within `bound`, until `deadline` passes. Blocking: call it from a blocking thread.
///
/// # Errors
/// When the client cannot be created or the broker does not answer.
pub fn scan(
    config: &ClientConfig,
    topic: &str,
    start: &BTreeMap<i32, i64>,
    bound: Bound,
    deadline: Duration,
    keep: impl Fn(&OwnedMessage) -> bool,
) -> anyhow::Result<Scanned> {
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
    let mut kept = Kept::new(bound);
    if ends.is_empty() {
        return Ok(Scanned { messages: Vec::new(), position, complete: true });
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + deadline;
    while !kept.full() && !ends.is_empty() && Instant::now() < deadline {
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
    Ok(Scanned { messages: kept.into_vec(), position, complete: ends.is_empty() })
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

#[cfg(test)]
mod tests {
    use rdkafka::message::Timestamp;

    use super::*;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, partition, offset, None)
    }

    fn offsets(kept: Kept) -> Vec<(i32, i64)> {
        kept.into_vec().iter().map(|m| (m.partition(), m.offset())).collect()
    }

    #[test]
    fn a_first_bound_keeps_the_first_in_the_order_read_and_is_full_at_its_limit() {
        let mut kept = Kept::new(Bound::First(3));
        for (p, o) in [(1, 0), (0, 0), (1, 1)] {
            assert!(!kept.full());
            kept.push(message(p, o));
        }
        assert!(kept.full());
        assert_eq!(offsets(kept), vec![(1, 0), (0, 0), (1, 1)]);
    }

    #[test]
    fn a_newest_bound_holds_at_most_n_per_partition_and_is_never_full() {
        let mut kept = Kept::new(Bound::NewestPerPartition(2));
        for o in 0..1000 {
            kept.push(message(o as i32 % 2, o));
            assert!(!kept.full());
        }
        kept.push(message(5, 7));
        assert_eq!(offsets(kept), vec![(0, 996), (0, 998), (1, 997), (1, 999), (5, 7)]);
    }
}
