//! The operation catalog. Each operation lives in one file holding its parameters (with
//! `deny_unknown_fields`), their documentation, an example, its compiled form, and its
//! table-driven tests; adding an operation is adding that file and naming it in [`catalog`].
//!
//! Operations address the event through [paths](crate::path). Every operation also takes an
//! optional [`when`](crate::condition) (on the [`OperationSpec`](crate::OperationSpec), not in
//! its params): when it does not hold, the operation is skipped.
//!
//! Conventions shared by the operations:
//! - An operation that changes an existing value (`cast`, `mask_field`, `timestamp_convert`,
//!   `flatten`, `replace_field`, `hoist_field`) does nothing when the path is missing; one that
//!   needs a value to read (`copy_field`, `move_field`, `extract_field`, `set_key`,
//!   `header_from`, `validate.required`) fails on the event.
//! - Values become text (keys, headers, topic parts, hashes) as the string itself for strings
//!   and compact JSON for anything else.

use std::fmt;

use regex::Regex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::condition::Condition;
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

/// Declares an operation's `Params` — a `serde` struct with `deny_unknown_fields` — and its
/// documentation from one list, so the catalog (`GET /v1/operations`) names exactly the fields
/// the operation accepts. Each field: its serde attributes, `name: Type => [type for the docs,
/// required | optional("default as JSON"), description]`. That `required` matches what parsing
/// demands is tested (`documented_requirements_hold`).
macro_rules! params {
    (struct $name:ident { $( $(#[$meta:meta])* $field:ident : $ty:ty => [$doc_ty:literal, $req:ident $(($default:literal))?, $description:literal] ),* $(,)? }) => {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $( $(#[$meta])* $field: $ty, )*
        }

        impl $name {
            /// The parameters' documentation, in declaration order.
            const DOCS: &'static [$crate::operations::ParamDoc] = &[
                $( $crate::operations::ParamDoc {
                    name: stringify!($field),
                    ty: $doc_ty,
                    required: params!(@required $req),
                    default: params!(@default $($default)?),
                    description: $description,
                }, )*
            ];
        }
    };
    (@required required) => { true };
    (@required optional) => { false };
    (@default) => { None };
    (@default $default:literal) => { Some($default) };
}

/// Declares an operation: its catalog entry (`KIND`: name, summary, example), its `Params`
/// (see [`params!`]), and `compile`, which parses the params and runs the operation's own
/// `build` (see [`compile_with`]).
macro_rules! operation {
    ($name:literal, $summary:literal, $example:literal, struct Params { $($fields:tt)* }) => {
        pub(super) const KIND: $crate::operations::OperationKind = $crate::operations::OperationKind {
            name: $name,
            summary: $summary,
            params: Params::DOCS,
            example: $example,
            compile,
        };

        params! { struct Params { $($fields)* } }

        fn compile(params: &serde_json::Value) -> $crate::operations::Compiled {
            super::compile_with(params, build)
        }
    };
}

/// An operation's `table` test: rows of `(params, input payload, expected payload or error
/// fragment)`, each compiled by the file's `compile` and checked by [`testing::check_payloads`].
#[cfg(test)]
macro_rules! payload_table {
    ($($row:expr),* $(,)?) => {
        #[test]
        fn table() {
            $crate::operations::testing::check_payloads(&compile, &[$($row),*]);
        }
    };
}

mod add_processing_info;
mod add_timestamp;
mod cast;
mod classify;
mod copy_field;
mod drop_headers;
mod extract_field;
mod filter;
mod flatten;
mod header_from;
mod hoist_field;
mod insert_field;
mod insert_header;
mod mask_field;
mod move_field;
mod replace_field;
mod route;
mod set_key;
mod timestamp_convert;
mod validate;

/// Every operation metastream knows, by name.
pub fn catalog() -> &'static [OperationKind] {
    static CATALOG: &[OperationKind] = &[
        add_timestamp::KIND,
        add_processing_info::KIND,
        insert_field::KIND,
        replace_field::KIND,
        copy_field::KIND,
        move_field::KIND,
        mask_field::KIND,
        cast::KIND,
        timestamp_convert::KIND,
        flatten::KIND,
        extract_field::KIND,
        hoist_field::KIND,
        set_key::KIND,
        insert_header::KIND,
        drop_headers::KIND,
        header_from::KIND,
        filter::KIND,
        route::KIND,
        classify::KIND,
        validate::KIND,
    ];
    CATALOG
}

/// Looks an operation up by its configured name.
pub fn lookup(name: &str) -> Option<&'static OperationKind> {
    catalog().iter().find(|k| k.name == name)
}

/// The catalog as JSON for `GET /v1/operations`:
/// `{"operations": [{name, summary, params: [ParamDoc…], example}], "conditions": [{example,
/// description}], "paths": "<syntax>"}`, where each `example` is a parsed JSON value.
pub fn describe_catalog() -> Value {
    let operations: Vec<Value> = catalog()
        .iter()
        .map(|k| {
            json!({
                "name": k.name,
                "summary": k.summary,
                "params": k.params,
                "example": serde_json::from_str::<Value>(k.example).expect("examples are JSON (tested)"),
            })
        })
        .collect();
    let conditions: Vec<Value> = crate::condition::FORMS
        .iter()
        .map(|(form, description)| {
            json!({
                "example": serde_json::from_str::<Value>(form).expect("forms are JSON (tested)"),
                "description": description,
            })
        })
        .collect();
    json!({
        "operations": operations,
        "conditions": conditions,
        "paths": PATH_SYNTAX,
    })
}

/// The path syntax in one paragraph, for the catalog endpoint (the long form is in
/// [`crate::path`]).
pub const PATH_SYNTAX: &str = "A path starts at `payload` or `metadata` and descends with `.name` \
into objects and `[n]` into arrays (from 0): `payload.owners[0].email`. Quote a name holding `.` \
or `[`: `payload.\"a.b\"`. `payload` and `metadata` alone address the whole object. `id`, \
`source` and `received_at` address the envelope and are read-only.";

/// An entry of the catalog: how to compile an operation from its parameters, and its
/// documentation.
pub struct OperationKind {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamDoc],
    /// A complete `OperationSpec` using the operation, as JSON; it compiles (tested).
    pub example: &'static str,
    /// Compiles parameters into a runnable operation, or reports every problem found.
    pub compile: fn(&Value) -> Compiled,
}

/// What compiling an operation's parameters gives: the operation, or every problem found.
pub type Compiled = Result<Box<dyn Operation>, Vec<ParamError>>;

/// Compiles an operation whose `build` reads its typed params: the params parsed (refused
/// with their located errors), then `build` records every problem it finds and makes the
/// operation when there is none. Every operation's `compile` is this with its own `build`.
fn compile_with<P: DeserializeOwned, O: Operation + 'static>(params: &Value, build: fn(P, &mut Problems) -> Option<O>) -> Compiled {
    let p: P = parse_params(params)?;
    let mut problems = Problems::default();
    let op = build(p, &mut problems);
    problems.done()?;
    Ok(Box::new(op.expect("an operation is built when nothing is wrong")))
}

impl fmt::Debug for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationKind").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The documentation of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamDoc {
    pub name: &'static str,
    /// e.g. `path`, `string`, `enum: rfc3339|epoch_ms|epoch_s`, `list<path>`,
    /// `map<string,string>`, `json`, `condition`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub required: bool,
    /// The default as written in JSON, when there is one.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

/// A compiled operation, ready to run on events.
pub trait Operation: Send + Sync + fmt::Debug {
    /// Applies the operation to the event in place.
    ///
    /// # Errors
    /// A message saying why the operation cannot be applied to this event.
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String>;
}

/// What the pipeline does after an operation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Continue,
    /// The event is dropped on purpose (a filter), not an error.
    Drop,
}

/// A problem with an operation's parameters, located relative to `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// e.g. `target` or `fields[0]`; empty for the params object itself.
    pub at: String,
    pub message: String,
}

impl ParamError {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError { at: at.into(), message: message.into() }
    }
}

/// Deserializes an operation's parameters; absent parameters mean `{}`. A type error is
/// located at the parameter it is about (`fields[1]`).
fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, Vec<ParamError>> {
    let empty = Value::Object(serde_json::Map::new());
    let value = match params {
        Value::Null => &empty,
        Value::Object(_) => params,
        other => {
            let kind = crate::path::kind(other);
            return Err(vec![ParamError::new("", format!("params must be an object, got {kind}"))]);
        }
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        vec![ParamError::new(at, e.into_inner().to_string())]
    })
}

/// Compiles a user-given regex with a bound on its compiled size.
///
/// # Errors
/// The regex crate's message when the pattern is invalid or too big.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

/// How an operation uses a path, which decides what paths it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Any path, envelope fields and roots included.
    Read,
    /// Not an envelope field; `payload` and `metadata` themselves are fine.
    Write,
    /// A field below `payload` or `metadata`.
    Field,
}

/// Collects the problems of an operation's parameters while they are compiled one by one.
#[derive(Debug, Default)]
struct Problems(Vec<ParamError>);

impl Problems {
    fn push(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(ParamError::new(at, message));
    }

    /// The paths of a list param that parse with `access`; each problem is located at `at[i]`.
    fn paths(&mut self, texts: &[String], at: &str, access: Access) -> Vec<FieldPath> {
        texts.iter().enumerate().filter_map(|(i, t)| self.path(t, &format!("{at}[{i}]"), access)).collect()
    }

    fn path(&mut self, text: &str, at: &str, access: Access) -> Option<FieldPath> {
        let path = match FieldPath::parse(text) {
            Ok(p) => p,
            Err(e) => {
                self.push(at, e.0);
                return None;
            }
        };
        if access != Access::Read && path.is_read_only() {
            self.push(at, format!("`{text}` is read-only"));
            return None;
        }
        if access == Access::Field && path.is_root() {
            self.push(at, format!("path `{text}` must name a field below its root"));
            return None;
        }
        Some(path)
    }

    fn regex(&mut self, pattern: &str, at: &str) -> Option<Regex> {
        compile_regex(pattern).map_err(|e| self.push(at, e)).ok()
    }

    fn condition(&mut self, value: &Value, at: &str) -> Option<Condition> {
        match Condition::compile(value) {
            Ok(c) => Some(c),
            Err(errors) => {
                for e in errors {
                    let loc = if e.at.is_empty() { at.to_owned() } else { format!("{at}.{}", e.at) };
                    self.push(loc, e.message);
                }
                None
            }
        }
    }

    /// `Ok` when no problem was found; every problem otherwise.
    fn done(self) -> Result<(), Vec<ParamError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// What `insert_field` and `insert_header` write: a static value or an attribute.
#[derive(Debug)]
enum Source<V> {
    Value(V),
    Attribute(Attribute),
}

impl<V> Source<V> {
    /// The one of `value` and `attribute` given; a problem when both or neither are.
    fn exactly_one(value: Option<V>, attribute: Option<Attribute>, problems: &mut Problems) -> Option<Source<V>> {
        match (value, attribute) {
            (Some(v), None) => Some(Source::Value(v)),
            (None, Some(a)) => Some(Source::Attribute(a)),
            _ => {
                problems.push("", "needs exactly one of `value` and `attribute`");
                None
            }
        }
    }
}

/// An attribute of the event or of its Kafka position, for `insert_field` and `insert_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Attribute {
    Source,
    Id,
    ReceivedAt,
    Topic,
    Partition,
    Offset,
}

impl Attribute {
    /// The attribute's value: strings for source, id, received_at and topic; numbers for
    /// partition and offset.
    fn value(self, event: &Event, ctx: &Context<'_>) -> Result<Value, String> {
        let input = || ctx.input.ok_or_else(|| format!("`{}` is unknown: the event has no Kafka position here", self.name()));
        Ok(match self {
            Attribute::Source => Value::from(event.source.as_str()),
            Attribute::Id => Value::from(event.id.as_str()),
            Attribute::ReceivedAt => match &event.received_at {
                Some(t) => Value::from(t.as_str()),
                None => return Err("the event has no `received_at`".into()),
            },
            Attribute::Topic => Value::from(input()?.topic),
            Attribute::Partition => Value::from(input()?.partition),
            Attribute::Offset => Value::from(input()?.offset),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Attribute::Source => "source",
            Attribute::Id => "id",
            Attribute::ReceivedAt => "received_at",
            Attribute::Topic => "topic",
            Attribute::Partition => "partition",
            Attribute::Offset => "offset",
        }
    }
}

/// The value at `path` as text (see the module docs), or an error naming the missing path.
fn text_at(path: &FieldPath, event: &Event, out: &mut String) -> Result<(), String> {
    match path.get(event) {
        Some(v) => {
            v.write_text(out);
            Ok(())
        }
        None => Err(format!("`{path}` is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::OperationSpec;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = catalog().iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), catalog().len());
    }

    #[test]
    fn every_example_compiles_and_uses_documented_params() {
        for kind in catalog() {
            let spec: OperationSpec = serde_json::from_str(kind.example)
                .unwrap_or_else(|e| panic!("{}: example is not an OperationSpec: {e}", kind.name));
            assert_eq!(spec.op, kind.name, "{}: example names another op", kind.name);
            if let Err(e) = (kind.compile)(&spec.params) {
                panic!("{}: example does not compile: {e:?}", kind.name);
            }
            if let Some(when) = &spec.when {
                Condition::compile(when).unwrap_or_else(|e| panic!("{}: example `when`: {e:?}", kind.name));
            }
            if let Value::Object(params) = &spec.params {
                for key in params.keys() {
                    assert!(
                        kind.params.iter().any(|p| p.name == key),
                        "{}: example uses undocumented param `{key}`",
                        kind.name
                    );
                }
            }
            for doc in kind.params {
                assert!(!doc.description.is_empty() && !doc.ty.is_empty(), "{}.{}", kind.name, doc.name);
                assert!(!(doc.required && doc.default.is_some()), "{}.{}: required with a default", kind.name, doc.name);
            }
            assert!(!kind.summary.is_empty());
        }
    }

    /// The docs say which params are required; parsing must agree: an example without a
    /// required param is refused as missing it, and one without an optional param is not (an
    /// optional param may still be demanded by another's value, as `salt` by `mode: sha256`:
    /// that is the operation's own check, with its own message).
    #[test]
    fn documented_requirements_hold() {
        let mut checked = 0;
        for kind in catalog() {
            let spec: OperationSpec = serde_json::from_str(kind.example).unwrap();
            let Value::Object(params) = &spec.params else { continue };
            for doc in kind.params.iter().filter(|d| params.contains_key(d.name)) {
                let mut without = params.clone();
                without.remove(doc.name);
                let missing = format!("missing field `{}`", doc.name);
                let refused_for_it = match (kind.compile)(&Value::Object(without)) {
                    Ok(_) => false,
                    Err(errors) => errors.iter().any(|e| e.message.contains(&missing)),
                };
                assert_eq!(refused_for_it, doc.required, "{}.{}: documented required = {}", kind.name, doc.name, doc.required);
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} params checked: the examples should use most params");
    }

    #[test]
    fn the_catalog_describes_itself() {
        let doc = describe_catalog();
        let ops = doc["operations"].as_array().unwrap();
        assert_eq!(ops.len(), catalog().len());
        let ts = ops.iter().find(|o| o["name"] == "add_timestamp").unwrap();
        assert_eq!(ts["params"][1]["name"], "format");
        assert_eq!(ts["params"][1]["type"], "enum: rfc3339|epoch_ms|epoch_s");
        assert_eq!(ts["params"][1]["default"], "\"rfc3339\"");
        assert_eq!(ts["example"]["op"], "add_timestamp");
        assert!(!doc["conditions"].as_array().unwrap().is_empty());
        assert!(doc["paths"].as_str().unwrap().contains("read-only"));
    }

    #[test]
    fn type_errors_are_located_at_their_param() {
        let errs = parse_params::<add_params::P>(&serde_json::json!({"fields": ["a", 5]})).unwrap_err();
        assert_eq!(errs[0].at, "fields[1]");
        assert!(errs[0].message.contains("invalid type: integer `5`"), "{errs:?}");
        let errs = parse_params::<add_params::P>(&serde_json::json!({"fieldz": []})).unwrap_err();
        assert!(errs[0].message.contains("unknown field `fieldz`"), "{errs:?}");
        assert_eq!(errs[0].at, "fieldz");
        let errs = parse_params::<add_params::P>(&serde_json::json!([1])).unwrap_err();
        assert_eq!(errs[0], ParamError::new("", "params must be an object, got an array"));
    }

    mod add_params {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct P {
            #[allow(dead_code)]
            pub fields: Vec<String>,
        }
    }
}

/// Helpers for the operations' table-driven tests.
#[cfg(test)]
pub(crate) mod testing {
    pub use serde_json::{json, Value};

    use super::*;
    use crate::pipeline::{Input, Stage};
    use chrono::TimeZone;

    pub fn event(payload: Value) -> Event {
        Event::from_client_value(serde_json::json!({"id":"1","source":"s","payload":payload})).unwrap()
    }

    /// An event with the given payload and metadata.
    pub fn event_with(payload: Value, metadata: Value) -> Event {
        Event::from_client_value(serde_json::json!({"id":"1","source":"s","payload":payload,"metadata":metadata}))
            .unwrap()
    }

    /// A post-stage context at 2024-07-20T12:34:56.789Z, processing offset 42 of partition 3
    /// of `pre_process_meta_data_events`.
    pub fn context() -> Context<'static> {
        let now = chrono::Utc.with_ymd_and_hms(2024, 7, 20, 12, 34, 56).unwrap()
            + chrono::Duration::milliseconds(789);
        Context {
            stage: Stage::Post,
            service: "test",
            instance: "i-1",
            version: "0.0.0",
            config_version: 7,
            now,
            input: Some(Input { topic: "pre_process_meta_data_events", partition: 3, offset: 42 }),
        }
    }

    /// Compiles `params` and applies the operation to `event`.
    pub fn run(
        compile: &dyn Fn(&Value) -> Compiled,
        params: &Value,
        event: Event,
    ) -> Result<Event, String> {
        run_in(compile, params, event, &context())
    }

    /// Like [`run`], with a given context.
    pub fn run_in(
        compile: &dyn Fn(&Value) -> Compiled,
        params: &Value,
        mut event: Event,
        ctx: &Context<'_>,
    ) -> Result<Event, String> {
        let op = compile(params).map_err(|e| format!("{e:?}"))?;
        op.apply(&mut event, ctx)?;
        Ok(event)
    }

    /// Runs table rows of `(params, input payload, expected payload or error fragment)`.
    #[track_caller]
    pub fn check_payloads(
        compile: &dyn Fn(&Value) -> Compiled,
        cases: &[(Value, Value, Result<Value, &str>)],
    ) {
        for (params, payload, expected) in cases {
            check_outcome(format_args!("{params} on {payload}"), run(compile, params, event(payload.clone())), expected, |e, want| {
                assert_eq!(&Value::Object(e.payload.into()), want, "{params} on {payload}");
            });
        }
    }

    /// Runs table rows of `(params, input payload, path to read, expected value there or error
    /// fragment)`.
    #[track_caller]
    pub fn check_values(compile: &dyn Fn(&Value) -> Compiled, cases: &[(Value, Value, &str, Result<Value, &str>)]) {
        for (params, payload, path, expected) in cases {
            check_outcome(params, run(compile, params, event(payload.clone())), expected, |e, v| {
                assert_eq!(FieldPath::parse(path).unwrap().get(&e).map(|v| v.to_value()).as_ref(), Some(v), "{params}");
            });
        }
    }

    /// Asserts what an operation made of an event: with an expected value, `check` compares
    /// them; an expected error is a fragment of the message; anything else fails, naming `label`.
    #[track_caller]
    pub fn check_outcome<W: std::fmt::Debug>(
        label: impl std::fmt::Display,
        got: Result<Event, String>,
        want: &Result<W, &str>,
        check: impl FnOnce(Event, &W),
    ) {
        match (got, want) {
            (Ok(e), Ok(want)) => check(e, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{label}: {got}"),
            (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
        }
    }

    /// Asserts that compiling `params` fails with problems at exactly `expected` locations, each
    /// message containing its fragment.
    #[track_caller]
    pub fn check_errors(
        compile: &dyn Fn(&Value) -> Compiled,
        cases: &[(Value, &[(&str, &str)])],
    ) {
        for (params, expected) in cases {
            let errs = match compile(params) {
                Ok(op) => panic!("{params}: compiled to {op:?}, expected errors"),
                Err(errs) => errs,
            };
            let got: Vec<_> = errs.iter().map(|e| e.at.as_str()).collect();
            let want: Vec<_> = expected.iter().map(|(at, _)| *at).collect();
            assert_eq!(got, want, "{params}: {errs:?}");
            for (err, (_, message)) in errs.iter().zip(expected.iter()) {
                assert!(err.message.contains(message), "{params}: {err:?} should mention {message:?}");
            }
        }
    }
}
