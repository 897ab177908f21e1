//! Several sources, each with its own operations.

use std::time::Duration;

use serde_json::json;

use crate::harness::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_gets_its_own_operations() {
    let stack = Stack::start().await;
    // github: epoch timestamps in the payload; a new source `dq` with no post operations.
    stack
        .put_source(json!({
            "source": "github",
            "pre": [{"op": "add_timestamp", "params": {"target": "payload.ingested_ms", "format": "epoch_ms"}}],
            "post": [{"op": "add_processing_info", "params": {"target": "payload.pipeline"}}],
            "version": 2
        }))
        .await;
    stack.put_source(json!({"source": "dq", "pre": [{"op": "add_timestamp"}], "post": []})).await;

    for (source, id) in [("jira", "J-1"), ("github", "G-1"), ("serviceX", "X-1"), ("dq", "D-1")] {
        let (status, body) = stack.ingest(&json!({"id": id, "source": source, "payload": {"n": 1}})).await;
        assert_eq!(status, 202, "{source}: {body}");
    }
    let events = stack.consume("default", 4, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 4);
    let by_id = |id: &str| events.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("{id} missing")).clone();

    let jira = by_id("J-1");
    assert!(jira["metadata"]["processed_at"].is_string());
    assert_eq!(jira["metadata"]["processing_info"]["stage"], "post");

    let github = by_id("G-1");
    assert!(github["payload"]["ingested_ms"].as_i64().unwrap() > 1_700_000_000_000, "{github}");
    assert_eq!(github["payload"]["pipeline"]["config_version"], 2);
    assert!(github["metadata"].get("processed_at").is_none());
    assert_eq!(github["provenance"]["pre_config_version"], 2);

    let service_x = by_id("X-1");
    assert_eq!(service_x["metadata"]["processing_info"]["service"], "post-transformer");

    let dq = by_id("D-1");
    assert!(dq["metadata"]["processed_at"].is_string());
    assert!(dq["metadata"].get("processing_info").is_none(), "dq has no post operations: {dq}");
}
