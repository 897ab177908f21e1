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
        let exporter = if grpc("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if !t.otlp_endpoint.is_empty() {
                builder = builder.with_endpoint(t.otlp_endpoint.trim_end_matches('/'));
            }
            builder.build()?
        } else {
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
            if !t.otlp_endpoint.is_empty() {
                let endpoint = t.otlp_endpoint.trim_end_matches('/');
                let endpoint = if endpoint.ends_with("/v1/traces") { endpoint.to_owned() } else { format!("{endpoint}/v1/traces") };
                builder = builder.with_endpoint(endpoint);
            }
            builder.build()?
        };
        // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the resource builder; the
        // service's own name applies when OTEL_SERVICE_NAME is not set.
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service.to_owned());
        }
        let resource = resource.build();
        Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
    } else {
        None
    };
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured). Spans that exist only for the
/// trace — one per event handed out downstream — are made only then: without an exporter they
/// cost a formatted record each in the log layer and show nowhere.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether OTLP goes over gRPC: `OTEL_EXPORTER_OTLP_{signal}_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL` is `grpc` (the default is `http/protobuf`).
pub fn grpc(signal_var: &str) -> bool {
    std::env::var(signal_var).or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")).is_ok_and(|p| p.trim() == "grpc")
}

/// W3C trace context across HTTP and Kafka: `traceparent` / `tracestate` headers.
pub mod propagation {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use rdkafka::message::Headers as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// The trace context a client sent in HTTP headers (empty without trace export: nothing
    /// would carry it on — these helpers cost a map and allocations per event otherwise).
    pub fn from_http(headers: &actix_web::http::header::HeaderMap) -> opentelemetry::Context {
        if !super::exporting() {
            return opentelemetry::Context::new();
        }
        let map: HashMap<String, String> = ["traceparent", "tracestate"]
            .iter()
            .filter_map(|k| Some((k.to_string(), headers.get(*k)?.to_str().ok()?.to_owned())))
            .collect();
        TraceContextPropagator::new().extract(&map)
    }

    /// The trace context carried by a Kafka message's headers (empty without trace export).
    pub fn from_kafka<M: rdkafka::message::Message>(message: &M) -> opentelemetry::Context {
        if !super::exporting() {
            return opentelemetry::Context::new();
        }
        let mut map = HashMap::new();
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                if h.key == "traceparent" || h.key == "tracestate" {
                    if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                        map.insert(h.key.to_owned(), v.to_owned());
                    }
                }
            }
        }
        TraceContextPropagator::new().extract(&map)
    }

    /// A span for one message taken from Kafka, named `<verb> <topic>` (`process` in a stage,
    /// `deliver` where the consumer-api hands it out; `operation` is OpenTelemetry's
    /// `messaging.operation.type`), a child of the trace context the message carries. The
    /// `metastream.*` and `trace_id` fields are the caller's to record.
    pub fn consumer_span<M: rdkafka::message::Message>(verb: &str, operation: &'static str, message: &M, group: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "message",
            otel.name = %format!("{verb} {}", message.topic()),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = operation,
            messaging.destination.name = message.topic(),
            messaging.destination.partition.id = message.partition(),
            messaging.kafka.offset = message.offset(),
            messaging.consumer.group.name = %group,
            metastream.stage = tracing::field::Empty,
            metastream.event.id = tracing::field::Empty,
            metastream.source = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        set_parent(&span, from_kafka(message));
        span
    }

    /// Makes `span` a child of `parent` (a no-op without trace export).
    pub fn set_parent(span: &tracing::Span, parent: opentelemetry::Context) {
        if !super::exporting() {
            return;
        }
        let _ = span.set_parent(parent);
    }

    /// Records the span's trace id in its `trace_id` field, so every log line inside it names
    /// the trace (when traces are exported).
    pub fn record_trace_id(span: &tracing::Span) {
        use opentelemetry::trace::TraceContextExt as _;
        if !super::exporting() {
            return;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.record("trace_id", sc.trace_id().to_string());
        }
    }

    /// The `traceparent` / `tracestate` headers that make the receiver's work a child of `span`.
    pub fn headers_for(span: &tracing::Span) -> Vec<(String, String)> {
        if !super::exporting() {
            return Vec::new();
        }
        let mut map = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut map);
        let mut out: Vec<(String, String)> = map.into_iter().collect();
        out.sort();
        out
    }
}
