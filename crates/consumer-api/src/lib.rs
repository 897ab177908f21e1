//! The consumer-api: hands processed events to downstream systems over HTTP.
//!
//! - `GET /consume?group=&max=&wait_ms=`: the next events of the output topic for the caller's
//!   group (`groups`), of the sources the caller's key may read.
//! - `GET /metadata/{source}/{id}`: the stored processed record (`routes`).
//! - `GET /openapi.json`: the API contract; `consumer-api openapi public` prints it.
//!
//! `/metrics` is served on the operators' listener (`consumer_api.admin_listen`), which the
//! public edge never routes. Every route checks its key's scope before any Kafka or Redis work.
//!
//! An API group is not a Kafka consumer group: where it is lives in Redis (`adapters::store::positions`), and on
//! each call this replica's consumer for the group is assigned the partitions at those positions
//! (`groups`), so any replica serves any call. An answer is a lease, acknowledged by the owner's
//! next call or by its cursor (`POST /consume/ack`); one not acknowledged within
//! `consumer_api.ack_timeout_ms` is handed out again. Delivery is at least once; nothing is lost.
//! Also: `GET /stream` (Server-Sent Events, resumable on any replica; `stream`), CloudEvents
//! output (`cloudevents`), and webhook delivery to subscriptions (`webhooks`). Browser pages of
//! the origins in `consumer_api.cors_origins` (the operator console) may call it (`cors`).

mod cloudevents;
mod cors;
mod groups;
pub mod openapi;
mod routes;
mod stream;
mod webhooks;


use std::time::Duration;

use actix_web::{web, App, HttpServer};
use std::sync::Arc;

use adapters::auth::{Authenticator, KeyStore, RateLimiter};
use adapters::store::positions::GroupStore;
use adapters::http::{common_routes, fallback, finish};
use adapters::settings::{ConsumerApiSettings, Service};
use adapters::shutdown::CancellationToken;
use adapters::{Health, Settings};
use domain::KeySchema;

pub(crate) struct State {
    pub groups: Arc<groups::Groups>,
    pub auth: Arc<Authenticator>,
    pub limiter: RateLimiter,
    /// `GET /consume` calls in flight, per key (`consumer_api.max_long_polls_per_key`).
    pub long_polls: groups::PerKey,
    /// Where each group is, in Redis (any replica serves any call).
    pub positions: GroupStore,
    /// Signs and checks cursors, with the deployment's cursor secret from Redis (made once).
    pub cursors: tokio::sync::OnceCell<adapters::auth::KeyHasher>,
    pub records: adapters::store::Records,
    /// Reads the output topic outside any group (an entity's history).
    pub reader_config: adapters::kafka::ClientConfig,
    pub output_topic: String,
    pub limits: ConsumerApiSettings,
    pub retry_after_s: u32,
    pub metrics: std::sync::Arc<adapters::metrics::Metrics>,
}

/// A built consumer-api, listening, not yet serving.
pub struct Application {
    listeners: adapters::http::Listeners,
    pulse: adapters::pulse::Pulse,
    shutdown: CancellationToken,
    webhooks: Arc<webhooks::Webhooks>,
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
        adapters::store::register_pool_gauge(&metrics, &pool);
        let groups = Arc::new(groups::Groups::new(settings.kafka.clone(), &settings.consumer_api));
        groups.spawn_idle_release(shutdown.clone());
        let open = Arc::downgrade(&groups);
        metrics.gauge("metastream_consumer_groups_open", "API consumer groups open on this replica", move || {
            open.upgrade().map(|g| vec![(g.open_count() as i64, Vec::new())]).unwrap_or_default()
        });
        let keys = KeySchema::new(&settings.redis.key_prefix);
        let auth = Arc::new(Authenticator::new(&settings.auth, KeyStore::new(pool.clone(), keys.clone(), settings.redis.timeout())));
        auth.start(settings.redis.seeds(), Duration::from_millis(settings.sources.refresh_ms), shutdown.clone());
        let limiter = RateLimiter::new(pool.clone(), keys.clone(), settings.redis.timeout(), settings.auth.rate_limit_on_redis_error, metrics.clone());
        let webhooks = webhooks::Webhooks::start(&settings, pool.clone(), metrics.clone(), shutdown.clone());
        let probe = adapters::kafka::probe(&settings.kafka, &settings.kafka.topics.output)?;
        let health = web::Data::new(Health::new(Some((pool.clone(), settings.redis.timeout())), Some(probe)));
        let pulse = adapters::store::pulse::PulseStore::new(pool.clone(), keys.clone(), settings.redis.timeout());
        let pulse_task = adapters::pulse::spawn(Service::ConsumerApi, Health::clone(&health), metrics.clone(), pulse, shutdown.clone());
        let state = web::Data::new(State {
            groups,
            auth,
            limiter,
            long_polls: groups::PerKey::default(),
            positions: GroupStore::new(pool.clone(), keys.clone(), settings.redis.timeout()),
            cursors: tokio::sync::OnceCell::new(),
            records: adapters::store::Records::new(
                pool,
                keys,
                settings.redis.timeout(),
                metrics.clone(),
                Duration::from_secs(settings.gateway.idempotency_window_s),
            ),
            reader_config: adapters::kafka::reader_config(&settings.kafka),
            output_topic: settings.kafka.topics.output.clone(),
            limits: settings.consumer_api.clone(),
            retry_after_s: settings.gateway.retry_after_s,
            metrics: metrics.clone(),
        });
        // The operators' listener: health and /metrics, as a transformer's.
        let (admin_server, admin_port) = adapters::http::health_server(&settings.consumer_api.admin_listen, Health::clone(&*health), metrics.clone())?;
        let metrics_data = web::Data::new(metrics);
        let cors_origins = web::Data::new(cors::Origins::new(&settings.consumer_api.cors_origins)?);
        let (listener, port) = adapters::http::bind(&settings.consumer_api.listen)?;
        let deadline = settings.shutdown.deadline().as_secs().max(1);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(health.clone())
                .app_data(metrics_data.clone())
                .app_data(cors_origins.clone())
                .wrap(actix_web::middleware::from_fn(cors::cors))
                .wrap(actix_web::middleware::from_fn(finish))
                .configure(common_routes)
                .configure(routes::configure)
                .configure(openapi::configure_public)
                .default_service(fallback(openapi::public_routes()))
        })
        // An answer written in pieces (`/consume`'s head and events) must not wait for the
        // client's delayed ACK (Nagle: 40 ms stalls).
        .tcp_nodelay(true)
        .workers(settings.consumer_api.workers)
        .shutdown_timeout(deadline)
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, admin_port, "consumer-api listening");
        let listeners = adapters::http::Listeners::new((server, port), (admin_server, admin_port));
        Ok(Application { listeners, pulse: pulse_task, shutdown, webhooks })
    }

    /// Its listeners: their ports (useful with port 0).
    pub fn listeners(&self) -> &adapters::http::Listeners {
        &self.listeners
    }

    /// Serves until the shutdown token is cancelled, then finishes requests in flight.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.listeners.serve_until_stopped(&self.shutdown, "consumer-api").await?;
        self.pulse.stopped().await;
        // Webhook workers commit what they delivered and leave their groups.
        self.webhooks.stopped().await;
        Ok(())
    }
}

/// The consumer-api's process from start to exit: settings, telemetry, signals, the service until
/// it stops. What its binary runs, and `metastream-services` when called as `consumer-api`.
pub fn run() -> std::process::ExitCode {
    if let Some(code) = adapters::openapi::print_if_asked(&[("public", openapi::public)]) {
        return code;
    }
    adapters::process::run(adapters::settings::Service::ConsumerApi, adapters::process::Threads::Multi, |settings, shutdown| async move { Application::build(settings, shutdown).await?.run_until_stopped().await })
}
