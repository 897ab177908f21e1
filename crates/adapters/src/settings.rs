//! Layered configuration: `config/default.yaml`, then `config/{METASTREAM_ENV}.yaml`, then
//! environment variables `METASTREAM__SECTION__KEY`. Each service validates what it uses at
//! start, and exits naming the bad key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::{SourceName, Topics};
use serde::Deserialize;

/// How long the broker may hold a fetch to fill it (`fetch.min.bytes`, `fetch.wait.max.ms`).
#[derive(Debug, Clone, Copy)]
pub struct FetchBatching {
    pub min_bytes: usize,
    pub wait_ms: u64,
}

/// A value that must never be printed or logged: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    pub sources: SourcesSettings,
    pub auth: AuthSettings,
    pub gateway: GatewaySettings,
    pub pre_transformer: TransformerSettings,
    pub post_transformer: TransformerSettings,
    pub consumer_api: ConsumerApiSettings,
    pub telemetry: TelemetrySettings,
    pub shutdown: ShutdownSettings,
    pub delivery: DeliverySettings,
    pub webhooks: WebhookSettings,
}

/// Webhook subscriptions: how the consumer-api replicas deliver them (their Kafka consumer
/// group, timeouts, retries) and what the admin API allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The Kafka consumer group of subscription `s` is `group_prefix` + `s`: its partitions are
    /// shared by the consumer-api replicas.
    pub group_prefix: String,
    /// How long one delivery attempt may take.
    pub timeout_ms: u64,
    /// Attempts per event before it is dead-lettered for the subscription.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// A subscription whose deliveries are dead-lettered this many times in a row is disabled
    /// (what follows stays in Kafka, at its position, rather than piling up as dead letters).
    pub disable_after_dead_letters: u64,
    /// After a secret rotation, how long the previous secret signs beside the new one.
    pub rotation_overlap_s: u64,
    pub max_subscriptions: usize,
    /// The hosts webhooks may be sent to (patterns with `*`, e.g. `*.internal.example.com`);
    /// empty: any. Checked when a subscription is created or changed, and before each delivery
    /// (a subscription whose host is no longer allowed is disabled).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl WebhookSettings {
    /// Whether webhooks may go to `host`.
    pub fn allows(&self, host: &str) -> bool {
        self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().filter_map(|p| domain::auth::Glob::parse(p).ok()).any(|g| g.matches(&host.to_ascii_lowercase()))
    }

    pub fn retry_policy(&self) -> domain::webhooks::RetryPolicy {
        domain::webhooks::RetryPolicy {
            max_attempts: self.max_attempts,
            initial: Duration::from_millis(self.backoff_initial_ms),
            max: Duration::from_millis(self.backoff_max_ms),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub topics: Topics,
    pub partitions: i32,
    pub replication_factor: i32,
    pub create_topics: bool,
    pub produce_timeout_ms: u64,
    /// librdkafka properties for every client. Keys may use `_` for `.` (environment variables
    /// cannot hold dots): `METASTREAM__KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// The Redis of single-instance mode.
    pub url: Secret,
    /// Run against a Redis Cluster, found through `urls`.
    #[serde(default)]
    pub cluster: bool,
    /// Cluster mode: seed nodes (any reachable one finds the rest). Unused otherwise.
    #[serde(default)]
    pub urls: Vec<Secret>,
    pub key_prefix: String,
    pub pool_size: usize,
    pub timeout_ms: u64,
}

impl RedisSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Where to connect: the cluster's seed nodes, or the one Redis.
    pub fn seeds(&self) -> Vec<String> {
        let urls = if self.cluster { &self.urls[..] } else { std::slice::from_ref(&self.url) };
        urls.iter().map(|u| u.expose().to_owned()).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSettings {
    /// Relative paths are resolved against the parent of the config directory.
    pub seed_file: PathBuf,
    pub refresh_ms: u64,
    pub unknown: UnknownSourcePolicy,
    /// The source config applied to unknown sources when `unknown` is `default`.
    pub default_config: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSourcePolicy {
    /// Answer 422 at ingest.
    Reject,
    /// Accept, and process with the config named by `sources.default_config`.
    Default,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Tokens with every ingest, consume and read scope (`ingest:*`, `consume:*`, `read:*`).
    pub tokens: Vec<Secret>,
    /// Tokens with the `admin` scope; distinct from `tokens`.
    pub admin_tokens: Vec<Secret>,
    /// The server secret API keys are hashed with (HMAC-SHA-256); at least 32 bytes. Empty or
    /// unset: only the tokens above work, and `/v1/keys` answers 409.
    #[serde(default)]
    pub key_secret: Option<Secret>,
    /// The rate limit a key created without one gets (`{}`: unlimited).
    #[serde(default)]
    pub default_rate_limit: domain::auth::RateLimit,
    /// When Redis cannot answer a rate-limit decision: `open` lets the request through (ingest
    /// does not depend on Redis otherwise), `closed` answers 503.
    pub rate_limit_on_redis_error: FailMode,
}

/// What a check that cannot reach its store does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    Open,
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub listen: String,
    /// The admin listener: `/v1/...` (admin API), `/metrics`. Not routed by the public edge.
    pub admin_listen: String,
    pub max_body_bytes: usize,
    pub retry_after_s: u32,
    pub workers: usize,
    /// Requests past this many in flight are answered 503 at once.
    pub max_in_flight: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window_s: u64,
    /// Most events in one `POST /ingest/batch`.
    pub max_batch_events: usize,
    /// Largest `POST /ingest/batch` body.
    pub max_batch_bytes: usize,
    /// How long a client may take to send a request body; past it the answer is 408 and the
    /// request's in-flight permit is freed.
    pub body_timeout_ms: u64,
    /// The operator console (`/console` on the admin listener).
    #[serde(default)]
    pub console: ConsoleSettings,
}

/// The operator console's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// The consumer-api's public origin as the operator's browser reaches it
    /// (`http://127.0.0.1:8084`): the console's entity lookup and live tail call it, and its
    /// Content-Security-Policy lets the console connect there and nowhere else. Unset: those
    /// pages say so. The consumer-api must list the console's origin in
    /// `consumer_api.cors_origins`.
    #[serde(default)]
    pub consumer_api_url: Option<String>,
    /// Where the Grafana dashboards are (`http://localhost:3000/d/metastream-pipeline` for
    /// `deploy/docker-compose.yml`'s Grafana): the console's health page links there for more.
    /// Unset: no link.
    #[serde(default)]
    pub dashboards_url: Option<String>,
}

/// `scheme://host[:port]` of an `http` or `https` URL without path, query or credentials (a
/// trailing `/` is dropped): what a browser calls an origin.
///
/// # Errors
/// A message saying what is wrong with `text`.
pub fn web_origin(text: &str) -> Result<String, String> {
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("`{text}` must start with http:// or https://"))?;
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if rest.is_empty() || !rest.chars().all(ok) {
        return Err(format!("`{text}` must be an origin, scheme://host[:port], without path, query, credentials or wildcard"));
    }
    Ok(trimmed.to_ascii_lowercase())
}

impl GatewaySettings {
    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.body_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSettings {
    pub group_id: String,
    pub listen: String,
    pub batch_size: usize,
    pub batch_linger_ms: u64,
    /// Batches handed to Kafka and not yet acknowledged, at most (1: one batch at a time).
    pub pipeline_depth: usize,
    /// Finished offsets are committed to Kafka at most this often (and always before a revoke
    /// and at shutdown). A crash redelivers up to this much work.
    pub commit_interval_ms: u64,
    /// The broker answers this stage's fetches once this many bytes are ready, or after
    /// `fetch_wait_ms`: fewer, fuller fetches (each one costs the broker about as much as a
    /// produce), at the price of up to `fetch_wait_ms` more latency at low rates.
    pub fetch_min_bytes: usize,
    pub fetch_wait_ms: u64,
}

impl TransformerSettings {
    /// This stage's fetch batching, as `kafka::consumer` takes it.
    pub fn fetch(&self) -> FetchBatching {
        FetchBatching { min_bytes: self.fetch_min_bytes, wait_ms: self.fetch_wait_ms }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerApiSettings {
    pub listen: String,
    /// The operators' listener: `/metrics`. Not routed by the public edge.
    pub admin_listen: String,
    /// Concurrent `GET /consume` calls one key may hold on one replica.
    pub max_long_polls_per_key: usize,
    /// Consumer groups one key may hold open on one replica.
    pub max_groups_per_key: usize,
    /// `GET /consume` and `/stream` calls one replica serves at once, over all keys.
    pub max_long_polls: usize,
    /// Consumer groups one replica holds open, over all keys.
    pub max_groups: usize,
    /// A group consumer unused this long is closed on this replica (the group's position stays in
    /// Redis).
    pub group_idle_s: u64,
    /// An answer not acknowledged within this long (by the owner's next call or its cursor) is
    /// handed out again.
    pub ack_timeout_ms: u64,
    pub group_prefix: String,
    pub default_group: String,
    pub default_batch: usize,
    pub max_batch: usize,
    pub default_wait_ms: u64,
    pub max_wait_ms: u64,
    pub workers: usize,
    /// Origins whose pages may call this API from a browser (CORS), e.g. the operator console's
    /// (`http://127.0.0.1:9081`): exact origins, never a wildcard. Empty: no cross-origin call.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_level: String,
    pub otlp_endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub deadline_ms: u64,
}

impl ShutdownSettings {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// What the transformers promise about their output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub guarantee: Guarantee,
    /// Under exactly once, how many transactional producers each transformer instance holds:
    /// they take turns, so that while one commits the next already takes batches (1: the stage
    /// produces nothing while it commits).
    #[serde(default = "default_transaction_producers")]
    pub transaction_producers: usize,
    /// While a transformer is behind its input (its last batch was full), how long its oldest
    /// transaction keeps taking batches before it commits: fewer, larger transactions when
    /// throughput matters. Caught up, a transaction commits as soon as it may.
    pub transaction_interval_ms: u64,
    /// A transaction commits as soon as its batches are acknowledged and the one before it has
    /// committed, but the commits of one instance start at least this far apart (at most
    /// 1000 / this commits per second and instance; 0: no bound).
    #[serde(default)]
    pub transaction_min_ms: u64,
}

fn default_transaction_producers() -> usize {
    3
}

impl DeliverySettings {
    pub fn transaction_interval(&self) -> Duration {
        Duration::from_millis(self.transaction_interval_ms)
    }

    pub fn transaction_min(&self) -> Duration {
        Duration::from_millis(self.transaction_min_ms)
    }
}

/// `exactly_once`: each transformer consumes, produces and commits its offsets in one Kafka
/// transaction, so a `read_committed` reader sees every update once. `at_least_once`: offsets
/// are committed after the output is acknowledged; a crash may repeat output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    ExactlyOnce,
    AtLeastOnce,
}

/// Which service is asking, so validation checks only what that service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Gateway,
    PreTransformer,
    PostTransformer,
    ConsumerApi,
}

impl Service {
    /// Every service, in the pipeline's order.
    pub const ALL: [Service; 4] = [Service::Gateway, Service::PreTransformer, Service::PostTransformer, Service::ConsumerApi];

    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::PreTransformer => "pre-transformer",
            Service::PostTransformer => "post-transformer",
            Service::ConsumerApi => "consumer-api",
        }
    }
}

/// Configuration that cannot be loaded or is invalid; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// The environment variables that hold lists, and their keys.
const LIST_VARS: &[(&str, &str)] =
    &[("METASTREAM__AUTH__TOKENS", "auth.tokens"), ("METASTREAM__AUTH__ADMIN_TOKENS", "auth.admin_tokens"), ("METASTREAM__REDIS__URLS", "redis.urls"),
        ("METASTREAM__CONSUMER_API__CORS_ORIGINS", "consumer_api.cors_origins")];

impl Settings {
    /// Loads from `$METASTREAM_CONFIG_DIR` (default `config`), `$METASTREAM_ENV` and the
    /// environment.
    ///
    /// # Errors
    /// When a file cannot be read or a value has the wrong type (the key is named).
    pub fn load() -> Result<Settings, SettingsError> {
        let dir = std::env::var("METASTREAM_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        let env = std::env::var("METASTREAM_ENV").ok().filter(|e| !e.is_empty());
        Settings::load_from(Path::new(&dir), env.as_deref())
    }

    /// Loads `dir/default.yaml`, then `dir/{env}.yaml` if `env` is given, then the environment.
    ///
    /// # Errors
    /// See [`Settings::load`].
    pub fn load_from(dir: &Path, env: Option<&str>) -> Result<Settings, SettingsError> {
        Settings::load_with(dir, env, std::env::vars().collect())
    }

    /// [`Settings::load_from`] with `vars` as the environment.
    fn load_with(dir: &Path, env: Option<&str>, vars: HashMap<String, String>) -> Result<Settings, SettingsError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from(dir.join("default.yaml")));
        if let Some(env) = env {
            builder = builder.add_source(config::File::from(dir.join(format!("{env}.yaml"))).required(false));
        }
        // The lists, comma-separated. Split here, not by the config crate: its list parsing
        // works only with `try_parsing`, which would also turn a token such as `0123` into the
        // number 123.
        for (var, key) in LIST_VARS {
            if let Some(value) = vars.get(*var) {
                let items: Vec<String> = value.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned).collect();
                builder = builder.set_override(*key, items)?;
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix("METASTREAM").prefix_separator("__").separator("__").source(Some(vars.into_iter().collect())),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if settings.sources.seed_file.is_relative() {
            let root = dir.parent().unwrap_or(Path::new("."));
            settings.sources.seed_file = root.join(&settings.sources.seed_file);
        }
        for props in [
            &mut settings.kafka.properties,
            &mut settings.kafka.producer_properties,
            &mut settings.kafka.consumer_properties,
        ] {
            *props = std::mem::take(props).into_iter().map(|(k, v)| (k.replace('_', "."), v)).collect();
        }
        Ok(settings)
    }

    /// Checks what `service` uses.
    ///
    /// # Errors
    /// Every problem, each naming its key.
    pub fn validate(&self, service: Service) -> Result<(), SettingsError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                errors.push(msg.to_owned());
            }
        };
        let k = &self.kafka;
        check(!k.bootstrap_servers.trim().is_empty(), "kafka.bootstrap_servers: must not be empty");
        check(k.partitions >= 1, "kafka.partitions: must be at least 1");
        check(k.replication_factor >= 1, "kafka.replication_factor: must be at least 1");
        check(k.produce_timeout_ms >= 100, "kafka.produce_timeout_ms: must be at least 100");
        for (name, topic) in [
            ("ingest", &k.topics.ingest),
            ("processed", &k.topics.processed),
            ("output", &k.topics.output),
            ("dead_letter", &k.topics.dead_letter),
            ("audit", &k.topics.audit),
        ] {
            check(valid_topic(topic), &format!("kafka.topics.{name}: `{topic}` is not a valid Kafka topic name"));
        }
        if self.redis.cluster {
            check(!self.redis.urls.is_empty(), "redis.urls: cluster mode needs at least one seed node");
            check(
                !self.redis.key_prefix.contains(['{', '}']),
                "redis.key_prefix: must not contain `{` or `}` in cluster mode (a hash tag there would put every key in one slot)",
            );
            for url in &self.redis.urls {
                check(
                    ["redis://", "rediss://"].iter().any(|p| url.expose().starts_with(p)),
                    "redis.urls: each must start with redis:// or rediss://",
                );
            }
        } else {
            let url = self.redis.url.expose();
            check(
                ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| url.starts_with(p)),
                "redis.url: must start with redis://, rediss:// or unix://",
            );
        }
        check(self.redis.pool_size >= 1, "redis.pool_size: must be at least 1");
        check(self.redis.timeout_ms >= 1, "redis.timeout_ms: must be at least 1");
        check(self.sources.refresh_ms >= 10, "sources.refresh_ms: must be at least 10");
        check(self.shutdown.deadline_ms >= 1, "shutdown.deadline_ms: must be at least 1");
        let needs_tokens = matches!(service, Service::Gateway | Service::ConsumerApi);
        check(
            !needs_tokens || !self.auth.tokens.is_empty(),
            "auth.tokens: no token configured; set METASTREAM__AUTH__TOKENS (comma-separated)",
        );
        check(
            self.auth.tokens.iter().chain(&self.auth.admin_tokens).all(|t| !t.expose().is_empty()),
            "auth.tokens: tokens must not be empty",
        );
        check(
            !self.auth.admin_tokens.iter().any(|a| self.auth.tokens.contains(a)),
            "auth.admin_tokens: an admin token must not also be an ingest token",
        );
        check(
            self.auth.key_secret.as_ref().is_none_or(|s| s.expose().is_empty() || s.expose().len() >= 32),
            "auth.key_secret: must be at least 32 bytes (METASTREAM__AUTH__KEY_SECRET)",
        );
        check(self.auth.default_rate_limit.validate().is_ok(), "auth.default_rate_limit: rates must be above 0, burst at least 1");
        check(
            SourceName::parse(self.sources.default_config.as_str()).is_ok(),
            "sources.default_config: must be a valid source name",
        );
        match service {
            Service::Gateway => {
                let g = &self.gateway;
                check(g.listen.parse::<SocketAddr>().is_ok(), "gateway.listen: must be host:port");
                check(g.admin_listen.parse::<SocketAddr>().is_ok(), "gateway.admin_listen: must be host:port");
                check(g.max_body_bytes >= 1024, "gateway.max_body_bytes: must be at least 1024");
                check(g.workers >= 1, "gateway.workers: must be at least 1");
                check(g.max_in_flight >= 1, "gateway.max_in_flight: must be at least 1");
                check(g.idempotency_window_s >= 1, "gateway.idempotency_window_s: must be at least 1");
                check(g.max_batch_events >= 1, "gateway.max_batch_events: must be at least 1");
                check(g.max_batch_bytes >= g.max_body_bytes, "gateway.max_batch_bytes: must be at least gateway.max_body_bytes");
                check(g.max_batch_events <= g.max_in_flight, "gateway.max_batch_events: must not exceed gateway.max_in_flight");
                check(g.body_timeout_ms >= 1, "gateway.body_timeout_ms: must be at least 1");
                if let Some(Err(e)) = g.console.consumer_api_url.as_deref().map(web_origin) {
                    check(false, &format!("gateway.console.consumer_api_url: {e}"));
                }
                if let Some(url) = &g.console.dashboards_url {
                    let web = (url.starts_with("http://") || url.starts_with("https://")) && !url.chars().any(char::is_whitespace);
                    check(web, "gateway.console.dashboards_url: must be an http:// or https:// URL");
                }
            }
            Service::PreTransformer | Service::PostTransformer => {
                let (key, t) = if service == Service::PreTransformer {
                    ("pre_transformer", &self.pre_transformer)
                } else {
                    ("post_transformer", &self.post_transformer)
                };
                check(!t.group_id.is_empty(), &format!("{key}.group_id: must not be empty"));
                check(t.listen.parse::<SocketAddr>().is_ok(), &format!("{key}.listen: must be host:port"));
                check(t.batch_size >= 1, &format!("{key}.batch_size: must be at least 1"));
                check(
                    (1..=16).contains(&self.delivery.transaction_producers),
                    "delivery.transaction_producers: must be between 1 and 16",
                );
            }
            Service::ConsumerApi => {
                let c = &self.consumer_api;
                check(c.listen.parse::<SocketAddr>().is_ok(), "consumer_api.listen: must be host:port");
                check(c.admin_listen.parse::<SocketAddr>().is_ok(), "consumer_api.admin_listen: must be host:port");
                for (i, origin) in c.cors_origins.iter().enumerate() {
                    if let Err(e) = web_origin(origin) {
                        check(false, &format!("consumer_api.cors_origins[{i}]: {e}"));
                    }
                }
                check(c.max_long_polls_per_key >= 1, "consumer_api.max_long_polls_per_key: must be at least 1");
                check(c.max_groups_per_key >= 1, "consumer_api.max_groups_per_key: must be at least 1");
                check(c.max_long_polls >= c.max_long_polls_per_key, "consumer_api.max_long_polls: must be at least consumer_api.max_long_polls_per_key");
                check(c.max_groups >= c.max_groups_per_key, "consumer_api.max_groups: must be at least consumer_api.max_groups_per_key");
                check(c.group_idle_s >= 1, "consumer_api.group_idle_s: must be at least 1");
                check(c.ack_timeout_ms >= 100, "consumer_api.ack_timeout_ms: must be at least 100");
                check(c.max_batch >= 1, "consumer_api.max_batch: must be at least 1");
                check(
                    (1..=c.max_batch).contains(&c.default_batch),
                    "consumer_api.default_batch: must be between 1 and consumer_api.max_batch",
                );
                check(
                    c.default_wait_ms <= c.max_wait_ms,
                    "consumer_api.default_wait_ms: must not exceed consumer_api.max_wait_ms",
                );
                check(c.workers >= 1, "consumer_api.workers: must be at least 1");
                let w = &self.webhooks;
                check(w.timeout_ms >= 100, "webhooks.timeout_ms: must be at least 100");
                check(w.max_attempts >= 1, "webhooks.max_attempts: must be at least 1");
                check(w.backoff_initial_ms >= 1 && w.backoff_initial_ms <= w.backoff_max_ms, "webhooks.backoff_initial_ms: must be between 1 and webhooks.backoff_max_ms");
                check(w.disable_after_dead_letters >= 1, "webhooks.disable_after_dead_letters: must be at least 1");
                check(!w.group_prefix.is_empty(), "webhooks.group_prefix: must not be empty");
                for host in &w.allowed_hosts {
                    if let Err(err) = domain::auth::Glob::parse(host) {
                        check(false, &format!("webhooks.allowed_hosts: {err}"));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(errors))
        }
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
    }

    #[test]
    fn an_origin_is_scheme_host_and_port_only() {
        assert_eq!(web_origin("http://127.0.0.1:8084/").unwrap(), "http://127.0.0.1:8084");
        assert_eq!(web_origin("https://Console.example.com").unwrap(), "https://console.example.com");
        for bad in ["*", "http://*", "127.0.0.1:8084", "ftp://x", "http://x/path", "http://u:p@x", "http://x?q", "http://"] {
            assert!(web_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_come_from_the_environment_comma_separated_and_verbatim() {
        let vars: HashMap<String, String> = [
            ("METASTREAM__AUTH__TOKENS", "0123, token-b"),
            ("METASTREAM__REDIS__CLUSTER", "true"),
            ("METASTREAM__REDIS__URLS", "redis://127.0.0.1:7001,redis://127.0.0.1:7002"),
            ("METASTREAM__REDIS__KEY_PREFIX", "007"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = Settings::load_with(&config_dir(), None, vars).unwrap();
        assert_eq!(s.auth.tokens, vec![Secret::new("0123"), Secret::new("token-b")]);
        assert!(s.redis.cluster);
        assert_eq!(s.redis.seeds(), vec!["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]);
        assert_eq!(s.redis.key_prefix, "007");
        s.validate(Service::PreTransformer).unwrap();
    }

    #[test]
    fn cluster_mode_needs_seed_nodes_and_a_prefix_without_a_hash_tag() {
        let mut s = Settings::load_from(&config_dir(), Some("dev")).unwrap();
        s.redis.cluster = true;
        s.redis.key_prefix = "{x}:".into();
        let Err(SettingsError::Invalid(errors)) = s.validate(Service::PreTransformer) else { panic!("accepted") };
        assert!(errors.iter().any(|e| e.starts_with("redis.urls:")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("redis.key_prefix:")), "{errors:?}");
    }

    #[test]
    fn defaults_load_and_dev_has_the_prototype_token() {
        let s = Settings::load_from(&config_dir(), Some("dev")).unwrap();
        assert_eq!(s.kafka.topics.ingest, "pre_process_meta_data_events");
        assert_eq!(s.kafka.partitions, 6);
        assert_eq!(s.auth.tokens, vec![Secret::new("your-secret-key")]);
        assert_eq!(s.kafka.producer_properties.get("linger.ms").map(String::as_str), Some("1"));
        assert_eq!((s.pre_transformer.fetch_min_bytes, s.pre_transformer.fetch_wait_ms), (1, 10));
        assert_eq!((s.post_transformer.fetch_min_bytes, s.post_transformer.fetch_wait_ms), (1, 10));
        assert!(s.sources.seed_file.ends_with("config/sources.yaml"));
        s.validate(Service::Gateway).unwrap();
    }

    #[test]
    fn production_without_tokens_is_refused_naming_the_key() {
        let s = Settings::load_from(&config_dir(), Some("production")).unwrap();
        let err = s.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("auth.tokens"), "{err}");
        // Transformers need no token.
        s.validate(Service::PreTransformer).unwrap();
    }

    #[test]
    fn invalid_values_are_named() {
        let mut s = Settings::load_from(&config_dir(), Some("dev")).unwrap();
        s.kafka.topics.output = "bad topic".into();
        s.redis.url = Secret::new("http://x");
        let err = s.validate(Service::PostTransformer).unwrap_err().to_string();
        assert!(err.contains("kafka.topics.output"), "{err}");
        assert!(err.contains("redis.url"), "{err}");
        let mut s = Settings::load_from(&config_dir(), Some("dev")).unwrap();
        s.gateway.console.dashboards_url = Some("javascript:alert(1)".into());
        let err = s.validate(Service::Gateway).unwrap_err().to_string();
        assert!(err.contains("gateway.console.dashboards_url"), "{err}");
        s.gateway.console.dashboards_url = Some("http://localhost:3000/d/metastream-pipeline".into());
        s.validate(Service::Gateway).unwrap();
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::load_from(&config_dir(), Some("dev")).unwrap();
        assert!(!format!("{s:?}").contains("your-secret-key"));
    }
}
