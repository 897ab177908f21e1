//! `add_timestamp`: writes the processing time into the event.
//!
//! Params: `target` (a path, default `metadata.processed_at`), `format` (`rfc3339` (default),
//! `epoch_ms` or `epoch_s`).

use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::Value;

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "add_timestamp",
    "Write the processing time (rfc3339, epoch_ms or epoch_s) at a path.",
    r#"{"op": "add_timestamp", "params": {"target": "metadata.ingested_ms", "format": "epoch_ms"}}"#,
    struct Params {
    #[serde(default = "default_target")]
    target: String => ["path", optional("\"metadata.processed_at\""), "Where to write the time; a field below payload or metadata."],
    #[serde(default)]
    format: Format => ["enum: rfc3339|epoch_ms|epoch_s", optional("\"rfc3339\""), "rfc3339: UTC with milliseconds (`2024-07-20T12:34:56.789Z`); epoch_ms / epoch_s: an integer."],
    }
);

fn default_target() -> String {
    "metadata.processed_at".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Format {
    #[default]
    Rfc3339,
    EpochMs,
    EpochS,
}

#[derive(Debug)]
struct AddTimestamp {
    target: FieldPath,
    format: Format,
}

fn build(p: Params, problems: &mut Problems) -> Option<AddTimestamp> {
    let target = problems.path(&p.target, "target", Access::Field);
    Some(AddTimestamp { target: target?, format: p.format })
}

impl Operation for AddTimestamp {
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String> {
        let value = match self.format {
            Format::Rfc3339 => Value::from(ctx.now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            Format::EpochMs => Value::from(ctx.now.timestamp_millis()),
            Format::EpochS => Value::from(ctx.now.timestamp()),
        };
        self.target.set(event, value).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        // (params, input payload, path to read, expected value, or expected error)
        let cases: &[(Value, Value, &str, Result<Value, &str>)] = &[
            (json!(null), json!({}), "metadata.processed_at", Ok(json!("2024-07-20T12:34:56.789Z"))),
            (json!({"format": "epoch_ms"}), json!({}), "metadata.processed_at", Ok(json!(1721478896789_i64))),
            (json!({"target": "payload.ts", "format": "epoch_s"}), json!({}), "payload.ts", Ok(json!(1721478896))),
            (json!({"target": "payload.a.b"}), json!({"a": 1}), "", Err("cannot set `payload.a.b`")),
        ];
        check_values(&compile, cases);
    }

    #[test]
    fn bad_params_are_located() {
        let errs = compile(&json!({"target": "title"})).unwrap_err();
        assert_eq!(errs[0].at, "target");
        let errs = compile(&json!({"format": "iso"})).unwrap_err();
        assert!(errs[0].message.contains("unknown variant `iso`"), "{:?}", errs);
        assert!(compile(&json!({"targt": "payload.x"})).is_err());
        let errs = compile(&json!({"target": "received_at"})).unwrap_err();
        assert!(errs[0].message.contains("read-only"), "{:?}", errs);
        let errs = compile(&json!({"target": "metadata"})).unwrap_err();
        assert!(errs[0].message.contains("below its root"), "{:?}", errs);
    }
}
