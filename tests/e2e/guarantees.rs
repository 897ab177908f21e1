//! Issue 4's guarantees, each shown on the real broker and Redis.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{start_pre, Stack, TOKEN};

/// POSTs `body` to /ingest with the request `headers`; answers the status, the answer's header
/// `read` and its body.
async fn ingest_reading(stack: &Stack, body: &Value, headers: &[(&str, &str)], read: &str) -> (u16, Option<String>, Value) {
    let mut request = stack.http.post(stack.gateway_url("/ingest")).bearer_auth(TOKEN).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let header = r.headers().get(read).map(|v| v.to_str().unwrap().to_owned());
    (status, header, r.json().await.unwrap())
}

async fn ingest_with_key(stack: &Stack, body: &Value, key: &str) -> (u16, Option<String>, Value) {
    ingest_reading(stack, body, &[("Idempotency-Key", key)], "idempotent-replayed").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_creates_no_second_event() {
    let stack = Stack::start().await;
    let event = json!({"id": "idem-1", "source": "jira", "payload": {"n": 1}});
    let (status, replayed, first) = ingest_with_key(&stack, &event, "key-123").await;
    assert_eq!((status, replayed), (202, None), "{first}");
    let (status, replayed, second) = ingest_with_key(&stack, &event, "key-123").await;
    assert_eq!((status, replayed.as_deref()), (202, Some("true")));
    assert_eq!(first, second, "the original answer, partition and offset included");
    // Another body under the same key is a client bug.
    let other = json!({"id": "idem-2", "source": "jira", "payload": {}});
    let (status, _, err) = ingest_with_key(&stack, &other, "key-123").await;
    assert_eq!((status, err["error"].as_str()), (422, Some("idempotency_key_reused")), "{err}");

    let on_topic = stack.read_topic(&stack.settings.kafka.topics.ingest, 2, Duration::from_secs(3)).await;
    assert_eq!(on_topic.len(), 1, "exactly one event reached Kafka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_after_a_config_fix() {
    let stack = Stack::start().await;
    let strict = json!({"pre": [{"op": "cast", "params": {"fields": {"payload.n": "int"}}}], "post": []});
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/github", Some(strict), None).await;
    assert_eq!(status, 200, "{body}");
    stack.wait_for_config("github", body["version"].as_u64().expect("the stored version")).await;
    for (id, n) in [("ok-1", json!("7")), ("bad-1", json!("abc")), ("bad-2", json!("x"))] {
        let (status, _) = stack.ingest(&json!({"id": id, "source": "github", "payload": {"n": n}})).await;
        assert_eq!(status, 202);
    }
    let events = stack.consume("default", 1, Duration::from_secs(20)).await;
    assert_eq!(events[0]["id"], "ok-1");
    assert_eq!(events[0]["payload"]["n"], 7);

    // Listed, filtered by source and reason, with why.
    let mut listed = Vec::new();
    for _ in 0..40 {
        let (status, _, page) = stack.admin(Method::GET, "/v1/dead-letters?source=github&reason=operation_failed", None, None).await;
        assert_eq!(status, 200, "{page}");
        listed = page["dead_letters"].as_array().unwrap().clone();
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|d| d["stage"] == "pre" && d["operation"] == "cast" && d["operation_index"] == 0), "{listed:?}");
    let ids: HashSet<_> = listed.iter().map(|d| d["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, HashSet::from(["bad-1".to_owned(), "bad-2".to_owned()]));

    // Fix the config, replay everything for the source: the events come through, ids kept.
    let fixed = json!({"pre": [], "post": []});
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/github", Some(fixed), None).await;
    assert_eq!(status, 200, "{body}");
    stack.wait_for_config("github", body["version"].as_u64().expect("the stored version")).await;
    let (status, _, result) = stack.admin(Method::POST, "/v1/dead-letters/replay", Some(json!({"source": "github"})), None).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["replayed"].as_array().unwrap().len(), 2, "{result}");
    assert_eq!((&result["complete"], result.get("next_cursor")), (&json!(true), None), "the topic was read to its end: {result}");
    let replayed = stack.consume("default", 2, Duration::from_secs(20)).await;
    let ids: HashSet<_> = replayed.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, HashSet::from(["bad-1".to_owned(), "bad-2".to_owned()]));
    // A second replay does nothing unless forced.
    let (_, _, again) = stack.admin(Method::POST, "/v1/dead-letters/replay", Some(json!({"source": "github"})), None).await;
    assert_eq!(again["replayed"].as_array().unwrap().len(), 0, "{again}");
    // Named items: complete once each is found; a cursor goes on from where it says.
    let first = &result["replayed"][0];
    let item = json!({"partition": first["partition"], "offset": first["offset"]});
    let (_, _, named) = stack.admin(Method::POST, "/v1/dead-letters/replay", Some(json!({"items": [item], "force": true})), None).await;
    assert_eq!((named["replayed"].as_array().unwrap().len(), &named["complete"]), (1, &json!(true)), "{named}");
    let (_, _, page) = stack.admin(Method::GET, "/v1/dead-letters?source=github", None, None).await;
    let end = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, _, past) = stack.admin(Method::POST, "/v1/dead-letters/replay", Some(json!({"source": "github", "force": true, "cursor": end})), None).await;
    assert_eq!((past["replayed"].as_array().unwrap().len(), &past["complete"]), (0, &json!(true)), "nothing past the end: {past}");
    let (status, _, body) = stack.admin(Method::POST, "/v1/dead-letters/replay", Some(json!({"source": "github", "cursor": "x"})), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pre_transformers_share_the_partitions_and_losing_one_loses_nothing() {
    let mut stack = Stack::start().await;
    let second = start_pre(&stack.settings).await;
    let ids = |range: std::ops::Range<usize>| range.map(|i| json!({"id": format!("s-{i}"), "source": "serviceX", "payload": {"i": i}}));
    for e in ids(0..300) {
        assert_eq!(stack.ingest(&e).await.0, 202);
    }
    stack.pre.take().unwrap().kill();
    for e in ids(300..600) {
        assert_eq!(stack.ingest(&e).await.0, 202);
    }
    let events = stack.consume_distinct("default", 600, Duration::from_secs(90)).await;
    let got: HashSet<_> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got.len(), 600, "every acknowledged event delivered");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_gateway_answers_503_with_retry_after_and_every_202_is_delivered() {
    let stack = Stack::start_with(|s| {
        s.gateway.max_in_flight = 2;
        s.gateway.max_batch_events = 2;
    })
    .await;
    let results: Vec<(u16, Option<String>, Value)> = stream::iter(0..200)
        .map(|i| {
            let stack = &stack;
            async move { ingest_reading(stack, &json!({"id": format!("bp-{i}"), "source": "jira", "payload": {}}), &[], "retry-after").await }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let accepted: HashSet<String> =
        results.iter().filter(|r| r.0 == 202).map(|r| r.2["id"].as_str().unwrap().to_owned()).collect();
    let refused = results.iter().filter(|r| r.0 == 503).count();
    assert!(refused > 0, "50 concurrent clients against 2 slots must see some 503s");
    assert!(results.iter().filter(|r| r.0 == 503).all(|r| r.1.as_deref() == Some("1") && r.2["error"] == "unavailable"));
    assert_eq!(accepted.len() + refused, 200, "only 202 or 503");
    let events = stack.consume("default", accepted.len(), Duration::from_secs(60)).await;
    let got: HashSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_mid_stream_commits_what_is_done_and_loses_nothing() {
    let mut stack = Stack::start().await;
    for i in 0..400 {
        assert_eq!(stack.ingest(&json!({"id": format!("g-{i}"), "source": "jira", "payload": {}})).await.0, 202);
        if i == 200 {
            // SIGTERM: finish the batch in flight, commit, leave.
            stack.pre.take().unwrap().stop().await;
            stack.pre = Some(start_pre(&stack.settings).await);
        }
    }
    let events = stack.consume("default", 400, Duration::from_secs(60)).await;
    let got: HashSet<_> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got.len(), 400);
    assert_eq!(events.len(), 400, "a graceful stop commits what it finished: no redelivery");
}
