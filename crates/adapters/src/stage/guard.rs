//! The Redis-restart guard: re-processing what a restarted Redis may have lost.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Message, OwnedMessage};

use super::runner::Shared;
use crate::kafka::GroupConsumer;

/// A batch's first offset in one partition: (topic, partition, offset).
type FirstOffset = (String, i32, i64);

/// Closes the window Redis' `appendfsync everysec` leaves: a Redis that crashes may lose up to
/// about a second of acknowledged writes whose Kafka offsets are already committed. The guard
/// remembers the offsets of the batches of the last [`StoreGuard::WINDOW`]; when Redis' `run_id`
/// changes (it restarted), it seeks each partition back to the oldest of them, so those events
/// are processed and stored again. The store's versioned writes keep newer records; the output
/// topic may see duplicates (at least once).
#[derive(Default)]
pub(super) struct StoreGuard {
    run_id: Option<String>,
    /// When `run_id` was last read: at most every [`StoreGuard::CHECK_EVERY`], well inside the
    /// window, rather than once per batch.
    checked: Option<std::time::Instant>,
    /// When each recent batch finished, and its first offset per (topic, partition).
    recent: std::collections::VecDeque<(std::time::Instant, Vec<FirstOffset>)>,
}

impl StoreGuard {
    const WINDOW: Duration = Duration::from_secs(5);
    const CHECK_EVERY: Duration = Duration::from_millis(250);

    pub(super) fn record(&mut self, batch: &[OwnedMessage]) {
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in batch {
            let e = first.entry((m.topic().to_owned(), m.partition())).or_insert(m.offset());
            *e = (*e).min(m.offset());
        }
        let now = std::time::Instant::now();
        self.recent.push_back((now, first.into_iter().map(|((t, p), o)| (t, p, o)).collect()));
        while self.recent.front().is_some_and(|(at, _)| now.duration_since(*at) > Self::WINDOW) {
            self.recent.pop_front();
        }
    }

    /// Whether Redis' `run_id` changed since the last look.
    pub(super) async fn restarted(&mut self, s: &Shared) -> bool {
        if self.checked.is_some_and(|at| at.elapsed() < Self::CHECK_EVERY) {
            return false;
        }
        self.checked = Some(std::time::Instant::now());
        let Ok(current) = crate::store::run_id(&s.pool, s.redis_timeout).await else { return false };
        let restarted = self.run_id.as_ref().is_some_and(|known| *known != current);
        self.run_id = Some(current);
        restarted
    }

    /// Seeks each partition back to the oldest offset of the batches of the last window.
    pub(super) fn rewind(&mut self, consumer: &GroupConsumer) {
        let mut rewind: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (_, parts) in self.recent.drain(..) {
            for (t, p, o) in parts {
                let e = rewind.entry((t, p)).or_insert(o);
                *e = (*e).min(o);
            }
        }
        for ((topic, partition), offset) in rewind {
            match consumer.seek(&topic, partition, rdkafka::Offset::Offset(offset), Duration::from_secs(5)) {
                Ok(()) => tracing::warn!(topic, partition, offset, "redis restarted: reprocessing recent events it may have lost"),
                Err(err) => tracing::warn!(topic, partition, error = %err, "redis restarted but rewinding failed"),
            }
        }
    }
}
