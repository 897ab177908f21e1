//! Messages between stages, besides the event itself.

use serde::{Deserialize, Serialize};

use crate::event::{EventId, SourceName};

/// Published by the pre-transformer on the `processed` topic once the record is in Redis;
/// tells the post-transformer which record to pick up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessedNotice {
    pub source: SourceName,
    pub id: EventId,
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
