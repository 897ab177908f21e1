//! A client's event as the gateway handles it: checked exactly as [`Event::parse_client`]
//! checks it, but with `payload` and `metadata` kept as the client's JSON text and written to
//! the ingest topic verbatim. The gateway never needs the payload as values; building that tree
//! and serializing it again was most of its per-event CPU (see `crates/domain/BENCHMARKS.md`).
//!
//! The JSON is still fully checked: [`check_json`] walks it without allocating, so a number
//! out of range or nesting past serde_json's limit is refused at ingest with the same message
//! the value parser gives, rather than reaching the pipeline and its dead-letter topic.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{EventError, EventId, SourceName};

/// A validated client event whose payload and metadata are still the client's JSON text.
///
/// Its schema is the API contract's `ClientEvent`: what [`ClientEvent::parse`] takes (a test holds
/// the two together).
// The parser refuses unknown fields itself; `deny_unknown_fields` only says so in the schema.
#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "One event as a client sends it.")]
pub struct ClientEvent<'a> {
    /// The entity's id within its source; with `source`, it keys the stored record.
    #[schema(value_type = String, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub id: EventId,
    /// The system the event comes from; its configuration decides the operations.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    pub source: SourceName,
    #[schema(value_type = Object)]
    payload: &'a RawValue,
    #[schema(value_type = Option<Object>)]
    metadata: Option<&'a RawValue>,
}

impl<'a> ClientEvent<'a> {
    /// Parses a request body holding one event.
    ///
    /// # Errors
    /// As [`Event::parse_client`](crate::Event::parse_client): the first field that is missing,
    /// ill-typed or unknown, or the JSON error.
    pub fn parse(body: &'a [u8]) -> Result<Self, EventError> {
        check_json(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        // Checked JSON is UTF-8 and holds one value, with only JSON whitespace around it: the
        // value's text without another parse.
        let text = std::str::from_utf8(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        Self::from_text(text.trim_matches([' ', '\t', '\n', '\r']))
    }

    /// Like [`ClientEvent::parse`], for JSON already checked with [`check_json`] (one element
    /// of a batch).
    ///
    /// # Errors
    /// See [`ClientEvent::parse`].
    pub fn from_raw(raw: &'a RawValue) -> Result<Self, EventError> {
        Self::from_text(raw.get())
    }

    /// One event from the text of one checked JSON value.
    fn from_text(text: &'a str) -> Result<Self, EventError> {
        if !text.starts_with('{') {
            return Err(EventError::NotAnObject);
        }
        crate::event::check_depth(text.as_bytes())?;
        let fields: Fields<'a> = serde_json::from_str(text).map_err(|e| EventError::Malformed(e.to_string()))?;
        let id = match fields.id.map(RawValue::get) {
            None | Some("null") => return Err(EventError::Missing("id")),
            Some(text) if text.starts_with('"') => EventId::parse(string(text)?)?,
            Some(text) => return Err(invalid("id", format!("must be a string, got {}", kind(text)))),
        };
        let source = match fields.source.map(RawValue::get) {
            None | Some("null") => return Err(EventError::Missing("source")),
            Some(text) if text.starts_with('"') => SourceName::parse(string(text)?)?,
            Some(text) => return Err(invalid("source", format!("must be a string, got {}", kind(text)))),
        };
        let payload = match fields.payload {
            None => return Err(EventError::Missing("payload")),
            Some(p) if p.get() == "null" => return Err(EventError::Missing("payload")),
            Some(p) if p.get().starts_with('{') => p,
            Some(p) => return Err(invalid("payload", format!("must be an object, got {}", kind(p.get())))),
        };
        let metadata = match fields.metadata {
            None => None,
            Some(m) if m.get() == "null" => None,
            Some(m) if m.get().starts_with('{') => Some(m),
            Some(m) => return Err(invalid("metadata", format!("must be an object, got {}", kind(m.get())))),
        };
        if let Some(extra) = fields.unknown {
            return Err(EventError::UnknownField(extra));
        }
        Ok(ClientEvent { id, source, payload, metadata })
    }

    /// The event as the pipeline writes it (what [`Event::to_wire`](crate::Event::to_wire)
    /// writes for the same event), stamped with the gateway's `received_at`.
    pub fn to_wire(&self, received_at: &str) -> Vec<u8> {
        let (id, source) = (self.id.as_str(), self.source.as_str());
        let metadata = self.metadata.map_or("{}", RawValue::get);
        let mut out = Vec::with_capacity(64 + id.len() + source.len() + self.payload.get().len() + metadata.len() + received_at.len());
        out.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut out, id).expect("writing to a Vec");
        out.extend_from_slice(b",\"source\":");
        serde_json::to_writer(&mut out, source).expect("writing to a Vec");
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(self.payload.get().as_bytes());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.as_bytes());
        out.extend_from_slice(b",\"received_at\":");
        serde_json::to_writer(&mut out, received_at).expect("writing to a Vec");
        out.push(b'}');
        out
    }

    /// The key that identifies this event's entity (see [`Event::entity_key`](crate::Event::entity_key)).
    pub fn entity_key(&self) -> String {
        crate::schema::entity_key(&self.source, &self.id)
    }
}

/// How a batch body is framed: a JSON array of events, or NDJSON (one event per line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    Array,
    Ndjson,
}

/// What one element of a batch is before it is parsed as an event: its JSON text, or why it is
/// not JSON (an NDJSON line that does not parse; the other lines still count).
pub type BatchItem<'a> = Result<&'a RawValue, String>;

/// Splits a batch body into its elements' JSON text, without building them.
///
/// # Errors
/// When the body as a whole is not a batch: an array body that is not valid JSON or not an
/// array. An NDJSON line that does not parse is an `Err` item, not an error of the batch.
pub fn split_batch(body: &[u8], format: BatchFormat) -> Result<Vec<BatchItem<'_>>, String> {
    match format {
        BatchFormat::Ndjson => Ok(body
            .split(|b: &u8| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| {
                check_json(line)
                    .and_then(|()| serde_json::from_slice::<&RawValue>(line))
                    .map_err(|e| format!("line is not valid JSON: {e}"))
            })
            .collect()),
        BatchFormat::Array => {
            let not_json = |e: serde_json::Error| format!("body is not valid JSON: {e}");
            check_json(body).map_err(not_json)?;
            if !body.trim_ascii_start().starts_with(b"[") {
                return Err("a batch must be a JSON array of events (or NDJSON)".into());
            }
            Ok(serde_json::from_slice::<Vec<&RawValue>>(body).map_err(not_json)?.into_iter().map(Ok).collect())
        }
    }
}

/// Checks that `json` is JSON the pipeline's value parser accepts — syntax, numbers in range,
/// nesting within serde_json's limit — and reads back as written (no field named
/// `$serde_json::private::RawValue`), without building it.
///
/// # Errors
/// The parser's error, with its position.
pub fn check_json(json: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(json).map(|_| ())
}

/// Deserializes any JSON value and keeps nothing. Unlike [`IgnoredAny`], it asks for numbers
/// as numbers, so the parser checks their range as it does for a `Value`.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<CheckedKey>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// The field name serde_json's `raw_value` feature reserves: its value parser reads
/// `{"$serde_json::private::RawValue": "<json>"}` as the JSON in the string, so an event holding
/// it would reach the stages as something else than what was accepted, or not parse at all.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// A field name, refused when it is [`RAW_VALUE_TOKEN`] (compared unescaped, as serde_json does).
struct CheckedKey;

impl<'de> Deserialize<'de> for CheckedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = CheckedKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CheckedKey, E> {
                if v == RAW_VALUE_TOKEN {
                    return Err(E::custom(format_args!("the field name `{RAW_VALUE_TOKEN}` is reserved")));
                }
                Ok(CheckedKey)
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The envelope's fields, each still JSON text; the first unknown field's name.
struct Fields<'a> {
    id: Option<&'a RawValue>,
    source: Option<&'a RawValue>,
    payload: Option<&'a RawValue>,
    metadata: Option<&'a RawValue>,
    unknown: Option<String>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

struct FieldsVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FieldsVisitor<'a> {
    type Value = Fields<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'a>, A::Error> {
        let mut fields = Fields { id: None, source: None, payload: None, metadata: None, unknown: None };
        // A repeated field keeps its last value, as a parsed JSON object does.
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Id => &mut fields.id,
                Key::Source => &mut fields.source,
                Key::Payload => &mut fields.payload,
                Key::Metadata => &mut fields.metadata,
                Key::Other(name) => {
                    map.next_value::<IgnoredAny>()?;
                    // The object's first unknown field in key order, as `Event::parse_client`
                    // reports it.
                    if fields.unknown.as_ref().is_none_or(|first| name < *first) {
                        fields.unknown = Some(name);
                    }
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(fields)
    }
}

enum Key {
    Id,
    Source,
    Payload,
    Metadata,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "id" => Key::Id,
                    "source" => Key::Source,
                    "payload" => Key::Payload,
                    "metadata" => Key::Metadata,
                    other => Key::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A JSON string literal's value.
fn string(text: &str) -> Result<String, EventError> {
    serde_json::from_str(text).map_err(|e| EventError::Malformed(e.to_string()))
}

fn invalid(field: &'static str, problem: String) -> EventError {
    EventError::Invalid { field, problem }
}

/// What kind of JSON value `text` is, from its first character (`"a string"`, `"an array"`,
/// …), for error messages.
pub(crate) fn kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use serde_json::json;

    /// The fast path and the value parser agree: same event, or same error.
    fn agree(body: &str) -> Result<(), EventError> {
        let slow = Event::parse_client(body.as_bytes());
        let fast = ClientEvent::parse(body.as_bytes());
        match (&slow, &fast) {
            (Ok(event), Ok(client)) => {
                let mut event = event.clone();
                event.received_at = Some("2024-01-01T00:00:00.000Z".into());
                let wire = client.to_wire("2024-01-01T00:00:00.000Z");
                assert_eq!(Event::from_wire(&wire).unwrap(), event, "{body}");
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&wire).unwrap(),
                    serde_json::from_slice::<serde_json::Value>(&event.to_wire()).unwrap(),
                    "{body}"
                );
                assert_eq!(client.entity_key(), event.entity_key());
                Ok(())
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{body}");
                Err(b.clone())
            }
            _ => panic!("the parsers disagree on {body}: {slow:?} vs {fast:?}"),
        }
    }

    /// Whether the JSON Schema string constraints `schema` (a property of a derived schema) take
    /// `text`.
    pub(crate) fn documented(schema: &serde_json::Value, text: &str) -> bool {
        let pattern = regex::Regex::new(schema["pattern"].as_str().expect("a pattern")).expect("the pattern compiles");
        let lengths = schema["minLength"].as_u64().unwrap_or(0)..=schema["maxLength"].as_u64().unwrap_or(u64::MAX);
        pattern.is_match(text) && lengths.contains(&(text.chars().count() as u64))
    }

    /// The API contract's `ClientEvent` takes what the parser takes: its members, and the
    /// constraints of `id` and `source` are [`EventId::parse`]'s and [`SourceName::parse`]'s.
    #[test]
    fn the_schema_is_the_parser_s() {
        let schema = serde_json::to_value(<ClientEvent<'_> as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["required"], json!(["id", "source", "payload"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        let ids: Vec<String> = ["", "1", " a b ", "tab\t", "a\u{7f}", "a\u{85}", "a\u{9f}b", "a\u{a0}", "jira:PROJ-1/é"]
            .into_iter()
            .map(String::from)
            .chain([crate::event::MAX_ID_LEN, crate::event::MAX_ID_LEN + 1].into_iter().flat_map(|n| ["x".repeat(n), "é".repeat(n)]))
            .collect();
        for id in &ids {
            assert_eq!(documented(&schema["properties"]["id"], id), EventId::parse(id.as_str()).is_ok(), "{id:?}");
        }
        let sources: Vec<String> = ["", "a", "A-b_c.d9", "-a", ".a", "_a", "a:b", "a b", "é"]
            .into_iter()
            .map(String::from)
            .chain([crate::event::MAX_SOURCE_LEN, crate::event::MAX_SOURCE_LEN + 1].map(|n| "s".repeat(n)))
            .collect();
        for source in &sources {
            assert_eq!(documented(&schema["properties"]["source"], source), SourceName::parse(source.as_str()).is_ok(), "{source:?}");
        }
    }

    #[test]
    fn accepts_what_the_value_parser_accepts() {
        for body in [
            json!({"id":"12345","source":"jira","payload":{"title":"Fix login bug","n":[1,2.5,-3,true,null]},
                "metadata":{"created_at":"2024-07-20T12:34:56Z"}}).to_string(),
            r#" { "source" : "a.b-c" , "id" : "x\"y\u00fc" , "payload" : { "k" : { } } } "#.to_owned(),
            r#"{"id":"1","source":"s","payload":{},"metadata":null}"#.to_owned(),
            "\r\n\t{\"id\":\"1\",\"source\":\"s\",\"payload\":{\"t\":\" \"}}\n\t \r".to_owned(),
            r#"{"id":"1","id":"2","source":"s","payload":{"a":1}}"#.to_owned(),
            r#"{"id":"1","source":"s","payload":{"big":18446744073709551615,"neg":-9223372036854775808,"f":1e300}}"#.to_owned(),
        ] {
            agree(&body).unwrap();
        }
    }

    #[test]
    fn refuses_what_the_value_parser_refuses_with_the_same_error() {
        let deep = format!(r#"{{"id":"1","source":"s","payload":{{"a":{}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
        for (body, expected) in [
            (r#"{"id":"1","source":"s","payload":{"x":1e400}}"#.to_owned(), "body is not valid JSON"),
            (deep, "recursion limit"),
            (format!(r#"{{"id":"1","source":"s","payload":{{"d":{}1{}}}}}"#, "[".repeat(119), "]".repeat(119)), "nests 121 levels deep; the limit is 120"),
            ("[1]".to_owned(), "must be a JSON object"),
            (r#"{"id":"1","source":"s","payload":{}"#.to_owned(), "not valid JSON"),
            (r#"{"source":"s","payload":{}}"#.to_owned(), "missing required field `id`"),
            (r#"{"id":null,"source":"s","payload":{}}"#.to_owned(), "missing required field `id`"),
            (r#"{"id":7,"source":"s","payload":{}}"#.to_owned(), "must be a string, got a number"),
            (r#"{"id":"","source":"s","payload":{}}"#.to_owned(), "must not be empty"),
            (r#"{"id":"1","source":"a:b","payload":{}}"#.to_owned(), "may hold only"),
            (r#"{"id":"1","source":["s"],"payload":{}}"#.to_owned(), "got an array"),
            (r#"{"id":"1","source":"s"}"#.to_owned(), "missing required field `payload`"),
            (r#"{"id":"1","source":"s","payload":"x"}"#.to_owned(), "must be an object, got a string"),
            (r#"{"id":"1","source":"s","payload":{},"metadata":[]}"#.to_owned(), "must be an object, got an array"),
            (r#"{"id":"1","source":"s","payload":{},"zeta":1,"extra":2}"#.to_owned(), "unknown field `extra`"),
        ] {
            let err = agree(&body).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn metadata_defaults_to_an_empty_object() {
        let e = ClientEvent::parse(br#"{"id":"1","source":"s","payload":{"a":1}}"#).unwrap();
        let wire: serde_json::Value = serde_json::from_slice(&e.to_wire("t")).unwrap();
        assert_eq!(wire, json!({"id":"1","source":"s","payload":{"a":1},"metadata":{},"received_at":"t"}));
    }
}
