//! The consumer-api: hands processed events to downstream systems over HTTP.
//!
//! - `GET /consume?group=&max=&wait_ms=`: the next events of the output topic for the caller's
//!   group (`groups`).
//! - `GET /metadata/{source}/{id}`: the stored processed record (`routes`).
//!
//! Each API group is a Kafka consumer group (`consumer_api.group_prefix` + name). An event counts
//! as consumed once the same group calls `/consume` again: that call commits the offsets of the
//! previous answer before reading on, as Kafka's own poll loop does. After a crash, a group gets
//! at most its last unacknowledged answer again; nothing is lost.

mod groups;
mod routes;


use std::time::Duration;

use actix_web::{web, App, HttpServer};
use adapters::http::{health_routes, not_found, RequestError, Tokens};
use adapters::settings::{ConsumerApiSettings, Service};
use adapters::shutdown::CancellationToken;
use adapters::{Health, Settings};
use domain::KeySchema;

pub(crate) struct State {
    pub groups: groups::Groups,
    pub tokens: Tokens,
    pub records: adapters::store::Records,
    pub limits: ConsumerApiSettings,
    pub retry_after_s: u32,
    pub metrics: std::sync::Arc<adapters::metrics::Metrics>,
}

/// A built consumer-api, listening, not yet serving.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    shutdown: CancellationToken,
}

impl Application {
    /// Creates the clients and binds the listener.
    ///
    /// # Errors
    /// When the settings are invalid or the listener cannot be bound.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        settings.validate(Service::ConsumerApi)?;
        if settings.kafka.create_topics {
            adapters::kafka::ensure_topics(&settings.kafka).await?;
        }
        let pool = adapters::store::pool(&settings.redis)?;
        let metrics = adapters::metrics::Metrics::new(Service::ConsumerApi.name(), &settings.telemetry.otlp_endpoint);
        adapters::metrics::register_pool_gauge(&metrics, &pool);
        let groups = groups::Groups::new(settings.kafka.clone(), settings.consumer_api.group_prefix.clone(), metrics.clone());
        // Join the default group now, so the first call does not wait for it.
        groups.get(&settings.consumer_api.default_group)?;
        let probe = adapters::kafka::probe(&settings.kafka, &settings.kafka.topics.output)?;
        let health = web::Data::new(Health::new(Some((pool.clone(), settings.redis.timeout())), Some(probe)));
        let state = web::Data::new(State {
            groups,
            tokens: Tokens::new(settings.auth.tokens.clone()),
            records: adapters::store::Records::new(
                pool,
                KeySchema::new(&settings.redis.key_prefix),
                settings.redis.timeout(),
                metrics.clone(),
                Duration::from_secs(settings.gateway.idempotency_window_s),
            ),
            limits: settings.consumer_api.clone(),
            retry_after_s: settings.gateway.retry_after_s,
            metrics: metrics.clone(),
        });
        let metrics_data = web::Data::new(metrics);
        let (listener, port) = adapters::http::bind(&settings.consumer_api.listen)?;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(health.clone())
                .app_data(metrics_data.clone())
                .wrap(actix_web::middleware::from_fn(adapters::http::record_metrics))
                .app_data(web::QueryConfig::default().error_handler(|err, _| RequestError::BadRequest(err.to_string()).into()))
                .app_data(web::PathConfig::default().error_handler(|err, _| RequestError::BadRequest(err.to_string()).into()))
                .configure(health_routes)
                .configure(routes::configure)
                .default_service(web::to(not_found))
        })
        .workers(settings.consumer_api.workers)
        .shutdown_timeout(settings.shutdown.deadline().as_secs().max(1))
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, "consumer-api listening");
        Ok(Application { server, port, shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown token is cancelled, then finishes requests in flight.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        adapters::http::serve_until_stopped(self.server, &self.shutdown, "consumer-api").await
    }
}
