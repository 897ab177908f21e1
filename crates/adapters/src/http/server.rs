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

/// What every listener has: query and path errors answered in the JSON shape, `/healthz` and
/// `/readyz` (the app provides `web::Data<Health>`).
pub fn common_routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(query_errors()).app_data(path_errors());
    health_routes(cfg);
}

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

/// A service's two listeners: the public one (clients, behind the edge) and the operators' one
/// (admin API, `/metrics`), served together until shutdown.
pub struct Listeners {
    public: actix_web::dev::Server,
    admin: actix_web::dev::Server,
    port: u16,
    admin_port: u16,
}

impl Listeners {
    pub fn new(public: (actix_web::dev::Server, u16), admin: (actix_web::dev::Server, u16)) -> Self {
        Self { public: public.0, port: public.1, admin: admin.0, admin_port: admin.1 }
    }

    /// The public listener's port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operators' listener's port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Serves both until `shutdown` is cancelled, then finishes the requests in flight on each.
    ///
    /// # Errors
    /// When either server fails.
    pub async fn serve_until_stopped(self, shutdown: &crate::shutdown::CancellationToken, service: &str) -> anyhow::Result<()> {
        let admin = format!("{service} admin");
        tokio::try_join!(serve_until_stopped(self.public, shutdown, service), serve_until_stopped(self.admin, shutdown, &admin))?;
        Ok(())
    }
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
            .configure(common_routes)
            .configure(metrics_routes)
            .default_service(fallback(vec![HEALTH_ROUTES, METRICS_ROUTES]))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, port))
}
