//! Metrics: instruments recorded through the OpenTelemetry API, exported over OTLP when an
//! endpoint is configured and rendered on `GET /metrics` in the Prometheus text format.
//!
//! Each service builds its own [`Metrics`] (not a global), so services started in one process
//! (the end-to-end tests) keep separate counts. Every sample carries `service="<name>"`.
//! Names follow Prometheus conventions: units in the name, `_total` for counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality};

/// Latency buckets, in seconds: 0.5 ms to 30 s.
pub const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const SIZES: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// Every histogram: its name, help and bucket bounds. Rendered empty (all zero) until its first
/// observation, so a fresh stack's latency panels and alerts find their series from the start.
const HISTOGRAMS: &[(&str, &str, &[f64])] = &[
    ("http_server_request_duration_seconds", "HTTP request duration", SECONDS),
    ("metastream_redis_command_duration_seconds", "Redis call duration", SECONDS),
    ("metastream_batch_duration_seconds", "Time to process a batch, effects included", SECONDS),
    ("metastream_batch_size_messages", "Messages per batch", SIZES),
    ("metastream_e2e_latency_seconds", "Gateway acknowledgement to publication on the output topic", SECONDS),
    ("metastream_transaction_commit_seconds", "Under exactly once: from a transaction's commit starting to its output being visible", SECONDS),
];

/// What one instance's metrics counted since it started ([`Metrics::totals`]): what its pulse
/// samples ([`crate::pulse`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Events the gateway acknowledged, by source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ingested: BTreeMap<String, u64>,
    /// Events the post stage published, by source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub published: BTreeMap<String, u64>,
    /// Messages the stages dead-lettered, by source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dead_lettered: BTreeMap<String, u64>,
    /// End-to-end latency: how many events fell in each bucket of
    /// [`SECONDS`] (the last: above them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub e2e: Vec<u64>,
}

impl Totals {
    /// Adds a histogram's per-bucket counts to [`Self::e2e`].
    pub fn add_latency_buckets(&mut self, counts: impl Iterator<Item = u64>) {
        for (i, n) in counts.enumerate() {
            if self.e2e.len() <= i {
                self.e2e.resize(i + 1, 0);
            }
            self.e2e[i] += n;
        }
    }

    /// What was counted since `earlier` (a counter never goes down; one that did — another
    /// process — counts from zero).
    pub fn since(&self, earlier: &Totals) -> Totals {
        let minus = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v.checked_sub(then.get(k).copied().unwrap_or(0)).unwrap_or(*v)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        let e2e: Vec<u64> = self.e2e.iter().enumerate().map(|(i, v)| v.checked_sub(earlier.e2e.get(i).copied().unwrap_or(0)).unwrap_or(*v)).collect();
        Totals {
            ingested: minus(&self.ingested, &earlier.ingested),
            published: minus(&self.published, &earlier.published),
            dead_lettered: minus(&self.dead_lettered, &earlier.dead_lettered),
            e2e: if e2e.iter().all(|n| *n == 0) { Vec::new() } else { e2e },
        }
    }

    /// Adds what `other` counted.
    pub fn add(&mut self, other: &Totals) {
        for (mine, theirs) in [(&mut self.ingested, &other.ingested), (&mut self.published, &other.published), (&mut self.dead_lettered, &other.dead_lettered)] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
        self.add_latency_buckets(other.e2e.iter().copied());
    }
}

/// A [`ManualReader`] shared between the meter provider and `/metrics`.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Every instrument metastream records. Instruments a service never touches export nothing.
pub struct Metrics {
    service: &'static str,
    provider: SdkMeterProvider,
    reader: SharedReader,
    meter: Meter,
    pub http_requests: Counter<u64>,
    pub http_duration: Histogram<f64>,
    pub redis_duration: Histogram<f64>,
    pub redis_errors: Counter<u64>,
    pub config_reloads: Counter<u64>,
    pub delivery_errors: Counter<u64>,
    pub events_ingested: Counter<u64>,
    pub ingest_rejected: Counter<u64>,
    /// Native deliveries nothing maps, dropped by their source's `native.unmapped: drop`.
    pub native_dropped: Counter<u64>,
    pub events_processed: Counter<u64>,
    pub dead_letters: Counter<u64>,
    /// Dead letters that hold a reference to the original message (too large to copy).
    pub dead_letter_references: Counter<u64>,
    pub operation_failures: Counter<u64>,
    pub batch_duration: Histogram<f64>,
    pub batch_size: Histogram<u64>,
    pub e2e_latency: Histogram<f64>,
    /// Under exactly once, how long each transaction's commit took, by stage and how it ended
    /// (`transaction`: [`domain::TransactionOutcome`]).
    pub transaction_commit: Histogram<f64>,
    pub rebalances: Counter<u64>,
    pub events_delivered: Counter<u64>,
    /// Requests refused by a key's rate limit, by kind (requests, events).
    pub rate_limited: Counter<u64>,
    /// Rate-limit decisions Redis could not answer (then `auth.rate_limit_on_redis_error`).
    pub rate_limit_errors: Counter<u64>,
    /// Admin actions whose audit record could not be written to Kafka.
    pub audit_failures: Counter<u64>,
    /// Webhook delivery attempts, by outcome (delivered, failed, dead_lettered, gone).
    pub webhook_attempts: Counter<u64>,
    /// Latest consumer lag per (group, topic, partition), from librdkafka's statistics.
    lags: Mutex<HashMap<(String, String, i32), i64>>,
}

impl Metrics {
    /// The metrics of `service`; also exported over OTLP/HTTP when `otlp_endpoint` (or the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.
    pub fn new(service: &'static str, otlp_endpoint: &str) -> Arc<Metrics> {
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let mut builder = SdkMeterProvider::builder().with_reader(reader.clone());
        if let Some(exporter) = otlp_exporter(otlp_endpoint) {
            builder = builder.with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build());
        }
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service);
        }
        let resource = resource.build();
        let provider = builder.with_resource(resource).build();
        let meter = provider.meter("metastream");
        let counter = |name: &'static str, help: &'static str| meter.u64_counter(name).with_description(help).build();
        let histogram = |name: &'static str| HISTOGRAMS.iter().find(|(n, _, _)| *n == name).expect("every histogram is in HISTOGRAMS");
        let seconds = |name: &'static str, _help: &'static str| {
            let (name, help, bounds) = histogram(name);
            meter.f64_histogram(*name).with_description(*help).with_unit("s").with_boundaries(bounds.to_vec()).build()
        };
        let metrics = Arc::new(Metrics {
            service,
            http_requests: counter("http_server_requests_total", "HTTP requests by route, method and status"),
            http_duration: seconds("http_server_request_duration_seconds", "HTTP request duration"),
            redis_duration: seconds("metastream_redis_command_duration_seconds", "Redis call duration"),
            redis_errors: counter("metastream_redis_errors_total", "Redis calls that failed"),
            config_reloads: counter("metastream_config_reloads_total", "Source config changes loaded"),
            delivery_errors: counter("metastream_kafka_delivery_errors_total", "Kafka produce failures (before retry)"),
            events_ingested: counter("metastream_events_ingested_total", "Events acknowledged by the gateway"),
            ingest_rejected: counter("metastream_ingest_rejected_total", "Ingest requests refused, by reason"),
            native_dropped: counter("metastream_native_dropped_total", "Native deliveries acknowledged and dropped (nothing maps them), by source and event type"),
            events_processed: counter("metastream_events_processed_total", "Events by stage and outcome"),
            dead_letters: counter("metastream_dead_letters_total", "Messages sent to the dead-letter topic"),
            dead_letter_references: counter(
                "metastream_dead_letter_references_total",
                "Dead letters holding a reference to the original message, which did not fit the dead-letter topic",
            ),
            operation_failures: counter("metastream_operation_failures_total", "Operations that failed on an event"),
            batch_duration: seconds("metastream_batch_duration_seconds", "Time to process a batch, effects included"),
            batch_size: {
                let (name, help, bounds) = histogram("metastream_batch_size_messages");
                meter.u64_histogram(*name).with_description(*help).with_boundaries(bounds.to_vec()).build()
            },
            e2e_latency: seconds("metastream_e2e_latency_seconds", "Gateway acknowledgement to publication on the output topic"),
            transaction_commit: seconds(
                "metastream_transaction_commit_seconds",
                "Under exactly once: from a transaction's commit starting to its output being visible",
            ),
            rebalances: counter("metastream_kafka_rebalances_total", "Consumer group rebalances"),
            events_delivered: counter("metastream_events_delivered_total", "Events handed out by GET /consume"),
            rate_limited: counter("metastream_rate_limited_total", "Requests refused by a key's rate limit, by kind"),
            rate_limit_errors: counter("metastream_rate_limit_errors_total", "Rate-limit decisions redis could not answer"),
            audit_failures: counter("metastream_audit_failures_total", "Admin actions whose audit record kafka did not take"),
            webhook_attempts: counter("metastream_webhook_attempts_total", "Webhook delivery attempts by outcome (delivered, failed, gone), and events dead-lettered once their attempts were spent"),
            lags: Mutex::new(HashMap::new()),
            reader,
            provider,
            meter,
        });
        let _retries = metrics
            .meter
            .u64_observable_counter("metastream_retries_total")
            .with_description("Failed Kafka or Redis calls retried after a backoff wait, every retry loop of the process together")
            .with_callback(|obs| obs.observe(crate::retry::retries(), &[]))
            .build();
        // Counters exist from the start (at 0), so dashboards and alerts on errors that have not
        // happened yet find their series.
        for counter in [
            &metrics.http_requests,
            &metrics.redis_errors,
            &metrics.config_reloads,
            &metrics.delivery_errors,
            &metrics.events_ingested,
            &metrics.ingest_rejected,
            &metrics.native_dropped,
            &metrics.events_processed,
            &metrics.dead_letters,
            &metrics.rate_limited,
            &metrics.rate_limit_errors,
            &metrics.audit_failures,
            &metrics.dead_letter_references,
            &metrics.operation_failures,
            &metrics.rebalances,
            &metrics.events_delivered,
        ] {
            counter.add(0, &[]);
        }
        metrics
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Registers a gauge read at each collection.
    pub fn gauge(&self, name: &'static str, help: &'static str, read: impl Fn() -> Vec<(i64, Vec<KeyValue>)> + Send + Sync + 'static) {
        let _gauge = self
            .meter
            .i64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |obs| {
                for (value, attrs) in read() {
                    obs.observe(value, &attrs);
                }
            })
            .build();
    }

    /// Remembers consumer lags reported by librdkafka's statistics.
    pub fn set_lags(&self, group: &str, lags: impl IntoIterator<Item = (String, i32, i64)>) {
        let mut map = self.lags.lock().expect("lags lock");
        map.retain(|(g, _, _), _| g != group);
        for (topic, partition, lag) in lags {
            map.insert((group.to_owned(), topic, partition), lag);
        }
    }

    /// Registers the gauges every service has: consumer lag (when it consumes).
    pub fn register_lag_gauge(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.gauge("metastream_kafka_consumer_lag_messages", "Consumer lag per partition", move || {
            let Some(m) = me.upgrade() else { return Vec::new() };
            let lags = m.lags.lock().expect("lags lock");
            lags.iter()
                .map(|((g, t, p), lag)| {
                    (*lag, vec![KeyValue::new("group", g.clone()), KeyValue::new("topic", t.clone()), KeyValue::new("partition", i64::from(*p))])
                })
                .collect()
        });
    }

    /// Records one Redis call.
    pub fn redis<T, E>(&self, command: &'static str, started: std::time::Instant, result: &Result<T, E>) {
        let attrs = [KeyValue::new("command", command)];
        self.redis_duration.record(started.elapsed().as_secs_f64(), &attrs);
        if result.is_err() {
            self.redis_errors.add(1, &attrs);
        }
    }

    /// What this process counted since it started that the console's health page shows (see
    /// [`crate::pulse`]): events acknowledged by the gateway, published and dead-lettered by
    /// the stages, by source; and the end-to-end latency histogram's buckets, every source
    /// together ([`SECONDS`], then +Inf).
    pub fn totals(&self) -> Totals {
        let mut rm = ResourceMetrics::default();
        let mut totals = Totals::default();
        if let Err(err) = self.reader.collect(&mut rm) {
            tracing::warn!(error = %err, "collecting metrics failed");
            return totals;
        }
        for metric in rm.scope_metrics().flat_map(|s| s.metrics()) {
            match (metric.name(), metric.data()) {
                ("metastream_events_ingested_total", AggregatedMetrics::U64(MetricData::Sum(sum))) => {
                    for p in sum.data_points() {
                        let source = attr(p.attributes(), "source").unwrap_or_default();
                        *totals.ingested.entry(source).or_default() += p.value();
                    }
                }
                ("metastream_events_processed_total", AggregatedMetrics::U64(MetricData::Sum(sum))) => {
                    for p in sum.data_points().filter(|p| {
                        attr(p.attributes(), "stage").as_deref() == Some(domain::Stage::Post.as_str())
                            && attr(p.attributes(), "outcome").as_deref() == Some(domain::EventOutcome::Published.as_str())
                    }) {
                        let source = attr(p.attributes(), "source").unwrap_or_default();
                        *totals.published.entry(source).or_default() += p.value();
                    }
                }
                ("metastream_dead_letters_total", AggregatedMetrics::U64(MetricData::Sum(sum))) => {
                    for p in sum.data_points() {
                        let source = attr(p.attributes(), "source").unwrap_or_default();
                        *totals.dead_lettered.entry(source).or_default() += p.value();
                    }
                }
                ("metastream_e2e_latency_seconds", AggregatedMetrics::F64(MetricData::Histogram(h))) => {
                    for p in h.data_points() {
                        totals.add_latency_buckets(p.bucket_counts());
                    }
                }
                _ => {}
            }
        }
        totals
    }

    /// The Prometheus text exposition of every instrument, plus process metrics.
    pub fn render(&self) -> String {
        let mut rm = ResourceMetrics::default();
        let mut out = String::with_capacity(8 * 1024);
        if let Err(err) = self.reader.collect(&mut rm) {
            tracing::warn!(error = %err, "collecting metrics failed");
        }
        let service = self.service;
        let mut rendered = std::collections::HashSet::new();
        for scope in rm.scope_metrics() {
            for metric in scope.metrics() {
                let name = metric.name();
                rendered.insert(name.to_owned());
                match metric.data() {
                    AggregatedMetrics::U64(d) => render_data(&mut out, name, metric.description(), service, d, |v| v as f64),
                    AggregatedMetrics::I64(d) => render_data(&mut out, name, metric.description(), service, d, |v| v as f64),
                    AggregatedMetrics::F64(d) => render_data(&mut out, name, metric.description(), service, d, |v| v),
                }
            }
        }
        for (name, help, bounds) in HISTOGRAMS.iter().filter(|(n, _, _)| !rendered.contains(*n)) {
            render_empty_histogram(&mut out, name, help, service, bounds);
        }
        render_process(&mut out, service);
        out
    }

    /// Flushes the OTLP exporter, if any.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

fn otlp_exporter(endpoint: &str) -> Option<opentelemetry_otlp::MetricExporter> {
    use opentelemetry_otlp::WithExportConfig as _;
    let from_env = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok() || std::env::var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_ok();
    if endpoint.is_empty() && !from_env {
        return None;
    }
    let built = if crate::telemetry::grpc("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") {
        let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if !endpoint.is_empty() {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        builder.build()
    } else {
        let mut builder = opentelemetry_otlp::MetricExporter::builder().with_http();
        if !endpoint.is_empty() {
            let endpoint = endpoint.trim_end_matches('/');
            let endpoint = if endpoint.ends_with("/v1/metrics") { endpoint.to_owned() } else { format!("{endpoint}/v1/metrics") };
            builder = builder.with_endpoint(endpoint);
        }
        builder.build()
    };
    match built {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(error = %err, "OTLP metric export disabled");
            None
        }
    }
}

/// The value of attribute `key`, as text.
fn attr<'a>(mut attrs: impl Iterator<Item = &'a KeyValue>, key: &str) -> Option<String> {
    attrs.find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

fn labels(service: &str, attrs: impl Iterator<Item = String>, extra: Option<(&str, String)>) -> String {
    let mut parts = vec![format!("service=\"{service}\"")];
    parts.extend(attrs);
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    format!("{{{}}}", parts.join(","))
}

fn attr_labels<'a>(attrs: impl Iterator<Item = &'a KeyValue> + 'a) -> impl Iterator<Item = String> + 'a {
    attrs.map(|kv| {
        let value = kv.value.to_string().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        format!("{}=\"{}\"", kv.key.as_str(), value)
    })
}

fn render_data<T: Copy>(out: &mut String, name: &str, help: &str, service: &str, data: &MetricData<T>, f: impl Fn(T) -> f64) {
    match data {
        MetricData::Sum(sum) => {
            let counter = sum.is_monotonic();
            let name = if counter && !name.ends_with("_total") { format!("{name}_total") } else { name.to_owned() };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", if counter { "counter" } else { "gauge" });
            for p in sum.data_points() {
                let _ = writeln!(out, "{name}{} {}", labels(service, attr_labels(p.attributes()), None), f(p.value()));
            }
        }
        MetricData::Gauge(g) => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for p in g.data_points() {
                let _ = writeln!(out, "{name}{} {}", labels(service, attr_labels(p.attributes()), None), f(p.value()));
            }
        }
        MetricData::Histogram(h) => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for p in h.data_points() {
                let attrs: Vec<String> = attr_labels(p.attributes()).collect();
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = p.bounds().collect();
                for (i, count) in p.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).map(|b| b.to_string()).unwrap_or_else(|| "+Inf".into());
                    let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(service, attrs.iter().cloned(), Some(("le", le))));
                }
                let l = labels(service, attrs.iter().cloned(), None);
                let _ = writeln!(out, "{name}_sum{l} {}\n{name}_count{l} {}", f(p.sum()), p.count());
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// A histogram with no observation yet: every bucket, the sum and the count at 0.
fn render_empty_histogram(out: &mut String, name: &str, help: &str, service: &str, bounds: &[f64]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for le in bounds.iter().map(ToString::to_string).chain(std::iter::once("+Inf".to_owned())) {
        let _ = writeln!(out, "{name}_bucket{} 0", labels(service, std::iter::empty(), Some(("le", le))));
    }
    let l = labels(service, std::iter::empty(), None);
    let _ = writeln!(out, "{name}_sum{l} 0\n{name}_count{l} 0");
}

/// `process_*` metrics from /proc, as the Prometheus client libraries name them.
fn render_process(out: &mut String, service: &str) {
    let l = labels(service, std::iter::empty(), None);
    let ticks = 100.0; // USER_HZ on Linux
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        if fields.len() > 22 {
            let cpu = (fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0)) / ticks;
            let rss_pages = fields[21].parse::<f64>().unwrap_or(0.0);
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total{l} {cpu}");
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes{l} {}", rss_pages * 4096.0);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(out, "# TYPE process_open_fds gauge\nprocess_open_fds{l} {}", fds.count());
    }
}

/// Parses a Prometheus text exposition into `name{labels}` → value (for tests and tools).
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_exported_from_the_start_and_replaced_by_their_data_once_observed() {
        let metrics = Metrics::new("test", "");
        let text = metrics.render();
        for (name, _, bounds) in HISTOGRAMS {
            assert_eq!(text.matches(&format!("# TYPE {name} histogram")).count(), 1, "{name}");
            assert!(text.contains(&format!("{name}_count{{service=\"test\"}} 0")), "{name}");
            assert_eq!(text.matches(&format!("{name}_bucket{{")).count(), bounds.len() + 1, "{name}");
        }
        metrics.e2e_latency.record(0.003, &[KeyValue::new("source", "jira")]);
        let text = metrics.render();
        assert_eq!(text.matches("# TYPE metastream_e2e_latency_seconds histogram").count(), 1);
        assert!(text.contains("metastream_e2e_latency_seconds_count{service=\"test\",source=\"jira\"} 1"), "{text}");
        assert!(!text.contains("metastream_e2e_latency_seconds_count{service=\"test\"} 0"));
    }

    #[test]
    fn label_values_are_escaped_as_the_exposition_format_requires() {
        let metrics = Metrics::new("test", "");
        metrics.http_requests.add(1, &[KeyValue::new("route", "a\"b\\c\nd")]);
        let text = metrics.render();
        let line = text.lines().find(|l| l.starts_with("http_server_requests_total{") && l.contains("route=")).unwrap();
        assert_eq!(line, r#"http_server_requests_total{service="test",route="a\"b\\c\nd"} 1"#);
        // Every sample line is `name{labels} value`: nothing spilled onto another line.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.rsplit_once(' ').is_some_and(|(_, v)| v.parse::<f64>().is_ok()), "{line}");
        }
    }
}
