//! What someone who may read a source is shown of a message that did not pass through its
//! operations — a dead letter, taken before its `mask_field` ran: the fields the source's own
//! `mask_field` operations hide, and those its `classify` rules recognise by name or by value,
//! each replaced with [`MASKED`]. No more than the pipeline's output would show downstream,
//! whatever stage the message stopped at. (A key with only a `meta:` scope is shown no payload
//! at all; an `admin` key is shown the message as it is, to fix and replay it.)

use regex::RegexSet;
use serde_json::Value;

use crate::path::{descend_mut, FieldPath, Root};
use crate::source::{OperationSpec, SourceConfig};

/// What a masked value is replaced with.
pub const MASKED: &str = "****";

/// One `classify` operation's rules, as far as masking needs them.
#[derive(Debug)]
struct Recognise {
    scope: FieldPath,
    names: Option<RegexSet>,
    values: Option<RegexSet>,
}

/// The masking a source's configuration asks for.
#[derive(Debug, Default)]
pub struct ViewMask {
    fields: Vec<FieldPath>,
    recognise: Vec<Recognise>,
}

impl ViewMask {
    /// The fields `config`'s `mask_field` operations name and its `classify` rules, pre and
    /// post. Parameters that do not parse (a stored config is validated; this never fails) are
    /// passed over.
    pub fn of(config: &SourceConfig) -> ViewMask {
        let mut mask = ViewMask::default();
        for spec in config.pre.iter().chain(&config.post) {
            match spec.op.as_str() {
                "mask_field" => mask.fields.extend(paths(spec, "fields")),
                "classify" => mask.recognise.extend(recognise(spec)),
                _ => {}
            }
        }
        mask
    }

    /// Whether it masks nothing.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.recognise.is_empty()
    }

    /// Masks `message` (an event as the topics carry it: `payload` and `metadata` objects at
    /// the top); returns how many values it replaced.
    pub fn apply(&self, message: &mut Value) -> usize {
        let mut masked = 0;
        for path in &self.fields {
            if let Some(v) = at(message, path).filter(|v| !v.is_null() && v.as_str() != Some(MASKED)) {
                *v = Value::from(MASKED);
                masked += 1;
            }
        }
        for r in &self.recognise {
            if let Some(scope) = at(message, &r.scope) {
                masked += walk(scope, r);
            }
        }
        masked
    }
}

fn paths(spec: &OperationSpec, key: &str) -> Vec<FieldPath> {
    let texts = spec.params.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    texts.iter().filter_map(Value::as_str).filter_map(|t| FieldPath::parse(t).ok()).collect()
}

fn recognise(spec: &OperationSpec) -> Option<Recognise> {
    let scope = FieldPath::parse(spec.params.get("scope").and_then(Value::as_str).unwrap_or("payload")).ok()?;
    let rules = spec.params.get("rules")?.as_array()?;
    let patterns = |key: &str| -> Option<RegexSet> {
        let all: Vec<&str> = rules.iter().filter_map(|r| r.get(key)?.as_array()).flatten().filter_map(Value::as_str).collect();
        if all.is_empty() {
            None
        } else {
            RegexSet::new(all).ok()
        }
    };
    Some(Recognise { scope, names: patterns("field_names"), values: patterns("values") })
}

/// The value at `path` in `message` (an event's JSON), if present.
fn at<'m>(message: &'m mut Value, path: &FieldPath) -> Option<&'m mut Value> {
    let root = match path.root() {
        Root::Payload => message.get_mut("payload")?,
        Root::Metadata => message.get_mut("metadata")?,
        _ => return None,
    };
    if path.is_root() {
        return Some(root);
    }
    descend_mut(root.as_object_mut()?, path.segments())
}

/// Masks, below `value`, every field whose name a rule recognises (its whole value) and every
/// string or number a rule recognises.
fn walk(value: &mut Value, r: &Recognise) -> usize {
    match value {
        Value::Object(map) => map
            .iter_mut()
            .map(|(name, v)| {
                if r.names.as_ref().is_some_and(|n| n.is_match(name)) && !v.is_null() && v.as_str() != Some(MASKED) {
                    *v = Value::from(MASKED);
                    1
                } else {
                    walk(v, r)
                }
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(|v| walk(v, r)).sum(),
        Value::String(s) if s != MASKED && r.values.as_ref().is_some_and(|set| set.is_match(s)) => {
            *value = Value::from(MASKED);
            1
        }
        Value::Number(n) if r.values.as_ref().is_some_and(|set| set.is_match(&n.to_string())) => {
            *value = Value::from(MASKED);
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(ops: Value) -> SourceConfig {
        serde_json::from_value(json!({"source": "jira", "pre": ops})).unwrap()
    }

    #[test]
    fn the_sources_mask_field_paths_and_classify_rules_are_masked_and_nothing_else() {
        let mask = ViewMask::of(&config(json!([
            {"op": "mask_field", "params": {"fields": ["payload.reporter.email", "metadata.token"], "mode": "sha256", "salt": "s"}},
            {"op": "classify", "params": {"rules": [{"tag": "PII", "field_names": ["(?i)^ssn$"], "values": ["\\b\\d{3}-\\d{2}-\\d{4}\\b"]}]}},
            {"op": "add_timestamp"}
        ])));
        let mut message = json!({
            "id": "1", "source": "jira",
            "payload": {"reporter": {"email": "a@b.c", "name": "Ann"}, "ssn": 123456789, "notes": ["call 123-45-6789"], "title": "t", "n": 7},
            "metadata": {"token": "x", "tags": []}
        });
        assert_eq!(mask.apply(&mut message), 4);
        assert_eq!(message["payload"], json!({"reporter": {"email": MASKED, "name": "Ann"}, "ssn": MASKED, "notes": [MASKED], "title": "t", "n": 7}));
        assert_eq!(message["metadata"]["token"], MASKED);
        assert_eq!(mask.apply(&mut message), 0, "masking twice changes nothing");
    }

    #[test]
    fn a_source_without_masking_operations_masks_nothing() {
        let mask = ViewMask::of(&config(json!([{"op": "add_timestamp"}])));
        assert!(mask.is_empty());
        let mut message = json!({"payload": {"email": "a@b.c"}});
        assert_eq!(mask.apply(&mut message), 0);
        // A message of another shape is masked where the paths reach, and left alone elsewhere.
        let mask = ViewMask::of(&config(json!([{"op": "mask_field", "params": {"fields": ["payload.email"]}}])));
        let mut text = json!("not an event");
        assert_eq!(mask.apply(&mut text), 0);
    }
}
