//! The gateway: authenticates clients' events, validates them, and writes them to Kafka.
//!
//! - [`Application`]: builds the HTTP server from [`Settings`] and runs it until shutdown.
//! - `routes`: `POST /ingest`, `POST /ingest/batch`.
//! - `admin`: the admin API (`/v1/sources`, `/v1/operations`, preview), behind admin tokens.
//! - `preview`: runs a source's operations on a sample event, as the transformers would.
//! - `dead_letters`: `/v1/dead-letters` (list, replay).
//!
//! An event is answered `202 Accepted` only after Kafka acknowledged it (`acks=all`, idempotent
//! producer). When Kafka cannot take it in time, the answer is `503` with `Retry-After`. An
//! event the pipeline could not carry (larger or deeper than its budget, `domain::limits`) is
//! refused at once (413 / 400), never answered 503: retrying it could not succeed.

mod admin;
mod dead_letters;
mod idempotency;
mod preview;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use adapters::http::{health_routes, not_found, Tokens};
use adapters::settings::Service;
use adapters::shutdown::CancellationToken;
use adapters::{Health, Settings, SourceCatalog};
use rdkafka::producer::{FutureProducer, Producer as _};

/// State shared by the gateway's handlers.
pub(crate) struct State {
    pub producer: FutureProducer,
    pub catalog: Arc<SourceCatalog>,
    pub tokens: Tokens,
    pub admin_tokens: Option<Tokens>,
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
    pub pool: deadpool_redis::Pool,
    pub keys: domain::KeySchema,
    pub redis_timeout: Duration,
    pub idempotency_window: Duration,
    pub dead_letter_topic: String,
    /// Client config for reading the dead-letter topic outside any group.
    pub reader_config: rdkafka::ClientConfig,
}

/// A built gateway, listening, not yet serving.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
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
        adapters::metrics::register_client_gauges(&metrics, &producer, &pool);
        let catalog = SourceCatalog::start(&settings, pool.clone(), shutdown.clone(), metrics.clone()).await?;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(settings.gateway.max_in_flight));
        let (gauge_sem, max) = (in_flight.clone(), settings.gateway.max_in_flight);
        metrics.gauge("metastream_in_flight_requests", "Ingest requests in flight", move || {
            vec![((max - gauge_sem.available_permits()) as i64, Vec::new())]
        });

        let kafka_probe = adapters::kafka::probe(&settings.kafka, &settings.kafka.topics.ingest)?;
        let health = web::Data::new(Health::new(Some((pool.clone(), settings.redis.timeout())), Some(kafka_probe)));
        let state = web::Data::new(State {
            producer: producer.clone(),
            catalog,
            tokens: Tokens::new(settings.auth.tokens.clone()),
            admin_tokens: (!settings.auth.admin_tokens.is_empty())
                .then(|| Tokens::new(settings.auth.admin_tokens.clone())),
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
            pool: pool.clone(),
            keys: domain::KeySchema::new(&settings.redis.key_prefix),
            redis_timeout: settings.redis.timeout(),
            idempotency_window: Duration::from_secs(settings.gateway.idempotency_window_s),
            dead_letter_topic: settings.kafka.topics.dead_letter.clone(),
            reader_config: adapters::kafka::reader_config(&settings.kafka),
        });

        let metrics_data = web::Data::new(metrics);
        let (listener, port) = adapters::http::bind(&settings.gateway.listen)?;
        let deadline = settings.shutdown.deadline();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(health.clone())
                .app_data(metrics_data.clone())
                .app_data(web::QueryConfig::default().error_handler(|err, _| adapters::http::RequestError::BadRequest(err.to_string()).into()))
                .wrap(actix_web::middleware::from_fn(adapters::http::record_metrics))
                .configure(health_routes)
                .configure(routes::configure)
                .configure(admin::configure)
                .configure(dead_letters::configure)
                .default_service(web::to(not_found))
        })
        .workers(settings.gateway.workers)
        .shutdown_timeout(deadline.as_secs().max(1))
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, "gateway listening");
        Ok(Application { server, port, producer, shutdown, deadline })
    }

    /// The port the gateway listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown token is cancelled, then stops taking requests, finishes the
    /// ones in flight and flushes the producer.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        adapters::http::serve_until_stopped(self.server, &self.shutdown, "gateway").await?;
        let producer = self.producer;
        let deadline = self.deadline;
        tokio::task::spawn_blocking(move || producer.flush(deadline)).await??;
        Ok(())
    }
}
