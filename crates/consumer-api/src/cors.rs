//! CORS for the browser pages named in `consumer_api.cors_origins` — the operator console,
//! served by the gateway's admin listener on another origin, calls `/metadata` and `/stream`
//! with `Authorization: Bearer`. Exact origins only, never a wildcard, never credentials
//! (cookies): the key travels in the header. A preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered here, before routing and authentication: `204`
//! allowing `GET`/`POST` and the `Authorization`, `Content-Type` and `Last-Event-ID` headers for a
//! listed origin, `403` (JSON, naming the origin) for any other. Every other answer to a listed
//! origin carries `Access-Control-Allow-Origin` (errors too, so the page can read why); an
//! unlisted origin's answer carries none, and the browser keeps it from the page.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

/// The origins allowed, as `adapters::settings::web_origin` normalizes them.
pub(crate) struct Origins(Vec<String>);

impl Origins {
    /// # Errors
    /// When an entry is not an origin (settings validation says so first).
    pub(crate) fn new(configured: &[String]) -> anyhow::Result<Self> {
        let origins = configured
            .iter()
            .enumerate()
            .map(|(i, o)| adapters::settings::web_origin(o).map_err(|e| anyhow::anyhow!("consumer_api.cors_origins[{i}]: {e}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Origins(origins))
    }

    fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

/// The middleware (`actix_web::middleware::from_fn`); [`Origins`] is app data.
///
/// # Errors
/// Whatever the wrapped service returns.
pub(crate) async fn cors(req: ServiceRequest, next: Next<impl MessageBody + 'static>) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let listed = match (&origin, req.app_data::<web::Data<Origins>>()) {
        (Some(o), Some(origins)) => origins.allows(o),
        _ => false,
    };
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let answer = match &origin {
            Some(o) if listed => HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o.as_str()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type, last-event-id"))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                .insert_header((header::VARY, "Origin"))
                .finish(),
            _ => HttpResponse::Forbidden().insert_header((header::VARY, "Origin")).json(serde_json::json!({
                "error": "forbidden",
                "message": match &origin {
                    Some(o) => format!("origin `{o}` is not in consumer_api.cors_origins"),
                    None => "a CORS preflight needs an Origin header".to_owned(),
                },
            })),
        };
        let (req, _) = req.into_parts();
        return Ok(ServiceResponse::new(req, answer));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    let headers = res.headers_mut();
    headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
    if let Some(o) = origin.filter(|_| listed) {
        if let Ok(value) = header::HeaderValue::from_str(&o) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, header::HeaderValue::from_static("retry-after, ratelimit, ratelimit-policy"));
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as web_test, App};

    fn preflight(origin: &str) -> web_test::TestRequest {
        web_test::TestRequest::default()
            .method(Method::OPTIONS)
            .uri("/metadata/jira/1")
            .insert_header((header::ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, "GET"))
            .insert_header((header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization"))
    }

    #[actix_web::test]
    async fn only_listed_origins_pass_the_preflight_and_read_answers() {
        let origins = web::Data::new(Origins::new(&["http://127.0.0.1:9081/".to_owned()]).unwrap());
        let app = web_test::init_service(
            App::new()
                .app_data(origins)
                .wrap(actix_web::middleware::from_fn(cors))
                .route("/metadata/{s}/{id}", web::get().to(|| async { HttpResponse::Unauthorized().json(serde_json::json!({"error": "unauthorized"})) })),
        )
        .await;
        let ok = web_test::call_service(&app, preflight("http://127.0.0.1:9081").to_request()).await;
        assert_eq!(ok.status(), 204);
        assert_eq!(ok.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "http://127.0.0.1:9081");
        assert!(ok.headers().get(header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap().to_str().unwrap().contains("authorization"));

        let refused = web_test::call_service(&app, preflight("http://evil.example").to_request()).await;
        assert_eq!(refused.status(), 403);
        assert!(refused.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let body: serde_json::Value = web_test::read_body_json(refused).await;
        assert!(body["message"].as_str().unwrap().contains("http://evil.example"), "{body}");

        // An error answer to a listed origin is readable by the page; to another, not.
        for (origin, readable) in [("http://127.0.0.1:9081", true), ("http://evil.example", false)] {
            let req = web_test::TestRequest::get().uri("/metadata/jira/1").insert_header((header::ORIGIN, origin)).to_request();
            let res = web_test::call_service(&app, req).await;
            assert_eq!(res.status(), 401);
            assert_eq!(res.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_some(), readable, "{origin}");
        }
    }
}
