//! Field paths: how operations and conditions address a part of an event.
//!
//! # Syntax
//!
//! A path starts at a root and descends with `.name` into objects and `[n]` into arrays:
//!
//! | path | addresses |
//! |---|---|
//! | `payload`, `metadata` | the whole payload or metadata object |
//! | `payload.title` | the `title` field of the payload |
//! | `metadata.processing_info.stage` | a nested field |
//! | `payload.owners[0].email` | the `email` of the first element of the array `owners` |
//! | `payload."a.b"` | a field whose name holds `.` or `[` (quoted; a name cannot hold `"`) |
//! | `id`, `source`, `received_at` | the envelope's fields: read-only, and nothing below them |
//!
//! Indexes count from 0; `payload[0]` is refused because the payload is an object. Names are
//! matched exactly (case-sensitive, any Unicode).
//!
//! # Reading and writing
//!
//! [`FieldPath::get`] reads any path and returns `None` when a field on the way is missing, an
//! index is out of bounds, or a value on the way is not an object/array. [`FieldPath::set`]
//! creates missing objects on the way (a `null` on the way counts as missing) but never extends
//! an array, replaces a scalar, or writes an envelope field: those are errors. Setting `payload`
//! or `metadata` itself needs an object.

use std::fmt;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::event::Event;

/// The part of an event a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Payload,
    Metadata,
    /// The event id (read-only).
    Id,
    /// The source name (read-only).
    Source,
    /// When the gateway accepted the event (read-only; absent before the gateway stamps it).
    ReceivedAt,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Payload => "payload",
            Root::Metadata => "metadata",
            Root::Id => "id",
            Root::Source => "source",
            Root::ReceivedAt => "received_at",
        }
    }

    /// Whether the root is one of the envelope's read-only fields.
    pub fn is_envelope(self) -> bool {
        matches!(self, Root::Id | Root::Source | Root::ReceivedAt)
    }
}

/// One step of a path below its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed field path (see the [module docs](self) for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    root: Root,
    segments: Vec<Segment>,
    text: String,
}

/// Why a path could not be parsed, read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// A value found at a path. Envelope fields are plain strings and the payload and metadata are
/// maps, so a read borrows whichever the path reached instead of copying it into a [`Value`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'e> {
    Json(&'e Value),
    Object(&'e Map<String, Value>),
    Str(&'e str),
}

impl<'e> ValueRef<'e> {
    /// The value when it is a string.
    pub fn as_str(&self) -> Option<&'e str> {
        match *self {
            ValueRef::Json(Value::String(s)) => Some(s),
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, ValueRef::Json(Value::Null))
    }

    /// A copy of the value as JSON.
    pub fn to_value(&self) -> Value {
        match *self {
            ValueRef::Json(v) => v.clone(),
            ValueRef::Object(m) => Value::Object(m.clone()),
            ValueRef::Str(s) => Value::String(s.to_owned()),
        }
    }

    /// Appends the value as text: a string as it is, anything else as compact JSON. This is how
    /// values become Kafka keys, header values and topic-name parts.
    pub fn write_text(&self, out: &mut String) {
        match *self {
            ValueRef::Str(s) => out.push_str(s),
            ValueRef::Json(Value::String(s)) => out.push_str(s),
            ValueRef::Json(v) => {
                let _ = write!(out, "{v}");
            }
            ValueRef::Object(m) => {
                out.push_str(&serde_json::to_string(m).expect("a JSON map always serializes"));
            }
        }
    }

    /// Equality on JSON values where numbers compare by value (`1 == 1.0`).
    pub fn json_eq(&self, other: &Value) -> bool {
        match (*self, other) {
            (ValueRef::Json(v), other) => json_eq(v, other),
            (ValueRef::Str(s), Value::String(o)) => s == o,
            (ValueRef::Object(m), Value::Object(o)) => maps_eq(m, o),
            _ => false,
        }
    }
}

/// JSON equality where numbers compare by value, so `1`, `1.0` and `1e0` are equal.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => maps_eq(x, y),
        _ => a == b,
    }
}

fn maps_eq(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
}

impl FieldPath {
    /// Parses a path of the syntax in the [module docs](self).
    ///
    /// # Errors
    /// When the text is not such a path; the message quotes it.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let end = text.find(['.', '[']).unwrap_or(text.len());
        let (name, rest) = text.split_at(end);
        let root = match name {
            "payload" => Root::Payload,
            "metadata" => Root::Metadata,
            "id" => Root::Id,
            "source" => Root::Source,
            "received_at" => Root::ReceivedAt,
            _ => {
                return Err(PathError(format!(
                    "path `{text}` must start with `payload`, `metadata`, `id`, `source` or `received_at`"
                )))
            }
        };
        let segments = parse_segments(text, rest)?;
        if root.is_envelope() && !segments.is_empty() {
            return Err(PathError(format!(
                "path `{text}`: `{name}` is a string and has no fields below it"
            )));
        }
        if let Some(Segment::Index(_)) = segments.first() {
            return Err(PathError(format!(
                "path `{text}`: `{name}` is an object and cannot be indexed"
            )));
        }
        Ok(FieldPath { root, segments, text: text.to_owned() })
    }

    pub fn root(&self) -> Root {
        self.root
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The path as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path is a root itself (`payload`, `metadata`, `id`, …) rather than a field
    /// below one.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether the path addresses an envelope field, which operations may read but not write.
    pub fn is_read_only(&self) -> bool {
        self.root.is_envelope()
    }

    /// The value at this path, if present.
    pub fn get<'e>(&self, event: &'e Event) -> Option<ValueRef<'e>> {
        let map = match self.root {
            Root::Payload => &event.payload,
            Root::Metadata => &event.metadata,
            Root::Id => return Some(ValueRef::Str(event.id.as_str())),
            Root::Source => return Some(ValueRef::Str(event.source.as_str())),
            Root::ReceivedAt => return event.received_at.as_deref().map(ValueRef::Str),
        };
        let Some((first, rest)) = self.segments.split_first() else {
            return Some(ValueRef::Object(map));
        };
        let Segment::Key(k) = first else { return None };
        let mut current = map.get(k)?;
        for seg in rest {
            current = match (seg, current) {
                (Segment::Key(k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(ValueRef::Json(current))
    }

    /// The value at this path for changing in place, if present. `None` as well for roots and
    /// envelope fields, which are not [`Value`]s; see [`FieldPath::object_mut`] for roots.
    pub fn get_mut<'e>(&self, event: &'e mut Event) -> Option<&'e mut Value> {
        let map = match self.root {
            Root::Payload => &mut event.payload,
            Root::Metadata => &mut event.metadata,
            _ => return None,
        };
        descend_mut(map, &self.segments)
    }

    /// The object at this path for changing in place: the payload or metadata map itself for a
    /// root, `None` when the path is missing.
    ///
    /// # Errors
    /// When the path is read-only or its value is not an object.
    pub fn object_mut<'e>(
        &self,
        event: &'e mut Event,
    ) -> Result<Option<&'e mut Map<String, Value>>, PathError> {
        if self.is_read_only() {
            return Err(self.read_only());
        }
        if self.is_root() {
            return Ok(Some(self.root_map_mut(event)));
        }
        match self.get_mut(event) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(PathError(format!("`{}` is {}, not an object", self.text, kind(other)))),
        }
    }

    /// Sets the value at this path, creating missing objects on the way (a `null` on the way is
    /// replaced by an object).
    ///
    /// # Errors
    /// When the path is read-only; when the way passes through a value that is not an object (or
    /// an array, for an index) or an index is out of bounds; when a root would be set to
    /// something other than an object.
    pub fn set(&self, event: &mut Event, value: Value) -> Result<(), PathError> {
        if self.is_read_only() {
            return Err(self.read_only());
        }
        let Some((last, parents)) = self.segments.split_last() else {
            return match value {
                Value::Object(m) => {
                    *self.root_map_mut(event) = m;
                    Ok(())
                }
                other => Err(PathError(format!(
                    "cannot set `{}` to {}: it must be an object",
                    self.text,
                    kind(&other)
                ))),
            };
        };
        let mut cursor = Cursor::Map(self.root_map_mut(event));
        for seg in parents {
            cursor = match (seg, cursor) {
                (Segment::Key(k), Cursor::Map(m)) => Cursor::Value(child_object(m, k)),
                (Segment::Key(k), Cursor::Value(v)) => {
                    if v.is_null() {
                        *v = Value::Object(Map::new());
                    }
                    match v {
                        Value::Object(m) => Cursor::Value(child_object(m, k)),
                        _ => return Err(self.blocked()),
                    }
                }
                (Segment::Index(i), Cursor::Value(Value::Array(a))) => {
                    Cursor::Value(a.get_mut(*i).ok_or_else(|| self.blocked())?)
                }
                _ => return Err(self.blocked()),
            };
        }
        let map = match (last, cursor) {
            (Segment::Key(_), Cursor::Map(m)) => m,
            (Segment::Key(_), Cursor::Value(v)) => {
                if v.is_null() {
                    *v = Value::Object(Map::new());
                }
                match v {
                    Value::Object(m) => m,
                    _ => return Err(self.blocked()),
                }
            }
            (Segment::Index(i), Cursor::Value(Value::Array(a))) if *i < a.len() => {
                a[*i] = value;
                return Ok(());
            }
            _ => return Err(self.blocked()),
        };
        let Segment::Key(k) = last else { return Err(self.blocked()) };
        match map.get_mut(k) {
            Some(slot) => *slot = value,
            None => {
                map.insert(k.clone(), value);
            }
        }
        Ok(())
    }

    /// Removes the value at this path and returns it; `None` when it was not there. A root is
    /// emptied and its old content returned as an object. Removing an array element shifts the
    /// ones after it.
    ///
    /// # Errors
    /// When the path is read-only.
    pub fn remove(&self, event: &mut Event) -> Result<Option<Value>, PathError> {
        if self.is_read_only() {
            return Err(self.read_only());
        }
        let Some((last, parents)) = self.segments.split_last() else {
            return Ok(Some(Value::Object(std::mem::take(self.root_map_mut(event)))));
        };
        let map = self.root_map_mut(event);
        if parents.is_empty() {
            return Ok(match last {
                Segment::Key(k) => map.remove(k),
                Segment::Index(_) => None,
            });
        }
        let Some(parent) = descend_mut(map, parents) else { return Ok(None) };
        Ok(match (last, parent) {
            (Segment::Key(k), Value::Object(m)) => m.remove(k),
            (Segment::Index(i), Value::Array(a)) if *i < a.len() => Some(a.remove(*i)),
            _ => None,
        })
    }

    fn root_map_mut<'e>(&self, event: &'e mut Event) -> &'e mut Map<String, Value> {
        match self.root {
            Root::Metadata => &mut event.metadata,
            _ => &mut event.payload,
        }
    }

    fn blocked(&self) -> PathError {
        PathError(format!("cannot set `{}`: a value on the way is not an object or array", self.text))
    }

    fn read_only(&self) -> PathError {
        PathError(format!("`{}` is read-only", self.text))
    }
}

/// Where [`FieldPath::set`] stands while descending: in a root map or in a value.
enum Cursor<'e> {
    Map(&'e mut Map<String, Value>),
    Value(&'e mut Value),
}

/// The value `segments` lead to from a root map.
pub(crate) fn descend_mut<'e>(map: &'e mut Map<String, Value>, segments: &[Segment]) -> Option<&'e mut Value> {
    let (Segment::Key(k), rest) = segments.split_first()? else { return None };
    let mut current = map.get_mut(k)?;
    for seg in rest {
        current = match (seg, current) {
            (Segment::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Segment::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

fn child_object<'m>(map: &'m mut Map<String, Value>, key: &str) -> &'m mut Value {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), Value::Object(Map::new()));
    }
    map.get_mut(key).expect("just inserted")
}

fn parse_segments(text: &str, rest: &str) -> Result<Vec<Segment>, PathError> {
    let mut segments = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(c) => key.push(c),
                            None => return Err(PathError(format!("unclosed quote in path `{text}`"))),
                        }
                    }
                    if matches!(chars.peek(), Some(c) if *c != '.' && *c != '[') {
                        return Err(PathError(format!(
                            "path `{text}`: a quoted name must be followed by `.`, `[` or the end"
                        )));
                    }
                } else {
                    while let Some(&c) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        if c == ']' || c == '"' {
                            return Err(PathError(format!("unexpected `{c}` in path `{text}`")));
                        }
                        key.push(c);
                        chars.next();
                    }
                }
                if key.is_empty() {
                    return Err(PathError(format!("empty field name in path `{text}`")));
                }
                segments.push(Segment::Key(key));
            }
            '[' => {
                let mut digits = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    digits.push(c);
                }
                if !closed {
                    return Err(PathError(format!("unclosed `[` in path `{text}`")));
                }
                let index = digits
                    .parse::<usize>()
                    .ok()
                    .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        PathError(format!("`[{digits}]` in path `{text}` is not an array index"))
                    })?;
                segments.push(Segment::Index(index));
            }
            other => {
                return Err(PathError(format!("unexpected `{other}` in path `{text}`")));
            }
        }
    }
    Ok(segments)
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How a JSON value is named in messages: "a string", "an object", …
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(payload: Value) -> Event {
        let mut e = Event::from_client_value(json!({"id":"ïd-1","source":"s","payload":payload})).unwrap();
        e.metadata.insert("m".into(), json!({"k": [1, 2]}));
        e
    }

    fn p(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    #[test]
    fn parses_keys_indexes_quoted_names_and_roots() {
        let cases: &[(&str, Root, Vec<Segment>)] = &[
            (
                r#"payload.owners[1]."e.mail""#,
                Root::Payload,
                vec![Segment::Key("owners".into()), Segment::Index(1), Segment::Key("e.mail".into())],
            ),
            ("metadata.a[0][2]", Root::Metadata, vec![Segment::Key("a".into()), Segment::Index(0), Segment::Index(2)]),
            ("payload.名前", Root::Payload, vec![Segment::Key("名前".into())]),
            ("payload", Root::Payload, vec![]),
            ("metadata", Root::Metadata, vec![]),
            ("id", Root::Id, vec![]),
            ("source", Root::Source, vec![]),
            ("received_at", Root::ReceivedAt, vec![]),
        ];
        for (text, root, segments) in cases {
            let path = p(text);
            assert_eq!((path.root, &path.segments), (*root, segments), "{text}");
            assert_eq!(path.to_string(), *text);
        }
    }

    #[test]
    fn rejects_bad_paths() {
        let cases = [
            ("title", "must start with"),
            ("payloadx.a", "must start with"),
            ("identity", "must start with"),
            ("", "must start with"),
            ("payload.", "empty field name"),
            ("payload..a", "empty field name"),
            ("payload[x]", "not an array index"),
            ("payload.a[-1]", "not an array index"),
            ("payload.a[+1]", "not an array index"),
            ("payload.a[1", "unclosed `[`"),
            ("payload.a]", "unexpected `]`"),
            ("metadata.\"a", "unclosed quote"),
            ("payload.\"a\"b", "quoted name must be followed"),
            ("payload!", "must start with"),
            ("payload.a\"b", "unexpected `\"`"),
            ("payload[0]", "cannot be indexed"),
            ("id.x", "has no fields below it"),
            ("received_at[0]", "has no fields below it"),
        ];
        for (bad, message) in cases {
            let err = FieldPath::parse(bad).unwrap_err().0;
            assert!(err.contains(message), "{bad:?}: {err}");
        }
    }

    #[test]
    fn gets_values_roots_and_envelope_fields() {
        let mut e = event(json!({"owners":[{"email":"a@b"},{"email":"ü@b"}], "n": null, "big": u64::MAX}));
        e.received_at = Some("2024-01-01T00:00:00Z".into());
        let cases: &[(&str, Option<Value>)] = &[
            ("payload.owners[1].email", Some(json!("ü@b"))),
            ("payload.owners[5].email", None),
            ("payload.owners.email", None),
            ("payload.owners[0].email.x", None),
            ("payload.n", Some(json!(null))),
            ("payload.big", Some(json!(u64::MAX))),
            ("payload.missing", None),
            ("metadata.m.k[1]", Some(json!(2))),
            ("id", Some(json!("ïd-1"))),
            ("source", Some(json!("s"))),
            ("received_at", Some(json!("2024-01-01T00:00:00Z"))),
            ("metadata", Some(json!({"m": {"k": [1, 2]}}))),
        ];
        for (path, expected) in cases {
            assert_eq!(p(path).get(&e).map(|v| v.to_value()), *expected, "{path}");
        }
        e.received_at = None;
        assert_eq!(p("received_at").get(&e), None);
    }

    #[test]
    fn sets_creating_objects_on_the_way() {
        let cases: &[(&str, Value, Result<Value, &str>)] = &[
            ("metadata.a.b", json!({}), Ok(json!({"a": {"b": 1}}))),
            ("payload.a.b", json!({"a": null}), Ok(json!({"a": {"b": 1}}))),
            ("payload.a", json!({"a": null}), Ok(json!({"a": 1}))),
            ("payload.a[1]", json!({"a": [0, 0]}), Ok(json!({"a": [0, 1]}))),
            ("payload.a[1].b", json!({"a": [0, {}]}), Ok(json!({"a": [0, {"b": 1}]}))),
            ("payload.a[1].b", json!({"a": [0, null]}), Ok(json!({"a": [0, {"b": 1}]}))),
            ("payload.a[2]", json!({"a": [0, 0]}), Err("cannot set `payload.a[2]`")),
            ("payload.a[0].b", json!({"a": []}), Err("cannot set")),
            ("payload.a.b", json!({"a": 5}), Err("cannot set `payload.a.b`")),
            ("payload.a.b", json!({"a": "ü"}), Err("cannot set")),
            ("payload.a[0]", json!({"a": {"0": 1}}), Err("cannot set")),
            ("payload", json!({"x": 1}), Err("must be an object")),
            ("id", json!({}), Err("`id` is read-only")),
            ("source", json!({}), Err("`source` is read-only")),
            ("received_at", json!({}), Err("`received_at` is read-only")),
        ];
        for (path, payload, expected) in cases {
            let mut e = event(payload.clone());
            let target = if path.starts_with("metadata") { "metadata" } else { "payload" };
            if *path == "metadata.a.b" {
                e.metadata.clear();
            }
            match (p(path).set(&mut e, json!(1)), expected) {
                (Ok(()), Ok(want)) => {
                    let got = p(target).get(&e).unwrap().to_value();
                    assert_eq!(&got, want, "{path}");
                }
                (Err(err), Err(want)) => {
                    assert!(err.0.contains(want), "{path}: {err}");
                    assert_eq!(Value::Object(e.payload.clone().into()), *payload, "{path}: unchanged");
                }
                (got, want) => panic!("{path}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn sets_a_root_to_an_object() {
        let mut e = event(json!({"a": 1}));
        p("payload").set(&mut e, json!({"b": 2})).unwrap();
        assert_eq!(Value::Object(e.payload.into()), json!({"b": 2}));
    }

    #[test]
    fn removes_values() {
        let cases: &[(&str, Value, Option<Value>, Value)] = &[
            ("payload.a", json!({"a": 1, "b": 2}), Some(json!(1)), json!({"b": 2})),
            ("payload.a.b", json!({"a": {"b": null}}), Some(json!(null)), json!({"a": {}})),
            ("payload.a[0]", json!({"a": [1, 2]}), Some(json!(1)), json!({"a": [2]})),
            ("payload.a[2]", json!({"a": [1, 2]}), None, json!({"a": [1, 2]})),
            ("payload.x.y", json!({"a": 1}), None, json!({"a": 1})),
            ("payload.a.y", json!({"a": 1}), None, json!({"a": 1})),
            ("payload", json!({"a": 1}), Some(json!({"a": 1})), json!({})),
        ];
        for (path, payload, removed, after) in cases {
            let mut e = event(payload.clone());
            assert_eq!(p(path).remove(&mut e).unwrap(), *removed, "{path}");
            assert_eq!(Value::Object(e.payload.into()), *after, "{path}");
        }
        assert!(p("id").remove(&mut event(json!({}))).unwrap_err().0.contains("read-only"));
    }

    #[test]
    fn finds_objects_to_change_in_place() {
        let mut e = event(json!({"o": {"a": 1}, "s": "x"}));
        assert_eq!(p("payload.o").object_mut(&mut e).unwrap().unwrap().len(), 1);
        assert_eq!(p("payload").object_mut(&mut e).unwrap().unwrap().len(), 2);
        assert!(p("payload.missing").object_mut(&mut e).unwrap().is_none());
        assert!(p("payload.s").object_mut(&mut e).unwrap_err().0.contains("is a string, not an object"));
        assert!(p("source").object_mut(&mut e).is_err());
    }

    #[test]
    fn compares_numbers_by_value() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!(u64::MAX), &json!(-1)));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(ValueRef::Str("x").json_eq(&json!("x")));
    }
}
