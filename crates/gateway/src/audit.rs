//! The audit trail: every admin action (a key created, changed, rotated or revoked; a source
//! config stored or deleted; dead letters replayed) appended to the audit topic
//! (`kafka.topics.audit`, one partition, so in order) as `{"at", "actor", "actor_name",
//! "action", "target", "details"}`; `actor` is the acting key's id. `GET /v1/audit` reads it,
//! oldest first, a page at a time.
//!
//! A record is written after its action succeeded and before the answer. When Kafka does not
//! take it, the action still stands (it cannot be undone), the failure is logged at ERROR and
//! counted in `metastream_audit_failures_total`, which operators alert on.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::auth::Principal;
use serde::{Deserialize, Serialize};
use adapters::kafka::message::Message as _;
use serde_json::Value;
use utoipa::ToSchema;

use crate::admin::AdminError;
use crate::dead_letters::{format_cursor, kafka_unavailable, parse_cursor, scan};
use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    GET "/v1/audit" => list,
} }

const MAX_PAGE: usize = 1000;

/// One admin action, as the audit topic holds it.
#[derive(Serialize, ToSchema)]
struct AuditRecord<'a> {
    /// When (RFC 3339, UTC).
    at: String,
    /// The acting key's id.
    actor: &'a str,
    actor_name: &'a str,
    /// `key.create`, `key.update`, `key.rotate`, `key.revoke`, `source.put`, `source.delete`,
    /// `source.secret_rotated`, `subscription.create`, `subscription.update`,
    /// `subscription.rotate_secret`, `subscription.delete`, `subscription.replay`,
    /// `dead_letters.replay`.
    action: &'a str,
    /// What it acted on: a key, source or subscription id, or the dead-letter topic.
    target: &'a str,
    /// What the action changed.
    #[schema(value_type = Object)]
    details: Value,
}

/// A page of the audit trail.
#[derive(Serialize, ToSchema)]
struct AuditPage {
    /// Oldest first.
    #[schema(value_type = Vec<AuditRecord>)]
    records: Vec<Value>,
    count: usize,
    /// Pass as `cursor` for the next page.
    next_cursor: String,
}

/// Appends one admin action to the audit topic.
pub(crate) async fn record(state: &State, actor: &Principal, action: &str, target: &str, details: Value) {
    let record = AuditRecord {
        at: domain::event::now_rfc3339(),
        actor: &actor.id,
        actor_name: &actor.name,
        action,
        target,
        details,
    };
    let record = serde_json::to_string(&record).expect("an audit record serializes");
    let audit = adapters::kafka::Record { topic: &state.audit_topic, key: Some(target.as_bytes()), payload: record.as_bytes(), headers: Vec::new() };
    let delivery = adapters::kafka::send(&state.producer, audit, Duration::from_millis(100), state.produce_timeout + Duration::from_secs(1)).await;
    if delivery.is_err() {
        state.metrics.audit_failures.add(1, &[]);
        tracing::error!(action, target, actor = %actor.id, "the audit record of an admin action was not written to kafka: {record}");
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    /// `partition:offset`: where the previous page stopped.
    cursor: Option<String>,
}

/// `GET /v1/audit?limit=&cursor=`: audit records, oldest first; `next_cursor` continues.
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "admin",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Records per page (100)"),
        ("cursor" = Option<String>, Query, pattern = r"^([0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*)?$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "Admin actions, oldest first", body = AuditPage), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    crate::admin::authorize(&req, &state)?;
    let query: ListQuery = adapters::http::query(&req)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::bad_request(format!("`limit` must be between 1 and {MAX_PAGE}")));
    }
    let start = parse_cursor(query.cursor.as_deref())?;
    let st = state.clone();
    let adapters::kafka::Scanned { messages: kept, position, .. } = web::block(move || scan(&st, &st.audit_topic, &start, limit, |_| true))
        .await
        .map_err(|e| AdminError::internal(anyhow::anyhow!("{e}")))?
        .map_err(|e| kafka_unavailable(&state, e))?;
    let records: Vec<Value> = kept
        .iter()
        .filter_map(|m| m.payload().and_then(|p| serde_json::from_slice::<Value>(p).ok()))
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage { count: records.len(), records, next_cursor: format_cursor(&position) }))
}
