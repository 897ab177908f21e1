//! The gateway's API contract (OpenAPI 3.1), generated from its handlers' annotations:
//! `GET /openapi.json` on each listener answers the operations that listener serves.
//!
//! Every schema is derived on the type a handler reads or writes (or, where the JSON is read
//! loosely, written beside the code that reads it), so the contract cannot drift from the
//! bytes; schemathesis (`make test`) still checks every answer of the live stack against it.

use std::sync::LazyLock;

use adapters::openapi::{complete, for_routes};
use utoipa::openapi::OpenApi as Document;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "metastream gateway", description = "Ingest (public listener, gateway.listen) and the admin API (admin listener, gateway.admin_listen)."),
    // Named only in descriptions (a refused batch answers 413 or 422 in the error shape).
    components(schemas(crate::routes::BatchRefused)),
    paths(
        crate::routes::ingest,
        crate::routes::ingest_batch,
        crate::hooks::hook,
        crate::hooks::cloudevents,
        crate::hooks::lineage,
        crate::hooks::datahub_config,
        crate::hooks::datahub_aspects,
        crate::admin::list,
        crate::admin::get,
        crate::admin::put,
        crate::admin::delete,
        crate::admin::preview,
        crate::admin::rotate_secret,
        crate::admin::operations,
        crate::keys::create,
        crate::keys::list,
        crate::keys::get,
        crate::keys::update,
        crate::keys::rotate,
        crate::keys::revoke,
        crate::audit::list,
        crate::dead_letters::list,
        crate::dead_letters::replay,
        crate::pipeline::pipeline,
        crate::subscriptions::create,
        crate::subscriptions::list,
        crate::subscriptions::get,
        crate::subscriptions::update,
        crate::subscriptions::delete,
        crate::subscriptions::rotate_secret,
        crate::subscriptions::dead_letters,
        crate::subscriptions::replay,
    ),
    servers((url = "/"))
)]
struct Gateway;

/// Every operation of the gateway, both listeners.
pub fn document() -> Document {
    complete(Gateway::openapi())
}

static FULL: LazyLock<Document> = LazyLock::new(document);

/// The public listener's contract.
pub fn public() -> Document {
    for_routes(&FULL, &public_routes())
}

/// The admin listener's contract.
pub fn admin() -> Document {
    for_routes(&FULL, &admin_routes())
}

pub(crate) fn configure_public(cfg: &mut actix_web::web::ServiceConfig) {
    adapters::openapi::serve(cfg, &public());
}

pub(crate) fn configure_admin(cfg: &mut actix_web::web::ServiceConfig) {
    adapters::openapi::serve(cfg, &admin());
}

pub(crate) fn public_routes() -> Vec<&'static [(&'static str, &'static str)]> {
    vec![adapters::http::HEALTH_ROUTES, crate::routes::ROUTES, crate::hooks::ROUTES, adapters::openapi::ROUTES]
}

pub(crate) fn admin_routes() -> Vec<&'static [(&'static str, &'static str)]> {
    vec![
        adapters::http::HEALTH_ROUTES,
        adapters::http::METRICS_ROUTES,
        crate::admin::ROUTES,
        crate::keys::ROUTES,
        crate::audit::ROUTES,
        crate::dead_letters::ROUTES,
        crate::pipeline::ROUTES,
        crate::subscriptions::ROUTES,
        adapters::openapi::ROUTES,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_the_listeners_serve_and_no_other() {
        let doc = document();
        let tables: Vec<_> = public_routes().into_iter().chain(admin_routes()).collect();
        assert_eq!(adapters::openapi::operations(&doc), adapters::openapi::served(&tables));
        let json: serde_json::Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        // Every operation but health and the document itself needs a key.
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str());
                assert_eq!(op.get("security").is_some(), !public, "{method} {path}");
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_documented_dead_letter_reasons_are_the_pipeline_s() {
        let doc = serde_json::to_value(document()).unwrap();
        let documented = &doc["components"]["schemas"]["DeadLetterReason"]["enum"];
        let actual: Vec<&str> = domain::DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(documented, &serde_json::json!(actual));
    }

    #[test]
    fn each_listener_documents_what_it_serves() {
        let public = adapters::openapi::operations(&public());
        assert!(public.contains(&("POST".into(), "/ingest".into())));
        assert!(!public.iter().any(|(_, p)| p.starts_with("/v1")), "{public:?}");
        let admin = adapters::openapi::operations(&admin());
        assert!(admin.contains(&("POST".into(), "/v1/keys".into())));
        assert!(!admin.iter().any(|(_, p)| p == "/ingest"), "{admin:?}");
    }
}
