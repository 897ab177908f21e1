//! `insert_field`: writes a static value, or an attribute of the event or of its Kafka
//! position, at a path (replacing what is there).
//!
//! Params: `target` (a field path), and exactly one of `value` (any JSON, `null` included) or
//! `attribute` (`source`, `id`, `received_at`, `topic`, `partition`, `offset`). `topic`,
//! `partition` and `offset` come from the Kafka message being processed: without one (a
//! preview) they fail, as does `received_at` on an event the gateway has not stamped.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Access, Attribute, Effect, Operation, Problems, Source};
use crate::event::Event;
use crate::path::FieldPath;
use crate::pipeline::Context;

operation!(
    "insert_field",
    "Write a static value, or an event attribute (source, id, received_at, topic, partition, offset), at a path.",
    r#"{"op": "insert_field", "params": {"target": "metadata.ingest_offset", "attribute": "offset"}}"#,
    struct Params {
    target: String => ["path", required, "Where to write; a field below payload or metadata."],
    #[serde(default, deserialize_with = "present")]
    value: Option<Value> => ["json", optional, "The value to write (null included). Exactly one of value and attribute."],
    #[serde(default)]
    attribute: Option<Attribute> => ["enum: source|id|received_at|topic|partition|offset", optional, "An attribute to write instead of a value; topic, partition and offset are the Kafka position being processed."],
    }
);

/// Keeps an explicit `null` as `Some(Value::Null)`, so "absent" and "null" differ.
pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug)]
struct InsertField {
    target: FieldPath,
    source: Source<Value>,
}

fn build(p: Params, problems: &mut Problems) -> Option<InsertField> {
    let target = problems.path(&p.target, "target", Access::Field);
    let source = Source::exactly_one(p.value, p.attribute, problems);
    Some(InsertField { target: target?, source: source? })
}

impl Operation for InsertField {
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String> {
        let value = match &self.source {
            Source::Value(v) => v.clone(),
            Source::Attribute(a) => a.value(event, ctx)?,
        };
        self.target.set(event, value).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    payload_table! {
        (json!({"target": "payload.a", "value": "ünï"}), json!({}), Ok(json!({"a": "ünï"}))),
        (json!({"target": "payload.a", "value": null}), json!({"a": 1}), Ok(json!({"a": null}))),
        (json!({"target": "payload.a.b", "value": {"c": [1]}}), json!({}), Ok(json!({"a": {"b": {"c": [1]}}}))),
        (json!({"target": "payload.n", "value": u64::MAX}), json!({}), Ok(json!({"n": u64::MAX}))),
        (json!({"target": "payload.l[1]", "value": 0}), json!({"l": [1, 2]}), Ok(json!({"l": [1, 0]}))),
        (json!({"target": "payload.l[2]", "value": 0}), json!({"l": [1, 2]}), Err("cannot set `payload.l[2]`")),
        (json!({"target": "payload.s.x", "value": 0}), json!({"s": "str"}), Err("cannot set")),
        (json!({"target": "payload.src", "attribute": "source"}), json!({}), Ok(json!({"src": "s"}))),
        (json!({"target": "payload.id", "attribute": "id"}), json!({}), Ok(json!({"id": "1"}))),
        (json!({"target": "payload.t", "attribute": "topic"}), json!({}), Ok(json!({"t": "pre_process_meta_data_events"}))),
        (json!({"target": "payload.p", "attribute": "partition"}), json!({}), Ok(json!({"p": 3}))),
        (json!({"target": "payload.o", "attribute": "offset"}), json!({}), Ok(json!({"o": 42}))),
        (json!({"target": "payload.r", "attribute": "received_at"}), json!({}), Err("no `received_at`")),
    }

    #[test]
    fn received_at_and_kafka_position() {
        let mut e = event(json!({}));
        e.received_at = Some("2024-01-01T00:00:00Z".into());
        let e = run(&compile, &json!({"target": "metadata.r", "attribute": "received_at"}), e).unwrap();
        assert_eq!(e.metadata["r"], "2024-01-01T00:00:00Z");

        let preview = crate::pipeline::Context { input: None, ..context() };
        let err = run_in(&compile, &json!({"target": "payload.o", "attribute": "offset"}), event(json!({})), &preview)
            .unwrap_err();
        assert!(err.contains("`offset` is unknown"), "{err}");
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"target": "x", "value": 1}), &[("target", "must start with")]),
                (json!({"target": "id", "value": 1}), &[("target", "read-only")]),
                (json!({"target": "payload.a"}), &[("", "exactly one of `value` and `attribute`")]),
                (json!({"target": "nope", "value": 1, "attribute": "id"}), &[("target", "must start"), ("", "exactly one")]),
                (json!({"target": "payload.a", "attribute": "host"}), &[("attribute", "unknown variant `host`")]),
                (json!({"value": 1}), &[("", "missing field `target`")]),
            ],
        );
    }
}
