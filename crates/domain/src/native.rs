//! Sources that speak their own protocol: a request as GitHub, Jira, a CloudEvents producer, an
//! OpenLineage client or DataHub's REST emitter sends it, turned into the envelopes (`{id, source, payload,
//! metadata}`) the pipeline already knows. Pure: the gateway authenticates the request and
//! hands over its headers and body; everything after — stages, store, operations, delivery —
//! is unchanged.
//!
//! Each event gets an entity id (per-entity order holds per id), an idempotency key when the
//! protocol has a delivery id (GitHub's `X-GitHub-Delivery`, Jira's
//! `X-Atlassian-Webhook-Identifier`, CloudEvents' `source` + `id`), and `metadata.event_type`
//! (`issues.opened`, `jira:issue_updated`, the CloudEvents `type`, `openlineage.COMPLETE`).

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::event::SourceName;
use crate::source::{Native, Unmapped};

/// What a request turns into.
#[derive(Debug)]
pub enum Outcome {
    /// Events to ingest, in order.
    Events(Vec<Translated>),
    /// A sender's check that the hook works (GitHub's `ping`): answered 200, nothing written.
    Ping,
    /// An event nothing maps, on a source that drops those (`native.unmapped: drop`).
    Dropped { event_type: String },
}

/// One event to ingest: the envelope's JSON text, and what identifies the delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub envelope: String,
    pub id: String,
    pub idempotency: Option<String>,
}

/// Why a request cannot be turned into events: a 400 naming what is wrong (415 for a body of
/// the wrong type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeError {
    /// Headers or fields the protocol requires, by name.
    Missing(Vec<String>),
    /// The body is not what the protocol sends.
    Malformed(String),
    /// A content type the protocol does not use here.
    Unsupported(String),
    /// No source takes the event (a CloudEvent whose `source` no configuration names).
    Unrouted(String),
}

impl std::fmt::Display for NativeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NativeError::Missing(names) => write!(f, "missing required {}: {}", if names.len() == 1 { "attribute" } else { "attributes" }, names.join(", ")),
            NativeError::Malformed(why) | NativeError::Unsupported(why) | NativeError::Unrouted(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for NativeError {}

/// A request's headers, by lower-case name.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::HashMap::get(self, name).map(String::as_str)
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    source: &'a str,
    payload: &'a RawValue,
    metadata: &'a Map<String, Value>,
}

fn envelope(source: &SourceName, id: String, payload: &RawValue, metadata: &Map<String, Value>, idempotency: Option<String>) -> Translated {
    let envelope = serde_json::to_string(&Envelope { id: &id, source: source.as_str(), payload, metadata }).expect("an envelope always serializes");
    Translated { envelope, id, idempotency }
}

fn parse_object(body: &[u8]) -> Result<(Value, &RawValue), NativeError> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| NativeError::Malformed(format!("the body is not JSON: {e}")))?;
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| NativeError::Malformed(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(NativeError::Malformed("the body must be a JSON object".into()));
    }
    Ok((value, raw))
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required<'h>(headers: &'h dyn Headers, names: &[&str]) -> Result<Vec<&'h str>, NativeError> {
    let found: Vec<Option<&str>> = names.iter().map(|n| headers.get(n).filter(|v| !v.is_empty())).collect();
    let missing: Vec<String> = names.iter().zip(&found).filter(|(_, v)| v.is_none()).map(|(n, _)| (*n).to_owned()).collect();
    if missing.is_empty() {
        Ok(found.into_iter().flatten().collect())
    } else {
        Err(NativeError::Missing(missing))
    }
}

/// The id from the source's override for `event_type`, else the built-in mapping, else what
/// `native.unmapped` says (`None`: dropped).
fn entity_id(native: &Native, event_type: &str, body: &Value, built_in: Option<String>, default: impl FnOnce() -> String) -> Option<String> {
    let overridden = native.id_pointers.get(event_type).and_then(|p| text(body, p));
    overridden.or(built_in).or_else(|| (native.unmapped == Unmapped::Accept).then(default))
}

// ---------------------------------------------------------------------------------------------
// GitHub

/// A GitHub webhook delivery (`X-GitHub-Event`, `X-GitHub-Delivery`; the signature is checked
/// before this). The id is the entity the event is about ([`github_entity`]); the delivery GUID
/// is the idempotency key, since GitHub redelivers with the same one.
///
/// # Errors
/// A missing header, or a body that is not a JSON object.
pub fn github(source: &SourceName, native: &Native, headers: &dyn Headers, body: &[u8]) -> Result<Outcome, NativeError> {
    let [event, delivery] = required(headers, &["x-github-event", "x-github-delivery"])?[..] else { unreachable!("two names") };
    if event == "ping" {
        return Ok(Outcome::Ping);
    }
    let (value, raw) = parse_object(body)?;
    let action = value.get("action").and_then(Value::as_str);
    let event_type = match action {
        Some(action) => format!("{event}.{action}"),
        None => event.to_owned(),
    };
    let scope = || text(&value, "/repository/full_name").or_else(|| text(&value, "/organization/login")).unwrap_or_else(|| "github".into());
    let Some(id) = entity_id(native, event, &value, github_entity(event, &value), || format!("{}#{event}/{delivery}", scope())) else {
        return Ok(Outcome::Dropped { event_type });
    };
    let mut metadata = Map::new();
    metadata.insert("event_type".into(), json!(event_type));
    metadata.insert("github".into(), json!({"event": event, "action": action, "delivery": delivery, "hook_id": headers.get("x-github-hook-id")}));
    Ok(Outcome::Events(vec![envelope(source, id, raw, &metadata, Some(format!("github:{delivery}")))]))
}

/// The entity a GitHub event is about, for the common events: `owner/repo#issue/42`,
/// `owner/repo#pull/7`, `owner/repo@refs/heads/main` (push, create, delete), `owner/repo`
/// (repository-wide events), `org#team/slug`, … `None` for the rest.
pub fn github_entity(event: &str, v: &Value) -> Option<String> {
    let repo = text(v, "/repository/full_name");
    let org = text(v, "/organization/login");
    let in_repo = |kind: &str, pointer: &str| Some(format!("{}#{kind}/{}", repo.clone()?, text(v, pointer)?));
    let at_ref = |pointer: &str| Some(format!("{}@{}", repo.clone()?, text(v, pointer)?));
    match event {
        "issues" | "issue_comment" | "issue_dependencies" | "sub_issues" => in_repo("issue", "/issue/number"),
        "pull_request" | "pull_request_review" | "pull_request_review_comment" | "pull_request_review_thread" => in_repo("pull", "/pull_request/number"),
        "push" | "create" | "delete" => at_ref("/ref"),
        "status" => at_ref("/sha"),
        "commit_comment" => at_ref("/comment/commit_id"),
        "release" => in_repo("release", "/release/tag_name"),
        "label" => in_repo("label", "/label/name"),
        "milestone" => in_repo("milestone", "/milestone/number"),
        "member" => in_repo("member", "/member/login"),
        "discussion" | "discussion_comment" => in_repo("discussion", "/discussion/number"),
        "check_run" => in_repo("check_run", "/check_run/id"),
        "check_suite" => in_repo("check_suite", "/check_suite/id"),
        "workflow_run" => in_repo("workflow_run", "/workflow_run/id"),
        "workflow_job" => in_repo("workflow_job", "/workflow_job/id"),
        "deployment" | "deployment_status" => in_repo("deployment", "/deployment/id"),
        "branch_protection_rule" => in_repo("branch_protection_rule", "/rule/id"),
        "code_scanning_alert" | "dependabot_alert" | "secret_scanning_alert" | "repository_vulnerability_alert" => in_repo(event, "/alert/number"),
        "package" | "registry_package" => in_repo("package", "/package/name"),
        "repository" | "star" | "watch" | "fork" | "public" | "repository_import" | "gollum" | "meta" | "repository_ruleset" => repo,
        "team" | "team_add" | "membership" => Some(format!("{}#team/{}", org?, text(v, "/team/slug")?)),
        "organization" | "org_block" => org,
        "installation" | "installation_repositories" | "installation_target" => Some(format!("installation/{}", text(v, "/installation/id")?)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Jira

/// A Jira Cloud admin webhook (`webhookEvent`; the signature is checked before this). The id is
/// the issue key for issue, comment and worklog events, else the project, sprint, version,
/// board or user the event is about; `X-Atlassian-Webhook-Identifier` (unchanged across
/// retries) is the idempotency key; `X-Atlassian-Webhook-Flow` goes into `metadata`.
///
/// # Errors
/// A body that is not a JSON object, or one without `webhookEvent`.
pub fn jira(source: &SourceName, native: &Native, headers: &dyn Headers, body: &[u8]) -> Result<Outcome, NativeError> {
    let (value, raw) = parse_object(body)?;
    let event = text(&value, "/webhookEvent").ok_or_else(|| NativeError::Missing(vec!["webhookEvent".into()]))?;
    let delivery = headers.get("x-atlassian-webhook-identifier").filter(|d| !d.is_empty());
    let built_in = text(&value, "/issue/key")
        .or_else(|| text(&value, "/project/key").map(|k| format!("project/{k}")))
        .or_else(|| text(&value, "/sprint/id").map(|id| format!("sprint/{id}")))
        .or_else(|| text(&value, "/version/id").map(|id| format!("version/{id}")))
        .or_else(|| text(&value, "/board/id").map(|id| format!("board/{id}")))
        .or_else(|| text(&value, "/user/accountId").map(|id| format!("user/{id}")));
    let default = || format!("jira#{event}/{}", delivery.map_or_else(|| text(&value, "/timestamp").unwrap_or_default(), str::to_owned));
    let Some(id) = entity_id(native, &event, &value, built_in, default) else {
        return Ok(Outcome::Dropped { event_type: event });
    };
    let mut metadata = Map::new();
    metadata.insert("event_type".into(), json!(event));
    metadata.insert(
        "jira".into(),
        json!({
            "event": event,
            "issue_event_type_name": value.get("issue_event_type_name"),
            "delivery": delivery,
            "flow": headers.get("x-atlassian-webhook-flow"),
        }),
    );
    Ok(Outcome::Events(vec![envelope(source, id, raw, &metadata, delivery.map(|d| format!("jira:{d}")))]))
}

// ---------------------------------------------------------------------------------------------
// CloudEvents

/// How a CloudEvents request is framed, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudEventsMode {
    /// `ce-*` headers, the body is the data.
    Binary,
    /// `application/cloudevents+json`: the body is the event.
    Structured,
    /// `application/cloudevents-batch+json`: the body is an array of events.
    Batch,
}

impl CloudEventsMode {
    pub fn of(content_type: &str) -> Self {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/cloudevents+json" => CloudEventsMode::Structured,
            "application/cloudevents-batch+json" => CloudEventsMode::Batch,
            _ => CloudEventsMode::Binary,
        }
    }
}

const CE_REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];

/// Which metastream source a CloudEvent goes to, by its `source` attribute: the one the request
/// names (`/hooks/{source}`), or the configuration whose `native.ce_sources` matches it
/// ([`ce_source_matches`]).
pub type Route<'a> = &'a dyn Fn(&str) -> Result<SourceName, NativeError>;

/// How well `pattern` (an exact `source` attribute, or a prefix ending in `*`) matches
/// `ce_source`: `None` when it does not; an exact match beats every prefix, a longer prefix a
/// shorter one.
pub fn ce_source_matches(pattern: &str, ce_source: &str) -> Option<usize> {
    match pattern.strip_suffix('*') {
        Some(prefix) => ce_source.starts_with(prefix).then_some(prefix.len()),
        None => (pattern == ce_source).then_some(usize::MAX),
    }
}

/// One CloudEvent as attributes and data: the id is `subject`, else `id`; `source` + `id` is
/// the idempotency key; every attribute goes into `metadata.cloudevents`.
fn cloud_event(source: Route<'_>, attributes: Map<String, Value>, data: &RawValue) -> Result<Translated, NativeError> {
    let missing: Vec<String> = CE_REQUIRED.iter().filter(|a| attributes.get(**a).and_then(Value::as_str).is_none_or(str::is_empty)).map(|a| (*a).to_owned()).collect();
    if !missing.is_empty() {
        return Err(NativeError::Missing(missing));
    }
    let attr = |name: &str| attributes.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let source = &source(&attr("source"))?;
    if attr("specversion") != "1.0" {
        return Err(NativeError::Malformed(format!("specversion `{}` is not supported; metastream takes CloudEvents 1.0", attr("specversion"))));
    }
    let id = attributes.get("subject").and_then(Value::as_str).filter(|s| !s.is_empty()).map_or_else(|| attr("id"), str::to_owned);
    let idempotency = format!("cloudevents:{}\u{0}{}", attr("source"), attr("id"));
    let mut metadata = Map::new();
    metadata.insert("event_type".into(), json!(attr("type")));
    metadata.insert("cloudevents".into(), Value::Object(attributes));
    Ok(envelope(source, id, data, &metadata, Some(idempotency)))
}

/// A structured event (an object with the attributes and `data`).
fn structured(source: Route<'_>, value: &Value) -> Result<Translated, NativeError> {
    let Value::Object(object) = value else { return Err(NativeError::Malformed("a structured CloudEvent is a JSON object".into())) };
    let mut attributes = object.clone();
    // Binary data stays as its base64 text, under the name it came with.
    let data = match (attributes.remove("data"), attributes.remove("data_base64")) {
        (Some(data), _) => data,
        (None, Some(base64)) => json!({"data_base64": base64}),
        (None, None) => Value::Null,
    };
    let data = serde_json::value::to_raw_value(&data).expect("a JSON value always serializes");
    cloud_event(source, attributes, &data)
}

/// A CloudEvent (1.0) in structured mode, as `POST /cloudevents` takes it; extension attributes
/// are kept too.
// The API contract's schema of a structured event. No Rust type holds one: `structured` reads it
// as a JSON object, so that every attribute, extensions included, reaches
// `metadata.cloudevents` as sent. This only describes it, beside that code; its required
// members are `CE_REQUIRED` (a test holds them together).
#[derive(utoipa::ToSchema)]
pub struct CloudEvent {
    #[schema(pattern = r"^1\.0$")]
    pub specversion: String,
    /// With `source`, the idempotency key; the entity id when there is no `subject`.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub id: String,
    /// Routes the event to the source whose `native.ce_sources` name it.
    #[schema(min_length = 1)]
    pub source: String,
    #[schema(min_length = 1)]
    pub r#type: String,
    /// The entity id.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub subject: Option<String>,
    /// Any JSON.
    pub data: Option<Value>,
}

/// A CloudEvents batch (`application/cloudevents-batch+json`): at least one structured event.
pub struct CloudEventBatch;

impl utoipa::PartialSchema for CloudEventBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::ToSchema as _;
        utoipa::openapi::schema::ArrayBuilder::new().items(utoipa::openapi::Ref::from_schema_name(CloudEvent::name())).min_items(Some(1)).into()
    }
}

impl utoipa::ToSchema for CloudEventBatch {
    /// The name the contract has always given it.
    fn name() -> std::borrow::Cow<'static, str> {
        "CloudEventBatchDoc".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((CloudEvent::name().into_owned(), <CloudEvent as utoipa::PartialSchema>::schema()));
    }
}

/// A CloudEvents 1.0 HTTP request in any of the three modes. A batch yields one result per
/// event, in order: an event with a missing attribute fails alone.
///
/// # Errors
/// A body that does not parse, binary data that is not JSON, or (binary and structured modes)
/// missing attributes, named.
pub fn cloudevents(source: Route<'_>, headers: &dyn Headers, body: &[u8]) -> Result<Vec<Result<Translated, NativeError>>, NativeError> {
    let content_type = headers.get("content-type").unwrap_or("");
    match CloudEventsMode::of(content_type) {
        CloudEventsMode::Binary => {
            let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(NativeError::Unsupported(format!(
                    "binary-mode data of type `{content_type}` is not taken: send JSON data (application/json), or a structured event (application/cloudevents+json)"
                )));
            }
            let data: &RawValue = serde_json::from_slice(body).map_err(|e| NativeError::Malformed(format!("the data is not JSON: {e}")))?;
            let mut attributes = Map::new();
            for name in ["specversion", "id", "source", "type", "subject", "time", "dataschema"] {
                if let Some(v) = headers.get(&format!("ce-{name}")) {
                    attributes.insert(name.into(), json!(v));
                }
            }
            attributes.insert("datacontenttype".into(), json!(content_type));
            Ok(vec![Ok(cloud_event(source, attributes, data)?)])
        }
        CloudEventsMode::Structured => {
            let value: Value = serde_json::from_slice(body).map_err(|e| NativeError::Malformed(format!("the body is not JSON: {e}")))?;
            Ok(vec![Ok(structured(source, &value)?)])
        }
        CloudEventsMode::Batch => {
            let value: Value = serde_json::from_slice(body).map_err(|e| NativeError::Malformed(format!("the body is not JSON: {e}")))?;
            let Value::Array(events) = value else { return Err(NativeError::Malformed("a CloudEvents batch is a JSON array of events".into())) };
            if events.is_empty() {
                return Err(NativeError::Malformed("the batch holds no event".into()));
            }
            Ok(events.iter().map(|e| structured(source, e)).collect())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OpenLineage

/// An OpenLineage event as its HTTP transport posts it: a run event (the entity is the job,
/// `namespace/name`; the run state is in the payload), a job event (the job) or a dataset event
/// (the dataset). With `native.dataset_events`, a run event also yields one event per input and
/// output dataset, so a reader sees "dataset X was written by job Y". The idempotency key is
/// the run id, event type and time (a client retry sends the same three).
///
/// # Errors
/// A body that is not a JSON object, or an event without the fields its kind requires.
pub fn openlineage(source: &SourceName, native: &Native, body: &[u8]) -> Result<Vec<Translated>, NativeError> {
    let (value, raw) = parse_object(body)?;
    let name = |v: &Value, what: &str| -> Result<String, NativeError> {
        match (text(v, "/namespace"), text(v, "/name")) {
            (Some(ns), Some(name)) => Ok(format!("{ns}/{name}")),
            _ => Err(NativeError::Missing(vec![format!("{what}.namespace"), format!("{what}.name")])),
        }
    };
    let event_type = text(&value, "/eventType");
    let time = text(&value, "/eventTime").unwrap_or_default();
    let mut metadata = Map::new();
    let mut out = Vec::new();
    if let Some(run_id) = text(&value, "/run/runId") {
        // A run event.
        let event_type = event_type.ok_or_else(|| NativeError::Missing(vec!["eventType".into()]))?;
        let job = name(value.get("job").unwrap_or(&Value::Null), "job")?;
        metadata.insert("event_type".into(), json!(format!("openlineage.{event_type}")));
        metadata.insert("openlineage".into(), json!({"run_id": run_id, "event_time": time, "job": job, "producer": value.get("producer")}));
        out.push(envelope(source, job.clone(), raw, &metadata, Some(format!("openlineage:{run_id}:{event_type}:{time}"))));
        if native.dataset_events {
            for (direction, list) in [("input", "inputs"), ("output", "outputs")] {
                for dataset in value.get(list).and_then(Value::as_array).into_iter().flatten() {
                    let id = name(dataset, list)?;
                    let payload = json!({"direction": direction, "dataset": dataset, "job": value.get("job"), "run": value.get("run"), "eventType": event_type, "eventTime": time});
                    let payload = serde_json::value::to_raw_value(&payload).expect("a JSON value always serializes");
                    let mut m = metadata.clone();
                    m.insert("event_type".into(), json!(format!("openlineage.dataset.{direction}.{event_type}")));
                    out.push(envelope(source, id.clone(), &payload, &m, Some(format!("openlineage:{run_id}:{event_type}:{time}:{direction}:{id}"))));
                }
            }
        }
    } else if let Some(dataset) = value.get("dataset") {
        let id = name(dataset, "dataset")?;
        metadata.insert("event_type".into(), json!("openlineage.dataset"));
        metadata.insert("openlineage".into(), json!({"event_time": time, "producer": value.get("producer")}));
        out.push(envelope(source, id.clone(), raw, &metadata, Some(format!("openlineage:dataset:{id}:{time}"))));
    } else if let Some(job) = value.get("job") {
        let id = name(job, "job")?;
        metadata.insert("event_type".into(), json!("openlineage.job"));
        metadata.insert("openlineage".into(), json!({"event_time": time, "producer": value.get("producer")}));
        out.push(envelope(source, id.clone(), raw, &metadata, Some(format!("openlineage:job:{id}:{time}"))));
    } else {
        return Err(NativeError::Missing(vec!["run.runId (a run event), dataset (a dataset event) or job (a job event)".into()]));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// DataHub

/// What `acryl-datahub`'s REST emitter posts to `/aspects`, by its `action` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatahubAction {
    /// `ingestProposal`: `{"proposal": {...}, "async": "false"}`.
    Proposal,
    /// `ingestProposalBatch`: `{"proposals": [...], "async": ...}`.
    Batch,
}

impl DatahubAction {
    /// # Errors
    /// Another action, named.
    pub fn parse(action: &str) -> Result<Self, NativeError> {
        match action {
            "ingestProposal" => Ok(DatahubAction::Proposal),
            "ingestProposalBatch" => Ok(DatahubAction::Batch),
            other => Err(NativeError::Malformed(format!("action `{other}` is not taken: metastream takes ingestProposal and ingestProposalBatch"))),
        }
    }
}

/// One MetadataChangeProposal: the entity is its `entityUrn`; the payload is the proposal with
/// its aspect's JSON text parsed; `aspectName` and `changeType` go into `metadata`. The
/// idempotency key is the URN, aspect and `systemMetadata.lastObserved` (the emitter's retries
/// send the same three).
fn proposal(source: &SourceName, p: &Value) -> Result<Translated, NativeError> {
    let Value::Object(fields) = p else { return Err(NativeError::Malformed("a proposal is a JSON object".into())) };
    let missing: Vec<String> = ["entityType", "entityUrn", "changeType"].iter().filter(|f| text(p, &format!("/{f}")).is_none()).map(|f| (*f).to_owned()).collect();
    if !missing.is_empty() {
        return Err(NativeError::Missing(missing));
    }
    let urn = text(p, "/entityUrn").unwrap_or_default();
    let change = text(p, "/changeType").unwrap_or_default();
    let aspect_name = text(p, "/aspectName");
    let mut payload = fields.clone();
    if let Some(aspect) = fields.get("aspect") {
        let value = match (aspect.get("value").and_then(Value::as_str), aspect.get("contentType").and_then(Value::as_str)) {
            (Some(text), Some("application/json") | None) => serde_json::from_str(text).map_err(|e| NativeError::Malformed(format!("aspect.value is not JSON text: {e}")))?,
            (Some(_), Some(other)) => return Err(NativeError::Unsupported(format!("aspect.contentType `{other}` is not taken: metastream stores JSON"))),
            (None, _) => aspect.clone(),
        };
        payload.insert("aspect".into(), value);
    }
    let payload = serde_json::value::to_raw_value(&payload).expect("a JSON value always serializes");
    let mut metadata = Map::new();
    metadata.insert("event_type".into(), json!(format!("datahub.{change}{}", aspect_name.as_ref().map(|a| format!(".{a}")).unwrap_or_default())));
    metadata.insert("datahub".into(), json!({"entity_type": p.get("entityType"), "aspect_name": aspect_name, "change_type": change}));
    let observed = text(p, "/systemMetadata/lastObserved");
    let idempotency = observed.map(|t| format!("datahub:{urn}:{}:{change}:{t}", aspect_name.unwrap_or_default()));
    Ok(envelope(source, urn, &payload, &metadata, idempotency))
}

/// A DataHub emitter's request: one proposal, or a batch (one result per proposal, in order).
///
/// # Errors
/// A body that is not the action's shape.
pub fn datahub(source: &SourceName, action: DatahubAction, body: &[u8]) -> Result<Vec<Result<Translated, NativeError>>, NativeError> {
    let (value, _) = parse_object(body)?;
    match action {
        DatahubAction::Proposal => {
            let p = value.get("proposal").ok_or_else(|| NativeError::Missing(vec!["proposal".into()]))?;
            Ok(vec![Ok(proposal(source, p)?)])
        }
        DatahubAction::Batch => {
            let Some(Value::Array(ps)) = value.get("proposals") else { return Err(NativeError::Missing(vec!["proposals".into()])) };
            if ps.is_empty() {
                return Err(NativeError::Malformed("the batch holds no proposal".into()));
            }
            Ok(ps.iter().map(|p| proposal(source, p)).collect())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures

/// Whether `header` — GitHub's `X-Hub-Signature-256` or Jira's `X-Hub-Signature`, both
/// `sha256=<hex HMAC-SHA-256 of the raw body>` — is `secret`'s signature of `body`, compared in
/// constant time.
pub fn hub_signature_matches(secret: &[u8], body: &[u8], header: &str) -> bool {
    use hmac::{Hmac, Mac as _};
    let Some(hex) = header.trim().strip_prefix("sha256=") else { return false };
    let Some(given) = decode_hex(hex) else { return false };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `sha256=<hex>` of `body` under `secret`: what a sender puts in the header (tests, docs).
pub fn hub_signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac as _};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn src() -> SourceName {
        SourceName::parse("gh").unwrap()
    }

    fn events(o: Outcome) -> Vec<Value> {
        match o {
            Outcome::Events(e) => e.iter().map(|t| serde_json::from_str(&t.envelope).unwrap()).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn a_datahub_proposal_is_its_urn_with_the_aspect_parsed() {
        let body = br#"{"proposal":{"entityType":"dataset","entityUrn":"urn:li:dataset:(urn:li:dataPlatform:postgres,public.orders,PROD)","changeType":"UPSERT","aspectName":"globalTags","aspect":{"value":"{\"tags\": [{\"tag\": \"urn:li:tag:pii\"}]}","contentType":"application/json"},"systemMetadata":{"lastObserved":1796408204420}},"async":"false"}"#;
        let out = datahub(&src(), DatahubAction::Proposal, body).unwrap();
        let t = out[0].as_ref().unwrap();
        assert_eq!(t.id, "urn:li:dataset:(urn:li:dataPlatform:postgres,public.orders,PROD)");
        let e: Value = serde_json::from_str(&t.envelope).unwrap();
        assert_eq!(e["payload"]["aspect"]["tags"][0]["tag"], "urn:li:tag:pii");
        assert_eq!(e["metadata"]["event_type"], "datahub.UPSERT.globalTags");
        assert!(t.idempotency.as_deref().unwrap().ends_with(":globalTags:UPSERT:1796408204420"));
        let batch = datahub(&src(), DatahubAction::Batch, br#"{"proposals":[{"entityType":"dataset"},{"entityType":"dataset","entityUrn":"urn:x","changeType":"DELETE"}]}"#).unwrap();
        assert_eq!(batch[0].as_ref().unwrap_err(), &NativeError::Missing(vec!["entityUrn".into(), "changeType".into()]));
        assert!(batch[1].is_ok());
        assert!(DatahubAction::parse("delete").is_err());
    }

    #[test]
    fn hub_signatures_match_only_the_exact_bytes_and_secret() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(hub_signature(b"It's a Secret to Everybody", b"Hello, World!"), sig);
        assert!(hub_signature_matches(b"It's a Secret to Everybody", b"Hello, World!", sig));
        assert!(!hub_signature_matches(b"It's a Secret to Everybody", b"Hello, World?", sig));
        assert!(!hub_signature_matches(b"another", b"Hello, World!", sig));
        assert!(!hub_signature_matches(b"It's a Secret to Everybody", b"Hello, World!", "sha1=abc"));
        assert!(!hub_signature_matches(b"It's a Secret to Everybody", b"Hello, World!", "sha256=zz"));
    }

    #[test]
    fn a_github_issue_event_is_the_issue_with_its_type_and_delivery() {
        let body = br#"{"action":"opened","issue":{"number":42},"repository":{"full_name":"octo/hello"}}"#;
        let h = headers(&[("x-github-event", "issues"), ("x-github-delivery", "d-1")]);
        let Outcome::Events(out) = github(&src(), &Native::default(), &h, body).unwrap() else { panic!() };
        assert_eq!(out[0].id, "octo/hello#issue/42");
        assert_eq!(out[0].idempotency.as_deref(), Some("github:d-1"));
        let e: Value = serde_json::from_str(&out[0].envelope).unwrap();
        assert_eq!(e["metadata"]["event_type"], "issues.opened");
        assert_eq!(e["payload"]["issue"]["number"], 42, "the body is the payload, unchanged");
        assert_eq!(e["source"], "gh");
    }

    #[test]
    fn github_ping_is_answered_and_missing_headers_are_named() {
        let h = headers(&[("x-github-event", "ping"), ("x-github-delivery", "d")]);
        assert!(matches!(github(&src(), &Native::default(), &h, b"{}").unwrap(), Outcome::Ping));
        let err = github(&src(), &Native::default(), &headers(&[]), b"{}").unwrap_err();
        assert_eq!(err, NativeError::Missing(vec!["x-github-event".into(), "x-github-delivery".into()]));
    }

    #[test]
    fn an_unmapped_github_event_gets_a_default_id_or_is_dropped_and_an_override_wins() {
        let body = br#"{"action":"created","thing":{"key":"K-9"},"repository":{"full_name":"octo/hello"}}"#;
        let h = headers(&[("x-github-event", "exotic_event"), ("x-github-delivery", "d-2")]);
        assert_eq!(events(github(&src(), &Native::default(), &h, body).unwrap())[0]["id"], "octo/hello#exotic_event/d-2");
        let drop = Native { unmapped: Unmapped::Drop, ..Native::default() };
        assert!(matches!(github(&src(), &drop, &h, body).unwrap(), Outcome::Dropped { event_type } if event_type == "exotic_event.created"));
        let pointed = Native { id_pointers: [("exotic_event".to_owned(), "/thing/key".to_owned())].into(), unmapped: Unmapped::Drop, ..Native::default() };
        assert_eq!(events(github(&src(), &pointed, &h, body).unwrap())[0]["id"], "K-9");
    }

    #[test]
    fn github_common_events_map_to_their_entities() {
        let repo = json!({"full_name": "o/r"});
        let cases = [
            ("pull_request", json!({"pull_request": {"number": 7}, "repository": repo}), "o/r#pull/7"),
            ("push", json!({"ref": "refs/heads/main", "repository": repo}), "o/r@refs/heads/main"),
            ("release", json!({"release": {"tag_name": "v1"}, "repository": repo}), "o/r#release/v1"),
            ("star", json!({"repository": repo}), "o/r"),
            ("team", json!({"team": {"slug": "core"}, "organization": {"login": "o"}}), "o#team/core"),
        ];
        for (event, body, want) in cases {
            assert_eq!(github_entity(event, &body).as_deref(), Some(want), "{event}");
        }
        assert_eq!(github_entity("issues", &json!({"issue": {"number": 1}})), None, "no repository, no id");
    }

    #[test]
    fn a_jira_issue_event_is_the_issue_key_with_its_delivery_and_flow() {
        let body = br#"{"timestamp":1,"webhookEvent":"jira:issue_updated","issue_event_type_name":"issue_generic","issue":{"key":"PROJ-7"}}"#;
        let h = headers(&[("x-atlassian-webhook-identifier", "abc"), ("x-atlassian-webhook-flow", "Primary")]);
        let Outcome::Events(out) = jira(&src(), &Native::default(), &h, body).unwrap() else { panic!() };
        assert_eq!((out[0].id.as_str(), out[0].idempotency.as_deref()), ("PROJ-7", Some("jira:abc")));
        let e: Value = serde_json::from_str(&out[0].envelope).unwrap();
        assert_eq!(e["metadata"]["jira"]["flow"], "Primary");
        assert_eq!(e["metadata"]["event_type"], "jira:issue_updated");
        assert_eq!(jira(&src(), &Native::default(), &h, b"{}").unwrap_err(), NativeError::Missing(vec!["webhookEvent".into()]));
    }

    /// The API contract's `CloudEvent` requires what `cloud_event` requires, and its entity ids
    /// (`subject`, else `id`) are ids an envelope takes.
    #[test]
    fn the_cloudevent_schema_is_the_reader_s() {
        let schema = serde_json::to_value(<CloudEvent as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["required"], json!(CE_REQUIRED));
        let envelope = serde_json::to_value(<crate::ClientEvent<'_> as utoipa::PartialSchema>::schema()).unwrap();
        for (member, constraint) in [("id", "pattern"), ("id", "minLength"), ("id", "maxLength"), ("subject", "pattern"), ("subject", "minLength"), ("subject", "maxLength")] {
            assert_eq!(schema["properties"][member][constraint], envelope["properties"]["id"][constraint], "{member} {constraint}");
        }
    }

    #[test]
    fn cloudevents_in_each_mode() {
        let binary = headers(&[("content-type", "application/json"), ("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t"), ("ce-subject", "sub")]);
        let out = cloudevents(&|_| Ok(src()), &binary, br#"{"a":1}"#).unwrap();
        let t = out[0].as_ref().unwrap();
        assert_eq!((t.id.as_str(), t.idempotency.as_deref()), ("sub", Some("cloudevents:/s\u{0}1")));
        let structured_h = headers(&[("content-type", "application/cloudevents+json; charset=utf-8")]);
        let out = cloudevents(&|_| Ok(src()), &structured_h, br#"{"specversion":"1.0","id":"9","source":"/s","type":"t","data":{"b":2}}"#).unwrap();
        let e: Value = serde_json::from_str(&out[0].as_ref().unwrap().envelope).unwrap();
        assert_eq!((e["id"].as_str(), e["payload"]["b"].as_i64()), (Some("9"), Some(2)), "no subject: the id");
        let batch_h = headers(&[("content-type", "application/cloudevents-batch+json")]);
        let out = cloudevents(&|_| Ok(src()), &batch_h, br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","source":"/s"}]"#).unwrap();
        assert!(out[0].is_ok());
        assert_eq!(out[1].as_ref().unwrap_err(), &NativeError::Missing(vec!["id".into(), "type".into()]));
        let missing = headers(&[("content-type", "application/json"), ("ce-specversion", "1.0")]);
        assert_eq!(cloudevents(&|_| Ok(src()), &missing, b"{}").unwrap_err(), NativeError::Missing(vec!["id".into(), "source".into(), "type".into()]));
        let text = headers(&[("content-type", "text/plain")]);
        assert!(matches!(cloudevents(&|_| Ok(src()), &text, b"hi").unwrap_err(), NativeError::Unsupported(_)));
    }

    #[test]
    fn a_cloudevent_goes_where_its_source_attribute_routes_it() {
        assert_eq!(ce_source_matches("/datasets/warehouse", "/datasets/warehouse"), Some(usize::MAX));
        assert_eq!(ce_source_matches("/datasets/*", "/datasets/warehouse"), Some(10));
        assert_eq!(ce_source_matches("/datasets/*", "/jobs/x"), None);
        let route = |ce: &str| if ce.starts_with("/a") { Ok(SourceName::parse("a").unwrap()) } else { Err(NativeError::Unrouted(format!("no source takes `{ce}`"))) };
        let batch_h = headers(&[("content-type", "application/cloudevents-batch+json")]);
        let out = cloudevents(&route, &batch_h, br#"[{"specversion":"1.0","id":"1","source":"/a/1","type":"t"},{"specversion":"1.0","id":"2","source":"/b","type":"t"}]"#).unwrap();
        let first: Value = serde_json::from_str(&out[0].as_ref().unwrap().envelope).unwrap();
        assert_eq!(first["source"], "a");
        assert!(matches!(out[1], Err(NativeError::Unrouted(_))));
    }

    #[test]
    fn an_openlineage_run_event_is_its_job_and_optionally_each_dataset() {
        let body = br#"{"eventType":"COMPLETE","eventTime":"2024-01-01T00:00:00Z","run":{"runId":"r1"},"job":{"namespace":"airflow","name":"etl.orders"},
            "inputs":[{"namespace":"postgres://db","name":"public.orders"}],"outputs":[{"namespace":"s3://b","name":"daily"}],"producer":"p","schemaURL":"s"}"#;
        let out = openlineage(&src(), &Native::default(), body).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, "airflow/etl.orders");
        assert_eq!(out[0].idempotency.as_deref(), Some("openlineage:r1:COMPLETE:2024-01-01T00:00:00Z"));
        let with_datasets = Native { dataset_events: true, ..Native::default() };
        let out = openlineage(&src(), &with_datasets, body).unwrap();
        let ids: Vec<&str> = out.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["airflow/etl.orders", "postgres://db/public.orders", "s3://b/daily"]);
        let output: Value = serde_json::from_str(&out[2].envelope).unwrap();
        assert_eq!(output["payload"]["direction"], "output");
        assert_eq!(output["payload"]["job"]["name"], "etl.orders");
        assert!(matches!(openlineage(&src(), &Native::default(), br#"{"eventType":"START"}"#).unwrap_err(), NativeError::Missing(_)));
    }
}
