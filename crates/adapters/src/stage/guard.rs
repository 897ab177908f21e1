//! The Redis-restart guard: re-processing what a restarted Redis may have lost.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Message, OwnedMessage};

use super::runner::Shared;
use crate::kafka::GroupConsumer;

/// A (topic, partition).
type Partition = (String, i32);

/// Closes the window Redis' `appendfsync everysec` leaves: a Redis that crashes may lose up to
/// about a second (two, when the disk is slow) of acknowledged writes whose Kafka offsets are
/// already committed. The guard remembers the first offsets of the batches written since Redis
/// was last seen, still running, [`StoreGuard::DURABLE_AFTER`] after them; when Redis'
/// `run_id` changes (it restarted), it seeks each partition back to the oldest of them, so those
/// events are processed and stored again. The store's versioned writes keep newer records; the
/// output topic may see duplicates (at least once).
///
/// A batch is forgotten only once Redis was seen alive long enough after its writes for them
/// to be on disk — never by the clock alone: a stage held up for seconds by the outage itself
/// must still redo the writes made just before the crash.
#[derive(Default)]
pub(super) struct StoreGuard {
    run_id: Option<String>,
    /// When `run_id` was last read: at most every [`StoreGuard::CHECK_EVERY`], rather than once
    /// per batch.
    checked: Option<Instant>,
    /// When each recent batch finished (its writes were done before), and its first offset per
    /// partition; oldest first.
    recent: VecDeque<(Instant, BTreeMap<Partition, i64>)>,
}

impl StoreGuard {
    /// How long after a write Redis must still be running (same `run_id`) for the write to be
    /// on disk: `appendfsync everysec` fsyncs every second and delays writes when an fsync
    /// takes over two; with margin.
    const DURABLE_AFTER: Duration = Duration::from_secs(5);
    const CHECK_EVERY: Duration = Duration::from_millis(250);
    /// A bound on what is remembered while Redis cannot be asked (its answers time out while
    /// writes still succeed): past it, the oldest batches are forgotten, with a warning.
    const MAX_REMEMBERED: usize = 100_000;

    /// Remembers a finished batch (its records are written).
    pub(super) fn record(&mut self, batch: &[OwnedMessage]) {
        self.record_at(Instant::now(), first_offsets(batch));
    }

    fn record_at(&mut self, at: Instant, first: BTreeMap<Partition, i64>) {
        if first.is_empty() {
            return;
        }
        self.recent.push_back((at, first));
        if self.recent.len() > Self::MAX_REMEMBERED {
            self.recent.pop_front();
            tracing::warn!("the redis-restart guard forgot a batch before redis was seen to keep it: redis' run_id has not been readable for long");
        }
    }

    /// Whether Redis' `run_id` changed since the last look.
    pub(super) async fn restarted(&mut self, s: &Shared) -> bool {
        if self.checked.is_some_and(|at| at.elapsed() < Self::CHECK_EVERY) {
            return false;
        }
        let asked = Instant::now();
        self.checked = Some(asked);
        let Ok(current) = crate::store::run_id(&s.pool, s.redis_timeout).await else { return false };
        self.observe(asked, current)
    }

    /// What one look at Redis' `run_id`, taken at `asked`, tells: whether it restarted. When it
    /// did not, the batches finished [`Self::DURABLE_AFTER`] before `asked` are on disk and
    /// forgotten.
    fn observe(&mut self, asked: Instant, current: String) -> bool {
        let restarted = self.run_id.as_ref().is_some_and(|known| *known != current);
        self.run_id = Some(current);
        if !restarted {
            while self.recent.front().is_some_and(|(at, _)| asked.checked_duration_since(*at).is_some_and(|d| d >= Self::DURABLE_AFTER)) {
                self.recent.pop_front();
            }
        }
        restarted
    }

    /// Where each partition must be read again from after a restart: the oldest first offset of
    /// the remembered batches, and of `dropped` (consumed, not processed, and dropped by the
    /// caller). Forgets the remembered batches.
    fn rewind_offsets(&mut self, dropped: &[OwnedMessage]) -> BTreeMap<Partition, i64> {
        let mut rewind = first_offsets(dropped);
        for (_, parts) in self.recent.drain(..) {
            for (tp, o) in parts {
                let e = rewind.entry(tp).or_insert(o);
                *e = (*e).min(o);
            }
        }
        rewind
    }

    /// Seeks each partition back to the oldest offset of the remembered batches and of
    /// `dropped`, the batch consumed but not processed.
    pub(super) fn rewind(&mut self, consumer: &GroupConsumer, dropped: &[OwnedMessage]) {
        for ((topic, partition), offset) in self.rewind_offsets(dropped) {
            match consumer.seek(&topic, partition, rdkafka::Offset::Offset(offset), Duration::from_secs(5)) {
                Ok(()) => tracing::warn!(topic, partition, offset, "redis restarted: reprocessing recent events it may have lost"),
                Err(err) => tracing::warn!(topic, partition, error = %err, "redis restarted but rewinding failed"),
            }
        }
    }
}

/// The first offset of `batch` in each of its partitions.
fn first_offsets(batch: &[OwnedMessage]) -> BTreeMap<Partition, i64> {
    let mut first: BTreeMap<Partition, i64> = BTreeMap::new();
    for m in batch {
        let e = first.entry((m.topic().to_owned(), m.partition())).or_insert(m.offset());
        *e = (*e).min(m.offset());
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(None, None, "ingest".into(), Timestamp::NotAvailable, partition, offset, None)
    }

    fn offsets(pairs: &[(i32, i64)]) -> BTreeMap<Partition, i64> {
        pairs.iter().map(|(p, o)| (("ingest".to_owned(), *p), *o)).collect()
    }

    /// A guard that saw Redis run `a` and one batch that ended at offset 100 of partition 0.
    fn one_batch_at_100() -> (StoreGuard, Instant) {
        let mut guard = StoreGuard::default();
        let start = Instant::now();
        guard.observe(start, "a".into());
        guard.record_at(start, offsets(&[(0, 100)]));
        (guard, start)
    }

    #[test]
    fn a_stage_held_up_by_the_outage_still_redoes_the_writes_made_before_the_crash() {
        let mut guard = StoreGuard::default();
        let start = Instant::now();
        assert!(!guard.observe(start, "a".into()));
        guard.record_at(start + Duration::from_secs(1), offsets(&[(0, 100), (1, 50)]));
        // Redis dies; the stage retries for 30 s, then a batch written to the new Redis finishes.
        guard.record_at(start + Duration::from_secs(31), offsets(&[(0, 110)]));
        assert!(guard.observe(start + Duration::from_secs(32), "b".into()), "a new run_id is a restart");
        assert_eq!(guard.rewind_offsets(&[]), offsets(&[(0, 100), (1, 50)]));
    }

    #[test]
    fn batches_are_forgotten_once_redis_was_seen_running_long_enough_after_them() {
        let (mut guard, start) = one_batch_at_100();
        guard.record_at(start + Duration::from_secs(4), offsets(&[(0, 200)]));
        assert!(!guard.observe(start + Duration::from_secs(5), "a".into()));
        assert_eq!(guard.recent.len(), 1, "only the batch older than DURABLE_AFTER is forgotten");
        assert!(guard.observe(start + Duration::from_secs(6), "b".into()));
        assert_eq!(guard.rewind_offsets(&[]), offsets(&[(0, 200)]));
        assert!(guard.recent.is_empty());
    }

    #[test]
    fn the_dropped_batch_is_read_again_also_in_partitions_with_nothing_remembered() {
        let (mut guard, start) = one_batch_at_100();
        assert!(guard.observe(start + Duration::from_secs(1), "b".into()));
        let dropped = [message(0, 120), message(2, 7), message(2, 8), message(3, 40)];
        assert_eq!(guard.rewind_offsets(&dropped), offsets(&[(0, 100), (2, 7), (3, 40)]));
    }

    #[test]
    fn an_unreadable_run_id_forgets_nothing() {
        let (mut guard, start) = one_batch_at_100();
        // No observation for a minute (Redis down): the batch stays.
        guard.record_at(start + Duration::from_secs(60), offsets(&[(1, 5)]));
        assert_eq!(guard.recent.len(), 2);
    }
}
