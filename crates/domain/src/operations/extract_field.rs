//! `extract_field`: replaces a value with one of its parts, e.g. the payload with
//! `payload.after` (unwrapping an envelope).
//!
//! Params: `field` (the part to keep; any path), `target` (what it replaces, default
//! `payload`). When `target` is `payload` or `metadata` the part must be an object. A missing
//! `field` fails.


use super::copy_field::CopyField;
use super::{Access, Problems};

operation!(
    "extract_field",
    "Replace a value (the payload by default) with the value at a path inside the event.",
    r#"{"op": "extract_field", "params": {"field": "payload.after"}}"#,
    struct Params {
    field: String => ["path", required, "The value to keep; missing = error."],
    #[serde(default = "default_target")]
    target: String => ["path", optional("\"payload\""), "What it replaces; payload and metadata need an object."],
    }
);

fn default_target() -> String {
    "payload".into()
}

/// Copying `field` over `target` is what extracting it is.
fn build(p: Params, problems: &mut Problems) -> Option<CopyField> {
    let field = problems.path(&p.field, "field", Access::Read);
    let target = problems.path(&p.target, "target", Access::Write);
    Some(CopyField { from: field?, to: target? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!({"field": "payload.after"}), json!({"before": {}, "after": {"a": "ü"}}), Ok(json!({"a": "ü"}))),
        (json!({"field": "payload.after"}), json!({"after": {}}), Ok(json!({}))),
        (json!({"field": "payload.l[0]"}), json!({"l": [{"x": 1}]}), Ok(json!({"x": 1}))),
        (json!({"field": "payload.after"}), json!({"after": [1]}), Err("cannot set `payload` to an array")),
        (json!({"field": "payload.after"}), json!({"after": null}), Err("cannot set `payload` to null")),
        (json!({"field": "payload.after"}), json!({}), Err("`payload.after` is missing")),
        (json!({"field": "payload.w.v", "target": "payload.w"}), json!({"w": {"v": 5}, "k": 1}), Ok(json!({"w": 5, "k": 1}))),
        (json!({"field": "payload.w.v", "target": "payload.w"}), json!({"w": {"v": null}}), Ok(json!({"w": null}))),
    }

    #[test]
    fn extracts_into_metadata() {
        let e = run(&compile, &json!({"field": "payload.meta", "target": "metadata"}), event(json!({"meta": {"k": 1}}))).unwrap();
        assert_eq!(Value::Object(e.metadata), json!({"k": 1}));
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(&compile, &[(json!({"field": "after", "target": "id"}), &[("field", "must start with"), ("target", "read-only")])]);
    }
}
