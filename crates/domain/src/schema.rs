//! Names shared by every service: Kafka topics, the Redis key schema, Kafka header names.
//!
//! Redis keys (all under an optional deployment prefix, e.g. `test-42:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<prefix>processed:<source>:<id>` | string | the processed record (JSON), written by the pre-transformer |
//! | `<prefix>sources` | hash | source name → source configuration (JSON) |
//!
//! Source names cannot contain `:`, so `<source>:<id>` is unambiguous even when ids contain `:`.

use serde::{Deserialize, Serialize};

use crate::event::{EventId, SourceName};

/// The Kafka topics of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// Raw events from the gateway, read by the pre-transformer.
    pub ingest: String,
    /// Notices that a processed record is stored, read by the post-transformer.
    pub processed: String,
    /// Final events, read by downstream systems and by the consumer-api.
    pub output: String,
    /// Messages a stage could not process, with headers saying why.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            ingest: "pre_process_meta_data_events".into(),
            processed: "processed_meta_data_notices".into(),
            output: "post_process_meta_data_events".into(),
            dead_letter: "dead_letter_meta_data_events".into(),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&str; 4] {
        [&self.ingest, &self.processed, &self.output, &self.dead_letter]
    }
}

/// The Kafka message key of an entity: every update of `<source>:<id>` goes to one partition.
pub fn entity_key(source: &SourceName, id: &EventId) -> String {
    format!("{source}:{id}")
}

/// Builds Redis keys under a deployment prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySchema {
    prefix: String,
}

impl KeySchema {
    pub fn new(prefix: impl Into<String>) -> Self {
        KeySchema { prefix: prefix.into() }
    }

    /// `<prefix>processed:<source>:<id>`: the processed record.
    pub fn processed(&self, source: &SourceName, id: &EventId) -> String {
        format!("{}processed:{source}:{id}", self.prefix)
    }

    /// `<prefix>sources`: the hash of source configurations.
    pub fn sources(&self) -> String {
        format!("{}sources", self.prefix)
    }
}

/// Kafka header names metastream writes.
pub mod headers {
    pub const EVENT_ID: &str = "metastream-event-id";
    pub const SOURCE: &str = "metastream-source";
    pub const DLQ_STAGE: &str = "metastream-dlq-stage";
    pub const DLQ_REASON: &str = "metastream-dlq-reason";
    pub const DLQ_ERROR: &str = "metastream-dlq-error";
    pub const DLQ_TOPIC: &str = "metastream-dlq-original-topic";
    pub const DLQ_PARTITION: &str = "metastream-dlq-original-partition";
    pub const DLQ_OFFSET: &str = "metastream-dlq-original-offset";
    pub const DLQ_OPERATION: &str = "metastream-dlq-operation";
    pub const DLQ_OPERATION_INDEX: &str = "metastream-dlq-operation-index";
    /// Set (`true`) on a dead letter that holds a reference to the original message instead of
    /// the message itself, because the original does not fit the dead-letter topic.
    pub const DLQ_REFERENCE: &str = "metastream-dlq-reference";
    /// The original message's size in bytes (key, value and headers), on references.
    pub const DLQ_ORIGINAL_SIZE: &str = "metastream-dlq-original-size";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_across_sources() {
        let keys = KeySchema::new("t1:");
        let a = keys.processed(&SourceName::parse("jira").unwrap(), &EventId::parse("x:1").unwrap());
        let b = keys.processed(&SourceName::parse("jira-x").unwrap(), &EventId::parse("1").unwrap());
        assert_eq!(a, "t1:processed:jira:x:1");
        assert_eq!(b, "t1:processed:jira-x:1");
        assert_ne!(a, b);
        assert_eq!(keys.sources(), "t1:sources");
    }
}
