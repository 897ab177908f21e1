//! The post-transformer: reads the pre stage's notices, loads each processed record from Redis,
//! applies its source's `post` operations and publishes the result on the output topic
//! (`post_process_meta_data_events`) for downstream systems.
//!
//! Per batch: read every record in one Redis round trip, produce the results and dead letters,
//! wait for Kafka's acks, then commit (at least once).

use adapters::settings::Service;
use adapters::shutdown::CancellationToken;
use adapters::stage::{self, Applied, Interrupted, Outgoing, Processor, Shared, StageRunner};
use adapters::Settings;
use domain::{Event, ProcessedNotice, Stage};
use rdkafka::message::{Message, OwnedMessage};

/// A built post-transformer: consumer subscribed, health endpoint bound, not yet running.
pub struct PostTransformer {
    runner: StageRunner,
}

impl PostTransformer {
    /// Connects to Kafka and Redis, loads source configs and binds the health endpoint.
    ///
    /// # Errors
    /// When the settings are invalid or a client cannot be created.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Ok(PostTransformer { runner: StageRunner::build(settings, Service::PostTransformer, shutdown).await? })
    }

    /// The port of `/healthz` and `/readyz`.
    pub fn port(&self) -> u16 {
        self.runner.port()
    }

    /// Processes batches until shutdown; then commits what is done and flushes the producer.
    ///
    /// # Errors
    /// When the health server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let processor = PostProcessor(self.runner.shared().clone());
        self.runner.run(processor).await
    }
}

struct PostProcessor(Shared);

impl Processor for PostProcessor {
    async fn process(&self, batch: &[OwnedMessage]) -> Result<(), Interrupted> {
        let s = &self.0;
        let mut outgoing = Vec::with_capacity(batch.len());
        // Parse every notice first, so the records can be read in one round trip.
        let mut notices = Vec::with_capacity(batch.len());
        for message in batch {
            match message.payload().map(ProcessedNotice::from_wire) {
                Some(Ok(notice)) => notices.push((message, notice)),
                Some(Err(err)) => outgoing.push(dead_letter(s, message, "unparseable", &err.to_string())),
                None => outgoing.push(dead_letter(s, message, "unparseable", "message has no payload")),
            }
        }
        let keys: Vec<String> = notices.iter().map(|(_, n)| s.keys.processed(&n.source, &n.id)).collect();
        let records: Vec<Option<Vec<u8>>> = if keys.is_empty() {
            Vec::new()
        } else {
            let timeout = s.redis_timeout;
            stage::with_redis_retry(&s.pool, &s.health, &s.shutdown, |pool| {
                let keys = &keys;
                async move {
                    adapters::store::timed(timeout, async move {
                        let mut conn = pool.get().await?;
                        let values: Vec<Option<Vec<u8>>> =
                            deadpool_redis::redis::cmd("MGET").arg(keys).query_async(&mut conn).await?;
                        Ok::<_, adapters::store::StoreError>(values)
                    })
                    .await
                }
            })
            .await?
        };
        for ((message, notice), record) in notices.into_iter().zip(records) {
            let Some(record) = record else {
                let error = format!("no processed record for {}:{} in redis", notice.source, notice.id);
                outgoing.push(dead_letter(s, message, "record_missing", &error));
                continue;
            };
            match Event::from_wire(&record) {
                Ok(event) => {
                    if let Some(out) = self.transform(message, event).await? {
                        outgoing.push(out);
                    }
                }
                Err(err) => outgoing.push(dead_letter(s, message, "unparseable_record", &err.to_string())),
            }
        }
        stage::produce_all(&s.producer, &outgoing, &s.health, &s.shutdown).await
    }
}

impl PostProcessor {
    /// Applies the post operations; `None` when the event is filtered or skipped.
    async fn transform(&self, message: &OwnedMessage, original: Event) -> Result<Option<Outgoing>, Interrupted> {
        let s = &self.0;
        Ok(match stage::apply(s, Stage::Post, Service::PostTransformer, &original).await? {
            Applied::Keep(mut event, version) => {
                event.provenance.post_config_version = Some(version);
                Some(Outgoing {
                    topic: s.topics.output.clone(),
                    key: Some(event.entity_key()),
                    payload: event.to_wire(),
                    headers: stage::event_headers(event.id.as_str(), event.source.as_str()),
                })
            }
            Applied::Filtered | Applied::Skipped => None,
            Applied::DeadLetter { reason, error } => Some(dead_letter(s, message, reason, &error)),
        })
    }
}

fn dead_letter(s: &Shared, message: &OwnedMessage, reason: &str, error: &str) -> Outgoing {
    tracing::warn!(reason, error, partition = message.partition(), offset = message.offset(), "dead-lettering message");
    stage::dead_letter(message, &s.topics.dead_letter, Stage::Post, reason, error)
}
