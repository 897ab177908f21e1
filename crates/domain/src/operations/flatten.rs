//! `flatten`: turns nested objects into one level, joining names with a delimiter.
//!
//! Params: `path` (the object, default `payload`), `delimiter` (default `.`, not empty).
//! `{"a": {"b": 1, "c": {"d": 2}}}` becomes `{"a.b": 1, "a.c.d": 2}`. Arrays are kept as values
//! (their elements are not flattened) and an empty object stays as `{}` under its name. Two
//! fields flattening to the same name (`{"a.b": 1, "a": {"b": 2}}`) fail the event. A missing
//! object is left alone; a value that is not an object fails.

use serde_json::{Map, Value};

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "flatten",
    "Flatten nested objects into one level with joined names (arrays are kept as values).",
    r#"{"op": "flatten", "params": {"path": "payload.fields", "delimiter": "_"}}"#,
    struct Params {
    #[serde(default = "default_path")]
    path: String => ["path", optional("\"payload\""), "The object to flatten."],
    #[serde(default = "default_delimiter")]
    delimiter: String => ["string", optional("\".\""), "Joins the names of nested fields."],
    }
);

fn default_path() -> String {
    "payload".into()
}

fn default_delimiter() -> String {
    ".".into()
}

#[derive(Debug)]
struct Flatten {
    path: FieldPath,
    delimiter: String,
}

fn build(p: Params, problems: &mut Problems) -> Option<Flatten> {
    let path = problems.path(&p.path, "path", Access::Write);
    if p.delimiter.is_empty() {
        problems.push("delimiter", "must not be empty");
    }
    Some(Flatten { path: path?, delimiter: p.delimiter })
}

impl Operation for Flatten {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let Some(map) = self.path.object_mut(event).map_err(|e| e.0)? else {
            return Ok(Effect::Continue);
        };
        if !map.values().any(|v| matches!(v, Value::Object(o) if !o.is_empty())) {
            return Ok(Effect::Continue);
        }
        let mut flat = Map::new();
        let mut name = String::new();
        self.flatten_into(std::mem::take(map), &mut name, &mut flat)?;
        *map = flat;
        Ok(Effect::Continue)
    }
}

impl Flatten {
    fn flatten_into(&self, map: Map<String, Value>, name: &mut String, out: &mut Map<String, Value>) -> Result<(), String> {
        for (key, value) in map {
            let len = name.len();
            if len > 0 {
                name.push_str(&self.delimiter);
            }
            name.push_str(&key);
            match value {
                Value::Object(inner) if !inner.is_empty() => self.flatten_into(inner, name, out)?,
                other => {
                    if out.insert(name.clone(), other).is_some() {
                        return Err(format!("`{}`: more than one field flattens to `{name}`", self.path));
                    }
                }
            }
            name.truncate(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!(null), json!({"a": {"b": 1, "c": {"d": 2}}, "e": 3}), Ok(json!({"a.b": 1, "a.c.d": 2, "e": 3}))),
        (json!(null), json!({"a": {"l": [{"x": 1}]}, "n": null}), Ok(json!({"a.l": [{"x": 1}], "n": null}))),
        (json!(null), json!({"a": {}, "b": {"c": {}}}), Ok(json!({"a": {}, "b.c": {}}))),
        (json!(null), json!({"ü": {"名": u64::MAX}}), Ok(json!({"ü.名": u64::MAX}))),
        (json!({"delimiter": "__"}), json!({"a": {"b": {"c": true}}}), Ok(json!({"a__b__c": true}))),
        (json!({"path": "payload.o"}), json!({"o": {"a": {"b": 1}}, "p": {"q": 1}}), Ok(json!({"o": {"a.b": 1}, "p": {"q": 1}}))),
        (json!({"path": "payload.o"}), json!({}), Ok(json!({}))),
        (json!({"path": "payload.o"}), json!({"o": "s"}), Err("is a string, not an object")),
        (json!(null), json!({"a.b": 1, "a": {"b": 2}}), Err("more than one field flattens to `a.b`")),
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"delimiter": "", "path": "source"}), &[("path", "read-only"), ("delimiter", "must not be empty")]),
                (json!({"delimiter": 1}), &[("delimiter", "invalid type")]),
            ],
        );
    }
}
