//! Names shared by every service: Kafka topics, the Redis key schema, Kafka header names.
//!
//! Redis keys (all under an optional deployment prefix, e.g. `test-42:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<prefix>processed:{<source>:<id>}` | string | the processed record (JSON), written by the pre-transformer |
//! | `<prefix>sources` | hash | source name → source configuration (JSON) |
//! | `<prefix>sources:changed` | pub/sub channel | the name of a source whose config changed |
//! | `<prefix>idempotency:<key-id>:<key>` | string, expiring | the gateway's answer to an `Idempotency-Key` of one API key |
//! | `<prefix>ingested:{<source>:<id>}:<key-id>:<key>` | string, expiring | where the first copy of a keyed request was ingested |
//! | `<prefix>dead-letters:replayed:<partition>:<offset>` | string | a dead letter already replayed |
//! | `<prefix>keys` | hash | API key id → its record (scopes, limits, the key's HMAC; never the key) |
//! | `<prefix>keys:changed` | pub/sub channel | the id of a key created, changed or revoked |
//! | `<prefix>keys:last-used` | hash | API key id → when it last authenticated a request |
//! | `<prefix>ratelimit:{<key-id>}:<dimension>` | string, expiring | a key's GCRA state (`requests`, `events`) |
//!
//! Source names cannot contain `:`, so `<source>:<id>` is unambiguous even when ids contain `:`.
//!
//! `{…}` is a Redis Cluster hash tag: only the text between the first `{` and the next `}` picks
//! the key's slot, so the keys one script or transaction touches share a slot — an entity's
//! record and its idempotency marker, a rate limit's dimensions, a consumer group's positions
//! and leases, a subscription's status and dead letters. (An id containing `}` cuts its tag
//! short, the same way in each of its keys: they still share a slot.) Every other call touches
//! one key, so the same layout serves one Redis and a cluster.
//!
//! Also the label values dashboards and filters match on: [`EventOutcome`], [`DeadLetterReason`].

use serde::{Deserialize, Serialize};

use crate::event::{EventId, SourceName};

/// The Kafka topics of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// Raw events from the gateway, read by the pre-transformer.
    pub ingest: String,
    /// Notices that a processed record is stored, read by the post-transformer.
    pub processed: String,
    /// Final events, read by downstream systems and by the consumer-api.
    pub output: String,
    /// Messages a stage could not process, with headers saying why.
    pub dead_letter: String,
    /// Admin actions (keys created and revoked, source configs changed, dead letters replayed):
    /// who, what, when.
    #[serde(default = "default_audit_topic")]
    pub audit: String,
}

fn default_audit_topic() -> String {
    "metastream_audit".into()
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            ingest: "pre_process_meta_data_events".into(),
            processed: "processed_meta_data_notices".into(),
            output: "post_process_meta_data_events".into(),
            dead_letter: "dead_letter_meta_data_events".into(),
            audit: default_audit_topic(),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&str; 4] {
        [&self.ingest, &self.processed, &self.output, &self.dead_letter]
    }
}

/// The Kafka message key of an entity: every update of `<source>:<id>` goes to one partition.
pub fn entity_key(source: &SourceName, id: &EventId) -> String {
    format!("{source}:{id}")
}

/// Builds Redis keys under a deployment prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySchema {
    prefix: String,
}

impl KeySchema {
    pub fn new(prefix: impl Into<String>) -> Self {
        KeySchema { prefix: prefix.into() }
    }

    /// `<prefix>processed:{<source>:<id>}`: the processed record. The braces are a Redis
    /// Cluster hash tag: every key of one entity is in one slot, so one script can write them.
    pub fn processed(&self, source: &SourceName, id: &EventId) -> String {
        format!("{}processed:{{{source}:{id}}}", self.prefix)
    }

    /// `<prefix>sources`: the hash of source configurations.
    pub fn sources(&self) -> String {
        format!("{}sources", self.prefix)
    }

    /// `<prefix>sources:changed`: the pub/sub channel that names a source whose config changed.
    pub fn sources_changed(&self) -> String {
        format!("{}sources:changed", self.prefix)
    }

    /// `<prefix>idempotency:<key>`: the gateway's answer to a request with that
    /// `Idempotency-Key` (expiring).
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idempotency:{key}", self.prefix)
    }

    /// `<prefix>ingested:{<source>:<id>}:<idempotency-key>`: the ingest position
    /// (`<partition>:<offset>`) of the first copy of a keyed request the pre-transformer stored
    /// (expiring); a later copy (a client's retry whose first answer was lost) is dropped. In
    /// the slot of the entity's record (hash tag), since one script writes both.
    pub fn ingested(&self, source: &SourceName, id: &EventId, idempotency_key: &str) -> String {
        format!("{}ingested:{{{source}:{id}}}:{idempotency_key}", self.prefix)
    }

    /// `<prefix>keys`: the hash of API keys (key id → record JSON, holding the key's keyed hash,
    /// never the key).
    pub fn api_keys(&self) -> String {
        format!("{}keys", self.prefix)
    }

    /// `<prefix>keys:changed`: the pub/sub channel naming a key that was created, changed or
    /// revoked.
    pub fn api_keys_changed(&self) -> String {
        format!("{}keys:changed", self.prefix)
    }

    /// `<prefix>keys:last-used`: key id → when it last authenticated a request (RFC 3339).
    pub fn api_keys_last_used(&self) -> String {
        format!("{}keys:last-used", self.prefix)
    }

    /// `<prefix>ratelimit:<key-id>:<dimension>`: a key's GCRA state (theoretical arrival time).
    pub fn rate_limit(&self, key_id: &str, dimension: &str) -> String {
        format!("{}ratelimit:{{{key_id}}}:{dimension}", self.prefix)
    }

    /// `<prefix>subscriptions`: the hash of webhook subscriptions (id → record JSON).
    pub fn subscriptions(&self) -> String {
        format!("{}subscriptions", self.prefix)
    }

    /// `<prefix>subscriptions:changed`: the pub/sub channel naming a subscription that was
    /// created, changed, disabled or deleted.
    pub fn subscriptions_changed(&self) -> String {
        format!("{}subscriptions:changed", self.prefix)
    }

    /// `<prefix>subscription:{<id>}:<what>`: a subscription's delivery status (`status`, a hash),
    /// its dead letters (`dead`, a hash webhook-id → JSON), the dead letters asked to be
    /// replayed (`replay`, a set) and the lock of the replica replaying them (`replay-lock`).
    pub fn subscription(&self, id: &str, what: &str) -> String {
        format!("{}subscription:{{{id}}}:{what}", self.prefix)
    }

    /// `<prefix>consume:{<group>}:<what>`: where a consumer-api group is — `pos` (partition →
    /// next offset), `leases` (answers handed out, not yet acknowledged), `lock` (the one call
    /// serving the group). The group is the hash tag: one slot, so one script reads them all.
    pub fn consume_group(&self, group: &str, what: &str) -> String {
        format!("{}consume:{{{group}}}:{what}", self.prefix)
    }

    /// `<prefix>consume:cursor-secret`: the key that signs `/consume` cursors, shared by every
    /// consumer-api replica.
    pub fn consume_cursor_secret(&self) -> String {
        format!("{}consume:cursor-secret", self.prefix)
    }

    /// `<prefix>pulse:instances`: every service instance's last report (`<service>/<instance>` →
    /// JSON: ready or not and why, when reported), written every few seconds.
    pub fn pulse_instances(&self) -> String {
        format!("{}pulse:instances", self.prefix)
    }

    /// `<prefix>pulse:samples`: what the instances' metrics counted, one sample per instance
    /// every few seconds (a list, newest first, capped).
    pub fn pulse_samples(&self) -> String {
        format!("{}pulse:samples", self.prefix)
    }

    /// `<prefix>dead-letters:replayed:<partition>:<offset>`: the dead letter at that position of
    /// the dead-letter topic was replayed.
    pub fn replayed(&self, partition: i32, offset: i64) -> String {
        format!("{}dead-letters:replayed:{partition}:{offset}", self.prefix)
    }
}

/// Declares a label enum: each variant's wire name, `as_str`, `parse`, `ALL` and `Display`.
/// Dashboards, alerts and API filters match on these names, so they live in one place.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name metrics labels, headers and API filters use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::parse(&text).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!("unknown value `{text}`; one of: {}", known.join(", ")))
                })
            }
        }
    };
}

labels! {
    /// What became of an event in a stage: the `outcome` label of
    /// `metastream_events_processed_total`.
    EventOutcome {
        /// The pre stage wrote its record to Redis.
        Stored => "stored",
        /// The post stage published it.
        Published => "published",
        /// An operation dropped it on purpose.
        Filtered => "filtered",
        /// An operation failed and the source's policy is `skip`.
        Skipped => "skipped",
        /// A second copy of a keyed request (a client's retry) the pre stage dropped.
        Duplicate => "duplicate",
        /// It went to the dead-letter topic.
        DeadLettered => "dead_lettered",
    }
}

labels! {
    /// Why a message was dead-lettered: the `metastream-dlq-reason` header, the `reason` label of
    /// `metastream_dead_letters_total`, and `GET /v1/dead-letters?reason=`.
    DeadLetterReason {
        /// The message is not an event (or a notice) the stage can read.
        Unparseable => "unparseable",
        /// The record a notice points at, read from Redis, is not an event.
        UnparseableRecord => "unparseable_record",
        /// The record a notice points at is not in Redis.
        RecordMissing => "record_missing",
        /// The event's source has no configuration.
        MissingConfig => "missing_config",
        /// An operation failed under `on_error: dead_letter`.
        OperationFailed => "operation_failed",
        /// Kafka refused a message the event led to, for good.
        ProduceFailed => "produce_failed",
        /// A message the event led to is larger than its topic takes.
        TooLarge => "too_large",
    }
}

/// The API contract's schema of a reason: one of [`DeadLetterReason::ALL`].
impl utoipa::PartialSchema for DeadLetterReason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some("Why a stage dead-lettered a message: the `metastream-dlq-reason` header and the `reason` label of `metastream_dead_letters_total`."))
            .enum_values(Some(DeadLetterReason::ALL.iter().map(|r| r.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for DeadLetterReason {}

labels! {
    /// How a transformer's transaction ended under exactly once: the `transaction` label of
    /// `metastream_transaction_commit_seconds`.
    TransactionOutcome {
        /// Its output and offsets are committed.
        Committed => "committed",
        /// It could not commit: aborted, with every transaction after it, and its work redone.
        Aborted => "aborted",
    }
}

/// Kafka header names metastream writes.
pub mod headers {
    pub const EVENT_ID: &str = "metastream-event-id";
    pub const SOURCE: &str = "metastream-source";
    /// The client's `Idempotency-Key`, on ingest messages of requests that had one.
    pub const IDEMPOTENCY_KEY: &str = "metastream-idempotency-key";
    /// When the gateway produced the event (the ingest message's Kafka timestamp, ms since the
    /// epoch): on notices and on published events, so a reader can tell where time went.
    pub const INGESTED_AT_MS: &str = "metastream-ingested-at-ms";
    /// When the pre-transformer produced the notice (its Kafka timestamp, ms): on published
    /// events. The published message's own timestamp is when the post-transformer produced it.
    pub const NOTICED_AT_MS: &str = "metastream-noticed-at-ms";
    /// On the records of a sweep, a transaction that is always aborted (no `read_committed`
    /// reader sees them): see `adapters::stage::transaction`, "Orphaned records".
    pub const SWEEP: &str = "metastream-sweep";
    pub const DLQ_STAGE: &str = "metastream-dlq-stage";
    pub const DLQ_REASON: &str = "metastream-dlq-reason";
    pub const DLQ_ERROR: &str = "metastream-dlq-error";
    pub const DLQ_TOPIC: &str = "metastream-dlq-original-topic";
    pub const DLQ_PARTITION: &str = "metastream-dlq-original-partition";
    pub const DLQ_OFFSET: &str = "metastream-dlq-original-offset";
    pub const DLQ_OPERATION: &str = "metastream-dlq-operation";
    pub const DLQ_OPERATION_INDEX: &str = "metastream-dlq-operation-index";
    /// Set (`true`) on a dead letter that holds a reference to the original message instead of
    /// the message itself, because the original does not fit the dead-letter topic.
    pub const DLQ_REFERENCE: &str = "metastream-dlq-reference";
    /// The original message's size in bytes (key, value and headers), on references.
    pub const DLQ_ORIGINAL_SIZE: &str = "metastream-dlq-original-size";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_across_sources() {
        let keys = KeySchema::new("t1:");
        let a = keys.processed(&SourceName::parse("jira").unwrap(), &EventId::parse("x:1").unwrap());
        let b = keys.processed(&SourceName::parse("jira-x").unwrap(), &EventId::parse("1").unwrap());
        assert_eq!(a, "t1:processed:{jira:x:1}");
        assert_eq!(b, "t1:processed:{jira-x:1}");
        assert_ne!(a, b);
        assert_eq!(keys.sources(), "t1:sources");
        assert_eq!(keys.sources_changed(), "t1:sources:changed");
        assert_eq!(keys.idempotency("k"), "t1:idempotency:k");
        assert_eq!(keys.replayed(2, 40), "t1:dead-letters:replayed:2:40");
    }

    #[test]
    fn an_entitys_keys_share_their_hash_tag() {
        fn tag(key: &str) -> &str {
            let open = key.find('{').expect("a hash tag");
            let close = key[open + 1..].find('}').expect("a closed hash tag");
            &key[open + 1..open + 1 + close]
        }
        let keys = KeySchema::new("t1:");
        for id in ["1", "a}b", "{x}", "a:b"] {
            let (source, id) = (SourceName::parse("jira").unwrap(), EventId::parse(id).unwrap());
            assert_eq!(tag(&keys.processed(&source, &id)), tag(&keys.ingested(&source, &id, "key-1:k")), "id {id}");
        }
    }

    #[test]
    fn labels_read_back_and_are_unique() {
        for o in EventOutcome::ALL {
            assert_eq!(EventOutcome::parse(o.as_str()), Some(*o));
        }
        for r in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::parse(r.as_str()), Some(*r));
        }
        let names: std::collections::HashSet<_> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DeadLetterReason::ALL.len());
        assert_eq!(DeadLetterReason::parse("nope"), None);
    }
}

/// The dashboards match on label values by name: each one they use must be a value the services
/// emit, or a panel silently shows nothing.
#[cfg(test)]
mod dashboard_labels {
    use super::{DeadLetterReason, EventOutcome, TransactionOutcome};
    use crate::Stage;

    /// Every `label="v"` / `label=~"a|b"` matcher of `label` in the dashboards' queries.
    fn values_of(label: &str) -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability/dashboards");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("the dashboards folder") {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut exprs = Vec::new();
            collect_exprs(&json, &mut exprs);
            for expr in exprs {
                for op in ["=~\"", "=\"", "!=\"", "!~\""] {
                    let needle = format!("{label}{op}");
                    for (at, _) in expr.match_indices(&needle) {
                        // Skip a longer label name ending in `label` (e.g. `my_outcome`).
                        if at > 0 && expr[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                            continue;
                        }
                        let rest = &expr[at + needle.len()..];
                        let value = &rest[..rest.find('"').expect("a closing quote")];
                        for v in value.split('|').filter(|v| !v.is_empty()) {
                            found.push((path.file_name().unwrap().to_string_lossy().into_owned(), v.to_owned()));
                        }
                    }
                }
            }
        }
        found
    }

    fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_label_value_a_dashboard_matches_is_one_the_services_emit() {
        let outcomes = values_of("outcome");
        assert!(!outcomes.is_empty(), "the dashboards match on outcomes; the scan found none");
        for (file, v) in outcomes {
            assert!(EventOutcome::parse(&v).is_some(), "{file}: outcome `{v}` is not an EventOutcome");
        }
        for (file, v) in values_of("reason") {
            assert!(DeadLetterReason::parse(&v).is_some(), "{file}: reason `{v}` is not a DeadLetterReason");
        }
        for (file, v) in values_of("transaction") {
            assert!(TransactionOutcome::parse(&v).is_some(), "{file}: transaction `{v}` is not a TransactionOutcome");
        }
        for (file, v) in values_of("stage") {
            assert!([Stage::Pre, Stage::Post].iter().any(|s| s.as_str() == v), "{file}: stage `{v}` is not a Stage");
        }
    }
}
