//! `insert_header`: sets a header of the downstream Kafka message (replacing one of the same
//! name, in place).
//!
//! Params: `name`, and exactly one of `value` (a string) or `attribute` (`source`, `id`,
//! `received_at`, `topic`, `partition`, `offset`; see `insert_field`). Header names are
//! case-sensitive.


use super::{Attribute, Effect, Operation, Problems, Source};
use crate::event::Event;
use crate::path::ValueRef;
use crate::pipeline::Context;

operation!(
    "insert_header",
    "Set a downstream Kafka header to a static string or an event attribute.",
    r#"{"op": "insert_header", "params": {"name": "x-origin", "attribute": "source"}}"#,
    struct Params {
    name: String => ["string", required, "The header name (case-sensitive)."],
    #[serde(default)]
    value: Option<String> => ["string", optional, "The header value. Exactly one of value and attribute."],
    #[serde(default)]
    attribute: Option<Attribute> => ["enum: source|id|received_at|topic|partition|offset", optional, "An attribute to use as the value; topic, partition and offset are the Kafka position being processed."],
    }
);

#[derive(Debug)]
struct InsertHeader {
    name: String,
    source: Source<String>,
}

/// Checks a header name: not empty, no control characters.
pub(super) fn check_header_name(name: &str, at: &str, problems: &mut Problems) {
    if name.is_empty() {
        problems.push(at, "a header name must not be empty");
    } else if name.chars().any(char::is_control) {
        problems.push(at, "a header name must not contain control characters");
    }
}

fn build(p: Params, problems: &mut Problems) -> Option<InsertHeader> {
    check_header_name(&p.name, "name", problems);
    let source = Source::exactly_one(p.value, p.attribute, problems);
    Some(InsertHeader { name: p.name, source: source? })
}

impl Operation for InsertHeader {
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String> {
        let value = match &self.source {
            Source::Value(v) => v.clone(),
            Source::Attribute(a) => {
                let mut text = String::new();
                ValueRef::Json(&a.value(event, ctx)?).write_text(&mut text);
                text
            }
        };
        event.routing.set_header(&self.name, value);
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        type Headers = Vec<(String, String)>;
        type Before<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Value, Before, Result<Headers, &str>)] = &[
            (json!({"name": "x-a", "value": "ünï"}), &[], Ok(vec![pair("x-a", "ünï")])),
            (json!({"name": "x-a", "value": "2"}), &[("x-a", "1"), ("x-b", "0")], Ok(vec![pair("x-a", "2"), pair("x-b", "0")])),
            (json!({"name": "X-A", "value": "2"}), &[("x-a", "1")], Ok(vec![pair("x-a", "1"), pair("X-A", "2")])),
            (json!({"name": "src", "attribute": "source"}), &[], Ok(vec![pair("src", "s")])),
            (json!({"name": "off", "attribute": "offset"}), &[], Ok(vec![pair("off", "42")])),
            (json!({"name": "p", "attribute": "partition"}), &[], Ok(vec![pair("p", "3")])),
            (json!({"name": "r", "attribute": "received_at"}), &[], Err("no `received_at`")),
        ];
        for (params, before, expected) in cases {
            let mut e = event(json!({}));
            for (n, v) in *before {
                e.routing.set_header(n, (*v).to_owned());
            }
            check_outcome(params, run(&compile, params, e), expected, |e, want| assert_eq!(&e.routing.headers, want, "{params}"));
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"name": "", "value": "x"}), &[("name", "must not be empty")]),
                (json!({"name": "a\nb", "value": "x", "attribute": "id"}), &[("name", "control characters"), ("", "exactly one")]),
                (json!({"name": "a", "value": 1}), &[("value", "invalid type")]),
            ],
        );
    }
}
