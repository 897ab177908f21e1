//! One ingested event yields one trace across every Kafka hop, exported over OTLP, and no
//! secret reaches the logs. The services run as processes here (each its own OTel resource),
//! exporting to an OTLP/HTTP receiver inside the test.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

use crate::harness::{jira_event, test_settings, TOKEN};

#[derive(Debug, Clone)]
struct SpanRecord {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<SpanRecord>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

async fn receive(body: web::Bytes, spans: web::Data<Spans>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut out = spans.lock().unwrap();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| value(&a.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(SpanRecord {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes: span.attributes.iter().map(|a| (a.key.clone(), value(&a.value))).collect(),
                });
            }
        }
    }
    HttpResponse::Ok().content_type("application/x-protobuf").body(Vec::<u8>::new())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "{} is not built: run `make build` (cargo build --workspace --bins) first", path.display());
    path
}

/// A service binary as a process on `s`'s topics, groups and Redis prefix, listening on `port`,
/// its output in `log`.
fn service_process(name: &str, section: &str, port: u16, s: &adapters::Settings, log: std::fs::File) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary(name));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("METASTREAM_ENV", "dev")
        .env("METASTREAM__KAFKA__BOOTSTRAP_SERVERS", &s.kafka.bootstrap_servers)
        .env("METASTREAM__KAFKA__TOPICS__INGEST", &s.kafka.topics.ingest)
        .env("METASTREAM__KAFKA__TOPICS__PROCESSED", &s.kafka.topics.processed)
        .env("METASTREAM__KAFKA__TOPICS__OUTPUT", &s.kafka.topics.output)
        .env("METASTREAM__KAFKA__TOPICS__DEAD_LETTER", &s.kafka.topics.dead_letter)
        .env("METASTREAM__REDIS__URL", s.redis.url.expose())
        .env("METASTREAM__REDIS__CLUSTER", s.redis.cluster.to_string())
        .env("METASTREAM__REDIS__URLS", s.redis.urls.iter().map(|u| u.expose()).collect::<Vec<_>>().join(","))
        .env("METASTREAM__REDIS__KEY_PREFIX", &s.redis.key_prefix)
        .env("METASTREAM__PRE_TRANSFORMER__GROUP_ID", &s.pre_transformer.group_id)
        .env("METASTREAM__POST_TRANSFORMER__GROUP_ID", &s.post_transformer.group_id)
        .env("METASTREAM__CONSUMER_API__GROUP_PREFIX", &s.consumer_api.group_prefix)
        .env(format!("METASTREAM__{section}__LISTEN"), format!("127.0.0.1:{port}"))
        // The gateway's and consumer-api's admin listeners: any free port (tests run side by side).
        .env("METASTREAM__GATEWAY__ADMIN_LISTEN", "127.0.0.1:0")
        .env("METASTREAM__CONSUMER_API__ADMIN_LISTEN", "127.0.0.1:0")
        .env("METASTREAM__KAFKA__TOPICS__AUDIT", &s.kafka.topics.audit)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_across_all_four_services_and_no_secret_is_logged() {
    crate::harness::require_infrastructure();
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::new(spans.clone());
    let receiver = HttpServer::new(move || App::new().app_data(data.clone()).route("/v1/traces", web::post().to(receive)))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
    let otlp_port = receiver.addrs()[0].port();
    let receiver = receiver.run();
    let receiver_handle = receiver.handle();
    tokio::spawn(receiver);

    // The services as processes, on this test's topics, exporting to the receiver.
    let s = test_settings();
    let logs = std::env::temp_dir().join(format!("metastream-trace-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let ports: HashMap<&str, u16> =
        [("GATEWAY", free_port()), ("PRE_TRANSFORMER", free_port()), ("POST_TRANSFORMER", free_port()), ("CONSUMER_API", free_port())].into();
    let mut children = Vec::new();
    for (name, section) in [("gateway", "GATEWAY"), ("pre-transformer", "PRE_TRANSFORMER"), ("post-transformer", "POST_TRANSFORMER"), ("consumer-api", "CONSUMER_API")] {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        let child = service_process(name, section, ports[section], &s, log)
            .env("METASTREAM__TELEMETRY__LOG_FORMAT", "json")
            .env("RUST_LOG", "debug,librdkafka=warn,rdkafka=warn,h2=warn,hyper=warn,reqwest=warn,actix_server=warn")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{otlp_port}"))
            .spawn()
            .unwrap();
        children.push(child);
    }
    let http = reqwest::Client::new();
    for (section, port) in &ports {
        wait_ready(&http, *port, &format!("{section} not ready; logs in {}", logs.display())).await;
    }

    // A client that traces its own call.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    ingest_traced(&http, ports["GATEWAY"], trace_id, client_span).await;
    let started = Instant::now();
    loop {
        let body: serde_json::Value = http
            .get(format!("http://127.0.0.1:{}/consume?wait_ms=1000", ports["CONSUMER_API"]))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["count"] == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "event never consumed");
    }

    // Every hop's span arrives, in one trace, each the child of the one before.
    let wanted = ["gateway", "pre-transformer", "post-transformer", "consumer-api"];
    let started = Instant::now();
    let trace: Vec<SpanRecord> = loop {
        let trace: Vec<SpanRecord> = spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        let services: std::collections::HashSet<_> = trace.iter().map(|s| s.service.as_str()).collect();
        if wanted.iter().all(|w| services.contains(w)) && trace.iter().any(|s| s.name.starts_with("deliver")) {
            break trace;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "spans of trace {trace_id}: {trace:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |service: &str, name: &str| {
        trace
            .iter()
            .find(|s| s.service == service && s.name.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` span from {service}: {trace:#?}"))
            .clone()
    };
    let server = find("gateway", "POST /ingest");
    let produce = find("gateway", "send ");
    let pre = find("pre-transformer", "process ");
    let redis = find("pre-transformer", "EVALSHA");
    let post = find("post-transformer", "process ");
    let deliver = find("consumer-api", "deliver ");
    assert_eq!(server.parent, client_span, "the client's traceparent is honoured");
    assert_eq!(produce.parent, server.span_id);
    assert_eq!(pre.parent, produce.span_id);
    assert_eq!(redis.parent, pre.span_id);
    assert_eq!(post.parent, pre.span_id);
    assert_eq!(deliver.parent, post.span_id);
    assert_eq!(server.attributes["http.route"], "/ingest");
    assert_eq!(server.attributes["http.response.status_code"], "202");
    assert_eq!(produce.attributes["messaging.system"], "kafka");
    assert_eq!(produce.attributes["messaging.destination.name"], s.kafka.topics.ingest);
    assert_eq!(pre.attributes["messaging.consumer.group.name"], s.pre_transformer.group_id);
    assert_eq!(pre.attributes["metastream.event.id"], "12345");
    assert_eq!(post.attributes["metastream.source"], "jira");
    assert!(deliver.attributes.contains_key("messaging.kafka.offset"));

    // Stop the services (flushing their spans and logs), then look for the token in the logs.
    for mut child in children {
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    }
    receiver_handle.stop(false).await;
    for name in wanted {
        let text = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
        assert!(!text.is_empty(), "{name} logged nothing");
        assert!(!text.contains(TOKEN), "{name}'s log holds the token");
        assert!(!text.contains("dev-admin-key"), "{name}'s log holds the admin token");
    }
}

/// Collects what arrives over OTLP/gRPC.
struct GrpcReceiver(Spans);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>, tonic::Status> {
        let body = request.into_inner().encode_to_vec();
        let data = web::Data::new(self.0.clone());
        let _ = receive(web::Bytes::from(body), data).await;
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_also_leave_over_otlp_grpc() {
    crate::harness::require_infrastructure();
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_port = listener.local_addr().unwrap().port();
    let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(GrpcReceiver(spans.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_from(listener)),
    );

    let s = test_settings();
    let port = free_port();
    let log = std::fs::File::create(std::env::temp_dir().join(format!("metastream-grpc-{}.log", std::process::id()))).unwrap();
    let mut gateway = service_process("gateway", "GATEWAY", port, &s, log)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{grpc_port}"))
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    wait_ready(&http, port, "gateway not ready").await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    ingest_traced(&http, port, trace_id, "b7ad6b7169203331").await;
    let started = Instant::now();
    loop {
        let got = spans.lock().unwrap().iter().any(|s| s.trace_id == trace_id && s.service == "gateway" && s.name == "POST /ingest");
        if got {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no span over gRPC: {:?}", spans.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = gateway.kill().await;
}

/// Waits (up to a minute) until the service on `port` answers `/readyz` 200; else fails with
/// `not_ready`.
async fn wait_ready(http: &reqwest::Client, port: u16, not_ready: &str) {
    let started = Instant::now();
    while !http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
        assert!(started.elapsed() < Duration::from_secs(60), "{not_ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ingests a Jira event through the gateway on `port` as a client whose span `parent_span` of
/// trace `trace_id` made the call (a W3C `traceparent`), and asserts it was accepted.
async fn ingest_traced(http: &reqwest::Client, port: u16, trace_id: &str, parent_span: &str) {
    let r = http
        .post(format!("http://127.0.0.1:{port}/ingest"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-{parent_span}-01"))
        .json(&jira_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// A stream of accepted connections, for tonic's `serve_with_incoming`.
fn tokio_stream_from(listener: tokio::net::TcpListener) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(s, _)| s);
        Some((conn, listener))
    })
}
