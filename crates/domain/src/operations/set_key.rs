//! `set_key`: decides the downstream Kafka message key from field values.
//!
//! Params: `fields` (paths, envelope fields included), `separator` (default `:`). The key is the
//! values as text (strings as they are, anything else as compact JSON) joined by the separator,
//! e.g. `["source", "payload.project"]` → `jira:PROJ`. A missing field fails. Without `set_key`
//! the stage keeps its default key (`<source>:<id>`).


use super::{text_at, Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "set_key",
    "Set the downstream Kafka key to field values joined with `:`.",
    r#"{"op": "set_key", "params": {"fields": ["source", "payload.project"]}}"#,
    struct Params {
    fields: Vec<String> => ["list<path>", required, "The values making the key, in order; missing = error."],
    #[serde(default = "default_separator")]
    separator: String => ["string", optional("\":\""), "Joins the values."],
    }
);

fn default_separator() -> String {
    ":".into()
}

#[derive(Debug)]
struct SetKey {
    fields: Vec<FieldPath>,
    separator: String,
}

fn build(p: Params, problems: &mut Problems) -> Option<SetKey> {
    if p.fields.is_empty() {
        problems.push("fields", "must list at least one field");
    }
    let fields = problems.paths(&p.fields, "fields", Access::Read);
    Some(SetKey { fields, separator: p.separator })
}

impl Operation for SetKey {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let mut key = event.routing.key.take().unwrap_or_default();
        key.clear();
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                key.push_str(&self.separator);
            }
            text_at(field, event, &mut key)?;
        }
        event.routing.key = Some(key);
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let cases: &[(Value, Value, Result<&str, &str>)] = &[
            (json!({"fields": ["source", "id"]}), json!({}), Ok("s:1")),
            (json!({"fields": ["payload.p"]}), json!({"p": "PRÖJ"}), Ok("PRÖJ")),
            (json!({"fields": ["payload.n", "payload.b", "payload.z"]}), json!({"n": u64::MAX, "b": true, "z": null}), Ok("18446744073709551615:true:null")),
            (json!({"fields": ["payload.o", "payload.l[1]"], "separator": "|"}), json!({"o": {"b": [1, "x"]}, "l": [0, 2.5]}), Ok(r#"{"b":[1,"x"]}|2.5"#)),
            (json!({"fields": ["payload.p", "payload.q"]}), json!({"p": "x"}), Err("`payload.q` is missing")),
            (json!({"fields": ["received_at"]}), json!({}), Err("`received_at` is missing")),
        ];
        for (params, payload, expected) in cases {
            check_outcome(params, run(&compile, params, event(payload.clone())), expected, |e, want| {
                assert_eq!(e.routing.key.as_deref(), Some(*want), "{params}");
            });
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"fields": []}), &[("fields", "at least one")]),
                (json!({"fields": ["payload.a", "key", "payload..b"]}), &[("fields[1]", "must start with"), ("fields[2]", "empty field name")]),
            ],
        );
    }
}
