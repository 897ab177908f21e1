//! What a scenario proves, read from Kafka and Redis directly.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use deadpool_redis::redis::AsyncCommands as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use serde_json::Value;

use crate::load::{Acked, Plan};
use crate::stack::Stack;
use crate::Outcome;

/// Where a read of a topic stands after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Something required is still missing: wait up to the long idle window.
    Wanting,
    /// Everything required is there; what may still come (events that can end on this topic
    /// or another) gets the short window.
    Settling,
    /// Everything is there.
    Done,
}

/// How long a read waits for the next message while something required is missing, and once
/// only optional messages may still come.
#[derive(Debug, Clone, Copy)]
struct Idle {
    wanting: Duration,
    settling: Duration,
}

/// Reads a topic from the start until `take` says it is done, or nothing came for the idle
/// window its last answer allows.
async fn read_topic(stack: &Stack, topic: &str, idle: Idle, mut take: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Read) -> anyhow::Result<()> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka)
        .set("group.id", format!("{topic}.check-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut state = Read::Wanting;
    while Instant::now() < deadline {
        let window = if state == Read::Settling { idle.settling } else { idle.wanting };
        match tokio::time::timeout(window, consumer.recv()).await {
            Ok(Ok(m)) => {
                state = take(&m);
                if state == Read::Done {
                    return Ok(());
                }
            }
            Ok(Err(err)) => eprintln!("   reading {topic}: {err}"),
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

pub async fn verify(stack: &Stack, plan: &Plan, acked: &Acked) -> anyhow::Result<Outcome> {
    // Output topic: every acknowledged update, in order per entity.
    let mut first_seen: HashSet<(String, u64)> = HashSet::new();
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut out_of_order_entities: HashSet<String> = HashSet::new();
    let mut delivered = 0usize;
    let mut boundary_seen: HashSet<String> = HashSet::new();
    let want = acked.updates.len();
    // Reading stops as soon as every acknowledged update is there; the idle window only decides
    // how long a stalled pipeline gets to resume. After a broker restart the stages wait out
    // session and transaction timeouts, and their redo, before output flows again (up to ~30 s
    // here): a 20 s window reported such a run as losing what was merely late. A stage whose
    // thread a hung Kafka call blocks gives up after 120 s (adapters::watchdog) and is started
    // again by the suite's supervisor: the window covers that too.
    // Boundary events may end on the output or the dead-letter topic: once every update is
    // there, those still unseen get the short window here and are looked for in dead letters.
    let output_idle = Idle { wanting: Duration::from_secs(180), settling: Duration::from_secs(10) };
    let mut updates_seen = 0usize;
    // When each update was first published (the output record's timestamp), for the longest
    // time nothing was delivered.
    let mut published_ms: Vec<i64> = Vec::with_capacity(want);
    read_topic(stack, &stack.output_topic, output_idle, |m| {
        let progress = |updates_seen: usize, boundary_seen: &HashSet<String>| {
            if updates_seen < want {
                Read::Wanting
            } else if acked.boundary.iter().all(|id| boundary_seen.contains(id)) {
                Read::Done
            } else {
                Read::Settling
            }
        };
        let id = m.headers().and_then(|h| h.iter().find(|h| h.key == domain_event_id()).and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned())));
        if let Some(id) = id.filter(|id| acked.boundary.contains(id)) {
            boundary_seen.insert(id);
            return progress(updates_seen, &boundary_seen);
        }
        let Some(event) = m.payload().and_then(|p| serde_json::from_slice::<Value>(p).ok()) else { return progress(updates_seen, &boundary_seen) };
        let (Some(id), Some(seq)) = (event["id"].as_str(), event["payload"]["seq"].as_u64()) else { return progress(updates_seen, &boundary_seen) };
        delivered += 1;
        if first_seen.insert((id.to_owned(), seq)) {
            let top = highest.entry(id.to_owned()).or_insert(0);
            if seq < *top {
                out_of_order_entities.insert(id.to_owned());
            }
            *top = (*top).max(seq);
            if acked.updates.contains(&(id.to_owned(), seq)) {
                updates_seen += 1;
                published_ms.extend(m.timestamp().to_millis());
            }
        }
        progress(updates_seen, &boundary_seen)
    })
    .await?;
    let lost = Some(acked.updates.iter().filter(|u| !first_seen.contains(*u)).count());

    // The store: each entity's record is its last acknowledged update.
    let pool = stack.redis_ready().await?;
    let mut conn = pool.get().await?;
    let mut stale_store = 0;
    let entities: Vec<(&String, &u64)> = acked.last.iter().collect();
    for chunk in entities.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|(e, _)| format!("{}processed:{{{}:{e}}}", stack.key_prefix, crate::load::Kind::of(e).source())).collect();
        let values: Vec<Option<String>> = conn.mget(&keys).await?;
        for ((_, last), value) in chunk.iter().zip(values) {
            let seq = value.and_then(|v| serde_json::from_str::<Value>(&v).ok()).and_then(|v| v["payload"]["seq"].as_u64());
            if seq != Some(**last) {
                stale_store += 1;
            }
        }
    }

    // The dead-letter topic: exactly the poison events.
    let mut dead: HashSet<String> = HashSet::new();
    let poison_wanted = acked.poison.len();
    read_topic(stack, &stack.dead_letter_topic, Idle { wanting: Duration::from_secs(10), settling: Duration::from_secs(10) }, |m| {
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == domain_event_id()).and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned())));
        if let Some(id) = id {
            if acked.boundary.contains(&id) {
                boundary_seen.insert(id);
            } else {
                dead.insert(id);
            }
        }
        if dead.len() >= poison_wanted && boundary_seen.len() >= acked.boundary.len() {
            Read::Done
        } else {
            Read::Wanting
        }
    })
    .await?;
    let unexpected = dead.iter().filter(|id| !plan.poison.contains(id)).count();
    let boundary_unaccounted = acked.boundary.iter().filter(|id| !boundary_seen.contains(*id)).count();
    for (id, expected, got) in &acked.boundary_wrong {
        eprintln!("   boundary event {id}: expected {expected}, got {got}");
    }
    for id in acked.boundary.iter().filter(|id| !boundary_seen.contains(*id)) {
        eprintln!("   boundary event {id} accepted but on neither the output nor the dead-letter topic");
    }

    Ok(Outcome {
        acknowledged: acked.updates.len() + acked.poison.len(),
        delivered,
        lost,
        duplicates: delivered - first_seen.len(),
        out_of_order: out_of_order_entities.len(),
        stale_store,
        dead_letters: dead.len() - unexpected,
        unexpected_dead_letters: unexpected,
        poison: acked.poison.len(),
        boundary_accepted: acked.boundary.len(),
        boundary_unaccounted,
        boundary_wrong_answer: acked.boundary_wrong.len(),
        delivery_gap: longest_gap(published_ms),
        ..Default::default()
    })
}

/// The longest interval between two consecutive times (ms), as a duration.
fn longest_gap(mut times_ms: Vec<i64>) -> Option<Duration> {
    times_ms.sort_unstable();
    times_ms.windows(2).map(|w| w[1] - w[0]).max().map(|ms| Duration::from_millis(ms.max(0) as u64))
}

fn domain_event_id() -> &'static str {
    "metastream-event-id"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_is_between_neighbours_in_time_whatever_the_order_read() {
        assert_eq!(longest_gap(vec![5_000, 1_000, 1_200, 9_000]), Some(Duration::from_millis(4_000)));
        assert_eq!(longest_gap(vec![7]), None);
    }
}
