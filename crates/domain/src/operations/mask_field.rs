//! `mask_field`: hides the values of fields.
//!
//! Params: `fields` (field paths), `mode`: `fixed` (default; writes `replacement`, default
//! `"****"`), `sha256` (writes the lowercase hex SHA-256 of `salt` followed by the value as text:
//! a string as it is, anything else as compact JSON; `salt` is required and non-empty) or
//! `remove` (deletes the field). Missing fields and `null` values are left alone in `fixed` and
//! `sha256` modes (there is nothing to hide); `remove` removes a `null` too.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::insert_field::present;
use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::{FieldPath, ValueRef};
use crate::pipeline::Context;

operation!(
    "mask_field",
    "Hide field values: a fixed replacement, a salted SHA-256, or removal.",
    r#"{"op": "mask_field", "params": {"fields": ["payload.reporter.email", "payload.ssn"], "mode": "sha256", "salt": "change-me"}}"#,
    struct Params {
    fields: Vec<String> => ["list<path>", required, "The fields to mask (below payload or metadata)."],
    #[serde(default)]
    mode: Mode => ["enum: fixed|sha256|remove", optional("\"fixed\""), "How to mask."],
    #[serde(default, deserialize_with = "present")]
    replacement: Option<Value> => ["json", optional("\"****\""), "mode fixed only: the value written instead."],
    #[serde(default)]
    salt: Option<String> => ["string", optional, "mode sha256 only, and required there: prefixed to the value before hashing; keep it secret."],
    }
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Fixed,
    Sha256,
    Remove,
}

#[derive(Debug)]
enum Masker {
    Fixed(Value),
    /// The hasher already fed with the salt, cloned per value.
    Sha256(Sha256),
    Remove,
}

#[derive(Debug)]
struct MaskField {
    fields: Vec<FieldPath>,
    masker: Masker,
}

fn build(p: Params, problems: &mut Problems) -> Option<MaskField> {
    if p.fields.is_empty() {
        problems.push("fields", "must list at least one field");
    }
    let fields = problems.paths(&p.fields, "fields", Access::Field);
    if p.replacement.is_some() && p.mode != Mode::Fixed {
        problems.push("replacement", "applies only to mode `fixed`");
    }
    if p.salt.is_some() && p.mode != Mode::Sha256 {
        problems.push("salt", "applies only to mode `sha256`");
    }
    let masker = match p.mode {
        Mode::Fixed => Masker::Fixed(p.replacement.unwrap_or_else(|| Value::from("****"))),
        Mode::Remove => Masker::Remove,
        Mode::Sha256 => match p.salt.as_deref() {
            Some(salt) if !salt.is_empty() => Masker::Sha256(Sha256::new_with_prefix(salt.as_bytes())),
            Some(_) => {
                problems.push("salt", "must not be empty");
                Masker::Remove
            }
            None => {
                problems.push("salt", "is required for mode `sha256`");
                Masker::Remove
            }
        },
    };
    Some(MaskField { fields, masker })
}

impl Operation for MaskField {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        for field in &self.fields {
            match &self.masker {
                Masker::Remove => {
                    field.remove(event).map_err(|e| e.0)?;
                }
                Masker::Fixed(replacement) => {
                    if let Some(v) = field.get_mut(event).filter(|v| !v.is_null()) {
                        *v = replacement.clone();
                    }
                }
                Masker::Sha256(salted) => {
                    if let Some(v) = field.get_mut(event).filter(|v| !v.is_null()) {
                        *v = Value::String(hash(salted.clone(), v));
                    }
                }
            }
        }
        Ok(Effect::Continue)
    }
}

/// The lowercase hex SHA-256 of the salted hasher fed with the value as text.
fn hash(mut hasher: Sha256, value: &Value) -> String {
    match value {
        Value::String(s) => hasher.update(s.as_bytes()),
        other => {
            let mut text = String::new();
            ValueRef::Json(other).write_text(&mut text);
            hasher.update(text.as_bytes());
        }
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn hashes_are_sha256_of_salt_and_text() {
        // Known answer: sha256("abc").
        let h = hash(Sha256::new_with_prefix(b"a"), &json!("bc"));
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash(Sha256::new_with_prefix(b"salt"), &json!(42)), hash(Sha256::new_with_prefix(b"salt"), &json!("42")));
    }

    #[test]
    fn table() {
        let salted = |v: Value| hash(Sha256::new_with_prefix(b"pepper"), &v);
        check_payloads(
            &compile,
            &[
                (json!({"fields": ["payload.email"]}), json!({"email": "a@b.c", "x": 1}), Ok(json!({"email": "****", "x": 1}))),
                (json!({"fields": ["payload.email"], "replacement": null}), json!({"email": "a@b.c"}), Ok(json!({"email": null}))),
                (json!({"fields": ["payload.n"], "replacement": 0}), json!({"n": u64::MAX}), Ok(json!({"n": 0}))),
                (json!({"fields": ["payload.missing", "payload.nul"]}), json!({"nul": null}), Ok(json!({"nul": null}))),
                (json!({"fields": ["payload.l[1]"]}), json!({"l": ["a", "b"]}), Ok(json!({"l": ["a", "****"]}))),
                (
                    json!({"fields": ["payload.email", "payload.n", "payload.u", "payload.o"], "mode": "sha256", "salt": "pepper"}),
                    json!({"email": "a@b.c", "n": 42, "u": "ünï", "o": {"x": 1}}),
                    Ok(json!({"email": salted(json!("a@b.c")), "n": salted(json!(42)), "u": salted(json!("ünï")), "o": salted(json!({"x": 1}))})),
                ),
                (json!({"fields": ["payload.nul"], "mode": "sha256", "salt": "pepper"}), json!({"nul": null}), Ok(json!({"nul": null}))),
                (json!({"fields": ["payload.a", "payload.b.c", "payload.l[0]", "payload.x"], "mode": "remove"}),
                    json!({"a": 1, "b": {"c": null, "d": 2}, "l": [1, 2]}), Ok(json!({"b": {"d": 2}, "l": [2]}))),
            ],
        );
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"fields": []}), &[("fields", "at least one")]),
                (json!({"fields": ["payload.a", "title", "id", "payload"]}), &[("fields[1]", "must start with"), ("fields[2]", "read-only"), ("fields[3]", "below its root")]),
                (json!({"fields": ["payload.a"], "mode": "sha256"}), &[("salt", "is required")]),
                (json!({"fields": ["payload.a"], "mode": "sha256", "salt": ""}), &[("salt", "must not be empty")]),
                (json!({"fields": ["payload.a"], "mode": "sha256", "salt": "s", "replacement": "x"}), &[("replacement", "only to mode `fixed`")]),
                (json!({"fields": ["payload.a"], "salt": "s"}), &[("salt", "only to mode `sha256`")]),
                (json!({"fields": ["payload.a"], "mode": "hash"}), &[("mode", "unknown variant `hash`")]),
            ],
        );
    }
}
