//! The broker and Redis under the stack: a cluster's nodes started and stopped, the ingest
//! topic's leader, a Redis Cluster's failover, processes killed by their pid files, the pool the
//! checks read Redis with, a group's committed positions for the stall report.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::Command;

use super::{alive, signal, Stack};

impl Stack {
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
}

/// `group`'s committed offsets on `topic` against the topic's last stable offsets.
pub(super) fn group_positions(kafka: &str, group: &str, topic: &str) -> anyhow::Result<String> {
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
pub(super) async fn kill_by_pid_file(file: &std::path::Path) -> anyhow::Result<()> {
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
