//! HTTP plumbing shared by the services: the one JSON error shape, bearer auth, body limits,
//! and the `/healthz` and `/readyz` endpoints.
//!
//! Every error body is `{"error": "<code>", "message": "<what is wrong>"}`: each service's error
//! enum implements [`Problem`]; the errors every endpoint shares are [`RequestError`].

use std::net::TcpListener;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde_json::json;

use crate::health::Health;
use crate::settings::Secret;

/// An error answer: its status, a stable code, a message (its `Display`), and what the JSON
/// body or headers add. Each service's error enum implements it, and [`problem_response!`]
/// makes it an actix `ResponseError` — so every service answers in one shape,
/// `{"error": "<code>", "message": "<what is wrong>", …}`, while each boundary names only the
/// errors it can give.
pub trait Problem: std::fmt::Display + std::fmt::Debug {
    fn status(&self) -> StatusCode;
    /// A stable word clients and metrics match on (`invalid_event`, `unavailable`, …).
    fn code(&self) -> &'static str;
    /// Members the JSON body carries besides `error` and `message`.
    fn details(&self, _body: &mut serde_json::Map<String, serde_json::Value>) {}
    /// Headers the answer carries (`Retry-After`, `WWW-Authenticate`, …).
    fn headers(&self, _response: &mut actix_web::HttpResponseBuilder) {}
}

/// The answer for `problem`, in the one JSON shape.
pub fn problem_response(problem: &dyn Problem) -> HttpResponse {
    let mut response = HttpResponse::build(problem.status());
    problem.headers(&mut response);
    let mut body = serde_json::Map::new();
    body.insert("error".into(), json!(problem.code()));
    body.insert("message".into(), json!(problem.to_string()));
    problem.details(&mut body);
    response.json(body)
}

/// Implements actix's `ResponseError` for an enum that implements [`Problem`].
#[macro_export]
macro_rules! problem_response {
    ($t:ty) => {
        impl actix_web::ResponseError for $t {
            fn status_code(&self) -> actix_web::http::StatusCode {
                $crate::http::Problem::status(self)
            }
            fn error_response(&self) -> actix_web::HttpResponse {
                $crate::http::problem_response(self)
            }
        }
    };
}

/// What any endpoint can answer before or around its own work: authentication, the request's
/// framing and body, a query or path that does not parse, a dependency that is down.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body was not received within {0} ms")]
    RequestTimeout(u128),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("{what}; retry later")]
    Unavailable { what: String, retry_after_s: u32 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Problem for RequestError {
    fn status(&self) -> StatusCode {
        match self {
            RequestError::Unauthorized => StatusCode::UNAUTHORIZED,
            RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RequestError::Unauthorized => "unauthorized",
            RequestError::BadRequest(_) => "bad_request",
            RequestError::NotFound(_) => "not_found",
            RequestError::PayloadTooLarge(_) => "payload_too_large",
            RequestError::RequestTimeout(_) => "request_timeout",
            RequestError::UnsupportedMediaType => "unsupported_media_type",
            RequestError::Unavailable { .. } => "unavailable",
            RequestError::Internal(_) => "internal",
        }
    }

    fn headers(&self, response: &mut actix_web::HttpResponseBuilder) {
        match self {
            RequestError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            RequestError::Unavailable { retry_after_s, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            RequestError::RequestTimeout(_) => {
                // The rest of the body may still arrive: do not read it as the next request.
                response.insert_header((header::CONNECTION, "close"));
            }
            RequestError::Internal(err) => tracing::error!(error = ?err, "internal error"),
            _ => {}
        }
    }
}

crate::problem_response!(RequestError);

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
    /// [`RequestError::Unauthorized`] when the header is missing or the token unknown.
    pub fn verify(&self, req: &HttpRequest) -> Result<(), RequestError> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(RequestError::Unauthorized)?;
        if self.0.iter().any(|t| constant_time_eq(t.expose().as_bytes(), presented.as_bytes())) {
            Ok(())
        } else {
            Err(RequestError::Unauthorized)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses bodies that are not JSON. A missing Content-Type is taken as JSON.
///
/// # Errors
/// [`RequestError::UnsupportedMediaType`].
pub fn require_json(req: &HttpRequest) -> Result<(), RequestError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else { return Ok(()) };
    let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        Ok(())
    } else {
        Err(RequestError::UnsupportedMediaType)
    }
}

/// Reads the body, refusing it as soon as it passes `limit` bytes or when it has not fully
/// arrived within `timeout` (a slow or stuck client must not hold the request's resources).
///
/// # Errors
/// [`RequestError::PayloadTooLarge`], [`RequestError::RequestTimeout`], or [`RequestError::BadRequest`]
/// when the body cannot be read.
pub async fn read_body(req: &HttpRequest, payload: web::Payload, limit: usize, timeout: std::time::Duration) -> Result<web::BytesMut, RequestError> {
    tokio::time::timeout(timeout, read_body_within(req, payload, limit))
        .await
        .unwrap_or(Err(RequestError::RequestTimeout(timeout.as_millis())))
}

async fn read_body_within(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, RequestError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| RequestError::BadRequest(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(RequestError::PayloadTooLarge(limit));
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
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, RequestError> {
    Err(RequestError::NotFound(format!("no route for {} {}", req.method(), req.path())))
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

/// Serves `server` until `shutdown` is cancelled, then stops taking requests and finishes the
/// ones in flight (`service` names it in the log).
///
/// # Errors
/// When the server fails.
pub async fn serve_until_stopped(server: actix_web::dev::Server, shutdown: &crate::shutdown::CancellationToken, service: &str) -> anyhow::Result<()> {
    let handle = server.handle();
    let running = tokio::spawn(server);
    shutdown.cancelled().await;
    tracing::info!(service, "shutting down: finishing requests in flight");
    handle.stop(true).await;
    running.await??;
    Ok(())
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
