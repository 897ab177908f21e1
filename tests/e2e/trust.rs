//! Trust: API keys with scopes, authorization before any I/O, revocation reaching every
//! replica, rate limits shared by replicas, caps per key, and JSON for every error.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{jira_event, start_gateway, Stack, TOKEN};

fn event(source: &str, id: &str) -> Value {
    json!({"id": id, "source": source, "payload": {"title": "t"}, "metadata": {}})
}

impl Stack {
    /// Creates a key through the admin API and waits until the gateway and the consumer-api know
    /// it (a new key reaches each replica over pub/sub, within a second); returns (id, key).
    async fn create_key(&self, body: Value) -> (String, String) {
        let (status, _, created) = self.admin(Method::POST, "/v1/keys", Some(body), None).await;
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().unwrap().to_owned();
        for url in [self.admin_url("/v1/pipeline"), self.consumer_url("/metadata/jira/none")] {
            within(Duration::from_secs(5), || async { self.http.get(&url).bearer_auth(&key).send().await.unwrap().status().as_u16() != 401 }).await;
        }
        (created["id"].as_str().unwrap().to_owned(), key)
    }
}

/// GETs `url` with `key`: the status and the JSON body (null when none).
async fn get_as(http: reqwest::Client, key: String, url: String) -> (u16, Value) {
    let r = http.get(url).bearer_auth(key).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ingest_on(http: &reqwest::Client, port: u16, key: &str, body: &Value) -> (u16, Value) {
    let r = http.post(format!("http://127.0.0.1:{port}/ingest")).bearer_auth(key).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `check` holds, at most `within`; returns how long it took.
async fn within<F, Fut>(within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_key_writes_and_reads_only_its_sources_and_changes_reach_every_replica_within_a_second() {
    let stack = Stack::start().await;
    let second = start_gateway(&stack.settings).await;
    let ports = [stack.gateway.port, second.port];
    let (id, key) = stack
        .create_key(json!({"name": "jira client", "scopes": ["ingest:jira", "read:jira", "consume:team-a-*"]}))
        .await;
    assert!(key.starts_with("msk_") && key.len() == 42, "{key}");

    // The key is shown once: listing and reading it never show it, nor its hash.
    let (status, _, listed) = stack.admin(Method::GET, &format!("/v1/keys/{id}"), None, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["scopes"], json!(["ingest:jira", "read:jira", "consume:team-a-*"]));
    assert!(listed.get("key").is_none() && listed.get("hash").is_none(), "{listed}");
    // Redis holds no usable secret: no value under the deployment's prefix contains the key.
    let mut conn = stack.redis.get().await.unwrap();
    let all: Vec<String> = deadpool_redis::redis::cmd("KEYS").arg(format!("{}*", stack.settings.redis.key_prefix)).query_async(&mut conn).await.unwrap();
    for k in all {
        let dump: Vec<u8> = deadpool_redis::redis::cmd("DUMP").arg(&k).query_async(&mut conn).await.unwrap_or_default();
        assert!(!String::from_utf8_lossy(&dump).contains(&key[4..]), "redis key {k} holds the API key");
    }

    // Once the key reached both replicas: it writes as jira on each, never as github.
    for port in ports {
        within(Duration::from_secs(2), || async { ingest_on(&stack.http, port, &key, &event("jira", "j-1")).await.0 == 202 }).await;
        let (status, body) = ingest_on(&stack.http, port, &key, &event("github", "g-1")).await;
        assert_eq!((status, body["error"].as_str(), body["required_scope"].as_str()), (403, Some("forbidden"), Some("ingest:github")), "{body}");
    }
    // In a batch, the forbidden event is rejected and the others accepted.
    let r = stack.http.post(stack.gateway_url("/ingest/batch")).bearer_auth(&key).json(&json!([event("jira", "j-2"), event("github", "g-2")])).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(1), Some(1)), "{body}");
    assert_eq!(body["results"][1]["error"], "forbidden", "{body}");

    // Reads: its own source only.
    let get = |path: String| get_as(stack.http.clone(), key.clone(), stack.consumer_url(&path));
    let (status, body) = get("/metadata/github/g-1".into()).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("read:github")), "{body}");
    within(Duration::from_secs(10), || async { get("/metadata/jira/j-1".into()).await.0 == 200 }).await;
    let (status, body) = get("/consume?group=team-b".into()).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("consume:team-b")), "{body}");

    // A github event written with the dev token never reaches this key's /consume.
    let (status, _) = stack.ingest(&event("github", "g-3")).await;
    assert_eq!(status, 202);
    let (status, _) = stack.ingest(&event("jira", "j-3")).await;
    assert_eq!(status, 202);
    let mut sources = Vec::new();
    let started = Instant::now();
    while !sources.iter().any(|(_, id)| id == "j-3") && started.elapsed() < Duration::from_secs(20) {
        let (status, body) = get("/consume?group=team-a-1&max=100&wait_ms=500".into()).await;
        assert_eq!(status, 200, "{body}");
        sources.extend(body["events"].as_array().unwrap().iter().map(|e| (e["event"]["source"].as_str().unwrap().to_owned(), e["event"]["id"].as_str().unwrap().to_owned())));
    }
    assert!(sources.iter().any(|(_, id)| id == "j-3"), "{sources:?}");
    assert!(sources.iter().all(|(s, _)| s == "jira"), "a jira-only key received {sources:?}");

    // A mistyped key is refused by its checksum, without a lookup.
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let (status, body) = ingest_on(&stack.http, ports[0], std::str::from_utf8(&typo).unwrap(), &jira_event()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("checksum"), "{body}");

    // A scope change reaches both replicas within a second.
    let (status, _, _) = stack.admin(Method::PATCH, &format!("/v1/keys/{id}"), Some(json!({"scopes": ["ingest:jira", "ingest:github"]})), None).await;
    assert_eq!(status, 200);
    for port in ports {
        let took = within(Duration::from_secs(1), || async { ingest_on(&stack.http, port, &key, &event("github", "g-4")).await.0 == 202 }).await;
        println!("scope change visible on port {port} after {took:?}");
    }
    // Revocation reaches both within a second.
    let (status, _, _) = stack.admin(Method::DELETE, &format!("/v1/keys/{id}"), None, None).await;
    assert_eq!(status, 204);
    for port in ports {
        let took = within(Duration::from_secs(1), || async { ingest_on(&stack.http, port, &key, &jira_event()).await.0 == 401 }).await;
        println!("revocation visible on port {port} after {took:?}");
    }

    // Every admin action is in the audit trail, naming who did it.
    let mut actions: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    while actions.len() < 3 && started.elapsed() < Duration::from_secs(5) {
        let (status, _, page) = stack.admin(Method::GET, "/v1/audit?limit=100", None, None).await;
        assert_eq!(status, 200, "{page}");
        actions = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["target"] == json!(id))
            .map(|r| (r["action"].as_str().unwrap().to_owned(), r["actor"].as_str().unwrap().to_owned()))
            .collect();
    }
    assert_eq!(actions, vec![("key.create".into(), "cfg-admin-token-0".into()), ("key.update".into(), "cfg-admin-token-0".into()), ("key.revoke".into(), "cfg-admin-token-0".to_owned())]);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_rate_limit() {
    let stack = Stack::start().await;
    let second = start_gateway(&stack.settings).await;
    let (_, key) = stack
        .create_key(json!({"name": "limited", "scopes": ["ingest:*"], "rate_limit": {"requests_per_s": 2, "burst": 4}}))
        .await;
    // Wait until both replicas know the key (this spends part of the allowance: start over).
    for port in [stack.gateway.port, second.port] {
        within(Duration::from_secs(2), || async { ingest_on(&stack.http, port, &key, &jira_event()).await.0 != 401 }).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = Instant::now();
    let (mut accepted, mut limited) = (0u32, 0u32);
    for i in 0..16 {
        let port = if i % 2 == 0 { stack.gateway.port } else { second.port };
        let r = stack.http.post(format!("http://127.0.0.1:{port}/ingest")).bearer_auth(&key).json(&event("jira", &format!("r-{i}"))).send().await.unwrap();
        let headers = r.headers().clone();
        match r.status().as_u16() {
            202 => {
                accepted += 1;
                assert!(headers.get("ratelimit").is_some() && headers.get("ratelimit-policy").is_some(), "{headers:?}");
            }
            429 => {
                limited += 1;
                assert!(headers.get("retry-after").is_some(), "{headers:?}");
                assert_eq!(headers.get("ratelimit-policy").unwrap(), "\"requests\";q=4;w=2");
                assert!(headers.get("ratelimit").unwrap().to_str().unwrap().starts_with("\"requests\";r=0;"), "{headers:?}");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"], "rate_limited", "{body}");
            }
            other => panic!("unexpected {other}: {:?}", r.text().await),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst (4) plus what refilled meanwhile (2/s), across both replicas together.
    let allowed = 4.0 + (elapsed * 2.0).ceil();
    assert!(accepted >= 4 && f64::from(accepted) <= allowed, "accepted {accepted} of 16 in {elapsed:.2} s; allowance {allowed}");
    assert_eq!(accepted + limited, 16);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holds_at_most_its_caps_of_groups_and_long_polls_and_idle_groups_close() {
    let stack = Stack::start_with(|s| {
        s.consumer_api.max_groups_per_key = 2;
        s.consumer_api.max_long_polls_per_key = 1;
        s.consumer_api.group_idle_s = 1;
    })
    .await;
    let (_, key) = stack.create_key(json!({"name": "reader", "scopes": ["consume:*", "read:*"]})).await;
    let consume = |group: &'static str, wait_ms: u64| get_as(stack.http.clone(), key.clone(), stack.consumer_url(&format!("/consume?group={group}&wait_ms={wait_ms}")));
    within(Duration::from_secs(2), || async { consume("g1", 0).await.0 == 200 }).await;
    assert_eq!(consume("g2", 0).await.0, 200);
    let (status, body) = consume("g3", 0).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("limit_exceeded")), "{body}");

    // One long poll at a time for this key.
    let polling = tokio::spawn(consume("g1", 3000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = consume("g2", 0).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("limit_exceeded")), "{body}");
    assert_eq!(polling.await.unwrap().0, 200);

    // Unused groups close after group_idle_s, which frees the key's allowance of groups.
    within(Duration::from_secs(10), || async { consume("g3", 0).await.0 == 200 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holds_at_most_its_caps_of_groups_and_long_polls_over_all_keys() {
    let stack = Stack::start_with(|s| {
        s.consumer_api.max_groups = 2;
        s.consumer_api.max_groups_per_key = 2;
        s.consumer_api.max_long_polls = 1;
        s.consumer_api.max_long_polls_per_key = 1;
    })
    .await;
    let (_, a) = stack.create_key(json!({"name": "reader a", "scopes": ["consume:*", "read:*"]})).await;
    let (_, b) = stack.create_key(json!({"name": "reader b", "scopes": ["consume:*", "read:*"]})).await;
    let consume = |key: &String, group: &'static str, wait_ms: u64| get_as(stack.http.clone(), key.clone(), stack.consumer_url(&format!("/consume?group={group}&wait_ms={wait_ms}")));
    within(Duration::from_secs(2), || async { consume(&a, "g1", 0).await.0 == 200 }).await;
    within(Duration::from_secs(2), || async { consume(&b, "g2", 0).await.0 == 200 }).await;
    // Key b holds one group, under its own cap of two, but the replica holds its two.
    let (status, body) = consume(&b, "g3", 0).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("limit_exceeded")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("consumer_api.max_groups"), "{body}");

    // One long poll at a time on this replica, whoever calls.
    let polling = tokio::spawn(consume(&a, "g1", 3000));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = consume(&b, "g2", 0).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("limit_exceeded")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("consumer_api.max_long_polls"), "{body}");
    assert_eq!(polling.await.unwrap().0, 200);
    assert_eq!(consume(&b, "g2", 0).await.0, 200, "the slot is free again");
}

/// Sends raw bytes to `port` and returns the status and the body of the answer.
async fn raw(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn assert_json_error(status: u16, head: &str, body: &str, expected: u16) {
    assert_eq!(status, expected, "{head}\n{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert!(value["error"].is_string() && value["message"].is_string(), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_services_answer_is_json() {
    let stack = Stack::start().await;
    let port = stack.gateway.port;
    // What the HTTP framework answers before any application code runs carries its status (and
    // no body: the edge, which parses requests first, answers these in JSON; scripts/smoke.sh
    // checks it there).
    let (status, head, body) = raw(port, b"GARBAGE\r\n\r\n").await;
    assert_eq!(status, 400, "{head}\n{body}");
    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let (status, head, body) = raw(port, big.as_bytes()).await;
    assert_eq!(status, 431, "{head}\n{body}");
    // A method a route does not serve: 405 with Allow.
    let (status, head, body) = raw(port, b"GET /ingest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_json_error(status, &head, &body, 405);
    assert!(head.contains("allow: post"), "{head}");
    // No route.
    let (status, head, body) = raw(port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_json_error(status, &head, &body, 404);
    // A query string that does not parse, checked after authentication.
    let cport = stack.consumer_api.port;
    let (status, head, body) = raw(cport, b"GET /consume?max=lots HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_json_error(status, &head, &body, 401);
    let bad_query = format!("GET /consume?max=lots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    let (status, head, body) = raw(cport, bad_query.as_bytes()).await;
    assert_json_error(status, &head, &body, 400);
    // The scheme is case-insensitive.
    let r = stack.http.post(stack.gateway_url("/ingest")).header("Authorization", format!("bEaReR {TOKEN}")).json(&jira_event()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // The admin listener and the consumer-api's operators' listener serve /metrics; the public
    // listeners do not.
    assert_eq!(stack.http.get(stack.gateway_url("/metrics")).send().await.unwrap().status(), 404);
    assert_eq!(stack.http.get(stack.consumer_url("/metrics")).send().await.unwrap().status(), 404);
    assert_eq!(stack.http.get(stack.admin_url("/metrics")).send().await.unwrap().status(), 200);
    let r = stack.http.get(format!("http://127.0.0.1:{}/metrics", stack.consumer_api.admin_port)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_filters_and_projects_server_side_and_filtered_events_still_count_as_consumed() {
    let stack = Stack::start().await;
    for (id, source, tagged) in [("a-1", "jira", false), ("a-2", "github", true), ("a-3", "jira", true), ("a-4", "github", false)] {
        let metadata = if tagged { json!({"tags": ["PII"]}) } else { json!({}) };
        let (status, body) = stack.ingest(&json!({"id": id, "source": source, "payload": {"title": id, "secret": "s"}, "metadata": metadata})).await;
        assert_eq!(status, 202, "{body}");
    }
    let filter = urlencode(r#"{"exists":"metadata.tags"}"#);
    let url = format!("/consume?group=pii&max=100&wait_ms=500&filter={filter}&fields=payload.title,metadata.tags");
    let mut seen: Vec<Value> = Vec::new();
    let started = Instant::now();
    // Events pass through at their pace; a filtered-out one is consumed all the same.
    while seen.len() < 2 && started.elapsed() < Duration::from_secs(20) {
        let (status, body) = stack.get(&url).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(body["events"].as_array().unwrap().iter().map(|e| e["event"].clone()));
    }
    let mut ids: Vec<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a-2", "a-3"], "{seen:?}");
    for e in &seen {
        // Only id, source and the requested paths.
        assert_eq!(e["payload"], json!({"title": e["id"]}), "{e}");
        assert_eq!(e["metadata"], json!({"tags": ["PII"]}), "{e}");
        assert!(e.get("received_at").is_none(), "{e}");
    }
    // The group moved past every event, the filtered-out ones too: a plain call finds nothing left.
    let (status, body) = stack.get("/consume?group=pii&wait_ms=1000").await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(0)), "{body}");

    // A header condition tests the message's Kafka headers (the pipeline's own among them).
    let by_header = urlencode(r#"{"header":{"name":"metastream-event-id","equals":"a-4"}}"#);
    let url = format!("/consume?group=hdr&max=100&wait_ms=500&filter={by_header}");
    let mut ids: Vec<String> = Vec::new();
    let started = Instant::now();
    while ids.is_empty() && started.elapsed() < Duration::from_secs(20) {
        let (status, body) = stack.get(&url).await;
        assert_eq!(status, 200, "{body}");
        ids.extend(body["events"].as_array().unwrap().iter().map(|e| e["event"]["id"].as_str().unwrap().to_owned()));
    }
    let (status, body) = stack.get(&url).await;
    assert_eq!((ids, status, body["count"].as_u64()), (vec!["a-4".to_owned()], 200, Some(0)), "only that one: {body}");

    // CloudEvents 1.0, structured JSON, chosen per call (a new group reads from the start).
    let mut cloud: Vec<Value> = Vec::new();
    let started = Instant::now();
    while cloud.len() < 4 && started.elapsed() < Duration::from_secs(20) {
        let (status, body) = stack.get("/consume?group=ce&max=100&wait_ms=500&format=cloudevents").await;
        assert_eq!(status, 200, "{body}");
        cloud.extend(body["events"].as_array().unwrap().iter().map(|e| (e["event"].clone(), e["topic"].clone(), e["partition"].clone(), e["offset"].clone())).map(|(e, t, p, o)| {
            assert_eq!(e["id"], json!(format!("{}-{}-{}", t.as_str().unwrap(), p, o)), "{e}");
            e
        }));
    }
    let a2 = cloud.iter().find(|e| e["subject"] == "a-2").unwrap_or_else(|| panic!("{cloud:?}"));
    assert_eq!((a2["specversion"].as_str(), a2["type"].as_str(), a2["source"].as_str()), (Some("1.0"), Some("io.metastream.metadata.processed"), Some("/metastream/sources/github")), "{a2}");
    assert!(a2["time"].is_string() && a2["data"]["payload"]["title"] == "a-2", "{a2}");

    // What does not compile is a 400 naming it.
    let (status, body) = stack.get(&format!("/consume?group=pii&filter={}", urlencode(r#"{"nope":1}"#))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("filter"), "{body}");
    let (status, body) = stack.get("/consume?group=pii&fields=nowhere.x").await;
    assert_eq!(status, 400, "{body}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A `read:` key in the admin API: it sees the sources its globs cover (their configs, the
/// catalog, previews, their dead letters) and nothing else; every change, and what reveals other
/// principals (keys, subscriptions, audit), needs `admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_sees_its_sources_in_the_admin_api_and_changes_nothing() {
    let stack = Stack::start().await;
    let strict = json!({"pre": [{"op": "cast", "params": {"fields": {"payload.n": "int"}}}], "post": []});
    for source in ["jira", "github"] {
        let (status, _, body) = stack.admin(Method::PUT, &format!("/v1/sources/{source}"), Some(strict.clone()), None).await;
        assert_eq!(status, 200, "{body}");
        stack.wait_for_config(source, body["version"].as_u64().unwrap()).await;
        let (status, _) = stack.ingest(&json!({"id": format!("bad-{source}"), "source": source, "payload": {"n": "abc"}})).await;
        assert_eq!(status, 202);
    }
    let (_, reader) = stack.create_key(json!({"name": "jira reader", "scopes": ["read:jira"]})).await;
    let (_, writer) = stack.create_key(json!({"name": "jira writer", "scopes": ["ingest:jira", "consume:*"]})).await;
    let call = |key: String, method: Method, path: &str, body: Option<Value>| {
        let req = stack.http.request(method, stack.admin_url(path)).bearer_auth(key);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    within(Duration::from_secs(2), || async { call(reader.clone(), Method::GET, "/v1/sources", None).await.0 == 200 }).await;

    // Sources: the list holds only what `read:jira` covers; another source is a 403 naming its scope.
    let (_, list) = call(reader.clone(), Method::GET, "/v1/sources", None).await;
    let names: Vec<&str> = list["sources"].as_array().unwrap().iter().map(|c| c["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["jira"], "{list}");
    let (status, jira) = call(reader.clone(), Method::GET, "/v1/sources/jira", None).await;
    assert_eq!((status, jira["pre"][0]["op"].as_str()), (200, Some("cast")), "{jira}");
    let (status, body) = call(reader.clone(), Method::GET, "/v1/sources/github", None).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("read:github")), "{body}");
    let (status, body) = call(reader.clone(), Method::GET, "/v1/operations", None).await;
    assert_eq!(status, 200, "{body}");
    // A preview changes nothing: allowed for the sources it covers.
    let sample = |source: &str| json!({"event": {"id": "p-1", "source": source, "payload": {"n": "5"}}});
    let (status, body) = call(reader.clone(), Method::POST, "/v1/sources/jira/preview", Some(sample("jira"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(reader.clone(), Method::POST, "/v1/sources/github/preview", Some(sample("github"))).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("read:github")), "{body}");

    // Dead letters: the admin sees both sources', the reader jira's only.
    let sources_of = |page: &Value| -> Vec<String> {
        page["dead_letters"].as_array().unwrap().iter().map(|d| d["source"].as_str().unwrap_or("").to_owned()).collect()
    };
    within(Duration::from_secs(20), || async {
        let (_, _, page) = stack.admin(Method::GET, "/v1/dead-letters", None, None).await;
        sources_of(&page).len() == 2
    })
    .await;
    let (status, page) = call(reader.clone(), Method::GET, "/v1/dead-letters", None).await;
    assert_eq!((status, sources_of(&page)), (200, vec!["jira".to_owned()]), "{page}");
    let (status, body) = call(reader.clone(), Method::GET, "/v1/dead-letters?source=github", None).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("read:github")), "{body}");

    // Every change needs `admin`, and so does what reveals other principals.
    let refused = [
        (Method::PUT, "/v1/sources/jira", Some(strict.clone())),
        (Method::DELETE, "/v1/sources/jira", None),
        (Method::POST, "/v1/sources/jira/secret", None),
        (Method::POST, "/v1/dead-letters/replay", Some(json!({"source": "jira"}))),
        (Method::GET, "/v1/keys", None),
        (Method::POST, "/v1/keys", Some(json!({"name": "x", "scopes": ["admin"]}))),
        (Method::GET, "/v1/subscriptions", None),
        (Method::GET, "/v1/audit", None),
    ];
    for (method, path, body) in refused {
        let (status, answer) = call(reader.clone(), method.clone(), path, body).await;
        assert_eq!((status, answer["required_scope"].as_str()), (403, Some("admin")), "{method} {path}: {answer}");
    }
    let (status, _, jira_now) = stack.admin(Method::GET, "/v1/sources/jira", None, None).await;
    assert_eq!((status, &jira_now["version"]), (200, &jira["version"]), "the reader changed jira");

    // A key without `read:` sees nothing there.
    let (status, body) = call(writer.clone(), Method::GET, "/v1/sources", None).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("read:<source>")), "{body}");
}

/// A `meta:` key operates without reading: events and records of its sources come without their
/// payloads, dead letters without their messages; a `read:` key sees dead letters masked as the
/// source's own `mask_field` and `classify` operations say; `admin` sees them as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_key_sees_no_payload_and_a_read_key_sees_dead_letters_masked_as_the_source_masks() {
    let stack = Stack::start().await;
    let config = json!({"pre": [
        {"op": "mask_field", "params": {"fields": ["payload.reporter.email"]}},
        {"op": "classify", "params": {"rules": [{"tag": "PII", "field_names": ["(?i)^ssn$"]}]}},
        {"op": "cast", "params": {"fields": {"payload.n": "int"}}}
    ], "post": []});
    let (status, _, body) = stack.admin(Method::PUT, "/v1/sources/jira", Some(config), None).await;
    assert_eq!(status, 200, "{body}");
    stack.wait_for_config("jira", body["version"].as_u64().unwrap()).await;
    let event = |id: &str, n: &str| json!({"id": id, "source": "jira", "payload": {"n": n, "ssn": "123-45-6789", "reporter": {"email": "ann@example.com", "name": "Ann"}}});
    assert_eq!(stack.ingest(&event("fine", "5")).await.0, 202);
    assert_eq!(stack.ingest(&event("poison", "abc")).await.0, 202);
    let (_, meta) = stack.create_key(json!({"name": "operator", "scopes": ["meta:jira", "consume:ops-*"]})).await;
    let (_, reader) = stack.create_key(json!({"name": "reader", "scopes": ["read:jira"]})).await;
    let get = |key: String, url: String| get_as(stack.http.clone(), key, url);

    // /consume: the event, its metadata (the PII tag), no payload.
    let started = Instant::now();
    let items = loop {
        let (status, body) = get(meta.clone(), stack.consumer_url("/consume?group=ops-a&wait_ms=500")).await;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().unwrap().clone();
        if !events.is_empty() {
            break events;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "nothing consumed");
    };
    let item = &items[0];
    assert_eq!((item["event"]["id"].as_str(), &item["event"]["payload"], &item["payload_hidden"]), (Some("fine"), &json!({}), &json!(true)), "{item}");
    assert_eq!(item["event"]["metadata"]["tags"], json!(["PII"]), "{item}");
    // /metadata: the record, no payload; another source: refused, naming the scope.
    let (status, record) = get(meta.clone(), stack.consumer_url("/metadata/jira/fine")).await;
    assert_eq!((status, &record["payload"], &record["payload_hidden"]), (200, &json!({}), &json!(true)), "{record}");
    let (status, body) = get(meta.clone(), stack.consumer_url("/metadata/github/fine")).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("read:github")), "{body}");
    let (status, record) = get(reader.clone(), stack.consumer_url("/metadata/jira/fine")).await;
    assert_eq!((status, record["payload"]["reporter"]["name"].as_str(), record.get("payload_hidden")), (200, Some("Ann"), None), "{record}");

    // Dead letters: admin as it is, reader masked, meta without the message.
    within(Duration::from_secs(20), || async { stack.admin(Method::GET, "/v1/dead-letters?source=jira", None, None).await.2["count"] == 1 }).await;
    let (_, _, page) = stack.admin(Method::GET, "/v1/dead-letters?source=jira", None, None).await;
    let admin_view = &page["dead_letters"][0];
    assert_eq!((admin_view["payload_shown"].as_str(), admin_view["payload"]["payload"]["reporter"]["email"].as_str()), (Some("as_is"), Some("ann@example.com")), "{admin_view}");
    let (status, page) = get(reader.clone(), stack.admin_url("/v1/dead-letters?source=jira")).await;
    let masked = &page["dead_letters"][0];
    assert_eq!((status, masked["payload_shown"].as_str()), (200, Some("masked")), "{masked}");
    assert_eq!(masked["payload"]["payload"], json!({"n": "abc", "ssn": "****", "reporter": {"email": "****", "name": "Ann"}}), "{masked}");
    let (status, page) = get(meta.clone(), stack.admin_url("/v1/dead-letters?source=jira")).await;
    let hidden = &page["dead_letters"][0];
    assert_eq!((status, hidden["payload_shown"].as_str(), &hidden["payload"]), (200, Some("hidden"), &Value::Null), "{hidden}");
    assert_eq!((hidden["reason"].as_str(), hidden["event_id"].as_str()), (Some("operation_failed"), Some("poison")), "{hidden}");
    // The glance and the sources, too; no change.
    let (status, _) = get(meta.clone(), stack.admin_url("/v1/pipeline")).await;
    assert_eq!(status, 200);
    let (status, body) = get(meta.clone(), stack.admin_url("/v1/keys")).await;
    assert_eq!((status, body["required_scope"].as_str()), (403, Some("admin")), "{body}");
}
