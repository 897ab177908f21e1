//! Field paths: how operations address a part of an event.
//!
//! A path starts at `payload` or `metadata` and descends with `.name` into objects and `[n]`
//! into arrays: `payload.title`, `metadata.processing_info`, `payload.owners[0].email`.
//! A key holding `.` or `[` is written in quotes: `payload."a.b"`.

use std::fmt;

use serde_json::{Map, Value};

use crate::event::Event;

/// The top-level part of an event a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Payload,
    Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed field path with at least one segment below its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    root: Root,
    segments: Vec<Segment>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

impl FieldPath {
    /// # Errors
    /// When the text is not a path of the syntax above.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let (root, rest) = if let Some(rest) = text.strip_prefix("payload") {
            (Root::Payload, rest)
        } else if let Some(rest) = text.strip_prefix("metadata") {
            (Root::Metadata, rest)
        } else {
            return Err(PathError(format!(
                "path `{text}` must start with `payload` or `metadata`"
            )));
        };
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
                    } else {
                        while let Some(&c) = chars.peek() {
                            if c == '.' || c == '[' {
                                break;
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
                    let digits: String = chars.by_ref().take_while(|&c| c != ']').collect();
                    let index = digits.parse::<usize>().map_err(|_| {
                        PathError(format!("`[{digits}]` in path `{text}` is not an array index"))
                    })?;
                    segments.push(Segment::Index(index));
                }
                other => {
                    return Err(PathError(format!("unexpected `{other}` in path `{text}`")));
                }
            }
        }
        if segments.is_empty() {
            return Err(PathError(format!("path `{text}` must name a field below its root")));
        }
        Ok(FieldPath { root, segments, text: text.to_owned() })
    }

    /// The value at this path, if present.
    pub fn get<'e>(&self, event: &'e Event) -> Option<&'e Value> {
        let mut current = match self.segments.first()? {
            Segment::Key(k) => self.root_map(event).get(k)?,
            Segment::Index(_) => return None,
        };
        for seg in &self.segments[1..] {
            current = match (seg, current) {
                (Segment::Key(k), Value::Object(m)) => m.get(k)?,
                (Segment::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(current)
    }

    /// Sets the value at this path, creating missing objects on the way.
    ///
    /// # Errors
    /// When the way passes through a value that is not an object (or an array, for an index),
    /// or an index is out of bounds.
    pub fn set(&self, event: &mut Event, value: Value) -> Result<(), PathError> {
        let root = match self.root {
            Root::Payload => &mut event.payload,
            Root::Metadata => &mut event.metadata,
        };
        let (last, parents) = self.segments.split_last().expect("a path has a segment");
        let Segment::Key(first) = &self.segments[0] else {
            return Err(self.blocked());
        };
        if parents.is_empty() {
            root.insert(first.clone(), value);
            return Ok(());
        }
        let mut current = root.entry(first.clone()).or_insert_with(|| Value::Object(Map::new()));
        for seg in &parents[1..] {
            current = match (seg, current) {
                (Segment::Key(k), Value::Object(m)) => {
                    m.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()))
                }
                (Segment::Index(i), Value::Array(a)) => a.get_mut(*i).ok_or_else(|| self.blocked())?,
                _ => return Err(self.blocked()),
            };
        }
        match (last, current) {
            (Segment::Key(k), Value::Object(m)) => {
                m.insert(k.clone(), value);
                Ok(())
            }
            (Segment::Index(i), Value::Array(a)) if *i < a.len() => {
                a[*i] = value;
                Ok(())
            }
            _ => Err(self.blocked()),
        }
    }

    fn root_map<'e>(&self, event: &'e Event) -> &'e Map<String, Value> {
        match self.root {
            Root::Payload => &event.payload,
            Root::Metadata => &event.metadata,
        }
    }

    fn blocked(&self) -> PathError {
        PathError(format!("cannot set `{}`: a value on the way is not an object or array", self.text))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(payload: Value) -> Event {
        Event::from_client_value(json!({"id":"1","source":"s","payload":payload})).unwrap()
    }

    #[test]
    fn parses_keys_indexes_and_quoted_names() {
        let p = FieldPath::parse(r#"payload.owners[1]."e.mail""#).unwrap();
        assert_eq!(
            p.segments,
            vec![Segment::Key("owners".into()), Segment::Index(1), Segment::Key("e.mail".into())]
        );
        assert_eq!(p.root, Root::Payload);
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["title", "payload", "payload.", "payload..a", "payload[x]", "metadata.\"a", "payload!"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn gets_nested_values() {
        let e = event(json!({"owners":[{"email":"a@b"},{"email":"ü@b"}]}));
        let p = FieldPath::parse("payload.owners[1].email").unwrap();
        assert_eq!(p.get(&e), Some(&json!("ü@b")));
        assert_eq!(FieldPath::parse("payload.owners[5].email").unwrap().get(&e), None);
        assert_eq!(FieldPath::parse("payload.owners.email").unwrap().get(&e), None);
    }

    #[test]
    fn sets_creating_objects_on_the_way() {
        let mut e = event(json!({}));
        FieldPath::parse("metadata.a.b").unwrap().set(&mut e, json!(1)).unwrap();
        assert_eq!(e.metadata["a"]["b"], 1);
    }

    #[test]
    fn refuses_to_set_through_a_scalar() {
        let mut e = event(json!({"a": 5}));
        assert!(FieldPath::parse("payload.a.b").unwrap().set(&mut e, json!(1)).is_err());
        assert_eq!(e.payload["a"], 5);
    }
}
