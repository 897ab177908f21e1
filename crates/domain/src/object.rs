//! [`LazyObject`]: an event's payload as the stages hold it — the JSON text it was read as,
//! parsed only when something reads a field, and written back as that same text unless
//! something changed it.
//!
//! A transformer whose operations never touch the payload (the default sources: a timestamp
//! before storage, processing info after) used to build the payload's tree from the Kafka
//! message and serialize it again for Redis and the next topic; that was most of the stage's
//! JSON work on a 1 KiB event (`crates/domain/BENCHMARKS.md`, `stage/*`).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON object read lazily: dereferences to its fields as a [`Map`] (parsed on first read),
/// serializes as the text it was read as while nobody borrowed it mutably.
///
/// When read, only the JSON syntax is checked (and that it is an object): what serde_json's
/// value parser refuses beyond that — a number out of `f64`'s range, a lone surrogate escape,
/// nesting past its limit — shows when a field is first read. Then the fields are empty and
/// [`LazyObject::unreadable`] says why: whoever reads fields of objects from outside (the
/// stages, a filter) checks it before trusting what it read. An object nobody reads is passed
/// on as the text it came as.
#[derive(Clone)]
pub struct LazyObject {
    /// The object's text as read, while unchanged.
    text: Option<Box<RawValue>>,
    /// Its fields: parsed from `text` on first read, or the object as changed or built.
    fields: OnceLock<Map<String, Value>>,
    /// Why `text` did not parse into fields (which are then empty).
    unreadable: OnceLock<String>,
}

impl LazyObject {
    /// Whether the object is still the text it was read as (nobody borrowed it mutably): what
    /// it serializes as, without a parse.
    pub fn is_verbatim(&self) -> bool {
        self.text.is_some()
    }

    /// Checks the text as the gateway checks a client's event ([`check_json`]): what reads
    /// its fields later then finds them readable. A walk of the text without building anything —
    /// cheaper than the parse, not free: the pre stage checks what comes from the ingest topic,
    /// where anything with write access could have put it; the post stage trusts the records
    /// the pre stage stored.
    ///
    /// # Errors
    /// The parser's error.
    ///
    /// [`check_json`]: crate::client::check_json
    pub fn check(&self) -> Result<(), serde_json::Error> {
        match &self.text {
            Some(text) => crate::client::check_json(text.get().as_bytes()),
            None => Ok(()),
        }
    }

    /// The fields, or why the text does not parse into them.
    ///
    /// # Errors
    /// The value parser's error.
    pub fn read(&self) -> Result<&Map<String, Value>, &str> {
        let fields = self.fields();
        match self.unreadable() {
            Some(error) => Err(error),
            None => Ok(fields),
        }
    }

    /// Why the fields read so far came out empty: the parser's error, once a read found the text
    /// unreadable; `None` while all is well or nothing has read it.
    pub fn unreadable(&self) -> Option<&str> {
        self.unreadable.get().map(String::as_str)
    }

    fn fields(&self) -> &Map<String, Value> {
        self.fields.get_or_init(|| {
            let text = self.text.as_ref().expect("a LazyObject holds its text or its fields");
            serde_json::from_str(text.get()).unwrap_or_else(|error: serde_json::Error| {
                let _ = self.unreadable.set(error.to_string());
                Map::new()
            })
        })
    }
}

impl Default for LazyObject {
    fn default() -> Self {
        Map::new().into()
    }
}

impl From<Map<String, Value>> for LazyObject {
    fn from(fields: Map<String, Value>) -> Self {
        LazyObject { text: None, fields: OnceLock::from(fields), unreadable: OnceLock::new() }
    }
}

impl From<LazyObject> for Map<String, Value> {
    fn from(mut object: LazyObject) -> Self {
        object.fields();
        object.fields.take().expect("initialized just above")
    }
}

impl Deref for LazyObject {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        self.fields()
    }
}

impl DerefMut for LazyObject {
    /// The fields, to change: from here on the object serializes from them.
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        self.fields();
        self.text = None;
        self.fields.get_mut().expect("initialized just above")
    }
}

impl PartialEq for LazyObject {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields() && self.unreadable() == other.unreadable()
    }
}

impl fmt::Debug for LazyObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fields().fmt(f)
    }
}

impl Serialize for LazyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(text) => text.serialize(serializer),
            None => self.fields().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for LazyObject {
    /// The object's text, its syntax checked (a `Value` deserializer gives its compact text).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Box::<RawValue>::deserialize(deserializer)?;
        if !text.get().starts_with('{') {
            return Err(de::Error::invalid_type(de::Unexpected::Other(crate::client::kind(text.get())), &"a JSON object"));
        }
        Ok(LazyObject { text: Some(text), fields: OnceLock::new(), unreadable: OnceLock::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, Serialize)]
    struct Holder {
        payload: LazyObject,
    }

    fn read(text: &str) -> Result<LazyObject, serde_json::Error> {
        serde_json::from_str::<Holder>(text).map(|h| h.payload)
    }

    #[test]
    fn an_unchanged_object_is_written_back_as_read_even_when_its_fields_were_read() {
        // Key order and spacing as the client wrote them (a parse would sort the keys).
        let text = r#"{"payload":{"z": 1, "a": {"b":[1,2.50]}}}"#;
        let object = read(text).unwrap();
        assert!(object.is_verbatim());
        assert_eq!(object["a"]["b"][1], json!(2.5));
        assert!(object.is_verbatim());
        assert_eq!(serde_json::to_string(&Holder { payload: object }).unwrap(), r#"{"payload":{"z": 1, "a": {"b":[1,2.50]}}}"#);
    }

    #[test]
    fn a_changed_object_is_written_from_its_fields() {
        let mut object = read(r#"{"payload":{"z":1,"a":2}}"#).unwrap();
        object.insert("m".into(), json!(true));
        assert!(!object.is_verbatim());
        assert_eq!(serde_json::to_value(&object).unwrap(), json!({"a": 2, "m": true, "z": 1}));
    }

    #[test]
    fn what_is_not_a_json_object_is_refused_when_read() {
        for (text, expected) in [
            (r#"{"payload":[1]}"#, "invalid type: an array, expected a JSON object"),
            (r#"{"payload":"x"}"#, "invalid type: a string, expected a JSON object"),
            (r#"{"payload":null}"#, "invalid type: null, expected a JSON object"),
            (r#"{"payload":{"a":1,}}"#, "key must be a string"),
            (r#"{"payload":{"a":tru}}"#, "expected ident"),
        ] {
            let err = read(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn what_only_the_value_parser_refuses_shows_on_the_first_read_and_the_text_is_kept() {
        let deep = format!(r#"{{"payload":{{"a":{}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
        for (text, expected) in [
            (r#"{"payload":{"n":1e400}}"#.to_owned(), "number out of range"),
            (r#"{"payload":{"s":"\ud800"}}"#.to_owned(), "hex escape"),
            (deep, "recursion limit exceeded"),
        ] {
            let object = read(&text).expect("the syntax is right");
            assert_eq!(object.unreadable(), None, "nothing read yet");
            assert!(object.get("n").is_none(), "{text}: read as empty");
            assert!(object.unreadable().unwrap().contains(expected), "{text}: {:?}", object.unreadable());
            assert!(object.read().unwrap_err().contains(expected));
            let written = serde_json::to_string(&Holder { payload: object }).unwrap();
            assert_eq!(written, text, "passed on as it came");
        }
        assert!(read(r#"{"payload":{"n":1e300}}"#).unwrap().read().is_ok());
    }

    #[test]
    fn the_check_finds_before_any_read_what_a_read_would_find_unreadable() {
        let object = read(r#"{"payload":{"n":1e400}}"#).unwrap();
        assert!(object.check().unwrap_err().to_string().contains("number out of range"));
        assert_eq!(object.unreadable(), None);
        let object = read(r#"{"payload":{"n":[1e300, "\\ud800", {"a": null}]}}"#).unwrap();
        object.check().unwrap();
        assert_eq!(object.read().unwrap()["n"][1], "\\ud800");
        LazyObject::default().check().unwrap();
    }

    #[test]
    fn equality_and_debug_go_by_fields() {
        let read_one = read(r#"{"payload":{"b":1,"a":2}}"#).unwrap();
        let built: LazyObject = json!({"a": 2, "b": 1}).as_object().unwrap().clone().into();
        assert_eq!(read_one, built);
        assert_eq!(format!("{read_one:?}"), format!("{built:?}"));
        assert!(LazyObject::default().is_empty());
    }

    #[test]
    fn reads_from_a_value_as_well() {
        let holder: Holder = serde_json::from_value(json!({"payload": {"a": 1}})).unwrap();
        assert_eq!(holder.payload["a"], 1);
    }
}
