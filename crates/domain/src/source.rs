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
    /// What the source sends: metastream's own envelope (the default), or its native protocol
    /// (see [`crate::native`]).
    #[serde(default, skip_serializing_if = "SourceKind::is_envelope")]
    pub kind: SourceKind,
    /// For a native kind: how entity ids are found where the built-in mapping has none, and
    /// what happens to events nothing maps.
    #[serde(default, skip_serializing_if = "Native::is_default")]
    pub native: Native,
    /// For a kind whose sender signs its requests (`github`, `jira`): which generation of the
    /// source's derived secret signs them. Managed by the gateway (created, rotated), never
    /// taken from a client's configuration; the secret itself is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
}

/// What a source sends (see [`crate::native`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// `{id, source, payload, metadata}` to `POST /ingest` (and `/ingest/batch`).
    #[default]
    Envelope,
    /// GitHub webhooks (`X-GitHub-Event`, signed with `X-Hub-Signature-256`).
    Github,
    /// Jira Cloud admin webhooks (`webhookEvent`, signed with `X-Hub-Signature`).
    Jira,
    /// CloudEvents 1.0 over HTTP: binary, structured and batched modes.
    Cloudevents,
    /// OpenLineage run events, as its HTTP transport posts them.
    Openlineage,
    /// DataHub MetadataChangeProposals, as `acryl-datahub`'s REST emitter posts them.
    Datahub,
}

impl SourceKind {
    pub fn is_envelope(&self) -> bool {
        *self == SourceKind::Envelope
    }

    /// Whether the sender signs each request with the source's secret (instead of a bearer key).
    pub fn is_signed(&self) -> bool {
        matches!(self, SourceKind::Github | SourceKind::Jira)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::Envelope => "envelope",
            SourceKind::Github => "github",
            SourceKind::Jira => "jira",
            SourceKind::Cloudevents => "cloudevents",
            SourceKind::Openlineage => "openlineage",
            SourceKind::Datahub => "datahub",
        }
    }
}

/// Per-source choices for a native kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Native {
    /// Event type (GitHub's `X-GitHub-Event`, Jira's `webhookEvent`) → JSON pointer to the
    /// entity id in the body: used before the built-in mapping.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub id_pointers: std::collections::BTreeMap<String, String>,
    /// An event neither the override nor the built-in mapping gives an id.
    #[serde(default, skip_serializing_if = "Unmapped::is_default")]
    pub unmapped: Unmapped,
    /// OpenLineage: one more event per input and output dataset (entity: the dataset), so a
    /// reader sees "dataset X was written by job Y".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dataset_events: bool,
    /// CloudEvents posted to `POST /cloudevents` come to this source when their `source`
    /// attribute is one of these (exactly), or starts with one ending in `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ce_sources: Vec<String>,
}

impl Native {
    pub fn is_default(&self) -> bool {
        *self == Native::default()
    }

    /// Every pointer is a JSON pointer (empty, or starting with `/`).
    ///
    /// # Errors
    /// The first event type whose pointer is not one.
    pub fn validate(&self) -> Result<(), String> {
        match self.id_pointers.iter().find(|(_, p)| !p.is_empty() && !p.starts_with('/')) {
            Some((event, pointer)) => Err(format!("native.id_pointers.{event}: `{pointer}` is not a JSON pointer (it starts with `/`)")),
            None => Ok(()),
        }
    }
}

/// What happens to an event of a native kind that nothing maps to an entity id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    /// Accepted, with the id `<scope>#<event>/<delivery>` (one entity per delivery).
    #[default]
    Accept,
    /// Acknowledged (200, `{"status":"dropped"}`), counted, not written.
    Drop,
}

impl Unmapped {
    pub fn is_default(&self) -> bool {
        *self == Unmapped::Accept
    }
}

/// Which generations of a source's derived secret are honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// The current generation (the secret `WebhookSecret::derive(server, "source:<name>", n)`).
    pub generation: u32,
    /// Until when (Unix seconds) the previous generation is honoured too, after a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<i64>,
}

impl Signing {
    /// The generations honoured at `now` (Unix seconds): the current one, and the previous one
    /// during its overlap.
    pub fn honoured(&self, now: i64) -> impl Iterator<Item = u32> {
        let previous = self.previous_until.filter(|until| now < *until && self.generation > 1).map(|_| self.generation - 1);
        std::iter::once(self.generation).chain(previous)
    }

    /// The label a source's secret is derived under.
    pub fn label(source: &str) -> String {
        format!("source:{source}")
    }
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
    fn a_native_kind_round_trips_and_the_envelope_stays_implicit() {
        let c: SourceConfig = serde_json::from_str(r#"{"source":"gh","kind":"github","native":{"id_pointers":{"gollum":"/repository/full_name"},"unmapped":"drop"}}"#).unwrap();
        assert_eq!(c.kind, SourceKind::Github);
        assert_eq!(c.native.unmapped, Unmapped::Drop);
        assert!(c.to_json().contains(r#""kind":"github""#));
        let plain: SourceConfig = serde_json::from_str(r#"{"source":"jira"}"#).unwrap();
        assert!(!plain.to_json().contains("kind"), "{}", plain.to_json());
        assert!(serde_json::from_str::<SourceConfig>(r#"{"source":"x","kind":"svn"}"#).is_err());
        let bad = Native { id_pointers: [("push".to_owned(), "ref".to_owned())].into(), ..Native::default() };
        assert!(bad.validate().unwrap_err().contains("native.id_pointers.push"));
    }

    #[test]
    fn a_rotated_secret_honours_its_predecessor_until_the_overlap_ends() {
        let s = Signing { generation: 3, previous_until: Some(1_000) };
        assert_eq!(s.honoured(999).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(s.honoured(1_000).collect::<Vec<_>>(), [3]);
        assert_eq!(Signing { generation: 1, previous_until: Some(1_000) }.honoured(0).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<SourceConfig>(r#"{"source":"jira","prre":[]}"#).unwrap_err();
        assert!(err.to_string().contains("prre"), "{err}");
    }
}
