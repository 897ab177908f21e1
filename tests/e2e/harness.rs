//! Starts a metastream stack for one test and talks to it as a client would.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use adapters::shutdown::CancellationToken;
use adapters::Settings;
use deadpool_redis::redis::AsyncCommands as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "your-secret-key";

/// Where the tests expect Kafka and Redis (`make test` starts them there).
fn kafka_addr() -> String {
    std::env::var("METASTREAM_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}
fn redis_url() -> String {
    std::env::var("METASTREAM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
/// With `METASTREAM_TEST_REDIS_CLUSTER` (seed URLs, comma-separated, as
/// `scripts/redis.sh cluster-urls` prints), the tests run against that Redis Cluster.
fn redis_cluster_urls() -> Option<Vec<String>> {
    std::env::var("METASTREAM_TEST_REDIS_CLUSTER").ok().filter(|v| !v.is_empty()).map(|v| v.split(',').map(str::to_owned).collect())
}

/// Whether these tests run against a Redis Cluster.
pub fn redis_cluster() -> bool {
    redis_cluster_urls().is_some()
}

/// Fails the test, loudly, when Kafka or Redis is not reachable.
pub fn require_infrastructure() {
    let kafka = kafka_addr();
    let redis = redis_cluster_urls().unwrap_or_else(|| vec![redis_url()]);
    let redis_addrs: Vec<String> = redis.iter().map(|r| r.trim_start_matches("redis://").trim_end_matches('/').to_owned()).collect();
    let kafka = [("Kafka", kafka.as_str(), "scripts/kafka.sh start")];
    let redis = redis_addrs.iter().map(|a| ("Redis", a.as_str(), if redis_cluster() { "scripts/redis.sh cluster" } else { "scripts/redis.sh start" }));
    for (what, addr, hint) in kafka.into_iter().chain(redis) {
        let reachable = addr
            .parse()
            .ok()
            .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
            .is_some();
        assert!(
            reachable,
            "{what} is not reachable at {addr}: these end-to-end tests need the real one. \
             Run `make test` (it starts Kafka and Redis) or `{hint}`."
        );
    }
}

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut t = base_settings().telemetry;
        t.log_level = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,librdkafka=off,rdkafka=off".into());
        t.log_format = adapters::settings::LogFormat::Text;
        let _ = adapters::telemetry::init("e2e", &t).map(std::mem::forget);
    });
}

fn base_settings() -> Settings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    Settings::load_from(&dir, Some("dev")).expect("loading config/ for tests")
}

/// Settings for one test: unique topics, groups and key prefix; every listener on port 0.
pub fn test_settings() -> Settings {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let run = format!("t{}-{}-{n}", std::process::id(), uuid::Uuid::new_v4().simple().to_string().get(..6).unwrap());
    let mut s = base_settings();
    s.kafka.bootstrap_servers = kafka_addr();
    s.kafka.partitions = 3;
    let t = &mut s.kafka.topics;
    t.ingest = format!("{run}.ingest");
    t.processed = format!("{run}.processed");
    t.output = format!("{run}.output");
    t.dead_letter = format!("{run}.dead-letter");
    t.audit = format!("{run}.audit");
    // Short sessions so a killed consumer's partitions move on quickly.
    s.kafka.consumer_properties.insert("session.timeout.ms".into(), "6000".into());
    s.kafka.consumer_properties.insert("heartbeat.interval.ms".into(), "500".into());
    s.redis.url = adapters::Secret::new(redis_url());
    if let Some(urls) = redis_cluster_urls() {
        s.redis.cluster = true;
        s.redis.urls = urls.into_iter().map(adapters::Secret::new).collect();
    }
    s.redis.key_prefix = format!("{run}:");
    s.sources.refresh_ms = 100;
    s.pre_transformer.group_id = format!("{run}.pre");
    s.post_transformer.group_id = format!("{run}.post");
    s.consumer_api.group_prefix = format!("{run}.consume-");
    s.webhooks.group_prefix = format!("{run}.webhook-");
    // Webhook retries quick enough for a test.
    s.webhooks.timeout_ms = 2000;
    s.webhooks.max_attempts = 3;
    s.webhooks.backoff_initial_ms = 100;
    s.webhooks.backoff_max_ms = 400;
    for listen in [
        &mut s.gateway.listen,
        &mut s.pre_transformer.listen,
        &mut s.post_transformer.listen,
        &mut s.consumer_api.listen,
        &mut s.gateway.admin_listen,
        &mut s.consumer_api.admin_listen,
    ] {
        *listen = "127.0.0.1:0".into();
    }
    s.gateway.workers = 1;
    s.consumer_api.workers = 1;
    s.shutdown.deadline_ms = 5000;
    s
}

/// A running service: its task and the token that stops it.
pub struct Running {
    pub port: u16,
    /// Where its operators' endpoints are (`/metrics`; the gateway's admin API): the admin
    /// listener of the gateway and the consumer-api, the only listener of a transformer.
    pub admin_port: u16,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful stop, as on SIGTERM.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }

    /// Abrupt stop, as a crash: nothing is committed or flushed.
    pub fn kill(self) {
        self.task.abort();
    }
}

pub async fn start_gateway(s: &Settings) -> Running {
    let shutdown = CancellationToken::new();
    let app = gateway::Application::build(s.clone(), shutdown.clone()).await.expect("starting gateway");
    let (port, admin_port) = (app.listeners().port(), app.listeners().admin_port());
    Running { port, admin_port, shutdown, task: tokio::spawn(app.run_until_stopped()) }
}

pub async fn start_pre(s: &Settings) -> Running {
    let shutdown = CancellationToken::new();
    let app = pre_transformer::PreTransformer::build(s.clone(), shutdown.clone()).await.expect("starting pre-transformer");
    let port = app.port();
    Running { port, admin_port: port, shutdown, task: tokio::spawn(app.run_until_stopped()) }
}

pub async fn start_post(s: &Settings) -> Running {
    let shutdown = CancellationToken::new();
    let app = post_transformer::PostTransformer::build(s.clone(), shutdown.clone()).await.expect("starting post-transformer");
    let port = app.port();
    Running { port, admin_port: port, shutdown, task: tokio::spawn(app.run_until_stopped()) }
}

pub async fn start_consumer_api(s: &Settings) -> Running {
    let shutdown = CancellationToken::new();
    let app = consumer_api::Application::build(s.clone(), shutdown.clone()).await.expect("starting consumer-api");
    let (port, admin_port) = (app.listeners().port(), app.listeners().admin_port());
    Running { port, admin_port, shutdown, task: tokio::spawn(app.run_until_stopped()) }
}

/// The four services of one test, and a client for them.
pub struct Stack {
    pub settings: Settings,
    pub gateway: Running,
    pub pre: Option<Running>,
    pub post: Running,
    pub consumer_api: Running,
    pub http: reqwest::Client,
    pub redis: adapters::store::Pool,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Stack {
        require_infrastructure();
        init_logging();
        let mut settings = test_settings();
        adjust(&mut settings);
        let gateway = start_gateway(&settings).await;
        let pre = Some(start_pre(&settings).await);
        let post = start_post(&settings).await;
        let consumer_api = start_consumer_api(&settings).await;
        let redis = adapters::store::pool(&settings.redis).unwrap();
        Stack { settings, gateway, pre, post, consumer_api, http: reqwest::Client::new(), redis }
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway.port)
    }

    /// A path on the gateway's admin listener (`/v1/...`, `/metrics`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway.admin_port)
    }

    pub fn consumer_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.consumer_api.port)
    }

    /// POSTs a JSON body to /ingest with the dev token.
    pub async fn ingest(&self, body: &Value) -> (u16, Value) {
        self.post_json("/ingest", serde_json::to_vec(body).expect("a Value serializes")).await
    }

    /// POSTs `body`, as it is, as `application/json` to a gateway path with the dev token.
    pub async fn post_json(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(self.gateway_url(path))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("gateway unreachable");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs a consumer-api path with the dev token.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.consumer_url(path)).bearer_auth(TOKEN).send().await.expect("consumer-api unreachable");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Calls /consume for `group` until `want` events arrived or `within` passed.
    pub async fn consume(&self, group: &str, want: usize, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        let mut events = Vec::new();
        while events.len() < want && started.elapsed() < within {
            let (status, body) = self.get(&format!("/consume?group={group}&max=500&wait_ms=500")).await;
            assert_eq!(status, 200, "{body}");
            events.extend(body["events"].as_array().unwrap().iter().map(|e| e["event"].clone()));
        }
        events
    }

    /// Calls /consume for `group` until events with `want` distinct ids arrived or `within`
    /// passed. Where a crash redelivers (at least once), duplicates must not end the wait early.
    pub async fn consume_distinct(&self, group: &str, want: usize, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        let mut events: Vec<Value> = Vec::new();
        let mut ids = std::collections::HashSet::new();
        while ids.len() < want && started.elapsed() < within {
            let more = self.consume(group, 1, Duration::from_secs(1)).await;
            ids.extend(more.iter().filter_map(|e| e["id"].as_str().map(str::to_owned)));
            events.extend(more);
        }
        events
    }

    /// The raw record in Redis for an entity.
    pub async fn stored(&self, source: &str, id: &str) -> Option<Value> {
        let key = domain::KeySchema::new(&self.settings.redis.key_prefix)
            .processed(&domain::SourceName::parse(source).unwrap(), &domain::EventId::parse(id).unwrap());
        let mut conn = self.redis.get().await.unwrap();
        let raw: Option<String> = conn.get(key).await.unwrap();
        raw.map(|r| serde_json::from_str(&r).unwrap())
    }

    /// Writes a source config straight into Redis, as an operator's script could (the admin API's
    /// own tests are in `admin`).
    pub async fn put_source(&self, config: Value) {
        let name = config["source"].as_str().unwrap().to_owned();
        let mut conn = self.redis.get().await.unwrap();
        let key = domain::KeySchema::new(&self.settings.redis.key_prefix).sources();
        let _: () = conn.hset(key, &name, config.to_string()).await.unwrap();
        // Services re-read configs every sources.refresh_ms (100 ms in tests).
        self.wait_for_config(&name, config["version"].as_u64().unwrap_or(0)).await;
    }

    /// Waits until the gateway and both transformers run `source` at `version` or later, as
    /// their `metastream_source_config_version` says; fails the test after 10 s.
    pub async fn wait_for_config(&self, source: &str, version: u64) {
        let mut ports = vec![self.gateway.admin_port, self.post.port];
        ports.extend(self.pre.as_ref().map(|p| p.port));
        let label = format!("source=\"{source}\"");
        let started = Instant::now();
        for port in ports {
            loop {
                let text = self.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
                let running = text
                    .lines()
                    .filter(|l| l.starts_with("metastream_source_config_version{") && l.contains(&label))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .any(|v| v >= version as f64);
                if running {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "the service on port {port} did not load {source} v{version} within 10 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits until `metric` on the service at `port`, summed over the series whose labels contain
    /// all of `labels`, reaches `at_least`; fails the test after 10 s.
    pub async fn wait_for_metric(&self, port: u16, metric: &str, labels: &[&str], at_least: f64) {
        let started = Instant::now();
        loop {
            let text = self.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
            let value: f64 = adapters::metrics::parse_exposition(&text)
                .iter()
                .filter(|(series, _)| series.split('{').next() == Some(metric) && labels.iter().all(|l| series.contains(l)))
                .map(|(_, v)| v)
                .sum();
            if value >= at_least {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{metric}{labels:?} on port {port} is {value}, not {at_least}, after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A plain producer on the test's broker, to write to a topic as another client would.
    pub fn raw_producer(&self) -> rdkafka::producer::FutureProducer {
        rdkafka::ClientConfig::new().set("bootstrap.servers", &self.settings.kafka.bootstrap_servers).create().unwrap()
    }

    /// Every message on a topic, from the beginning, until `want` arrived or `within` passed.
    pub async fn read_topic(&self, topic: &str, want: usize, within: Duration) -> Vec<TopicMessage> {
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.settings.kafka.bootstrap_servers)
            .set("group.id", format!("{topic}.reader-{}", uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        while out.len() < want && started.elapsed() < within {
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(TopicMessage {
                    payload: m.payload().map(|p| p.to_vec()).unwrap_or_default(),
                    headers,
                    timestamp_ms: m.timestamp().to_millis(),
                });
            }
        }
        out
    }
}

pub struct TopicMessage {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The message's Kafka timestamp (when its producer made it).
    pub timestamp_ms: Option<i64>,
}

impl TopicMessage {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The prototype's event.
pub fn jira_event() -> Value {
    json!({"id":"12345","source":"jira","payload":{"title":"Fix login bug","description":"Users are unable to log in due to a server error.","status":"open","assignee":"john.doe"},"metadata":{"created_at":"2024-07-20T12:34:56Z"}})
}
