//! A reader outside any Kafka group, assigned to positions a service keeps elsewhere: the
//! consumer-api's API groups, whose positions live in Redis (`store::positions`), so that any
//! replica serves any call of any group.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer as _, DefaultConsumerContext, MessageStream, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a reader with no position yet starts, or where a reset puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    /// The first record published at or after this time (Unix ms).
    Time(i64),
}

/// One topic's reader, assigned by the caller. The blocking calls ask the broker: call them from
/// a blocking thread.
pub struct AssignedReader {
    consumer: StreamConsumer,
    topic: String,
}

impl AssignedReader {
    /// A reader of `topic` under the client id `group_id` (named in the broker's logs; it never
    /// joins that group), tuned for answers of up to about a thousand records a call.
    ///
    /// # Errors
    /// When librdkafka rejects the configuration.
    pub fn new(kafka: &KafkaSettings, group_id: &str, topic: &str) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = super::reader_config(kafka)
            .set("group.id", group_id)
            // A reassignment waits for the fetch in flight: keep idle fetches short.
            .set("fetch.wait.max.ms", "100")
            // A reader takes 1,000 events a call: once its prefetch is full, look again soon, or
            // it runs dry mid-answer (20 ms, the pipeline's setting, cost a quarter of a
            // back-to-back reader's rate).
            .set("fetch.queue.backoff.ms", "2")
            .create()?;
        Ok(AssignedReader { consumer, topic: topic.to_owned() })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partitions (blocking).
    ///
    /// # Errors
    /// When the broker does not answer or the topic has none.
    pub fn partitions(&self) -> anyhow::Result<Vec<i32>> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), BROKER_TIMEOUT)?;
        let partitions: Vec<i32> = metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
        anyhow::ensure!(!partitions.is_empty(), "topic {} has no partitions (does it exist?)", self.topic);
        Ok(partitions)
    }

    /// The low and high watermarks of `partition` (blocking; under `read_committed` the high one
    /// is the last stable offset).
    ///
    /// # Errors
    /// When the broker does not answer.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        self.consumer.fetch_watermarks(&self.topic, partition, BROKER_TIMEOUT)
    }

    /// The offset `start` names on each of `partitions` (blocking).
    ///
    /// # Errors
    /// When the broker does not answer.
    pub fn offsets_at(&self, partitions: &[i32], start: Start) -> anyhow::Result<HashMap<i32, i64>> {
        let topic = self.topic.as_str();
        let mut out = HashMap::new();
        // The ends first, the times after: an event published between the two questions is then
        // at or past the end found, so "nothing at or after that time" starts before it. (Asked
        // the other way round, such an event fell below the end and was skipped — a `make test`
        // run caught a group from a time missing two of ten events.)
        let mut watermarks = HashMap::new();
        for p in partitions {
            watermarks.insert(*p, self.watermarks(*p)?);
        }
        let by_time = match start {
            Start::Time(ms) => {
                let mut tpl = TopicPartitionList::new();
                for p in partitions {
                    tpl.add_partition_offset(topic, *p, Offset::Offset(ms))?;
                }
                Some(self.consumer.offsets_for_times(tpl, BROKER_TIMEOUT)?)
            }
            _ => None,
        };
        for p in partitions {
            let (low, high) = watermarks[p];
            let offset = match (start, &by_time) {
                (Start::Earliest, _) => low,
                (Start::Latest, _) => high,
                (Start::Time(_), Some(found)) => match found.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.clamp(low, high),
                    _ => high, // nothing published at or after that time
                },
                (Start::Time(_), None) => high,
            };
            out.insert(*p, offset);
        }
        Ok(out)
    }

    /// Reads on from `positions` (partition → the next offset).
    ///
    /// # Errors
    /// When librdkafka refuses the assignment.
    pub fn assign(&self, positions: &HashMap<i32, i64>) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in positions {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*offset))?;
        }
        self.consumer.assign(&tpl)
    }

    /// The records fetched for the assignment, as they come (borrowed from the client's buffers).
    pub fn stream(&self) -> MessageStream<'_, DefaultConsumerContext> {
        self.consumer.stream()
    }
}
