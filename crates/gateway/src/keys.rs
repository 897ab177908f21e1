//! API keys in the admin API (`admin` scope):
//!
//! - `POST /v1/keys` `{"name", "scopes", "expires_at"?, "rate_limit"?}`: a new key; the answer
//!   holds the key itself, shown this once (Redis keeps only its HMAC).
//! - `GET /v1/keys`, `GET /v1/keys/{id}`: what each key may do, when it expires, when it was
//!   last used; never the key.
//! - `PATCH /v1/keys/{id}`: change its name, scopes, expiry or rate limit.
//! - `POST /v1/keys/{id}/rotate`: a new key for the same id, scopes and limits; the old one
//!   stops working at once.
//! - `DELETE /v1/keys/{id}`: revoke.
//!
//! Each change is announced on pub/sub: every replica applies it within milliseconds. Each is
//! recorded in the audit trail.

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::auth::{is_key_id, issue, new_key_id, KeyHasher, KeyRecord};
use adapters::http::{read_body, require_json, RequestError};
use chrono::{DateTime, Utc};
use domain::auth::{RateLimit, Scopes};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::admin::{authorize, AdminError};
use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    POST "/v1/keys" => create,
    GET "/v1/keys" => list,
    GET "/v1/keys/{id}" => get,
    PATCH "/v1/keys/{id}" => update,
    POST "/v1/keys/{id}/rotate" => rotate,
    DELETE "/v1/keys/{id}" => revoke,
} }

/// `POST /v1/keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    name: String,
    /// `ingest:<source-glob>`, `consume:<group-glob>`, `read:<source-glob>` or `admin`.
    #[schema(value_type = Vec<domain::auth::Scope>, min_items = 1)]
    scopes: Scopes,
    /// When the key stops working (RFC 3339, in the future).
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// Default: auth.default_rate_limit.
    #[serde(default)]
    rate_limit: Option<RateLimit>,
}

/// `PATCH /v1/keys/{id}`: what to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyChange {
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    name: Option<String>,
    #[schema(value_type = Option<Vec<domain::auth::Scope>>, min_items = 1)]
    scopes: Option<Scopes>,
    /// `null` removes the expiry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    expires_at: Option<Option<DateTime<Utc>>>,
    rate_limit: Option<RateLimit>,
}

/// Tells a member set to `null` (Some(None)) from one left out (None).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
    Option::<DateTime<Utc>>::deserialize(d).map(Some)
}

fn hasher(state: &State) -> Result<&KeyHasher, AdminError> {
    state
        .auth
        .hasher()
        .ok_or_else(|| AdminError::Conflict("API keys are off: set auth.key_secret (METASTREAM__AUTH__KEY_SECRET)".into()))
}

fn unavailable(state: &State, err: impl std::fmt::Display) -> AdminError {
    AdminError::Request(RequestError::Unavailable { what: format!("redis: {err}"), retry_after_s: state.retry_after_s })
}

fn check_name(name: &str) -> Result<(), AdminError> {
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(AdminError::bad_request("`name` must be 1 to 128 printable characters"));
    }
    Ok(())
}

fn check_scopes(scopes: &Scopes) -> Result<(), AdminError> {
    if scopes.is_empty() {
        return Err(AdminError::bad_request("`scopes` must name at least one scope"));
    }
    Ok(())
}

fn check_rate_limit(limit: &RateLimit) -> Result<(), AdminError> {
    limit.validate().map_err(AdminError::bad_request)
}

/// A key as the API shows it (never the key itself).
#[derive(Serialize, ToSchema)]
#[schema(as = Key)]
struct KeyView<'a> {
    id: &'a str,
    name: &'a str,
    #[schema(value_type = Vec<domain::auth::Scope>)]
    scopes: &'a Scopes,
    created_at: DateTime<Utc>,
    /// The id of the key that created it.
    created_by: &'a str,
    expires_at: Option<DateTime<Utc>>,
    rate_limit: RateLimit,
    last_used_at: Option<&'a str>,
}

fn view<'a>(record: &'a KeyRecord, last_used: Option<&'a String>) -> KeyView<'a> {
    KeyView {
        id: &record.id,
        name: &record.name,
        scopes: &record.scopes,
        created_at: record.created_at,
        created_by: &record.created_by,
        expires_at: record.expires_at,
        rate_limit: record.rate_limit,
        last_used_at: last_used.map(String::as_str),
    }
}

/// A key just created or rotated: `key` is shown this once.
#[derive(Serialize, ToSchema)]
struct IssuedKey<'a> {
    #[serde(flatten)]
    view: KeyView<'a>,
    /// `msk_` + 38 characters.
    key: String,
}

#[derive(Serialize, ToSchema)]
struct KeyList<'a> {
    keys: Vec<KeyView<'a>>,
}

async fn parse<T: serde::de::DeserializeOwned>(req: &HttpRequest, body: web::Payload, state: &State) -> Result<T, AdminError> {
    require_json(req)?;
    let body = read_body(req, body, 64 * 1024, state.body_timeout).await?;
    serde_json::from_slice(&body).map_err(|e| AdminError::bad_request(format!("invalid request: {e}")))
}

async fn record_of(state: &State, id: &str) -> Result<KeyRecord, AdminError> {
    let missing = || AdminError::not_found(format!("no API key `{id}`"));
    if !is_key_id(id) {
        return Err(missing());
    }
    state.auth.store().get(id).await.map_err(|e| unavailable(state, e))?.ok_or_else(missing)
}

#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys",
    request_body(content = NewKey, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = IssuedKey,
            headers(("Location" = String, description = "The key's URL"))),
        (status = 409, description = "API keys are off (no auth.key_secret)", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn create(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let hasher = hasher(&state)?;
    let new: NewKey = parse(&req, body, &state).await?;
    check_name(&new.name)?;
    check_scopes(&new.scopes)?;
    let rate_limit = new.rate_limit.unwrap_or(state.default_rate_limit);
    check_rate_limit(&rate_limit)?;
    if new.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(AdminError::bad_request("`expires_at` is in the past"));
    }
    let (key, hash) = issue(hasher);
    let record = KeyRecord {
        id: new_key_id(),
        name: new.name,
        scopes: new.scopes,
        created_at: Utc::now(),
        expires_at: new.expires_at,
        rate_limit,
        created_by: admin.id.clone(),
        hash,
    };
    state.auth.store().put(&record).await.map_err(|e| unavailable(&state, e))?;
    crate::audit::record(&state, &admin, "key.create", &record.id, json!({"name": record.name, "scopes": record.scopes})).await;
    tracing::info!(key_id = %record.id, name = %record.name, "API key created");
    let answer = IssuedKey { view: view(&record, None), key };
    Ok(HttpResponse::Created().insert_header(("Location", format!("/v1/keys/{}", record.id))).json(answer))
}

#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys",
    responses((status = 200, description = "Every key, never the keys themselves", body = KeyList), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let store = state.auth.store();
    let mut records = store.all().await.map_err(|e| unavailable(&state, e))?;
    let used = store.last_used().await.map_err(|e| unavailable(&state, e))?;
    records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    let keys = records.iter().map(|r| view(r, used.get(&r.id))).collect();
    Ok(HttpResponse::Ok().json(KeyList { keys }))
}

#[utoipa::path(get, path = "/v1/keys/{id}", operation_id = "get_key", tag = "keys",
    params(("id" = String, Path, description = "Key id (`key_` + 16 hex digits)")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 404, description = "No such key", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn get(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let record = record_of(&state, &path).await?;
    let used = state.auth.store().last_used().await.map_err(|e| unavailable(&state, e))?;
    Ok(HttpResponse::Ok().json(view(&record, used.get(&record.id))))
}

#[utoipa::path(patch, path = "/v1/keys/{id}", operation_id = "update_key", tag = "keys",
    description = "Changes name, scopes, expiry or rate limit; every replica applies it within a second.",
    params(("id" = String, Path, description = "Key id")),
    request_body(content = KeyChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed key", body = KeyView),
        (status = 404, description = "No such key", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn update(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let change: KeyChange = parse(&req, body, &state).await?;
    let mut record = record_of(&state, &path).await?;
    if let Some(name) = change.name {
        check_name(&name)?;
        record.name = name;
    }
    if let Some(scopes) = change.scopes {
        check_scopes(&scopes)?;
        record.scopes = scopes;
    }
    if let Some(expires_at) = change.expires_at {
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(AdminError::bad_request("`expires_at` is in the past (to stop a key now, revoke it)"));
        }
        record.expires_at = expires_at;
    }
    if let Some(limit) = change.rate_limit {
        check_rate_limit(&limit)?;
        record.rate_limit = limit;
    }
    state.auth.store().put(&record).await.map_err(|e| unavailable(&state, e))?;
    crate::audit::record(&state, &admin, "key.update", &record.id, json!({"name": record.name, "scopes": record.scopes, "expires_at": record.expires_at, "rate_limit": record.rate_limit})).await;
    Ok(HttpResponse::Ok().json(view(&record, None)))
}

#[utoipa::path(post, path = "/v1/keys/{id}/rotate", operation_id = "rotate_key", tag = "keys",
    description = "A new key for the same id, scopes and limits; the old one stops working at once.",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Rotated; `key` is shown this once", body = IssuedKey),
        (status = 404, description = "No such key", body = adapters::http::ErrorBody),
        (status = 409, description = "API keys are off (no auth.key_secret)", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn rotate(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let hasher = hasher(&state)?;
    let mut record = record_of(&state, &path).await?;
    let (key, hash) = issue(hasher);
    record.hash = hash;
    state.auth.store().put(&record).await.map_err(|e| unavailable(&state, e))?;
    crate::audit::record(&state, &admin, "key.rotate", &record.id, json!({})).await;
    Ok(HttpResponse::Ok().json(IssuedKey { view: view(&record, None), key }))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys",
    description = "Every replica refuses the key within a second.",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn revoke(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let id = path.into_inner();
    if !is_key_id(&id) || !state.auth.store().delete(&id).await.map_err(|e| unavailable(&state, e))? {
        return Err(AdminError::not_found(format!("no API key `{id}`")));
    }
    crate::audit::record(&state, &admin, "key.revoke", &id, json!({})).await;
    tracing::info!(key_id = %id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
