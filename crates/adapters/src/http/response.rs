//! What every answer goes through ([`finish`]): the framework's own errors rewritten into the JSON
//! shape, a key's rate-limit state as headers, client errors logged at a bounded rate, requests
//! counted and timed.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

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
    let mut rebuilt = HttpResponse::build(status).json(super::ErrorBody::new(&code, message));
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
