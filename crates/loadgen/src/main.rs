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
//! - `kafka-consume` / `http-consume`: read a topic from the start with a raw consumer, or
//!   through `GET /consume` (`max=1000`), up to `--max-events`: what the consumer-api costs over
//!   reading Kafka directly.
//! - `kafka-transform`: a raw consume → produce loop in Kafka transactions (`--topic` to
//!   `--to-topic`, `--transaction-events` per transaction, offsets committed with each), no Redis
//!   and no operations: the floor under a transformer's CPU per event (its own, as `loadgen`).
//!
//! It prints progress every second, a table at the end, and writes JSON results (`--json`).
//! With `--pid name=PID` (repeatable) it reports each process's CPU seconds per million events
//! and peak RSS (from /proc); its own always, as `loadgen` (it shares the machine with what it
//! measures: the report shows its part of the CPU).

mod args;
mod http;
mod kafka;
mod report;
mod transform;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Mode};
use crate::kafka::{consume_latency, delete_topics, ensure_topic, latency_consumer, run_kafka_consume, run_kafka_produce, run_roundtrip};
use crate::report::{histogram, pct, proc_usage, Counters};

/// The load generator shares the machine with what it measures: it should cost little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let e2e = Arc::new(Mutex::new(histogram()));
    let hops = Arc::new(Mutex::new(crate::kafka::Hops::new()));
    let worst = Arc::new(Mutex::new(crate::kafka::WorstBySecond::new()));
    let received = Arc::new(AtomicU64::new(0));
    let sent_at: Arc<Mutex<HashMap<u64, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let pids: Vec<(String, u32)> = args
        .pids
        .iter()
        .filter_map(|p| p.split_once('=').and_then(|(n, pid)| Some((n.to_owned(), pid.parse().ok()?))))
        .chain([("loadgen".to_owned(), std::process::id())])
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
    if matches!(args.mode, Mode::KafkaProduce | Mode::KafkaRoundtrip) || args.create_topic {
        ensure_topic(&args.kafka, &args.topic).await?;
        if args.create_topic {
            return Ok(());
        }
    }
    if let (Mode::KafkaTransform, Some(to)) = (args.mode, &args.to_topic) {
        ensure_topic(&args.kafka, to).await?;
    }
    let started = Instant::now();
    // Events that reached the output topic while the load ran (not while it drained after).
    let in_window = AtomicU64::new(0);
    // The consume modes time their own reading (from the first event), not the set-up.
    let mut read_for = None;
    let mut send_time = None;
    match args.mode {
        Mode::Http => {
            let consumer = match &args.e2e_topic {
                Some(topic) => {
                    let stop = CancellationToken::new();
                    let consumer = latency_consumer(&args.kafka, topic).await?;
                    Some((stop.clone(), tokio::spawn(consume_latency(consumer, Some(sent_at.clone()), e2e.clone(), worst.clone(), Some(hops.clone()), received.clone(), stop))))
                }
                None => None,
            };
            let sending = Instant::now();
            http::run_http(&args, counters.clone(), latency.clone(), sent_at.clone()).await;
            send_time = Some(sending.elapsed());
            in_window.store(received.load(Ordering::Relaxed), Ordering::Relaxed);
            if let Some((stop, task)) = consumer {
                // Let the pipeline drain what was acknowledged.
                let acked = counters.acked.load(Ordering::Relaxed);
                let wait = Instant::now();
                while received.load(Ordering::Relaxed) < acked && wait.elapsed() < Duration::from_secs(60) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                stop.cancel();
                let _ = task.await;
            }
        }
        Mode::KafkaProduce => run_kafka_produce(&args, counters.clone(), latency.clone()).await.context("raw producer")?,
        Mode::KafkaRoundtrip => run_roundtrip(&args, e2e.clone(), worst.clone(), received.clone(), counters.clone()).await?,
        Mode::KafkaConsume => read_for = Some(run_kafka_consume(&args, counters.clone()).await.context("raw consumer")?),
        Mode::HttpConsume => read_for = Some(http::run_http_consume(&args, counters.clone(), latency.clone()).await.context("GET /consume")?),
        Mode::KafkaTransform => {
            read_for = Some(transform::run_kafka_transform(&args, counters.clone(), latency.clone()).await.context("consume → produce in transactions")?)
        }
    }
    // The time the sending really took: an open-loop run that fell behind its schedule sent its
    // last requests after `--seconds`, and dividing by `--seconds` would report a rate never
    // reached. (In-window deliveries were counted when the sending ended, so they share it.)
    let elapsed = match read_for {
        Some(d) => d.as_secs_f64().max(0.001),
        None => send_time.unwrap_or_else(|| started.elapsed()).as_secs_f64().max(0.001),
    };
    progress.abort();

    let acked = counters.acked.load(Ordering::Relaxed);
    let lat = latency.lock().unwrap();
    let e2e = e2e.lock().unwrap();
    let hops = hops.lock().unwrap();
    let hops_json: serde_json::Map<String, Value> = crate::kafka::Hops::NAMES
        .iter()
        .zip(&hops.0)
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| ((*name).to_owned(), json!({"p50": pct(h, 0.5), "p99": pct(h, 0.99)})))
        .collect();
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
        "send_late_ms": counters.max_late_us.load(Ordering::Relaxed) as f64 / 1000.0,
        "request_latency_ms": {"p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "p999": pct(&lat, 0.999), "max": lat.max() as f64 / 1000.0},
        "e2e_latency_ms": if !e2e.is_empty() { json!({"count": e2e.len(), "p50": pct(&e2e, 0.5), "p99": pct(&e2e, 0.99), "p999": pct(&e2e, 0.999)}) } else { Value::Null },
        "e2e_worst_by_second_ms": if e2e.is_empty() { Value::Null } else { json!(worst.lock().unwrap().millis()) },
        "e2e_hops_ms": if hops_json.is_empty() { Value::Null } else { Value::Object(hops_json) },
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
