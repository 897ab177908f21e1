//! Exactly once to the output topic: a `read_committed` reader of the output sees each
//! acknowledged update once, through crashes of a transformer and a client's retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::schema::headers;
use futures_util::stream::{self, StreamExt as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::json;

use crate::harness::{start_post, start_pre, Stack};

/// How many times each event id is on the output topic, read committed from the start, once
/// `enough` holds of it (or `within` passed); then read once more after the transaction
/// interval, so a late duplicate would show.
async fn output_counts(stack: &Stack, enough: impl Fn(&HashMap<String, usize>) -> bool, within: Duration) -> HashMap<String, usize> {
    let read = || async {
        let mut counts = HashMap::new();
        for m in stack.read_topic(&stack.settings.kafka.topics.output, usize::MAX, Duration::from_secs(3)).await {
            *counts.entry(m.header(headers::EVENT_ID).unwrap_or_default().to_owned()).or_insert(0) += 1;
        }
        counts
    };
    let started = std::time::Instant::now();
    while started.elapsed() < within && !enough(&read().await) {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    read().await
}

async fn ingest_counted(stack: &Stack, ids: std::ops::Range<usize>, acked: &AtomicUsize) {
    stream::iter(ids)
        .for_each_concurrent(16, |i| async move {
            let (status, body) = stack.ingest(&json!({"id": format!("x-{i}"), "source": "github", "payload": {"n": i}})).await;
            assert_eq!(status, 202, "{body}");
            acked.fetch_add(1, Ordering::Relaxed);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformers_killed_mid_stream_publish_every_update_exactly_once() {
    let mut stack = Stack::start().await;
    // A second post-transformer joins the group first; the first one is then killed, as is the
    // only pre-transformer, which a new instance replaces.
    let (pre, post) = (stack.pre.take().unwrap(), std::mem::replace(&mut stack.post, start_post(&stack.settings).await));
    let acked = AtomicUsize::new(0);
    let crash = async {
        // Crash while events flow: the instances left or new resume from the committed offsets,
        // and what the dead ones had in open transactions never becomes visible.
        while acked.load(Ordering::Relaxed) < 250 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pre.kill();
        post.kill();
        start_pre(&stack.settings).await
    };
    let ((), new_pre) = tokio::join!(ingest_counted(&stack, 0..600, &acked), crash);
    stack.pre = Some(new_pre);

    let counts = output_counts(&stack, |c| c.len() >= 600, Duration::from_secs(90)).await;
    let missing = (0..600).filter(|i| !counts.contains_key(&format!("x-{i}"))).count();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(missing, 0, "lost {missing} updates");
    assert!(twice.is_empty(), "published more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_written_twice_is_published_once() {
    let stack = Stack::start().await;
    // What a gateway does when a client's retry (same Idempotency-Key) comes after the first
    // answer was lost: the event is in the ingest topic twice, at two offsets.
    let producer = stack.raw_producer();
    let topic = &stack.settings.kafka.topics.ingest;
    let send = |id: &'static str, key: Option<&'static str>, n: i64| {
        let producer = producer.clone();
        async move {
            let payload = json!({"id": id, "source": "github", "payload": {"n": n}, "metadata": {}, "received_at": "2024-07-20T12:34:56.789Z"}).to_string();
            let mut h = OwnedHeaders::new()
                .insert(Header { key: headers::EVENT_ID, value: Some(id) })
                .insert(Header { key: headers::SOURCE, value: Some("github") });
            if let Some(key) = key {
                h = h.insert(Header { key: headers::IDEMPOTENCY_KEY, value: Some(key) });
            }
            let key = format!("github:{id}");
            let record = FutureRecord::to(topic).key(&key).payload(&payload).headers(h);
            producer.send(record, Timeout::Never).await.unwrap();
        }
    };
    send("r-1", Some("client-key-1"), 1).await;
    send("r-1", Some("client-key-1"), 1).await; // the retry
    send("r-1", Some("client-key-2"), 2).await; // a new request for the same entity
    send("r-2", None, 1).await; // no key: taken as it comes
    send("r-2", None, 1).await;

    // r-1: the first request once, the second request once; r-2: both (no key to tell them apart).
    let counts = output_counts(&stack, |c| c.values().sum::<usize>() >= 4, Duration::from_secs(30)).await;
    assert_eq!(counts.get("r-1"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("r-2"), Some(&2), "{counts:?}");
    let stored = stack.stored("github", "r-1").await.unwrap();
    assert_eq!(stored["payload"]["n"], 2, "the newest request is stored: {stored}");
}
