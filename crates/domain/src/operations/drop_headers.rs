//! `drop_headers`: removes headers from the downstream Kafka message.
//!
//! Params: `names` (exact, case-sensitive header names). Absent headers are ignored.


use super::insert_header::check_header_name;
use super::{Effect, Operation, Problems};
use crate::event::Event;
use crate::pipeline::Context;

operation!(
    "drop_headers",
    "Remove downstream Kafka headers by name.",
    r#"{"op": "drop_headers", "params": {"names": ["x-internal-trace", "authorization"]}}"#,
    struct Params {
    names: Vec<String> => ["list<string>", required, "The header names to remove (case-sensitive)."],
    }
);

#[derive(Debug)]
struct DropHeaders {
    names: Vec<String>,
}

fn build(p: Params, problems: &mut Problems) -> Option<DropHeaders> {
    if p.names.is_empty() {
        problems.push("names", "must list at least one header");
    }
    for (i, name) in p.names.iter().enumerate() {
        check_header_name(name, &format!("names[{i}]"), problems);
    }
    Some(DropHeaders { names: p.names })
}

impl Operation for DropHeaders {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        event.routing.headers.retain(|(n, _)| !self.names.contains(n));
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let cases: &[(Value, &[&str], &[&str])] = &[
            (json!({"names": ["a"]}), &["a", "b", "c"], &["b", "c"]),
            (json!({"names": ["a", "c", "zz"]}), &["a", "b", "c"], &["b"]),
            (json!({"names": ["A"]}), &["a"], &["a"]),
            (json!({"names": ["a"]}), &[], &[]),
        ];
        for (params, before, after) in cases {
            let mut e = event(json!({}));
            for n in *before {
                e.routing.set_header(n, "v".into());
            }
            let e = run(&compile, params, e).unwrap();
            let names: Vec<_> = e.routing.headers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, *after, "{params}");
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[(json!({"names": []}), &[("names", "at least one")]), (json!({"names": ["a", ""]}), &[("names[1]", "must not be empty")])],
        );
    }
}
