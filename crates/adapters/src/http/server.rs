//! What every listener shares: `/healthz`, `/readyz`, `/metrics`, binding, serving until
//! shutdown, and the transformers' small health server.

use std::net::TcpListener;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{fallback, finish, path_errors, query_errors};
use crate::health::{Health, Readiness};

/// `GET /healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "The process is alive", body = Alive)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive { status: "ok" })
}

/// `GET /readyz`: the dependencies answer and nothing is stuck.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "Every dependency answers", body = Readiness),
        (status = 503, description = "A dependency does not answer", body = Readiness)))]
pub async fn readyz(health: web::Data<Health>) -> HttpResponse {
    match health.check().await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(report) => HttpResponse::ServiceUnavailable().json(report),
    }
}

/// `GET /metrics`: the Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
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
