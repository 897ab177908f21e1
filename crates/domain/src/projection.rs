//! Projection: the parts of an event a consumer asked for (`fields=payload.title,metadata.tags`).
//!
//! The projected event always keeps `id` and `source` (what identifies it), and holds each
//! requested path that is present, at its place: `payload.a.b` gives `{"payload": {"a": {"b": …}}}`;
//! an index (`payload.items[1]`) gives an array with `null` before it. A path that is absent is
//! left out; asking for `payload` gives the whole payload.

use serde_json::{json, Map, Value};

use crate::event::Event;
use crate::path::{FieldPath, Segment};

/// Most paths one projection may name.
pub const MAX_FIELDS: usize = 64;

/// A compiled list of field paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection(Vec<FieldPath>);

impl Projection {
    /// Parses a comma-separated list of paths.
    ///
    /// # Errors
    /// Which path does not parse, or that the list is empty or too long.
    pub fn parse(list: &str) -> Result<Projection, String> {
        let paths: Vec<&str> = list.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        if paths.is_empty() {
            return Err("`fields` names no path".into());
        }
        if paths.len() > MAX_FIELDS {
            return Err(format!("`fields` names {} paths; at most {MAX_FIELDS}", paths.len()));
        }
        paths
            .into_iter()
            .map(|p| FieldPath::parse(p).map_err(|e| format!("`fields`: `{p}`: {e}")))
            .collect::<Result<_, _>>()
            .map(Projection)
    }

    /// The event reduced to `id`, `source` and the requested paths.
    pub fn apply(&self, event: &Event) -> Value {
        let mut out = json!({"id": event.id.as_str(), "source": event.source.as_str()});
        for path in &self.0 {
            if let Some(value) = path.get(event) {
                let mut slot = out.as_object_mut().expect("an object").entry(path.root().as_str()).or_insert(Value::Null);
                for segment in path.segments() {
                    slot = step(slot, segment);
                }
                *slot = value.to_value();
            }
        }
        out
    }
}

/// The place `segment` names under `slot`, made (an object or an array) where missing.
fn step<'v>(slot: &'v mut Value, segment: &Segment) -> &'v mut Value {
    match segment {
        Segment::Key(key) => {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            slot.as_object_mut().expect("an object").entry(key.clone()).or_insert(Value::Null)
        }
        Segment::Index(i) => {
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            let items = slot.as_array_mut().expect("an array");
            if items.len() <= *i {
                items.resize(i + 1, Value::Null);
            }
            &mut items[*i]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::from_wire(
            br#"{"id":"PR-7","source":"github","payload":{"title":"t","state":"open","labels":["a","b","c"],"deep":{"x":1,"y":2}},"metadata":{"tags":["PII"]},"received_at":"2024-07-20T12:34:56Z"}"#,
        )
        .unwrap()
    }

    #[test]
    fn keeps_the_identity_and_the_requested_paths_at_their_place() {
        let p = Projection::parse("payload.title, metadata.tags,payload.deep.y,payload.labels[1],payload.missing").unwrap();
        assert_eq!(
            p.apply(&event()),
            json!({"id": "PR-7", "source": "github", "payload": {"title": "t", "deep": {"y": 2}, "labels": [null, "b"]}, "metadata": {"tags": ["PII"]}})
        );
        assert_eq!(Projection::parse("payload").unwrap().apply(&event())["payload"]["deep"], json!({"x": 1, "y": 2}));
        assert_eq!(Projection::parse("received_at").unwrap().apply(&event())["received_at"], "2024-07-20T12:34:56Z");
    }

    #[test]
    fn refuses_what_names_nothing() {
        assert!(Projection::parse("").is_err());
        assert!(Projection::parse(" , ").is_err());
        assert!(Projection::parse("nowhere.x").unwrap_err().contains("nowhere.x"));
        assert!(Projection::parse(&vec!["payload.a"; MAX_FIELDS + 1].join(",")).is_err());
    }
}
