//! What every service's OpenAPI document shares: the health, metrics and contract endpoints, the
//! error answers, the security schemes, and serving a document filtered to what one listener
//! serves. The schemas are derived on the types the handlers read and write (`ErrorBody`,
//! `Alive`, `Readiness`, …), never declared here a second time.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;

use crate::http::ErrorBody;

// `GET /openapi.json`, which `serve` answers.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
#[allow(dead_code)]
fn openapi_doc() {}

/// The health, metrics and contract endpoints every listener may serve.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(crate::http::server::healthz, crate::http::server::readyz, crate::http::server::metrics, openapi_doc),
    components(schemas(ErrorBody))
)]
struct Common;

/// A service's document made whole: the endpoints every listener may serve ([`Common`]) and the
/// security schemes its operations name (`bearer`, `hub_signature`).
pub fn complete(mut doc: OpenApi) -> OpenApi {
    doc.merge(<Common as utoipa::OpenApi>::openapi());
    doc.components.get_or_insert_with(Default::default).add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key (`msk_…`) or a configured token; scopes decide what it may do"))
                .build(),
        ),
    );
    // GitHub's and Jira's webhooks: `sha256=<hex HMAC-SHA-256 of the body>` with the source's
    // secret (Jira sends it as `X-Hub-Signature`).
    doc.components.get_or_insert_with(Default::default).add_security_scheme(
        "hub_signature",
        SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(utoipa::openapi::security::ApiKeyValue::with_description(
            "X-Hub-Signature-256",
            "`sha256=` and the hex HMAC-SHA-256 of the raw body, keyed with the source's secret (GitHub; Jira sends the same as X-Hub-Signature)",
        ))),
    );
    doc
}

/// `doc` reduced to the operations of `routes` (a listener's [`routes!`](crate::routes) tables).
pub fn for_routes(doc: &OpenApi, routes: &[&[(&str, &str)]]) -> OpenApi {
    let mut doc = doc.clone();
    let served = |path: &str, method: &str| routes.iter().flat_map(|t| t.iter()).any(|(m, p)| *p == path && m.eq_ignore_ascii_case(method));
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        let methods = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
            ("HEAD", &mut item.head),
            ("OPTIONS", &mut item.options),
            ("TRACE", &mut item.trace),
        ];
        let mut any = false;
        for (method, op) in methods {
            if op.is_some() && !served(&path, method) {
                *op = None;
            }
            any |= op.is_some();
        }
        if any {
            doc.paths.paths.insert(path, item);
        }
    }
    doc
}

/// Every (METHOD, path) `doc` documents.
pub fn operations(doc: &OpenApi) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if op.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

/// The (METHOD, path) pairs of `tables`, sorted and deduplicated: what a service serves, to
/// compare with [`operations`] of its document.
pub fn served(tables: &[&[(&str, &str)]]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = tables.iter().flat_map(|t| t.iter()).map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    out.sort();
    out.dedup();
    out
}

/// Registers `GET /openapi.json` answering `doc`.
pub fn serve(cfg: &mut web::ServiceConfig, doc: &OpenApi) {
    let json = doc.to_pretty_json().expect("an OpenAPI document serializes");
    cfg.route(
        "/openapi.json",
        web::get().to(move || {
            let json = json.clone();
            async move { HttpResponse::Ok().content_type("application/json").body(json) }
        }),
    );
}

/// A listener's name and the document it serves.
pub type Listener<'a> = (&'a str, fn() -> OpenApi);

/// `<service> openapi <listener>` (for the docs book's API reference): prints the document
/// `listener` serves at `GET /openapi.json` and gives the exit code; `None` when the command line
/// does not ask for it, and the service runs. `listeners` are each listener's name and document.
pub fn print_if_asked(listeners: &[Listener<'_>]) -> Option<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let asked = args.iter().position(|a| a == "openapi")?;
    let names = || listeners.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
    let Some((_, document)) = args.get(asked + 1).and_then(|wanted| listeners.iter().find(|(name, _)| name == wanted)) else {
        eprintln!("openapi: which listener? one of {}", names());
        return Some(std::process::ExitCode::from(2));
    };
    println!("{}", document().to_pretty_json().expect("an OpenAPI document serializes"));
    Some(std::process::ExitCode::SUCCESS)
}

/// The `routes!` table of `GET /openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[("GET", "/openapi.json")];

/// The answers every authenticated operation may give besides its own: no or bad key (401),
/// a missing scope (403), a rate limit (429), a dependency down (503).
#[derive(utoipa::IntoResponses)]
pub enum AuthErrors {
    /// `unauthorized`: no bearer key, or one that is malformed, unknown, revoked or expired.
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody<'static>),
    /// `forbidden`: the key lacks the scope this request needs; `required_scope` names it. (A
    /// batch none of whose events the key may write: `batch_refused`, with `results` per event.)
    #[response(status = 403)]
    Forbidden(ErrorBody<'static>),
    /// The key's rate limit (`rate_limited`) or a cap on what it holds (`limit_exceeded`).
    #[response(status = 429, headers(
        ("Retry-After" = u64, description = "Seconds until a retry may pass"),
        ("RateLimit" = String, description = "IETF RateLimit: remaining quota and seconds to reset, per limited dimension"),
        ("RateLimit-Policy" = String, description = "IETF RateLimit-Policy: quota and window, per limited dimension")
    ))]
    TooManyRequests(ErrorBody<'static>),
    /// `unavailable`: Kafka or Redis does not answer in time, or the service is at capacity; retry
    /// after `Retry-After`. Nothing was accepted.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ErrorBody<'static>),
}

/// What a JSON body may be refused for before it is read: too slow (408), too large (413), not
/// JSON (415).
#[derive(utoipa::IntoResponses)]
pub enum BodyErrors {
    /// `request_timeout`: the body did not arrive within `gateway.body_timeout_ms` (10 s).
    #[response(status = 408)]
    Timeout(ErrorBody<'static>),
    /// `payload_too_large`: the body is larger than the listener takes (`gateway.max_body_bytes`,
    /// 1 MiB, on ingest).
    #[response(status = 413)]
    TooLarge(ErrorBody<'static>),
    /// `unsupported_media_type`: the body is not `application/json`.
    #[response(status = 415)]
    NotJson(ErrorBody<'static>),
}

/// Everything a request with a JSON body may be refused for: [`BodyErrors`], [`AuthErrors`] and
/// [`RequestErrors`] together.
pub struct WriteErrors;

impl utoipa::IntoResponses for WriteErrors {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        let mut all = BodyErrors::responses();
        all.extend(AuthErrors::responses());
        all.extend(RequestErrors::responses());
        all
    }
}

/// A query string, path or body that is not valid (400), or a route that does not take the
/// method (405).
#[derive(utoipa::IntoResponses)]
pub enum RequestErrors {
    /// `bad_request` (or, for an event, `invalid_event`): a query parameter, path segment or body
    /// that is not valid; `message` names which and why.
    #[response(status = 400)]
    BadRequest(ErrorBody<'static>),
    /// `method_not_allowed`: the path exists but does not take this method.
    #[response(status = 405, headers(("Allow" = String, description = "The methods the path takes")))]
    MethodNotAllowed(ErrorBody<'static>),
}
