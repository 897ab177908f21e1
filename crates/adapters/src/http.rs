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
    /// A presented key that cannot be valid (malformed, expired): said without a lookup.
    #[error("{0}")]
    InvalidKey(String),
    #[error(transparent)]
    Forbidden(domain::auth::Forbidden),
    #[error("rate limit of this key exceeded ({}); retry in {retry_after_s} s", .state.kind.as_str())]
    RateLimited { retry_after_s: u64, state: RateState },
    #[error("this request costs {cost} {kind}, more than this key's burst of {burst}; split it")]
    OverBurst { cost: u64, burst: u32, kind: &'static str },
    /// A cap on what one key may hold (long polls, consumer groups).
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// What the request was about has ended for good (a superseded stream).
    #[error("{0}")]
    Gone(String),
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
            RequestError::Unauthorized | RequestError::InvalidKey(_) => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::RateLimited { .. } | RequestError::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            RequestError::OverBurst { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RequestError::NotFound(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::Gone(_) => StatusCode::GONE,
            RequestError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RequestError::Unauthorized | RequestError::InvalidKey(_) => "unauthorized",
            RequestError::Forbidden(_) => "forbidden",
            RequestError::RateLimited { .. } => "rate_limited",
            RequestError::OverBurst { .. } => "exceeds_burst",
            RequestError::LimitExceeded(_) => "limit_exceeded",
            RequestError::BadRequest(_) => "bad_request",
            RequestError::NotFound(_) => "not_found",
            RequestError::MethodNotAllowed(_) => "method_not_allowed",
            RequestError::Gone(_) => "gone",
            RequestError::PayloadTooLarge(_) => "payload_too_large",
            RequestError::RequestTimeout(_) => "request_timeout",
            RequestError::UnsupportedMediaType => "unsupported_media_type",
            RequestError::Unavailable { .. } => "unavailable",
            RequestError::Internal(_) => "internal",
        }
    }

    fn details(&self, body: &mut serde_json::Map<String, serde_json::Value>) {
        if let RequestError::Forbidden(f) = self {
            body.insert("required_scope".into(), json!(f.required));
        }
    }

    fn headers(&self, response: &mut actix_web::HttpResponseBuilder) {
        match self {
            RequestError::Unauthorized | RequestError::InvalidKey(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            RequestError::RateLimited { retry_after_s, state } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
                response.insert_header(("RateLimit-Policy", state.policy.clone()));
                response.insert_header(("RateLimit", state.header()));
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

/// Answers requests no route takes, in the JSON shape: 405 with `Allow` when the path is one
/// of `routes` (a [`routes!`](crate::routes) table) under another method, 404 otherwise.
pub fn fallback(routes: Vec<&'static [(&'static str, &'static str)]>) -> actix_web::Route {
    web::to(move |req: HttpRequest| {
        let allowed: Vec<&str> = routes
            .iter()
            .flat_map(|table| table.iter())
            .filter(|(_, pattern)| path_matches(pattern, req.path()))
            .map(|(method, _)| *method)
            .collect();
        let answer = if allowed.is_empty() {
            problem_response(&RequestError::NotFound(format!("no route for {} {}", req.method(), req.path())))
        } else {
            let mut response = problem_response(&RequestError::MethodNotAllowed(format!(
                "{} {} is not served; allowed: {}",
                req.method(),
                req.path(),
                allowed.join(", ")
            )));
            if let Ok(v) = header::HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(header::ALLOW, v);
            }
            response
        };
        std::future::ready(answer)
    })
}

/// Whether `path` matches a route pattern (`/v1/keys/{id}`: a `{…}` segment matches one
/// non-empty segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') && !b.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Declares a module's routes once: `configure` registers them, and the table lists each
/// (method, path) for the 405 fallback and the OpenAPI test (no route missing from the document).
///
/// ```ignore
/// adapters::routes! { pub(crate) fn configure / ROUTES {
///     POST "/ingest" => ingest,
/// } }
/// ```
#[macro_export]
macro_rules! routes {
    ($vis:vis fn $configure:ident / $table:ident { $($method:ident $path:literal => $handler:path),* $(,)? }) => {
        /// Every (method, path) this module serves.
        $vis const $table: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        $vis fn $configure(cfg: &mut actix_web::web::ServiceConfig) {
            $(cfg.route($path, actix_web::web::method(actix_web::http::Method::$method).to($handler));)*
        }
    };
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(metrics: web::Data<std::sync::Arc<crate::metrics::Metrics>>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
}

crate::routes! { pub fn health_routes / HEALTH_ROUTES {
    GET "/healthz" => healthz,
    GET "/readyz" => readyz,
} }

crate::routes! { pub fn metrics_routes / METRICS_ROUTES {
    GET "/metrics" => metrics,
} }

/// The middleware every listener runs (`actix_web::middleware::from_fn(adapters::http::finish)`):
/// - an error the framework answered by itself (405 of a resource, an extractor's 400, …) is
///   rewritten into the JSON shape, so every error a client receives is JSON;
/// - a key's rate-limit state, left in the request's extensions, becomes the `RateLimit` and
///   `RateLimit-Policy` headers;
/// - client errors are logged at WARN, at most one line a second (with how many were not);
/// - requests are counted and timed by route pattern, method and status.
///
/// # Errors
/// Whatever the wrapped service returns.
pub async fn finish(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req.app_data::<web::Data<std::sync::Arc<crate::metrics::Metrics>>>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let mut res = next.call(req).await?.map_into_boxed_body();
    let rate = actix_web::HttpMessage::extensions(res.request()).get::<RateStates>().and_then(RateStates::headers);
    if let Some((policy, state)) = rate {
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
            if let Ok(value) = header::HeaderValue::from_str(&value) {
                res.headers_mut().insert(header::HeaderName::from_static(name), value);
            }
        }
    }
    let status = res.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(res.headers()) {
        res = into_json_error(res).await;
    }
    if status.is_client_error() {
        BAD_REQUESTS.note(&method, &route, status);
    }
    if let Some(m) = metrics {
        let attrs = [
            opentelemetry::KeyValue::new("route", route),
            opentelemetry::KeyValue::new("method", method),
            opentelemetry::KeyValue::new("status", i64::from(status.as_u16())),
        ];
        m.http_requests.add(1, &attrs);
        m.http_duration.record(started.elapsed().as_secs_f64(), &attrs);
    }
    Ok(res)
}

fn is_json(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("application/problem+json"))
}

/// Rewrites a framework-made error answer (text or empty) into the JSON shape, keeping its
/// status and headers (`Allow`, …). Its text, when short, becomes the message.
async fn into_json_error(res: actix_web::dev::ServiceResponse) -> actix_web::dev::ServiceResponse {
    let (req, response) = res.into_parts();
    let status = response.status();
    let mut headers = response.headers().clone();
    let body = actix_web::body::to_bytes(response.into_body()).await.unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = match std::str::from_utf8(&body) {
        Ok(text) if !text.trim().is_empty() && text.len() <= 1024 => text.trim().to_owned(),
        _ => reason.to_owned(),
    };
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    let mut rebuilt = HttpResponse::build(status).json(json!({"error": code, "message": message}));
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    actix_web::dev::ServiceResponse::new(req, rebuilt)
}

/// Client errors, logged at WARN at most once a second (a flood of bad requests must not become
/// a flood of log lines).
static BAD_REQUESTS: LogLimiter = LogLimiter::new();

struct LogLimiter {
    last_second: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    const fn new() -> Self {
        LogLimiter { last_second: std::sync::atomic::AtomicU64::new(0), suppressed: std::sync::atomic::AtomicU64::new(0) }
    }

    fn note(&self, method: &str, route: &str, status: StatusCode) {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        if now > last && self.last_second.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(method, route, status = status.as_u16(), suppressed, "client error (at most one such line a second; `suppressed` counts the others)");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The request's query string as `T`. Handlers call it after authenticating, so a client without
/// a valid key learns nothing about the parameters.
///
/// # Errors
/// 400 naming what does not parse.
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, RequestError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| RequestError::BadRequest(format!("invalid query string: {e}")))
}

/// Query strings that do not parse answer 400 in the JSON shape, naming the parameter.
pub fn query_errors() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| RequestError::BadRequest(format!("invalid query string: {err}")).into())
}

/// Path segments that do not parse answer 400 in the JSON shape.
pub fn path_errors() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _| RequestError::BadRequest(format!("invalid path: {err}")).into())
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
            .wrap(actix_web::middleware::from_fn(finish))
            .app_data(query_errors())
            .app_data(path_errors())
            .configure(health_routes)
            .configure(metrics_routes)
            .default_service(fallback(vec![HEALTH_ROUTES, METRICS_ROUTES]))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, port))
}

/// What a rate-limit decision said, for the `RateLimit` and `RateLimit-Policy` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RateState {
    pub kind: domain::auth::RateKind,
    pub policy: String,
    pub remaining: u64,
    /// Seconds until the allowance is full again.
    pub reset_s: u64,
}

impl RateState {
    /// `RateLimit: "requests";r=42;t=1` (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(&self) -> String {
        format!("\"{}\";r={};t={}", self.kind.as_str(), self.remaining, self.reset_s)
    }
}

/// The states of a request's rate-limit decision, left in the request's extensions for the
/// `RateLimit` headers (`adapters::http::finish`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateStates(pub Vec<RateState>);

impl RateStates {
    /// Leaves them on `req` for the response headers.
    pub fn attach(self, req: &HttpRequest) {
        if !self.0.is_empty() {
            actix_web::HttpMessage::extensions_mut(req).insert(self);
        }
    }

    /// `RateLimit-Policy` and `RateLimit` values: one list item per limited dimension.
    pub fn headers(&self) -> Option<(String, String)> {
        (!self.0.is_empty()).then(|| {
            let policy: Vec<String> = self.0.iter().map(|s| s.policy.clone()).collect();
            let state: Vec<String> = self.0.iter().map(RateState::header).collect();
            (policy.join(", "), state.join(", "))
        })
    }
}
