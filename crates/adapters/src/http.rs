//! HTTP plumbing shared by the services: the one JSON error shape, bearer auth, body limits,
//! and the `/healthz` and `/readyz` endpoints.
//!
//! Every error body is `{"error": "<code>", "message": "<what is wrong>"}`.

use std::net::TcpListener;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt as _;
use serde_json::json;

use crate::health::Health;
use crate::settings::Secret;

/// Every error a metastream HTTP endpoint answers with; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    InvalidEvent(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the batch holds {count} events; the limit is {limit} (gateway.max_batch_events)")]
    TooManyEvents { count: usize, limit: usize },
    #[error("the event is {size} bytes as written to Kafka; the limit is {limit} bytes (the smallest topic's max.message.bytes less what the pipeline adds around an event)")]
    EventTooLarge { size: usize, limit: usize },
    #[error("the request body was not received within {0} ms")]
    RequestTimeout(u128),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    UnknownSource(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("the source configuration has {} error(s)", .0.len())]
    InvalidConfig(Vec<domain::ConfigError>),
    #[error("{what}; retry later")]
    Unavailable { what: String, retry_after_s: u32 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidEvent(_) => "invalid_event",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::EventTooLarge { .. } => "event_too_large",
            ApiError::TooManyEvents { .. } => "too_many_events",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::IdempotencyMismatch(_) => "idempotency_key_reused",
            ApiError::PreconditionFailed(_) => "version_mismatch",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidEvent(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) | ApiError::EventTooLarge { .. } | ApiError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownSource(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RequestTimeout(_) => {
                // The rest of the body may still arrive: do not read it as the next request.
                response.insert_header((header::CONNECTION, "close"));
            }
            ApiError::Unavailable { retry_after_s, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            ApiError::Internal(err) => tracing::error!(error = ?err, "internal error"),
            _ => {}
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            ApiError::InvalidConfig(errors) => body["errors"] = json!(errors),
            ApiError::EventTooLarge { size, limit } => {
                body["size"] = json!(size);
                body["limit"] = json!(limit);
            }
            _ => {}
        }
        response.json(body)
    }
}

/// The bearer tokens a service accepts.
#[derive(Clone)]
pub struct Tokens(Vec<Secret>);

impl Tokens {
    pub fn new(tokens: Vec<Secret>) -> Self {
        Tokens(tokens)
    }

    /// Checks the request's `Authorization: Bearer <token>`.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] when the header is missing or the token unknown.
    pub fn verify(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if self.0.iter().any(|t| constant_time_eq(t.expose().as_bytes(), presented.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses bodies that are not JSON. A missing Content-Type is taken as JSON.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`].
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else { return Ok(()) };
    let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Reads the body, refusing it as soon as it passes `limit` bytes or when it has not fully
/// arrived within `timeout` (a slow or stuck client must not hold the request's resources).
///
/// # Errors
/// [`ApiError::PayloadTooLarge`], [`ApiError::RequestTimeout`], or [`ApiError::BadRequest`]
/// when the body cannot be read.
pub async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize, timeout: std::time::Duration) -> Result<web::BytesMut, ApiError> {
    tokio::time::timeout(timeout, read_body_within(req, payload, limit))
        .await
        .unwrap_or(Err(ApiError::RequestTimeout(timeout.as_millis())))
}

async fn read_body_within(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the dependencies answer and nothing is stuck.
pub async fn readyz(health: web::Data<Health>) -> HttpResponse {
    match health.check().await {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(body) => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// Answers unknown routes with the JSON error shape.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(metrics: web::Data<std::sync::Arc<crate::metrics::Metrics>>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
}

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Middleware counting requests and timing them by route pattern, method and status
/// (`actix_web::middleware::from_fn(adapters::http::record_metrics)`).
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn record_metrics(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req.app_data::<web::Data<std::sync::Arc<crate::metrics::Metrics>>>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let attrs = [
            opentelemetry::KeyValue::new("route", route),
            opentelemetry::KeyValue::new("method", method),
            opentelemetry::KeyValue::new("status", i64::from(res.status().as_u16())),
        ];
        m.http_requests.add(1, &attrs);
        m.http_duration.record(started.elapsed().as_secs_f64(), &attrs);
    }
    Ok(res)
}

/// Binds `listen` (port 0 picks a free port) and returns the listener with its port.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(listen: &str) -> anyhow::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// A small HTTP server with only the health endpoints, for the transformers.
///
/// # Errors
/// When the address cannot be bound.
pub fn health_server(
    listen: &str,
    health: Health,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> anyhow::Result<(actix_web::dev::Server, u16)> {
    let (listener, port) = bind(listen)?;
    let health = web::Data::new(health);
    let metrics = web::Data::new(metrics);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(health.clone())
            .app_data(metrics.clone())
            .wrap(actix_web::middleware::from_fn(record_metrics))
            .configure(health_routes)
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, port))
}
