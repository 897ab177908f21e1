//! The event envelope: what a client posts to `/ingest` and what travels through the pipeline.
//!
//! Values are parsed, not checked: an [`EventId`] is never empty and a [`SourceName`] is always a
//! safe name, so code that holds one needs no further validation.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::object::LazyObject;
use crate::path::kind;

/// Longest accepted event id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest accepted source name, in bytes.
pub const MAX_SOURCE_LEN: usize = 64;

/// An event as it moves through metastream.
///
/// Clients send `id`, `source`, `payload` and optionally `metadata`; the gateway adds
/// `received_at`; the stages add `provenance` and, through operations, `routing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub id: EventId,
    pub source: SourceName,
    /// Read from the wire, kept as its text until an operation reads a field, and written
    /// back as that text unless one changed it.
    pub payload: LazyObject,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// When the gateway accepted the event (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    #[serde(default, skip_serializing_if = "Provenance::is_empty")]
    pub provenance: Provenance,
    /// What operations decided about the downstream Kafka message. Never taken from a client.
    #[serde(default, skip_serializing_if = "Routing::is_empty")]
    pub routing: Routing,
}

/// The downstream Kafka message's key, topic and headers as operations set them (`set_key`,
/// `route`, `insert_header`, …). `None` and empty mean "the stage's default".
///
/// The services fill `headers` from the incoming Kafka message before the pre stage, so
/// conditions and header operations see them; the record keeps them for the post stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// In order; names are unique (see [`Routing::set_header`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl Routing {
    /// Whether nothing was decided: no key, no topic, no header.
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.topic.is_none() && self.headers.is_empty()
    }

    /// The value of the header `name` (exact, case-sensitive match).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Sets a header: replaces the value in place when the name exists, else appends.
    pub fn set_header(&mut self, name: &str, value: String) {
        match self.headers.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.headers.push((name.to_owned(), value)),
        }
    }

    /// Removes the header `name`, returning its value.
    pub fn remove_header(&mut self, name: &str) -> Option<String> {
        let at = self.headers.iter().position(|(n, _)| n == name)?;
        Some(self.headers.remove(at).1)
    }
}

/// Where a processed record came from: the Kafka position assigned at ingest and the config
/// versions of its source that processed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_config_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_config_version: Option<u64>,
}

impl Provenance {
    fn is_empty(&self) -> bool {
        *self == Provenance::default()
    }
}

/// Why a client's event was refused. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("unknown field `{0}`; allowed fields: id, source, payload, metadata")]
    UnknownField(String),
    #[error("the event nests {depth} levels deep; the limit is {limit} (the pipeline wraps events one level deeper, and its parsers stop at {})", crate::limits::PARSER_DEPTH_LIMIT)]
    TooDeep { depth: usize, limit: usize },
}

impl EventError {
    /// The field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            EventError::Missing(f) | EventError::Invalid { field: f, .. } => Some(f),
            EventError::UnknownField(f) => Some(f),
            _ => None,
        }
    }
}

impl Event {
    /// Parses a client's request body: `{id, source, payload, metadata?}` and nothing else.
    ///
    /// # Errors
    /// An [`EventError`] naming the first field that is missing, ill-typed or unknown.
    pub fn parse_client(body: &[u8]) -> Result<Event, EventError> {
        // First what `ClientEvent::parse` checks first, so both refuse a body with one error; it
        // also refuses the field name the value parser below would not read as written.
        crate::client::check_json(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        if value.is_object() {
            check_depth(body)?;
        }
        Event::from_client_value(value)
    }

    /// Like [`Event::parse_client`], for an already-parsed JSON value (one element of a batch).
    ///
    /// # Errors
    /// See [`Event::parse_client`].
    pub fn from_client_value(value: Value) -> Result<Event, EventError> {
        let Value::Object(mut obj) = value else {
            return Err(EventError::NotAnObject);
        };
        let id = match obj.remove("id") {
            None | Some(Value::Null) => return Err(EventError::Missing("id")),
            Some(Value::String(s)) => EventId::parse(s)?,
            Some(other) => return Err(invalid("id", format!("must be a string, got {}", kind(&other)))),
        };
        let source = match obj.remove("source") {
            None | Some(Value::Null) => return Err(EventError::Missing("source")),
            Some(Value::String(s)) => SourceName::parse(s)?,
            Some(other) => {
                return Err(invalid("source", format!("must be a string, got {}", kind(&other))))
            }
        };
        let payload = match obj.remove("payload") {
            None | Some(Value::Null) => return Err(EventError::Missing("payload")),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(invalid("payload", format!("must be an object, got {}", kind(&other))))
            }
        };
        let metadata = match obj.remove("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(invalid("metadata", format!("must be an object, got {}", kind(&other))))
            }
        };
        if let Some(extra) = obj.keys().next() {
            return Err(EventError::UnknownField(extra.clone()));
        }
        Ok(Event {
            id,
            source,
            payload: payload.into(),
            metadata,
            received_at: None,
            provenance: Provenance::default(),
            routing: Routing::default(),
        })
    }

    /// Parses an event as the pipeline writes it to Kafka and Redis.
    ///
    /// # Errors
    /// The JSON error when the bytes are not such an event.
    pub fn from_wire(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Like [`Event::from_wire`], with the payload's fields read as well: `None` when the
    /// envelope or the payload does not read back — what a reader that looks into payloads
    /// (a filter, a projection) passes over.
    pub fn from_wire_read(bytes: &[u8]) -> Option<Event> {
        Event::from_wire(bytes).ok().filter(|e| e.payload.read().is_ok())
    }

    /// Serializes the event for Kafka and Redis.
    pub fn to_wire(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Event always serializes")
    }

    /// The event as the pre stage stores it in Redis (and its notices carry it): the same
    /// fields as [`Event::to_wire`], with `provenance` first, so the store's compare-and-set
    /// reads the ingest position from the record's first bytes instead of parsing it.
    pub fn to_record(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Record<'a> {
            #[serde(skip_serializing_if = "no_provenance")]
            provenance: &'a Provenance,
            id: &'a EventId,
            source: &'a SourceName,
            payload: &'a LazyObject,
            metadata: &'a Map<String, Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            received_at: &'a Option<String>,
            #[serde(skip_serializing_if = "no_routing")]
            routing: &'a Routing,
        }
        fn no_provenance(p: &&Provenance) -> bool {
            p.is_empty()
        }
        fn no_routing(r: &&Routing) -> bool {
            r.is_empty()
        }
        let record = Record {
            provenance: &self.provenance,
            id: &self.id,
            source: &self.source,
            payload: &self.payload,
            metadata: &self.metadata,
            received_at: &self.received_at,
            routing: &self.routing,
        };
        serde_json::to_vec(&record).expect("an Event always serializes")
    }

    /// The key that identifies this event's entity: every update of one entity shares it.
    pub fn entity_key(&self) -> String {
        crate::schema::entity_key(&self.source, &self.id)
    }
}

/// The current time as RFC 3339 UTC with milliseconds, the form metastream writes timestamps in.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Refuses a client event nested deeper than [`MAX_EVENT_DEPTH`](crate::limits::MAX_EVENT_DEPTH).
///
/// # Errors
/// [`EventError::TooDeep`].
pub(crate) fn check_depth(json: &[u8]) -> Result<(), EventError> {
    let limit = crate::limits::MAX_EVENT_DEPTH;
    match crate::limits::json_depth(json) {
        depth if depth > limit => Err(EventError::TooDeep { depth, limit }),
        _ => Ok(()),
    }
}

fn invalid(field: &'static str, problem: String) -> EventError {
    EventError::Invalid { field, problem }
}

/// An event id: 1 to 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl EventId {
    /// # Errors
    /// When the id is empty, too long or holds control characters.
    pub fn parse(s: impl Into<String>) -> Result<EventId, EventError> {
        let s = s.into();
        if s.is_empty() {
            return Err(invalid("id", "must not be empty".into()));
        }
        // Characters, not bytes, as JSON Schema's maxLength counts (the API contract says 256).
        if s.chars().count() > MAX_ID_LEN {
            return Err(invalid("id", format!("must be at most {MAX_ID_LEN} characters")));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("id", "must not contain control characters".into()));
        }
        Ok(EventId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A source name: 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
///
/// Source names never contain `:`, which keeps Redis keys and Kafka keys built from
/// `<source>:<id>` unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceName(String);

impl SourceName {
    /// # Errors
    /// When the name is empty, too long, or uses other characters.
    pub fn parse(s: impl Into<String>) -> Result<SourceName, EventError> {
        let s = s.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if s.is_empty() {
            return Err(invalid("source", "must not be empty".into()));
        }
        if s.len() > MAX_SOURCE_LEN {
            return Err(invalid("source", format!("must be at most {MAX_SOURCE_LEN} bytes")));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.chars().all(ok_char) {
            return Err(invalid(
                "source",
                "may hold only letters, digits, `_`, `.` and `-`, starting with a letter or digit"
                    .into(),
            ));
        }
        Ok(SourceName(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = EventError;
            fn try_from(s: String) -> Result<Self, EventError> {
                <$t>::parse(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype!(EventId);
string_newtype!(SourceName);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Event, EventError> {
        Event::parse_client(v.to_string().as_bytes())
    }

    #[test]
    fn the_record_form_starts_with_the_ingest_position_and_reads_back_as_the_same_event() {
        let mut e = parse(json!({"id":"1","source":"s","payload":{"provenance":{"ingest_offset":9}}})).unwrap();
        e.provenance.ingest_partition = Some(3);
        e.provenance.ingest_offset = Some(42);
        e.provenance.pre_config_version = Some(7);
        e.routing.set_header("h", "v".into());
        let record = e.to_record();
        assert!(record.starts_with(br#"{"provenance":{"ingest_partition":3,"ingest_offset":42,"#), "{}", String::from_utf8_lossy(&record));
        assert_eq!(Event::from_wire(&record).unwrap(), e);
    }

    #[test]
    fn accepts_the_prototype_event() {
        let e = parse(json!({"id":"12345","source":"jira","payload":{"title":"Fix login bug"},
            "metadata":{"created_at":"2024-07-20T12:34:56Z"}}))
        .unwrap();
        assert_eq!(e.id.as_str(), "12345");
        assert_eq!(e.source.as_str(), "jira");
        assert_eq!(e.payload["title"], "Fix login bug");
        assert_eq!(e.metadata["created_at"], "2024-07-20T12:34:56Z");
        assert_eq!(e.entity_key(), "jira:12345");
    }

    #[test]
    fn metadata_is_optional() {
        let e = parse(json!({"id":"1","source":"github","payload":{}})).unwrap();
        assert!(e.metadata.is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (json!({"source":"jira","payload":{}}), "missing required field `id`"),
            (json!({"id":"","source":"jira","payload":{}}), "field `id` must not be empty"),
            (json!({"id":7,"source":"jira","payload":{}}), "field `id` must be a string, got a number"),
            (json!({"id":"1","payload":{}}), "missing required field `source`"),
            (json!({"id":"1","source":"ji ra","payload":{}}), "field `source` may hold only"),
            (json!({"id":"1","source":"jira"}), "missing required field `payload`"),
            (json!({"id":"1","source":"jira","payload":"x"}), "field `payload` must be an object, got a string"),
            (json!({"id":"1","source":"jira","payload":{},"metadata":[1]}), "field `metadata` must be an object, got an array"),
            (json!({"id":"1","source":"jira","payload":{},"extra":1}), "unknown field `extra`"),
            (json!({"id":"1","source":"jira","payload":{},"routing":{"topic":"x"}}), "unknown field `routing`"),
            (json!({"id":"1","source":"jira","payload":{},"received_at":"2024-01-01T00:00:00Z"}), "unknown field `received_at`"),
            (json!([1, 2]), "body must be a JSON object"),
        ];
        for (input, expected) in cases {
            let err = parse(input.clone()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{input}: got {err:?}, expected {expected:?}");
        }
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = Event::parse_client(b"{\"id\": ").unwrap_err();
        assert!(matches!(err, EventError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn ids_keep_unicode_and_reject_control_characters() {
        assert!(EventId::parse("ünïcødé-✓").is_ok());
        assert!(EventId::parse("a\nb").is_err());
        assert!(EventId::parse("x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn wire_form_round_trips() {
        let mut e = parse(json!({"id":"a:b","source":"serviceX","payload":{"n":1}})).unwrap();
        e.received_at = Some("2024-01-01T00:00:00Z".into());
        e.provenance.ingest_offset = Some(42);
        let back = Event::from_wire(&e.to_wire()).unwrap();
        assert_eq!(back, e);
        assert!(!String::from_utf8(e.to_wire()).unwrap().contains("routing"));

        e.routing.key = Some("k".into());
        e.routing.set_header("h", "1".into());
        let back = Event::from_wire(&e.to_wire()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn headers_keep_order_and_unique_names() {
        let mut r = Routing::default();
        assert!(r.is_empty());
        r.set_header("a", "1".into());
        r.set_header("b", "2".into());
        r.set_header("a", "3".into());
        assert_eq!(r.headers, [("a".to_string(), "3".to_string()), ("b".into(), "2".into())]);
        assert_eq!(r.header("a"), Some("3"));
        assert_eq!(r.header("A"), None);
        assert_eq!(r.remove_header("a").as_deref(), Some("3"));
        assert_eq!(r.remove_header("a"), None);
        assert!(!r.is_empty());
    }

    #[test]
    fn a_payload_is_read_from_the_wire_only_when_asked() {
        let wire = br#"{"id":"1","source":"s","payload":{"n":1e400},"metadata":{}}"#;
        let event = Event::from_wire(wire).expect("the envelope reads; the payload is text");
        assert!(event.payload.is_verbatim());
        assert_eq!(String::from_utf8(event.to_wire()).unwrap(), std::str::from_utf8(wire).unwrap());
        assert!(Event::from_wire_read(wire).is_none(), "its fields do not read");
        let good = Event::from_wire_read(br#"{"id":"1","source":"s","payload":{"n":1}}"#).unwrap();
        assert_eq!(good.payload["n"], 1);
    }

    #[test]
    fn wire_form_rejects_invalid_names() {
        let bad = br#"{"id":"1","source":"a:b","payload":{}}"#;
        assert!(Event::from_wire(bad).is_err());
    }
}
