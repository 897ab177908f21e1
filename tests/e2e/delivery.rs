//! Nothing is lost: volume, a crashed transformer, poison messages.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use domain::schema::headers;
use futures_util::stream::{self, StreamExt as _};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::json;

use crate::harness::{start_pre, Stack};

async fn ingest_range(stack: &Stack, ids: std::ops::Range<usize>) {
    ingest_counted(stack, ids, &AtomicUsize::new(0)).await;
}

/// Ingests `ev-<i>` for each i, counting acknowledged events in `acked`.
async fn ingest_counted(stack: &Stack, ids: std::ops::Range<usize>, acked: &AtomicUsize) {
    let results: Vec<(u16, serde_json::Value)> = stream::iter(ids)
        .map(|i| {
            let source = ["jira", "github", "serviceX"][i % 3];
            async move {
                let r = stack.ingest(&json!({"id": format!("ev-{i}"), "source": source, "payload": {"i": i}})).await;
                acked.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, body) in results {
        assert_eq!(status, 202, "{body}");
    }
}

fn distinct_ids(events: &[serde_json::Value]) -> HashSet<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_in_a_thousand_distinct_events_out() {
    let stack = Stack::start().await;
    ingest_range(&stack, 0..1000).await;
    let events = stack.consume("default", 1000, Duration::from_secs(60)).await;
    let ids = distinct_ids(&events);
    assert_eq!(ids.len(), 1000, "distinct events delivered");
    assert_eq!(events.len(), 1000, "no duplicates without failures");
    for e in &events {
        assert!(e["metadata"]["processing_info"].is_object(), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_transformer_killed_mid_stream_loses_nothing() {
    let mut stack = Stack::start().await;
    let pre = stack.pre.take().unwrap();
    let acked = AtomicUsize::new(0);
    let restarted = async {
        // Crash it while events are flowing, then start a new instance in the same group: it
        // resumes from the last committed offsets.
        while acked.load(Ordering::Relaxed) < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pre.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        start_pre(&stack.settings).await
    };
    let ((), new_pre) = tokio::join!(ingest_counted(&stack, 0..800, &acked), restarted);
    stack.pre = Some(new_pre);

    let events = stack.consume_distinct("default", 800, Duration::from_secs(90)).await;
    let ids = distinct_ids(&events);
    let missing: Vec<_> = (0..800).map(|i| format!("ev-{i}")).filter(|id| !ids.contains(id)).collect();
    assert!(missing.is_empty(), "lost {} events, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    // At least once: a redelivered batch may show up twice; report it.
    eprintln!("delivered {} events for 800 ids ({} duplicates)", events.len(), events.len() - ids.len());
    for i in [0, 299, 300, 599, 799] {
        assert!(stack.stored(["jira", "github", "serviceX"][i % 3], &format!("ev-{i}")).await.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_topic_without_blocking_its_partition() {
    let stack = Stack::start().await;
    let producer = stack.raw_producer();
    // Same key as the good event below, so both land in one partition, poison first.
    let topic = &stack.settings.kafka.topics.ingest;
    producer
        .send(FutureRecord::to(topic).key("jira:after-poison").payload("this is not json"), Timeout::Never)
        .await
        .unwrap();
    let (status, _) = stack.ingest(&json!({"id": "after-poison", "source": "jira", "payload": {}})).await;
    assert_eq!(status, 202);

    let events = stack.consume("default", 1, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "after-poison");

    let dead = stack.read_topic(&stack.settings.kafka.topics.dead_letter, 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.payload, b"this is not json");
    assert_eq!(d.header(headers::DLQ_STAGE), Some("pre"));
    assert_eq!(d.header(headers::DLQ_REASON), Some("unparseable"));
    assert_eq!(d.header(headers::DLQ_TOPIC), Some(topic.as_str()));
    assert!(d.header(headers::DLQ_OFFSET).is_some());
    assert!(d.header(headers::DLQ_ERROR).unwrap().contains("expected"), "{:?}", d.headers);
}

/// The stages keep a payload as its text unless an operation reads it, but what enters from
/// the ingest topic is checked as the gateway checks it: a payload no JSON parser reads back
/// (written there by something other than the gateway) is dead-lettered even where no operation
/// reads it (jira's `add_timestamp`), and the events around it are delivered as sent — key order
/// and spacing kept, which re-serializing used to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_no_parser_reads_back_is_dead_lettered_and_good_payloads_pass_as_sent() {
    let stack = Stack::start().await;
    let producer = stack.raw_producer();
    let topic = &stack.settings.kafka.topics.ingest;
    let payloads = [
        (r#"{"id":"lazy-1","source":"jira","payload":{"title":"before"}}"#, None),
        (r#"{"id":"lazy-2","source":"jira","payload":{"n":1e400}}"#, Some("number out of range")),
        (r#"{"id":"lazy-3","source":"jira","payload":{"s":"\ud800"}}"#, Some("hex escape")),
        (r#"{"id":"lazy-4","source":"jira","payload":{"z": 1, "a":  [1.50, "\u00e9"]}}"#, None),
    ];
    // One key, one partition: the good events around the bad ones.
    for (body, _) in payloads {
        producer.send(FutureRecord::to(topic).key("jira:lazy").payload(body), Timeout::Never).await.unwrap();
    }

    let mut events = stack.consume("default", 2, Duration::from_secs(20)).await;
    // (Published keyed by entity: two entities, maybe two partitions, in either order.)
    events.sort_by_key(|e| e["id"].as_str().map(str::to_owned));
    assert_eq!(events.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), ["lazy-1", "lazy-4"]);
    assert_eq!(events[1]["payload"], json!({"z": 1, "a": [1.5, "é"]}));
    assert!(events[1]["metadata"]["processed_at"].is_string(), "the operation ran: {}", events[1]);
    let mut conn = stack.redis.get().await.unwrap();
    let key = domain::KeySchema::new(&stack.settings.redis.key_prefix)
        .processed(&domain::SourceName::parse("jira").unwrap(), &domain::EventId::parse("lazy-4").unwrap());
    let stored: String = deadpool_redis::redis::AsyncCommands::get(&mut conn, key).await.unwrap();
    assert!(stored.contains(r#""payload":{"z": 1, "a":  [1.50, "\u00e9"]}"#), "stored as sent: {stored}");

    let dead = stack.read_topic(&stack.settings.kafka.topics.dead_letter, 2, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 2);
    for (d, (body, error)) in dead.iter().zip(&payloads[1..3]) {
        assert_eq!(d.payload, body.as_bytes(), "as it came");
        assert_eq!(d.header(headers::DLQ_STAGE), Some("pre"));
        assert_eq!(d.header(headers::DLQ_REASON), Some("unparseable"));
        let said = d.header(headers::DLQ_ERROR).unwrap();
        assert!(said.starts_with("payload: ") && said.contains(error.unwrap()), "{said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_ingest_answers_per_event_in_order_and_one_bad_event_rejects_no_other() {
    let stack = Stack::start().await;
    let batch = json!([
        {"id": "b-1", "source": "jira", "payload": {}},
        {"id": "b-2", "source": "jira"},
        {"id": "b-3", "source": "nope", "payload": {}},
        {"id": "b-4", "source": "github", "payload": {"n": 4}}
    ]);
    let r = stack.http.post(stack.gateway_url("/ingest/batch")).bearer_auth(crate::harness::TOKEN).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(2), Some(2)), "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "accepted");
    assert!(results[0]["offset"].is_i64());
    assert_eq!(results[1]["error"], "invalid_event");
    assert!(results[1]["message"].as_str().unwrap().contains("`payload`"));
    assert_eq!(results[2]["error"], "unknown_source");
    assert_eq!(results[3]["id"], "b-4");

    // NDJSON, one event per line.
    let ndjson = "{\"id\":\"n-1\",\"source\":\"serviceX\",\"payload\":{}}\n{\"id\":\"n-2\",\"source\":\"serviceX\",\"payload\":{}}\n";
    let r = stack
        .http
        .post(stack.gateway_url("/ingest/batch"))
        .bearer_auth(crate::harness::TOKEN)
        .header("Content-Type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2, "{body}");

    let events = stack.consume("default", 4, Duration::from_secs(20)).await;
    assert_eq!(distinct_ids(&events), ["b-1", "b-4", "n-1", "n-2"].iter().map(|s| s.to_string()).collect());
}

/// The store's compare-and-set keeps a newer update over an older one, whichever form the
/// stored record has: the current one (ingest position first) or one parsed whole (records
/// written before that form, or by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_update_never_overwrites_a_newer_stored_record_in_either_form() {
    use deadpool_redis::redis::AsyncCommands as _;
    let stack = Stack::start().await;
    for (round, current_form) in [(0, true), (1, false)] {
        let id = format!("cas-{round}");
        let key = domain::KeySchema::new(&stack.settings.redis.key_prefix)
            .processed(&domain::SourceName::parse("jira").unwrap(), &domain::EventId::parse(&id).unwrap());
        let (status, answer) = stack.ingest(&json!({"id": id, "source": "jira", "payload": {"round": round}})).await;
        assert_eq!(status, 202, "{answer}");
        let (partition, offset) = (answer["partition"].as_i64().unwrap(), answer["offset"].as_i64().unwrap());
        wait_for(|| async { stack.stored("jira", &id).await.is_some_and(|r| r["payload"]["round"] == round) }).await;

        // A newer update of the entity (a much later offset of the same partition) is stored...
        let mut newer = domain::Event::from_client_value(json!({"id": id, "source": "jira", "payload": {"newer": round}})).unwrap();
        newer.provenance.ingest_partition = Some(partition as i32);
        newer.provenance.ingest_offset = Some(offset + 1_000_000);
        let bytes = if current_form { newer.to_record() } else { newer.to_wire() };
        assert_eq!(bytes.starts_with(br#"{"provenance""#), current_form);
        let mut conn = stack.redis.get().await.unwrap();
        let _: () = conn.set(&key, bytes).await.unwrap();

        // ...so the next update through the pipeline, with a smaller offset, is stale.
        let (status, answer) = stack.ingest(&json!({"id": id, "source": "jira", "payload": {"round": round, "late": true}})).await;
        assert_eq!(status, 202, "{answer}");
        // It is still published (every acknowledged update is); once it is, the store was decided.
        let started = std::time::Instant::now();
        let mut published = Vec::new();
        while !published.iter().any(|e: &serde_json::Value| e["payload"] == json!({"round": round, "late": true})) {
            assert!(started.elapsed() < Duration::from_secs(30), "the stale update was not published: {published:?}");
            published.extend(stack.consume("cas", 1, Duration::from_secs(1)).await);
        }
        let stored = stack.stored("jira", &id).await.unwrap();
        assert_eq!(stored["payload"], json!({"newer": round}), "form {}: the newer record was overwritten", if current_form { "current" } else { "parsed" });
    }
}

/// Polls `check` until it holds (10 s at most).
async fn wait_for<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Once traffic stops, every batch a transformer finished is committed (within the commit
/// interval) without waiting for more messages: a stage that goes idle leaves no lag behind and
/// a restart redelivers nothing it had finished — read from its committed offsets, its input
/// holds nothing more (under exactly once, a transaction's commit marker may follow the last
/// message; readers skip it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stage_commits_all_it_finished() {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::Message as _;
    let stack = Stack::start().await;
    ingest_range(&stack, 0..300).await;
    assert_eq!(distinct_ids(&stack.consume("idle", 300, Duration::from_secs(60)).await).len(), 300);
    let s = &stack.settings;
    for (group, topic) in [(&s.pre_transformer.group_id, &s.kafka.topics.ingest), (&s.post_transformer.group_id, &s.kafka.topics.processed)] {
        let reader: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &s.kafka.bootstrap_servers)
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            let mut tpl = rdkafka::TopicPartitionList::new();
            for partition in 0..s.kafka.partitions {
                tpl.add_partition(topic, partition);
            }
            let committed = reader.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
            let mut from = rdkafka::TopicPartitionList::new();
            for e in committed.elements() {
                let offset = match e.offset() {
                    rdkafka::Offset::Offset(o) => rdkafka::Offset::Offset(o),
                    _ => rdkafka::Offset::Beginning,
                };
                from.add_partition_offset(topic, e.partition(), offset).unwrap();
            }
            reader.assign(&from).unwrap();
            let mut redelivered = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_millis(1500);
            while std::time::Instant::now() < deadline {
                if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                    redelivered.push((m.partition(), m.offset()));
                }
            }
            if redelivered.is_empty() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(8), "{group} left work uncommitted while idle: {redelivered:?}");
        }
    }
}
