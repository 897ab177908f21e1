//! `move_field`: moves the value at one path to another (replacing what is there).
//!
//! Params: `from` (a writable path: not an envelope field; `payload`/`metadata` themselves are
//! emptied), `to` (a writable path). A missing `from` fails. Moving out of an array shifts the
//! elements after it.


use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "move_field",
    "Move the value at one path to another.",
    r#"{"op": "move_field", "params": {"from": "payload.internal.trace_id", "to": "metadata.trace_id"}}"#,
    struct Params {
    from: String => ["path", required, "What to move; not an envelope field. Missing = error."],
    to: String => ["path", required, "Where to put it (replacing what is there)."],
    }
);

#[derive(Debug)]
struct MoveField {
    from: FieldPath,
    to: FieldPath,
}

fn build(p: Params, problems: &mut Problems) -> Option<MoveField> {
    let from = problems.path(&p.from, "from", Access::Write);
    let to = problems.path(&p.to, "to", Access::Write);
    Some(MoveField { from: from?, to: to? })
}

impl Operation for MoveField {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let value = self.from.remove(event).map_err(|e| e.0)?.ok_or_else(|| format!("`{}` is missing", self.from))?;
        self.to.set(event, value).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!({"from": "payload.a", "to": "payload.b"}), json!({"a": {"x": 1}}), Ok(json!({"b": {"x": 1}}))),
        (json!({"from": "payload.a", "to": "payload.b"}), json!({"a": null, "b": 1}), Ok(json!({"b": null}))),
        (json!({"from": "payload.a.b", "to": "payload.c"}), json!({"a": {"b": "ü"}}), Ok(json!({"a": {}, "c": "ü"}))),
        (json!({"from": "payload.l[0]", "to": "payload.first"}), json!({"l": [1, 2]}), Ok(json!({"l": [2], "first": 1}))),
        (json!({"from": "payload.n", "to": "payload.n2"}), json!({"n": 1.5e300}), Ok(json!({"n2": 1.5e300}))),
        (json!({"from": "payload.missing", "to": "payload.b"}), json!({"a": 1}), Err("`payload.missing` is missing")),
        (json!({"from": "payload.l[3]", "to": "payload.b"}), json!({"l": []}), Err("is missing")),
        (json!({"from": "payload.a", "to": "payload.s.x"}), json!({"a": 1, "s": "str"}), Err("cannot set")),
        (json!({"from": "payload.inner", "to": "payload"}), json!({"inner": {"k": 1}, "x": 2}), Ok(json!({"k": 1}))),
    }

    #[test]
    fn moves_a_whole_root() {
        let e = run(&compile, &json!({"from": "payload", "to": "metadata.original"}), event(json!({"a": 1}))).unwrap();
        assert_eq!(e.metadata["original"], json!({"a": 1}));
        assert!(e.payload.is_empty());
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"from": "id", "to": "payload.id"}), &[("from", "read-only")]),
                (json!({"from": "payload[", "to": "received_at"}), &[("from", "unclosed"), ("to", "read-only")]),
            ],
        );
    }
}
