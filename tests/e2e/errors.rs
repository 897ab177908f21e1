//! Bad input gets a clear JSON error naming what is wrong; infrastructure trouble gets a 503.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{jira_event, start_gateway, test_settings, Stack, TOKEN};

async fn post_raw(stack: &Stack, token: Option<&str>, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let mut req = stack.http.post(stack.gateway_url("/ingest")).header("Content-Type", content_type).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, r.json().await.unwrap_or(Value::Null))
}

/// A bad request: what it is, its token, content type and body; the status, error code and a
/// part of the message it must get.
type Case<'a> = (&'a str, Option<&'a str>, &'a str, Vec<u8>, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_status_and_a_json_error() {
    let stack = Stack::start_with(|s| s.gateway.max_body_bytes = 4096).await;
    let good = jira_event().to_string().into_bytes();
    let json = "application/json";
    let cases: Vec<Case> = vec![
        ("no token", None, json, good.clone(), 401, "unauthorized", "bearer token"),
        ("wrong token", Some("nope"), json, good.clone(), 401, "unauthorized", "bearer token"),
        ("malformed json", Some(TOKEN), json, b"{\"id\": ".to_vec(), 400, "invalid_event", "not valid JSON"),
        ("missing payload", Some(TOKEN), json, br#"{"id":"1","source":"jira"}"#.to_vec(), 400, "invalid_event", "`payload`"),
        ("payload not an object", Some(TOKEN), json, br#"{"id":"1","source":"jira","payload":[]}"#.to_vec(), 400, "invalid_event", "field `payload` must be an object"),
        ("id not a string", Some(TOKEN), json, br#"{"id":1,"source":"jira","payload":{}}"#.to_vec(), 400, "invalid_event", "field `id`"),
        ("too large", Some(TOKEN), json, json!({"id":"1","source":"jira","payload":{"x":"a".repeat(5000)}}).to_string().into_bytes(), 413, "payload_too_large", "4096"),
        ("unknown source", Some(TOKEN), json, br#"{"id":"1","source":"salesforce","payload":{}}"#.to_vec(), 422, "unknown_source", "`salesforce` has no configuration"),
        ("form body", Some(TOKEN), "application/x-www-form-urlencoded", good.clone(), 415, "unsupported_media_type", "application/json"),
    ];
    for (name, token, ct, body, status, code, message) in cases {
        let (got, _, err) = post_raw(&stack, token, ct, body).await;
        assert_eq!(got, status, "{name}: {err}");
        assert_eq!(err["error"], code, "{name}: {err}");
        let text = err["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{name}: message {text:?} should mention {message:?}");
    }

    // Consumer-api errors share the shape.
    let r = stack.http.get(stack.consumer_url("/consume")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, err) = stack.get("/consume?max=0").await;
    assert_eq!((status, err["error"].as_str()), (400, Some("bad_request")), "{err}");
    let (status, err) = stack.get("/consume?max=abc").await;
    assert_eq!((status, err["error"].as_str()), (400, Some("bad_request")), "{err}");
    let (status, err) = stack.get("/metadata/jira/does-not-exist").await;
    assert_eq!((status, err["error"].as_str()), (404, Some("not_found")), "{err}");
    let (status, err) = stack.get("/nowhere").await;
    assert_eq!((status, err["error"].as_str()), (404, Some("not_found")), "{err}");

    // Nothing refused above reached the pipeline.
    let out = stack.read_topic(&stack.settings.kafka.topics.ingest, 1, Duration::from_secs(3)).await;
    assert!(out.is_empty(), "a refused event reached Kafka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_unreachable_means_503_with_retry_after_never_2xx() {
    // A gateway pointed at a port where no broker listens.
    let mut s = test_settings();
    s.kafka.bootstrap_servers = "127.0.0.1:1".into();
    s.kafka.create_topics = false;
    s.kafka.produce_timeout_ms = 1000;
    let gw = start_gateway(&s).await;
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/ingest", gw.port))
        .bearer_auth(TOKEN)
        .json(&jira_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(body["message"].as_str().unwrap().contains("kafka"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "the 503 should come after the produce timeout");
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", gw.port)).await.unwrap();
    assert_eq!(ready.status(), 503, "readyz must say kafka is unreachable");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_is_refused_naming_the_key() {
    let mut s = test_settings();
    s.auth.tokens.clear();
    s.kafka.topics.output = "not a topic".into();
    let err = gateway::Application::build(s.clone(), Default::default()).await.err().expect("must refuse").to_string();
    assert!(err.contains("auth.tokens"), "{err}");
    let err = post_transformer::PostTransformer::build(s, Default::default()).await.err().expect("must refuse").to_string();
    assert!(err.contains("kafka.topics.output"), "{err}");
}
