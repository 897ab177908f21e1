//! The raw Kafka modes (`kafka-produce`, `kafka-roundtrip`), the consumer that times events
//! on their way out, and topic set-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::args::{event, filler, Args};
use crate::report::{now_us, record, Counters};

/// What the load generator reads of a published event: its sequence number.
#[derive(serde::Deserialize)]
pub struct Published {
    pub payload: PublishedPayload,
}

#[derive(serde::Deserialize)]
pub struct PublishedPayload {
    pub seq: u64,
}

/// A raw rdkafka producer as a careful user would set one up: acks=all, idempotent, 5 ms linger.
fn raw_producer(kafka: &str) -> anyhow::Result<FutureProducer> {
    Ok(rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?)
}

pub async fn run_kafka_produce(args: &Args, counters: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>) -> anyhow::Result<()> {
    let producer = raw_producer(&args.kafka)?;
    let payload = event(args, &filler(args), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (producer, counters, latency, payload, topic, rate) =
            (producer.clone(), counters.clone(), latency.clone(), payload.clone(), args.topic.clone(), args.rate);
        tasks.push(tokio::spawn(async move {
            let interval = rate.map(|r| Duration::from_secs_f64(1.0 / (r as f64 / 1.0)));
            let started = Instant::now();
            let mut k: u64 = c as u64;
            // Each client keeps a window of sends in flight, as an async producer would.
            let mut inflight = futures_util::stream::FuturesUnordered::new();
            use futures_util::StreamExt as _;
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(iv) = interval {
                    let due = started + iv * k as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                let key = format!("k{}", k % 10_000);
                let p = producer.clone();
                let payload = payload.clone();
                let topic = topic.clone();
                let t0 = Instant::now();
                counters.sent.fetch_add(1, Ordering::Relaxed);
                inflight.push(async move {
                    let r = p.send(FutureRecord::to(&topic).key(&key).payload(&payload), Timeout::Never).await;
                    (r.is_ok(), t0.elapsed())
                });
                k += 1;
                while inflight.len() >= 256 {
                    if let Some((ok, d)) = inflight.next().await {
                        record(&counters, &latency, ok, d);
                    }
                }
            }
            while let Some((ok, d)) = inflight.next().await {
                record(&counters, &latency, ok, d);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// A consumer of `topic` from its end, positioned before the load starts: assigned every
/// partition at its current end (no group to join, no offset reset to wait for), so every
/// message produced from here on is read, the first ones as promptly as the rest. (It joined a
/// group and waited at most 500 ms for the assignment: the first events of a run waited for the
/// join and the `latest` reset — with a cold producer and a fresh topic, the round trip's p99
/// of ~480 ms against a p50 of 4 ms.)
pub async fn latency_consumer(kafka: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", format!("loadgen-{}", now_us()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions (does it exist?)");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in partitions {
        let (_, end) = consumer.fetch_watermarks(topic, p, timeout)?;
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Offset(end))?;
    }
    consumer.assign(&assignment)?;
    // Its first fetches go out before the load starts.
    let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    Ok(consumer)
}

/// Where a published event's time went, hop by hop (µs, from millisecond Kafka timestamps):
/// the client's send → the gateway's produce (the ingest message's timestamp, carried as
/// `metastream-ingested-at-ms`) → the pre-transformer's notice (`metastream-noticed-at-ms`) →
/// the post-transformer's publish (the output message's timestamp) → this reader. A hop after a
/// transactional producer includes the wait for its transaction's commit.
pub struct Hops(pub [Histogram<u64>; 4]);

impl Hops {
    pub const NAMES: [&str; 4] = ["send_to_gateway", "gateway_to_notice", "notice_to_publish", "publish_to_read"];

    pub fn new() -> Hops {
        Hops(std::array::from_fn(|_| crate::report::histogram()))
    }

    fn record<M: Message>(&mut self, m: &M, sent_us: u64, read_us: u64) {
        let header = |name: &str| -> Option<u64> {
            let h = m.headers()?.iter().find(|h| h.key == name)?;
            std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok().map(|ms| ms * 1000)
        };
        let (Some(ingested), Some(noticed), Some(published)) =
            (header("metastream-ingested-at-ms"), header("metastream-noticed-at-ms"), m.timestamp().to_millis().map(|ms| ms as u64 * 1000))
        else {
            return;
        };
        for (hist, (from, to)) in self.0.iter_mut().zip([(sent_us, ingested), (ingested, noticed), (noticed, published), (published, read_us)]) {
            let _ = hist.record(to.saturating_sub(from).max(1));
        }
    }
}

/// The worst e2e latency of the events sent in each second of a run (by send time): whether a
/// tail comes from a few stalls, and when, or from all along.
pub struct WorstBySecond {
    start_us: u64,
    worst_us: Vec<u64>,
}

impl WorstBySecond {
    pub fn new() -> WorstBySecond {
        WorstBySecond { start_us: now_us(), worst_us: Vec::new() }
    }

    fn record(&mut self, sent_us: u64, latency_us: u64) {
        let second = (sent_us.saturating_sub(self.start_us) / 1_000_000) as usize;
        if second >= 3600 {
            return;
        }
        if self.worst_us.len() <= second {
            self.worst_us.resize(second + 1, 0);
        }
        self.worst_us[second] = self.worst_us[second].max(latency_us);
    }

    /// Milliseconds, one per second of the run (0: nothing sent that second arrived).
    pub fn millis(&self) -> Vec<f64> {
        self.worst_us.iter().map(|us| (*us as f64 / 100.0).round() / 10.0).collect()
    }
}

/// Records, for each message `consumer` receives until `stop`, how long after sending it
/// arrived (matched by the sequence number in `sent_at`, or by the embedded send time), the
/// worst of each second, and, with `hops`, where that time went.
pub async fn consume_latency(
    consumer: StreamConsumer,
    sent_at: Option<Arc<Mutex<HashMap<u64, u64>>>>,
    hist: Arc<Mutex<Histogram<u64>>>,
    worst: Arc<Mutex<WorstBySecond>>,
    hops: Option<Arc<Mutex<Hops>>>,
    received: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            m = consumer.recv() => {
                let Ok(m) = m else { continue };
                let now = now_us();
                let sent = match &sent_at {
                    Some(map) => m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Published>(p).ok())
                        .and_then(|e| map.lock().unwrap().remove(&e.payload.seq)),
                    None => m.payload().and_then(|p| std::str::from_utf8(p).ok()?.split_whitespace().next()?.parse().ok()),
                };
                if let Some(sent) = sent {
                    let latency = now.saturating_sub(sent).max(1);
                    let _ = hist.lock().unwrap().record(latency);
                    worst.lock().unwrap().record(sent, latency);
                    if let Some(hops) = &hops {
                        hops.lock().unwrap().record(&m, sent, now);
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

pub async fn run_roundtrip(args: &Args, e2e: Arc<Mutex<Histogram<u64>>>, worst: Arc<Mutex<WorstBySecond>>, received: Arc<AtomicU64>, counters: Arc<Counters>) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    // The producer is warmed up (metadata, producer id, connection, every partition's leader:
    // the topic may have been created just now) by one acknowledged message per partition before
    // the reader is positioned after them and the timed load starts — as the pipeline's producers
    // are when its e2e latency is measured. (Without it the first seconds of a run waited for
    // leaders and metadata refreshes: p99 150-480 ms against a p50 of 4 ms.)
    let producer = raw_producer(&args.kafka)?;
    let partitions = producer.client().fetch_metadata(Some(&args.topic), Duration::from_secs(10))?.topics().iter().map(|t| t.partitions().len()).sum::<usize>();
    for p in 0..partitions as i32 {
        producer
            .send(FutureRecord::<str, _>::to(&args.topic).partition(p).payload("warm-up"), Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("warm-up message to partition {p}: {e}"))?;
    }
    let consumer = latency_consumer(&args.kafka, &args.topic).await?;
    let consumer = tokio::spawn(consume_latency(consumer, None, e2e, worst, None, received, stop.clone()));
    let rate = args.rate.unwrap_or(1000).max(1);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let filler = "x".repeat(args.event_size.saturating_sub(20));
    let mut k = 0u64;
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt as _;
    while Instant::now() < deadline {
        tokio::time::sleep_until((started + interval * k as u32).into()).await;
        let payload = format!("{} {filler}", now_us());
        let p = producer.clone();
        let topic = args.topic.clone();
        counters.sent.fetch_add(1, Ordering::Relaxed);
        inflight.push(async move { p.send(FutureRecord::<str, _>::to(&topic).payload(&payload), Timeout::Never).await.is_ok() });
        while let Some(Some(ok)) = futures_util::FutureExt::now_or_never(inflight.next()) {
            if ok {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
        k += 1;
    }
    while let Some(ok) = inflight.next().await {
        if ok {
            counters.acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let _ = consumer.await;
    Ok(())
}

/// Deletes every topic whose name starts with `prefix`; prints how many.
pub async fn delete_topics(kafka: &str, prefix: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    anyhow::ensure!(!prefix.is_empty(), "--delete-topics needs a non-empty prefix");
    let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", kafka).create()?;
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).filter(|n| n.starts_with(prefix)).collect();
    if !names.is_empty() {
        for result in admin.delete_topics(&names, &AdminOptions::new()).await? {
            if let Err((topic, code)) = result {
                eprintln!("deleting {topic}: {code}");
            }
        }
    }
    println!("deleted {} topics starting with {prefix}", names.len());
    Ok(())
}

/// Creates the raw modes' topic (6 partitions, like the pipeline's) if it does not exist.
pub async fn ensure_topic(kafka: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", kafka).create()?;
    let results = admin
        .create_topics(&[NewTopic::new(topic, 6, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await?;
    for r in results {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                anyhow::bail!("creating {t}: {code}");
            }
        }
    }
    Ok(())
}

/// `kafka-consume`: a raw consumer, as a careful user would set one up to read a topic as fast
/// as it goes (read_committed, like the consumer-api), counting messages until `--max-events` or
/// `--seconds`. Returns the time it read for.
pub async fn run_kafka_consume(args: &Args, counters: Arc<Counters>) -> anyhow::Result<Duration> {
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka)
        .set("group.id", format!("loadgen-consume-{}", now_us()))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    let max = args.max_events.unwrap_or(u64::MAX);
    let deadline = Duration::from_secs(args.seconds);
    let counters2 = counters.clone();
    tokio::task::spawn_blocking(move || {
        let mut started = None;
        let mut n = 0u64;
        loop {
            if started.is_some_and(|s: Instant| s.elapsed() >= deadline) || n >= max {
                break;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    // Timed from the first message: joining the group is not reading.
                    started.get_or_insert_with(Instant::now);
                    std::hint::black_box(m.payload().map(<[u8]>::len));
                    n += 1;
                    counters2.acked.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(err)) => eprintln!("  consume error: {err}"),
                None if started.is_none() => {}
                None => break,
            }
        }
        started.map(|s| s.elapsed()).unwrap_or_default()
    })
    .await
    .map_err(Into::into)
}
