//! The floor under the gateway's single-event request on this machine: what HTTP alone, and HTTP
//! plus one acknowledged produce, cost before any of the gateway's own work (authentication,
//! parsing and checking the event, rate limits, spans and metrics).
//!
//! An actix-web server set up as the gateway's public listener (same allocator, workers, runtime
//! and `TCP_NODELAY`) answering `POST /ingest` with a small 202 JSON body:
//! - `ingest_floor http`: once the body is read;
//! - `ingest_floor kafka`: once the body, as is, is produced to the ingest topic with the
//!   gateway's producer configuration and send path (`adapters::kafka::send`) and acknowledged (acks=all), keyed by a counter so the
//!   events spread over the partitions as the gateway's (keyed by entity) do.
//!
//! Settings load as every service's do (`METASTREAM_ENV`, `METASTREAM__…`); it listens on
//! `gateway.listen`. `scripts/bench.sh` step 2c drives it as step 2a drives the gateway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use adapters::process::Threads;
use adapters::settings::Service;
use adapters::kafka::{FutureProducer, Record};

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Http,
    Kafka,
}

struct Floor {
    mode: Mode,
    producer: FutureProducer,
    topic: String,
    sent: AtomicU64,
}

async fn ingest(body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    if floor.mode == Mode::Kafka {
        let key = floor.sent.fetch_add(1, Ordering::Relaxed).to_string();
        let record = Record { topic: &floor.topic, key: Some(key.as_bytes()), payload: &body[..], headers: Vec::new() };
        if let Err(err) = adapters::kafka::send(&floor.producer, record, Duration::from_secs(5), Duration::from_secs(60)).await {
            return HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": err.to_string()}));
        }
    }
    HttpResponse::Accepted().content_type("application/json").body(r#"{"status":"accepted"}"#)
}

fn main() -> std::process::ExitCode {
    let mode = match std::env::args().nth(1).as_deref() {
        Some("http") => Mode::Http,
        Some("kafka") => Mode::Kafka,
        _ => {
            eprintln!("usage: ingest_floor http|kafka");
            return std::process::ExitCode::FAILURE;
        }
    };
    adapters::process::run(Service::Gateway, Threads::Multi, move |settings, shutdown| async move {
        if settings.kafka.create_topics {
            adapters::kafka::ensure_topics(&settings.kafka).await?;
        }
        let limits = adapters::kafka::SharedLimits::load(&settings.kafka, Duration::from_secs(5), shutdown.clone()).await;
        let producer = adapters::kafka::producer(&settings.kafka, limits.get().as_ref())?;
        let floor = web::Data::new(Floor { mode, producer, topic: settings.kafka.topics.ingest.clone(), sent: AtomicU64::new(0) });
        let (listener, port) = adapters::http::bind(&settings.gateway.listen)?;
        let server = HttpServer::new(move || App::new().app_data(floor.clone()).route("/ingest", web::post().to(ingest)))
            .tcp_nodelay(true)
            .workers(settings.gateway.workers)
            .disable_signals()
            .listen(listener)?
            .run();
        tracing::info!(port, "ingest floor listening");
        let handle = server.handle();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            handle.stop(true).await;
        });
        server.await?;
        Ok(())
    })
}
