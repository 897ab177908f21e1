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

/// `GET /v1/pipeline` with `key`.
async fn pipeline(stack: &Stack, key: &str, query: &str) -> (u16, serde_json::Value) {
    let r = stack.http.get(stack.admin_url(&format!("/v1/pipeline{query}"))).bearer_auth(key).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_at_a_glance_shows_every_instance_the_stage_lag_and_what_flowed_from_the_services_own_metrics() {
    let stack = Stack::start().await;
    let admin = crate::admin::ADMIN;
    let n = 30;
    for i in 0..n {
        assert_eq!(stack.ingest(&json!({"id": format!("glance-{i}"), "source": "github", "payload": {}})).await.0, 202);
    }
    assert_eq!(stack.consume("default", n, Duration::from_secs(30)).await.len(), n);
    // Every instance reports every 5 s and samples its metrics every 15 s: within a minute the
    // samples hold every event, and both stages have committed past them (60 s: a loaded CI
    // machine delays the ticks).
    let started = std::time::Instant::now();
    let body = loop {
        let (status, body) = pipeline(&stack, admin, "?minutes=5").await;
        assert_eq!(status, 200, "{body}");
        let github = &body["rates"]["sources"]["github"];
        let published: f64 = body["rates"]["series"].as_array().unwrap().iter().map(|p| p["published_per_s"].as_f64().unwrap() * 30.0).sum();
        let lags_zero = body["lag"].as_array().unwrap().iter().all(|l| l["lag"] == 0);
        if github["published_per_s"].as_f64() > Some(0.0) && published.round() as usize >= n && lags_zero {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not seen within 60 s: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let services: Vec<(&str, u64, u64)> =
        body["services"].as_array().unwrap().iter().map(|s| (s["service"].as_str().unwrap(), s["instances"].as_u64().unwrap(), s["ready"].as_u64().unwrap())).collect();
    assert_eq!(services, [("gateway", 1, 1), ("pre-transformer", 1, 1), ("post-transformer", 1, 1), ("consumer-api", 1, 1)], "{body}");
    assert!(body["instances"].as_array().unwrap().iter().all(|i| i["state"] == "ready" && i["checks"]["redis"] == "ok"), "{body}");
    let stages: Vec<&str> = body["lag"].as_array().unwrap().iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["pre", "post"]);
    // Latency comes from the post stage's e2e histogram: some step holds a p50 and a p99.
    let point = body["rates"]["series"].as_array().unwrap().iter().find(|p| p["p50_ms"].is_number()).expect("a step with latency");
    assert!(point["p50_ms"].as_f64().unwrap() > 0.0 && point["p99_ms"].as_f64() >= point["p50_ms"].as_f64(), "{point}");
    assert!(body["rates"]["p99_ms"].as_f64().unwrap() > 0.0);

    // A read key sees the glance, with the rates of its sources only.
    let (status, _, created) = stack.admin(reqwest::Method::POST, "/v1/keys", Some(json!({"name": "viewer", "scopes": ["read:jira"]})), None).await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = pipeline(&stack, created["key"].as_str().unwrap(), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rates"]["sources"].get("github").is_none(), "{body}");
    let (status, body) = pipeline(&stack, admin, "?minutes=0").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("minutes"), "{body}");

    // An instance that stops takes its report away.
    stack.post.shutdown.cancel();
    let started = std::time::Instant::now();
    loop {
        let (_, body) = pipeline(&stack, admin, "").await;
        if body["services"][2]["instances"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "still listed: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
