//! `GET /consume` from any replica: a group's position lives in Redis, so replicas behind a
//! round-robin serve one group together, a killed replica loses nothing, two clients never get
//! the same events, cursors acknowledge, and an answer never acknowledged comes back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{start_consumer_api, Running, Stack, TOKEN};

/// Ingests `n` events `<prefix>-<i>` in batches of 1000.
async fn ingest_many(stack: &Stack, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Value> = chunk.iter().map(|i| json!({"id": format!("{prefix}-{i}"), "source": "jira", "payload": {"i": i}})).collect();
        let r = stack.http.post(stack.gateway_url("/ingest/batch")).bearer_auth(TOKEN).json(&events).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["accepted"].as_u64(), Some(chunk.len() as u64), "{body}");
    }
}

async fn consume_on(http: &reqwest::Client, port: u16, key: &str, query: &str) -> Result<(u16, Value), reqwest::Error> {
    let r = http.get(format!("http://127.0.0.1:{port}/consume?{query}")).bearer_auth(key).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

fn ids(body: &Value) -> Vec<String> {
    body["events"].as_array().map(|a| a.iter().map(|e| e["event"]["id"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// A round-robin HTTP proxy in front of `backends`, as an edge or a Kubernetes Service is: each
/// request goes to the next backend; one that refuses the connection is skipped (nginx's
/// `proxy_next_upstream error`), so a replica that is gone costs no error answer.
async fn round_robin(backends: Vec<u16>) -> u16 {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let server = HttpServer::new(move || {
        let (next, http, backends) = (next.clone(), http.clone(), backends.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (next, http, backends) = (next.clone(), http.clone(), backends.clone());
            async move {
                for _ in 0..backends.len() {
                    let port = backends[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % backends.len()];
                    let url = format!("http://127.0.0.1:{port}{}", req.uri());
                    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
                    let mut forward = http.request(method, url).body(body.clone());
                    for (name, value) in req.headers() {
                        if name != "host" {
                            forward = forward.header(name.as_str(), value.as_bytes());
                        }
                    }
                    match forward.send().await {
                        Ok(answer) => {
                            let mut out = HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status().as_u16()).unwrap());
                            for (name, value) in answer.headers() {
                                out.insert_header((name.as_str(), value.as_bytes()));
                            }
                            return out.body(answer.bytes().await.unwrap_or_default());
                        }
                        Err(err) if err.is_connect() => continue,
                        Err(err) => return HttpResponse::BadGateway().body(err.to_string()),
                    }
                }
                HttpResponse::BadGateway().body("no backend answered")
            }
        }))
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_a_round_robin_proxy_serve_one_group_of_100k_and_one_taken_out_mid_run_loses_nothing() {
    let stack = Stack::start_with(|s| {
        s.consumer_api.ack_timeout_ms = 3000;
    })
    .await;
    let n = 100_000;
    let ingesting = Instant::now();
    ingest_many(&stack, "rr", n).await;
    println!("ingested {n} events in {:?}", ingesting.elapsed());
    let mut replicas: Vec<Option<Running>> = vec![Some(start_consumer_api(&stack.settings).await), Some(start_consumer_api(&stack.settings).await)];
    let mut backends = vec![stack.consumer_api.port];
    backends.extend(replicas.iter().map(|r| r.as_ref().unwrap().port));
    let proxy = round_robin(backends).await;

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut positions: HashSet<(i64, i64)> = HashSet::new();
    let (mut calls, mut errors) = (0usize, Vec::new());
    let started = Instant::now();
    while seen.len() < n && started.elapsed() < Duration::from_secs(300) {
        if calls == 30 {
            // One replica is taken out in the middle of the run, without telling the proxy:
            // the others go on from where the group is, in Redis.
            replicas[0].take().unwrap().stop().await;
        }
        calls += 1;
        match consume_on(&stack.http, proxy, TOKEN, "group=rr&max=1000&wait_ms=500").await {
            Ok((200, body)) => {
                for e in body["events"].as_array().unwrap() {
                    *seen.entry(e["event"]["id"].as_str().unwrap().to_owned()).or_default() += 1;
                    positions.insert((e["partition"].as_i64().unwrap(), e["offset"].as_i64().unwrap()));
                }
            }
            Ok((status, body)) => errors.push(format!("{status} {body}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    assert!(errors.is_empty(), "error answers through the proxy: {errors:?}");
    assert_eq!(seen.len(), n, "distinct events delivered through the replicas");
    assert_eq!(positions.len(), n, "every (partition, offset) delivered");
    let again: usize = seen.values().map(|c| c - 1).sum();
    println!("{n} events through 3 replicas (one taken out) in {calls} calls, {:?}; delivered again: {again}", started.elapsed());

    // The last answer is acknowledged by the next call; then, with every replica restarted,
    // nothing is handed out again.
    let (status, body) = consume_on(&stack.http, proxy, TOKEN, "group=rr&wait_ms=200").await.unwrap();
    assert_eq!((status, body["count"].as_u64()), (200, Some(0)), "{body}");
    for r in replicas.into_iter().flatten() {
        r.stop().await;
    }
    let fresh = [start_consumer_api(&stack.settings).await, start_consumer_api(&stack.settings).await];
    for r in &fresh {
        let (status, body) = consume_on(&stack.http, r.port, TOKEN, "group=rr&wait_ms=1000").await.unwrap();
        assert_eq!((status, body["count"].as_u64()), (200, Some(0)), "a restarted replica handed out {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_group_on_two_replicas_never_get_the_same_events() {
    let stack = Stack::start().await;
    let second = start_consumer_api(&stack.settings).await;
    let n = 2000;
    ingest_many(&stack, "two", n).await;
    let (status, _, a) = stack.admin(Method::POST, "/v1/keys", Some(json!({"name": "client a", "scopes": ["consume:*", "read:*"]})), None).await;
    assert_eq!(status, 201);
    let (status, _, b) = stack.admin(Method::POST, "/v1/keys", Some(json!({"name": "client b", "scopes": ["consume:*", "read:*"]})), None).await;
    assert_eq!(status, 201);
    let client = |port: u16, key: String| {
        let http = stack.http.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            let started = Instant::now();
            let mut empty = 0;
            while empty < 3 && started.elapsed() < Duration::from_secs(60) {
                let (status, body) = consume_on(&http, port, &key, "group=shared&max=100&wait_ms=500").await.unwrap();
                if status == 401 {
                    continue; // the key has not reached this replica yet
                }
                assert_eq!(status, 200, "{body}");
                let batch = ids(&body);
                empty = if batch.is_empty() { empty + 1 } else { 0 };
                got.extend(batch);
            }
            got
        })
    };
    let one = client(stack.consumer_api.port, a["key"].as_str().unwrap().to_owned());
    let two = client(second.port, b["key"].as_str().unwrap().to_owned());
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    let (set_one, set_two): (HashSet<_>, HashSet<_>) = (one.iter().collect(), two.iter().collect());
    assert!(!one.is_empty() && !two.is_empty(), "both clients served: {} and {}", one.len(), two.len());
    assert!(set_one.is_disjoint(&set_two), "an event went to both clients");
    assert_eq!(set_one.len() + set_two.len(), n, "every event went to one of them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_acknowledge_are_tamper_evident_and_an_unacknowledged_answer_comes_back() {
    let stack = Stack::start_with(|s| {
        s.consumer_api.ack_timeout_ms = 1500;
    })
    .await;
    let second = start_consumer_api(&stack.settings).await;
    ingest_many(&stack, "cur", 20).await;
    let port = stack.consumer_api.port;
    // Wait for the events to reach the output topic, then take them and never acknowledge.
    let mut first = Value::Null;
    let started = Instant::now();
    while first["count"].as_u64().unwrap_or(0) == 0 && started.elapsed() < Duration::from_secs(20) {
        first = consume_on(&stack.http, port, TOKEN, "group=lost&max=5&wait_ms=500").await.unwrap().1;
    }
    let lost = ids(&first);
    assert!(!lost.is_empty(), "{first}");
    // Past the ack timeout, another replica hands the same events out again.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (status, again) = consume_on(&stack.http, second.port, TOKEN, "group=lost&max=5&wait_ms=500&cursor=x").await.unwrap();
    assert_eq!(status, 400, "a forged cursor: {again}");
    let admin_key = {
        let (_, _, k) = stack.admin(Method::POST, "/v1/keys", Some(json!({"name": "other", "scopes": ["consume:*", "read:*"]})), None).await;
        k["key"].as_str().unwrap().to_owned()
    };
    // Past the ack timeout, the whole rest of the group comes to another client on another
    // replica, and the unacknowledged answer with it.
    let (mut all, mut again) = (Vec::new(), Value::Null);
    let started = Instant::now();
    while all.len() < 20 && started.elapsed() < Duration::from_secs(10) {
        let (_, body) = consume_on(&stack.http, second.port, &admin_key, "group=lost&max=100&wait_ms=500").await.unwrap();
        if body["count"].as_u64().unwrap_or(0) > 0 {
            all.extend(ids(&body));
            again = body;
        }
    }
    assert_eq!(all.len(), 20, "{all:?}");
    assert!(lost.iter().all(|id| all.contains(id)), "the unacknowledged answer {lost:?} was not handed out again: {all:?}");

    // A cursor acknowledges explicitly, on any replica, and only for its own group.
    let cursor = again["cursor"].as_str().unwrap().to_owned();
    let (status, body) = consume_on(&stack.http, port, TOKEN, &format!("group=other&cursor={cursor}")).await.unwrap();
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "a cursor of another group: {body}");
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let r = stack.http.post(stack.consumer_url("/consume/ack")).bearer_auth(TOKEN).json(&json!({"group": "lost", "cursor": String::from_utf8(tampered).unwrap()})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = stack.http.post(format!("http://127.0.0.1:{}/consume/ack", second.port)).bearer_auth(TOKEN).json(&json!({"group": "lost", "cursor": cursor})).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["acknowledged"], true, "{body}");
    // Everything acknowledged: past the timeout, nothing comes back, to anyone, on any replica.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for p in [port, second.port] {
        let (status, body) = consume_on(&stack.http, p, TOKEN, "group=lost&max=100&wait_ms=500").await.unwrap();
        assert_eq!((status, body["count"].as_u64()), (200, Some(0)), "{body}");
    }
}

/// Reads `group` (calling again, which acknowledges) until `want` distinct ids or `within` passed.
async fn collect(stack: &Stack, group: &str, extra: &str, want: usize, within: Duration) -> Vec<String> {
    let mut got: Vec<String> = Vec::new();
    let started = Instant::now();
    while got.len() < want && started.elapsed() < within {
        let (status, body) = consume_on(&stack.http, stack.consumer_api.port, TOKEN, &format!("group={group}&max=100&wait_ms=300{extra}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        got.extend(ids(&body));
    }
    got
}

async fn reset(stack: &Stack, group: &str, to: &str) -> (u16, Value) {
    let r = stack.http.post(stack.consumer_url("/consume/reset")).bearer_auth(TOKEN).json(&json!({"group": group, "to": to})).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_starts_at_or_is_reset_to_a_time_the_earliest_or_the_latest() {
    let stack = Stack::start().await;
    ingest_many(&stack, "old", 10).await;
    assert_eq!(collect(&stack, "probe", "", 10, Duration::from_secs(20)).await.len(), 10, "the first events reached the output");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    ingest_many(&stack, "new", 10).await;

    // A new group from a time gets only what was published after it.
    let since = collect(&stack, "since", &format!("&from={t}"), 10, Duration::from_secs(20)).await;
    assert_eq!(since.len(), 10, "{since:?}");
    assert!(since.iter().all(|id| id.starts_with("new-")), "{since:?}");
    // Replay: back to the earliest, everything again.
    let (status, body) = reset(&stack, "since", "earliest").await;
    assert_eq!(status, 200, "{body}");
    let all: HashSet<String> = collect(&stack, "since", "", 20, Duration::from_secs(20)).await.into_iter().collect();
    assert_eq!(all.len(), 20, "{all:?}");
    // Back to the time, then to the latest: nothing left.
    let (status, _) = reset(&stack, "since", &t).await;
    assert_eq!(status, 200);
    let again = collect(&stack, "since", "", 10, Duration::from_secs(20)).await;
    assert!(again.len() == 10 && again.iter().all(|id| id.starts_with("new-")), "{again:?}");
    let (status, _) = reset(&stack, "since", "latest").await;
    assert_eq!(status, 200);
    let (_, body) = consume_on(&stack.http, stack.consumer_api.port, TOKEN, "group=since&wait_ms=500").await.unwrap();
    assert_eq!(body["count"], 0, "{body}");
    let (status, body) = reset(&stack, "since", "yesterday").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
}

/// Reads SSE `metadata` events from `port` until `want` arrived (or 20 s): (id, event id) each.
async fn read_stream(stack: &Stack, port: u16, group: &str, last_event_id: Option<&str>, want: usize) -> Vec<(String, String)> {
    let mut req = stack.http.get(format!("http://127.0.0.1:{port}/stream?group={group}")).bearer_auth(TOKEN);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut resp = req.send().await.unwrap();
    if resp.status() != 200 {
        let status = resp.status();
        panic!("{status}: {}", resp.text().await.unwrap_or_default());
    }
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (mut buffer, mut got) = (String::new(), Vec::new());
    let started = Instant::now();
    while got.len() < want && started.elapsed() < Duration::from_secs(20) {
        let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(12), resp.chunk()).await.unwrap_or(Ok(None)) else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                }
                if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                if got.len() < want {
                    got.push((data["event"]["id"].as_str().unwrap().to_owned(), id));
                }
            }
        }
    }
    // Dropping the response closes the connection, as a client going away.
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_resumes_on_another_replica_with_no_gap_and_no_duplicate() {
    let stack = Stack::start().await;
    let second = start_consumer_api(&stack.settings).await;
    ingest_many(&stack, "sse", 300).await;
    let first = read_stream(&stack, stack.consumer_api.port, "live", None, 120).await;
    assert_eq!(first.len(), 120);
    let last_id = first.last().unwrap().1.clone();
    // The client reconnects to the other replica, saying the last event it got.
    let rest = read_stream(&stack, second.port, "live", Some(&last_id), 180).await;
    let mut all: Vec<&String> = first.iter().chain(&rest).map(|(id, _)| id).collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (300, 300), "{} then {} events: a gap or a duplicate", first.len(), rest.len());
    // A forged Last-Event-ID is refused.
    let r = stack.http.get(stack.consumer_url("/stream?group=live")).bearer_auth(TOKEN).header("Last-Event-ID", "x.0:0.abc").send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_past_the_end_of_a_remade_topic_starts_the_group_over_with_reset() {
    use deadpool_redis::redis::AsyncCommands as _;
    let stack = Stack::start().await;
    ingest_many(&stack, "remade", 10).await;
    // The events are on the output topic once a fresh group sees them all.
    let seen = collect(&stack, "probe", "", 10, Duration::from_secs(30)).await;
    assert_eq!(seen.len(), 10, "{seen:?}");
    // Redis says group `old` stands far past the end of every partition: its topic was deleted
    // and made again while Redis kept the group.
    let key = format!("{}consume:{{old}}:pos", stack.settings.redis.key_prefix);
    let mut conn = stack.redis.get().await.unwrap();
    let _: () = conn.hset_multiple(&key, &[("0", 1_000_000i64), ("1", 1_000_000), ("2", 1_000_000)]).await.unwrap();
    let (status, body) = consume_on(&stack.http, stack.consumer_api.port, TOKEN, "group=old&max=100&wait_ms=2000").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reset"], true, "{body}");
    let mut got = ids(&body);
    got.extend(collect(&stack, "old", "", 10 - got.len(), Duration::from_secs(10)).await);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 10, "the remade topic's events, from its start: {got:?}");
}

/// An answer cut off in transit (found by the fault suite's `net-slow-consumer-api`): a client
/// that passes the cursor of the last answer it got whole gets the lost answer again after the
/// ack timeout; a call without a cursor acknowledges it, as documented, and it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_in_transit_comes_back_to_a_client_that_passes_its_last_cursor() {
    let stack = Stack::start_with(|s| {
        s.consumer_api.ack_timeout_ms = 1500;
    })
    .await;
    ingest_many(&stack, "transit", 20).await;
    let port = stack.consumer_api.port;
    for (group, with_cursor) in [("careful", true), ("plain", false)] {
        let mut first = Value::Null;
        let started = Instant::now();
        while first["count"].as_u64().unwrap_or(0) == 0 && started.elapsed() < Duration::from_secs(20) {
            first = consume_on(&stack.http, port, TOKEN, &format!("group={group}&max=5&wait_ms=500")).await.unwrap().1;
        }
        let cursor = first["cursor"].as_str().unwrap().to_owned();
        let mut got: HashSet<String> = ids(&first).into_iter().collect();
        // The next answer never arrives (the client never reads it).
        let (_, lost) = consume_on(&stack.http, port, TOKEN, &format!("group={group}&max=5&cursor={cursor}")).await.unwrap();
        let lost = ids(&lost);
        assert_eq!(lost.len(), 5, "{lost:?}");
        // The client retries: with the cursor it last got, or without one.
        let again = if with_cursor { format!("&cursor={cursor}") } else { String::new() };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            let (status, body) = consume_on(&stack.http, port, TOKEN, &format!("group={group}&max=100&wait_ms=300{again}")).await.unwrap();
            assert_eq!(status, 200, "{body}");
            got.extend(ids(&body));
        }
        let came_back = lost.iter().all(|id| got.contains(id));
        assert_eq!(came_back, with_cursor, "group {group}: the lost answer {lost:?}; got {got:?}");
        assert_eq!(got.len(), if with_cursor { 20 } else { 15 }, "group {group}: {got:?}");
    }
}

/// An entity's history: every version the pipeline published for it, newest first, with the
/// message headers (the trace context among them), and nothing of any other entity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entitys_history_lists_every_version_it_was_published_in_newest_first() {
    let stack = Stack::start().await;
    for (i, status) in ["open", "in progress", "done"].iter().enumerate() {
        assert_eq!(stack.ingest(&json!({"id": "ENT-1", "source": "jira", "payload": {"status": status, "step": i}})).await.0, 202);
        assert_eq!(stack.ingest(&json!({"id": format!("OTHER-{i}"), "source": "jira", "payload": {}})).await.0, 202);
        // One after the other: each version published before the next is sent.
        stack.consume("history-wait", 2 * (i + 1), Duration::from_secs(20)).await;
    }
    let (status, body) = stack.get("/metadata/jira/ENT-1/history").await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    let steps: Vec<i64> = events.iter().map(|e| e["event"]["payload"]["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [2, 1, 0], "{body}");
    assert!(events.iter().all(|e| e["event"]["id"] == "ENT-1" && e["headers"]["metastream-source"] == "jira"), "{body}");
    assert_eq!(body["complete"], true);
    // The newest, though only one per partition was held while reading.
    let (status, body) = stack.get("/metadata/jira/ENT-1/history?limit=1").await;
    let steps: Vec<i64> = body["events"].as_array().unwrap().iter().map(|e| e["event"]["payload"]["step"].as_i64().unwrap()).collect();
    assert_eq!((status, steps), (200, vec![2]), "{body}");
    let (status, body) = stack.get("/metadata/jira/NEVER/history").await;
    assert_eq!((status, body["events"].as_array().unwrap().len()), (200, 0), "{body}");
    let (status, body) = stack.get("/metadata/jira/ENT-1/history?limit=0").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
}
