//! The network and resource scenarios: what each does to the links and resources under the
//! stack, and what the services said meanwhile (readiness, failed attempts).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_redis::redis;

use crate::stack::{fill, Component, Link, Stack, Toxic};

#[derive(Debug, Clone, Copy)]
pub enum NetFault {
    /// 200 ms ± 50 ms on every Kafka link for 30 s, then on every Redis link for 30 s.
    Latency,
    /// Instance 0 of a service cut from Kafka or Redis for `secs`, then healed; with `second`, a
    /// second instance shares its group and takes its partitions over meanwhile.
    Partition { who: Component, link: Link, secs: u64, second: bool },
    /// Every link of the consumer-api — to Kafka and Redis, from its `/consume` and `/stream`
    /// readers, to the webhook receiver — slow (32 KB/s) and lossy (a third of the connections
    /// reset after 2 s) for 30 s.
    SlowLossyConsumer,
    /// Redis at `maxmemory` with `noeviction` for 20 s: every write refused with OOM.
    RedisFull,
    /// The broker's data filesystem full (but 1 MiB) until the broker stops or 30 s pass; then
    /// the space is freed and the broker started again.
    DiskFull,
}

const SERVICES: [Component; 4] = [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi];
const LATENCY: Toxic = Toxic::Latency { ms: 200, jitter_ms: 50 };

/// Injects `fault`, heals it, and waits until every service is ready again. Returns how long
/// that took after the heal, and a note: what happened, how long each service said it was not
/// ready, and how many retries (backoff waits) each took during the fault.
pub async fn inject(stack: &Stack, fault: NetFault) -> anyhow::Result<Injected> {
    let net = stack.net.as_ref().context("a network scenario without its proxies")?;
    let not_ready: Mutex<BTreeMap<&'static str, Duration>> = Mutex::default();
    let before = retry_counts(stack).await;
    let struck = Instant::now();
    let act = async {
        let note = match fault {
            NetFault::Latency => {
                net.add_everywhere(Link::Kafka, &LATENCY).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                net.heal_all().await?;
                net.add_everywhere(Link::Redis, &LATENCY).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                "200 ms ± 50 ms on every Kafka link for 30 s, then on every Redis link for 30 s".to_owned()
            }
            NetFault::Partition { who, link, secs, second } => {
                net.add(who, 0, link, &Toxic::Partition).await?;
                tokio::time::sleep(Duration::from_secs(secs)).await;
                let takeover = if second { "; a second instance shared its group" } else { "" };
                format!("{} #0 cut from {link:?} for {secs} s{takeover}", who.binary())
            }
            NetFault::SlowLossyConsumer => {
                let (slow, lossy) = (Toxic::Bandwidth { kb_per_s: 32 }, Toxic::ResetPeer { after_ms: 2000, toxicity: 0.33 });
                for instance in 0..2 {
                    for link in [Link::Kafka, Link::Redis] {
                        net.add(Component::ConsumerApi, instance, link, &slow).await?;
                        net.add(Component::ConsumerApi, instance, link, &lossy).await?;
                    }
                }
                net.add_to_consumer_clients(&slow).await?;
                net.add_to_consumer_clients(&lossy).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                "every link of both consumer-api instances — to Kafka, to Redis, from the /consume and /stream readers, to the webhook receiver — at 32 KB/s, a third of the connections reset after 2 s, for 30 s".to_owned()
            }
            NetFault::RedisFull => redis_full(stack, Duration::from_secs(20)).await?,
            NetFault::DiskFull => {
                let filler = fill(&net.small_disk().await?, 1 << 20).await?;
                let full = Instant::now();
                while full.elapsed() < Duration::from_secs(30) && net.broker_alive().await {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let stopped = !net.broker_alive().await;
                let held = full.elapsed();
                std::fs::remove_file(&filler).context("freeing the broker's disk")?;
                if stopped {
                    net.start_broker().await?;
                }
                match stopped {
                    true => format!("the broker's disk full: it stopped after {:.1} s; space freed, broker started again", held.as_secs_f64()),
                    false => "the broker's disk full for 30 s: it kept running; space freed".to_owned(),
                }
            }
        };
        let fault_lasted = struck.elapsed();
        net.heal_all().await?;
        let retries = retry_rates(&before, &retry_counts(stack).await, fault_lasted);
        let healed = Instant::now();
        stack.wait_all_ready().await?;
        anyhow::Ok((healed.elapsed(), note, retries))
    };
    // Each service asked every half second, on its own: a `/readyz` that takes seconds to say no
    // (its broker probe waits 2 s) counts for all the time it took.
    let watch = futures_util::future::join_all(SERVICES.map(|c| {
        let not_ready = &not_ready;
        async move {
            loop {
                let asked = Instant::now();
                let ready = stack.is_ready(c).await;
                tokio::time::sleep_until((asked + Duration::from_millis(500)).into()).await;
                if !ready {
                    *not_ready.lock().expect("not_ready lock").entry(c.binary()).or_default() += asked.elapsed();
                }
            }
        }
    }));
    let (recovery, note, retries) = tokio::select! {
        result = act => result?,
        _ = watch => unreachable!("the watch never ends"),
    };
    let not_ready = not_ready.into_inner().expect("not_ready lock");
    let said = if not_ready.is_empty() {
        "every service stayed ready".to_owned()
    } else {
        format!("not ready: {}", not_ready.iter().map(|(s, d)| format!("{s} {:.1} s", d.as_secs_f64())).collect::<Vec<_>>().join(", "))
    };
    let counted = retries.iter().map(|(s, (n, rate))| format!("{s} {n:.0} ({rate:.1}/s)")).collect::<Vec<_>>().join(", ");
    Ok(Injected {
        recovery,
        note: format!("{note}; {said}; retries during the fault: {counted}"),
        retry_rates: retries.into_iter().map(|(s, (_, rate))| (s.to_owned(), rate)).collect(),
    })
}

/// What a network or resource fault did.
pub struct Injected {
    /// From the heal until every service was ready.
    pub recovery: Duration,
    pub note: String,
    /// Each service's retries per second during the fault.
    pub retry_rates: Vec<(String, f64)>,
}

/// Redis refuses every write (`OOM command not allowed`) for `hold`: `maxmemory` below what it
/// uses, with `noeviction`; then both are put back as they were.
async fn redis_full(stack: &Stack, hold: Duration) -> anyhow::Result<String> {
    let pool = stack.redis_ready().await?;
    let mut conn = pool.get().await?;
    let config = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).to_owned();
    let max: Vec<String> = config("maxmemory").query_async(&mut conn).await?;
    let policy: Vec<String> = config("maxmemory-policy").query_async(&mut conn).await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()).context("INFO memory: no used_memory")?;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query_async::<()>(&mut conn).await?;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used / 2).query_async::<()>(&mut conn).await?;
    tokio::time::sleep(hold).await;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(max.get(1).context("maxmemory")?).query_async::<()>(&mut conn).await?;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(policy.get(1).context("maxmemory-policy")?).query_async::<()>(&mut conn).await?;
    Ok(format!("Redis at maxmemory ({} MB in use, limit half that, noeviction) for {} s", used >> 20, hold.as_secs()))
}

/// Each service's retries so far (`metastream_retries_total`: every backoff wait of every retry
/// loop; `/metrics`, the gateway's and consumer-api's on their admin listener).
async fn retry_counts(stack: &Stack) -> BTreeMap<&'static str, f64> {
    let mut counts = BTreeMap::new();
    for c in SERVICES {
        if let Some(text) = stack.metrics(c).await {
            let sum = text
                .lines()
                .filter(|l| l.split(['{', ' ']).next() == Some("metastream_retries_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            counts.insert(c.binary(), sum);
        }
    }
    counts
}

/// Each service's retries during the fault: how many, and how many a second.
fn retry_rates(before: &BTreeMap<&'static str, f64>, after: &BTreeMap<&'static str, f64>, over: Duration) -> BTreeMap<&'static str, (f64, f64)> {
    after
        .iter()
        .map(|(s, n)| {
            let delta = n - before.get(s).copied().unwrap_or(0.0);
            (*s, (delta, delta / over.as_secs_f64().max(1.0)))
        })
        .collect()
}
