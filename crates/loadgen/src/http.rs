//! The `http` mode: events through the gateway, single or batched, closed or open loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::args::{event, filler, Args};
use crate::report::{now_us, Counters};

/// What it reads of a batch answer.
#[derive(serde::Deserialize)]
pub struct BatchAnswer {
    pub accepted: u64,
}

pub async fn run_http(args: &Args, counters: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>, sent_at: Arc<Mutex<HashMap<u64, u64>>>) {
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
                        let late = Instant::now().saturating_duration_since(due).as_micros() as u64;
                        counters.max_late_us.fetch_max(late, Ordering::Relaxed);
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

/// `http-consume`: one client calling `GET /consume?group=<new>&max=<consume_max>&from=earliest`
/// back to back (each call acknowledges the previous answer), counting events until
/// `--max-events` or `--seconds`; each call's latency recorded. Returns the time it read for.
pub async fn run_http_consume(args: &Args, counters: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let group = format!("loadgen-{}", now_us());
    let url = format!("{}/consume?group={group}&max={}&wait_ms=1000&from=earliest", args.url.trim_end_matches('/'), args.consume_max);
    let max = args.max_events.unwrap_or(u64::MAX);
    let deadline = Duration::from_secs(args.seconds);
    // Timed from the end of the first answer with events (which also opened the group and
    // fetched from the broker for the first time): steady reading, as the raw consumer is timed
    // from its first message.
    let mut first = None;
    while first.is_none() {
        let answer = call(&http, &url, &args.token, None).await?;
        first = (answer.count > 0).then_some(answer.cursor);
    }
    let started = Instant::now();
    let read = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..args.consume_clients.max(1) {
        let (http, url, token, read, counters, latency) = (http.clone(), url.clone(), args.token.clone(), read.clone(), counters.clone(), latency.clone());
        // The first caller acknowledges the first answer.
        let mut cursor = if i == 0 { first.clone().flatten() } else { None };
        callers.spawn(async move {
            let mut empty = 0;
            while read.load(Ordering::Relaxed) < max && started.elapsed() < deadline {
                let t0 = Instant::now();
                let answer = call(&http, &url, &token, cursor.as_deref()).await?;
                if answer.count == 0 {
                    // Nothing for this call: the topic's end — or, with two callers, the other
                    // held the group for this call's whole wait. Three in a row is the end.
                    empty += 1;
                    if empty == 3 {
                        break;
                    }
                    continue;
                }
                empty = 0;
                let _ = latency.lock().unwrap().record((t0.elapsed().as_micros() as u64).max(1));
                read.fetch_add(answer.count, Ordering::Relaxed);
                counters.acked.fetch_add(answer.count, Ordering::Relaxed);
                cursor = answer.cursor;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// What the load generator reads of a `/consume` answer.
#[derive(serde::Deserialize)]
struct ConsumeHead {
    count: u64,
    cursor: Option<String>,
}

/// One `GET /consume`, acknowledging `cursor` when given. Only the answer's head is parsed
/// (`count` and `cursor` come before `events`), as the raw consumer only takes each payload's
/// length: both measure delivery, not the reader's JSON parsing.
async fn call(http: &reqwest::Client, url: &str, token: &str, cursor: Option<&str>) -> anyhow::Result<ConsumeHead> {
    let url = match cursor {
        Some(c) => format!("{url}&cursor={c}"),
        None => url.to_owned(),
    };
    let r = http.get(&url).bearer_auth(token).send().await?;
    anyhow::ensure!(r.status().is_success(), "GET /consume answered {}", r.status());
    let body = r.bytes().await?;
    const EVENTS: &[u8] = b",\"events\":[";
    let head = body.windows(EVENTS.len()).position(|w| w == EVENTS).map(|at| [&body[..at], b"}"].concat());
    Ok(match head {
        Some(head) => serde_json::from_slice(&head)?,
        None => serde_json::from_slice(&body)?,
    })
}
