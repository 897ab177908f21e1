//! Runs a source's operations on a sample event exactly as the transformers do, without Kafka
//! or the store, and reports the event after each step and each stage.

use adapters::settings::Service;
use domain::{CompiledSource, Context, Event, Outcome, Stage};
use serde_json::{json, Value};

/// Pre then post, as the pipeline would; stops at a filter or an error.
pub(crate) fn run(source: &CompiledSource, mut event: Event, instance: &str) -> Value {
    let mut stages = Vec::new();
    for (stage, service) in [(Stage::Pre, Service::PreTransformer), (Stage::Post, Service::PostTransformer)] {
        let ctx = Context {
            stage,
            service: service.name(),
            instance,
            version: adapters::VERSION,
            config_version: source.version(),
            now: chrono::Utc::now(),
            input: None,
        };
        let mut steps = Vec::new();
        let result = source.run_observed(stage, &mut event, &ctx, |index, op, applied, event| {
            steps.push(if applied {
                json!({"index": index, "op": op, "event": event})
            } else {
                json!({"index": index, "op": op, "skipped": "its `when` condition did not hold"})
            });
        });
        match result {
            Ok(Outcome::Keep) => {
                match stage {
                    Stage::Pre => event.provenance.pre_config_version = Some(source.version()),
                    Stage::Post => event.provenance.post_config_version = Some(source.version()),
                }
                stages.push(json!({"stage": stage, "steps": steps, "event": event}));
            }
            Ok(Outcome::Dropped { index, op }) => {
                stages.push(json!({"stage": stage, "steps": steps, "filtered_by": {"index": index, "op": op}}));
                return json!({"outcome": "filtered", "config_version": source.version(), "stages": stages, "result": null});
            }
            Err(err) => {
                stages.push(json!({"stage": stage, "steps": steps, "error": {"index": err.index, "op": err.op, "message": err.message}}));
                return json!({
                    "outcome": "failed",
                    "on_error": source.config().on_error,
                    "config_version": source.version(),
                    "stages": stages,
                    "result": null,
                    "errors": [err.to_string()],
                });
            }
        }
    }
    json!({"outcome": "kept", "config_version": source.version(), "stages": stages, "result": event, "errors": []})
}
