//! The admin API, on the admin listener. What concerns sources may be seen by a key whose
//! `read:<glob>` scopes cover them ([`authorize_view`], [`require_view`]: lists filtered to
//! those sources); every change needs the `admin` scope ([`authorize`]):
//!
//! - `GET /v1/sources`, `GET|PUT|DELETE /v1/sources/{source}` (optimistic concurrency:
//!   `If-Match: <version>` answers 412 on mismatch; `ETag` carries the version),
//! - `GET /v1/operations`: the operation catalog,
//! - `POST /v1/sources/{source}/preview`: runs pre then post operations on a sample event
//!   without touching Kafka or the store.
//! - `POST /v1/sources/{source}/secret`: a new secret for a source whose sender signs its
//!   requests (kind `github`, `jira`); the previous one is honoured for an overlap.
//!
//! A config is compiled before it is stored: every problem is reported at once, located.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::{read_body, require_json, Problem, RequestError};
use adapters::sources::Versioned;
use adapters::auth::Principal;
use domain::auth::Access;
use domain::source::Signing;
use domain::{CompiledSource, Event, SourceConfig, SourceName};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    GET "/v1/sources" => list,
    GET "/v1/sources/{source}" => get,
    PUT "/v1/sources/{source}" => put,
    DELETE "/v1/sources/{source}" => delete,
    POST "/v1/sources/{source}/preview" => preview,
    POST "/v1/sources/{source}/secret" => rotate_secret,
    GET "/v1/operations" => operations,
} }

/// The caller, if its key has the `admin` scope: checked before anything else by every route
/// that changes something, and by those that reveal other principals (keys, subscriptions,
/// audit).
pub(crate) fn authorize(req: &HttpRequest, state: &State) -> Result<std::sync::Arc<Principal>, AdminError> {
    Ok(state.auth.authorize(req, Access::Admin)?)
}

/// The caller, if its key may see some source (`admin`, or any `read:` scope): checked before
/// anything else by the routes that only show sources. Each source shown is then checked with
/// [`may_view`] or [`require_view`].
pub(crate) fn authorize_view(req: &HttpRequest, state: &State) -> Result<std::sync::Arc<Principal>, AdminError> {
    Ok(state.auth.authorize(req, Access::AnyView)?)
}

/// Whether `principal` may see `source` (a list leaves out what it may not).
pub(crate) fn may_view(principal: &Principal, source: &str) -> bool {
    principal.scopes.allows(Access::View(source))
}

/// # Errors
/// 403 naming `read:<source>` when `principal` may not see `source`.
pub(crate) fn require_view(principal: &Principal, source: &str) -> Result<(), AdminError> {
    Ok(principal.require(Access::View(source))?)
}

fn source_name(raw: &str) -> Result<SourceName, AdminError> {
    SourceName::parse(raw).map_err(|e| AdminError::bad_request(e.to_string()))
}

fn if_match(req: &HttpRequest) -> Result<Option<u64>, AdminError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    text.parse::<u64>().map(Some).map_err(|_| AdminError::bad_request("If-Match must be a config version number"))
}

pub(crate) fn unavailable(state: &State, err: impl std::fmt::Display) -> AdminError {
    AdminError::Request(RequestError::Unavailable { what: format!("redis: {err}"), retry_after_s: state.retry_after_s })
}

/// `GET /v1/sources`.
#[derive(Serialize, utoipa::ToSchema)]
struct SourceList {
    /// As stored, by name.
    #[schema(value_type = Vec<Object>)]
    sources: Vec<Value>,
}

#[utoipa::path(get, path = "/v1/sources", operation_id = "list_sources", tag = "admin",
    description = "Scope: `admin` (every source) or `read:<glob>` (the sources it covers; the others are left out).",
    responses((status = 200, description = "Every stored source configuration the key may see", body = SourceList), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = ["admin", "read:<source>"])))]
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let principal = authorize_view(&req, &state)?;
    let raw = state.catalog.store().load_all().await.map_err(|e| unavailable(&state, e))?;
    let mut sources: Vec<Value> = raw
        .values()
        .filter_map(|r| serde_json::from_str::<Value>(r).ok())
        .filter(|c| c["source"].as_str().is_some_and(|s| may_view(&principal, s)))
        .collect();
    sources.sort_by(|a, b| a["source"].as_str().cmp(&b["source"].as_str()));
    Ok(HttpResponse::Ok().json(SourceList { sources }))
}

#[utoipa::path(get, path = "/v1/sources/{source}", operation_id = "get_source", tag = "admin",
    description = "Scope: `admin`, or `read:<glob>` covering the source.",
    params(("source" = String, Path, description = "Source name")),
    responses(
        (status = 200, description = "The configuration; `ETag` carries its version", body = Object,
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 404, description = "No configuration", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = ["admin", "read:<source>"])))]
async fn get(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let principal = authorize_view(&req, &state)?;
    let name = source_name(&path)?;
    require_view(&principal, name.as_str())?;
    match state.catalog.store().get(name.as_str()).await.map_err(|e| unavailable(&state, e))? {
        Some(config) => Ok(HttpResponse::Ok()
            .insert_header((header::ETAG, format!("\"{}\"", config.version)))
            .json(config)),
        None => Err(AdminError::not_found(format!("source `{name}` has no configuration"))),
    }
}

/// Parses a config body for `name`: `source` may be omitted, `version` is ignored (the store
/// assigns it).
fn parse_config(name: &SourceName, body: &[u8]) -> Result<SourceConfig, AdminError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| AdminError::bad_request(format!("body is not valid JSON: {e}")))?;
    let obj = value.as_object_mut().ok_or_else(|| AdminError::bad_request("body must be a JSON object"))?;
    match obj.get("source") {
        None => {
            obj.insert("source".into(), json!(name));
        }
        Some(s) if s == &json!(name) => {}
        Some(s) => return Err(AdminError::bad_request(format!("body names source {s}, the path `{name}`"))),
    }
    obj.remove("version");
    serde_json::from_value(value).map_err(|e| {
        AdminError::InvalidConfig(vec![domain::ConfigError { location: "(config)".into(), message: e.to_string() }])
    })
}

#[utoipa::path(put, path = "/v1/sources/{source}", operation_id = "put_source", tag = "admin",
    description = "Compiles, then stores the configuration with the next version; every service applies it within milliseconds. Scope: `admin`.",
    params(("source" = String, Path, description = "Source name"),
        ("If-Match" = Option<String>, Header, description = "Store only if the stored version is this one")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = Object, headers(("ETag" = String, description = "The new version"))),
        (status = 412, description = "The stored version is another one", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn put(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    require_json(&req)?;
    let name = source_name(&path)?;
    let expected = if_match(&req)?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let mut config = parse_config(&name, &body)?;
    CompiledSource::compile(config.clone()).map_err(AdminError::InvalidConfig)?;
    // `signing` is the gateway's: kept from the stored config, or begun for a new signed source.
    let kept = state.catalog.store().get(name.as_str()).await.map_err(|e| unavailable(&state, e))?.and_then(|c| c.signing);
    let new_secret = config.kind.is_signed() && kept.is_none();
    if config.kind.is_signed() {
        secret_base(&state)?;
    }
    config.signing = if config.kind.is_signed() { Some(kept.unwrap_or(Signing { generation: 1, previous_until: None })) } else { kept };
    match state.catalog.store().put(&config, expected).await.map_err(|e| unavailable(&state, e))? {
        Versioned::Done(version) => {
            tracing::info!(source = %name, version, "source config stored");
            crate::audit::record(&state, &admin, "source.put", name.as_str(), json!({"version": version})).await;
            let stored = SourceConfig { version, ..config };
            let mut answer = serde_json::to_value(&stored).expect("a SourceConfig serializes");
            if new_secret {
                // Shown once: derived, never stored.
                answer["secret"] = json!(source_secret(&state, &name, 1)?);
            }
            Ok(HttpResponse::Ok().insert_header((header::ETAG, format!("\"{version}\""))).json(answer))
        }
        Versioned::Conflict(current) => Err(AdminError::PreconditionFailed(format!(
            "source `{name}` is at version {current}, not {}",
            expected.unwrap_or_default()
        ))),
    }
}

/// The server secret a signed source's secret derives from.
fn secret_base(state: &State) -> Result<&[u8], AdminError> {
    state.server_secret.as_deref().ok_or_else(|| AdminError::Conflict("signed sources (kind github, jira) need auth.key_secret (METASTREAM__AUTH__KEY_SECRET)".into()))
}

/// The secret of generation `generation` of source `name`, as its sender is configured with it.
fn source_secret(state: &State, name: &SourceName, generation: u32) -> Result<String, AdminError> {
    Ok(domain::webhooks::WebhookSecret::derive(secret_base(state)?, &Signing::label(name.as_str()), generation).expose())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSecret {
    /// How long the previous secret stays valid, in seconds (default one day, at most 30 days).
    #[serde(default = "default_overlap")]
    overlap_s: u64,
}

fn default_overlap() -> u64 {
    86_400
}

#[utoipa::path(post, path = "/v1/sources/{source}/secret", operation_id = "rotate_source_secret", tag = "admin",
    description = "A new secret for a source of kind github or jira, shown once in the answer: configure the sender with it. The previous secret is honoured for `overlap_s` more seconds.",
    params(("source" = String, Path, description = "Source name")),
    request_body(content = Option<RotateSecret>, content_type = "application/json"),
    responses(
        (status = 200, description = "The new secret, its generation, and until when the previous one is honoured", body = Object),
        (status = 404, description = "No such source", body = adapters::http::ErrorBody),
        (status = 409, description = "The source's kind is not signed, or auth.key_secret is not set", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn rotate_secret(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let name = source_name(&path)?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let options: RotateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecret { overlap_s: default_overlap() }
    } else {
        require_json(&req)?;
        serde_json::from_slice(&body).map_err(|e| AdminError::bad_request(format!("body: {e}")))?
    };
    if options.overlap_s > 30 * 86_400 {
        return Err(AdminError::bad_request("overlap_s is at most 2592000 (30 days)"));
    }
    secret_base(&state)?;
    // Optimistic: read, count up, store if nobody changed it meanwhile.
    for _ in 0..5 {
        let Some(mut config) = state.catalog.store().get(name.as_str()).await.map_err(|e| unavailable(&state, e))? else {
            return Err(AdminError::not_found(format!("source `{name}` has no configuration")));
        };
        if !config.kind.is_signed() {
            return Err(AdminError::Conflict(format!("source `{name}` is of kind {}: only github and jira sources sign their requests", config.kind.as_str())));
        }
        let generation = config.signing.map_or(1, |s| s.generation + 1);
        let previous_until = (generation > 1).then(|| chrono::Utc::now().timestamp() + options.overlap_s as i64);
        config.signing = Some(Signing { generation, previous_until });
        if let Versioned::Done(version) = state.catalog.store().put(&config, Some(config.version)).await.map_err(|e| unavailable(&state, e))? {
            tracing::info!(source = %name, generation, version, "source secret rotated");
            crate::audit::record(&state, &admin, "source.secret_rotated", name.as_str(), json!({"generation": generation, "version": version})).await;
            return Ok(HttpResponse::Ok().insert_header((header::ETAG, format!("\"{version}\""))).json(json!({
                "source": name,
                "secret": source_secret(&state, &name, generation)?,
                "generation": generation,
                "previous_valid_until": previous_until.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()),
            })));
        }
    }
    Err(AdminError::PreconditionFailed(format!("source `{name}` kept changing while its secret was rotated; try again")))
}

#[utoipa::path(delete, path = "/v1/sources/{source}", operation_id = "delete_source", tag = "admin",
    description = "Scope: `admin`.",
    params(("source" = String, Path, description = "Source name"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the stored version is this one")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No configuration", body = adapters::http::ErrorBody),
        (status = 412, description = "The stored version is another one", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn delete(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let name = source_name(&path)?;
    let expected = if_match(&req)?;
    match state.catalog.store().delete(name.as_str(), expected).await.map_err(|e| unavailable(&state, e))? {
        Some(Versioned::Done(version)) => {
            tracing::info!(source = %name, "source config deleted");
            crate::audit::record(&state, &admin, "source.delete", name.as_str(), json!({"version": version})).await;
            Ok(HttpResponse::NoContent().finish())
        }
        Some(Versioned::Conflict(current)) => Err(AdminError::PreconditionFailed(format!(
            "source `{name}` is at version {current}, not {}",
            expected.unwrap_or_default()
        ))),
        None => Err(AdminError::not_found(format!("source `{name}` has no configuration"))),
    }
}

#[utoipa::path(get, path = "/v1/operations", operation_id = "list_operations", tag = "admin",
    description = "Scope: `admin`, or any `read:` scope.",
    responses((status = 200, description = "Every operation with its parameters and an example", body = Object), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = ["admin", "read:<source>"])))]
async fn operations(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    authorize_view(&req, &state)?;
    Ok(HttpResponse::Ok().json(domain::describe_catalog()))
}

/// `POST /v1/sources/{source}/preview`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    // `Event::from_client_value` takes what `ClientEvent::parse` takes: ClientEvent's schema.
    #[schema(value_type = domain::ClientEvent)]
    event: Value,
    /// A config to try instead of the stored one (not saved).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<Value>,
}

#[utoipa::path(post, path = "/v1/sources/{source}/preview", operation_id = "preview_source", tag = "admin",
    description = "Runs pre then post operations on a sample event; stores and publishes nothing. Scope: `admin`, or `read:<glob>` covering the source.",
    params(("source" = String, Path, description = "Source name")),
    request_body(content = PreviewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What each operation did", body = Object),
        (status = 404, description = "No stored configuration and none sent", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = ["admin", "read:<source>"])))]
async fn preview(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let principal = authorize_view(&req, &state)?;
    require_json(&req)?;
    let name = source_name(&path)?;
    require_view(&principal, name.as_str())?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let request: PreviewRequest =
        serde_json::from_slice(&body).map_err(|e| AdminError::bad_request(format!("invalid preview request: {e}")))?;
    let compiled = match request.config {
        Some(config) => {
            let config = parse_config(&name, config.to_string().as_bytes())?;
            CompiledSource::compile(config).map_err(AdminError::InvalidConfig)?
        }
        None => {
            let config = state
                .catalog
                .store()
                .get(name.as_str())
                .await
                .map_err(|e| unavailable(&state, e))?
                .ok_or_else(|| AdminError::not_found(format!("source `{name}` has no configuration; send one in `config`")))?;
            CompiledSource::compile(config).map_err(AdminError::InvalidConfig)?
        }
    };
    let mut event = Event::from_client_value(request.event).map_err(|e| AdminError::InvalidEvent(e.to_string()))?;
    if event.source != name {
        return Err(AdminError::bad_request(format!("the event's source is `{}`, the path `{name}`", event.source)));
    }
    event.received_at = Some(domain::event::now_rfc3339());
    let trace = crate::preview::run(&compiled, event, &state.instance);
    Ok(HttpResponse::Ok().json(trace))
}

/// What the admin API (`/v1/...`) answers besides 2xx.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The request conflicts with the server's state (e.g. `/v1/keys` without `auth.key_secret`).
    #[error("{0}")]
    Conflict(String),
    #[error("the source configuration has {} error(s)", .0.len())]
    InvalidConfig(Vec<domain::ConfigError>),
    /// `If-Match` names another version than the stored one.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A preview's event is not one metastream takes.
    #[error("{0}")]
    InvalidEvent(String),
}

impl AdminError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        AdminError::Request(RequestError::BadRequest(message.into()))
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        AdminError::Request(RequestError::NotFound(message.into()))
    }

    pub(crate) fn internal(err: anyhow::Error) -> Self {
        AdminError::Request(RequestError::Internal(err))
    }
}

impl Problem for AdminError {
    fn status(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            AdminError::Request(e) => e.status(),
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::InvalidConfig(_) | AdminError::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            AdminError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AdminError::Request(e) => e.code(),
            AdminError::Conflict(_) => "conflict",
            AdminError::InvalidConfig(_) => "invalid_config",
            AdminError::PreconditionFailed(_) => "version_mismatch",
            AdminError::InvalidEvent(_) => "invalid_event",
        }
    }

    fn details(&self, body: &mut serde_json::Map<String, serde_json::Value>) {
        match self {
            AdminError::Request(e) => e.details(body),
            AdminError::InvalidConfig(errors) => {
                body.insert("errors".into(), serde_json::json!(errors));
            }
            _ => {}
        }
    }

    fn headers(&self, response: &mut actix_web::HttpResponseBuilder) {
        if let AdminError::Request(e) = self {
            e.headers(response);
        }
    }
}

adapters::problem_response!(AdminError);
