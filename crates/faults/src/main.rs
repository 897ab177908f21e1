//! `metastream-faults`: the fault-injection suite (`make test-faults`).
//!
//! For each scenario it starts the four services as processes (fresh topics, groups and Redis
//! prefix), drives a load of updates over many entities — each entity's updates sent one after
//! the other, retried with the same `Idempotency-Key` until acknowledged — plus a known number
//! of poison events, kills (SIGKILL) or stops (SIGTERM) a component mid-load and restarts it,
//! then checks from Kafka and Redis directly:
//!
//! - every acknowledged update is on the output topic (lost must be 0), once (duplicates must
//!   be 0, read committed; `kill-redis` and `cluster-kill-redis-master` report their
//!   duplicates: Redis may lose its last second of idempotency records);
//! - the stored record of each entity is its last acknowledged update;
//! - the dead-letter topic holds exactly the poison events;
//! - (consumer-api scenario) a `/consume` reader received every acknowledged update.
//!
//! Out-of-order first deliveries are reported, not hidden.

mod boundary;
mod check;
mod load;
mod network;
mod stack;
mod webhook;

use std::time::{Duration, Instant};

use clap::Parser;

use crate::network::NetFault;
use crate::stack::{Component, Link, Stack};

#[derive(Parser, Debug, Clone)]
#[command(name = "metastream-faults", about = "Kill components under load; prove nothing acknowledged is lost")]
pub struct Args {
    /// Updates per scenario (spread over `entities`).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Distinct entities; each gets events/entities updates, in order.
    #[arg(long, default_value_t = 2_000)]
    entities: usize,
    /// Poison events per scenario (an operation fails on them: they must be dead-lettered).
    #[arg(long, default_value_t = 50)]
    poison: usize,
    /// Entities updated concurrently.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Comma-separated scenarios (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Folder of the built service binaries.
    #[arg(long, env = "METASTREAM_BIN", default_value = "target/debug")]
    bin: String,
    /// Where logs and results go.
    #[arg(long, default_value = "var/faults")]
    out: String,
    /// Run the cluster scenarios instead, against the three-node cluster of
    /// `scripts/kafka-cluster.sh` (METASTREAM_TEST_KAFKA its bootstrap list): topics with
    /// replication factor 3 and min.insync.replicas 2; with METASTREAM_TEST_REDIS_CLUSTER (the
    /// seed URLs of `scripts/redis.sh cluster`), the services run against that Redis Cluster
    /// and `cluster-kill-redis-master` can run.
    #[arg(long)]
    cluster: bool,
    /// Spread the updates over at least this many seconds (default: as fast as acknowledged;
    /// 40 with --cluster, so the load lasts through a rolling restart).
    #[arg(long)]
    spread: Option<u64>,
}

/// What a scenario does to the stack while the load runs.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Kill(Component),
    /// Two instances of a transformer share the group; one is killed and not restarted.
    KillOneOfTwo(Component),
    /// SIGTERM to each service in turn, each restarted before the next.
    TermEach,
    /// No fault: events at and past the gateway's size and depth limits mixed into the load.
    Boundary,
    /// Cluster: SIGKILL the broker leading the ingest topic's partition 0, restart it after 2 s.
    KillLeader,
    /// Cluster: each broker in turn stopped (SIGTERM, controlled shutdown) and started again.
    RollingRestart,
    /// Redis Cluster: SIGKILL the master serving slot 0; its replica takes over; the old master
    /// is started again and rejoins as a replica.
    KillRedisMaster,
    /// Cluster: node 3 cut off from the other two nodes and from every client for 30 s
    /// (`scripts/kafka-cluster.sh isolate 3`), then reachable again.
    IsolateBroker,
    /// A fault of the network or of a resource: the services reach Kafka (the suite's own
    /// broker) and Redis through fault proxies (`stack::Network`).
    Net(NetFault),
}

impl Fault {
    fn proxied(self) -> bool {
        matches!(self, Fault::Net(_))
    }
}

/// The scenarios of `--cluster`.
const CLUSTER_SCENARIOS: &[(&str, Fault)] = &[
    ("cluster-kill-leader", Fault::KillLeader),
    ("cluster-rolling-restart", Fault::RollingRestart),
    ("cluster-kill-redis-master", Fault::KillRedisMaster),
    ("cluster-partition-broker", Fault::IsolateBroker),
];

const SCENARIOS: &[(&str, Fault)] = &[
    ("baseline", Fault::None),
    ("kill-broker", Fault::Kill(Component::Broker)),
    ("kill-redis", Fault::Kill(Component::Redis)),
    ("kill-gateway", Fault::Kill(Component::Gateway)),
    ("kill-pre-transformer", Fault::Kill(Component::Pre)),
    ("kill-post-transformer", Fault::Kill(Component::Post)),
    ("kill-consumer-api", Fault::Kill(Component::ConsumerApi)),
    ("two-pre-kill-one", Fault::KillOneOfTwo(Component::Pre)),
    ("two-post-kill-one", Fault::KillOneOfTwo(Component::Post)),
    ("sigterm-each", Fault::TermEach),
    ("boundary-mix", Fault::Boundary),
    ("native-mix-kill-gateway", Fault::Kill(Component::Gateway)),
    ("native-mix-kill-pre", Fault::Kill(Component::Pre)),
    ("net-latency", Fault::Net(NetFault::Latency)),
    ("net-partition-pre-kafka", Fault::Net(NetFault::Partition { who: Component::Pre, link: Link::Kafka, secs: 20, second: true })),
    ("net-partition-post-kafka", Fault::Net(NetFault::Partition { who: Component::Post, link: Link::Kafka, secs: 20, second: false })),
    ("net-partition-pre-redis", Fault::Net(NetFault::Partition { who: Component::Pre, link: Link::Redis, secs: 20, second: false })),
    ("net-gateway-cut-kafka", Fault::Net(NetFault::Partition { who: Component::Gateway, link: Link::Kafka, secs: 20, second: false })),
    ("net-slow-consumer-api", Fault::Net(NetFault::SlowLossyConsumer)),
    ("redis-full", Fault::Net(NetFault::RedisFull)),
    ("broker-disk-full", Fault::Net(NetFault::DiskFull)),
];

/// How long a request may be held: the gateway's produce timeout (5 s) and Redis timeout (2 s),
/// and slack for a loaded machine. A network scenario fails if any request took longer.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// A retry storm: more retries a second than a handful of retry loops backing off from 100 ms to
/// 5 s (`adapters::retry::Backoff::infra`, at worst about one a second each once capped) can
/// take. A network scenario fails if a service retried faster during its fault.
const MAX_RETRY_RATE: f64 = 5.0;

/// One row of the final table.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub scenario: String,
    pub acknowledged: usize,
    pub delivered: usize,
    /// `None` when it could not be computed (the scenario did not run to the end).
    pub lost: Option<usize>,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub stale_store: usize,
    pub dead_letters: usize,
    /// Dead letters that are not poison events: something failed that should not have.
    pub unexpected_dead_letters: usize,
    pub poison: usize,
    pub consume_lost: Option<usize>,
    /// Acknowledged updates an SSE reader of `/stream` never got (where one ran).
    pub stream_lost: Option<usize>,
    /// Acknowledged updates the scenario's webhook receiver never got (signatures checked).
    pub webhook_lost: Option<usize>,
    pub webhook_bad_signatures: usize,
    /// The longest time the load went without an acknowledgement (acceptance stalled).
    pub longest_gap: Option<Duration>,
    /// The longest time between two updates published on the output (delivery stalled).
    pub delivery_gap: Option<Duration>,
    /// The longest any request was held, and the 503 answers (with and without Retry-After).
    pub slowest_request: Option<Duration>,
    pub unavailable: usize,
    pub unavailable_without_retry_after: usize,
    /// Each service's peak resident memory and CPU, from the strike until it was ready again.
    pub usage: Vec<(String, stack::Peak)>,
    /// Each service's retries a second during a network or resource fault (held to
    /// [`MAX_RETRY_RATE`]).
    pub retry_rates: Vec<(String, f64)>,
    /// Whether this is a network scenario (held to [`REQUEST_DEADLINE`]).
    pub proxied: bool,
    pub recovery: Option<Duration>,
    /// Boundary events the gateway accepted, and those of them found on neither the output nor
    /// the dead-letter topic; boundary events answered otherwise than expected.
    pub boundary_accepted: usize,
    pub boundary_unaccounted: usize,
    pub boundary_wrong_answer: usize,
    /// Services that exited during the scenario without being asked to.
    pub exited: Vec<String>,
    pub note: String,
    /// For a failed scenario: each transformer's readiness and where its group stands on its
    /// input ([`stack::Stack::stall_report`]).
    pub stall_report: Vec<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        // Exactly once: a read_committed reader of the output sees each update once. A Redis
        // crash is the one exception allowed (AOF everysec can lose the last second of the
        // dedupe records), reported, not failed.
        let duplicates_ok = self.duplicates == 0 || self.scenario == "kill-redis" || self.scenario == "cluster-kill-redis-master";
        !self.note.starts_with("skipped")
            && duplicates_ok
            && self.lost == Some(0) && self.stale_store == 0
            && self.boundary_unaccounted == 0 && self.boundary_wrong_answer == 0 && self.exited.is_empty() && self.dead_letters == self.poison && self.unexpected_dead_letters == 0 && self.consume_lost.unwrap_or(0) == 0 && self.stream_lost.unwrap_or(0) == 0
            && self.webhook_lost == Some(0) && self.webhook_bad_signatures == 0
            && self.unavailable_without_retry_after == 0
            && !(self.proxied && self.slowest_request.is_some_and(|d| d > REQUEST_DEADLINE))
            && self.retry_rates.iter().all(|(_, rate)| *rate <= MAX_RETRY_RATE)
    }
}

async fn run_scenario(args: &Args, name: &str, fault: Fault) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(args, name, fault.proxied()).await?;
    if let Fault::KillOneOfTwo(c) | Fault::Net(NetFault::Partition { who: c, second: true, .. }) = fault {
        stack.start_second(c).await?;
    }
    // The downstream reader goes through two consumer-api replicas in turn (a group's position is
    // in Redis, so either serves any call); the fault kills one of them.
    let reader = if matches!(fault, Fault::Kill(Component::ConsumerApi) | Fault::Net(NetFault::SlowLossyConsumer)) {
        stack.start_second(Component::ConsumerApi).await?;
        Some(load::Reader::spawn(vec![stack.consumer_url_of(0), stack.consumer_url_of(1)]))
    } else {
        None
    };
    // Through a slow, lossy consumer-api, an SSE reader of `/stream` too.
    let stream_reader = matches!(fault, Fault::Net(NetFault::SlowLossyConsumer))
        .then(|| load::Reader::spawn_stream(vec![stack.consumer_url_of(0), stack.consumer_url_of(1)]));
    // Every scenario delivers its output to a webhook receiver too.
    let receiver = webhook::Receiver::subscribe(&stack.http, &stack.admin_url(), stack::ADMIN_TOKEN, stack.net.as_ref()).await?;
    // GitHub webhooks and OpenLineage events beside envelopes (`load::Kind`).
    let mut plan = load::Plan::new(args, &stack.run_id, name.starts_with("native-mix"));
    // A network fault lasts 20 to 60 s: the load outlasts it, so acceptance is measured through it.
    let net_spread = match fault {
        Fault::Net(NetFault::Latency) => Some(80),
        Fault::Net(_) => Some(45),
        _ => None,
    };
    if let Some(secs) = args.spread.or(args.cluster.then_some(40)).or(net_spread) {
        plan.interval = Some(Duration::from_secs_f64(secs as f64 / plan.total().max(1) as f64));
    }
    if matches!(fault, Fault::Boundary) {
        let limit = boundary::max_event_bytes(&stack.target().http, &stack.gateway_url()).await?;
        plan.boundary = boundary::events(limit, domain::limits::MAX_EVENT_DEPTH, 3);
    }
    let progress = load::Progress::default();
    let target = stack.target();
    let driver = load::drive(&plan, &target, args.concurrency, &progress);

    let started = Instant::now();
    let injector = async {
        // Strike once a third of the load is acknowledged.
        progress.wait_for(plan.total() / 3).await;
        // The peaks reported are those from the strike until every service is ready again.
        if !matches!(fault, Fault::None | Fault::Boundary) {
            stack.usage.reset();
        }
        let mut recovery = None;
        let mut note = String::new();
        let mut retry_rates = Vec::new();
        match fault {
            Fault::None | Fault::Boundary => {}
            Fault::Kill(c) => match stack.kill(c).await {
                Ok(()) => {
                    // Redis stays down longer than the restart guard's durability delay, so a
                    // stage held up by the outage must still redo the writes Redis lost.
                    let down = if c == Component::Redis { 8 } else { 2 };
                    tokio::time::sleep(Duration::from_secs(down)).await;
                    recovery = Some(stack.restart(c).await?);
                }
                Err(err) => note = format!("skipped: {err}"),
            },
            Fault::KillOneOfTwo(c) => {
                stack.kill(c).await?;
                note = "second instance kept running".into();
            }
            Fault::KillLeader => {
                let node = stack.ingest_leader().await?;
                note = format!("killed node {node}, the leader of the ingest topic's partition 0");
                stack.cluster("kill-node", node).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let started = Instant::now();
                stack.cluster("start-node", node).await?;
                stack.wait_all_ready().await?;
                recovery = Some(started.elapsed());
            }
            Fault::RollingRestart => {
                let started = Instant::now();
                for node in 1..=3 {
                    stack.cluster("stop-node", node).await?;
                    stack.cluster("start-node", node).await?;
                }
                stack.wait_all_ready().await?;
                recovery = Some(started.elapsed());
                note = "nodes 1, 2, 3 restarted in turn".into();
            }
            Fault::KillRedisMaster => {
                let port = stack.redis_master_of_slot_zero().await?;
                stack.kill_redis_node(port).await?;
                let failover = stack.wait_redis_failover(port, Duration::from_secs(60)).await?;
                note = format!("killed the master of slot 0 (:{port}); a replica took over in {:.1}s", failover.as_secs_f64());
                let started = Instant::now();
                stack.start_redis_node(port).await?;
                stack.wait_all_ready().await?;
                recovery = Some(failover + started.elapsed());
            }
            Fault::IsolateBroker => {
                stack.cluster("isolate", 3).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                stack.cluster("heal", 3).await?;
                let healed = Instant::now();
                stack.wait_all_ready().await?;
                recovery = Some(healed.elapsed());
                note = "node 3 cut off from nodes 1 and 2 and from every client for 30 s".into();
            }
            Fault::Net(net) => {
                let injected = network::inject(&stack, net).await?;
                recovery = Some(injected.recovery);
                note = injected.note;
                retry_rates = injected.retry_rates;
            }
            Fault::TermEach => {
                let mut total = Duration::ZERO;
                for c in [Component::Gateway, Component::Pre, Component::Post, Component::ConsumerApi] {
                    stack.terminate(c).await?;
                    total += stack.restart(c).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                recovery = Some(total);
            }
        }
        let peaks = if matches!(fault, Fault::None | Fault::Boundary) { Vec::new() } else { stack.usage.summary() };
        anyhow::Ok((recovery, note, peaks, retry_rates))
    };
    let ticker = progress.report(name, plan.total(), started);
    let (acked, injected, ()) = tokio::join!(driver, injector, ticker);
    let acked = acked?;
    let (recovery, note, peaks, retry_rates) = injected?;

    let mut outcome = check::verify(&stack, &plan, &acked).await?;
    outcome.longest_gap = Some(progress.longest_gap());
    outcome.slowest_request = Some(progress.slowest());
    outcome.unavailable = progress.unavailable.load(std::sync::atomic::Ordering::Relaxed);
    outcome.unavailable_without_retry_after = progress.unavailable_without_retry_after.load(std::sync::atomic::Ordering::Relaxed);
    outcome.usage = if peaks.is_empty() { stack.usage.summary() } else { peaks };
    outcome.proxied = fault.proxied();
    outcome.retry_rates = retry_rates;
    outcome.exited = stack.exited();
    if let Some(reader) = reader {
        let got = reader.finish(&acked, Duration::from_secs(120)).await;
        outcome.consume_lost = Some(got);
    }
    if let Some(reader) = stream_reader {
        outcome.stream_lost = Some(reader.finish(&acked, Duration::from_secs(120)).await);
    }
    let hooks = receiver.finish(&acked.updates, Duration::from_secs(60)).await;
    outcome.webhook_lost = Some(hooks.lost);
    outcome.webhook_bad_signatures = hooks.bad_signatures;
    if hooks.bad_signatures > 0 {
        eprintln!("   {} of {} webhook deliveries had a bad signature", hooks.bad_signatures, hooks.requests);
    }
    outcome.scenario = name.to_owned();
    outcome.recovery = recovery;
    outcome.note = [note].into_iter().chain(stack.restarts()).filter(|n| !n.is_empty()).collect::<Vec<_>>().join("; ");
    if !outcome.passed() {
        outcome.stall_report = stack.stall_report().await;
    }
    stack.stop().await;
    Ok(outcome)
}

fn print_table(rows: &[Outcome]) {
    println!();
    println!(
        "{:<24} {:>6} {:>9} {:>5} {:>10} {:>12} {:>11} {:>12} {:>12} {:>12} {:>10} {:>8}  note",
        "scenario", "acked", "delivered", "lost", "duplicates", "out-of-order", "stale-store", "dead-letters", "consume-lost", "webhook-lost", "recovery", "no-ack"
    );
    for r in rows {
        println!(
            "{:<24} {:>6} {:>9} {:>5} {:>10} {:>12} {:>11} {:>12} {:>12} {:>12} {:>10} {:>8}  {}{}",
            r.scenario,
            r.acknowledged,
            r.delivered,
            r.lost.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            r.duplicates,
            r.out_of_order,
            r.stale_store,
            format!("{}/{}", r.dead_letters, r.poison),
            r.consume_lost.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            r.webhook_lost.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            r.recovery.map(|d| format!("{:.1}s", d.as_secs_f64())).unwrap_or_else(|| "-".into()),
            r.longest_gap.map(|d| format!("{:.1}s", d.as_secs_f64())).unwrap_or_else(|| "-".into()),
            if r.passed() { "" } else { "FAILED " },
            r.note,
        );
        if r.boundary_accepted > 0 || r.boundary_wrong_answer > 0 {
            println!(
                "{:<22} boundary events: {} accepted, {} unaccounted for, {} answered otherwise than expected",
                "", r.boundary_accepted, r.boundary_unaccounted, r.boundary_wrong_answer
            );
        }
        if !r.exited.is_empty() {
            println!("{:<22} exited on their own: {}", "", r.exited.join(", "));
        }
        let secs = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "{:<22} {}stalls: acceptance {}, delivery {}; slowest request {}; {} answers 503 ({} without Retry-After); peaks: {}",
            "",
            r.stream_lost.map(|n| format!("/stream lost {n}; ")).unwrap_or_default(),
            secs(r.longest_gap),
            secs(r.delivery_gap),
            secs(r.slowest_request),
            r.unavailable,
            r.unavailable_without_retry_after,
            r.usage.iter().map(|(s, p)| format!("{s} {} MB {:.0}% CPU", p.rss >> 20, p.cpu * 100.0)).collect::<Vec<_>>().join(", ")
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let known = if args.cluster { CLUSTER_SCENARIOS } else { SCENARIOS };
    let wanted: Vec<_> = if args.scenarios.is_empty() {
        known.to_vec()
    } else {
        let mut v = Vec::new();
        for name in &args.scenarios {
            let s = known.iter().find(|(n, _)| n == name).ok_or_else(|| {
                anyhow::anyhow!("unknown scenario `{name}`; known: {}", known.iter().map(|s| s.0).collect::<Vec<_>>().join(", "))
            })?;
            v.push(*s);
        }
        v
    };
    std::fs::create_dir_all(&args.out)?;
    let mut rows = Vec::new();
    for &(name, fault) in &wanted {
        eprintln!("== scenario {name}: {} updates over {} entities, {} poison", args.events, args.entities, args.poison);
        let row = match run_scenario(&args, name, fault).await {
            Ok(row) => row,
            Err(err) => Outcome { scenario: name.into(), note: format!("FAILED to run: {err:#}"), lost: None, ..Default::default() },
        };
        eprintln!("   {}", if row.passed() { "ok" } else { "FAILED" });
        if !row.passed() {
            for line in &row.stall_report {
                eprintln!("   {line}");
            }
            stack::print_log_excerpts(&std::path::Path::new(&args.out).join(name), 12);
        }
        rows.push(row);
    }
    if wanted.iter().any(|(_, fault)| fault.proxied()) {
        stack::stop_network(&std::env::current_dir()?).await;
    }
    print_table(&rows);
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "scenario": r.scenario, "acknowledged": r.acknowledged, "delivered": r.delivered, "lost": r.lost,
                "duplicates": r.duplicates, "out_of_order": r.out_of_order, "stale_store": r.stale_store,
                "dead_letters": r.dead_letters, "poison": r.poison, "consume_lost": r.consume_lost, "stream_lost": r.stream_lost, "webhook_lost": r.webhook_lost, "webhook_bad_signatures": r.webhook_bad_signatures,
                "boundary_accepted": r.boundary_accepted, "boundary_unaccounted": r.boundary_unaccounted,
                "boundary_wrong_answer": r.boundary_wrong_answer, "exited": r.exited,
                "recovery_s": r.recovery.map(|d| d.as_secs_f64()), "longest_without_ack_s": r.longest_gap.map(|d| d.as_secs_f64()),
                "longest_without_delivery_s": r.delivery_gap.map(|d| d.as_secs_f64()), "slowest_request_s": r.slowest_request.map(|d| d.as_secs_f64()),
                "retries_per_s": r.retry_rates.iter().map(|(s, rate)| (s.clone(), serde_json::json!(rate))).collect::<serde_json::Map<_, _>>(),
                "unavailable": r.unavailable, "unavailable_without_retry_after": r.unavailable_without_retry_after,
                "peaks": r.usage.iter().map(|(s, p)| serde_json::json!({"service": s, "rss_bytes": p.rss, "cpu_cores": p.cpu})).collect::<Vec<_>>(),
                "note": r.note, "passed": r.passed(),
            })
        })
        .collect();
    std::fs::write(format!("{}/results.json", args.out), serde_json::to_string_pretty(&json)?)?;
    let passed = rows.iter().filter(|r| r.passed()).count();
    println!("\n{} passed, {} failed", passed, rows.len() - passed);
    if passed != rows.len() {
        std::process::exit(1);
    }
    Ok(())
}
