//! The consumer-api's contract (OpenAPI 3.1), generated from its handlers' annotations, at
//! `GET /openapi.json` on the public listener.

use std::sync::LazyLock;

use adapters::openapi::{for_routes, with_bearer, Common};
use serde::Serialize;
use utoipa::openapi::OpenApi as Document;
use utoipa::{OpenApi, ToSchema};

/// One delivered event and where it was on the output topic.
#[derive(Serialize, ToSchema)]
#[schema(as = Delivered)]
pub struct DeliveredDoc {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The processed event.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// `GET /consume`.
#[derive(Serialize, ToSchema)]
#[schema(as = ConsumeAnswer)]
pub struct ConsumeAnswerDoc {
    pub group: String,
    pub count: u64,
    /// Acknowledges this answer (`cursor=` on the next call, or `POST /consume/ack`); `null` when
    /// the answer is empty.
    pub cursor: Option<String>,
    /// Present (`true`) when the group's position had been deleted by retention and moved to the
    /// earliest offset left.
    pub reset: Option<bool>,
    pub events: Vec<DeliveredDoc>,
}

/// `POST /consume/reset`.
#[derive(Serialize, ToSchema)]
#[schema(as = ResetAnswer)]
pub struct ResetAnswerDoc {
    pub group: String,
    /// Partition → the offset the group goes on from.
    #[schema(value_type = Object)]
    pub positions: serde_json::Value,
}

/// `POST /consume/ack`.
#[derive(Serialize, ToSchema)]
#[schema(as = AckAnswer)]
pub struct AckAnswerDoc {
    pub group: String,
    pub acknowledged: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "metastream consumer-api", description = "Processed events and records for downstream systems."),
    paths(crate::routes::consume, crate::routes::ack, crate::routes::reset, crate::routes::stream, crate::routes::metadata),
    servers((url = "/"))
)]
struct ConsumerApi;

/// Every operation of the consumer-api, both listeners.
pub fn document() -> Document {
    let mut doc = ConsumerApi::openapi();
    doc.merge(Common::openapi());
    with_bearer(doc)
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
