//! The gateway's API contract (OpenAPI 3.1), generated from its handlers' annotations:
//! `GET /openapi.json` on each listener answers the operations that listener serves.
//!
//! The types here describe JSON the handlers build; schemathesis (`make test`) checks every
//! answer of the live stack against them.

use std::sync::LazyLock;

use adapters::openapi::{for_routes, with_bearer, Common};
use serde::Serialize;
use utoipa::openapi::OpenApi as Document;
use utoipa::{OpenApi, ToSchema};

/// One event as a client sends it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClientEvent)]
pub struct ClientEventDoc {
    /// The entity's id within its source; with `source`, it keys the stored record.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub id: String,
    /// The system the event comes from; its configuration decides the operations.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    pub source: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// A CloudEvent (1.0) in structured mode, as `POST /cloudevents` takes it; extension attributes
/// are kept too. No Rust type holds it: the gateway reads it as JSON (`domain::native`).
#[derive(Serialize, ToSchema)]
#[schema(as = CloudEvent)]
pub struct CloudEventDoc {
    #[schema(pattern = r"^1\.0$")]
    pub specversion: String,
    /// With `source`, the idempotency key; the entity id when there is no `subject`.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub id: String,
    /// Routes the event to the source whose `native.ce_sources` name it.
    #[schema(min_length = 1)]
    pub source: String,
    #[serde(rename = "type")]
    #[schema(min_length = 1)]
    pub r#type: String,
    /// The entity id.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub subject: Option<String>,
    /// Any JSON.
    pub data: Option<serde_json::Value>,
}

/// A CloudEvents batch (`application/cloudevents-batch+json`).
pub struct CloudEventBatchDoc;

impl utoipa::PartialSchema for CloudEventBatchDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new().items(utoipa::openapi::Ref::from_schema_name("CloudEvent")).min_items(Some(1)).into()
    }
}

impl utoipa::ToSchema for CloudEventBatchDoc {}

/// The events of `POST /ingest/batch` (at most gateway.max_batch_events, 1000 unless
/// configured otherwise).
pub struct BatchDoc;

impl utoipa::PartialSchema for BatchDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("ClientEvent"))
            .min_items(Some(1))
            .max_items(Some(1000))
            .into()
    }
}

impl ToSchema for BatchDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "Batch".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((ClientEventDoc::name().into_owned(), <ClientEventDoc as utoipa::PartialSchema>::schema()));
        schemas.push((CloudEventDoc::name().into_owned(), <CloudEventDoc as utoipa::PartialSchema>::schema()));
    }
}

/// An event Kafka acknowledged: where it is.
#[derive(Serialize, ToSchema)]
#[schema(as = Accepted)]
pub struct AcceptedDoc {
    /// `accepted`.
    pub status: String,
    pub id: String,
    pub source: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One event of a batch that was not accepted.
#[derive(Serialize, ToSchema)]
#[schema(as = Rejected)]
pub struct RejectedDoc {
    /// `rejected`.
    pub status: String,
    pub error: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = BatchResult)]
pub enum BatchResultDoc {
    Accepted(AcceptedDoc),
    Rejected(RejectedDoc),
}

/// The answer to a batch: one result per event, in order.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchAnswer)]
pub struct BatchAnswerDoc {
    pub accepted: u64,
    pub rejected: u64,
    pub results: Vec<BatchResultDoc>,
}

/// A batch of which no event was accepted: the error shape, with every event's result.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchRefused)]
pub struct BatchRefusedDoc {
    /// `batch_refused`.
    pub error: String,
    pub message: String,
    pub accepted: u64,
    pub rejected: u64,
    pub results: Vec<BatchResultDoc>,
}

/// A key's rate limits; a dimension left out is not limited.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RateLimit)]
pub struct RateLimitDoc {
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub requests_per_s: Option<f64>,
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub events_per_s: Option<f64>,
    /// Most a key may spend at once (default: one second's worth).
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub burst: Option<u32>,
}

/// `POST /v1/keys`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewKey)]
pub struct NewKeyDoc {
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub name: String,
    /// `ingest:<source-glob>`, `consume:<group-glob>`, `read:<source-glob>` or `admin`.
    #[schema(min_items = 1)]
    pub scopes: Vec<ScopeDoc>,
    /// When the key stops working (RFC 3339, in the future).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rate_limit: Option<RateLimitDoc>,
}

/// A scope: `ingest:<glob>`, `consume:<glob>`, `read:<glob>` (glob: letters, digits, `_`,
/// `.`, `-`, `*`), or `admin`.
#[derive(Serialize, ToSchema)]
#[schema(as = Scope, pattern = r"^(admin|(ingest|consume|read):[A-Za-z0-9_.*-]{1,64})$")]
pub struct ScopeDoc(pub String);

/// `PATCH /v1/keys/{id}`: what to change.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KeyChange)]
pub struct KeyChangeDoc {
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub name: Option<String>,
    #[schema(min_items = 1)]
    pub scopes: Option<Vec<ScopeDoc>>,
    /// `null` removes the expiry.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rate_limit: Option<RateLimitDoc>,
}

/// A key as the API shows it (never the key itself).
#[derive(Serialize, ToSchema)]
#[schema(as = Key)]
pub struct KeyDoc {
    pub id: String,
    pub name: String,
    pub scopes: Vec<ScopeDoc>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The id of the key that created it.
    pub created_by: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rate_limit: RateLimitDoc,
    pub last_used_at: Option<String>,
}

/// A key just created or rotated: `key` is shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = IssuedKey)]
pub struct IssuedKeyDoc {
    #[serde(flatten)]
    pub view: KeyDoc,
    /// `msk_` + 38 characters.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = KeyList)]
pub struct KeyListDoc {
    pub keys: Vec<KeyDoc>,
}

/// One admin action.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditRecord)]
pub struct AuditRecordDoc {
    pub at: String,
    /// The acting key's id.
    pub actor: String,
    pub actor_name: String,
    /// `key.create`, `key.update`, `key.rotate`, `key.revoke`, `source.put`, `source.delete`,
    /// `dead_letters.replay`.
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct AuditPageDoc {
    pub records: Vec<AuditRecordDoc>,
    pub count: u64,
    /// Pass as `cursor` for the next page.
    pub next_cursor: String,
}

/// Why a stage dead-lettered a message (`domain::DeadLetterReason`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = DeadLetterReason)]
pub enum DeadLetterReasonDoc {
    Unparseable,
    UnparseableRecord,
    RecordMissing,
    MissingConfig,
    OperationFailed,
    ProduceFailed,
    TooLarge,
}

#[derive(Serialize, ToSchema)]
#[schema(as = DeadLetterPage)]
pub struct DeadLetterPageDoc {
    #[schema(value_type = Vec<Object>)]
    pub dead_letters: Vec<serde_json::Value>,
    pub count: u64,
    pub next_cursor: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplayItem)]
pub struct ReplayItemDoc {
    pub partition: i32,
    pub offset: i64,
}

/// What to replay: `items`, or every dead letter of a `source` (optionally of one `reason`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplayRequest)]
pub struct ReplayRequestDoc {
    pub items: Option<Vec<ReplayItemDoc>>,
    pub source: Option<String>,
    pub reason: Option<DeadLetterReasonDoc>,
    pub force: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ReplayAnswer)]
pub struct ReplayAnswerDoc {
    #[schema(value_type = Vec<Object>)]
    pub replayed: Vec<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub skipped: Vec<serde_json::Value>,
}

/// `POST /v1/sources/{source}/preview`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PreviewRequest)]
pub struct PreviewRequestDoc {
    pub event: ClientEventDoc,
    /// A config to try instead of the stored one.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SourceList)]
pub struct SourceListDoc {
    #[schema(value_type = Vec<Object>)]
    pub sources: Vec<serde_json::Value>,
}

/// How a subscription's deliveries look: `metastream` (`{"type", "timestamp", "data"}`,
/// `application/json`) or `cloudevents` (CloudEvents 1.0 structured JSON).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = WebhookFormat)]
pub enum WebhookFormatDoc {
    Metastream,
    Cloudevents,
}

/// `POST /v1/subscriptions`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewSubscription)]
pub struct NewSubscriptionDoc {
    /// Where deliveries are POSTed (http or https).
    #[schema(max_length = 2048)]
    pub url: String,
    #[schema(max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
    /// A condition in the operations' `when` language; events it rejects are not sent.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    /// A projection (`payload.title,metadata.tags`).
    pub fields: Option<String>,
    pub format: Option<WebhookFormatDoc>,
    /// `latest` (default), `earliest`, or an RFC 3339 time.
    pub from: Option<String>,
}

/// `PATCH /v1/subscriptions/{id}`: what to change (`null` removes description, filter or
/// fields).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SubscriptionChange)]
pub struct SubscriptionChangeDoc {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    pub fields: Option<String>,
    pub format: Option<WebhookFormatDoc>,
    /// `active` or `disabled`.
    pub state: Option<String>,
}

/// A subscription (never its secret).
#[derive(Serialize, ToSchema)]
#[schema(as = Subscription)]
pub struct SubscriptionDoc {
    /// `sub_` + 32 hex digits.
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    pub fields: Option<String>,
    pub format: WebhookFormatDoc,
    /// `active` or `disabled`.
    pub state: String,
    pub disabled_reason: Option<String>,
    pub secret_generation: u32,
    pub previous_secret_until: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
    /// The Kafka consumer group that holds its position.
    pub consumer_group: String,
}

/// A subscription just created or with a rotated secret: `secret` (`whsec_…`) verifies its
/// signatures.
#[derive(Serialize, ToSchema)]
#[schema(as = IssuedSubscription)]
pub struct IssuedSubscriptionDoc {
    #[serde(flatten)]
    pub view: SubscriptionDoc,
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SubscriptionList)]
pub struct SubscriptionListDoc {
    pub subscriptions: Vec<SubscriptionDoc>,
}

/// How a subscription's deliveries are going.
#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryStatus)]
pub struct DeliveryStatusDoc {
    /// Events of the output topic not yet delivered, passed over or dead-lettered (null when
    /// Kafka could not be asked).
    pub lag: Option<i64>,
    pub last_success_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub dead_letters_pending: u64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SubscriptionWithStatus)]
pub struct SubscriptionStatusDoc {
    #[serde(flatten)]
    pub view: SubscriptionDoc,
    pub status: DeliveryStatusDoc,
}

/// A delivery whose retries were spent.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDeadLetter)]
pub struct WebhookDeadLetterDoc {
    pub webhook_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The body as sent.
    pub body: String,
    pub content_type: String,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SubscriptionDeadLetters)]
pub struct SubscriptionDeadLettersDoc {
    pub subscription: String,
    pub count: usize,
    pub dead_letters: Vec<WebhookDeadLetterDoc>,
}

/// `POST /v1/subscriptions/{id}/dead-letters/replay`: which (all when `ids` is left out).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookReplayRequest)]
pub struct WebhookReplayRequestDoc {
    pub ids: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WebhookReplayAccepted)]
pub struct WebhookReplayAcceptedDoc {
    pub subscription: String,
    pub requested: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "metastream gateway", description = "Ingest (public listener, gateway.listen) and the admin API (admin listener, gateway.admin_listen)."),
    components(schemas(BatchRefusedDoc)),
    paths(
        crate::routes::ingest,
        crate::routes::ingest_batch,
        crate::hooks::hook,
        crate::hooks::cloudevents,
        crate::hooks::lineage,
        crate::hooks::datahub_config,
        crate::hooks::datahub_aspects,
        crate::admin::list,
        crate::admin::get,
        crate::admin::put,
        crate::admin::delete,
        crate::admin::preview,
        crate::admin::rotate_secret,
        crate::admin::operations,
        crate::keys::create,
        crate::keys::list,
        crate::keys::get,
        crate::keys::update,
        crate::keys::rotate,
        crate::keys::revoke,
        crate::audit::list,
        crate::dead_letters::list,
        crate::dead_letters::replay,
        crate::subscriptions::create,
        crate::subscriptions::list,
        crate::subscriptions::get,
        crate::subscriptions::update,
        crate::subscriptions::delete,
        crate::subscriptions::rotate_secret,
        crate::subscriptions::dead_letters,
        crate::subscriptions::replay,
    ),
    servers((url = "/"))
)]
struct Gateway;

/// Every operation of the gateway, both listeners.
pub fn document() -> Document {
    let mut doc = Gateway::openapi();
    doc.merge(Common::openapi());
    with_bearer(doc)
}

static FULL: LazyLock<Document> = LazyLock::new(document);

/// The public listener's contract.
pub fn public() -> Document {
    for_routes(&FULL, &public_routes())
}

/// The admin listener's contract.
pub fn admin() -> Document {
    for_routes(&FULL, &admin_routes())
}

pub(crate) fn configure_public(cfg: &mut actix_web::web::ServiceConfig) {
    adapters::openapi::serve(cfg, &public());
}

pub(crate) fn configure_admin(cfg: &mut actix_web::web::ServiceConfig) {
    adapters::openapi::serve(cfg, &admin());
}

pub(crate) fn public_routes() -> Vec<&'static [(&'static str, &'static str)]> {
    vec![adapters::http::HEALTH_ROUTES, crate::routes::ROUTES, crate::hooks::ROUTES, adapters::openapi::ROUTES]
}

pub(crate) fn admin_routes() -> Vec<&'static [(&'static str, &'static str)]> {
    vec![
        adapters::http::HEALTH_ROUTES,
        adapters::http::METRICS_ROUTES,
        crate::admin::ROUTES,
        crate::keys::ROUTES,
        crate::audit::ROUTES,
        crate::dead_letters::ROUTES,
        crate::subscriptions::ROUTES,
        adapters::openapi::ROUTES,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_the_listeners_serve_and_no_other() {
        let doc = document();
        let tables: Vec<_> = public_routes().into_iter().chain(admin_routes()).collect();
        assert_eq!(adapters::openapi::operations(&doc), adapters::openapi::served(&tables));
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        // Every operation but health and the document itself needs a key.
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str());
                assert_eq!(op.get("security").is_some(), !public, "{method} {path}");
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_documented_dead_letter_reasons_are_the_pipeline_s() {
        let doc = serde_json::to_value(document()).unwrap();
        let documented = &doc["components"]["schemas"]["DeadLetterReason"]["enum"];
        let actual: Vec<&str> = domain::DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(documented, &serde_json::json!(actual));
    }

    #[test]
    fn each_listener_documents_what_it_serves() {
        let public = adapters::openapi::operations(&public());
        assert!(public.contains(&("POST".into(), "/ingest".into())));
        assert!(!public.iter().any(|(_, p)| p.starts_with("/v1")), "{public:?}");
        let admin = adapters::openapi::operations(&admin());
        assert!(admin.contains(&("POST".into(), "/v1/keys".into())));
        assert!(!admin.iter().any(|(_, p)| p == "/ingest"), "{admin:?}");
    }
}
