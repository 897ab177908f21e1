//! `add_processing_info`: records which stage, service, instance, build and source-config version
//! processed the event, and when.
//!
//! Params: `target` (a path, default `metadata.processing_info`).

use chrono::SecondsFormat;
use serde_json::json;

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "add_processing_info",
    "Write {stage, service, instance, version, config_version, processed_at} at a path.",
    r#"{"op": "add_processing_info", "params": {"target": "metadata.processing_info"}}"#,
    struct Params {
    #[serde(default = "default_target")]
    target: String => ["path", optional("\"metadata.processing_info\""), "Where to write the object; a field below payload or metadata."],
    }
);

fn default_target() -> String {
    "metadata.processing_info".into()
}

#[derive(Debug)]
struct AddProcessingInfo {
    target: FieldPath,
}

fn build(p: Params, problems: &mut Problems) -> Option<AddProcessingInfo> {
    let target = problems.path(&p.target, "target", Access::Field);
    Some(AddProcessingInfo { target: target? })
}

impl Operation for AddProcessingInfo {
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String> {
        let info = json!({
            "stage": ctx.stage.as_str(),
            "service": ctx.service,
            "instance": ctx.instance,
            "version": ctx.version,
            "config_version": ctx.config_version,
            "processed_at": ctx.now.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        self.target.set(event, info).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let cases: &[(Value, Value, &str, Result<Value, &str>)] = &[
            (
                json!(null),
                json!({}),
                "metadata.processing_info",
                Ok(json!({"stage":"post","service":"test","instance":"i-1","version":"0.0.0",
                          "config_version":7,"processed_at":"2024-07-20T12:34:56.789Z"})),
            ),
            (json!({"target": "payload.info"}), json!({"x": "ü"}), "payload.x", Ok(json!("ü"))),
            (json!({"target": "payload.x.y"}), json!({"x": [1]}), "", Err("cannot set")),
        ];
        check_values(&compile, cases);
    }
}
