//! `metastream-loadgen`: measures what metastream and the broker under it can take.
//!
//! Modes:
//! - `http`: ingest through the gateway, one event per request or batches (`--batch N`), closed
//!   loop (`--clients N`) or open loop (`--rate R` events/s, latency measured from each request's
//!   intended send time, so a stall is not hidden: no coordinated omission). With `--e2e-topic`
//!   it also consumes the output topic and matches events by id to when they were sent.
//! - `kafka-produce`: a raw rdkafka producer (acks=all, same event size) straight to the broker:
//!   the limit the gateway is compared with.
//! - `kafka-roundtrip`: raw produce → consume latency on the same broker, at a fixed rate.
//!
//! It prints progress every second, a table at the end, and writes JSON results (`--json`).
//! With `--pid name=PID` (repeatable) it reports each process's CPU seconds per million events
//! and peak RSS (from /proc).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::{json, Value};

/// The load generator shares the machine with what it measures: it should cost little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Http,
    KafkaProduce,
    KafkaRoundtrip,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "metastream-loadgen")]
struct Args {
    #[arg(long, value_enum, default_value = "http")]
    mode: Mode,
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    url: String,
    #[arg(long, default_value = "your-secret-key")]
    token: String,
    /// Events per request (1: POST /ingest; more: POST /ingest/batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Closed loop: this many clients, each sending as soon as its previous request is answered.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Open loop: events per second (overrides --clients' pacing; clients become the sender pool).
    #[arg(long)]
    rate: Option<u64>,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Approximate size of each event's JSON, in bytes.
    #[arg(long, default_value_t = 1024)]
    event_size: usize,
    /// Distinct entities (ids repeat across them: updates).
    #[arg(long, default_value_t = 10_000)]
    entities: u64,
    /// Sources, cycled (each must have a config).
    #[arg(long, value_delimiter = ',', default_value = "jira,github,serviceX")]
    sources: Vec<String>,
    /// Kafka bootstrap servers (raw modes and --e2e-topic).
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka: String,
    /// Topic for the raw modes.
    #[arg(long, default_value = "loadgen-raw")]
    topic: String,
    /// Consume this topic (the output topic) to measure end-to-end latency.
    #[arg(long)]
    e2e_topic: Option<String>,
    /// Processes to measure: `name=pid` (repeatable).
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// A label for this run in the results.
    #[arg(long, default_value = "run")]
    label: String,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<String>,
    /// Only create `--topic` (6 partitions) and exit.
    #[arg(long)]
    create_topic: bool,
    /// Only delete every topic whose name starts with this prefix, and exit (a benchmark run's
    /// topics: they hold gigabytes).
    #[arg(long)]
    delete_topics: Option<String>,
}

/// A ~`size`-byte event for entity `n`, as JSON text. Written directly, not built as a value:
/// the load generator shares the machine with what it measures.
fn event(args: &Args, filler: &str, n: u64, seq: u64) -> String {
    let source = &args.sources[(n % args.sources.len() as u64) as usize];
    debug_assert!(!source.contains(['"', '\\']), "source names need no JSON escaping");
    format!(
        r#"{{"id":"lg-{n}","source":"{source}","payload":{{"seq":{seq},"title":"load generator event","status":"open","owner":"team-a","filler":"{filler}"}},"metadata":{{"sent_at_us":{}}}}}"#,
        now_us()
    )
}

/// The filler that brings an event to about `--event-size` bytes.
fn filler(args: &Args) -> String {
    "x".repeat(args.event_size.saturating_sub(160))
}

/// What the load generator reads of a published event: its sequence number.
#[derive(serde::Deserialize)]
struct Published {
    payload: PublishedPayload,
}

#[derive(serde::Deserialize)]
struct PublishedPayload {
    seq: u64,
}

/// What it reads of a batch answer.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    accepted: u64,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
}

/// CPU seconds (user+system) and peak RSS (VmHWM) of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu = (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()?;
    Some((cpu, hwm * 1024))
}

async fn run_http(args: &Args, counters: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>, sent_at: Arc<Mutex<HashMap<u64, u64>>>) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients).timeout(Duration::from_secs(30)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let seq = Arc::new(AtomicU64::new(0));
    let per_request = args.batch.max(1) as u64;
    // Open loop: request k is due at start + k / (rate / batch).
    let interval = args.rate.map(|r| Duration::from_secs_f64(per_request as f64 / r as f64));
    let next_slot = Arc::new(AtomicU64::new(0));
    let filler: Arc<str> = filler(args).into();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (http, args, counters, latency, sent_at, seq, next_slot, filler) =
            (http.clone(), args.clone(), counters.clone(), latency.clone(), sent_at.clone(), seq.clone(), next_slot.clone(), filler.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let intended = match interval {
                    Some(iv) => {
                        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                        let due = started + iv * slot as u32;
                        if due >= deadline {
                            return;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => {
                        if Instant::now() >= deadline {
                            return;
                        }
                        Instant::now()
                    }
                };
                let first = seq.fetch_add(per_request, Ordering::Relaxed);
                let seqs = first..first + per_request;
                let events: Vec<String> = seqs.clone().map(|s| event(&args, &filler, s % args.entities, s)).collect();
                if args.e2e_topic.is_some() {
                    let mut map = sent_at.lock().unwrap();
                    let now = now_us();
                    for s in seqs {
                        map.insert(s, now);
                    }
                }
                counters.sent.fetch_add(per_request, Ordering::Relaxed);
                let request = if per_request == 1 {
                    http.post(format!("{}/ingest", args.url)).body(events.into_iter().next().unwrap_or_default())
                } else {
                    http.post(format!("{}/ingest/batch", args.url)).body(format!("[{}]", events.join(",")))
                };
                let request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
                let ok = match request.bearer_auth(&args.token).send().await {
                    // A single event: any 2xx is an acknowledgement (metastream answers 202; a
                    // Redpanda Connect http_server answers 200 once its output acknowledged).
                    Ok(r) if r.status().is_success() && per_request == 1 => 1,
                    Ok(r) if r.status().as_u16() == 200 => r.json::<BatchAnswer>().await.map_or(0, |b| b.accepted),
                    _ => 0,
                };
                counters.acked.fetch_add(ok, Ordering::Relaxed);
                counters.failed.fetch_add(per_request - ok, Ordering::Relaxed);
                let us = intended.elapsed().as_micros() as u64;
                let _ = latency.lock().unwrap().record(us.max(1));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn run_kafka_produce(args: &Args, counters: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>) -> anyhow::Result<()> {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let payload = event(args, &filler(args), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (producer, counters, latency, payload, topic, rate) =
            (producer.clone(), counters.clone(), latency.clone(), payload.clone(), args.topic.clone(), args.rate);
        tasks.push(tokio::spawn(async move {
            let interval = rate.map(|r| Duration::from_secs_f64(1.0 / (r as f64 / 1.0)));
            let started = Instant::now();
            let mut k: u64 = c as u64;
            // Each client keeps a window of sends in flight, as an async producer would.
            let mut inflight = futures_util::stream::FuturesUnordered::new();
            use futures_util::StreamExt as _;
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(iv) = interval {
                    let due = started + iv * k as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let key = format!("k{}", k % 10_000);
                let p = producer.clone();
                let payload = payload.clone();
                let topic = topic.clone();
                let t0 = Instant::now();
                counters.sent.fetch_add(1, Ordering::Relaxed);
                inflight.push(async move {
                    let r = p.send(FutureRecord::to(&topic).key(&key).payload(&payload), Timeout::Never).await;
                    (r.is_ok(), t0.elapsed())
                });
                k += 1;
                while inflight.len() >= 256 {
                    if let Some((ok, d)) = inflight.next().await {
                        record(&counters, &latency, ok, d);
                    }
                }
            }
            while let Some((ok, d)) = inflight.next().await {
                record(&counters, &latency, ok, d);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn record(counters: &Counters, latency: &Mutex<Histogram<u64>>, ok: bool, d: Duration) {
    if ok {
        counters.acked.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    let _ = latency.lock().unwrap().record((d.as_micros() as u64).max(1));
}

/// Consumes `topic` from its end, recording for each message (matched by the key in `sent_at`,
/// or by the embedded send time) how long after sending it arrived.
async fn consume_latency(
    kafka: String,
    topic: String,
    sent_at: Option<Arc<Mutex<HashMap<u64, u64>>>>,
    hist: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    stop: tokio_util_stop::Stop,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("group.id", format!("loadgen-{}", now_us()))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[&topic])?;
    // Wait for the assignment before the load starts.
    let _ = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await;
    stop.ready();
    loop {
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            m = consumer.recv() => {
                let Ok(m) = m else { continue };
                let now = now_us();
                let sent = match &sent_at {
                    Some(map) => m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Published>(p).ok())
                        .and_then(|e| map.lock().unwrap().remove(&e.payload.seq)),
                    None => m.payload().and_then(|p| std::str::from_utf8(p).ok()?.split_whitespace().next()?.parse().ok()),
                };
                if let Some(sent) = sent {
                    let _ = hist.lock().unwrap().record(now.saturating_sub(sent).max(1));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A tiny stop/ready signal for the consumer task.
mod tokio_util_stop {
    use std::sync::Arc;

    use tokio::sync::Notify;

    #[derive(Clone, Default)]
    pub struct Stop {
        stop: Arc<Notify>,
        ready: Arc<Notify>,
    }

    impl Stop {
        pub async fn wait(&self) {
            self.stop.notified().await
        }
        pub fn stop(&self) {
            self.stop.notify_waiters();
            self.stop.notify_one();
        }
        pub fn ready(&self) {
            self.ready.notify_one();
        }
        pub async fn wait_ready(&self) {
            self.ready.notified().await
        }
    }
}

async fn run_roundtrip(args: &Args, e2e: Arc<Mutex<Histogram<u64>>>, received: Arc<AtomicU64>, counters: Arc<Counters>) -> anyhow::Result<()> {
    let stop = tokio_util_stop::Stop::default();
    let consumer = tokio::spawn(consume_latency(args.kafka.clone(), args.topic.clone(), None, e2e, received, stop.clone()));
    stop.wait_ready().await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let rate = args.rate.unwrap_or(1000).max(1);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let filler = "x".repeat(args.event_size.saturating_sub(20));
    let mut k = 0u64;
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt as _;
    while Instant::now() < deadline {
        tokio::time::sleep_until((started + interval * k as u32).into()).await;
        let payload = format!("{} {filler}", now_us());
        let p = producer.clone();
        let topic = args.topic.clone();
        counters.sent.fetch_add(1, Ordering::Relaxed);
        inflight.push(async move { p.send(FutureRecord::<str, _>::to(&topic).payload(&payload), Timeout::Never).await.is_ok() });
        while let Some(Some(ok)) = futures_util::FutureExt::now_or_never(inflight.next()) {
            if ok {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
        k += 1;
    }
    while let Some(ok) = inflight.next().await {
        if ok {
            counters.acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.stop();
    let _ = consumer.await;
    Ok(())
}

/// Deletes every topic whose name starts with `prefix`; prints how many.
async fn delete_topics(kafka: &str, prefix: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    anyhow::ensure!(!prefix.is_empty(), "--delete-topics needs a non-empty prefix");
    let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", kafka).create()?;
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).filter(|n| n.starts_with(prefix)).collect();
    if !names.is_empty() {
        for result in admin.delete_topics(&names, &AdminOptions::new()).await? {
            if let Err((topic, code)) = result {
                eprintln!("deleting {topic}: {code}");
            }
        }
    }
    println!("deleted {} topics starting with {prefix}", names.len());
    Ok(())
}

/// Creates the raw modes' topic (6 partitions, like the pipeline's) if it does not exist.
async fn ensure_topic(kafka: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", kafka).create()?;
    let results = admin
        .create_topics(&[NewTopic::new(topic, 6, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await?;
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                anyhow::bail!("creating {t}: {code}");
            }
        }
    }
    Ok(())
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let e2e = Arc::new(Mutex::new(histogram()));
    let received = Arc::new(AtomicU64::new(0));
    let sent_at: Arc<Mutex<HashMap<u64, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let pids: Vec<(String, u32)> = args
        .pids
        .iter()
        .filter_map(|p| p.split_once('=').and_then(|(n, pid)| Some((n.to_owned(), pid.parse().ok()?))))
        .collect();
    let before: HashMap<String, (f64, u64)> = pids.iter().filter_map(|(n, pid)| Some((n.clone(), proc_usage(*pid)?))).collect();

    // Progress, every second.
    let progress = {
        let counters = counters.clone();
        let received = received.clone();
        let label = args.label.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let acked = counters.acked.load(Ordering::Relaxed);
                eprintln!(
                    "  [{label}] {:>4.0}s  acked {acked:>9}  ({:>8}/s)  failed {}  e2e received {}",
                    started.elapsed().as_secs_f64(),
                    acked - last,
                    counters.failed.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed)
                );
                last = acked;
            }
        })
    };

    if let Some(prefix) = &args.delete_topics {
        return delete_topics(&args.kafka, prefix).await;
    }
    if args.mode != Mode::Http || args.create_topic {
        ensure_topic(&args.kafka, &args.topic).await?;
        if args.create_topic {
            return Ok(());
        }
    }
    let started = Instant::now();
    // Events that reached the output topic while the load ran (not while it drained after).
    let in_window = AtomicU64::new(0);
    match args.mode {
        Mode::Http => {
            let consumer = if let Some(topic) = args.e2e_topic.clone() {
                let stop = tokio_util_stop::Stop::default();
                let task = tokio::spawn(consume_latency(args.kafka.clone(), topic, Some(sent_at.clone()), e2e.clone(), received.clone(), stop.clone()));
                stop.wait_ready().await;
                Some((stop, task))
            } else {
                None
            };
            run_http(&args, counters.clone(), latency.clone(), sent_at.clone()).await;
            in_window.store(received.load(Ordering::Relaxed), Ordering::Relaxed);
            if let Some((stop, task)) = consumer {
                // Let the pipeline drain what was acknowledged.
                let acked = counters.acked.load(Ordering::Relaxed);
                let wait = Instant::now();
                while received.load(Ordering::Relaxed) < acked && wait.elapsed() < Duration::from_secs(60) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                stop.stop();
                let _ = task.await;
            }
        }
        Mode::KafkaProduce => run_kafka_produce(&args, counters.clone(), latency.clone()).await.context("raw producer")?,
        Mode::KafkaRoundtrip => run_roundtrip(&args, e2e.clone(), received.clone(), counters.clone()).await?,
    }
    let elapsed = started.elapsed().as_secs_f64().min(args.seconds as f64).max(0.001);
    progress.abort();

    let acked = counters.acked.load(Ordering::Relaxed);
    let lat = latency.lock().unwrap();
    let e2e = e2e.lock().unwrap();
    let mut processes = serde_json::Map::new();
    for (name, pid) in &pids {
        if let (Some((cpu0, _)), Some((cpu1, hwm))) = (before.get(name), proc_usage(*pid)) {
            let per_million = if acked > 0 { (cpu1 - cpu0) / acked as f64 * 1e6 } else { 0.0 };
            processes.insert(name.clone(), json!({"cpu_s_per_million": per_million, "peak_rss_mib": hwm as f64 / 1048576.0}));
        }
    }
    let result = json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode),
        "batch": args.batch,
        "clients": args.clients,
        "rate": args.rate,
        "event_size": args.event_size,
        "seconds": elapsed,
        "acked": acked,
        "failed": counters.failed.load(Ordering::Relaxed),
        "events_per_s": acked as f64 / elapsed,
        "delivered_in_window": in_window.load(Ordering::Relaxed),
        "delivered_per_s": in_window.load(Ordering::Relaxed) as f64 / elapsed,
        "request_latency_ms": {"p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "p999": pct(&lat, 0.999), "max": lat.max() as f64 / 1000.0},
        "e2e_latency_ms": if !e2e.is_empty() { json!({"count": e2e.len(), "p50": pct(&e2e, 0.5), "p99": pct(&e2e, 0.99), "p999": pct(&e2e, 0.999)}) } else { Value::Null },
        "processes": processes,
    });
    println!("{:<28} {:>12} {:>10} {:>10} {:>10} {:>12} {:>12}", "run", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "e2e p50 ms", "e2e p99 ms");
    println!(
        "{:<28} {:>12.0} {:>10.2} {:>10.2} {:>10.2} {:>12} {:>12}",
        args.label,
        acked as f64 / elapsed,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        if !e2e.is_empty() { format!("{:.2}", pct(&e2e, 0.5)) } else { "-".into() },
        if !e2e.is_empty() { format!("{:.2}", pct(&e2e, 0.99)) } else { "-".into() },
    );
    for (name, p) in &processes {
        println!("  {name:<24} cpu {:.1} s/M events, peak RSS {:.1} MiB", p["cpu_s_per_million"].as_f64().unwrap_or(0.0), p["peak_rss_mib"].as_f64().unwrap_or(0.0));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}
