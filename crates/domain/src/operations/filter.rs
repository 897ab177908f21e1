//! `filter`: drops events on purpose. A dropped event is not an error: the stage stops, does
//! not store or publish it, and counts it as filtered.
//!
//! Params: exactly one of `drop_when` (drop the events the [condition](crate::condition)
//! holds for) or `keep_when` (drop the others). The operation's own `when`, if any, is checked
//! first: when it does not hold, nothing is dropped.

use serde_json::Value;

use super::{Effect, Operation, Problems};
use crate::condition::Condition;
use crate::event::Event;
use crate::pipeline::Context;

operation!(
    "filter",
    "Drop the event (counted as filtered, not an error) when a condition holds, or unless it holds.",
    r#"{"op": "filter", "params": {"drop_when": {"any": [{"equals": {"path": "payload.status", "value": "draft"}}, {"header": {"name": "x-test", "exists": true}}]}}}"#,
    struct Params {
    #[serde(default)]
    drop_when: Option<Value> => ["condition", optional, "Drop the event when this holds. Exactly one of drop_when and keep_when."],
    #[serde(default)]
    keep_when: Option<Value> => ["condition", optional, "Drop the event unless this holds."],
    }
);

#[derive(Debug)]
struct Filter {
    condition: Condition,
    /// Drop when the condition holds (`drop_when`) or when it does not (`keep_when`).
    drop_if: bool,
}

fn build(p: Params, problems: &mut Problems) -> Option<Filter> {
    let (condition, drop_if) = match (&p.drop_when, &p.keep_when) {
        (Some(c), None) => (problems.condition(c, "drop_when"), true),
        (None, Some(c)) => (problems.condition(c, "keep_when"), false),
        _ => {
            problems.push("", "needs exactly one of `drop_when` and `keep_when`");
            (None, true)
        }
    };
    Some(Filter { condition: condition?, drop_if })
}

impl Operation for Filter {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        Ok(if self.condition.eval(event) == self.drop_if { Effect::Drop } else { Effect::Continue })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let draft = json!({"equals": {"path": "payload.status", "value": "draft"}});
        let cases: &[(Value, Value, Effect)] = &[
            (json!({"drop_when": draft}), json!({"status": "draft"}), Effect::Drop),
            (json!({"drop_when": draft}), json!({"status": "open"}), Effect::Continue),
            (json!({"drop_when": draft}), json!({}), Effect::Continue),
            (json!({"keep_when": draft}), json!({"status": "draft"}), Effect::Continue),
            (json!({"keep_when": draft}), json!({"status": null}), Effect::Drop),
            (json!({"keep_when": {"source": ["s", "jira"]}}), json!({}), Effect::Continue),
            (json!({"drop_when": {"not": {"matches": {"path": "payload.t", "regex": "^[\\p{L} ]+$"}}}}), json!({"t": "Grüße aus Köln"}), Effect::Continue),
        ];
        for (params, payload, expected) in cases {
            let op = compile(params).unwrap();
            let mut e = event(payload.clone());
            assert_eq!(op.apply(&mut e, &context()).unwrap(), *expected, "{params} on {payload}");
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({}), &[("", "exactly one of")]),
                (json!({"drop_when": {"source": "a"}, "keep_when": {"source": "b"}}), &[("", "exactly one of")]),
                (json!({"drop_when": {"all": [{"matches": {"path": "payload.a", "regex": ")"}}]}}), &[("drop_when.all[0].matches.regex", "regex")]),
                (json!({"keep_when": {"exists": "nope"}}), &[("keep_when.exists", "must start with")]),
            ],
        );
    }
}
