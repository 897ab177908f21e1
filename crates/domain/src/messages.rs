//! Messages between stages, besides the event itself.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventId, SourceName};

/// Published by the pre-transformer on the `processed` topic once the record is in Redis;
/// tells the post-transformer which record to pick up.
///
/// It carries the record as stored, so the post stage publishes exactly this update even when a
/// newer update of the entity has replaced it in Redis meanwhile (every acknowledged update
/// reaches the output topic, in order). A notice without a record (older producers) makes the
/// post stage read the record from Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessedNotice {
    pub source: SourceName,
    pub id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Event>,
}

impl ProcessedNotice {
    pub fn to_wire(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a notice always serializes")
    }

    /// # Errors
    /// When the bytes are not a notice.
    pub fn from_wire(bytes: &[u8]) -> Result<ProcessedNotice, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
