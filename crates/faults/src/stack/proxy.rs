//! The network between the services and Kafka and Redis, for the network and resource
//! scenarios: toxiproxy (`scripts/toxiproxy.sh`, built from the Go module proxy) with one proxy
//! per service instance and per link, and a broker of the suite's own whose every listener but
//! the checks' is reached through those proxies.
//!
//! Why toxiproxy rather than network namespaces and `tc netem`: it needs no privilege, it cuts,
//! slows or resets one service's link while the others keep theirs (a namespace per service
//! would need a bridge, addresses and routes per run), and the same calls work on a laptop and
//! in CI. The broker advertises, on the listener each service connects to, that service's proxy
//! (`KAFKA_PROXIED` in `scripts/kafka.sh`): every connection a client makes after its bootstrap
//! passes the proxy too, not only the first.
//!
//! A partition here is toxiproxy's `timeout` toxic with no timeout, both ways: bytes stop, the
//! connections stay open and new ones are accepted but never answered, as when packets are
//! dropped — not a refusal, which a client notices at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;
use tokio::process::Command;

use super::Component;

/// The suite's broker: the checks use its plain listener; each service instance its own.
pub const BROKER: &str = "127.0.0.1:19692";
const BROKER_CONTROLLER_PORT: u16 = 19693;
/// Each instance's broker listener, its Kafka proxy and its Redis proxy: these plus its slot.
const LISTENER_BASE: u16 = 19300;
const KAFKA_PROXY_BASE: u16 = 19400;
const REDIS_PROXY_BASE: u16 = 19500;
/// The services that get proxies, and how many instances each (two: the partition scenarios
/// run a second instance that takes over).
const SERVICES: [Component; 4] = [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi];
const INSTANCES: u16 = 2;
/// The clients' side of the consumer-api: a proxy in front of each instance's HTTP port (the
/// `/consume` and `/stream` readers go through it) and one in front of the webhook receiver (the
/// consumer-api delivers through it).
const CONSUMER_HTTP_PROXY_BASE: u16 = 19610;
const RECEIVER_PROXY: (&str, u16) = ("webhook-receiver", 19620);
/// Size of the broker's data filesystem (a tmpfs the suite mounts and removes).
const DATA_SIZE: &str = "768m";

/// Which of an instance's two links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Kafka,
    Redis,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::Kafka => "kafka",
            Link::Redis => "redis",
        }
    }
}

fn slot(c: Component, instance: u16) -> u16 {
    let index = SERVICES.iter().position(|s| *s == c).expect("a service") as u16;
    index * INSTANCES + instance
}

fn consumer_http_proxy(instance: u16) -> String {
    format!("consumer-api-{instance}-http")
}

/// The consumer-api instance's public URL as its clients reach it: through its proxy.
pub fn consumer_url(instance: u16) -> String {
    format!("http://127.0.0.1:{}", CONSUMER_HTTP_PROXY_BASE + instance)
}

fn proxy_name(c: Component, instance: u16, link: Link) -> String {
    format!("{}-{instance}-{}", c.binary(), link.name())
}

/// Where instance `instance` of `c` finds Kafka: its proxy.
pub fn kafka_bootstrap(c: Component, instance: u16) -> String {
    format!("127.0.0.1:{}", KAFKA_PROXY_BASE + slot(c, instance))
}

/// Where instance `instance` of `c` finds Redis: its proxy.
pub fn redis_url(c: Component, instance: u16) -> String {
    format!("redis://127.0.0.1:{}", REDIS_PROXY_BASE + slot(c, instance))
}

/// A toxic, as toxiproxy's API takes it.
#[derive(Debug, Clone)]
pub enum Toxic {
    /// Delay every chunk by `ms` ± `jitter_ms`.
    Latency { ms: u64, jitter_ms: u64 },
    /// Nothing passes (both ways: two toxics).
    Partition,
    /// At most `kb_per_s` downstream.
    Bandwidth { kb_per_s: u64 },
    /// A share of the connections reset after `after_ms` (mid-response, for a long read).
    ResetPeer { after_ms: u64, toxicity: f64 },
}

impl Toxic {
    /// The API bodies: (name, body) per stream it acts on.
    fn bodies(&self) -> Vec<(String, serde_json::Value)> {
        let one = |name: &str, kind: &str, stream: &str, toxicity: f64, attributes: serde_json::Value| {
            (name.to_owned(), json!({"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes}))
        };
        match *self {
            Toxic::Latency { ms, jitter_ms } => {
                vec![one("latency", "latency", "downstream", 1.0, json!({"latency": ms, "jitter": jitter_ms}))]
            }
            Toxic::Partition => vec![
                one("cut-down", "timeout", "downstream", 1.0, json!({"timeout": 0})),
                one("cut-up", "timeout", "upstream", 1.0, json!({"timeout": 0})),
            ],
            Toxic::Bandwidth { kb_per_s } => vec![one("bandwidth", "bandwidth", "downstream", 1.0, json!({"rate": kb_per_s}))],
            Toxic::ResetPeer { after_ms, toxicity } => vec![one("reset", "reset_peer", "downstream", toxicity, json!({"timeout": after_ms}))],
        }
    }
}

/// The proxies and the broker behind them.
pub struct Network {
    api: String,
    http: reqwest::Client,
    root: PathBuf,
    redis_upstream: String,
}

impl Network {
    /// Starts toxiproxy and the suite's broker when they are not running, makes every proxy,
    /// and clears every toxic a previous scenario left.
    pub async fn start(root: &Path, redis_url: &str) -> anyhow::Result<Network> {
        script(root, "scripts/toxiproxy.sh", &["start"], &[]).await?;
        let api = String::from_utf8(Command::new(root.join("scripts/toxiproxy.sh")).arg("url").output().await?.stdout)?.trim().to_owned();
        let redis_upstream = redis_url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let network = Network { api, http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?, root: root.to_owned(), redis_upstream };
        network.start_broker().await?;
        for c in SERVICES {
            for instance in 0..INSTANCES {
                let s = slot(c, instance);
                network.proxy(&proxy_name(c, instance, Link::Kafka), KAFKA_PROXY_BASE + s, &format!("127.0.0.1:{}", LISTENER_BASE + s)).await?;
                network.proxy(&proxy_name(c, instance, Link::Redis), REDIS_PROXY_BASE + s, &network.redis_upstream.clone()).await?;
            }
        }
        for instance in 0..INSTANCES {
            let upstream = format!("127.0.0.1:{}", Component::ConsumerApi.port() + 10 * instance);
            network.proxy(&consumer_http_proxy(instance), CONSUMER_HTTP_PROXY_BASE + instance, &upstream).await?;
        }
        // Pointed at the receiver once it listens (`front_receiver`).
        network.proxy(RECEIVER_PROXY.0, RECEIVER_PROXY.1, "127.0.0.1:9").await?;
        network.heal_all().await?;
        Ok(network)
    }

    /// Puts the receiver proxy in front of a webhook receiver listening on `port`; returns the
    /// port to deliver to.
    pub async fn front_receiver(&self, port: u16) -> anyhow::Result<u16> {
        let body = json!({"upstream": format!("127.0.0.1:{port}")});
        let response = self.http.post(format!("{}/proxies/{}", self.api, RECEIVER_PROXY.0)).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("toxiproxy: pointing {} at :{port}: {}", RECEIVER_PROXY.0, response.status());
        }
        Ok(RECEIVER_PROXY.1)
    }

    /// Puts `toxic` on the clients' side of the consumer-api: both instances' HTTP ports (the
    /// readers') and the webhook receiver (its deliveries).
    pub async fn add_to_consumer_clients(&self, toxic: &Toxic) -> anyhow::Result<()> {
        let names = (0..INSTANCES).map(consumer_http_proxy).chain([RECEIVER_PROXY.0.to_owned()]);
        for proxy in names {
            self.add_named(&proxy, toxic).await?;
        }
        Ok(())
    }

    /// The filesystem the broker's data lives on: small, so that a scenario can fill it.
    pub fn data_dir(&self) -> PathBuf {
        broker_dir(&self.root).join("data")
    }

    /// Starts the suite's broker, its data on a tmpfs of [`DATA_SIZE`] the suite mounts where
    /// it may (only `broker-disk-full` needs it, and fails without it: [`Network::small_disk`]).
    pub async fn start_broker(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        std::fs::create_dir_all(&data)?;
        if !is_mount_point(&data).await {
            let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={DATA_SIZE}"), "tmpfs"]).arg(&data).status().await;
            if !mounted.is_ok_and(|s| s.success()) {
                eprintln!("   could not mount a tmpfs on {}: the broker's data stays on this disk (broker-disk-full will fail)", data.display());
            }
        }
        script(&self.root, "scripts/kafka.sh", &["start"], &broker_env(&self.root)).await
    }

    /// The broker's data filesystem, when it is the small one the suite mounted.
    pub async fn small_disk(&self) -> anyhow::Result<PathBuf> {
        let data = self.data_dir();
        if !is_mount_point(&data).await {
            bail!("the broker's data is not on a tmpfs of the suite's ({} could not be mounted: mounting needs root, or CAP_SYS_ADMIN in a container)", data.display());
        }
        Ok(data)
    }

    /// Whether the suite's broker process is alive.
    pub async fn broker_alive(&self) -> bool {
        match std::fs::read_to_string(broker_dir(&self.root).join("kafka.pid")) {
            Ok(pid) => super::alive(pid.trim()).await,
            Err(_) => false,
        }
    }

    async fn proxy(&self, name: &str, listen: u16, upstream: &str) -> anyhow::Result<()> {
        let body = json!({"name": name, "listen": format!("127.0.0.1:{listen}"), "upstream": upstream, "enabled": true});
        let response = self.http.post(format!("{}/proxies", self.api)).json(&body).send().await?;
        match response.status().as_u16() {
            201 => Ok(()),
            // Made by an earlier scenario of this run: the same ports and upstream.
            409 => Ok(()),
            status => bail!("toxiproxy: creating proxy {name}: {status} {}", response.text().await.unwrap_or_default()),
        }
    }

    /// Puts `toxic` on the `link` of instance `instance` of `c`.
    pub async fn add(&self, c: Component, instance: u16, link: Link, toxic: &Toxic) -> anyhow::Result<()> {
        self.add_named(&proxy_name(c, instance, link), toxic).await
    }

    async fn add_named(&self, proxy: &str, toxic: &Toxic) -> anyhow::Result<()> {
        for (name, body) in toxic.bodies() {
            let response = self.http.post(format!("{}/proxies/{proxy}/toxics", self.api)).json(&body).send().await?;
            if !response.status().is_success() {
                bail!("toxiproxy: adding {name} to {proxy}: {} {}", response.status(), response.text().await.unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Puts `toxic` on `link` of every instance of every service.
    pub async fn add_everywhere(&self, link: Link, toxic: &Toxic) -> anyhow::Result<()> {
        for c in SERVICES {
            for instance in 0..INSTANCES {
                self.add(c, instance, link, toxic).await?;
            }
        }
        Ok(())
    }

    /// Removes every toxic of every proxy (and enables every proxy).
    pub async fn heal_all(&self) -> anyhow::Result<()> {
        let response = self.http.post(format!("{}/reset", self.api)).send().await?;
        if !response.status().is_success() {
            bail!("toxiproxy: reset: {}", response.status());
        }
        Ok(())
    }
}

/// Stops the suite's broker and toxiproxy, if they run, and removes the broker's filesystem.
pub async fn stop_network(root: &Path) {
    let _ = script(root, "scripts/kafka.sh", &["stop"], &broker_env(root)).await;
    let _ = script(root, "scripts/toxiproxy.sh", &["stop"], &[]).await;
    let data = broker_dir(root).join("data");
    if is_mount_point(&data).await {
        let _ = Command::new("umount").arg(&data).status().await;
    }
    let _ = std::fs::remove_dir_all(root.join("var/faults-net"));
}

fn broker_dir(root: &Path) -> PathBuf {
    root.join("var/faults-net/kafka")
}

/// `scripts/kafka.sh`'s settings for the suite's broker: its folder, ports, and a listener per
/// service instance that advertises that instance's proxy.
fn broker_env(root: &Path) -> Vec<(String, String)> {
    let listeners: Vec<String> = SERVICES
        .iter()
        .flat_map(|c| (0..INSTANCES).map(move |i| (*c, i)))
        .map(|(c, i)| {
            let s = slot(c, i);
            format!("{}_{i}:{}:{}", c.binary().to_uppercase().replace('-', "_"), LISTENER_BASE + s, KAFKA_PROXY_BASE + s)
        })
        .collect();
    vec![
        ("KAFKA_DIR".into(), broker_dir(root).display().to_string()),
        ("KAFKA_PORT".into(), BROKER.rsplit(':').next().expect("a port").into()),
        ("KAFKA_CONTROLLER_PORT".into(), BROKER_CONTROLLER_PORT.to_string()),
        ("KAFKA_PROXIED".into(), listeners.join(",")),
    ]
}

async fn script(root: &Path, path: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
    let status = Command::new(root.join(path)).args(args).envs(env.iter().map(|(k, v)| (k, v))).current_dir(root).status().await?;
    if !status.success() {
        bail!("{path} {} failed", args.join(" "));
    }
    Ok(())
}

async fn is_mount_point(dir: &Path) -> bool {
    Command::new("mountpoint").arg("-q").arg(dir).status().await.map(|s| s.success()).unwrap_or(false)
}

/// Fills the filesystem of `dir` but for `leave` bytes, with one file in `dir`; returns it.
pub async fn fill(dir: &Path, leave: u64) -> anyhow::Result<PathBuf> {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().await?;
    let avail: u64 = String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).context("df: no available bytes")?;
    let filler = dir.join("metastream-faults-filler");
    let size = avail.saturating_sub(leave);
    let status = Command::new("fallocate").args(["-l", &size.to_string()]).arg(&filler).status().await?;
    if !status.success() {
        bail!("fallocate -l {size} {} failed", filler.display());
    }
    Ok(filler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_has_its_own_ports() {
        let mut ports = std::collections::HashSet::new();
        for c in SERVICES {
            for i in 0..INSTANCES {
                let s = slot(c, i);
                assert!(ports.insert(LISTENER_BASE + s) && ports.insert(KAFKA_PROXY_BASE + s) && ports.insert(REDIS_PROXY_BASE + s));
            }
        }
        assert_eq!(kafka_bootstrap(Component::Pre, 1), "127.0.0.1:19403");
    }

    #[test]
    fn a_partition_stops_both_directions() {
        let streams: Vec<String> = Toxic::Partition.bodies().into_iter().map(|(_, b)| b["stream"].as_str().unwrap().to_owned()).collect();
        assert_eq!(streams, ["downstream", "upstream"]);
    }
}
