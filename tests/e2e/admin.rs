//! The admin API: validated configs, optimistic concurrency, hot reload, preview, routing and
//! filtering, changed while events flow.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{jira_event, Stack, TOKEN};

pub const ADMIN: &str = "dev-admin-key";

impl Stack {
    /// Calls the admin API with the dev admin token.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>, if_match: Option<u64>) -> (u16, Option<String>, Value) {
        let mut req = self.http.request(method, self.admin_url(path)).bearer_auth(ADMIN);
        if let Some(v) = if_match {
            req = req.header("If-Match", v.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let etag = r.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        (status, etag, r.json().await.unwrap_or(Value::Null))
    }
}

use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_crud_with_optimistic_concurrency() {
    let stack = Stack::start().await;
    let (status, _, body) = stack.admin(Method::GET, "/v1/sources", None, None).await;
    assert_eq!(status, 200);
    let names: Vec<_> = body["sources"].as_array().unwrap().iter().map(|s| s["source"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["github", "jira", "serviceX"], "the seeded sources");

    let dq = json!({"pre": [{"op": "add_timestamp"}], "post": []});
    let (status, etag, body) = stack.admin(Method::PUT, "/v1/sources/dq", Some(dq.clone()), None).await;
    assert_eq!((status, etag.as_deref()), (200, Some("\"1\"")), "{body}");
    assert_eq!(body["version"], 1);
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/dq", Some(dq.clone()), Some(1)).await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(2)), "{body}");
    // A writer holding version 1 loses.
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/dq", Some(dq.clone()), Some(1)).await;
    assert_eq!((status, body["error"].as_str()), (412, Some("version_mismatch")), "{body}");
    let (status, etag, body) = stack.admin(Method::GET, "/v1/sources/dq", None, None).await;
    assert_eq!((status, etag.as_deref(), body["version"].as_u64()), (200, Some("\"2\""), Some(2)));
    let (status, _, _) = stack.admin(Method::DELETE, "/v1/sources/dq", None, Some(1)).await;
    assert_eq!(status, 412);
    let (status, _, _) = stack.admin(Method::DELETE, "/v1/sources/dq", None, Some(2)).await;
    assert_eq!(status, 204);
    let (status, _, body) = stack.admin(Method::GET, "/v1/sources/dq", None, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // Admin and ingest tokens are not interchangeable: each lacks the other's scope. (The ingest
    // token's `read:` scope lets it see sources, never change one.)
    let r = stack.http.put(stack.admin_url("/v1/sources/dq")).bearer_auth(TOKEN).json(&dq).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["required_scope"].as_str()), (Some("forbidden"), Some("admin")), "{body}");
    let r = stack.http.post(stack.gateway_url("/ingest")).bearer_auth(ADMIN).json(&jira_event()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // The admin API is not on the public listener.
    let r = stack.http.get(stack.gateway_url("/v1/sources")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_rejected_with_all_its_errors() {
    let stack = Stack::start().await;
    let bad = json!({
        "pre": [
            {"op": "add_timestamp"},
            {"op": "no_such_op"},
            {"op": "add_timestamp", "params": {"target": "nowhere.x"}}
        ],
        "post": [{"op": "add_processing_info", "params": {"bogus": true}}]
    });
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/jira", Some(bad), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_config")), "{body}");
    let locations: Vec<_> = body["errors"].as_array().unwrap().iter().map(|e| e["location"].as_str().unwrap()).collect();
    assert_eq!(locations, ["pre[1].op", "pre[2].params.target", "post[0].params.bogus"], "{body}");
    // The stored config is untouched.
    let (_, _, jira) = stack.admin(Method::GET, "/v1/sources/jira", None, None).await;
    assert_eq!(jira["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_applies_to_events_after_it_and_loses_none() {
    let stack = Stack::start().await;
    let send = |range: std::ops::Range<usize>| {
        let stack = &stack;
        async move {
            for i in range {
                let (status, _) = stack.ingest(&json!({"id": format!("c-{i}"), "source": "jira", "payload": {"i": i}})).await;
                assert_eq!(status, 202);
            }
        }
    };
    send(0..50).await;
    let events = stack.consume("default", 50, Duration::from_secs(30)).await;
    assert!(events.iter().all(|e| e["provenance"]["post_config_version"] == 1));

    let v2 = json!({"pre": [{"op": "add_timestamp"}], "post": [{"op": "add_processing_info", "params": {"target": "payload.v2_info"}}]});
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/jira", Some(v2), Some(1)).await;
    assert_eq!(status, 200, "{body}");
    // Pub/sub carries the change at once, without restarting anything.
    stack.wait_for_config("jira", 2).await;
    send(50..100).await;
    let events = stack.consume("default", 50, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 50, "none lost");
    for e in &events {
        assert_eq!(e["provenance"]["pre_config_version"], 2, "{e}");
        assert_eq!(e["payload"]["v2_info"]["config_version"], 2, "{e}");
        assert!(e["metadata"].get("processing_info").is_none(), "{e}");
    }
}

/// Drops what differs between runs: clocks, instance names, Kafka positions.
fn comparable(mut e: Value) -> Value {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            for k in ["processed_at", "instance", "received_at", "ingest_partition", "ingest_offset"] {
                m.remove(k);
            }
            m.values_mut().for_each(strip);
        }
    }
    strip(&mut e);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_what_the_pipeline_produces() {
    let stack = Stack::start().await;
    let (status, _, preview) =
        stack.admin(Method::POST, "/v1/sources/jira/preview", Some(json!({"event": jira_event()})), None).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["outcome"], "kept");
    assert_eq!(preview["stages"].as_array().unwrap().len(), 2);
    // Step by step: the pre stage's add_timestamp, then the post stage's add_processing_info.
    assert_eq!(preview["stages"][0]["steps"][0]["op"], "add_timestamp");
    assert!(preview["stages"][0]["steps"][0]["event"]["metadata"]["processed_at"].is_string());
    assert_eq!(preview["stages"][1]["steps"][0]["op"], "add_processing_info");

    let (status, _) = stack.ingest(&jira_event()).await;
    assert_eq!(status, 202);
    let events = stack.consume("default", 1, Duration::from_secs(20)).await;
    assert_eq!(comparable(preview["result"].clone()), comparable(events[0].clone()));

    // A config not yet saved can be tried too, and nothing is stored.
    let (status, _, tried) = stack
        .admin(
            Method::POST,
            "/v1/sources/jira/preview",
            Some(json!({"event": jira_event(), "config": {"pre": [], "post": [{"op": "add_timestamp", "params": {"target": "payload.t", "format": "epoch_s"}}]}})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{tried}");
    assert!(tried["result"]["payload"]["t"].is_i64(), "{tried}");
    let (_, _, jira) = stack.admin(Method::GET, "/v1/sources/jira", None, None).await;
    assert_eq!(jira["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sources_can_fall_back_to_a_default_config() {
    let stack = Stack::start_with(|s| s.sources.unknown = adapters::settings::UnknownSourcePolicy::Default).await;
    let (status, _, _) = stack
        .admin(Method::PUT, "/v1/sources/default", Some(json!({"pre": [{"op": "add_timestamp", "params": {"target": "payload.seen"}}]})), None)
        .await;
    assert_eq!(status, 200);
    stack.wait_for_config("default", 1).await;
    let (status, body) = stack.ingest(&json!({"id": "n-1", "source": "newcomer", "payload": {}})).await;
    assert_eq!(status, 202, "{body}");
    let events = stack.consume("default", 1, Duration::from_secs(20)).await;
    assert_eq!(events[0]["source"], "newcomer");
    assert!(events[0]["payload"]["seen"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_sends_events_to_the_routed_topic_and_filter_drops_exactly_the_matching_ones() {
    let stack = Stack::start().await;
    let routed = format!("{}.pii", stack.settings.kafka.topics.output);
    // Routed topics are created by operators, like the pipeline's own.
    let mut k = stack.settings.kafka.clone();
    k.topics.output = routed.clone();
    adapters::kafka::ensure_topics(&k).await.unwrap();

    let config = json!({
        "pre": [
            {"op": "filter", "params": {"drop_when": {"equals": {"path": "payload.status", "value": "draft"}}}},
            {"op": "classify", "params": {"rules": [{"tag": "PII", "field_names": ["(?i)e-?mail"]}]}}
        ],
        "post": [
            {"op": "route", "params": {"topic": routed.clone()}, "when": {"exists": "payload.email"}},
            {"op": "set_key", "params": {"fields": ["payload.owner"]}, "when": {"exists": "payload.owner"}},
            {"op": "insert_header", "params": {"name": "x-classified", "value": "yes"}}
        ]
    });
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/github", Some(config), None).await;
    assert_eq!(status, 200, "{body}");
    stack.wait_for_config("github", body["version"].as_u64().expect("the stored version")).await;

    let events = [
        json!({"id": "r-1", "source": "github", "payload": {"status": "open", "email": "a@b.c", "owner": "team-a"}}),
        json!({"id": "r-2", "source": "github", "payload": {"status": "draft", "email": "x@y.z"}}),
        json!({"id": "r-3", "source": "github", "payload": {"status": "open"}}),
        json!({"id": "r-4", "source": "github", "payload": {"status": "draft"}}),
        json!({"id": "r-5", "source": "github", "payload": {"status": "merged"}}),
    ];
    for e in &events {
        assert_eq!(stack.ingest(e).await.0, 202);
    }
    // The PII event goes to the routed topic, with the key and header the operations chose...
    let pii = stack.read_topic(&routed, 1, Duration::from_secs(20)).await;
    assert_eq!(pii.len(), 1);
    let e: Value = serde_json::from_slice(&pii[0].payload).unwrap();
    assert_eq!(e["id"], "r-1");
    assert_eq!(e["metadata"]["tags"], json!(["PII"]), "{e}");
    assert_eq!(pii[0].header("x-classified"), Some("yes"));
    assert!(e.get("routing").is_none(), "routing travels as the Kafka message's topic, key and headers");
    // ...the others to the output topic, and the drafts nowhere.
    let rest = stack.consume("default", 2, Duration::from_secs(20)).await;
    let ids: Vec<_> = rest.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"r-3") && ids.contains(&"r-5"), "{ids:?}");
    let (_, late) = stack.get("/consume?wait_ms=1500").await;
    assert_eq!(late["count"], 0, "filtered events must not appear: {late}");
    assert!(stack.stored("github", "r-2").await.is_none(), "a filtered event is not stored");
}
