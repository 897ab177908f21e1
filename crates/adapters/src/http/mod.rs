//! HTTP plumbing shared by the services: the one JSON error shape (here), reading a request
//! (`request`: JSON bodies within a limit and a deadline, query strings), the route tables and
//! their 404/405 fallback (`routing`), what every answer goes through (`response`: the JSON
//! rewrite of the framework's errors, rate-limit headers, request metrics), and the listeners'
//! shared endpoints and lifecycle (`server`: `/healthz`, `/readyz`, `/metrics`).
//!
//! Every error body is `{"error": "<code>", "message": "<what is wrong>"}`: each service's error
//! enum implements [`Problem`]; the errors every endpoint shares are [`RequestError`].

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::json;

mod request;
mod response;
mod routing;
pub(crate) mod server;

pub use request::{path_errors, query, query_errors, read_body, require_json};
pub use response::{finish, RateState, RateStates};
pub use routing::fallback;
pub use server::{bind, common_routes, health_routes, health_server, healthz, metrics, metrics_routes, readyz, serve_until_stopped, Listeners, HEALTH_ROUTES, METRICS_ROUTES};


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

/// Every error answer: `{"error": "<code>", "message": "<what is wrong>"}`, and for some codes
/// more members (`required_scope` with `forbidden`; `size`, `limit` with `event_too_large`;
/// `errors` with `invalid_config`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ErrorBody<'a> {
    /// A stable code: `unauthorized`, `forbidden`, `rate_limited`, `invalid_event`, …
    pub error: &'a str,
    /// What is wrong, for people.
    pub message: String,
    // What the code adds (`Problem::details`).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl<'a> ErrorBody<'a> {
    /// `error` and `message`, nothing more.
    pub fn new(error: &'a str, message: String) -> Self {
        ErrorBody { error, message, details: serde_json::Map::new() }
    }
}

/// The answer for `problem`, in the one JSON shape.
pub fn problem_response(problem: &dyn Problem) -> HttpResponse {
    let mut response = HttpResponse::build(problem.status());
    problem.headers(&mut response);
    let mut body = ErrorBody::new(problem.code(), problem.to_string());
    problem.details(&mut body.details);
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
