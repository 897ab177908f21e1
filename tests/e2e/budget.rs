//! No accepted event can stop the pipeline: events at and just past every limit are either
//! refused at the gateway or reach the output or the dead-letter topic, and a normal event still
//! flows afterwards with every service ready.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use domain::limits::MAX_EVENT_DEPTH;
use domain::schema::headers;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{jira_event, Stack, TOKEN};

/// The length of `received_at` as the gateway writes it (`2024-07-20T12:34:56.789Z`).
const RECEIVED_AT: &str = "2024-07-20T12:34:56.789Z";

/// The bytes the gateway writes to the ingest topic for `body`.
fn wire_len(body: &Value) -> usize {
    let text = body.to_string();
    domain::ClientEvent::parse(text.as_bytes()).expect("a valid event").to_wire(RECEIVED_AT).len()
}

/// An event whose wire form is exactly `size` bytes, its payload padded with `pad`.
fn sized(source: &str, id: &str, size: usize, pad: &str) -> Value {
    let mut body = json!({"id": id, "source": source, "payload": {"s": ""}});
    let room = size - wire_len(&body);
    // What one `pad` costs once written as JSON (escapes included).
    let cost = serde_json::to_string(pad).unwrap().len() - 2;
    body["payload"]["s"] = json!(format!("{}{}", pad.repeat(room / cost), "x".repeat(room % cost)));
    assert_eq!(wire_len(&body), size);
    body
}

/// An event nesting `depth` levels, the event object being level 1.
fn nested(source: &str, id: &str, depth: usize) -> Vec<u8> {
    let arrays = depth - 2;
    format!(r#"{{"id":"{id}","source":"{source}","payload":{{"d":{}1{}}}}}"#, "[".repeat(arrays), "]".repeat(arrays)).into_bytes()
}

/// Where each accepted event ended, read from the output and dead-letter topics until every
/// one of `ids` is found or `within` passes: id -> (topic kind, dead-letter reason, reference).
async fn whereabouts(stack: &Stack, ids: &HashSet<String>, within: Duration) -> HashMap<String, (&'static str, Option<String>, bool)> {
    let started = Instant::now();
    let mut found = HashMap::new();
    let topics = &stack.settings.kafka.topics;
    while found.len() < ids.len() && started.elapsed() < within {
        for (kind, topic) in [("output", &topics.output), ("dead_letter", &topics.dead_letter)] {
            for m in stack.read_topic(topic, usize::MAX, Duration::from_secs(2)).await {
                let Some(id) = m.header(headers::EVENT_ID).filter(|id| ids.contains(*id)) else { continue };
                let reason = m.header(headers::DLQ_REASON).map(str::to_owned);
                found.insert(id.to_owned(), (kind, reason, m.header(headers::DLQ_REFERENCE).is_some()));
            }
        }
    }
    found
}

/// Every service answers `/readyz` 200, and a normal event reaches the output topic.
async fn still_flowing(stack: &Stack, id: &str) {
    for (name, port) in [("gateway", stack.gateway.port), ("pre-transformer", stack.pre.as_ref().unwrap().port), ("post-transformer", stack.post.port), ("consumer-api", stack.consumer_api.port)] {
        let mut ready = false;
        for _ in 0..50 {
            // A connection the server closed as the request went out (hyper's IncompleteMessage,
            // seen once under a loaded `make test`) is asked again; a stopped service never
            // answers 200, and the check after this loop sees its task finished.
            let Ok(r) = stack.http.get(format!("http://127.0.0.1:{port}/readyz")).send().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if r.status() == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(ready, "{name} is not ready after the boundary events");
    }
    for (name, running) in [("gateway", &stack.gateway), ("pre-transformer", stack.pre.as_ref().unwrap()), ("post-transformer", &stack.post)] {
        assert!(!running.task.is_finished(), "{name} stopped");
    }
    let mut event = jira_event();
    event["id"] = json!(id);
    let (status, body) = stack.ingest(&event).await;
    assert_eq!(status, 202, "{body}");
    let ids = HashSet::from([id.to_owned()]);
    let found = whereabouts(stack, &ids, Duration::from_secs(30)).await;
    assert_eq!(found.get(id).map(|f| f.0), Some("output"), "a normal event sent after the boundary events did not reach the output topic");
}

/// The gateway's event size limit, from the 413 of an event surely too large.
async fn max_event_bytes(stack: &Stack) -> usize {
    let (status, body) = stack.post_json("/ingest", sized("bounds", "probe", 1_040_000, "x").to_string().into_bytes()).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("event_too_large")), "{body}");
    let limit = body["limit"].as_u64().expect("413 names the limit") as usize;
    assert!(body["message"].as_str().unwrap().contains(&limit.to_string()), "{body}");
    // Derived from the broker's topics (max.message.bytes 1048588, librdkafka's
    // message.max.bytes 1000000) less the record overhead and the envelope allowance.
    assert_eq!(limit, 1_000_000 - domain::limits::RECORD_OVERHEAD - domain::limits::ENVELOPE_ALLOWANCE);
    limit
}

/// A boundary case: its name, path and body; the status it must get, its error code when refused,
/// and where it must end when accepted (`output` or `dead_letter`).
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_events_are_refused_at_the_gateway_or_reach_output_or_dead_letters() {
    let stack = Stack::start().await;
    stack.put_source(json!({"source": "bounds", "pre": [{"op": "add_timestamp"}], "post": [{"op": "add_processing_info"}], "version": 1})).await;
    // A post operation that grows every event by 20 KB: the largest events outgrow the output
    // topic after it, and must be dead-lettered one by one, not stop the stage.
    stack.put_source(json!({"source": "grows", "post": [{"op": "insert_field", "params": {"target": "metadata.blob", "value": "g".repeat(20_000)}}], "version": 1})).await;
    let limit = max_event_bytes(&stack).await;
    let max_body = stack.settings.gateway.max_body_bytes;

    let mut cases: Vec<Case> = vec![
        ("body past max_body_bytes", "/ingest", sized("bounds", "b-body", max_body + 100, "x").to_string().into_bytes(), 413, "payload_too_large", ""),
        ("event past the budget", "/ingest", sized("bounds", "b-over", limit + 1, "x").to_string().into_bytes(), 413, "event_too_large", ""),
        ("event far past the budget, under max_body_bytes", "/ingest", sized("bounds", "b-over2", 1_030_000, "x").to_string().into_bytes(), 413, "event_too_large", ""),
        ("the largest event", "/ingest", sized("bounds", "b-max", limit, "x").to_string().into_bytes(), 202, "", "output"),
        ("the largest event, multi-byte characters", "/ingest", sized("bounds", "b-max-utf8", limit, "€").to_string().into_bytes(), 202, "", "output"),
        ("the largest event, escapes", "/ingest", sized("bounds", "b-max-esc", limit, "\\\"").to_string().into_bytes(), 202, "", "output"),
        ("the largest event, then a growing post operation", "/ingest", sized("grows", "b-grows", limit, "x").to_string().into_bytes(), 202, "", "dead_letter"),
        ("nested at the depth limit", "/ingest", nested("bounds", "b-deep", MAX_EVENT_DEPTH), 202, "", "output"),
        ("nested one past the depth limit", "/ingest", nested("bounds", "b-deep+1", MAX_EVENT_DEPTH + 1), 400, "invalid_event", ""),
        ("nested at the parser's limit", "/ingest", nested("bounds", "b-deep127", 127), 400, "invalid_event", ""),
        ("the longest id", "/ingest", json!({"id": "i".repeat(256), "source": "bounds", "payload": {}}).to_string().into_bytes(), 202, "", "output"),
        ("an id one byte too long", "/ingest", json!({"id": "i".repeat(257), "source": "bounds", "payload": {}}).to_string().into_bytes(), 400, "invalid_event", ""),
        ("an id of quotes and multi-byte characters", "/ingest", json!({"id": "\"é\\🙂".repeat(32), "source": "bounds", "payload": {}}).to_string().into_bytes(), 202, "", "output"),
        ("a source one byte too long", "/ingest", json!({"id": "1", "source": "s".repeat(65), "payload": {}}).to_string().into_bytes(), 400, "invalid_event", ""),
        ("the largest numbers", "/ingest", br#"{"id":"b-num","source":"bounds","payload":{"f":1.7976931348623157e308,"u":18446744073709551615,"i":-9223372036854775808,"tiny":5e-324}}"#.to_vec(), 202, "", "output"),
        ("a number out of range", "/ingest", br#"{"id":"b-num2","source":"bounds","payload":{"f":1e400}}"#.to_vec(), 400, "invalid_event", ""),
        ("unicode everywhere", "/ingest", json!({"id": "b-uni-\u{1F600}\u{0301}", "source": "bounds", "payload": {"\u{1F600}": "\u{FEFF}\u{202E}x\u{10FFFF}"}, "metadata": {"ß": "\u{0000}"}}).to_string().into_bytes(), 202, "", "output"),
    ];
    let batch_over = format!("[{}]", (0..=stack.settings.gateway.max_batch_events).map(|i| json!({"id": i.to_string(), "source": "bounds", "payload": {}}).to_string()).collect::<Vec<_>>().join(","));
    cases.push(("a batch one event too many", "/ingest/batch", batch_over.into_bytes(), 413, "too_many_events", ""));

    let mut expected: HashMap<String, &str> = HashMap::new();
    for (name, path, body, status, code, end) in cases {
        let id = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["id"].as_str().map(str::to_owned));
        let (got, answer) = stack.post_json(path, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        if status >= 400 {
            assert_eq!(answer["error"], code, "{name}: {answer}");
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: {answer}");
        } else {
            expected.insert(id.expect("an accepted event has an id"), end);
        }
    }

    // A batch mixing an event past the budget with good ones: that one is rejected, the others
    // accepted.
    let batch = format!(
        "[{},{},{}]",
        json!({"id": "b-batch-1", "source": "bounds", "payload": {}}),
        sized("bounds", "b-batch-big", limit + 1, "x"),
        json!({"id": "b-batch-3", "source": "bounds", "payload": {}}),
    );
    let (status, answer) = stack.post_json("/ingest/batch", batch.into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(2), Some(1)), "{answer}");
    assert_eq!(answer["results"][1]["error"], "event_too_large", "{answer}");
    expected.insert("b-batch-1".into(), "output");
    expected.insert("b-batch-3".into(), "output");

    let ids: HashSet<String> = expected.keys().cloned().collect();
    let found = whereabouts(&stack, &ids, Duration::from_secs(30)).await;
    for (id, end) in &expected {
        let short: String = id.chars().take(40).collect();
        let Some((kind, reason, _)) = found.get(id) else { panic!("accepted event {short} reached neither the output nor the dead-letter topic within 30 s") };
        assert_eq!(kind, end, "accepted event {short} ended on the {kind} topic (reason {reason:?})");
        if *kind == "dead_letter" {
            assert_eq!(reason.as_deref(), Some("too_large"), "{short}");
        }
    }
    still_flowing(&stack, "after-the-boundary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_becomes_a_reference() {
    // A dead-letter topic that takes at most 64 KiB, created before the services start.
    let stack = Stack::start_with(|s| {
        let admin: rdkafka::admin::AdminClient<_> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &s.kafka.bootstrap_servers).create().unwrap();
        let topic = rdkafka::admin::NewTopic::new(&s.kafka.topics.dead_letter, 1, rdkafka::admin::TopicReplication::Fixed(1))
            .set("max.message.bytes", "65536");
        let (topics, options) = ([topic], rdkafka::admin::AdminOptions::new());
        let created = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(admin.create_topics(&topics, &options))).unwrap();
        assert!(created[0].is_ok(), "{created:?}");
    })
    .await;
    stack.put_source(json!({"source": "poisoned", "pre": [{"op": "cast", "params": {"fields": {"payload.n": "int"}}}], "on_error": "dead_letter", "version": 1})).await;
    let big = json!({"id": "big-poison", "source": "poisoned", "payload": {"n": "not a number", "s": "x".repeat(200_000)}});
    let (status, answer) = stack.ingest(&big).await;
    assert_eq!(status, 202, "{answer}");
    let small = json!({"id": "small-poison", "source": "poisoned", "payload": {"n": "nope"}});
    assert_eq!(stack.ingest(&small).await.0, 202);

    let dead = stack.read_topic(&stack.settings.kafka.topics.dead_letter, 2, Duration::from_secs(30)).await;
    let by_id = |id: &str| dead.iter().find(|m| m.header(headers::EVENT_ID) == Some(id)).unwrap_or_else(|| panic!("no dead letter for {id}"));
    let reference = by_id("big-poison");
    assert_eq!(reference.header(headers::DLQ_REFERENCE), Some("true"));
    assert_eq!(reference.header(headers::DLQ_REASON), Some("operation_failed"));
    let doc: Value = serde_json::from_slice(&reference.payload).unwrap();
    let r = &doc["dead_letter_reference"];
    assert_eq!(r["topic"], stack.settings.kafka.topics.ingest.as_str());
    assert_eq!(r["event_id"], "big-poison");
    assert_eq!(r["source"], "poisoned");
    assert!(r["size"].as_u64().unwrap() > 200_000, "{r}");
    assert!(r["offset"].is_i64() && r["partition"].is_i64(), "{r}");
    // A small one is copied whole, as always.
    let copy = by_id("small-poison");
    assert_eq!(copy.header(headers::DLQ_REFERENCE), None);
    assert_eq!(serde_json::from_slice::<Value>(&copy.payload).unwrap()["id"], "small-poison");

    // The reference counts, and the pipeline moves on.
    let metrics = stack.http.get(format!("http://127.0.0.1:{}/metrics", stack.pre.as_ref().unwrap().port)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("metastream_dead_letter_references_total{") && l.contains("reason=\"operation_failed\"") && l.ends_with(" 1")),
        "no reference counted:\n{}",
        metrics.lines().filter(|l| l.contains("dead_letter")).collect::<Vec<_>>().join("\n")
    );
    still_flowing(&stack, "after-the-reference").await;
}

/// The gateway's `metastream_in_flight_requests`, read from its `/metrics`.
async fn in_flight(stack: &Stack) -> i64 {
    let text = stack.http.get(stack.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("metastream_in_flight_requests"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("metastream_in_flight_requests on /metrics") as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_bodies_time_out_with_408_and_free_their_permits() {
    let stack = Stack::start_with(|s| s.gateway.body_timeout_ms = 1000).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.gateway.port)).await.unwrap();
        let head = format!(
            "POST /ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"id\":\"slow-{i}\","
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        clients.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(in_flight(&stack).await, 20, "the half-sent requests hold their permits while the body may still come");
    let started = Instant::now();
    for mut tcp in clients {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "the 408s took {:?}", started.elapsed());
    assert_eq!(in_flight(&stack).await, 0, "permits still held after the body timeout");
    // And the gateway takes events as before.
    assert_eq!(stack.ingest(&jira_event()).await.0, 202);
}

/// A processor whose effects are never done: its delivery task fails (a panic), as a bug in a
/// stage would make it.
struct BrokenProcessor;

impl adapters::stage::Processor for BrokenProcessor {
    async fn process(&self, _batch: &[rdkafka::message::OwnedMessage]) -> Result<adapters::stage::Processed, adapters::stage::Interrupted> {
        Ok(adapters::stage::Processed { outgoing: Vec::new(), on_delivered: Box::new(|| panic!("the batch's effects failed")) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_pipeline_breaks_ends_with_an_error_not_a_clean_stop() {
    crate::harness::require_infrastructure();
    let settings = crate::harness::test_settings();
    let shutdown = adapters::shutdown::CancellationToken::new();
    let runner = adapters::stage::StageRunner::build(settings.clone(), adapters::settings::Service::PreTransformer, shutdown.clone()).await.unwrap();
    let run = tokio::spawn(runner.run(BrokenProcessor));
    let gateway = crate::harness::start_gateway(&settings).await;
    let r = reqwest::Client::new().post(format!("http://127.0.0.1:{}/ingest", gateway.port)).bearer_auth(TOKEN).json(&jira_event()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let ended = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the runner did not stop on a broken pipeline").unwrap();
    let err = ended.expect_err("a broken pipeline must end the runner with an error (a non-zero exit), not Ok");
    assert!(err.to_string().contains("delivery task failed"), "{err:#}");
    assert!(!shutdown.is_cancelled(), "nobody asked it to stop");
    // What `main` makes of it: a failure exit code.
    assert_eq!(adapters::shutdown::exit_code(Err(err)), std::process::ExitCode::FAILURE);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_holds_the_stage_not_ready_until_it_is_back() {
    let stack = Stack::start().await;
    stack.put_source(json!({"source": "poisoned", "pre": [{"op": "cast", "params": {"fields": {"payload.n": "int"}}}], "on_error": "dead_letter", "version": 1})).await;
    let topics = stack.settings.kafka.topics.clone();
    let admin: rdkafka::admin::AdminClient<_> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &stack.settings.kafka.bootstrap_servers).create().unwrap();
    let options = rdkafka::admin::AdminOptions::new();
    admin.delete_topics(&[&topics.dead_letter], &options).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (status, body) = stack.ingest(&json!({"id": "p1", "source": "poisoned", "payload": {"n": "x"}})).await;
    assert_eq!(status, 202, "{body}");
    let pre_port = stack.pre.as_ref().unwrap().port;
    let ready = || async { stack.http.get(format!("http://127.0.0.1:{pre_port}/readyz")).send().await.unwrap().status().as_u16() };
    let started = Instant::now();
    while ready().await == 200 && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ready().await, 503, "the pre-transformer should report not ready while it cannot dead-letter");
    assert!(!stack.pre.as_ref().unwrap().task.is_finished(), "the pre-transformer stopped instead of retrying");

    // The topic comes back: the held dead letter is written and the stage is ready again.
    let topic = rdkafka::admin::NewTopic::new(&topics.dead_letter, 3, rdkafka::admin::TopicReplication::Fixed(1));
    admin.create_topics(&[topic], &options).await.unwrap();
    let dead = stack.read_topic(&topics.dead_letter, 1, Duration::from_secs(90)).await;
    assert_eq!(dead.first().and_then(|m| m.header(headers::EVENT_ID)), Some("p1"));
    let started = Instant::now();
    while ready().await != 200 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ready().await, 200);
    still_flowing(&stack, "after-the-outage").await;
}
