//! The gateway: authenticates clients' events, validates them, and writes them to Kafka.
//!
//! Two listeners: the public one (`gateway.listen`) and the operators' one
//! (`gateway.admin_listen`), which the public edge never routes.
//!
//! - [`Application`]: builds both HTTP servers from [`Settings`] and runs them until shutdown.
//! - `routes` (public): `POST /ingest`, `POST /ingest/batch`.
//! - `admin`: the admin API (`/v1/sources`, `/v1/operations`, preview), `admin` scope.
//! - `keys`: `/v1/keys` (create, list, get, update, rotate, revoke), `admin` scope.
//! - `audit`: every admin action appended to the audit topic; `GET /v1/audit`.
//! - `preview`: runs a source's operations on a sample event, as the transformers would.
//! - `dead_letters`: `/v1/dead-letters` (list, replay).
//! - `pipeline`: `GET /v1/pipeline`, the pipeline at a glance (instances, lag, rates, latency).
//! - `subscriptions`: `/v1/subscriptions`, webhook subscriptions (the consumer-api delivers them).
//! - `idempotency`: `Idempotency-Key` on `/ingest`: a retry within the window gets the first answer.
//! - `hooks` (public): sources that speak their own protocol — `/hooks/{source}`, `/cloudevents`,
//!   `/api/v1/lineage`, `/datahub/{source}/…`.
//! - `console` (admin listener only): the operator console at `/console`, its files embedded.
//! - `openapi`: the API contract, `GET /openapi.json` on both listeners; `gateway openapi public|admin`
//!   prints it (the docs book's API reference is generated from it).
//!
//! Every route authenticates from memory and checks its scope before any Kafka or Redis work
//! (`adapters::auth`).
//!
//! An event is answered `202 Accepted` only after Kafka acknowledged it (`acks=all`, idempotent
//! producer). When Kafka cannot take it in time, the answer is `503` with `Retry-After`. An
//! event the pipeline could not carry (larger or deeper than its budget, `domain::limits`) is
//! refused at once (413 / 400), never answered 503: retrying it could not succeed.

mod admin;
mod audit;
mod console;
mod dead_letters;
mod hooks;
mod idempotency;
mod keys;
pub mod openapi;
mod pipeline;
mod preview;
mod routes;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use adapters::auth::{Authenticator, KeyStore, RateLimiter};
use adapters::http::{common_routes, fallback, finish, metrics_routes};
use adapters::settings::Service;
use adapters::shutdown::CancellationToken;
use adapters::{Health, Settings, SourceCatalog};
use adapters::kafka::FutureProducer;

/// State shared by the gateway's handlers.
pub(crate) struct State {
    pub producer: FutureProducer,
    pub catalog: Arc<SourceCatalog>,
    pub auth: Arc<Authenticator>,
    pub limiter: RateLimiter,
    pub default_rate_limit: domain::auth::RateLimit,
    pub audit_topic: String,
    pub instance: String,
    pub ingest_topic: String,
    pub max_body_bytes: usize,
    /// The largest message each topic takes, once read from the broker: see `domain::limits`.
    pub limits: adapters::kafka::SharedLimits,
    pub body_timeout: Duration,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub retry_after_s: u32,
    pub produce_timeout: Duration,
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<adapters::metrics::Metrics>,
    /// `Idempotency-Key` records.
    pub claims: adapters::store::idempotency::Claims,
    /// Which dead letters were replayed.
    pub replay_markers: adapters::store::markers::ReplayMarkers,
    pub idempotency_window: Duration,
    pub dead_letter_topic: String,
    /// Client config for reading the dead-letter topic outside any group.
    pub reader_config: adapters::kafka::ClientConfig,
    /// Webhook subscriptions (delivered by the consumer-api).
    pub subscriptions: adapters::webhooks::SubscriptionStore,
    pub webhooks: adapters::settings::WebhookSettings,
    pub output_topic: String,
    /// Every instance's pulse (`GET /v1/pipeline`).
    pub pulse: adapters::store::pulse::PulseStore,
    /// Each stage's name, consumer group and input topic (`GET /v1/pipeline`'s lag).
    pub stages: Vec<(&'static str, String, String)>,
    /// `auth.key_secret`, which webhook secrets derive from.
    pub server_secret: Option<Vec<u8>>,
}

/// A built gateway, listening, not yet serving.
pub struct Application {
    listeners: adapters::http::Listeners,
    pulse: adapters::pulse::Pulse,
    producer: FutureProducer,
    shutdown: CancellationToken,
    deadline: Duration,
}

impl Application {
    /// Connects to Kafka and Redis, seeds and loads source configs, and binds the listener.
    ///
    /// # Errors
    /// When the settings are invalid, the listener cannot be bound, or topics cannot be created.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        settings.validate(Service::Gateway)?;
        if settings.kafka.create_topics {
            adapters::kafka::ensure_topics(&settings.kafka).await?;
        }
        // The gateway starts, and answers 503, while Kafka is unreachable: the limits arrive
        // when it answers. Its producer writes only to the ingest topic, whose limit with the
        // broker's defaults exceeds librdkafka's batch size; `producer` caps batches when known.
        let limits = adapters::kafka::SharedLimits::load(&settings.kafka, Duration::from_secs(5), shutdown.clone()).await;
        let producer = adapters::kafka::producer(&settings.kafka, limits.get().as_ref())?;
        let pool = adapters::store::pool(&settings.redis)?;
        let metrics = adapters::metrics::Metrics::new(Service::Gateway.name(), &settings.telemetry.otlp_endpoint);
        adapters::kafka::register_producer_gauge(&metrics, &producer);
        adapters::store::register_pool_gauge(&metrics, &pool);
        let catalog = SourceCatalog::start(&settings, pool.clone(), shutdown.clone(), metrics.clone()).await?;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(settings.gateway.max_in_flight));
        let (gauge_sem, max) = (in_flight.clone(), settings.gateway.max_in_flight);
        metrics.gauge("metastream_in_flight_requests", "Ingest requests in flight", move || {
            vec![((max - gauge_sem.available_permits()) as i64, Vec::new())]
        });

        let keys = domain::KeySchema::new(&settings.redis.key_prefix);
        let auth = Arc::new(Authenticator::new(&settings.auth, KeyStore::new(pool.clone(), keys.clone(), settings.redis.timeout())));
        auth.start(settings.redis.seeds(), Duration::from_millis(settings.sources.refresh_ms), shutdown.clone());
        let limiter = RateLimiter::new(pool.clone(), keys.clone(), settings.redis.timeout(), settings.auth.rate_limit_on_redis_error, metrics.clone());
        // Ready only once the size limits are read: until then every ingest answers 503.
        let broker_probe = adapters::kafka::probe(&settings.kafka, &settings.kafka.topics.ingest)?;
        let known = limits.clone();
        let kafka_probe: adapters::health::KafkaProbe = Arc::new(move || {
            if known.get().is_none() {
                return Err("the topics' size limits are not read yet".into());
            }
            broker_probe()
        });
        let health = web::Data::new(Health::new(Some((pool.clone(), settings.redis.timeout())), Some(kafka_probe)));
        let pulse = adapters::store::pulse::PulseStore::new(pool.clone(), keys.clone(), settings.redis.timeout());
        let pulse_task = adapters::pulse::spawn(Service::Gateway, Health::clone(&health), metrics.clone(), pulse.clone(), shutdown.clone());
        let state = web::Data::new(State {
            producer: producer.clone(),
            catalog,
            auth,
            limiter,
            default_rate_limit: settings.auth.default_rate_limit,
            audit_topic: settings.kafka.topics.audit.clone(),
            instance: adapters::instance_id(),
            ingest_topic: settings.kafka.topics.ingest.clone(),
            max_body_bytes: settings.gateway.max_body_bytes,
            limits,
            body_timeout: settings.gateway.body_timeout(),
            max_batch_events: settings.gateway.max_batch_events,
            max_batch_bytes: settings.gateway.max_batch_bytes,
            retry_after_s: settings.gateway.retry_after_s,
            produce_timeout: settings.kafka.produce_timeout(),
            in_flight,
            metrics: metrics.clone(),
            claims: adapters::store::idempotency::Claims::new(pool.clone(), keys.clone(), settings.redis.timeout()),
            replay_markers: adapters::store::markers::ReplayMarkers::new(pool.clone(), keys, settings.redis.timeout()),
            idempotency_window: Duration::from_secs(settings.gateway.idempotency_window_s),
            dead_letter_topic: settings.kafka.topics.dead_letter.clone(),
            reader_config: adapters::kafka::reader_config(&settings.kafka),
            subscriptions: adapters::webhooks::SubscriptionStore::new(pool.clone(), domain::KeySchema::new(&settings.redis.key_prefix), settings.redis.timeout()),
            webhooks: settings.webhooks.clone(),
            output_topic: settings.kafka.topics.output.clone(),
            pulse,
            stages: vec![
                (domain::Stage::Pre.as_str(), settings.pre_transformer.group_id.clone(), settings.kafka.topics.ingest.clone()),
                (domain::Stage::Post.as_str(), settings.post_transformer.group_id.clone(), settings.kafka.topics.processed.clone()),
            ],
            server_secret: settings.auth.key_secret.as_ref().map(|s| s.expose().as_bytes().to_vec()).filter(|s| !s.is_empty()),
        });

        let metrics_data = web::Data::new(metrics);
        let (listener, port) = adapters::http::bind(&settings.gateway.listen)?;
        let (admin_listener, admin_port) = adapters::http::bind(&settings.gateway.admin_listen)?;
        let deadline = settings.shutdown.deadline();
        // What both listeners' handlers read.
        let shared = move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(state.clone()).app_data(health.clone()).app_data(metrics_data.clone());
            common_routes(cfg);
        };
        let public_shared = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(finish))
                .configure(public_shared.clone())
                .configure(routes::configure)
                .configure(hooks::configure)
                .configure(openapi::configure_public)
                .default_service(fallback(openapi::public_routes()))
        })
        // An answer written in pieces (`/consume`'s head and events) must not wait for the
        // client's delayed ACK (Nagle: 40 ms stalls).
        .tcp_nodelay(true)
        .workers(settings.gateway.workers)
        .shutdown_timeout(deadline.as_secs().max(1))
        .disable_signals()
        .listen(listener)?
        .run();
        let console = web::Data::new(console::Console::new(&settings.gateway.console)?);
        let admin_server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(finish))
                .configure(shared.clone())
                .configure(metrics_routes)
                .configure(admin::configure)
                .configure(keys::configure)
                .configure(audit::configure)
                .configure(dead_letters::configure)
                .configure(pipeline::configure)
                .configure(subscriptions::configure)
                .configure(openapi::configure_admin)
                .configure(console::configure(console.clone()))
                .default_service(fallback(openapi::admin_routes()))
        })
        .workers(1)
        .shutdown_timeout(deadline.as_secs().max(1))
        .disable_signals()
        .listen(admin_listener)?
        .run();
        tracing::info!(port, admin_port, "gateway listening");
        let listeners = adapters::http::Listeners::new((server, port), (admin_server, admin_port));
        Ok(Application { listeners, pulse: pulse_task, producer, shutdown, deadline })
    }

    /// Its listeners: their ports (useful with port 0).
    pub fn listeners(&self) -> &adapters::http::Listeners {
        &self.listeners
    }

    /// Serves until the shutdown token is cancelled, then stops taking requests, finishes the
    /// ones in flight and flushes the producer.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.listeners.serve_until_stopped(&self.shutdown, "gateway").await?;
        self.pulse.stopped().await;
        let producer = self.producer;
        let deadline = self.deadline;
        tokio::task::spawn_blocking(move || adapters::kafka::flush(&producer, deadline)).await??;
        Ok(())
    }
}

/// The gateway's process from start to exit: settings, telemetry, signals, the service until
/// it stops. What its binary runs, and `metastream-services` when called as `gateway`.
pub fn run() -> std::process::ExitCode {
    if let Some(code) = adapters::openapi::print_if_asked(&[("public", openapi::public), ("admin", openapi::admin)]) {
        return code;
    }
    adapters::process::run(adapters::settings::Service::Gateway, adapters::process::Threads::Multi, |settings, shutdown| async move { Application::build(settings, shutdown).await?.run_until_stopped().await })
}
