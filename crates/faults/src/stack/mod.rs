//! The stack under test, as processes: the four services started from their binaries with a
//! scenario's own topics, groups and Redis prefix, and the broker and Redis that
//! `scripts/kafka.sh` / `scripts/redis.sh` started (pid files in `var/`).
//!
//! This module supervises the services' processes (start, kill, restart, readiness); `infra`
//! controls the broker and Redis (a cluster's nodes, the ingest leader, a Redis failover, the
//! pool the checks read with); `logs` picks the lines of the services' logs worth reading;
//! `proxy` puts fault proxies between the services and Kafka and Redis (the network scenarios);
//! `usage` samples each service's CPU and memory.

mod infra;
mod logs;
mod proxy;
mod usage;

pub use logs::print_log_excerpts;
pub use proxy::{fill, stop_network, Link, Network, Toxic};
pub use usage::{Peak, Usage};
use infra::{group_positions, kill_by_pid_file};
use logs::strip_ansi;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use deadpool_redis::redis::AsyncCommands as _;
use tokio::process::{Child, Command};

use crate::Args;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Broker,
    Redis,
    Gateway,
    Pre,
    Post,
    ConsumerApi,
}

impl Component {
    pub fn binary(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Pre => "pre-transformer",
            Component::Post => "post-transformer",
            Component::ConsumerApi => "consumer-api",
            Component::Broker | Component::Redis => unreachable!("not a service"),
        }
    }

    /// The config section holding the service's listen address.
    fn section(self) -> &'static str {
        match self {
            Component::Gateway => "GATEWAY",
            Component::Pre => "PRE_TRANSFORMER",
            Component::Post => "POST_TRANSFORMER",
            Component::ConsumerApi => "CONSUMER_API",
            Component::Broker | Component::Redis => unreachable!("not a service"),
        }
    }

    /// HTTP port of instance 0 (and +10 for instance 1).
    fn port(self) -> u16 {
        match self {
            Component::Gateway => 18081,
            Component::Pre => 18082,
            Component::Post => 18083,
            Component::ConsumerApi => 18084,
            Component::Broker | Component::Redis => unreachable!("not a service"),
        }
    }
}

pub const SOURCE: &str = "faults";
pub const TOKEN: &str = "your-secret-key";
/// The dev config's admin token (the gateway's admin API creates the webhook subscription).
pub const ADMIN_TOKEN: &str = "dev-admin-key";

pub struct Stack {
    pub run_id: String,
    pub kafka: String,
    pub redis_url: String,
    /// A Redis Cluster's seed URLs (`METASTREAM_TEST_REDIS_CLUSTER`), when the services run
    /// against one.
    pub redis_cluster: Option<Vec<String>>,
    pub key_prefix: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    spawner: Spawner,
    root: PathBuf,
    /// The services running, shared with the supervisor.
    procs: Procs,
    /// Services the supervisor started again, and why.
    restarts: Arc<Mutex<Vec<String>>>,
    supervisor: tokio::task::JoinHandle<()>,
    pub http: reqwest::Client,
    /// The fault proxies every service reaches Kafka and Redis through (network scenarios).
    pub net: Option<Network>,
    /// Each service's CPU and memory, sampled while the scenario runs.
    pub usage: Usage,
}

type Procs = Arc<Mutex<HashMap<(Component, u16), Child>>>;

/// What starting a service takes.
#[derive(Clone)]
struct Spawner {
    env: Vec<(String, String)>,
    /// Each instance reaches Kafka and Redis through its own proxies ([`proxy`]).
    proxied: bool,
    bin: PathBuf,
    logs: PathBuf,
    root: PathBuf,
}

impl Spawner {
    /// What instance `instance` of `c` logged as it gave up (its last line with the watchdog's
    /// `exit_code`, without the timestamp and target).
    fn last_give_up(&self, c: Component, instance: u16) -> Option<String> {
        let text = std::fs::read(self.logs.join(format!("{}-{instance}.log", c.binary()))).ok()?;
        let text = strip_ansi(&String::from_utf8_lossy(&text));
        let marker = format!("exit_code={}", adapters::watchdog::EXIT_HUNG);
        let line = text.lines().rev().find(|l| l.contains(&marker))?;
        let message = line.split_once("ERROR ").map_or(line, |(_, m)| m);
        let message = message.split_once(": ").map_or(message, |(_, m)| m);
        Some(message.chars().take(300).collect())
    }

    fn spawn(&self, c: Component, instance: u16) -> anyhow::Result<Child> {
        let port = c.port() + 10 * instance;
        // The gateway's and consumer-api's operators' listeners: 1000 above the public one.
        let admin = matches!(c, Component::Gateway | Component::ConsumerApi)
            .then(|| (format!("METASTREAM__{}__ADMIN_LISTEN", c.section()), format!("127.0.0.1:{}", port + 1000)));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}-{instance}.log", c.binary())))?;
        Command::new(self.bin.join(c.binary()))
            .current_dir(&self.root)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(format!("METASTREAM__{}__LISTEN", c.section()), format!("127.0.0.1:{port}"))
            .envs(admin)
            .envs(self.proxied.then(|| [
                ("METASTREAM__KAFKA__BOOTSTRAP_SERVERS".to_owned(), proxy::kafka_bootstrap(c, instance)),
                ("METASTREAM__REDIS__URL".to_owned(), proxy::redis_url(c, instance)),
            ]).into_iter().flatten())
            .env("HOSTNAME", format!("{}-{instance}", c.binary()))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (run `make build` first)", self.bin.join(c.binary()).display()))
    }
}

/// Does what an orchestrator does for a service that exits with the watchdog's code
/// (`adapters::watchdog::EXIT_HUNG`: a Kafka call hung and the process gave up): starts it
/// again, and records it. Any other exit is left for [`Stack::exited`] to report as a failure.
async fn supervise(procs: Procs, spawner: Spawner, restarts: Arc<Mutex<Vec<String>>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut procs = procs.lock().expect("procs lock");
        let hung: Vec<(Component, u16)> = procs
            .iter_mut()
            .filter_map(|(key, child)| matches!(child.try_wait(), Ok(Some(status)) if status.code() == Some(adapters::watchdog::EXIT_HUNG)).then_some(*key))
            .collect();
        for (c, instance) in hung {
            match spawner.spawn(c, instance) {
                Ok(child) => {
                    procs.insert((c, instance), child);
                    let why = spawner.last_give_up(c, instance).unwrap_or_else(|| "no reason logged".into());
                    eprintln!("   {} #{instance} gave up (exit {}), started again: {why}", c.binary(), adapters::watchdog::EXIT_HUNG);
                    restarts.lock().expect("restarts lock").push(format!("{} #{instance} restarted after it gave up ({why})", c.binary()));
                }
                Err(err) => eprintln!("   starting {} #{instance} again failed: {err:#}", c.binary()),
            }
        }
    }
}

impl Stack {
    /// Stores the `faults` source config and starts the four services; `proxied`: on the
    /// suite's own broker, each service through its fault proxies ([`Network`]).
    pub async fn start(args: &Args, scenario: &str, proxied: bool) -> anyhow::Result<Stack> {
        let root = std::env::current_dir()?;
        let run_id = format!("faults-{}-{}", scenario, &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let redis_url = std::env::var("METASTREAM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let net = if proxied { Some(Network::start(&root, &redis_url).await?) } else { None };
        let kafka = if proxied { proxy::BROKER.to_owned() } else { std::env::var("METASTREAM_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()) };
        let redis_cluster = std::env::var("METASTREAM_TEST_REDIS_CLUSTER").ok().filter(|v| !v.is_empty());
        let key_prefix = format!("{run_id}:");
        let topic = |t: &str| format!("{run_id}.{t}");
        let env = vec![
            ("METASTREAM_ENV", "dev".to_owned()),
            ("METASTREAM_CONFIG_DIR", root.join("config").display().to_string()),
            ("METASTREAM__KAFKA__BOOTSTRAP_SERVERS", kafka.clone()),
            ("METASTREAM__KAFKA__TOPICS__INGEST", topic("ingest")),
            ("METASTREAM__KAFKA__TOPICS__PROCESSED", topic("processed")),
            ("METASTREAM__KAFKA__TOPICS__OUTPUT", topic("output")),
            ("METASTREAM__KAFKA__TOPICS__DEAD_LETTER", topic("dead-letter")),
            ("METASTREAM__KAFKA__CONSUMER_PROPERTIES__SESSION_TIMEOUT_MS", "6000".into()),
            ("METASTREAM__KAFKA__CONSUMER_PROPERTIES__HEARTBEAT_INTERVAL_MS", "1000".into()),
            ("METASTREAM__REDIS__URL", redis_url.clone()),
            ("METASTREAM__REDIS__CLUSTER", redis_cluster.is_some().to_string()),
            ("METASTREAM__REDIS__URLS", redis_cluster.clone().unwrap_or_default()),
            ("METASTREAM__REDIS__KEY_PREFIX", key_prefix.clone()),
            ("METASTREAM__SOURCES__REFRESH_MS", "500".into()),
            ("METASTREAM__PRE_TRANSFORMER__GROUP_ID", topic("pre")),
            ("METASTREAM__POST_TRANSFORMER__GROUP_ID", topic("post")),
            ("METASTREAM__CONSUMER_API__GROUP_PREFIX", topic("consume-")),
            ("METASTREAM__WEBHOOKS__GROUP_PREFIX", topic("webhook-")),
            ("METASTREAM__SHUTDOWN__DEADLINE_MS", "10000".into()),
            // On the three-node cluster, every topic on all three (acks=all waits for two).
            ("METASTREAM__KAFKA__REPLICATION_FACTOR", if args.cluster { "3" } else { "1" }.into()),
            ("RUST_LOG", "info,librdkafka=warn".into()),
        ];
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let logs = root.join(&args.out).join(scenario);
        std::fs::create_dir_all(&logs)?;
        let output_topic = topic("output");
        let dead_letter_topic = topic("dead-letter");
        let spawner = Spawner { env, proxied, bin: root.join(&args.bin), logs, root: root.clone() };
        let procs: Procs = Arc::default();
        let usage = Usage::spawn(procs.clone());
        let restarts: Arc<Mutex<Vec<String>>> = Arc::default();
        let supervisor = tokio::spawn(supervise(procs.clone(), spawner.clone(), restarts.clone()));
        let mut stack = Stack {
            run_id: run_id.clone(),
            kafka,
            redis_url,
            redis_cluster: redis_cluster.map(|urls| urls.split(',').map(str::to_owned).collect()),
            key_prefix,
            output_topic,
            dead_letter_topic,
            spawner,
            root,
            procs,
            restarts,
            supervisor,
            http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?,
            net,
            usage,
        };
        stack.put_source_config().await?;
        for c in [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi] {
            stack.spawn(c, 0)?;
        }
        for c in [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi] {
            stack.wait_ready(c.port(), Duration::from_secs(90)).await.with_context(|| format!("{} not ready", c.binary()))?;
        }
        Ok(stack)
    }

    /// The `faults` source: a cast that fails on poison events (dead-lettered), a timestamp,
    /// processing info.
    async fn put_source_config(&self) -> anyhow::Result<()> {
        let pool = self.redis_ready().await?;
        let mut conn = pool.get().await.context("redis unreachable")?;
        let config = serde_json::json!({
            "source": SOURCE,
            "pre": [{"op": "cast", "params": {"fields": {"payload.n": "int"}}}, {"op": "add_timestamp"}],
            "post": [{"op": "add_processing_info"}],
            "on_error": "dead_letter",
            "version": 1
        });
        let _: () = conn.hset(format!("{}sources", self.key_prefix), SOURCE, config.to_string()).await?;
        // The native mix's sources: the same operations, their senders' protocols.
        let mut github = config.clone();
        github["source"] = crate::load::GITHUB_SOURCE.into();
        github["kind"] = "github".into();
        github["signing"] = serde_json::json!({"generation": 1});
        let mut lineage = config.clone();
        lineage["source"] = crate::load::LINEAGE_SOURCE.into();
        lineage["kind"] = "openlineage".into();
        for c in [github, lineage] {
            let _: () = conn.hset(format!("{}sources", self.key_prefix), c["source"].as_str().unwrap_or_default(), c.to_string()).await?;
        }
        Ok(())
    }

    pub fn target(&self) -> crate::load::Target {
        crate::load::Target { http: self.http.clone(), gateway_url: self.gateway_url(), run_id: self.run_id.clone(), github_secret: self.github_secret() }
    }

    /// The secret of the native mix's GitHub source: derived from the dev configuration's
    /// `auth.key_secret`, as the gateway derives it (generation 1).
    fn github_secret(&self) -> String {
        let settings = adapters::Settings::load_from(&self.root.join("config"), Some("dev")).expect("config/ loads");
        let server = settings.auth.key_secret.map(|s| s.expose().as_bytes().to_vec()).unwrap_or_default();
        domain::webhooks::WebhookSecret::derive(&server, &domain::source::Signing::label(crate::load::GITHUB_SOURCE), 1).expose()
    }


    /// Waits until every service is ready again.
    pub async fn wait_all_ready(&self) -> anyhow::Result<()> {
        for s in [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi] {
            self.wait_ready(s.port(), Duration::from_secs(120)).await?;
        }
        Ok(())
    }

    /// The gateway's admin listener (1000 above its public one).
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", Component::Gateway.port() + 1000)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", Component::Gateway.port())
    }

    /// The consumer-api `instance` (0, or 1 when [`Stack::start_second`] started one).
    /// Instance 0 of `c`'s Prometheus metrics (the gateway's and consumer-api's on their admin
    /// listener, 1000 above the public one; the transformers' on their only one).
    pub async fn metrics(&self, c: Component) -> Option<String> {
        let port = c.port() + if matches!(c, Component::Gateway | Component::ConsumerApi) { 1000 } else { 0 };
        let response = self.http.get(format!("http://127.0.0.1:{port}/metrics")).timeout(Duration::from_secs(3)).send().await.ok()?;
        response.text().await.ok()
    }

    /// Instance `instance` of the consumer-api as a reader reaches it (through its proxy in a
    /// network scenario).
    pub fn consumer_url_of(&self, instance: u16) -> String {
        match self.net {
            Some(_) => proxy::consumer_url(instance),
            None => format!("http://127.0.0.1:{}", Component::ConsumerApi.port() + 10 * instance),
        }
    }

    fn spawn(&mut self, c: Component, instance: u16) -> anyhow::Result<()> {
        let child = self.spawner.spawn(c, instance)?;
        self.procs.lock().expect("procs lock").insert((c, instance), child);
        Ok(())
    }

    /// A second instance of a transformer in the same group.
    pub async fn start_second(&mut self, c: Component) -> anyhow::Result<()> {
        self.spawn(c, 1)?;
        self.wait_ready(c.port() + 10, Duration::from_secs(60)).await
    }

    async fn wait_ready(&self, port: u16, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(r) = self.http.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("port {port} not ready within {within:?}")
    }

    fn pid_file(&self, c: Component) -> PathBuf {
        match c {
            Component::Broker => self.root.join("var/kafka/kafka.pid"),
            _ => self.root.join("var/redis/redis.pid"),
        }
    }

    /// SIGKILL: the component gets no chance to clean up.
    pub async fn kill(&mut self, c: Component) -> anyhow::Result<()> {
        match c {
            Component::Broker | Component::Redis => kill_by_pid_file(&self.pid_file(c)).await,
            _ => {
                let mut child = self.take(c)?;
                child.kill().await?;
                Ok(())
            }
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(&mut self, c: Component) -> anyhow::Result<()> {
        let mut child = self.take(c)?;
        let pid = child.id().context("no pid")?.to_string();
        signal(&pid, "-TERM").await?;
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("{} exited with {status} on SIGTERM", c.binary());
                }
                Ok(())
            }
            Err(_) => bail!("{} did not exit within 30 s of SIGTERM", c.binary()),
        }
    }

    /// Starts the component again; returns how long until the pipeline is ready again.
    pub async fn restart(&mut self, c: Component) -> anyhow::Result<Duration> {
        let started = Instant::now();
        match c {
            Component::Broker | Component::Redis => {
                let script = if c == Component::Broker { "scripts/kafka.sh" } else { "scripts/redis.sh" };
                let status = Command::new(self.root.join(script)).arg("start").current_dir(&self.root).status().await?;
                if !status.success() {
                    bail!("{script} start failed");
                }
                for s in [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi] {
                    self.wait_ready(s.port(), Duration::from_secs(120)).await?;
                }
            }
            _ => {
                self.spawn(c, 0)?;
                self.wait_ready(c.port(), Duration::from_secs(90)).await?;
            }
        }
        Ok(started.elapsed())
    }

    /// Instance 0 of `c`, out of the supervisor's hands (it is being stopped on purpose).
    fn take(&mut self, c: Component) -> anyhow::Result<Child> {
        self.procs.lock().expect("procs lock").remove(&(c, 0)).context("not running")
    }

    /// Each transformer's `/readyz` answer, and its group's committed offset against the end of
    /// its input topic, per partition (`partition:committed/end`): which stage stopped, where,
    /// and whether it said so.
    pub async fn stall_report(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for c in [Component::Pre, Component::Post] {
            let answer = match self.http.get(format!("http://127.0.0.1:{}/readyz", c.port())).send().await {
                Ok(r) => format!("{} {}", r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(err) => format!("no answer: {err}"),
            };
            lines.push(format!("{} /readyz: {}", c.binary(), answer.chars().take(300).collect::<String>()));
        }
        let (kafka, run) = (self.kafka.clone(), self.run_id.clone());
        let positions = tokio::task::spawn_blocking(move || {
            [("pre-transformer", "pre", "ingest"), ("post-transformer", "post", "processed")]
                .into_iter()
                .map(|(stage, group, topic)| match group_positions(&kafka, &format!("{run}.{group}"), &format!("{run}.{topic}")) {
                    Ok(p) => format!("{stage} group on {topic}, partition:committed/end: {p}"),
                    Err(err) => format!("{stage} group: positions unreadable: {err:#}"),
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        lines.extend(positions);
        lines
    }

    /// The services the supervisor started again after they gave up on a hung call.
    pub fn restarts(&self) -> Vec<String> {
        self.restarts.lock().expect("restarts lock").clone()
    }

    /// The services that exited on their own (none was asked to stop): a stage that met a
    /// message it could not get past would show here.
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for ((c, instance), child) in self.procs.lock().expect("procs lock").iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                out.push(format!("{} #{instance} ({status})", c.binary()));
            }
        }
        out.sort();
        out
    }

    /// Whether instance 0 of `c` answers `/readyz` with 200 now.
    pub async fn is_ready(&self, c: Component) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", c.port());
        matches!(self.http.get(url).timeout(Duration::from_secs(5)).send().await, Ok(r) if r.status().is_success())
    }

    /// SIGTERM every service still running.
    pub async fn stop(self) {
        self.supervisor.abort();
        self.usage.stop();
        let children: Vec<Child> = self.procs.lock().expect("procs lock").drain().map(|(_, child)| child).collect();
        for mut child in children {
            if let Some(pid) = child.id() {
                let _ = signal(&pid.to_string(), "-TERM").await;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}

async fn signal(pid: &str, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(sig).arg(pid).status().await?;
    if !status.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

async fn alive(pid: &str) -> bool {
    Command::new("kill").arg("-0").arg(pid).stderr(Stdio::null()).status().await.map(|s| s.success()).unwrap_or(false)
}
