//! The API contract: `GET /openapi.json` (OpenAPI 3.1).

use actix_web::HttpResponse;

adapters::routes! { pub(crate) fn configure / ROUTES {
    GET "/openapi.json" => document,
} }

async fn document() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body("{}")
}
