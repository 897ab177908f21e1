//! `validate`: fails the event unless it has the required fields and/or satisfies a JSON
//! Schema; the failure then follows the source's `on_error` (dead letter, skip or fail).
//!
//! Params: `required` (paths that must be present and not `null`), `schema` (a JSON Schema,
//! draft detected from `$schema`, 2020-12 by default), `scope` (what the schema validates,
//! default `payload`; any path). At least one of `required` and `schema`. The schema is
//! compiled with the config: an invalid schema is a config error located inside it
//! (`schema.properties.title.type`). References resolve only inside the schema (no HTTP, no
//! files), and `pattern`s use the linear-time `regex` syntax (no look-around or back-references).
//! The error lists the first three violations, with the instance location but not the offending
//! values (which may be personal data).

use serde_json::Value;

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::{FieldPath, ValueRef};
use crate::pipeline::Context;

operation!(
    "validate",
    "Fail the event (then on_error applies) unless required fields are present and/or it satisfies a JSON Schema.",
    r#"{"op": "validate", "params": {"required": ["payload.title", "metadata.created_at"],
        "schema": {"type": "object", "required": ["title"], "properties": {"title": {"type": "string", "minLength": 1}, "priority": {"type": "integer", "minimum": 1, "maximum": 5}}}}}"#,
    struct Params {
    #[serde(default)]
    required: Vec<String> => ["list<path>", optional("[]"), "Paths that must be present and not null."],
    #[serde(default)]
    schema: Option<Value> => ["json", optional, "A JSON Schema the scope must satisfy; references stay inside it."],
    #[serde(default = "default_scope")]
    scope: String => ["path", optional("\"payload\""), "What the schema validates."],
    }
);

/// How many violations an error message lists.
const SHOWN: usize = 3;

fn default_scope() -> String {
    "payload".into()
}

#[derive(Debug)]
struct Validate {
    required: Vec<FieldPath>,
    schema: Option<jsonschema::Validator>,
    scope: FieldPath,
}

fn build(p: Params, problems: &mut Problems) -> Option<Validate> {
    if p.required.is_empty() && p.schema.is_none() {
        problems.push("", "needs `required`, `schema` or both");
    }
    let required = problems.paths(&p.required, "required", Access::Read);
    let scope = problems.path(&p.scope, "scope", Access::Read);
    let schema = p.schema.as_ref().and_then(|schema| {
        jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(1 << 20))
            .build(schema)
            .map_err(|e| problems.push(locate(schema, e.instance_path().as_str()), format!("invalid JSON Schema: {}", e.masked())))
            .ok()
    });
    Some(Validate { required, schema, scope: scope? })
}

/// `schema` plus the JSON pointer into it, written like the other locations:
/// `/properties/tags/items/0` → `schema.properties.tags.items[0]`.
fn locate(schema: &Value, pointer: &str) -> String {
    let mut at = String::from("schema");
    let mut node = Some(schema);
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                at.push_str(&format!("[{token}]"));
                node = token.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            Some(Value::Object(map)) => {
                at.push('.');
                at.push_str(&token);
                node = map.get(&token);
            }
            _ => {
                at.push('.');
                at.push_str(&token);
                node = None;
            }
        }
    }
    at
}

impl Operation for Validate {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let mut violations: Vec<String> = self
            .required
            .iter()
            .filter(|p| p.get(event).is_none_or(|v| v.is_null()))
            .map(|p| format!("`{p}` is required"))
            .collect();
        if let Some(schema) = &self.schema {
            self.check_schema(schema, event, &mut violations);
        }
        if violations.is_empty() {
            return Ok(Effect::Continue);
        }
        let more = violations.len().saturating_sub(SHOWN);
        violations.truncate(SHOWN);
        let mut message = format!("validation failed: {}", violations.join("; "));
        if more > 0 {
            message.push_str(&format!(" (and {more} more)"));
        }
        Err(message)
    }
}

impl Validate {
    fn check_schema(&self, schema: &jsonschema::Validator, event: &mut Event, violations: &mut Vec<String>) {
        let mut check = |value: &Value| {
            if schema.is_valid(value) {
                return;
            }
            for e in schema.iter_errors(value).take(SHOWN + 1) {
                let at = e.instance_path().as_str();
                let at = if at.is_empty() { "/" } else { at };
                violations.push(format!("{}{at}: {}", self.scope, e.masked()));
            }
        };
        if self.scope.is_root() && !self.scope.is_read_only() {
            // The payload and metadata are maps, not values: lend the map to a value for the
            // check instead of copying it.
            let map = self.scope.object_mut(event).expect("a writable root").expect("a root is there");
            let value = Value::Object(std::mem::take(map));
            check(&value);
            let Value::Object(back) = value else { unreachable!("built as an object") };
            *map = back;
            return;
        }
        match self.scope.get(event) {
            None => violations.push(format!("`{}` is missing", self.scope)),
            Some(ValueRef::Json(v)) => check(v),
            Some(ValueRef::Str(s)) => check(&Value::String(s.to_owned())),
            Some(ValueRef::Object(m)) => check(&Value::Object(m.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["title"],
            "properties": {
                "title": {"type": "string", "minLength": 1, "pattern": "^\\p{Lu}"},
                "n": {"type": "integer", "maximum": 18_446_744_073_709_551_615_u64},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": false,
        })
    }

    #[test]
    fn table() {
        let s = schema();
        check_payloads(
            &compile,
            &[
                (json!({"required": ["payload.a", "payload.b.c"]}), json!({"a": 0, "b": {"c": ""}}), Ok(json!({"a": 0, "b": {"c": ""}}))),
                (json!({"required": ["payload.a", "payload.b"]}), json!({"a": null}), Err("validation failed: `payload.a` is required; `payload.b` is required")),
                (json!({"required": ["payload.l[1]"]}), json!({"l": [1]}), Err("`payload.l[1]` is required")),
                (json!({"required": ["id", "source"]}), json!({}), Ok(json!({}))),
                (json!({"required": ["received_at"]}), json!({}), Err("`received_at` is required")),
                (json!({"schema": s}), json!({"title": "Über", "n": u64::MAX, "tags": ["ü"]}), Ok(json!({"title": "Über", "n": u64::MAX, "tags": ["ü"]}))),
                (json!({"schema": s}), json!({"title": "über"}), Err("payload/title: ")),
                (json!({"schema": s}), json!({}), Err("payload/: ")),
                (json!({"schema": s}), json!({"title": "T", "tags": [1]}), Err("payload/tags/0")),
                (json!({"schema": s}), json!({"title": "T", "n": 1.5}), Err("payload/n")),
                (
                    json!({"schema": s, "required": ["payload.x"]}),
                    json!({"title": "", "n": "x", "tags": "x", "y": 1}),
                    Err("(and 2 more)"),
                ),
                (json!({"schema": {"type": "integer"}, "scope": "payload.n"}), json!({"n": 5}), Ok(json!({"n": 5}))),
                (json!({"schema": {"type": "integer"}, "scope": "payload.n"}), json!({}), Err("`payload.n` is missing")),
                (json!({"schema": {"minLength": 2}, "scope": "id"}), json!({}), Err("id/")),
            ],
        );
    }

    #[test]
    fn errors_do_not_reveal_values() {
        let err = run(&compile, &json!({"schema": schema()}), event(json!({"title": "secret-ssn-123"}))).unwrap_err();
        assert!(!err.contains("secret-ssn-123"), "{err}");
    }

    #[test]
    fn the_payload_is_intact_after_a_check() {
        let e = run(&compile, &json!({"schema": {"type": "object"}}), event(json!({"a": [1]}))).unwrap();
        assert_eq!(Value::Object(e.payload.into()), json!({"a": [1]}));
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({}), &[("", "needs `required`, `schema` or both")]),
                (json!({"required": ["payload.a", "nope"], "scope": "x"}), &[("required[1]", "must start with"), ("scope", "must start with")]),
                (json!({"schema": {"type": "strnig"}}), &[("schema.type", "invalid JSON Schema")]),
                (json!({"schema": {"properties": {"a": {"minLength": -1}}}}), &[("schema.properties.a.minLength", "invalid JSON Schema")]),
                (json!({"schema": {"allOf": [{"type": "object"}, {"type": 5}]}}), &[("schema.allOf[1].type", "invalid JSON Schema")]),
                (json!({"schema": {"$ref": "https://example.com/schema.json"}}), &[("schema", "invalid JSON Schema")]),
                (json!({"schema": {"$ref": "file:///etc/passwd"}}), &[("schema", "invalid JSON Schema")]),
                (json!({"schema": {"pattern": "(?<=a)b"}}), &[("schema.pattern", "invalid JSON Schema")]),
            ],
        );
    }
}
