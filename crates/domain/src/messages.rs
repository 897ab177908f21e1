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
    /// The wire form of a notice for a record already serialized (`Event::to_wire`): the record's
    /// bytes are spliced in rather than serialized a second time.
    pub fn wire_with_record(source: &SourceName, id: &EventId, record: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(record.len() + 64);
        out.extend_from_slice(b"{\"source\":");
        serde_json::to_writer(&mut out, source).expect("a name serializes");
        out.extend_from_slice(b",\"id\":");
        serde_json::to_writer(&mut out, id).expect("an id serializes");
        out.extend_from_slice(b",\"record\":");
        out.extend_from_slice(record);
        out.push(b'}');
        out
    }

    pub fn to_wire(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a notice always serializes")
    }

    /// # Errors
    /// When the bytes are not a notice.
    pub fn from_wire(bytes: &[u8]) -> Result<ProcessedNotice, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_notice_reads_back_as_the_notice() {
        let event = Event::from_client_value(serde_json::json!({"id": "a\"b", "source": "jira", "payload": {"x": "ü"}})).unwrap();
        let bytes = ProcessedNotice::wire_with_record(&event.source, &event.id, &event.to_wire());
        let notice = ProcessedNotice::from_wire(&bytes).unwrap();
        assert_eq!(notice, ProcessedNotice { source: event.source.clone(), id: event.id.clone(), record: Some(event) });
    }
}
