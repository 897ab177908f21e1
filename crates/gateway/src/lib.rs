//! The gateway: authenticates clients' events, validates them, and writes them to Kafka.
//!
//! - [`Application`]: builds the HTTP server from [`Settings`] and runs it until shutdown.
//! - `routes::ingest`: `POST /ingest`.
//!
//! An event is answered `202 Accepted` only after Kafka acknowledged it (`acks=all`, idempotent
//! producer). When Kafka cannot take it in time, the answer is `503` with `Retry-After`.

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
    pub ingest_topic: String,
    pub max_body_bytes: usize,
    pub retry_after_s: u32,
    pub produce_timeout: Duration,
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
        let producer = adapters::kafka::producer(&settings.kafka)?;
        if settings.kafka.create_topics {
            adapters::kafka::ensure_topics(&settings.kafka).await?;
        }
        let pool = adapters::store::pool(&settings.redis)?;
        let catalog = SourceCatalog::start(&settings, pool.clone(), shutdown.clone()).await?;

        let kafka_probe = adapters::kafka::probe(&settings.kafka, &settings.kafka.topics.ingest)?;
        let health = web::Data::new(Health::new(Some((pool, settings.redis.timeout())), Some(kafka_probe)));
        let state = web::Data::new(State {
            producer: producer.clone(),
            catalog,
            tokens: Tokens::new(settings.auth.tokens.clone()),
            ingest_topic: settings.kafka.topics.ingest.clone(),
            max_body_bytes: settings.gateway.max_body_bytes,
            retry_after_s: settings.gateway.retry_after_s,
            produce_timeout: settings.kafka.produce_timeout(),
        });

        let (listener, port) = adapters::http::bind(&settings.gateway.listen)?;
        let deadline = settings.shutdown.deadline();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(health.clone())
                .configure(health_routes)
                .configure(routes::configure)
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
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        self.shutdown.cancelled().await;
        tracing::info!("gateway shutting down");
        handle.stop(true).await;
        server.await??;
        let producer = self.producer;
        let deadline = self.deadline;
        tokio::task::spawn_blocking(move || producer.flush(deadline)).await??;
        Ok(())
    }
}
