//! `cast`: converts field values to another JSON type.
//!
//! Params: `fields`, a map from a field path to `int`, `float`, `string` or `bool`.
//!
//! | to | from |
//! |---|---|
//! | `int` | integers as they are (up to `u64::MAX`, down to `i64::MIN`); floats without a fraction and within that range; decimal strings (`" 42 "`, `"-7"`, `"1e3"`) under the same rules; `true`/`false` → 1/0 |
//! | `float` | numbers that a 64-bit float holds exactly; decimal strings; booleans → 1.0/0.0 |
//! | `string` | numbers as written in JSON, booleans as `true`/`false`, arrays and objects as compact JSON |
//! | `bool` | `true`/`false`, `"true"`/`"false"`/`"1"`/`"0"`/`"yes"`/`"no"` (any case), numbers (0 is false) |
//!
//! Anything else (`"abc"` to int, `1.5` to int, an object to int, …) fails on the event, which
//! then follows the source's `on_error`. Missing fields and `null` values are left alone.

use std::collections::BTreeMap;

use serde_json::{Number, Value};

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::{kind, FieldPath, ValueRef};
use crate::pipeline::Context;

operation!(
    "cast",
    "Convert field values to int, float, string or bool; an impossible conversion fails the event.",
    r#"{"op": "cast", "params": {"fields": {"payload.priority": "int", "payload.estimate_h": "float", "payload.id": "string"}}}"#,
    struct Params {
    fields: BTreeMap<String, String> => ["map<path,enum: int|float|string|bool>", required, "Each field and the type to convert it to. Missing and null fields are left alone."],
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Int,
    Float,
    String,
    Bool,
}

#[derive(Debug)]
struct Cast {
    fields: Vec<(FieldPath, Type)>,
}

fn build(p: Params, problems: &mut Problems) -> Option<Cast> {
    if p.fields.is_empty() {
        problems.push("fields", "must name at least one field");
    }
    let mut fields = Vec::with_capacity(p.fields.len());
    for (path, ty) in &p.fields {
        let at = format!("fields.{path}");
        let path = problems.path(path, &at, Access::Field);
        let ty = match ty.as_str() {
            "int" => Some(Type::Int),
            "float" => Some(Type::Float),
            "string" => Some(Type::String),
            "bool" => Some(Type::Bool),
            other => {
                problems.push(&at, format!("unknown type `{other}`, expected int, float, string or bool"));
                None
            }
        };
        if let (Some(path), Some(ty)) = (path, ty) {
            fields.push((path, ty));
        }
    }
    Some(Cast { fields })
}

impl Operation for Cast {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        for (path, ty) in &self.fields {
            let Some(v) = path.get_mut(event) else { continue };
            if v.is_null() {
                continue;
            }
            if let Some(new) = convert(v, *ty).map_err(|e| format!("`{path}`: {e}"))? {
                *v = new;
            }
        }
        Ok(Effect::Continue)
    }
}

/// The converted value, or `None` when the value already has the type.
fn convert(v: &Value, ty: Type) -> Result<Option<Value>, String> {
    let cannot = || format!("cannot cast {} to {}", describe(v), name(ty));
    Ok(Some(match (ty, v) {
        (Type::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => return Ok(None),
        (Type::Float, Value::Number(n)) if n.is_f64() => return Ok(None),
        (Type::String, Value::String(_)) | (Type::Bool, Value::Bool(_)) => return Ok(None),

        (Type::Int, Value::Number(n)) => int_from_f64(n.as_f64().expect("a float")).ok_or_else(cannot)?,
        (Type::Int, Value::String(s)) => int_from_str(s.trim()).ok_or_else(cannot)?,
        (Type::Int, Value::Bool(b)) => Value::from(u8::from(*b)),

        (Type::Float, Value::Number(n)) => {
            let exact = if let Some(i) = n.as_i64() {
                let f = i as f64;
                (f as i128 == i128::from(i)).then_some(f)
            } else {
                let u = n.as_u64().expect("an unsigned integer");
                let f = u as f64;
                (f as i128 == i128::from(u)).then_some(f)
            };
            let f = exact.ok_or_else(|| format!("{} does not fit a float exactly", describe(v)))?;
            Value::Number(Number::from_f64(f).expect("finite"))
        }
        (Type::Float, Value::String(s)) => {
            let f: f64 = s.trim().parse().ok().filter(|f: &f64| f.is_finite()).ok_or_else(cannot)?;
            Value::Number(Number::from_f64(f).expect("finite"))
        }
        (Type::Float, Value::Bool(b)) => Value::from(if *b { 1.0 } else { 0.0 }),

        (Type::String, other) => {
            let mut text = String::new();
            ValueRef::Json(other).write_text(&mut text);
            Value::String(text)
        }

        (Type::Bool, Value::Number(n)) => Value::Bool(n.as_f64().is_some_and(|f| f != 0.0)),
        (Type::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(cannot()),
        },
        _ => return Err(cannot()),
    }))
}

fn int_from_str(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Value::from(u));
    }
    s.parse::<f64>().ok().and_then(int_from_f64)
}

/// An integer from a float without a fraction within `i64::MIN..=u64::MAX`.
fn int_from_f64(f: f64) -> Option<Value> {
    if !f.is_finite() || f.fract() != 0.0 {
        return None;
    }
    // 2^63 and 2^64 are exact as floats; the ranges are half-open because of them.
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        Some(Value::from(f as i64))
    } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some(Value::from(f as u64))
    } else {
        None
    }
}

fn name(ty: Type) -> &'static str {
    match ty {
        Type::Int => "int",
        Type::Float => "float",
        Type::String => "string",
        Type::Bool => "bool",
    }
}

/// The value for an error message: short scalars quoted, containers by kind.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 32 => format!("the string {v}"),
        Value::String(_) => "a long string".into(),
        Value::Number(n) => format!("the number {n}"),
        other => kind(other).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    fn one(ty: &str) -> Value {
        json!({"fields": {"payload.v": ty}})
    }

    #[test]
    fn table() {
        let cases: &[(&str, Value, Result<Value, &str>)] = &[
            ("int", json!(7), Ok(json!(7))),
            ("int", json!(u64::MAX), Ok(json!(u64::MAX))),
            ("int", json!(i64::MIN), Ok(json!(i64::MIN))),
            ("int", json!(3.0), Ok(json!(3))),
            ("int", json!(-3.0), Ok(json!(-3))),
            ("int", json!(1e19), Ok(json!(10_000_000_000_000_000_000_u64))),
            ("int", json!(1e20), Err("cannot cast the number 1e+20 to int")),
            ("int", json!(-1e19), Err("cannot cast")),
            ("int", json!(1.5), Err("cannot cast the number 1.5 to int")),
            ("int", json!(" 42 "), Ok(json!(42))),
            ("int", json!("-7"), Ok(json!(-7))),
            ("int", json!("18446744073709551615"), Ok(json!(u64::MAX))),
            ("int", json!("18446744073709551616"), Err("cannot cast")),
            ("int", json!("1e3"), Ok(json!(1000))),
            ("int", json!("2.5"), Err("cannot cast")),
            ("int", json!("abc"), Err("cannot cast the string \"abc\" to int")),
            ("int", json!("٣"), Err("cannot cast")),
            ("int", json!(true), Ok(json!(1))),
            ("int", json!([1]), Err("cannot cast an array to int")),
            ("int", json!({}), Err("cannot cast an object to int")),
            ("float", json!(2), Ok(json!(2.0))),
            ("float", json!(2.5), Ok(json!(2.5))),
            ("float", json!(9_007_199_254_740_992_i64), Ok(json!(9_007_199_254_740_992.0))),
            ("float", json!(9_007_199_254_740_993_i64), Err("does not fit a float exactly")),
            ("float", json!(i64::MAX), Err("does not fit")),
            ("float", json!(u64::MAX), Err("does not fit")),
            ("float", json!(" -1.25e2 "), Ok(json!(-125.0))),
            ("float", json!("NaN"), Err("cannot cast")),
            ("float", json!("inf"), Err("cannot cast")),
            ("float", json!("1e400"), Err("cannot cast")),
            ("float", json!(false), Ok(json!(0.0))),
            ("string", json!(42), Ok(json!("42"))),
            ("string", json!(u64::MAX), Ok(json!("18446744073709551615"))),
            ("string", json!(-0.5), Ok(json!("-0.5"))),
            ("string", json!(true), Ok(json!("true"))),
            ("string", json!("ünï"), Ok(json!("ünï"))),
            ("string", json!({"a": [1, "x"]}), Ok(json!(r#"{"a":[1,"x"]}"#))),
            ("bool", json!("TRUE"), Ok(json!(true))),
            ("bool", json!(" no "), Ok(json!(false))),
            ("bool", json!("0"), Ok(json!(false))),
            ("bool", json!("maybe"), Err("cannot cast the string \"maybe\" to bool")),
            ("bool", json!(0), Ok(json!(false))),
            ("bool", json!(-2.5), Ok(json!(true))),
            ("bool", json!([]), Err("cannot cast an array to bool")),
            ("int", json!(null), Ok(json!(null))),
            ("string", json!(null), Ok(json!(null))),
        ];
        let rows: Vec<_> = cases
            .iter()
            .map(|(ty, v, want)| (one(ty), json!({"v": v}), want.clone().map(|w| json!({"v": w}))))
            .collect();
        check_payloads(&compile, &rows);
    }

    #[test]
    fn several_fields_nested_and_missing() {
        check_payloads(
            &compile,
            &[
                (
                    json!({"fields": {"payload.a": "int", "payload.o.b": "string", "payload.l[1]": "bool", "payload.missing": "int"}}),
                    json!({"a": "1", "o": {"b": 2}, "l": [0, 1]}),
                    Ok(json!({"a": 1, "o": {"b": "2"}, "l": [0, true]})),
                ),
                (json!({"fields": {"payload.a": "int"}}), json!({"a": "x"}), Err("`payload.a`: cannot cast")),
            ],
        );
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"fields": {}}), &[("fields", "at least one")]),
                (
                    json!({"fields": {"payload.a": "integer", "title": "int", "id": "text"}}),
                    &[("fields.id", "read-only"), ("fields.id", "unknown type `text`"), ("fields.payload.a", "unknown type `integer`"), ("fields.title", "must start with")],
                ),
                (json!({"fields": {"payload.a": 1}}), &[("fields.payload.a", "invalid type")]),
                (json!({"fields": ["payload.a"]}), &[("fields", "invalid type")]),
            ],
        );
    }
}
