//! Route tables declared once ([`routes!`](crate::routes)) and the fallback that answers what
//! no route takes: 405 with `Allow`, or 404, in the JSON shape.

use actix_web::http::header;
use actix_web::{web, HttpRequest};

use super::{problem_response, RequestError};

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
