//! `copy_field`: copies the value at one path to another (replacing what is there).
//!
//! Params: `from` (any path, envelope fields and `payload`/`metadata` themselves included), `to`
//! (a writable path; `payload`/`metadata` themselves need an object). A missing `from` fails.


use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "copy_field",
    "Copy the value at one path to another.",
    r#"{"op": "copy_field", "params": {"from": "payload.owner.email", "to": "metadata.owner_email"}}"#,
    struct Params {
    from: String => ["path", required, "What to copy; any path, envelope fields included. Missing = error."],
    to: String => ["path", required, "Where to write the copy (replacing what is there)."],
    }
);

/// Also what `extract_field` compiles to: replacing a value with one of its parts is copying
/// the part over it.
#[derive(Debug)]
pub(super) struct CopyField {
    pub(super) from: FieldPath,
    pub(super) to: FieldPath,
}

fn build(p: Params, problems: &mut Problems) -> Option<CopyField> {
    let from = problems.path(&p.from, "from", Access::Read);
    let to = problems.path(&p.to, "to", Access::Write);
    Some(CopyField { from: from?, to: to? })
}

impl Operation for CopyField {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let value = self.from.get(event).ok_or_else(|| format!("`{}` is missing", self.from))?.to_value();
        self.to.set(event, value).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!({"from": "payload.a", "to": "payload.b"}), json!({"a": {"x": [1]}}), Ok(json!({"a": {"x": [1]}, "b": {"x": [1]}}))),
        (json!({"from": "payload.a", "to": "payload.b"}), json!({"a": null, "b": 1}), Ok(json!({"a": null, "b": null}))),
        (json!({"from": "payload.l[1]", "to": "payload.x.y"}), json!({"l": [0, "ü"]}), Ok(json!({"l": [0, "ü"], "x": {"y": "ü"}}))),
        (json!({"from": "payload.n", "to": "payload.m"}), json!({"n": i64::MIN}), Ok(json!({"n": i64::MIN, "m": i64::MIN}))),
        (json!({"from": "id", "to": "payload.id"}), json!({}), Ok(json!({"id": "1"}))),
        (json!({"from": "source", "to": "payload.s"}), json!({}), Ok(json!({"s": "s"}))),
        (json!({"from": "payload.missing", "to": "payload.b"}), json!({}), Err("`payload.missing` is missing")),
        (json!({"from": "received_at", "to": "payload.b"}), json!({}), Err("`received_at` is missing")),
        (json!({"from": "payload.a", "to": "payload.a.b"}), json!({"a": 1}), Err("cannot set")),
        (json!({"from": "payload.a", "to": "payload"}), json!({"a": {"z": 1}}), Ok(json!({"z": 1}))),
        (json!({"from": "payload.a", "to": "payload"}), json!({"a": 1}), Err("must be an object")),
    }

    #[test]
    fn copies_a_whole_root() {
        let e = run(&compile, &json!({"from": "payload", "to": "metadata.original"}), event(json!({"a": 1}))).unwrap();
        assert_eq!(e.metadata["original"], json!({"a": 1}));
        assert_eq!(e.payload["a"], 1);
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"from": "x", "to": "source"}), &[("from", "must start with"), ("to", "read-only")]),
                (json!({"from": "payload.a"}), &[("", "missing field `to`")]),
            ],
        );
    }
}
