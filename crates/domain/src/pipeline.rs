//! Compiling a [`SourceConfig`] into runnable operations, and running them on events.
//!
//! A config is compiled when it is written and when a service loads it: every problem of every
//! operation is collected, each with its location (`pre[2].params.fields[0]`,
//! `post[1].when.all[0].matches.regex`), rather than stopping at the first.
//!
//! Running a stage applies its operations in order; an operation whose `when` does not hold is
//! skipped. The first error stops the stage, and so does a `filter` that drops the event.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::condition::Condition;
use crate::event::Event;
use crate::operations::{self, Effect, Operation};
use crate::source::{OperationSpec, SourceConfig};

/// Which list of a source's operations runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Pre,
    Post,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pre => "pre",
            Stage::Post => "post",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What operations may know about where and when they run.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub stage: Stage,
    pub service: &'a str,
    pub instance: &'a str,
    /// The service's build version.
    pub version: &'a str,
    /// The version of the source config being applied.
    pub config_version: u64,
    pub now: DateTime<Utc>,
    /// The Kafka position of the message being processed; `None` in previews.
    pub input: Option<Input<'a>>,
}

/// Where the message being processed was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A problem in a source config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// e.g. `pre[2].params.target` or `post[0].op`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// An operation failed on an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}[{index}] {op}: {message}")]
pub struct RunError {
    pub stage: Stage,
    pub index: usize,
    pub op: &'static str,
    pub message: String,
}

/// What became of an event after a stage ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    /// An operation dropped it on purpose.
    Dropped { index: usize, op: &'static str },
}

/// A source config whose operations are compiled and ready to run.
#[derive(Debug)]
pub struct CompiledSource {
    config: SourceConfig,
    pre: Vec<Step>,
    post: Vec<Step>,
}

#[derive(Debug)]
struct Step {
    name: &'static str,
    op: Box<dyn Operation>,
    when: Option<Condition>,
}

impl CompiledSource {
    /// Compiles every operation of the config.
    ///
    /// # Errors
    /// Every problem found, each located.
    pub fn compile(config: SourceConfig) -> Result<CompiledSource, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let pre = compile_list(Stage::Pre, &config.pre, &mut errors);
        let post = compile_list(Stage::Post, &config.post, &mut errors);
        if let Err(message) = config.native.validate() {
            errors.push(ConfigError { location: "native".into(), message });
        }
        if errors.is_empty() {
            Ok(CompiledSource { config, pre, post })
        } else {
            Err(errors)
        }
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    pub fn version(&self) -> u64 {
        self.config.version
    }

    /// Runs the stage's operations on the event, in order.
    ///
    /// # Errors
    /// The first operation that failed; the event is then partly transformed and should be
    /// discarded in favour of the original.
    pub fn run(&self, stage: Stage, event: &mut Event, ctx: &Context<'_>) -> Result<Outcome, RunError> {
        self.run_observed(stage, event, ctx, |_, _, _, _| {})
    }

    /// Like [`CompiledSource::run`], calling `observe(index, op, applied, event)` after each
    /// step (`applied` is false when its `when` condition skipped it): what a preview shows.
    ///
    /// # Errors
    /// See [`CompiledSource::run`].
    pub fn run_observed(
        &self,
        stage: Stage,
        event: &mut Event,
        ctx: &Context<'_>,
        mut observe: impl FnMut(usize, &'static str, bool, &Event),
    ) -> Result<Outcome, RunError> {
        let steps = match stage {
            Stage::Pre => &self.pre,
            Stage::Post => &self.post,
        };
        for (index, step) in steps.iter().enumerate() {
            if step.when.as_ref().is_some_and(|c| !c.eval(event)) {
                observe(index, step.name, false, event);
                continue;
            }
            match step.op.apply(event, ctx) {
                Ok(Effect::Continue) => observe(index, step.name, true, event),
                Ok(Effect::Drop) => return Ok(Outcome::Dropped { index, op: step.name }),
                Err(message) => return Err(RunError { stage, index, op: step.name, message }),
            }
        }
        Ok(Outcome::Keep)
    }
}

fn compile_list(stage: Stage, specs: &[OperationSpec], errors: &mut Vec<ConfigError>) -> Vec<Step> {
    let mut steps = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let located = |base: String, at: String| if at.is_empty() { base } else { format!("{base}.{at}") };
        let op = match operations::lookup(&spec.op) {
            None => {
                let known: Vec<_> = operations::catalog().iter().map(|k| k.name).collect();
                errors.push(ConfigError {
                    location: format!("{stage}[{i}].op"),
                    message: format!("unknown operation `{}`; known: {}", spec.op, known.join(", ")),
                });
                None
            }
            Some(kind) => match (kind.compile)(&spec.params) {
                Ok(op) => Some((kind.name, op)),
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|p| ConfigError {
                        location: located(format!("{stage}[{i}].params"), p.at),
                        message: p.message,
                    }));
                    None
                }
            },
        };
        let when = match spec.when.as_ref().map(Condition::compile) {
            None => Ok(None),
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(problems)) => {
                errors.extend(problems.into_iter().map(|p| ConfigError {
                    location: located(format!("{stage}[{i}].when"), p.at),
                    message: p.message,
                }));
                Err(())
            }
        };
        if let (Some((name, op)), Ok(when)) = (op, when) {
            steps.push(Step { name, op, when });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::{context, event};
    use serde_json::json;

    fn config(v: serde_json::Value) -> SourceConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn runs_pre_then_post() {
        let c = CompiledSource::compile(config(json!({
            "source": "jira",
            "pre": [{"op": "add_timestamp"}],
            "post": [{"op": "add_processing_info"}],
        })))
        .unwrap();
        let mut e = event(json!({"title": "x"}));
        assert_eq!(c.run(Stage::Pre, &mut e, &context()).unwrap(), Outcome::Keep);
        assert!(e.metadata.contains_key("processed_at"));
        assert!(!e.metadata.contains_key("processing_info"));
        c.run(Stage::Post, &mut e, &context()).unwrap();
        assert_eq!(e.metadata["processing_info"]["stage"], "post");
        assert_eq!(e.payload["title"], "x");
    }

    #[test]
    fn collects_every_problem_with_its_location() {
        let errs = CompiledSource::compile(config(json!({
            "source": "jira",
            "pre": [{"op": "add_timestamp"}, {"op": "nope"}, {"op": "add_timestamp", "params": {"target": "x"}}],
            "post": [{"op": "add_processing_info", "params": {"bogus": 1}}],
        })))
        .unwrap_err();
        let locations: Vec<_> = errs.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locations, ["pre[1].op", "pre[2].params.target", "post[0].params.bogus"]);
        assert!(errs[0].message.contains("unknown operation `nope`"));
        assert!(errs[2].message.contains("bogus"));
    }

    #[test]
    fn locates_problems_in_conditions_and_params() {
        let errs = CompiledSource::compile(config(json!({
            "source": "jira",
            "pre": [
                {"op": "add_timestamp", "when": {"all": [{"matches": {"path": "payload.a", "regex": "("}}]}},
                {"op": "mask_field", "params": {"fields": ["payload.a", "title", "id"], "mode": "sha256", "salt": "s"}},
                {"op": "nope", "when": {"bogus": 1}},
            ],
        })))
        .unwrap_err();
        let locations: Vec<_> = errs.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(
            locations,
            ["pre[0].when.all[0].matches.regex", "pre[1].params.fields[1]", "pre[1].params.fields[2]", "pre[2].op", "pre[2].when"]
        );
        assert!(errs[2].message.contains("read-only"), "{errs:?}");
    }

    #[test]
    fn skips_operations_whose_condition_does_not_hold() {
        let c = CompiledSource::compile(config(json!({
            "source": "jira",
            "pre": [
                {"op": "insert_field", "params": {"target": "payload.a", "value": 1}, "when": {"source": "github"}},
                {"op": "insert_field", "params": {"target": "payload.b", "value": 2}, "when": {"not": {"exists": "payload.a"}}},
                {"op": "filter", "params": {"drop_when": {"equals": {"path": "payload.b", "value": 3}}}},
                {"op": "insert_field", "params": {"target": "payload.b", "value": 3}},
                {"op": "filter", "params": {"drop_when": {"equals": {"path": "payload.b", "value": 3}}}},
                {"op": "insert_field", "params": {"target": "payload.c", "value": 4}},
            ],
        })))
        .unwrap();
        let mut e = event(json!({}));
        assert_eq!(c.run(Stage::Pre, &mut e, &context()).unwrap(), Outcome::Dropped { index: 4, op: "filter" });
        assert_eq!(serde_json::Value::Object(e.payload.into()), json!({"b": 3}));
    }

    /// Every operation honours `when`: with one that does not hold, the catalog example leaves
    /// the event as it was; with one that holds, it runs.
    #[test]
    fn every_operation_honours_its_condition() {
        let payload = json!({"title": "T", "status": "draft", "created": "20/07/2024 14:34", "after": {"a": 1},
            "reporter": {"email": "a@b.co"}, "project": "P", "tenant": "acme", "internal": {"trace_id": "x"},
            "priority": "2", "estimate_h": "1.5", "id": 7, "fields": {"a": {"b": 1}}, "internal_notes": "n", "summary": "s",
            "owner": {"email": "o@b.co"}, "ssn": "123-45-6789"});
        let mut original = event(payload);
        original.metadata.insert("created_at".into(), json!("2024-07-20T12:34:56Z"));
        original.routing.set_header("x-internal-trace", "t".into());
        for kind in operations::catalog() {
            let mut spec: serde_json::Value = serde_json::from_str(kind.example).unwrap();
            spec["when"] = json!({"source": "nope"});
            let c = CompiledSource::compile(config(json!({"source": "s", "pre": [spec.clone()]}))).unwrap();
            let mut e = original.clone();
            assert_eq!(c.run(Stage::Pre, &mut e, &context()), Ok(Outcome::Keep), "{}", kind.name);
            assert_eq!(e, original, "{} ran although its condition did not hold", kind.name);

            spec["when"] = json!({"source": "s"});
            let c = CompiledSource::compile(config(json!({"source": "s", "pre": [spec]}))).unwrap();
            let mut e = original.clone();
            let outcome = c.run(Stage::Pre, &mut e, &context());
            assert!(outcome != Ok(Outcome::Keep) || e != original, "{} did nothing: {outcome:?}", kind.name);
        }
    }

    #[test]
    fn reports_the_failing_step() {
        let c = CompiledSource::compile(config(json!({
            "source": "jira",
            "pre": [{"op": "add_timestamp"}, {"op": "add_timestamp", "params": {"target": "payload.a.b"}}],
        })))
        .unwrap();
        let err = c.run(Stage::Pre, &mut event(json!({"a": "scalar"})), &context()).unwrap_err();
        assert_eq!((err.stage, err.index, err.op), (Stage::Pre, 1, "add_timestamp"));
    }
}
