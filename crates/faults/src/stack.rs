//! The stack under test, as processes: the four services started from their binaries with a
//! scenario's own topics, groups and Redis prefix, and the broker and Redis that
//! `scripts/kafka.sh` / `scripts/redis.sh` started (pid files in `var/`).

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
    fn binary(self) -> &'static str {
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
}

type Procs = Arc<Mutex<HashMap<(Component, u16), Child>>>;

/// What starting a service takes.
#[derive(Clone)]
struct Spawner {
    env: Vec<(String, String)>,
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
    /// Stores the `faults` source config and starts the four services.
    pub async fn start(args: &Args, scenario: &str) -> anyhow::Result<Stack> {
        let root = std::env::current_dir()?;
        let run_id = format!("faults-{}-{}", scenario, &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let kafka = std::env::var("METASTREAM_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let redis_url = std::env::var("METASTREAM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
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
        let spawner = Spawner { env, bin: root.join(&args.bin), logs, root: root.clone() };
        let procs: Procs = Arc::default();
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

    /// A pool on Redis once it answers `PING`. A Redis restarted with data answers `LOADING`
    /// while it reads its AOF: that is waited out (up to two minutes), as any other transient
    /// refusal, never reported as a failed scenario.
    pub async fn redis_ready(&self) -> anyhow::Result<adapters::store::Pool> {
        let settings = adapters::settings::RedisSettings {
            url: adapters::Secret::new(&self.redis_url),
            cluster: self.redis_cluster.is_some(),
            urls: self.redis_cluster.iter().flatten().map(adapters::Secret::new).collect(),
            key_prefix: self.key_prefix.clone(),
            pool_size: 4,
            timeout_ms: 10_000,
        };
        let pool = adapters::store::pool(&settings)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ping = async {
                let mut conn = pool.get().await?;
                deadpool_redis::redis::cmd("PING").query_async::<()>(&mut conn).await?;
                anyhow::Ok(())
            };
            match ping.await {
                Ok(()) => return Ok(pool),
                Err(err) if Instant::now() < deadline => {
                    eprintln!("   waiting for redis: {err:#}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => return Err(err.context("redis did not answer PING within 120 s")),
            }
        }
    }

    /// Where the load goes.
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

    /// `scripts/kafka-cluster.sh <command> <node>`.
    pub async fn cluster(&self, command: &str, node: i32) -> anyhow::Result<()> {
        let status = Command::new(self.root.join("scripts/kafka-cluster.sh")).arg(command).arg(node.to_string()).current_dir(&self.root).status().await?;
        if !status.success() {
            bail!("scripts/kafka-cluster.sh {command} {node} failed");
        }
        Ok(())
    }

    /// The node leading the ingest topic's partition 0.
    pub async fn ingest_leader(&self) -> anyhow::Result<i32> {
        let (kafka, topic) = (self.kafka.clone(), format!("{}.ingest", self.run_id));
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::Consumer as _;
            let client: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka).create()?;
            let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let leader = metadata.topics().first().and_then(|t| t.partitions().iter().find(|p| p.id() == 0)).map(|p| p.leader());
            leader.filter(|l| *l >= 0).context("no leader for the ingest topic's partition 0")
        })
        .await?
    }

    /// The Redis Cluster's `CLUSTER NODES`, from the first seed node that answers.
    async fn redis_cluster_nodes(&self) -> anyhow::Result<String> {
        let mut last = None;
        for url in self.redis_cluster.iter().flatten() {
            let answer = async {
                let client = deadpool_redis::redis::Client::open(url.as_str())?;
                let mut conn = tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await??;
                let nodes: String = deadpool_redis::redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
                anyhow::Ok(nodes)
            };
            match answer.await {
                Ok(nodes) => return Ok(nodes),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no redis cluster configured (METASTREAM_TEST_REDIS_CLUSTER)")))
    }

    /// The port of the Redis Cluster master serving slot 0 (a third of every scenario's
    /// entities live on it), as the cluster sees it now.
    pub async fn redis_master_of_slot_zero(&self) -> anyhow::Result<u16> {
        let nodes = self.redis_cluster_nodes().await?;
        master_of_slot_zero(&nodes).with_context(|| format!("no healthy master serves slot 0:\n{nodes}"))
    }

    /// Waits until a master other than `old` serves slot 0 (its replica was promoted); returns
    /// how long that took.
    pub async fn wait_redis_failover(&self, old: u16, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(nodes) = self.redis_cluster_nodes().await {
                if master_of_slot_zero(&nodes).is_some_and(|p| p != old) {
                    return Ok(started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no replica took over slot 0 from the master on port {old} within {within:?}")
    }

    /// SIGKILL of the Redis Cluster node on `port` (started by `scripts/redis.sh cluster`).
    pub async fn kill_redis_node(&self, port: u16) -> anyhow::Result<()> {
        kill_by_pid_file(&self.root.join(format!("var/redis-cluster/{port}/redis.pid"))).await
    }

    /// Starts the Redis Cluster node on `port` again (it rejoins as a replica of whoever took
    /// over its slots).
    pub async fn start_redis_node(&self, port: u16) -> anyhow::Result<()> {
        let status = Command::new(self.root.join("scripts/redis.sh")).args(["cluster-node-start", &port.to_string()]).current_dir(&self.root).status().await?;
        if !status.success() {
            bail!("scripts/redis.sh cluster-node-start {port} failed");
        }
        Ok(())
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
    pub fn consumer_url_of(&self, instance: u16) -> String {
        format!("http://127.0.0.1:{}", Component::ConsumerApi.port() + 10 * instance)
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

    /// SIGTERM every service still running.
    pub async fn stop(self) {
        self.supervisor.abort();
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

/// `group`'s committed offsets on `topic` against the topic's last stable offsets.
fn group_positions(kafka: &str, group: &str, topic: &str) -> anyhow::Result<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        tpl.add_partition(topic, p.id());
    }
    let committed = client.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let end = client.fetch_watermarks(topic, e.partition(), Duration::from_secs(10)).map_or_else(|_| "?".to_owned(), |(_, end)| end.to_string());
        let at = match e.offset() {
            rdkafka::Offset::Offset(o) => o.to_string(),
            _ => "none".to_owned(),
        };
        out.push(format!("{}:{at}/{end}", e.partition()));
    }
    Ok(out.join(" "))
}

/// SIGKILL of the process a pid file (written by the project's scripts) names; waits up to 10 s
/// for it to be gone.
async fn kill_by_pid_file(file: &std::path::Path) -> anyhow::Result<()> {
    let pid = std::fs::read_to_string(file).with_context(|| format!("{} has no pid file: not started by the project's scripts", file.display()))?;
    signal(pid.trim(), "-KILL").await?;
    for _ in 0..100 {
        if !alive(pid.trim()).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Lines of a service log that say what went wrong — warnings and errors without the reconnect
/// noise a broker outage repeats many times a second — and the few INFO lines that say where a
/// stage's partitions went.
fn telling(line: &str) -> bool {
    const NOISE: &[&str] = &["Global error", "kafka consumer error", "Connect to ipv4", "dead-lettering message", "client error (at most"];
    const MOVES: &[&str] = &["partitions assigned", "partitions revoked", "rewound to the committed offset", "aborted the open transaction"];
    ((line.contains(" WARN ") || line.contains(" ERROR ")) && !NOISE.iter().any(|n| line.contains(n)))
        || (line.contains(" INFO ") && MOVES.iter().any(|m| line.contains(m)))
}

/// What makes two log lines "the same": the level, target and message, without the timestamp,
/// the span's fields, the event's `key=value` fields, and with every number as `#`.
fn message_of(line: &str) -> String {
    let mut rest = line.split_once(char::is_whitespace).map_or(line, |(_, r)| r).trim_start();
    let mut out = String::new();
    // Span fields: `name{...}:` prefixes.
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find("}:").map(|c| open + c + 2) else { break };
        if rest[..open].contains(": ") {
            break;
        }
        out.push_str(&rest[..open]);
        out.push(':');
        rest = &rest[close..];
    }
    out.push_str(rest);
    // Event fields start at the first ` key=`.
    let bytes = out.as_bytes();
    let cut = (0..bytes.len()).find(|&i| {
        bytes[i] == b' '
            && bytes.get(i + 1).is_some_and(|b| b.is_ascii_lowercase() || *b == b'_')
            && out[i + 1..].find('=').is_some_and(|eq| out[i + 1..i + 1 + eq].bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'))
    });
    let message = cut.map_or(out.as_str(), |c| &out[..c]);
    // Numbers (durations, offsets, partitions) do not make a message another one.
    let mut key = String::with_capacity(message.len());
    for c in message.chars() {
        if !(c.is_ascii_digit() && key.ends_with('#')) {
            key.push(if c.is_ascii_digit() { '#' } else { c });
        }
    }
    key
}

/// The order a stalled pipeline is best read in: the stages first, the gateway's (long, and
/// only the echo of a broker outage) last.
fn log_rank(file: &std::path::Path) -> usize {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    ["pre-transformer", "post-transformer", "consumer-api", "gateway"].iter().position(|s| name.starts_with(s)).unwrap_or(4)
}

/// For a failed scenario: of each service log in `dir`, the last `per_file` distinct telling
/// messages (each with how often it came and its last full line), so a run whose logs are gone
/// (CI, which shows only part of the output) still shows where a stage stopped.
pub fn print_log_excerpts(dir: &std::path::Path, per_file: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    files.sort_by_key(|f| (log_rank(f), f.clone()));
    for file in files {
        let Ok(text) = std::fs::read(&file) else { continue };
        let text = strip_ansi(&String::from_utf8_lossy(&text));
        let excerpt = distinct_last(text.lines().filter(|l| telling(l)), per_file);
        eprintln!("   -- {} (the last {} distinct of its warnings, errors and moves):", file.display(), excerpt.len());
        for (count, line) in &excerpt {
            eprintln!("   | {:>4}× {}", count, line.chars().take(300).collect::<String>());
        }
    }
}

/// The last `n` distinct messages of `lines` (by [`message_of`]), in the order of their last
/// occurrence, each with how many lines it had and its last line.
fn distinct_last<'a>(lines: impl Iterator<Item = &'a str>, n: usize) -> Vec<(usize, &'a str)> {
    let mut seen: Vec<(String, usize, &'a str)> = Vec::new();
    for line in lines {
        let key = message_of(line);
        match seen.iter().position(|(k, _, _)| *k == key) {
            Some(i) => {
                let (k, count, _) = seen.remove(i);
                seen.push((k, count + 1, line));
            }
            None => seen.push((key, 1, line)),
        }
    }
    seen.into_iter().rev().take(n).rev().map(|(_, count, line)| (count, line)).collect()
}

/// `text` without the terminal colour codes tracing writes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// In `CLUSTER NODES` text, the port of the connected master whose slot ranges include 0.
fn master_of_slot_zero(nodes: &str) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags, link) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        let healthy = flags.split(',').any(|f| f == "master") && !flags.contains("fail") && *link == "connected";
        let serves = fields.iter().skip(8).any(|range| range.split('-').next() == Some("0"));
        if !(healthy && serves) {
            return None;
        }
        addr.split('@').next()?.rsplit(':').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_excerpts_keep_warnings_without_colour_or_reconnect_noise() {
        let line = "\x1b[2m2026-12-01T23:24:02Z\x1b[0m \x1b[33m WARN\x1b[0m stage: the transaction was aborted";
        let plain = super::strip_ansi(line);
        assert_eq!(plain, "2026-12-01T23:24:02Z  WARN stage: the transaction was aborted");
        assert!(super::telling(&plain));
        assert!(!super::telling("2026-12-01T23:24:05Z  WARN adapters::stage::runner: kafka consumer error error=AllBrokersDown"));
        assert!(!super::telling("2026-12-01T23:24:05Z  INFO consuming"));
        assert!(super::telling("2026-12-01T23:24:05Z  INFO adapters::kafka: partitions assigned partitions=t[0],t[1]"));
    }

    #[test]
    fn excerpts_count_repeated_messages_once_each_in_the_order_they_last_came() {
        let lines = [
            "2026-12-02T01:59:08.541366Z  WARN ingest{otel.name=\"POST /ingest\" metastream.event.id=\"e81\"}: gateway::routes: kafka ack timed out event_id=e81 source=faults",
            "2026-12-02T01:59:08.6Z  WARN adapters::stage::transaction: a transactional call failed; retrying error=Transaction error: Broker: Coordinator not available what=committing",
            "2026-12-02T01:59:08.7Z  WARN ingest{otel.name=\"POST /ingest\" metastream.event.id=\"e82\"}: gateway::routes: kafka ack timed out event_id=e82 source=faults",
        ];
        assert_eq!(super::message_of(lines[0]), "WARN ingest: gateway::routes: kafka ack timed out");
        assert_eq!(super::message_of(lines[1]), "WARN adapters::stage::transaction: a transactional call failed; retrying");
        assert_eq!(
            super::message_of("2026-12-02T02:26:23Z  WARN librdkafka: librdkafka: FAIL [thrd:127.0.0.1:9092/1]: Disconnected (after 1700ms in state UP)"),
            "WARN librdkafka: librdkafka: FAIL [thrd:#.#.#.#:#/#]: Disconnected (after #ms in state UP)"
        );
        let excerpt = super::distinct_last(lines.into_iter(), 10);
        assert_eq!(excerpt, vec![(1, lines[1]), (2, lines[2])]);
        assert_eq!(super::distinct_last(lines.into_iter(), 1), vec![(2, lines[2])]);
        let mut files = [std::path::PathBuf::from("x/gateway-0.log"), "x/post-transformer-0.log".into(), "x/pre-transformer-1.log".into()];
        files.sort_by_key(|f| super::log_rank(f));
        assert_eq!(files[0], std::path::PathBuf::from("x/pre-transformer-1.log"));
    }

    #[test]
    fn the_master_of_slot_zero_is_read_from_cluster_nodes() {
        let nodes = "\
c55c 127.0.0.1:7005@17005 slave 1f4f 0 1796069201033 2 connected
5190 127.0.0.1:7001@17001 master,fail - 0 1796069200000 1 disconnected 0-5460
7275 127.0.0.1:7004@17004 master - 0 1796069201033 7 connected 0-5460
1f4f 127.0.0.1:7002@17002 myself,master - 0 1796069201033 2 connected 5461-10922
";
        assert_eq!(super::master_of_slot_zero(nodes), Some(7004));
    }
}
