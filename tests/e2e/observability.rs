//! Metrics move by exactly what happened.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::harness::Stack;

async fn scrape(stack: &Stack, port: u16) -> BTreeMap<String, f64> {
    let text = stack.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    adapters::metrics::parse_exposition(&text)
}

/// Sum of every series of `name` whose labels contain all of `labels`.
fn total(m: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(series, _)| series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_events_sent_and_the_e2e_histogram_counts_them() {
    let stack = Stack::start().await;
    let ports = [stack.gateway.admin_port, stack.pre.as_ref().unwrap().port, stack.post.port, stack.consumer_api.admin_port];
    let mut before = Vec::new();
    for p in ports {
        before.push(scrape(&stack, p).await);
    }
    let n = 25;
    for i in 0..n {
        assert_eq!(stack.ingest(&json!({"id": format!("m-{i}"), "source": "github", "payload": {}})).await.0, 202);
    }
    assert_eq!(stack.ingest(&json!({"id": "x", "source": "nope", "payload": {}})).await.0, 422);
    let events = stack.consume("default", n, Duration::from_secs(30)).await;
    assert_eq!(events.len(), n);
    // Counters are recorded after the acks: wait until the post stage has counted the last batch.
    let published = total(&before[2], "metastream_events_processed_total", &["stage=\"post\"", "source=\"github\"", "outcome=\"published\""]) + n as f64;
    stack.wait_for_metric(stack.post.port, "metastream_events_processed_total", &["stage=\"post\"", "source=\"github\"", "outcome=\"published\""], published).await;
    stack.wait_for_metric(stack.post.port, "metastream_e2e_latency_seconds_count", &["source=\"github\""], n as f64).await;
    let mut after = Vec::new();
    for p in ports {
        after.push(scrape(&stack, p).await);
    }
    let moved = |i: usize, name: &str, labels: &[&str]| total(&after[i], name, labels) - total(&before[i], name, labels);
    let n = n as f64;
    assert_eq!(moved(0, "metastream_events_ingested_total", &["source=\"github\""]), n);
    assert_eq!(moved(0, "metastream_ingest_rejected_total", &["reason=\"unknown_source\""]), 1.0);
    assert_eq!(moved(0, "http_server_requests_total", &["route=\"/ingest\"", "status=\"202\""]), n);
    assert_eq!(moved(1, "metastream_events_processed_total", &["stage=\"pre\"", "source=\"github\"", "outcome=\"stored\""]), n);
    assert_eq!(moved(2, "metastream_events_processed_total", &["stage=\"post\"", "source=\"github\"", "outcome=\"published\""]), n);
    assert_eq!(moved(2, "metastream_e2e_latency_seconds_count", &["source=\"github\""]), n);
    assert_eq!(moved(3, "metastream_events_delivered_total", &["group=\"default\""]), n);
    // Every service labels its samples and reports its process.
    for (i, service) in ["gateway", "pre-transformer", "post-transformer", "consumer-api"].iter().enumerate() {
        assert!(total(&after[i], "process_resident_memory_bytes", &[&format!("service=\"{service}\"")]) > 0.0, "{service}");
    }
    assert!(total(&after[1], "metastream_redis_command_duration_seconds_count", &["command=\"store_records\""]) >= 1.0);
    assert!(total(&after[0], "metastream_source_config_version", &["source=\"jira\""]) == 1.0);
}
