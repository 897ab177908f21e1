//! Exactly once with a pool of transactional producers taking turns: which transaction a batch
//! joins, and which transaction may commit when. Pure bookkeeping — no Kafka here — so the
//! ordering is tested on its own; [`super::runner`] drives it and [`super::transaction`] makes
//! the calls.
//!
//! One producer can hold one transaction, and cannot produce while it commits. With a pool, the
//! oldest transaction commits while the next one, on another member, already takes batches:
//!
//! - at most one transaction is *open* (takes new batches) at a time, on a member that is free;
//! - a transaction begins only once every batch handed out before it is acknowledged: two
//!   producers writing one partition would otherwise append in whatever order the broker took
//!   their requests, and an entity's updates must stay in the order consumed (as Flink's sink
//!   flushes a transaction before the next one writes);
//! - the oldest transaction is *sealed* (takes no more batches) as soon as nothing is ahead of it,
//!   and commits once every batch of it is acknowledged — so a transaction lasts one commit of
//!   the one before it, and under no load a single event commits as soon as it is acknowledged;
//! - transactions commit strictly in the order they opened, one at a time: the offsets a
//!   transaction carries are the ends of its own batches, which follow the batches of every
//!   transaction before it, so the group's committed offsets only move forward;
//! - a transaction that cannot commit (a delivery failed, the commit failed, its member was
//!   fenced) is aborted together with every transaction after it — their offsets assume its work
//!   is done — and the work is redone from the committed offsets ([`TxnQueue::abort_all`]).
//!
//! A member whose transaction committed goes to the back of the free list: the member used next
//! is the one that has rested longest, so the broker has finished the previous transaction's
//! markers before that member begins another one (a member that begins at once is answered
//! `CONCURRENT_TRANSACTIONS` and waits out librdkafka's backoff).

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::ledger::{BatchId, TopicPartition};

/// A transaction of the queue, numbered in the order they opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(u64);

/// Where a batch went: its transaction and the member (an index into the pool) that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    pub txn: TxnId,
    pub member: usize,
    /// The transaction is new: the member must begin it before producing the batch.
    pub began: bool,
}

/// A transaction ready to commit: every batch of it acknowledged, every one before it committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub txn: TxnId,
    pub member: usize,
    /// Per partition, the offset to commit (the next one to consume).
    pub offsets: BTreeMap<TopicPartition, i64>,
}

#[derive(Debug)]
struct Txn<I> {
    id: TxnId,
    member: usize,
    /// When it began (the caller's clock).
    opened: I,
    /// Takes no more batches.
    sealed: bool,
    /// Batches not yet acknowledged.
    pending: usize,
    offsets: BTreeMap<TopicPartition, i64>,
}

/// The transactions of a stage under exactly once, oldest first (see the module's doc).
#[derive(Debug)]
pub struct TxnQueue<I = std::time::Instant> {
    txns: VecDeque<Txn<I>>,
    /// Members holding no transaction, the longest free first.
    free: VecDeque<usize>,
    batches: HashMap<BatchId, TxnId>,
    /// The head's commit was handed out and has not come back.
    committing: bool,
    next: u64,
}

/// Why a batch cannot join a transaction now.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// A new transaction would begin while batches of an older one are not yet acknowledged:
    /// its messages, sent by another producer, could be appended before theirs, and a partition
    /// must hold an entity's updates in the order consumed. Wait for the acknowledgements.
    Unacknowledged,
    /// Every member holds a transaction: wait for the commit in flight.
    NoFreeMember,
}

impl<I: Copy> TxnQueue<I> {
    /// A queue over a pool of `members` producers (at least one).
    pub fn new(members: usize) -> Self {
        TxnQueue { txns: VecDeque::new(), free: (0..members.max(1)).collect(), batches: HashMap::new(), committing: false, next: 0 }
    }

    /// Adds a batch of messages at `positions` ((topic, partition), offset) to the open
    /// transaction, or to a new one (opened `now`) on the longest-free member.
    ///
    /// # Errors
    /// [`Busy::NoFreeMember`] when no transaction is open and every member holds one.
    pub fn join(&mut self, batch: BatchId, positions: impl IntoIterator<Item = (TopicPartition, i64)>, now: I) -> Result<Joined, Busy> {
        let began = self.txns.back().is_none_or(|t| t.sealed);
        if began {
            if self.txns.iter().any(|t| t.pending > 0) {
                return Err(Busy::Unacknowledged);
            }
            let member = self.free.pop_front().ok_or(Busy::NoFreeMember)?;
            self.txns.push_back(Txn { id: TxnId(self.next), member, opened: now, sealed: false, pending: 0, offsets: BTreeMap::new() });
            self.next += 1;
        }
        let txn = self.txns.back_mut().expect("an open transaction");
        txn.pending += 1;
        for (tp, offset) in positions {
            let e = txn.offsets.entry(tp).or_insert(offset + 1);
            *e = (*e).max(offset + 1);
        }
        self.batches.insert(batch, txn.id);
        Ok(Joined { txn: txn.id, member: txn.member, began })
    }

    /// Whether a batch can join a transaction now: one is open, or a member is free and every
    /// batch already handed out is acknowledged.
    pub fn can_join(&self) -> bool {
        self.txns.back().is_some_and(|t| !t.sealed) || (!self.free.is_empty() && self.txns.iter().all(|t| t.pending == 0))
    }

    /// Records that everything `batch` led to is acknowledged.
    pub fn acknowledged(&mut self, batch: BatchId) {
        let Some(id) = self.batches.remove(&batch) else { return };
        if let Some(txn) = self.txns.iter_mut().find(|t| t.id == id) {
            txn.pending -= 1;
        }
    }

    /// The next commit, when one may start: none is in flight, and the oldest transaction —
    /// sealed now if it was still open and `seal` says it may be — has every batch
    /// acknowledged. The caller commits it and reports with [`Self::committed`] or
    /// [`Self::abort_all`]. (`seal` false: the stage is behind and lets the oldest
    /// transaction grow; see [`Self::head_opened`].)
    pub fn ready(&mut self, seal: bool) -> Option<Ready> {
        if self.committing {
            return None;
        }
        let head = self.txns.front_mut()?;
        head.sealed |= seal;
        if !head.sealed || head.pending > 0 {
            return None;
        }
        self.committing = true;
        Some(Ready { txn: head.id, member: head.member, offsets: head.offsets.clone() })
    }

    /// When the oldest transaction began, while it is still open (not sealed).
    pub fn head_opened(&self) -> Option<I> {
        self.txns.front().filter(|t| !t.sealed).map(|t| t.opened)
    }

    /// The commit handed out by [`Self::ready`] succeeded: its member is free again.
    pub fn committed(&mut self, txn: TxnId) {
        if self.txns.front().is_some_and(|t| t.id == txn) {
            let done = self.txns.pop_front().expect("checked");
            self.free.push_back(done.member);
            self.committing = false;
        }
    }

    /// Every transaction is to be aborted (one could not commit, partitions were revoked, the
    /// stage stops on an error): returns the members holding one, oldest first, and frees
    /// them. Batches still in flight are forgotten: their work is redone.
    pub fn abort_all(&mut self) -> Vec<usize> {
        let members: Vec<usize> = self.txns.drain(..).map(|t| t.member).collect();
        self.free.extend(members.iter().copied());
        self.batches.clear();
        self.committing = false;
        members
    }

    /// Whether a commit is handed out and not yet reported.
    pub fn is_committing(&self) -> bool {
        self.committing
    }

    /// Whether no transaction is open, sealed or committing.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::ledger::OffsetLedger;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_owned(), p)
    }

    /// Batch ids come from the ledger (their only constructor).
    fn batch(ids: &mut OffsetLedger) -> BatchId {
        ids.open(std::iter::empty())
    }

    /// A queue of `members` producers with one batch (offset 0 of partition 0) joined and
    /// acknowledged.
    fn one_acknowledged_batch(members: usize) -> (OffsetLedger, TxnQueue<u64>) {
        let (mut ids, mut q) = (OffsetLedger::default(), TxnQueue::<u64>::new(members));
        let a = batch(&mut ids);
        q.join(a, [(tp(0), 0)], 0).unwrap();
        q.acknowledged(a);
        (ids, q)
    }

    #[test]
    fn an_idle_stage_commits_a_lone_batch_as_soon_as_it_is_acknowledged() {
        let (mut ids, mut q) = (OffsetLedger::default(), TxnQueue::<u64>::new(3));
        let a = batch(&mut ids);
        let joined = q.join(a, [(tp(0), 7)], 0).unwrap();
        assert_eq!(joined, Joined { txn: TxnId(0), member: 0, began: true });
        assert_eq!(q.ready(true), None, "not acknowledged yet");
        q.acknowledged(a);
        assert_eq!(q.ready(true), Some(Ready { txn: TxnId(0), member: 0, offsets: BTreeMap::from([(tp(0), 8)]) }));
        q.committed(TxnId(0));
        assert!(q.is_empty());
    }

    #[test]
    fn batches_go_to_the_next_member_while_the_oldest_transaction_commits() {
        let (mut ids, mut q) = one_acknowledged_batch(3);
        let first = q.ready(true).unwrap();
        // While member 0 commits, new batches open a transaction on member 1 and join it.
        let (b, c) = (batch(&mut ids), batch(&mut ids));
        assert_eq!(q.join(b, [(tp(0), 1)], 0).unwrap(), Joined { txn: TxnId(1), member: 1, began: true });
        assert_eq!(q.join(c, [(tp(1), 0)], 0).unwrap(), Joined { txn: TxnId(1), member: 1, began: false });
        q.acknowledged(b);
        q.acknowledged(c);
        assert_eq!(q.ready(true), None, "one commit at a time, in order");
        q.committed(first.txn);
        let second = q.ready(true).unwrap();
        assert_eq!((second.txn, second.member), (TxnId(1), 1));
        assert_eq!(second.offsets, BTreeMap::from([(tp(0), 2), (tp(1), 1)]));
        // Sealed: the next batch opens a transaction on member 2 — member 0 rests.
        let d = batch(&mut ids);
        assert_eq!(q.join(d, [(tp(0), 2)], 0).unwrap(), Joined { txn: TxnId(2), member: 2, began: true });
        q.committed(second.txn);
        q.acknowledged(d);
        assert_eq!(q.ready(true).map(|r| r.member), Some(2));
        q.committed(TxnId(2));
        let e = batch(&mut ids);
        assert_eq!(q.join(e, [(tp(0), 3)], 0).unwrap().member, 0, "the longest-free member is used next");
    }

    #[test]
    fn a_sealed_transaction_waits_for_its_last_acknowledgement_and_so_does_the_next_one() {
        let (mut ids, mut q) = (OffsetLedger::default(), TxnQueue::<u64>::new(2));
        let (a, b) = (batch(&mut ids), batch(&mut ids));
        q.join(a, [(tp(0), 0)], 0).unwrap();
        q.join(b, [(tp(0), 1)], 0).unwrap();
        q.acknowledged(b);
        assert_eq!(q.ready(true), None, "a is not acknowledged");
        // Sealed by that look; a new transaction, on the other producer, may not write before
        // a is appended: its messages could land ahead of a's in the partition.
        let c = batch(&mut ids);
        assert!(!q.can_join());
        assert_eq!(q.join(c, [(tp(0), 2)], 0), Err(Busy::Unacknowledged));
        q.acknowledged(a);
        assert!(q.can_join());
        assert_eq!(q.join(c, [(tp(0), 2)], 0).unwrap(), Joined { txn: TxnId(1), member: 1, began: true });
        assert_eq!(q.ready(true).unwrap().offsets, BTreeMap::from([(tp(0), 2)]), "only its own batches' offsets");
    }

    #[test]
    fn a_stage_that_is_behind_lets_the_oldest_transaction_grow_until_it_may_seal() {
        let (mut ids, mut q) = (OffsetLedger::default(), TxnQueue::<u64>::new(3));
        let (a, b) = (batch(&mut ids), batch(&mut ids));
        q.join(a, [(tp(0), 0)], 10).unwrap();
        q.acknowledged(a);
        assert_eq!(q.ready(false), None, "behind: not sealed yet");
        assert_eq!(q.head_opened(), Some(10));
        assert_eq!(q.join(b, [(tp(0), 1)], 20).unwrap(), Joined { txn: TxnId(0), member: 0, began: false }, "the batch joins it");
        q.acknowledged(b);
        let r = q.ready(true).unwrap();
        assert_eq!(r.offsets, BTreeMap::from([(tp(0), 2)]));
        assert_eq!(q.head_opened(), None, "sealed");
    }

    #[test]
    fn with_one_member_a_batch_waits_for_the_commit_in_flight() {
        let (mut ids, mut q) = one_acknowledged_batch(1);
        let r = q.ready(true).unwrap();
        assert_eq!(q.join(batch(&mut ids), [(tp(0), 1)], 0), Err(Busy::NoFreeMember));
        q.committed(r.txn);
        assert_eq!(q.join(batch(&mut ids), [(tp(0), 1)], 0).unwrap().member, 0);
    }

    #[test]
    fn a_member_fenced_mid_flight_aborts_its_transaction_and_every_later_one() {
        let (mut ids, mut q) = one_acknowledged_batch(3);
        let first = q.ready(true).unwrap();
        let b = batch(&mut ids);
        q.join(b, [(tp(0), 1)], 0).unwrap();
        // The first commit fails (its member fenced): nothing after it may commit either.
        assert_eq!(q.abort_all(), vec![first.member, 1]);
        assert!(q.is_empty() && !q.is_committing());
        q.acknowledged(b); // a late acknowledgement of forgotten work changes nothing
        assert_eq!(q.ready(true), None);
        q.committed(first.txn); // nor does a late report of the aborted commit
        assert_eq!(q.ready(true), None);
        // Redone from the committed offsets, on every member again.
        let c = batch(&mut ids);
        let joined = q.join(c, [(tp(0), 0)], 0).unwrap();
        assert!(joined.began);
        q.acknowledged(c);
        assert_eq!(q.ready(true).unwrap().offsets, BTreeMap::from([(tp(0), 1)]));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            /// A batch of `n` messages on partition `p`.
            Batch(i32, i64),
            /// The acknowledgement of the k-th oldest unacknowledged batch.
            Ack(usize),
            /// The commit in flight comes back: committed, or failed.
            Commit(bool),
        }

        fn steps() -> impl Strategy<Value = (usize, Vec<Step>)> {
            let step = prop_oneof![
                (0..3i32, 1..4i64).prop_map(|(p, n)| Step::Batch(p, n)),
                (0..4usize).prop_map(Step::Ack),
                prop::bool::weighted(0.9).prop_map(Step::Commit),
            ];
            (1..4usize, prop::collection::vec(step, 1..60))
        }

        proptest! {
            /// Whatever the interleaving: commits happen one at a time in the order the
            /// transactions opened, a member never holds two transactions, committed offsets
            /// only move forward and never pass a message whose batch is not acknowledged, and
            /// after a failure nothing from before the abort is committed.
            #[test]
            fn commits_are_ordered_and_never_pass_unacknowledged_work((members, steps) in steps()) {
                let mut ids = OffsetLedger::default();
                let mut q = TxnQueue::<u64>::new(members);
                let mut next: BTreeMap<i32, i64> = BTreeMap::new();
                // (batch, partition, offsets) not yet acknowledged, oldest first; and all
                // unacknowledged messages by partition.
                let mut unacked: Vec<(BatchId, i32, std::ops::Range<i64>)> = Vec::new();
                let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
                let mut in_flight: Option<Ready> = None;
                let mut last_txn: Option<TxnId> = None;
                let mut holders: HashMap<usize, TxnId> = HashMap::new();
                for step in steps {
                    match step {
                        Step::Batch(p, n) => {
                            let start = *next.get(&p).unwrap_or(&committed.get(&p).copied().unwrap_or(0));
                            let id = batch(&mut ids);
                            match q.join(id, (start..start + n).map(|o| (tp(p), o)), 0u64) {
                                Ok(j) => {
                                    if j.began {
                                        prop_assert!(unacked.is_empty(), "a transaction began while older batches were unacknowledged");
                                        prop_assert!(holders.insert(j.member, j.txn).is_none(), "member {} holds two transactions", j.member);
                                    }
                                    next.insert(p, start + n);
                                    unacked.push((id, p, start..start + n));
                                }
                                Err(Busy::NoFreeMember) => prop_assert_eq!(holders.len(), members, "refused with a member free"),
                                Err(Busy::Unacknowledged) => prop_assert!(!unacked.is_empty(), "refused with everything acknowledged"),
                            }
                        }
                        Step::Ack(k) if k < unacked.len() => {
                            let (id, _, _) = unacked.remove(k);
                            q.acknowledged(id);
                        }
                        Step::Ack(_) => {}
                        Step::Commit(ok) => {
                            let Some(r) = in_flight.take() else { continue };
                            if ok {
                                for ((_, p), offset) in &r.offsets {
                                    prop_assert!(unacked.iter().all(|(_, part, span)| part != p || span.start >= *offset), "committed past unacknowledged work");
                                    let before = committed.insert(*p, *offset).unwrap_or(0);
                                    prop_assert!(*offset >= before, "the committed offset went back");
                                }
                                q.committed(r.txn);
                                holders.remove(&r.member);
                            } else {
                                q.abort_all();
                                holders.clear();
                                unacked.clear();
                                next.clear();
                            }
                        }
                    }
                    if in_flight.is_none() {
                        if let Some(r) = q.ready(true) {
                            prop_assert!(last_txn.is_none_or(|t| r.txn > t), "commits out of order");
                            prop_assert_eq!(holders.get(&r.member), Some(&r.txn));
                            last_txn = Some(r.txn);
                            in_flight = Some(r);
                        }
                    }
                }
            }
        }
    }
}
