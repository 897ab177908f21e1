//! The prototype's two calls, and what they leave in the store.

use std::time::Duration;

use crate::harness::{jira_event, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prototype_ingest_then_consume_returns_the_processed_event() {
    let stack = Stack::start().await;

    let (status, body) = stack.ingest(&jira_event()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["id"], "12345");
    assert!(body["offset"].as_i64().unwrap() >= 0, "{body}");

    let events = stack.consume("default", 1, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["id"], "12345");
    assert_eq!(e["source"], "jira");
    assert_eq!(e["payload"], jira_event()["payload"]);
    assert_eq!(e["metadata"]["created_at"], "2024-07-20T12:34:56Z");
    assert!(e["metadata"]["processed_at"].is_string(), "pre stage timestamp missing: {e}");
    let info = &e["metadata"]["processing_info"];
    assert_eq!(info["stage"], "post", "{e}");
    assert_eq!(info["service"], "post-transformer");
    assert_eq!(info["config_version"], 1);
    assert_eq!(e["provenance"]["pre_config_version"], 1);
    assert_eq!(e["provenance"]["post_config_version"], 1);

    // The store holds the record as the pre stage left it: timestamp, no processing info.
    let stored = stack.stored("jira", "12345").await.expect("processed:{jira:12345} in redis");
    assert_eq!(stored["payload"], jira_event()["payload"]);
    assert_eq!(stored["metadata"]["processed_at"], e["metadata"]["processed_at"]);
    assert!(stored["metadata"].get("processing_info").is_none());
    let (status, record) = stack.get("/metadata/jira/12345").await;
    assert_eq!(status, 200);
    assert_eq!(record, stored);

    // The published message says when each stage produced the event, in order: the gateway
    // (ingest), the pre-transformer (notice), then the post-transformer (its own timestamp).
    let published = stack.read_topic(&stack.settings.kafka.topics.output, 1, Duration::from_secs(10)).await;
    let m = &published[0];
    let at = |name: &str| m.header(name).unwrap_or_else(|| panic!("no {name} on {:?}", m.headers)).parse::<i64>().unwrap();
    let (ingested, noticed) = (at("metastream-ingested-at-ms"), at("metastream-noticed-at-ms"));
    assert!(ingested > 1_700_000_000_000 && ingested <= noticed && Some(noticed) <= m.timestamp_ms, "{:?} at {:?}", m.headers, m.timestamp_ms);

    // Consumed events are not handed out again to the same group...
    let (_, again) = stack.get("/consume?wait_ms=300").await;
    assert_eq!(again["count"], 0, "{again}");
    // ...while another group reads the topic from its start.
    let other = stack.consume("audit", 1, Duration::from_secs(20)).await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["id"], "12345");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_report_ready() {
    let stack = Stack::start().await;
    for port in [stack.gateway.port, stack.pre.as_ref().unwrap().port, stack.post.port, stack.consumer_api.port] {
        let r = stack.http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = stack.http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 200, "port {port}: {body}");
        assert_eq!(body["checks"]["kafka"], "ok");
        assert_eq!(body["checks"]["redis"], "ok");
    }
}
