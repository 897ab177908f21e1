//! A transformer's consumer whose partition stands still with records waiting ends its process
//! with exit code 75 (`adapters::liveness`), and one that is merely idle does not. Each consumer
//! runs in a child process (this test binary, running one ignored test), since giving up ends
//! the process. The limits are shortened (3 s instead of 60 s); the rule is the same.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adapters::kafka::Commits;
use adapters::liveness::{FetchWatch, Input, Limits};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;

use crate::harness;

const TOPIC: &str = "METASTREAM_TEST_LIVENESS_TOPIC";
const PAUSE: &str = "METASTREAM_TEST_LIVENESS_PAUSE";

/// Run by the test below in a child process: a consumer under a liveness watch takes one record,
/// then (with `PAUSE` set) pauses its partitions, as a consumer whose fetches stopped would
/// look; it keeps polling (statistics come with polls) for 15 s.
#[tokio::test]
#[ignore = "run in a child process by a_consumer_whose_partition_stands_still_with_records_waiting_exits_75"]
async fn consumes_under_a_liveness_watch() {
    harness::init_logging();
    let topic = std::env::var(TOPIC).expect("the topic to read");
    let pause = std::env::var(PAUSE).is_ok();
    let mut settings = harness::test_settings();
    settings.kafka.consumer_properties.insert("statistics.interval.ms".into(), "500".into());
    let limits = Limits { partition: Duration::from_secs(3), group: Duration::from_secs(60), end_period: Duration::from_millis(500), sample_gap: Duration::from_secs(3) };
    let watch = FetchWatch::start_with(&settings.kafka, Input::Plain, limits).unwrap();
    let group = format!("{topic}.liveness-{}", uuid::Uuid::new_v4().simple());
    let consumer = adapters::kafka::consumer(&settings.kafka, &group, &[&topic], None, Commits::StoredEvery(Duration::from_secs(3600)), None, Some(watch)).unwrap();
    tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("a record within 30 s").unwrap();
    if pause {
        consumer.pause(&consumer.assignment().unwrap()).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    }
}

/// Runs the child consumer on `topic`; its exit code, how long it ran, and what it wrote.
fn child(topic: &str, pause: bool) -> (Option<i32>, Duration, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", "liveness::consumes_under_a_liveness_watch", "--ignored", "--nocapture", "--test-threads=1"]).env(TOPIC, topic).env("TEST_LOG", "error");
    if pause {
        command.env(PAUSE, "1");
    }
    let started = Instant::now();
    let output = command.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), started.elapsed(), text)
}

#[tokio::test]
async fn a_consumer_whose_partition_stands_still_with_records_waiting_exits_75() {
    harness::require_infrastructure();
    let settings = harness::test_settings();
    adapters::kafka::ensure_topics(&settings.kafka).await.unwrap();
    let topic = settings.kafka.topics.ingest.clone();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &settings.kafka.bootstrap_servers).create().unwrap();
    for i in 0..30 {
        let key = format!("entity-{i}");
        producer.send(FutureRecord::to(&topic).key(&key).payload("{}"), Duration::from_secs(10)).await.unwrap();
    }

    let (paused, idle) = tokio::join!(
        tokio::task::spawn_blocking({
            let topic = topic.clone();
            move || child(&topic, true)
        }),
        tokio::task::spawn_blocking(move || child(&topic, false)),
    );
    let (code, ran, text) = paused.unwrap();
    // Exit 75 can only come from the watch, before the child's 15 s of polling end (after them
    // it exits 0): how long it took before its first record depends on the broker's load.
    assert_eq!(code, Some(adapters::watchdog::EXIT_HUNG), "the paused consumer must give up within its 15 s of polling (it ran {ran:?}); it wrote:\n{text}");
    assert!(text.contains("has not moved for"), "the ERROR names the partition that stood still:\n{text}");
    let (code, ran, text) = idle.unwrap();
    assert_eq!(code, Some(0), "a consumer that read everything and idles is not stalled; it wrote:\n{text}");
    assert!(ran >= Duration::from_secs(15), "{ran:?}");
}
