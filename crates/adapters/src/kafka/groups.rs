//! Consumer groups asked about or placed without joining them: where a group stands (its lag)
//! and where a new one starts. Blocking: each call asks the broker.

use std::time::Duration;

/// Where a new group (a webhook subscription) starts reading a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first event published at or after this time (Unix ms).
    Time(i64),
}

fn group_consumer(config: &rdkafka::ClientConfig, group: &str) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
    use anyhow::Context as _;
    let mut c = config.clone();
    c.set("group.id", group);
    c.create().context("creating a Kafka client")
}

fn partitions(consumer: &rdkafka::consumer::BaseConsumer, topic: &str, timeout: Duration) -> anyhow::Result<Vec<i32>> {
    use rdkafka::consumer::Consumer as _;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let t = metadata.topics().first().ok_or_else(|| anyhow::anyhow!("no metadata for topic {topic}"))?;
    if t.partitions().is_empty() {
        anyhow::bail!("topic {topic} has no partitions (does it exist?)");
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// Commits `group`'s starting offsets on every partition of `topic`, before any of its members
/// joins (so nothing published after the subscription was created is missed, however late a
/// replica starts delivering). Blocking: asks the broker.
///
/// # Errors
/// When the broker cannot be asked or refuses the commit.
pub fn commit_start(config: &rdkafka::ClientConfig, group: &str, topic: &str, start: StartAt) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(10);
    let consumer = group_consumer(config, group)?;
    let parts = partitions(&consumer, topic, timeout)?;
    let by_time = match start {
        StartAt::Time(ms) => {
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                tpl.add_partition_offset(topic, *p, Offset::Offset(ms))?;
            }
            Some(consumer.offsets_for_times(tpl, timeout)?)
        }
        _ => None,
    };
    let mut chosen = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let offset = match (start, &by_time) {
            (StartAt::Earliest, _) => low,
            (StartAt::Time(_), Some(found)) => match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.clamp(low, high),
                _ => high,
            },
            _ => high,
        };
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))?;
        chosen.insert(p, offset);
    }
    consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
    Ok(chosen)
}

/// A partition whose lag is at most this may be only transaction markers: its records are
/// counted (see [`group_lag`]).
const PEEK_UP_TO: i64 = 64;

/// How many records of `topic` `group` has not yet committed past, over all partitions.
///
/// On a topic written in transactions each commit leaves a marker that takes an offset but is
/// no record, so a group that has read everything still stands a marker or two below the end
/// of a partition: `committed_offsets` against the watermark would show an idle stage lagging.
/// Where the gap is small, the records in it are counted (read committed, up to the end);
/// above `PEEK_UP_TO` (64) the offsets are taken as they are (markers are noise there).
///
/// # Errors
/// When the broker cannot be asked.
pub fn group_lag(config: &rdkafka::ClientConfig, group: &str, topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    let consumer = group_consumer(config, group)?;
    let parts = partitions(&consumer, topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut total = 0;
    let mut small = Vec::new();
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        match high - at {
            gap if gap <= 0 => {}
            gap if gap <= PEEK_UP_TO => small.push((p, at, high)),
            gap => total += gap,
        }
    }
    if !small.is_empty() {
        total += records_between(config, topic, &small)?;
    }
    Ok(total)
}

/// The records (not transaction markers, not aborted) in `[from, end)` of each partition,
/// counted by reading them; a partition not read to its end within a second counts `end - from`.
fn records_between(config: &rdkafka::ClientConfig, topic: &str, parts: &[(i32, i64, i64)]) -> anyhow::Result<i64> {
    use anyhow::Context as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message as _;
    use rdkafka::{Offset, TopicPartitionList};
    let mut c = config.clone();
    c.set("isolation.level", "read_committed").set("enable.partition.eof", "true").set("enable.auto.commit", "false").set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = c.create().context("creating a Kafka client")?;
    let mut tpl = TopicPartitionList::new();
    for (p, from, _) in parts {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))?;
    }
    consumer.assign(&tpl)?;
    let mut counted: std::collections::HashMap<i32, i64> = parts.iter().map(|(p, _, _)| (*p, 0)).collect();
    let mut open: std::collections::HashMap<i32, i64> = parts.iter().map(|(p, _, end)| (*p, *end)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left) {
            Some(Ok(m)) => {
                if let Some(end) = open.get(&m.partition()).copied() {
                    if m.offset() < end {
                        *counted.entry(m.partition()).or_default() += 1;
                    }
                    if m.offset() + 1 >= end {
                        open.remove(&m.partition());
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    // Not read to the end in time: what the offsets say.
    Ok(parts.iter().map(|(p, from, end)| if open.contains_key(p) { end - from } else { counted[p] }).sum())
}
