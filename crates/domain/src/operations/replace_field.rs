//! `replace_field`: keeps, drops and renames the fields of one object.
//!
//! Params: `path` (the object, default `payload`), `include` (field names to keep; all when
//! empty), `exclude` (field names to drop), `rename` (`{old: new}`). Include and exclude apply
//! first, to the original names (a name in both is dropped); then renames, and a renamed field
//! replaces a field already holding the new name. At least one of the three must be given. Only
//! the object's own fields are affected, not nested ones. A missing object is left alone; a value
//! that is not an object fails.

use std::collections::{BTreeMap, HashSet};


use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "replace_field",
    "Keep (include), drop (exclude) and rename the fields of an object.",
    r#"{"op": "replace_field", "params": {"exclude": ["internal_notes"], "rename": {"summary": "title"}}}"#,
    struct Params {
    #[serde(default = "default_path")]
    path: String => ["path", optional("\"payload\""), "The object whose fields change."],
    #[serde(default)]
    include: Vec<String> => ["list<string>", optional("[]"), "Field names to keep; every field when empty."],
    #[serde(default)]
    exclude: Vec<String> => ["list<string>", optional("[]"), "Field names to drop (wins over include)."],
    #[serde(default)]
    rename: BTreeMap<String, String> => ["map<string,string>", optional("{}"), "Old name to new name, applied after include/exclude; replaces a field already named new."],
    }
);

fn default_path() -> String {
    "payload".into()
}

#[derive(Debug)]
struct ReplaceField {
    path: FieldPath,
    include: HashSet<String>,
    exclude: HashSet<String>,
    rename: Vec<(String, String)>,
}

fn build(p: Params, problems: &mut Problems) -> Option<ReplaceField> {
    let path = problems.path(&p.path, "path", Access::Write);
    if p.include.is_empty() && p.exclude.is_empty() && p.rename.is_empty() {
        problems.push("", "needs at least one of `include`, `exclude`, `rename`");
    }
    for (list, names) in [("include", &p.include), ("exclude", &p.exclude)] {
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                problems.push(format!("{list}[{i}]"), "must not be empty");
            }
        }
    }
    let mut targets = HashSet::new();
    for (old, new) in &p.rename {
        if new.is_empty() {
            problems.push(format!("rename.{old}"), "the new name must not be empty");
        } else if !targets.insert(new) {
            problems.push(format!("rename.{old}"), format!("another field is renamed to `{new}` too"));
        }
    }
    Some(ReplaceField {
        path: path?,
        include: p.include.into_iter().collect(),
        exclude: p.exclude.into_iter().collect(),
        rename: p.rename.into_iter().filter(|(old, new)| old != new).collect(),
    })
}

impl Operation for ReplaceField {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let Some(map) = self.path.object_mut(event).map_err(|e| e.0)? else {
            return Ok(Effect::Continue);
        };
        if !self.include.is_empty() || !self.exclude.is_empty() {
            map.retain(|k, _| {
                (self.include.is_empty() || self.include.contains(k)) && !self.exclude.contains(k)
            });
        }
        if !self.rename.is_empty() {
            // Take every renamed value out first so that swaps (`a`→`b`, `b`→`a`) work.
            let taken: Vec<_> =
                self.rename.iter().filter_map(|(old, new)| map.remove(old).map(|v| (new, v))).collect();
            for (new, value) in taken {
                map.insert(new.clone(), value);
            }
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!({"include": ["a", "ü"]}), json!({"a": 1, "b": 2, "ü": null}), Ok(json!({"a": 1, "ü": null}))),
        (json!({"exclude": ["b", "zz"]}), json!({"a": 1, "b": 2}), Ok(json!({"a": 1}))),
        (json!({"include": ["a", "b"], "exclude": ["b"]}), json!({"a": 1, "b": 2, "c": 3}), Ok(json!({"a": 1}))),
        (json!({"rename": {"a": "x"}}), json!({"a": 1, "b": 2}), Ok(json!({"x": 1, "b": 2}))),
        (json!({"rename": {"a": "b"}}), json!({"a": 1, "b": 2}), Ok(json!({"b": 1}))),
        (json!({"rename": {"a": "b", "b": "a"}}), json!({"a": 1, "b": 2}), Ok(json!({"a": 2, "b": 1}))),
        (json!({"rename": {"missing": "x"}}), json!({"a": 1}), Ok(json!({"a": 1}))),
        (json!({"include": ["a"], "rename": {"a": "z"}}), json!({"a": 1, "b": 2}), Ok(json!({"z": 1}))),
        (json!({"path": "payload.o", "exclude": ["s"]}), json!({"o": {"s": 1, "t": [1]}}), Ok(json!({"o": {"t": [1]}}))),
        (json!({"path": "payload.o", "exclude": ["s"]}), json!({}), Ok(json!({}))),
        (json!({"path": "payload.l[0]", "exclude": ["s"]}), json!({"l": [{"s": 1}]}), Ok(json!({"l": [{}]}))),
        (json!({"path": "payload.o", "exclude": ["s"]}), json!({"o": [1]}), Err("`payload.o` is an array, not an object")),
        (json!({"path": "payload.o", "exclude": ["s"]}), json!({"o": null}), Err("is null, not an object")),
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({}), &[("", "at least one of")]),
                (json!({"path": "id", "include": ["a", ""]}), &[("path", "read-only"), ("include[1]", "must not be empty")]),
                (json!({"rename": {"a": "x", "b": "x", "c": ""}}), &[("rename.b", "renamed to `x` too"), ("rename.c", "must not be empty")]),
                (json!({"include": "a"}), &[("include", "invalid type")]),
                (json!({"rename": {"a": 1}}), &[("rename.a", "invalid type")]),
            ],
        );
    }
}
