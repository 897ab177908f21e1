//! `tracing` set-up: readable text or JSON lines, a level from config overridden by `RUST_LOG`,
//! and OTLP/HTTP trace export when an endpoint is configured (`telemetry.otlp_endpoint` or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT`). Export runs on its own thread with a bounded queue,
//! so a slow or absent collector never slows ingestion.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{LogFormat, TelemetrySettings};

/// Flushes pending spans when dropped; keep it alive in `main`.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown() {
                eprintln!("flushing traces failed: {err}");
            }
        }
    }
}

/// Installs the global subscriber for `service`.
///
/// # Errors
/// When the OTLP exporter cannot be built from its configuration.
pub fn init(service: &str, t: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&t.log_level));
    let fmt = match t.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let endpoint_from_env = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok()
        || std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok();
    let provider = if !t.otlp_endpoint.is_empty() || endpoint_from_env {
        use opentelemetry_otlp::WithExportConfig as _;
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        if !t.otlp_endpoint.is_empty() {
            let endpoint = t.otlp_endpoint.trim_end_matches('/');
            let endpoint = if endpoint.ends_with("/v1/traces") { endpoint.to_owned() } else { format!("{endpoint}/v1/traces") };
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder.build()?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
        Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}
