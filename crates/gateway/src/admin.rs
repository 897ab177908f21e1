//! The admin API, behind admin tokens distinct from the ingest tokens:
//!
//! - `GET /v1/sources`, `GET|PUT|DELETE /v1/sources/{source}` (optimistic concurrency:
//!   `If-Match: <version>` answers 412 on mismatch; `ETag` carries the version),
//! - `GET /v1/operations`: the operation catalog,
//! - `POST /v1/sources/{source}/preview`: runs pre then post operations on a sample event
//!   without touching Kafka or the store.
//!
//! A config is compiled before it is stored: every problem is reported at once, located.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::{read_body, require_json, ApiError};
use adapters::sources::Versioned;
use domain::{CompiledSource, Event, SourceConfig, SourceName};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::State;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sources", web::get().to(list))
        .route("/v1/sources/{source}", web::get().to(get))
        .route("/v1/sources/{source}", web::put().to(put))
        .route("/v1/sources/{source}", web::delete().to(delete))
        .route("/v1/sources/{source}/preview", web::post().to(preview))
        .route("/v1/operations", web::get().to(operations));
}

pub(crate) fn authorize(req: &HttpRequest, state: &State) -> Result<(), ApiError> {
    match &state.admin_tokens {
        Some(tokens) => tokens.verify(req),
        None => Err(ApiError::Forbidden("the admin API is off: set auth.admin_tokens".into())),
    }
}

fn source_name(raw: &str) -> Result<SourceName, ApiError> {
    SourceName::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
    text.parse::<u64>().map(Some).map_err(|_| ApiError::BadRequest("If-Match must be a config version number".into()))
}

fn unavailable(state: &State, err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable { what: format!("redis: {err}"), retry_after_s: state.retry_after_s }
}

async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let raw = state.catalog.store().load_all().await.map_err(|e| unavailable(&state, e))?;
    let mut sources: Vec<Value> = raw.values().filter_map(|r| serde_json::from_str(r).ok()).collect();
    sources.sort_by(|a, b| a["source"].as_str().cmp(&b["source"].as_str()));
    Ok(HttpResponse::Ok().json(json!({"sources": sources})))
}

async fn get(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let name = source_name(&path)?;
    match state.catalog.store().get(name.as_str()).await.map_err(|e| unavailable(&state, e))? {
        Some(config) => Ok(HttpResponse::Ok()
            .insert_header((header::ETAG, format!("\"{}\"", config.version)))
            .json(config)),
        None => Err(ApiError::NotFound(format!("source `{name}` has no configuration"))),
    }
}

/// Parses a config body for `name`: `source` may be omitted, `version` is ignored (the store
/// assigns it).
fn parse_config(name: &SourceName, body: &[u8]) -> Result<SourceConfig, ApiError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let obj = value.as_object_mut().ok_or_else(|| ApiError::BadRequest("body must be a JSON object".into()))?;
    match obj.get("source") {
        None => {
            obj.insert("source".into(), json!(name));
        }
        Some(s) if s == &json!(name) => {}
        Some(s) => return Err(ApiError::BadRequest(format!("body names source {s}, the path `{name}`"))),
    }
    obj.remove("version");
    serde_json::from_value(value).map_err(|e| {
        ApiError::InvalidConfig(vec![domain::ConfigError { location: "(config)".into(), message: e.to_string() }])
    })
}

async fn put(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    require_json(&req)?;
    let name = source_name(&path)?;
    let expected = if_match(&req)?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let config = parse_config(&name, &body)?;
    CompiledSource::compile(config.clone()).map_err(ApiError::InvalidConfig)?;
    match state.catalog.store().put(&config, expected).await.map_err(|e| unavailable(&state, e))? {
        Versioned::Done(version) => {
            tracing::info!(source = %name, version, "source config stored");
            let stored = SourceConfig { version, ..config };
            Ok(HttpResponse::Ok().insert_header((header::ETAG, format!("\"{version}\""))).json(stored))
        }
        Versioned::Conflict(current) => Err(ApiError::PreconditionFailed(format!(
            "source `{name}` is at version {current}, not {}",
            expected.unwrap_or_default()
        ))),
    }
}

async fn delete(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let name = source_name(&path)?;
    let expected = if_match(&req)?;
    match state.catalog.store().delete(name.as_str(), expected).await.map_err(|e| unavailable(&state, e))? {
        Some(Versioned::Done(_)) => {
            tracing::info!(source = %name, "source config deleted");
            Ok(HttpResponse::NoContent().finish())
        }
        Some(Versioned::Conflict(current)) => Err(ApiError::PreconditionFailed(format!(
            "source `{name}` is at version {current}, not {}",
            expected.unwrap_or_default()
        ))),
        None => Err(ApiError::NotFound(format!("source `{name}` has no configuration"))),
    }
}

async fn operations(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    Ok(HttpResponse::Ok().json(domain::describe_catalog()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    event: Value,
    /// A config to try instead of the stored one (not saved).
    #[serde(default)]
    config: Option<Value>,
}

async fn preview(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    require_json(&req)?;
    let name = source_name(&path)?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let request: PreviewRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid preview request: {e}")))?;
    let compiled = match request.config {
        Some(config) => {
            let config = parse_config(&name, config.to_string().as_bytes())?;
            CompiledSource::compile(config).map_err(ApiError::InvalidConfig)?
        }
        None => {
            let config = state
                .catalog
                .store()
                .get(name.as_str())
                .await
                .map_err(|e| unavailable(&state, e))?
                .ok_or_else(|| ApiError::NotFound(format!("source `{name}` has no configuration; send one in `config`")))?;
            CompiledSource::compile(config).map_err(ApiError::InvalidConfig)?
        }
    };
    let mut event = Event::from_client_value(request.event).map_err(|e| ApiError::InvalidEvent(e.to_string()))?;
    if event.source != name {
        return Err(ApiError::BadRequest(format!("the event's source is `{}`, the path `{name}`", event.source)));
    }
    event.received_at = Some(domain::event::now_rfc3339());
    let trace = crate::preview::run(&compiled, event, &state.instance);
    Ok(HttpResponse::Ok().json(trace))
}
