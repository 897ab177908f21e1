//! The load: updates of many entities, each entity's updates in order, each retried with its
//! `Idempotency-Key` until the gateway acknowledges it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt as _};
use serde_json::{json, Value};

use crate::stack::{SOURCE, TOKEN};
use crate::Args;

pub struct Plan {
    pub entities: Vec<String>,
    pub updates: u64,
    pub poison: Vec<String>,
    /// Boundary events sent alongside the updates (the `boundary-mix` scenario).
    pub boundary: Vec<crate::boundary::Boundary>,
    /// At most one update per this interval, over all entities (`--spread`): a load that lasts
    /// through a slow fault, such as a rolling restart.
    pub interval: Option<Duration>,
}

/// The sources of the native mix (`crate::stack` configures them).
pub const GITHUB_SOURCE: &str = "faults-gh";
pub const LINEAGE_SOURCE: &str = "faults-ol";

/// How an entity's updates are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Envelope,
    Github(usize),
    Lineage(usize),
}

impl Kind {
    /// The kind of an entity of the plan, by its name.
    pub fn of(entity: &str) -> Kind {
        if let Some(n) = entity.strip_prefix("faults/repo#issue/") {
            Kind::Github(n.parse().unwrap_or(0))
        } else if let Some(n) = entity.strip_prefix("faults/job-") {
            Kind::Lineage(n.parse().unwrap_or(0))
        } else {
            Kind::Envelope
        }
    }

    /// The source its events are stored under.
    pub fn source(self) -> &'static str {
        match self {
            Kind::Envelope => SOURCE,
            Kind::Github(_) => GITHUB_SOURCE,
            Kind::Lineage(_) => LINEAGE_SOURCE,
        }
    }
}

impl Plan {
    /// With `native` (the `native-mix` scenarios), a third of the entities are GitHub issues
    /// (signed webhooks to `/hooks/faults-gh`), a third OpenLineage jobs (`/api/v1/lineage`), the
    /// rest envelopes ([`Kind`]).
    pub fn new(args: &Args, run_id: &str, native: bool) -> Plan {
        let entities = args.entities.max(1);
        let _ = run_id;
        let entity = |i: usize| match i % 3 {
            1 if native => format!("faults/repo#issue/{i}"),
            2 if native => format!("faults/job-{i}"),
            _ => format!("e{i}"),
        };
        Plan {
            entities: (0..entities).map(entity).collect(),
            updates: (args.events / entities).max(1) as u64,
            poison: (0..args.poison).map(|i| format!("poison-{i}")).collect(),
            boundary: Vec::new(),
            interval: None,
        }
    }

    pub fn total(&self) -> usize {
        self.entities.len() * self.updates as usize + self.poison.len() + self.boundary.iter().filter(|b| b.refused_with.is_none()).count()
    }
}

/// What the gateway acknowledged.
#[derive(Debug, Default)]
pub struct Acked {
    /// (entity, seq) of every acknowledged update.
    pub updates: HashSet<(String, u64)>,
    /// The last acknowledged seq of each entity.
    pub last: HashMap<String, u64>,
    pub poison: HashSet<String>,
    /// Boundary events the gateway accepted.
    pub boundary: HashSet<String>,
    /// Boundary events answered otherwise than expected: (id, what was expected, what came).
    pub boundary_wrong: Vec<(String, String, String)>,
}

#[derive(Default)]
pub struct Progress {
    acked: AtomicUsize,
    retries: AtomicUsize,
    done: AtomicBool,
    /// When the last acknowledgement came, and the longest time between two (ms since `epoch`).
    last_ack_ms: std::sync::atomic::AtomicU64,
    longest_gap_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// 503 answers, and those of them without a `Retry-After` (there must be none).
    pub unavailable: AtomicUsize,
    pub unavailable_without_retry_after: AtomicUsize,
    /// The longest any request took to be answered (or to fail), ms.
    slowest_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn acknowledged(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let last = self.last_ack_ms.swap(now, Ordering::Relaxed);
        if last > 0 {
            self.longest_gap_ms.fetch_max(now.saturating_sub(last), Ordering::Relaxed);
        }
    }

    /// The longest time the load went without an acknowledgement (time without acceptance).
    pub fn longest_gap(&self) -> Duration {
        Duration::from_millis(self.longest_gap_ms.load(Ordering::Relaxed))
    }

    /// The longest any request of the load was held.
    pub fn slowest(&self) -> Duration {
        Duration::from_millis(self.slowest_ms.load(Ordering::Relaxed))
    }

    fn answered(&self, started: Instant, status: Option<&reqwest::Response>) {
        self.slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if let Some(r) = status.filter(|r| r.status().as_u16() == 503) {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
            if !r.headers().contains_key("retry-after") {
                self.unavailable_without_retry_after.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub async fn wait_for(&self, n: usize) {
        while self.acked.load(Ordering::Relaxed) < n && !self.done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Prints progress every 2 s until the load is done.
    pub async fn report(&self, scenario: &str, total: usize, started: Instant) {
        // A line when the count moved, or every 10 s while it does not (a failure's diagnosis
        // follows these lines, and CI shows only so many).
        let mut last = (usize::MAX, Instant::now());
        while !self.done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let acked = self.acked.load(Ordering::Relaxed);
            if acked == last.0 && last.1.elapsed() < Duration::from_secs(10) {
                continue;
            }
            last = (acked, Instant::now());
            eprintln!(
                "   [{scenario}] {acked}/{total} acknowledged, {} retries, {:.0}s",
                self.retries.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Where the load goes: owned, so the scenario can restart services while the load runs.
#[derive(Clone)]
pub struct Target {
    pub http: reqwest::Client,
    pub gateway_url: String,
    pub run_id: String,
    /// The secret GitHub deliveries of the native mix are signed with.
    pub github_secret: String,
}

/// Update `seq` of `entity` as its kind's sender sends it: the request, built again for each
/// retry with the same delivery id.
fn update(stack: &Target, entity: &str, seq: u64) -> reqwest::RequestBuilder {
    let key = format!("{}:{entity}:{seq}", stack.run_id);
    match Kind::of(entity) {
        Kind::Envelope => {
            let body = json!({"id": entity, "source": SOURCE, "payload": {"seq": seq, "n": seq}});
            stack.http.post(format!("{}/ingest", stack.gateway_url)).bearer_auth(TOKEN).header("Idempotency-Key", key).json(&body)
        }
        Kind::Github(n) => {
            let body = json!({"action": "edited", "issue": {"number": n}, "repository": {"full_name": "faults/repo"}, "seq": seq, "n": seq}).to_string();
            stack
                .http
                .post(format!("{}/hooks/{GITHUB_SOURCE}", stack.gateway_url))
                .header("content-type", "application/json")
                .header("x-github-event", "issues")
                .header("x-github-delivery", key)
                .header("x-hub-signature-256", domain::native::hub_signature(stack.github_secret.as_bytes(), body.as_bytes()))
                .body(body)
        }
        Kind::Lineage(n) => {
            // A run's RUNNING events, told apart by their time (the idempotency key's part).
            let body = json!({
                "eventType": "RUNNING", "eventTime": format!("2026-01-01T00:00:00.{seq:09}Z"),
                "run": {"runId": format!("{}-run-{n}", stack.run_id)}, "job": {"namespace": "faults", "name": format!("job-{n}")},
                "inputs": [], "outputs": [], "producer": "metastream-faults", "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
                "seq": seq, "n": seq,
            });
            stack.http.post(format!("{}/api/v1/lineage?source={LINEAGE_SOURCE}", stack.gateway_url)).bearer_auth(TOKEN).json(&body)
        }
    }
}

/// Sends one event until acknowledged (up to two minutes of retries).
async fn send(request: impl Fn() -> reqwest::RequestBuilder, key: &str, progress: &Progress) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let sent = Instant::now();
        let result = request().send().await;
        progress.answered(sent, result.as_ref().ok());
        match result {
            Ok(r) if r.status().as_u16() == 202 => {
                progress.acknowledged();
                return true;
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 409 => {
                eprintln!("   refused {key}: {} {}", r.status(), r.text().await.unwrap_or_default());
                return false;
            }
            // 503, 409 (the first try is still in flight), connection refused or reset.
            _ => {
                progress.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    false
}

/// Sends each boundary event once (a 202 or the expected refusal), spread over the first part
/// of the load, and records what the gateway answered.
async fn send_boundary(plan: &Plan, stack: &Target, progress: &Progress, acked: &Mutex<Acked>) {
    for b in &plan.boundary {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let expected = b.refused_with.map_or_else(|| "202".to_owned(), |s| s.to_string());
        let key = format!("{}:{}", stack.run_id, b.id);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = stack.http.post(format!("{}/ingest", stack.gateway_url)).bearer_auth(TOKEN).header("Idempotency-Key", &key).json(&b.body).send().await;
            let status = match r {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            // Transient answers (503, 409 while a first try is in flight, no connection) are
            // retried; anything else is the answer.
            if matches!(status, 0 | 409 | 503) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let mut a = acked.lock().unwrap();
            if status == 202 {
                progress.acknowledged();
                a.boundary.insert(b.id.clone());
            }
            if status.to_string() != expected {
                a.boundary_wrong.push((b.id.clone(), expected, status.to_string()));
            }
            break;
        }
    }
}

/// Drives the plan; returns what was acknowledged.
pub async fn drive(plan: &Plan, stack: &Target, concurrency: usize, progress: &Progress) -> anyhow::Result<Acked> {
    let acked = Mutex::new(Acked::default());
    let boundary = send_boundary(plan, stack, progress, &acked);
    let next_slot = Mutex::new(Instant::now());
    let updates = stream::iter(plan.entities.iter())
        .for_each_concurrent(concurrency, |entity| {
            let (acked, next_slot) = (&acked, &next_slot);
            async move {
                for seq in 1..=plan.updates {
                    if let Some(interval) = plan.interval {
                        let at = {
                            let mut next = next_slot.lock().unwrap();
                            let at = (*next).max(Instant::now());
                            *next = at + interval;
                            at
                        };
                        tokio::time::sleep_until(at.into()).await;
                    }
                    if !send(|| update(stack, entity, seq), &format!("{}:{entity}:{seq}", stack.run_id), progress).await {
                        // Later updates would overtake this one: stop the entity here.
                        return;
                    }
                    let mut a = acked.lock().unwrap();
                    a.updates.insert((entity.clone(), seq));
                    a.last.insert(entity.clone(), seq);
                }
            }
        });
    tokio::join!(boundary, updates);
    stream::iter(plan.poison.iter())
        .for_each_concurrent(concurrency, |id| {
            let acked = &acked;
            async move {
                let body = json!({"id": id, "source": SOURCE, "payload": {"n": "poison"}});
                let key = format!("{}:{id}", stack.run_id);
                let request = || stack.http.post(format!("{}/ingest", stack.gateway_url)).bearer_auth(TOKEN).header("Idempotency-Key", &key).json(&body);
                if send(request, &key, progress).await {
                    acked.lock().unwrap().poison.insert(id.clone());
                }
            }
        })
        .await;
    progress.done.store(true, Ordering::Relaxed);
    Ok(acked.into_inner().unwrap())
}

/// A downstream client reading `/consume` throughout the scenario, through each of `bases` in
/// turn (replicas behind a round-robin).
pub struct Reader {
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

/// The updates a reader got: entity and sequence number.
type Seen = Arc<Mutex<HashSet<(String, u64)>>>;

/// Notes an event a reader got.
fn note(seen: &Seen, event: &Value) {
    if let (Some(entity), Some(seq)) = (event["id"].as_str(), event["payload"]["seq"].as_u64()) {
        seen.lock().unwrap().insert((entity.to_owned(), seq));
    }
}

/// The answer to `request` when it is a success; else (unreachable, or an error status) `None`,
/// after a pause, for the reader to go on to the next base.
async fn success(request: reqwest::RequestBuilder) -> Option<reqwest::Response> {
    match request.send().await {
        Ok(r) if r.status().is_success() => Some(r),
        _ => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            None
        }
    }
}

impl Reader {
    /// Runs `read` as the reader's task, noting what it gets in the reader's [`Seen`].
    fn reading<F: std::future::Future<Output = ()> + Send + 'static>(read: impl FnOnce(Seen) -> F) -> Reader {
        let seen = Seen::default();
        let task = tokio::spawn(read(seen.clone()));
        Reader { seen, task }
    }

    pub fn spawn(bases: Vec<String>) -> Reader {
        Reader::reading(|into| async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            // Every call acknowledges, by its cursor, the last answer that arrived whole. Without
            // a cursor the next call would acknowledge the previous answer even if it never
            // arrived (a connection reset mid-answer: `net-slow-consumer-api` lost hundreds that
            // way); with it, an answer lost in transit is handed out again after
            // `consumer_api.ack_timeout_ms`.
            let mut cursor: Option<String> = None;
            for base in bases.iter().cycle() {
                let mut query = vec![("group", "faults-reader".to_owned()), ("max", "1000".into()), ("wait_ms", "500".into())];
                query.extend(cursor.clone().map(|c| ("cursor", c)));
                let Some(r) = success(http.get(format!("{base}/consume")).query(&query).bearer_auth(TOKEN)).await else { continue };
                let Ok(body) = r.json::<Value>().await else { continue };
                if let Some(c) = body["cursor"].as_str() {
                    cursor = Some(c.to_owned());
                }
                for item in body["events"].as_array().into_iter().flatten() {
                    note(&into, &item["event"]);
                }
            }
        })
    }

    /// An SSE reader of `/stream` (group `faults-stream`) through `bases` in turn: whenever its
    /// connection ends (reset, cut, a replica gone) it reconnects to the next one with the
    /// `Last-Event-ID` it last got, as an `EventSource` does.
    pub fn spawn_stream(bases: Vec<String>) -> Reader {
        Reader::reading(|into| async move {
            let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap();
            let mut last_event_id: Option<String> = None;
            for base in bases.iter().cycle() {
                let mut request = http.get(format!("{base}/stream?group=faults-stream")).bearer_auth(TOKEN);
                if let Some(id) = &last_event_id {
                    request = request.header("Last-Event-ID", id);
                }
                let Some(mut response) = success(request).await else { continue };
                let mut buffer = String::new();
                // A stream silent for 15 s (no event, no keep-alive) is taken as dead.
                while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(15), response.chunk()).await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        let (mut id, mut data) = (None, None);
                        for line in block.lines() {
                            id = line.strip_prefix("id: ").map(str::to_owned).or(id);
                            data = line.strip_prefix("data: ").and_then(|v| serde_json::from_str::<Value>(v).ok()).or(data);
                        }
                        if let Some(d) = &data {
                            note(&into, &d["event"]);
                        }
                        last_event_id = id.or(last_event_id);
                    }
                }
            }
        })
    }

    /// Waits until the reader has every acknowledged update or `within` passes; returns how
    /// many it never got.
    pub async fn finish(self, acked: &Acked, within: Duration) -> usize {
        let started = Instant::now();
        let missing = || acked.updates.iter().filter(|u| !self.seen.lock().unwrap().contains(*u)).count();
        while missing() > 0 && started.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let n = missing();
        self.task.abort();
        n
    }
}
