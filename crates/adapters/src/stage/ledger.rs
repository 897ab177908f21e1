//! Which offsets a stage may store, given batches that finish out of order.
//!
//! A stage hands batch after batch to Kafka and their acks come back in any order. An offset may
//! be stored only once every message before it in its partition is done — so a batch's offsets
//! are released only when it and every batch opened before it have finished, and a batch that
//! failed holds back everything opened after it, for good (its messages are redelivered to the
//! partition's next owner). Pure bookkeeping: no Kafka here, so it is tested on its own.

use std::collections::{BTreeMap, VecDeque};

/// A (topic, partition).
pub type TopicPartition = (String, i32);

/// A batch handed to [`OffsetLedger::open`], to name it when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Done,
    Failed,
}

#[derive(Debug)]
struct Entry {
    id: BatchId,
    /// Per partition, the offset after the batch's last message there.
    next: BTreeMap<TopicPartition, i64>,
    state: State,
}

/// The batches a stage has opened and not yet released, oldest first.
#[derive(Debug, Default)]
pub struct OffsetLedger {
    open: VecDeque<Entry>,
    next_id: u64,
    /// A batch failed: nothing opened after it is ever released.
    blocked: bool,
}

impl OffsetLedger {
    /// Records a batch of messages at `positions` ((topic, partition), offset), in the order
    /// consumed. Returns its id.
    pub fn open(&mut self, positions: impl IntoIterator<Item = (TopicPartition, i64)>) -> BatchId {
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for (tp, offset) in positions {
            let e = next.entry(tp).or_insert(offset + 1);
            *e = (*e).max(offset + 1);
        }
        let id = BatchId(self.next_id);
        self.next_id += 1;
        self.open.push_back(Entry { id, next, state: State::InFlight });
        id
    }

    /// Marks `id` done. Returns the offsets that may now be stored: per partition, the offset
    /// after the last message of the batches released by this call (the finished prefix of the
    /// open batches), and the ids of those batches, oldest first.
    pub fn finish(&mut self, id: BatchId) -> Released {
        self.set(id, State::Done);
        let mut released = Released::default();
        if self.blocked {
            return released;
        }
        while self.open.front().is_some_and(|e| e.state == State::Done) {
            let entry = self.open.pop_front().expect("checked");
            for (tp, next) in entry.next {
                let e = released.offsets.entry(tp).or_insert(next);
                *e = (*e).max(next);
            }
            released.batches.push(entry.id);
        }
        if self.open.front().is_some_and(|e| e.state == State::Failed) {
            self.blocked = true;
        }
        released
    }

    /// Marks `id` failed: neither it nor anything opened after it is ever released.
    pub fn fail(&mut self, id: BatchId) {
        self.set(id, State::Failed);
        if self.open.front().is_some_and(|e| e.state == State::Failed) {
            self.blocked = true;
        }
    }

    /// Whether a failed batch holds back everything after it.
    pub fn is_blocked(&self) -> bool {
        self.blocked || self.open.iter().any(|e| e.state == State::Failed)
    }

    /// Batches opened and not released.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn set(&mut self, id: BatchId, state: State) {
        if let Some(e) = self.open.iter_mut().find(|e| e.id == id) {
            e.state = state;
        }
    }
}

/// What a [`OffsetLedger::finish`] released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Per partition, the offset to store (the next one to consume).
    pub offsets: BTreeMap<TopicPartition, i64>,
    /// The batches released, oldest first.
    pub batches: Vec<BatchId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    fn at(p: i32, offsets: std::ops::Range<i64>) -> Vec<(TopicPartition, i64)> {
        offsets.map(|o| (tp(p), o)).collect()
    }

    #[test]
    fn a_batch_finishing_first_waits_for_the_ones_before_it() {
        let mut l = OffsetLedger::default();
        let a = l.open(at(0, 0..10));
        let b = l.open(at(0, 10..20).into_iter().chain(at(1, 0..5)));
        let c = l.open(at(1, 5..7));
        assert_eq!(l.finish(b), Released::default(), "b finished before a: nothing may be stored");
        let released = l.finish(a);
        assert_eq!(released.batches, vec![a, b]);
        assert_eq!(released.offsets, BTreeMap::from([(tp(0), 20), (tp(1), 5)]));
        assert_eq!(l.len(), 1);
        assert_eq!(l.finish(c).offsets, BTreeMap::from([(tp(1), 7)]));
        assert!(l.is_empty());
    }

    #[test]
    fn a_failed_batch_holds_back_everything_after_it_for_good() {
        let mut l = OffsetLedger::default();
        let a = l.open(at(0, 0..3));
        let b = l.open(at(0, 3..6));
        let c = l.open(at(0, 6..9));
        l.fail(b);
        assert!(l.is_blocked());
        assert_eq!(l.finish(c), Released::default());
        assert_eq!(l.finish(a).offsets, BTreeMap::from([(tp(0), 3)]), "what came before the failure is still released");
        let d = l.open(at(0, 9..12));
        assert_eq!(l.finish(d), Released::default());
    }

    #[test]
    fn a_batch_may_be_unsorted_within_a_partition() {
        let mut l = OffsetLedger::default();
        let a = l.open(vec![(tp(0), 5), (tp(0), 3), (tp(0), 4)]);
        assert_eq!(l.finish(a).offsets, BTreeMap::from([(tp(0), 6)]));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Batches over three partitions (each a run of consecutive offsets per partition, in
        /// consumption order), and an order in which they finish.
        fn batches_and_order() -> impl Strategy<Value = (Vec<Vec<(i32, usize)>>, Vec<usize>)> {
            prop::collection::vec(prop::collection::vec((0..3i32, 1..5usize), 1..4), 1..12).prop_flat_map(|batches| {
                let n = batches.len();
                (Just(batches), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            })
        }

        proptest! {
            /// Whatever the finishing order: a stored offset never passes a message that is not
            /// done, stored offsets only grow, and once all are done every partition is stored
            /// to its end.
            #[test]
            fn never_stores_past_unfinished_work((batches, order) in batches_and_order()) {
                let mut l = OffsetLedger::default();
                let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
                let mut ids = Vec::new();
                let mut spans: Vec<Vec<(i32, i64)>> = Vec::new();
                for batch in &batches {
                    let mut positions = Vec::new();
                    for &(p, count) in batch {
                        let start = *next_offset.get(&p).unwrap_or(&0);
                        for o in start..start + count as i64 {
                            positions.push((tp(p), o));
                        }
                        next_offset.insert(p, start + count as i64);
                    }
                    spans.push(positions.iter().map(|((_, p), o)| (*p, *o)).collect());
                    ids.push(l.open(positions));
                }
                let mut done = vec![false; batches.len()];
                let mut stored: BTreeMap<i32, i64> = BTreeMap::new();
                for &i in &order {
                    done[i] = true;
                    for ((_, p), offset) in l.finish(ids[i]).offsets {
                        // Every message below the stored offset in that partition is done.
                        for (j, span) in spans.iter().enumerate() {
                            if span.iter().any(|&(q, o)| q == p && o < offset) {
                                prop_assert!(done[j], "stored {offset} on partition {p} past unfinished batch {j}");
                            }
                        }
                        let before = stored.insert(p, offset).unwrap_or(0);
                        prop_assert!(offset >= before, "stored offsets went back on partition {p}");
                    }
                }
                prop_assert!(l.is_empty());
                for (p, end) in next_offset {
                    prop_assert_eq!(stored.get(&p).copied(), Some(end));
                }
            }
        }
    }
}
