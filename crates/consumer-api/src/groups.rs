//! API consumer groups: one Kafka consumer per group name on this instance, created on first
//! use. Calls of one group are served one at a time; each first commits what the previous call
//! handed out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::kafka::GroupConsumer;
use adapters::settings::KafkaSettings;
use rdkafka::consumer::CommitMode;
use rdkafka::message::OwnedMessage;

pub(crate) struct Groups {
    kafka: KafkaSettings,
    prefix: String,
    metrics: std::sync::Arc<adapters::metrics::Metrics>,
    groups: Mutex<HashMap<String, Arc<ApiGroup>>>,
}

pub(crate) struct ApiGroup {
    consumer: GroupConsumer,
    /// What the previous call handed out, committed by the next call.
    handed_out: tokio::sync::Mutex<Vec<OwnedMessage>>,
}

impl Groups {
    pub fn new(kafka: KafkaSettings, prefix: String, metrics: std::sync::Arc<adapters::metrics::Metrics>) -> Self {
        Groups { kafka, prefix, metrics, groups: Mutex::new(HashMap::new()) }
    }

    /// The group's consumer, created and subscribed on first use.
    ///
    /// # Errors
    /// When the consumer cannot be created.
    pub fn get(&self, name: &str) -> anyhow::Result<Arc<ApiGroup>> {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(g) = groups.get(name) {
            return Ok(g.clone());
        }
        let group_id = format!("{}{name}", self.prefix);
        let consumer = adapters::kafka::consumer(&self.kafka, &group_id, &[&self.kafka.topics.output], Some(self.metrics.clone()), adapters::kafka::Commits::Explicit)?;
        tracing::info!(group = %group_id, "api consumer group created");
        let g = Arc::new(ApiGroup { consumer, handed_out: tokio::sync::Mutex::new(Vec::new()) });
        groups.insert(name.to_owned(), g.clone());
        Ok(g)
    }
}

impl ApiGroup {
    /// Commits the previous call's events, then waits up to `wait` for the first event and
    /// takes whatever else is ready, up to `max`.
    pub async fn next(&self, max: usize, wait: Duration) -> Vec<OwnedMessage> {
        let mut handed_out = self.handed_out.lock().await;
        adapters::kafka::commit(&self.consumer, &handed_out, CommitMode::Async);
        handed_out.clear();
        let deadline = tokio::time::Instant::now() + wait;
        let mut batch = Vec::new();
        // After the first event, wait only briefly for more: answer fast, not full.
        let mut until = deadline;
        while batch.len() < max {
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    batch.push(m.detach());
                    until = until.min(tokio::time::Instant::now() + Duration::from_millis(10));
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "kafka consumer error"),
                Err(_) => break,
            }
        }
        handed_out.extend(batch.iter().cloned());
        batch
    }
}
