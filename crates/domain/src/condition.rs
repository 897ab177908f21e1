//! Conditions: the `when` of an operation (and `filter`'s `drop_when`/`keep_when`).
//!
//! A condition is a JSON object with exactly one key:
//!
//! | form | holds when |
//! |---|---|
//! | `{"exists": "payload.x"}` | the path is present (a `null` value is present) |
//! | `{"equals": {"path": "payload.x", "value": <json>}}` | the value equals; numbers compare by value (`1 == 1.0`) |
//! | `{"matches": {"path": "payload.x", "regex": "^a"}}` | the value is a string the regex finds a match in (unanchored; use `^…$`) |
//! | `{"in": {"path": "payload.x", "values": [<json>…]}}` | the value equals one of the values |
//! | `{"source": "jira"}`, `{"source": ["jira", "github"]}` | the event's source is one of these |
//! | `{"header": {"name": "h", "exists": true}}` | the header is present (`false`: absent) |
//! | `{"header": {"name": "h", "equals": "v"}}` | the header's value is exactly `v` |
//! | `{"header": {"name": "h", "matches": "regex"}}` | the header's value matches |
//! | `{"not": <condition>}`, `{"all": [<condition>…]}`, `{"any": [<condition>…]}` | negation, conjunction, disjunction |
//!
//! Paths follow [`crate::path`], so `{"equals": {"path": "source", …}}` works too. Conditions
//! are compiled once, with their regexes; compile errors are located relative to the
//! condition, e.g. `all[0].matches.regex`.

use regex::Regex;
use serde_json::{Map, Value};

use crate::event::{Event, SourceName};
use crate::operations::ParamError;
use crate::path::{kind, FieldPath};

/// A compiled condition, ready to evaluate against events.
#[derive(Debug, Clone)]
pub enum Condition {
    Exists(FieldPath),
    Equals(FieldPath, Value),
    Matches(FieldPath, Regex),
    In(FieldPath, Vec<Value>),
    Source(Vec<SourceName>),
    HeaderExists(String, bool),
    HeaderEquals(String, String),
    HeaderMatches(String, Regex),
    Not(Box<Condition>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

/// The forms of a condition with an example each, for the catalog endpoint.
pub const FORMS: &[(&str, &str)] = &[
    (r#"{"exists": "payload.owner"}"#, "The path is present (a null value is present)."),
    (r#"{"equals": {"path": "payload.status", "value": "open"}}"#, "The value equals; numbers compare by value."),
    (r#"{"matches": {"path": "payload.email", "regex": "@example\\.com$"}}"#, "The value is a string the regex matches (unanchored)."),
    (r#"{"in": {"path": "payload.priority", "values": [1, 2]}}"#, "The value equals one of the values."),
    (r#"{"source": ["jira", "github"]}"#, "The event's source is one of these (or the one string)."),
    (r#"{"header": {"name": "x-tenant", "exists": true}}"#, "The header is present (false: absent)."),
    (r#"{"header": {"name": "x-tenant", "equals": "acme"}}"#, "The header's value is exactly this."),
    (r#"{"header": {"name": "x-tenant", "matches": "^acme-"}}"#, "The header's value matches the regex."),
    (r#"{"not": {"exists": "payload.draft"}}"#, "Negation."),
    (r#"{"all": [{"source": "jira"}, {"exists": "payload.key"}]}"#, "Every condition holds (at least one)."),
    (r#"{"any": [{"source": "jira"}, {"exists": "payload.key"}]}"#, "Some condition holds (at least one)."),
];

const KEYS: &str = "exists, equals, matches, in, source, header, not, all, any";

impl Condition {
    /// Compiles a condition from its JSON form.
    ///
    /// # Errors
    /// Every problem found, each located relative to the condition (`any[1].in.values`).
    pub fn compile(value: &Value) -> Result<Condition, Vec<ParamError>> {
        let mut errors = Vec::new();
        match compile_at(value, "", &mut errors) {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(errors),
        }
    }

    /// Whether the condition holds for the event.
    pub fn eval(&self, event: &Event) -> bool {
        match self {
            Condition::Exists(p) => p.get(event).is_some(),
            Condition::Equals(p, v) => p.get(event).is_some_and(|got| got.json_eq(v)),
            Condition::Matches(p, re) => {
                p.get(event).and_then(|v| v.as_str()).is_some_and(|s| re.is_match(s))
            }
            Condition::In(p, values) => {
                p.get(event).is_some_and(|got| values.iter().any(|v| got.json_eq(v)))
            }
            Condition::Source(names) => names.contains(&event.source),
            Condition::HeaderExists(name, present) => event.routing.header(name).is_some() == *present,
            Condition::HeaderEquals(name, v) => event.routing.header(name) == Some(v.as_str()),
            Condition::HeaderMatches(name, re) => event.routing.header(name).is_some_and(|h| re.is_match(h)),
            Condition::Not(c) => !c.eval(event),
            Condition::All(cs) => cs.iter().all(|c| c.eval(event)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(event)),
        }
    }
}

/// Joins a location prefix and a name: `("all[0]", "matches")` → `all[0].matches`.
fn at(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else if name.starts_with('[') {
        format!("{prefix}{name}")
    } else {
        format!("{prefix}.{name}")
    }
}

fn compile_at(value: &Value, loc: &str, errors: &mut Vec<ParamError>) -> Option<Condition> {
    let obj = match value {
        Value::Object(obj) if obj.len() == 1 => obj,
        _ => {
            errors.push(ParamError::new(
                loc,
                format!("a condition is an object with exactly one key ({KEYS}), got {}", describe(value)),
            ));
            return None;
        }
    };
    let (key, body) = obj.iter().next().expect("one key");
    let here = at(loc, key);
    match key.as_str() {
        "exists" => path(body, &here, errors).map(Condition::Exists),
        "equals" => {
            let fields = fields(body, &here, &["path", "value"], &[], errors)?;
            let p = path(&fields["path"], &at(&here, "path"), errors)?;
            Some(Condition::Equals(p, fields["value"].clone()))
        }
        "matches" => {
            let fields = fields(body, &here, &["path", "regex"], &[], errors)?;
            let p = path(&fields["path"], &at(&here, "path"), errors);
            let re = regex(&fields["regex"], &at(&here, "regex"), errors);
            Some(Condition::Matches(p?, re?))
        }
        "in" => {
            let fields = fields(body, &here, &["path", "values"], &[], errors)?;
            let p = path(&fields["path"], &at(&here, "path"), errors);
            let Value::Array(values) = &fields["values"] else {
                errors.push(ParamError::new(at(&here, "values"), "must be an array of JSON values"));
                return None;
            };
            Some(Condition::In(p?, values.clone()))
        }
        "source" => {
            let names: Vec<(String, &Value)> = match body {
                Value::Array(items) if !items.is_empty() => {
                    items.iter().enumerate().map(|(i, v)| (format!("{here}[{i}]"), v)).collect()
                }
                Value::String(_) => vec![(here.clone(), body)],
                _ => {
                    errors.push(ParamError::new(&here, "must be a source name or a non-empty list of them"));
                    return None;
                }
            };
            let before = errors.len();
            let parsed: Vec<SourceName> = names
                .into_iter()
                .filter_map(|(loc, v)| match v.as_str().map(SourceName::parse) {
                    Some(Ok(name)) => Some(name),
                    Some(Err(e)) => {
                        errors.push(ParamError::new(loc, e.to_string()));
                        None
                    }
                    None => {
                        errors.push(ParamError::new(loc, format!("must be a string, got {}", kind(v))));
                        None
                    }
                })
                .collect();
            (errors.len() == before).then_some(Condition::Source(parsed))
        }
        "header" => {
            let fields = fields(body, &here, &["name"], &["exists", "equals", "matches"], errors)?;
            let name = string(&fields["name"], &at(&here, "name"), errors);
            let tests: Vec<_> = ["exists", "equals", "matches"].into_iter().filter(|k| fields.contains_key(*k)).collect();
            if tests.len() != 1 {
                errors.push(ParamError::new(&here, "needs exactly one of `exists`, `equals`, `matches`"));
                return None;
            }
            let name = name?;
            if name.is_empty() {
                errors.push(ParamError::new(at(&here, "name"), "must not be empty"));
                return None;
            }
            let test_at = at(&here, tests[0]);
            match tests[0] {
                "exists" => match &fields["exists"] {
                    Value::Bool(b) => Some(Condition::HeaderExists(name, *b)),
                    other => {
                        errors.push(ParamError::new(test_at, format!("must be true or false, got {}", kind(other))));
                        None
                    }
                },
                "equals" => Some(Condition::HeaderEquals(name, string(&fields["equals"], &test_at, errors)?)),
                _ => Some(Condition::HeaderMatches(name, regex(&fields["matches"], &test_at, errors)?)),
            }
        }
        "not" => compile_at(body, &here, errors).map(|c| Condition::Not(Box::new(c))),
        "all" | "any" => {
            let Value::Array(items) = body else {
                errors.push(ParamError::new(&here, format!("must be a list of conditions, got {}", describe(body))));
                return None;
            };
            if items.is_empty() {
                errors.push(ParamError::new(&here, "must list at least one condition"));
                return None;
            }
            let compiled: Vec<_> =
                items.iter().enumerate().map(|(i, c)| compile_at(c, &format!("{here}[{i}]"), errors)).collect();
            let compiled: Option<Vec<_>> = compiled.into_iter().collect();
            let compiled = compiled?;
            Some(if key == "all" { Condition::All(compiled) } else { Condition::Any(compiled) })
        }
        other => {
            errors.push(ParamError::new(loc, format!("unknown condition `{other}`; known: {KEYS}")));
            None
        }
    }
}

/// Checks that `body` is an object with the `required` keys and no keys beyond `required` and
/// `optional`, reporting each problem.
fn fields<'v>(
    body: &'v Value,
    loc: &str,
    required: &[&str],
    optional: &[&str],
    errors: &mut Vec<ParamError>,
) -> Option<&'v Map<String, Value>> {
    let Value::Object(obj) = body else {
        errors.push(ParamError::new(
            loc,
            format!("must be an object with {}, got {}", required.join(", "), describe(body)),
        ));
        return None;
    };
    let before = errors.len();
    for key in obj.keys() {
        if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
            let mut known: Vec<_> = required.to_vec();
            known.extend_from_slice(optional);
            errors.push(ParamError::new(loc, format!("unknown field `{key}`, expected {}", known.join(", "))));
        }
    }
    for key in required {
        if !obj.contains_key(*key) {
            errors.push(ParamError::new(loc, format!("missing field `{key}`")));
        }
    }
    (errors.len() == before).then_some(obj)
}

fn string(v: &Value, loc: &str, errors: &mut Vec<ParamError>) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            errors.push(ParamError::new(loc, format!("must be a string, got {}", kind(other))));
            None
        }
    }
}

fn path(v: &Value, loc: &str, errors: &mut Vec<ParamError>) -> Option<FieldPath> {
    let text = string(v, loc, errors)?;
    FieldPath::parse(&text).map_err(|e| errors.push(ParamError::new(loc, e.0))).ok()
}

fn regex(v: &Value, loc: &str, errors: &mut Vec<ParamError>) -> Option<Regex> {
    let text = string(v, loc, errors)?;
    crate::operations::compile_regex(&text).map_err(|e| errors.push(ParamError::new(loc, e))).ok()
}

fn describe(v: &Value) -> String {
    match v {
        Value::Object(o) if o.is_empty() => "an empty object".into(),
        Value::Object(o) => format!("an object with {} keys", o.len()),
        other => kind(other).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::event;
    use serde_json::json;

    #[test]
    fn table() {
        let mut e = event(json!({
            "status": "open", "n": 1, "big": u64::MAX, "nul": null, "name": "Zoë", "tags": ["a"],
        }));
        e.routing.set_header("x-tenant", "acme-1".into());
        // (condition, expected)
        let cases: &[(Value, bool)] = &[
            (json!({"exists": "payload.status"}), true),
            (json!({"exists": "payload.nul"}), true),
            (json!({"exists": "payload.missing"}), false),
            (json!({"exists": "payload.tags[0]"}), true),
            (json!({"exists": "payload.tags[1]"}), false),
            (json!({"exists": "received_at"}), false),
            (json!({"equals": {"path": "payload.status", "value": "open"}}), true),
            (json!({"equals": {"path": "payload.n", "value": 1.0}}), true),
            (json!({"equals": {"path": "payload.big", "value": u64::MAX}}), true),
            (json!({"equals": {"path": "payload.big", "value": -1}}), false),
            (json!({"equals": {"path": "payload.nul", "value": null}}), true),
            (json!({"equals": {"path": "payload.missing", "value": null}}), false),
            (json!({"equals": {"path": "payload.tags", "value": ["a"]}}), true),
            (json!({"equals": {"path": "id", "value": "1"}}), true),
            (json!({"matches": {"path": "payload.name", "regex": "^Zo.$"}}), true),
            (json!({"matches": {"path": "payload.name", "regex": "(?i)zoë"}}), true),
            (json!({"matches": {"path": "payload.n", "regex": "1"}}), false),
            (json!({"matches": {"path": "payload.missing", "regex": ".*"}}), false),
            (json!({"in": {"path": "payload.n", "values": [3, 1]}}), true),
            (json!({"in": {"path": "payload.status", "values": ["closed"]}}), false),
            (json!({"in": {"path": "payload.missing", "values": [null]}}), false),
            (json!({"source": "s"}), true),
            (json!({"source": ["jira", "s"]}), true),
            (json!({"source": "jira"}), false),
            (json!({"header": {"name": "x-tenant", "exists": true}}), true),
            (json!({"header": {"name": "X-Tenant", "exists": true}}), false),
            (json!({"header": {"name": "other", "exists": false}}), true),
            (json!({"header": {"name": "x-tenant", "equals": "acme-1"}}), true),
            (json!({"header": {"name": "x-tenant", "equals": "acme"}}), false),
            (json!({"header": {"name": "x-tenant", "matches": "^acme-\\d$"}}), true),
            (json!({"header": {"name": "none", "matches": ".*"}}), false),
            (json!({"not": {"source": "s"}}), false),
            (json!({"all": [{"source": "s"}, {"exists": "payload.n"}]}), true),
            (json!({"all": [{"source": "s"}, {"exists": "payload.x"}]}), false),
            (json!({"any": [{"source": "x"}, {"not": {"exists": "payload.x"}}]}), true),
            (json!({"any": [{"source": "x"}, {"exists": "payload.x"}]}), false),
        ];
        for (cond, expected) in cases {
            let c = Condition::compile(cond).unwrap_or_else(|e| panic!("{cond}: {e:?}"));
            assert_eq!(c.eval(&e), *expected, "{cond}");
        }
    }

    #[test]
    fn every_problem_is_located() {
        let cases: &[(Value, &[(&str, &str)])] = &[
            (json!("x"), &[("", "exactly one key")]),
            (json!({}), &[("", "exactly one key")]),
            (json!({"exists": "a", "source": "b"}), &[("", "exactly one key")]),
            (json!({"exist": "payload.a"}), &[("", "unknown condition `exist`")]),
            (json!({"exists": "title"}), &[("exists", "must start with")]),
            (json!({"exists": 3}), &[("exists", "must be a string, got a number")]),
            (json!({"equals": {"path": "payload.a"}}), &[("equals", "missing field `value`")]),
            (json!({"equals": {"path": "payload.a", "value": 1, "x": 2}}), &[("equals", "unknown field `x`")]),
            (json!({"matches": {"path": "x", "regex": "("}}), &[("matches.path", "must start with"), ("matches.regex", "regex")]),
            (json!({"in": {"path": "payload.a", "values": 1}}), &[("in.values", "must be an array")]),
            (json!({"source": "a:b"}), &[("source", "may hold only")]),
            (json!({"source": ["ok", 1, "b c"]}), &[("source[1]", "must be a string"), ("source[2]", "may hold only")]),
            (json!({"source": []}), &[("source", "non-empty list")]),
            (json!({"header": {"name": "h"}}), &[("header", "exactly one of")]),
            (json!({"header": {"name": "h", "exists": true, "equals": "v"}}), &[("header", "exactly one of")]),
            (json!({"header": {"name": "", "exists": true}}), &[("header.name", "must not be empty")]),
            (json!({"header": {"name": "h", "exists": "yes"}}), &[("header.exists", "true or false")]),
            (json!({"header": {"name": "h", "matches": "["}}), &[("header.matches", "regex")]),
            (json!({"not": {"all": []}}), &[("not.all", "at least one")]),
            (
                json!({"all": [{"exists": "payload.a"}, {"matches": {"path": "payload.b", "regex": "(?P<"}}, {"any": [{"nope": 1}]}]}),
                &[("all[1].matches.regex", "regex"), ("all[2].any[0]", "unknown condition `nope`")],
            ),
        ];
        for (cond, expected) in cases {
            let errs = Condition::compile(cond).unwrap_err();
            let got: Vec<_> = errs.iter().map(|e| e.at.as_str()).collect();
            let want: Vec<_> = expected.iter().map(|(at, _)| *at).collect();
            assert_eq!(got, want, "{cond}: {errs:?}");
            for (err, (_, message)) in errs.iter().zip(expected.iter()) {
                assert!(err.message.contains(message), "{cond}: {err:?} should mention {message:?}");
            }
        }
    }

    #[test]
    fn documented_forms_compile() {
        for (form, _) in FORMS {
            let value: Value = serde_json::from_str(form).unwrap();
            Condition::compile(&value).unwrap_or_else(|e| panic!("{form}: {e:?}"));
        }
    }
}
