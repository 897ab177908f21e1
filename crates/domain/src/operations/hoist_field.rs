//! `hoist_field`: wraps a value into a new object under one field name, e.g. the payload
//! `{"a": 1}` into `{"data": {"a": 1}}`.
//!
//! Params: `field` (the name of the wrapping field, not a path), `path` (the value to wrap,
//! default `payload`). A missing value is left alone.

use serde_json::{Map, Value};

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "hoist_field",
    "Wrap the value at a path (the payload by default) as {field: value}.",
    r#"{"op": "hoist_field", "params": {"field": "data"}}"#,
    struct Params {
    field: String => ["string", required, "The name the old value goes under."],
    #[serde(default = "default_path")]
    path: String => ["path", optional("\"payload\""), "The value to wrap."],
    }
);

fn default_path() -> String {
    "payload".into()
}

#[derive(Debug)]
struct HoistField {
    field: String,
    path: FieldPath,
}

fn build(p: Params, problems: &mut Problems) -> Option<HoistField> {
    if p.field.is_empty() {
        problems.push("field", "must not be empty");
    }
    let path = problems.path(&p.path, "path", Access::Write);
    Some(HoistField { field: p.field, path: path? })
}

impl Operation for HoistField {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let wrap = |old: Value| {
            let mut m = Map::new();
            m.insert(self.field.clone(), old);
            m
        };
        if self.path.is_root() {
            let map = self.path.object_mut(event).map_err(|e| e.0)?.expect("a root is always there");
            let old = std::mem::take(map);
            *map = wrap(Value::Object(old));
        } else if let Some(v) = self.path.get_mut(event) {
            let old = std::mem::take(v);
            *v = Value::Object(wrap(old));
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!({"field": "data"}), json!({"a": 1}), Ok(json!({"data": {"a": 1}}))),
        (json!({"field": "data"}), json!({}), Ok(json!({"data": {}}))),
        (json!({"field": "ü.x"}), json!({"a": 1}), Ok(json!({"ü.x": {"a": 1}}))),
        (json!({"field": "v", "path": "payload.n"}), json!({"n": u64::MAX}), Ok(json!({"n": {"v": u64::MAX}}))),
        (json!({"field": "v", "path": "payload.n"}), json!({"n": null}), Ok(json!({"n": {"v": null}}))),
        (json!({"field": "v", "path": "payload.l[0]"}), json!({"l": ["x"]}), Ok(json!({"l": [{"v": "x"}]}))),
        (json!({"field": "v", "path": "payload.missing"}), json!({"a": 1}), Ok(json!({"a": 1}))),
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"field": "", "path": "id"}), &[("field", "must not be empty"), ("path", "read-only")]),
                (json!({}), &[("", "missing field `field`")]),
            ],
        );
    }
}
