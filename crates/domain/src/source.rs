//! A source's configuration: which operations run before and after storage, and what happens
//! when one fails. Stored as JSON in the Redis hash `<prefix>sources`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::SourceName;

/// The configuration of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub source: SourceName,
    /// Operations applied by the pre-transformer, before the record is stored.
    #[serde(default)]
    pub pre: Vec<OperationSpec>,
    /// Operations applied by the post-transformer, after the record is stored.
    #[serde(default)]
    pub post: Vec<OperationSpec>,
    #[serde(default)]
    pub on_error: OnError,
    /// Increases with every change; carried by each record the config processed.
    #[serde(default = "first_version")]
    pub version: u64,
}

fn first_version() -> u64 {
    1
}

/// One operation in a list: its name in the catalog, its parameters, and the condition under
/// which it runs (see [`crate::condition`]; always, when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    pub op: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Value>,
}

/// What a stage does with an event an operation fails on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Send the original event to the dead-letter topic with the reason, and go on.
    #[default]
    DeadLetter,
    /// Drop the event, count it, and go on.
    Skip,
    /// Hold processing — the whole consumer of the stage instance, every partition it owns, not
    /// only the failing event's — and report not ready until a config change lets it through.
    Fail,
}

impl SourceConfig {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a SourceConfig always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let c: SourceConfig = serde_json::from_str(r#"{"source":"jira","pre":[{"op":"add_timestamp"}]}"#).unwrap();
        assert_eq!(c.on_error, OnError::DeadLetter);
        assert_eq!(c.version, 1);
        assert!(c.post.is_empty());
        assert_eq!(c.pre[0].params, Value::Null);
        assert_eq!(c.pre[0].when, None);
        assert_eq!(c.to_json(), r#"{"source":"jira","pre":[{"op":"add_timestamp"}],"post":[],"on_error":"dead_letter","version":1}"#);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<SourceConfig>(r#"{"source":"jira","prre":[]}"#).unwrap_err();
        assert!(err.to_string().contains("prre"), "{err}");
    }
}
