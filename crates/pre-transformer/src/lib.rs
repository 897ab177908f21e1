//! The pre-transformer: reads raw events, applies each source's `pre` operations, stores the
//! processed record in Redis (`processed:<source>:<id>`), and tells the post stage through the
//! `processed` topic.
//!
//! Messages are handled in batches: decide what each message becomes, write every record of the
//! batch to Redis in one pipeline, produce the notices and dead letters and wait for Kafka's
//! acks, and only then commit the batch's offsets (at least once).

use adapters::settings::Service;
use adapters::shutdown::CancellationToken;
use adapters::stage::{self, Applied, Interrupted, Outgoing, Processor, Shared, StageRunner};
use adapters::Settings;
use domain::{Event, ProcessedNotice, Stage};
use rdkafka::message::{Message, OwnedMessage};

/// A built pre-transformer: consumer subscribed, health endpoint bound, not yet running.
pub struct PreTransformer {
    runner: StageRunner,
}

impl PreTransformer {
    /// Connects to Kafka and Redis, loads source configs and binds the health endpoint.
    ///
    /// # Errors
    /// When the settings are invalid or a client cannot be created.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Ok(PreTransformer { runner: StageRunner::build(settings, Service::PreTransformer, shutdown).await? })
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
        let processor = PreProcessor(self.runner.shared().clone());
        self.runner.run(processor).await
    }
}

struct PreProcessor(Shared);

/// What one consumed message leads to.
enum Disposition {
    Store(Box<Event>),
    DeadLetter { reason: &'static str, error: String },
    Skip,
}

impl Processor for PreProcessor {
    async fn process(&self, batch: &[OwnedMessage]) -> Result<(), Interrupted> {
        let s = &self.0;
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let mut outgoing: Vec<Outgoing> = Vec::new();
        for message in batch {
            match self.decide(message).await? {
                Disposition::Store(event) => {
                    let notice = ProcessedNotice { source: event.source.clone(), id: event.id.clone() };
                    records.push((s.keys.processed(&event.source, &event.id), event.to_wire()));
                    outgoing.push(Outgoing {
                        topic: s.topics.processed.clone(),
                        key: Some(event.entity_key()),
                        payload: notice.to_wire(),
                        headers: stage::event_headers(event.id.as_str(), event.source.as_str()),
                    });
                }
                Disposition::DeadLetter { reason, error } => {
                    tracing::warn!(reason, error = %error, partition = message.partition(), offset = message.offset(), "dead-lettering message");
                    outgoing.push(stage::dead_letter(message, &s.topics.dead_letter, Stage::Pre, reason, &error));
                }
                Disposition::Skip => {}
            }
        }
        if !records.is_empty() {
            let timeout = s.redis_timeout;
            stage::with_redis_retry(&s.pool, &s.health, &s.shutdown, |pool| {
                let records = &records;
                async move {
                    adapters::store::timed(timeout, async move {
                        let mut conn = pool.get().await?;
                        let mut pipe = deadpool_redis::redis::pipe();
                        for (key, value) in records {
                            pipe.set(key, value).ignore();
                        }
                        pipe.query_async::<()>(&mut conn).await?;
                        Ok::<_, adapters::store::StoreError>(())
                    })
                    .await
                }
            })
            .await?;
        }
        stage::produce_all(&s.producer, &outgoing, &s.health, &s.shutdown).await
    }
}

impl PreProcessor {

    async fn decide(&self, message: &OwnedMessage) -> Result<Disposition, Interrupted> {
        let s = &self.0;
        let Some(bytes) = message.payload() else {
            return Ok(Disposition::DeadLetter { reason: "unparseable", error: "message has no payload".into() });
        };
        let original = match Event::from_wire(bytes) {
            Ok(e) => e,
            Err(err) => return Ok(Disposition::DeadLetter { reason: "unparseable", error: err.to_string() }),
        };
        Ok(match stage::apply(s, Stage::Pre, Service::PreTransformer, &original).await? {
            Applied::Keep(mut event, version) => {
                event.provenance.ingest_partition = Some(message.partition());
                event.provenance.ingest_offset = Some(message.offset());
                event.provenance.pre_config_version = Some(version);
                Disposition::Store(Box::new(event))
            }
            Applied::Filtered | Applied::Skipped => Disposition::Skip,
            Applied::DeadLetter { reason, error } => Disposition::DeadLetter { reason, error },
        })
    }
}
