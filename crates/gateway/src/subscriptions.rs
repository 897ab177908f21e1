//! Webhook subscriptions in the admin API (`admin` scope); the consumer-api replicas deliver
//! them (Standard Webhooks 1.0 signatures).
//!
//! - `POST /v1/subscriptions` `{"url", "description"?, "filter"?, "fields"?, "format"?, "from"?}`:
//!   a new subscription, starting at `from` (`latest`, the default; `earliest`; or an RFC 3339
//!   time). The answer holds its signing secret (`whsec_…`).
//! - `GET /v1/subscriptions`, `GET /v1/subscriptions/{id}` (with its lag, last success, last
//!   error and failures in a row).
//! - `PATCH /v1/subscriptions/{id}`: URL, description, filter, projection, format, or `state`
//!   (`active` re-enables a disabled one, where it stopped).
//! - `POST /v1/subscriptions/{id}/rotate-secret`: a new secret; the previous one signs too for
//!   `webhooks.rotation_overlap_s`.
//! - `DELETE /v1/subscriptions/{id}`.
//! - `GET /v1/subscriptions/{id}/dead-letters`, `POST /v1/subscriptions/{id}/dead-letters/replay`
//!   `{"ids"?}`: deliveries whose retries were spent, and delivering them again.
//!
//! Secrets are derived from the server secret (`auth.key_secret`) and the subscription's id
//! and generation: Redis holds none.

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::{read_body, require_json, RequestError};
use adapters::kafka::groups::StartAt;
use adapters::webhooks::{DeadDelivery, DeliveryStatus};
use chrono::Utc;
use domain::webhooks::{Subscription, SubscriptionState, WebhookFormat, WebhookSecret};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::schema::{Schema, Type};
use utoipa::openapi::{ObjectBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::admin::{authorize, AdminError};
use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    POST "/v1/subscriptions" => create,
    GET "/v1/subscriptions" => list,
    GET "/v1/subscriptions/{id}" => get,
    PATCH "/v1/subscriptions/{id}" => update,
    DELETE "/v1/subscriptions/{id}" => delete,
    POST "/v1/subscriptions/{id}/rotate-secret" => rotate_secret,
    GET "/v1/subscriptions/{id}/dead-letters" => dead_letters,
    POST "/v1/subscriptions/{id}/dead-letters/replay" => replay,
} }

/// `POST /v1/subscriptions`.
// The bounds are `check_url`'s and `check_description`'s.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    /// Where deliveries are POSTed (http or https).
    #[schema(max_length = 2048)]
    url: String,
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    description: Option<String>,
    /// A condition in the operations' `when` language; events it rejects are not sent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// A projection (`payload.title,metadata.tags`).
    #[serde(default)]
    fields: Option<String>,
    #[serde(default)]
    format: WebhookFormat,
    /// `latest` (default), `earliest`, or an RFC 3339 time.
    #[serde(default)]
    from: Option<String>,
}

/// `PATCH /v1/subscriptions/{id}`: what to change (`null` removes description, filter or
/// fields).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionChange {
    #[schema(max_length = 2048)]
    url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    filter: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    fields: Option<Option<String>>,
    format: Option<WebhookFormat>,
    /// `active` re-enables a disabled subscription where it stopped.
    #[schema(inline)]
    state: Option<SubscriptionState>,
}

/// `POST /v1/subscriptions/{id}/dead-letters/replay`: which (all when `ids` is left out).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookReplayRequest)]
struct ReplayRequest {
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// `POST /v1/subscriptions/{id}/dead-letters/replay`.
#[derive(Serialize, ToSchema)]
struct WebhookReplayAccepted<'a> {
    subscription: &'a str,
    /// How many dead letters will be delivered again.
    requested: usize,
}

/// A subscription as the API shows it: as stored, with its consumer group (never its secret).
#[derive(Serialize)]
struct SubscriptionView<'a> {
    #[serde(flatten)]
    subscription: &'a Subscription,
    consumer_group: String,
}

/// `Subscription`'s own schema, one member more: a flat object (a derive would make an `allOf`).
impl PartialSchema for SubscriptionView<'_> {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) = Subscription::schema() else {
            unreachable!("a struct's schema is an object");
        };
        object.description = Some("A subscription (never its secret).".into());
        object.properties.insert(
            "consumer_group".into(),
            ObjectBuilder::new().schema_type(Type::String).description(Some("The Kafka consumer group that holds its position.")).into(),
        );
        object.required.push("consumer_group".into());
        object.into()
    }
}

impl ToSchema for SubscriptionView<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "Subscription".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <Subscription as ToSchema>::schemas(schemas);
    }
}

/// A subscription just created or with a rotated secret: `secret` (`whsec_…`) verifies its
/// signatures.
#[derive(Serialize, ToSchema)]
struct IssuedSubscription<'a> {
    #[serde(flatten)]
    view: SubscriptionView<'a>,
    secret: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SubscriptionWithStatus)]
struct SubscriptionStatus<'a> {
    #[serde(flatten)]
    view: SubscriptionView<'a>,
    status: DeliveryStatus,
}

#[derive(Serialize, ToSchema)]
struct SubscriptionList<'a> {
    subscriptions: Vec<SubscriptionView<'a>>,
}

#[derive(Serialize, ToSchema)]
struct SubscriptionDeadLetters<'a> {
    subscription: &'a str,
    count: usize,
    /// Oldest first.
    dead_letters: Vec<DeadDelivery>,
}

/// Tells a member set to `null` (Some(None)) from one left out (None).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn server_secret(state: &State) -> Result<&[u8], AdminError> {
    state
        .server_secret
        .as_deref()
        .ok_or_else(|| AdminError::Conflict("webhooks are off: set auth.key_secret (METASTREAM__AUTH__KEY_SECRET)".into()))
}

fn unavailable(state: &State, what: &str, err: impl std::fmt::Display) -> AdminError {
    AdminError::Request(RequestError::Unavailable { what: format!("{what}: {err}"), retry_after_s: state.retry_after_s })
}

fn check_url(state: &State, url: &str) -> Result<(), AdminError> {
    let parsed = url::Url::parse(url).map_err(|e| AdminError::bad_request(format!("`url` is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default();
    if !matches!(parsed.scheme(), "http" | "https") || host.is_empty() {
        return Err(AdminError::bad_request("`url` must be an http:// or https:// URL with a host"));
    }
    if !state.webhooks.allows(host) {
        return Err(AdminError::bad_request(format!("`url`: host `{host}` is not in webhooks.allowed_hosts")));
    }
    if url.len() > 2048 {
        return Err(AdminError::bad_request("`url` must be at most 2048 characters"));
    }
    Ok(())
}

fn check_filter(filter: &Value) -> Result<(), AdminError> {
    domain::Condition::compile(filter).map(|_| ()).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| if e.at.is_empty() { e.message.clone() } else { format!("{}: {}", e.at, e.message) }).collect();
        AdminError::bad_request(format!("`filter`: {}", list.join("; ")))
    })
}

fn check_fields(fields: &str) -> Result<(), AdminError> {
    domain::projection::Projection::parse(fields).map(|_| ()).map_err(|e| AdminError::bad_request(format!("`fields`: {e}")))
}

fn check_description(text: &str) -> Result<(), AdminError> {
    if text.chars().count() > 256 || text.chars().any(char::is_control) {
        return Err(AdminError::bad_request("`description` must be at most 256 printable characters"));
    }
    Ok(())
}

fn parse_from(text: &str) -> Result<StartAt, AdminError> {
    match text {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        other => chrono::DateTime::parse_from_rfc3339(other)
            .map(|t| StartAt::Time(t.timestamp_millis()))
            .map_err(|_| AdminError::bad_request("`from` must be `earliest`, `latest` or an RFC 3339 time")),
    }
}

fn new_id() -> String {
    format!("sub_{}", uuid::Uuid::new_v4().simple())
}

fn view<'a>(sub: &'a Subscription, group_prefix: &str) -> SubscriptionView<'a> {
    SubscriptionView { subscription: sub, consumer_group: format!("{group_prefix}{}", sub.id) }
}

async fn parse<T: serde::de::DeserializeOwned>(req: &HttpRequest, body: web::Payload, state: &State) -> Result<T, AdminError> {
    require_json(req)?;
    let body = read_body(req, body, 64 * 1024, state.body_timeout).await?;
    serde_json::from_slice(&body).map_err(|e| AdminError::bad_request(format!("invalid request: {e}")))
}

async fn subscription_of(state: &State, id: &str) -> Result<Subscription, AdminError> {
    let missing = || AdminError::not_found(format!("no subscription `{id}`"));
    if !Subscription::is_id(id) {
        return Err(missing());
    }
    state.subscriptions.get(id).await.map_err(|e| unavailable(state, "redis", e))?.ok_or_else(missing)
}

#[utoipa::path(post, path = "/v1/subscriptions", operation_id = "create_subscription", tag = "webhooks",
    description = "A webhook subscription, delivered from `from` on (default `latest`). The answer holds its `whsec_` signing secret.",
    request_body(content = NewSubscription, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; keep `secret` to verify signatures", body = IssuedSubscription,
            headers(("Location" = String, description = "The subscription's URL"))),
        (status = 409, description = "Webhooks are off (no auth.key_secret), or webhooks.max_subscriptions reached", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn create(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let secret = server_secret(&state)?;
    let new: NewSubscription = parse(&req, body, &state).await?;
    check_url(&state, &new.url)?;
    if let Some(d) = &new.description {
        check_description(d)?;
    }
    if let Some(f) = &new.filter {
        check_filter(f)?;
    }
    if let Some(f) = &new.fields {
        check_fields(f)?;
    }
    let from = new.from.as_deref().map(parse_from).transpose()?.unwrap_or(StartAt::Latest);
    let existing = state.subscriptions.all().await.map_err(|e| unavailable(&state, "redis", e))?;
    if existing.len() >= state.webhooks.max_subscriptions {
        return Err(AdminError::Conflict(format!("at most {} subscriptions (webhooks.max_subscriptions)", state.webhooks.max_subscriptions)));
    }
    let sub = Subscription {
        id: new_id(),
        url: new.url,
        description: new.description,
        filter: new.filter,
        fields: new.fields,
        format: new.format,
        state: SubscriptionState::Active,
        disabled_reason: None,
        secret_generation: 0,
        previous_secret_until: None,
        created_at: Utc::now(),
        created_by: admin.id.clone(),
    };
    // Where it starts is committed for its group before any replica delivers it.
    let (config, group, topic) = (state.reader_config.clone(), format!("{}{}", state.webhooks.group_prefix, sub.id), state.output_topic.clone());
    tokio::task::spawn_blocking(move || adapters::kafka::groups::commit_start(&config, &group, &topic, from))
        .await
        .map_err(|e| unavailable(&state, "kafka", e))?
        .map_err(|e| unavailable(&state, "kafka", format!("{e:#}")))?;
    state.subscriptions.put(&sub).await.map_err(|e| unavailable(&state, "redis", e))?;
    crate::audit::record(&state, &admin, "subscription.create", &sub.id, json!({"url": sub.url, "filter": sub.filter, "fields": sub.fields, "format": sub.format})).await;
    tracing::info!(subscription = %sub.id, url = %sub.url, "webhook subscription created");
    let answer = IssuedSubscription { view: view(&sub, &state.webhooks.group_prefix), secret: WebhookSecret::derive(secret, &sub.id, sub.secret_generation).expose() };
    Ok(HttpResponse::Created().insert_header(("Location", format!("/v1/subscriptions/{}", sub.id))).json(answer))
}

#[utoipa::path(get, path = "/v1/subscriptions", operation_id = "list_subscriptions", tag = "webhooks",
    responses((status = 200, description = "Every subscription, never a secret", body = SubscriptionList), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let subs = state.subscriptions.all().await.map_err(|e| unavailable(&state, "redis", e))?;
    let subscriptions = subs.iter().map(|s| view(s, &state.webhooks.group_prefix)).collect();
    Ok(HttpResponse::Ok().json(SubscriptionList { subscriptions }))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", operation_id = "get_subscription", tag = "webhooks",
    description = "The subscription with its delivery status: lag (events not yet delivered or dead-lettered), last success, last error, failures in a row.",
    params(("id" = String, Path, description = "Subscription id (`sub_` + 32 hex digits)")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionStatus),
        (status = 404, description = "No such subscription", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn get(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let sub = subscription_of(&state, &path).await?;
    let mut status = state.subscriptions.status(&sub.id).await.map_err(|e| unavailable(&state, "redis", e))?;
    let (config, group, topic) = (state.reader_config.clone(), format!("{}{}", state.webhooks.group_prefix, sub.id), state.output_topic.clone());
    // The lag is left out (null) when Kafka cannot say: the rest still helps an operator.
    status.lag = tokio::task::spawn_blocking(move || adapters::kafka::groups::group_lag(&config, &group, &topic)).await.ok().and_then(Result::ok);
    Ok(HttpResponse::Ok().json(SubscriptionStatus { view: view(&sub, &state.webhooks.group_prefix), status }))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", operation_id = "update_subscription", tag = "webhooks",
    description = "Changes URL, description, filter, projection, format or state (`active` re-enables a disabled subscription where it stopped); every replica applies it within a second.",
    params(("id" = String, Path, description = "Subscription id")),
    request_body(content = SubscriptionChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The changed subscription", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn update(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let change: SubscriptionChange = parse(&req, body, &state).await?;
    let mut sub = subscription_of(&state, &path).await?;
    if let Some(url) = change.url {
        check_url(&state, &url)?;
        sub.url = url;
    }
    if let Some(description) = change.description {
        if let Some(d) = &description {
            check_description(d)?;
        }
        sub.description = description;
    }
    if let Some(filter) = change.filter {
        if let Some(f) = &filter {
            check_filter(f)?;
        }
        sub.filter = filter;
    }
    if let Some(fields) = change.fields {
        if let Some(f) = &fields {
            check_fields(f)?;
        }
        sub.fields = fields;
    }
    if let Some(format) = change.format {
        sub.format = format;
    }
    if let Some(new_state) = change.state {
        sub.state = new_state;
        sub.disabled_reason = match new_state {
            SubscriptionState::Active => None,
            SubscriptionState::Disabled => Some(format!("disabled by {}", admin.id)),
        };
    }
    state.subscriptions.put(&sub).await.map_err(|e| unavailable(&state, "redis", e))?;
    crate::audit::record(&state, &admin, "subscription.update", &sub.id, json!({"url": sub.url, "filter": sub.filter, "fields": sub.fields, "format": sub.format, "state": sub.state})).await;
    Ok(HttpResponse::Ok().json(view(&sub, &state.webhooks.group_prefix)))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", operation_id = "rotate_subscription_secret", tag = "webhooks",
    description = "A new signing secret. Deliveries carry both signatures until `previous_secret_until` (webhooks.rotation_overlap_s), so the receiver can switch without refusing any.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Rotated; keep `secret`", body = IssuedSubscription),
        (status = 404, description = "No such subscription", body = adapters::http::ErrorBody),
        (status = 409, description = "Webhooks are off (no auth.key_secret)", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn rotate_secret(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let secret = server_secret(&state)?;
    let mut sub = subscription_of(&state, &path).await?;
    sub.secret_generation += 1;
    sub.previous_secret_until = Some(Utc::now() + chrono::Duration::seconds(state.webhooks.rotation_overlap_s as i64));
    state.subscriptions.put(&sub).await.map_err(|e| unavailable(&state, "redis", e))?;
    crate::audit::record(&state, &admin, "subscription.rotate_secret", &sub.id, json!({"generation": sub.secret_generation})).await;
    let secret = WebhookSecret::derive(secret, &sub.id, sub.secret_generation).expose();
    Ok(HttpResponse::Ok().json(IssuedSubscription { view: view(&sub, &state.webhooks.group_prefix), secret }))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", operation_id = "delete_subscription", tag = "webhooks",
    description = "Stops its deliveries on every replica within a second and deletes its status and dead letters.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such subscription", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn delete(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let id = path.into_inner();
    if !Subscription::is_id(&id) || !state.subscriptions.delete(&id).await.map_err(|e| unavailable(&state, "redis", e))? {
        return Err(AdminError::not_found(format!("no subscription `{id}`")));
    }
    crate::audit::record(&state, &admin, "subscription.delete", &id, json!({})).await;
    tracing::info!(subscription = %id, "webhook subscription deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/dead-letters", operation_id = "list_subscription_dead_letters", tag = "webhooks",
    description = "Deliveries whose retries were spent (webhooks.max_attempts), oldest first, with the body as sent.",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The dead letters", body = SubscriptionDeadLetters),
        (status = 404, description = "No such subscription", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn dead_letters(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let sub = subscription_of(&state, &path).await?;
    let dead = state.subscriptions.dead_letters(&sub.id).await.map_err(|e| unavailable(&state, "redis", e))?;
    Ok(HttpResponse::Ok().json(SubscriptionDeadLetters { subscription: &sub.id, count: dead.len(), dead_letters: dead }))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/dead-letters/replay", operation_id = "replay_subscription_dead_letters", tag = "webhooks",
    description = "Delivers dead letters again (those named by `ids`, or all), with the same `webhook-id`, a new timestamp and signature, and a new retry budget. One replica replays at a time; a delivered one leaves the list.",
    params(("id" = String, Path, description = "Subscription id")),
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Asked for; `requested` dead letters will be delivered again", body = WebhookReplayAccepted),
        (status = 404, description = "No such subscription", body = adapters::http::ErrorBody),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn replay(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = authorize(&req, &state)?;
    let request: ReplayRequest = parse(&req, body, &state).await?;
    let sub = subscription_of(&state, &path).await?;
    let requested = state.subscriptions.request_replay(&sub.id, request.ids.as_deref()).await.map_err(|e| unavailable(&state, "redis", e))?;
    crate::audit::record(&state, &admin, "subscription.replay", &sub.id, json!({"requested": requested})).await;
    Ok(HttpResponse::Accepted().json(WebhookReplayAccepted { subscription: &sub.id, requested }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view's hand-merged schema names exactly the members it serializes (every optional one
    /// set), and requires the ones always there.
    #[test]
    fn the_view_s_schema_is_what_it_serializes() {
        let sub = Subscription {
            id: format!("sub_{}", "0".repeat(32)),
            url: "https://example.com/hook".into(),
            description: Some("d".into()),
            filter: Some(json!({"exists": "payload.title"})),
            fields: Some("payload.title".into()),
            format: WebhookFormat::Cloudevents,
            state: SubscriptionState::Disabled,
            disabled_reason: Some("by key_1".into()),
            secret_generation: 2,
            previous_secret_until: Some(Utc::now()),
            created_at: Utc::now(),
            created_by: "key_1".into(),
        };
        let shown = serde_json::to_value(view(&sub, "webhook-")).unwrap();
        let schema = serde_json::to_value(SubscriptionView::schema()).unwrap();
        let members: Vec<&String> = shown.as_object().unwrap().keys().collect();
        let documented: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(members.len(), documented.len(), "{members:?} vs {documented:?}");
        assert!(members.iter().all(|m| documented.contains(m)), "{members:?} vs {documented:?}");
        assert_eq!(shown["consumer_group"], json!(format!("webhook-{}", sub.id)));
        let bare = Subscription { description: None, filter: None, fields: None, disabled_reason: None, previous_secret_until: None, ..sub };
        let shown = serde_json::to_value(view(&bare, "webhook-")).unwrap();
        let mut always: Vec<&str> = shown.as_object().unwrap().keys().map(String::as_str).collect();
        let mut required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        always.sort_unstable();
        required.sort_unstable();
        assert_eq!(always, required);
    }
}
