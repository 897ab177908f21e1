//! The consumer-api's contract (OpenAPI 3.1), generated from its handlers' annotations and the
//! types they read and write, at `GET /openapi.json` on the public listener.

use std::sync::LazyLock;

use adapters::openapi::{complete, for_routes};
use utoipa::openapi::OpenApi as Document;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "metastream consumer-api", description = "Processed events and records for downstream systems."),
    paths(crate::routes::consume, crate::routes::ack, crate::routes::reset, crate::routes::stream, crate::routes::metadata, crate::routes::history),
    // A query parameter's type is referenced, not collected, by utoipa: registered here.
    components(schemas(crate::cloudevents::Format)),
    servers((url = "/"))
)]
struct ConsumerApi;

/// Every operation of the consumer-api, both listeners.
pub fn document() -> Document {
    complete(ConsumerApi::openapi())
}

static FULL: LazyLock<Document> = LazyLock::new(document);

/// The public listener's contract (the admin listener serves only health and metrics).
pub fn public() -> Document {
    for_routes(&FULL, &public_routes())
}

pub(crate) fn configure_public(cfg: &mut actix_web::web::ServiceConfig) {
    adapters::openapi::serve(cfg, &public());
}

pub(crate) fn public_routes() -> Vec<&'static [(&'static str, &'static str)]> {
    vec![adapters::http::HEALTH_ROUTES, crate::routes::ROUTES, adapters::openapi::ROUTES]
}

/// What the operators' listener serves (`adapters::http::health_server`).
#[cfg(test)]
pub(crate) fn admin_routes() -> Vec<&'static [(&'static str, &'static str)]> {
    vec![adapters::http::HEALTH_ROUTES, adapters::http::METRICS_ROUTES]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_the_listeners_serve_and_no_other() {
        let tables: Vec<_> = public_routes().into_iter().chain(admin_routes()).collect();
        assert_eq!(adapters::openapi::operations(&document()), adapters::openapi::served(&tables));
    }
}
