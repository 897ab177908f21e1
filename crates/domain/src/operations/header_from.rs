//! `header_from`: sets downstream Kafka headers from field values.
//!
//! Params: `fields`, a list of `{path, header}`. Each header gets the value at its path as text
//! (strings as they are, anything else as compact JSON), replacing a header of the same name.
//! A missing path fails.

use serde::Deserialize;

use super::insert_header::check_header_name;
use super::{text_at, Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "header_from",
    "Set downstream Kafka headers from field values.",
    r#"{"op": "header_from", "params": {"fields": [{"path": "payload.tenant", "header": "x-tenant"}, {"path": "id", "header": "x-entity-id"}]}}"#,
    struct Params {
    fields: Vec<Mapping> => ["list<{path: path, header: string}>", required, "Each header and the path its value comes from; missing = error."],
    }
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    path: String,
    header: String,
}

#[derive(Debug)]
struct HeaderFrom {
    fields: Vec<(FieldPath, String)>,
}

fn build(p: Params, problems: &mut Problems) -> Option<HeaderFrom> {
    if p.fields.is_empty() {
        problems.push("fields", "must list at least one {path, header}");
    }
    let mut fields = Vec::with_capacity(p.fields.len());
    for (i, m) in p.fields.into_iter().enumerate() {
        let path = problems.path(&m.path, &format!("fields[{i}].path"), Access::Read);
        check_header_name(&m.header, &format!("fields[{i}].header"), problems);
        if let Some(path) = path {
            fields.push((path, m.header));
        }
    }
    Some(HeaderFrom { fields })
}

impl Operation for HeaderFrom {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        for (path, header) in &self.fields {
            let mut text = String::new();
            text_at(path, event, &mut text)?;
            event.routing.set_header(header, text);
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let f = |path: &str, header: &str| json!({"path": path, "header": header});
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Value, Value, Result<Headers, &str>)] = &[
            (json!({"fields": [f("payload.t", "x-t"), f("source", "x-s")]}), json!({"t": "ü"}), Ok(&[("x-t", "ü"), ("x-s", "s")])),
            (json!({"fields": [f("payload.n", "n"), f("payload.z", "z")]}), json!({"n": i64::MIN, "z": null}), Ok(&[("n", "-9223372036854775808"), ("z", "null")])),
            (json!({"fields": [f("payload.o", "o"), f("payload.l[0]", "l")]}), json!({"o": {"a": 1}, "l": [[1]]}), Ok(&[("o", r#"{"a":1}"#), ("l", "[1]")])),
            (json!({"fields": [f("payload.a", "a"), f("payload.a", "a")]}), json!({"a": 1}), Ok(&[("a", "1")])),
            (json!({"fields": [f("payload.missing", "m")]}), json!({}), Err("`payload.missing` is missing")),
        ];
        for (params, payload, expected) in cases {
            check_outcome(params, run(&compile, params, event(payload.clone())), expected, |e, want| {
                let got: Vec<_> = e.routing.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                assert_eq!(got, *want, "{params}");
            });
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"fields": []}), &[("fields", "at least one")]),
                (
                    json!({"fields": [{"path": "payload.a", "header": "a"}, {"path": "nope", "header": ""}]}),
                    &[("fields[1].path", "must start with"), ("fields[1].header", "must not be empty")],
                ),
                (json!({"fields": [{"path": "payload.a"}]}), &[("fields[0]", "missing field `header`")]),
            ],
        );
    }
}
