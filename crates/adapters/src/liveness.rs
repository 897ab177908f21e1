//! A transformer that answers ready and reads nothing.
//!
//! Twice, CI's fault suite saw the pre-transformer stop for good after a broker restart: most of
//! its partitions never moved again while `/readyz` said ready, and no blocking call was hung
//! (the [`crate::watchdog`] did not fire). Whatever the cause — a partition librdkafka never
//! fetches again, an await that never ends — the remedy is the one an operator would apply:
//! start the instance again, and its successor redoes what it had not committed. This module
//! sees the stall from the inside, by the rule a lag monitor uses to call a consumer *stalled*
//! (Burrow's: work is waiting and the position does not move), and then exits with
//! [`crate::watchdog::EXIT_HUNG`] after an ERROR naming what stood still.
//!
//! Three signs, none of which a working stage shows (and none counted while the stage reports
//! trouble, i.e. retries Redis or Kafka: waiting for a dependency is not a stall, and
//! restarting would not end it):
//! - **A partition that does not move** ([`FetchWatch`]): assigned to this instance, its leader
//!   up, something to read — records fetched and not taken, its fetch position below the last
//!   stable offset (asked of the broker every [`END_PERIOD`], since librdkafka learns it only
//!   from the fetches a stuck partition no longer makes), no fetch running at all, or, on a
//!   [plain](Input::Plain) input, a committed offset below the last stable offset — and it
//!   has not moved for [`PARTITION_STALL`]: what the stage committed on it, once it has
//!   committed there (a stage that reads on and never commits, aborting and rewinding over and
//!   over, is not moving either), else its fetch position and what the stage took from it. The positions come from librdkafka's statistics, which arrive only
//!   while the stage polls: a gap in them (the stage busy elsewhere) starts the clock again.
//! - **A group that does not settle** ([`FetchWatch`]): the group coordinator is up and the
//!   consumer's join state is not steady for [`GROUP_STALL`].
//! - **A loop that does not come back** ([`LoopWatch`]): the runner has been busy with one step
//!   (a batch, a commit, a rewind) for [`LOOP_STALL`] without reporting trouble. An outage of
//!   Redis or Kafka that it retries through is reported as trouble (`/readyz` fails): waiting
//!   for a dependency is not a stall, and restarting would not end it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::health::Health;
use crate::shutdown::CancellationToken;

/// How long a partition with work waiting may stand still.
pub const PARTITION_STALL: Duration = Duration::from_secs(60);
/// How long a consumer may go without settling in its group while the coordinator is up.
pub const GROUP_STALL: Duration = Duration::from_secs(120);
/// How long the runner may stay on one step without reporting trouble.
pub const LOOP_STALL: Duration = Duration::from_secs(120);
/// How often the partitions' last stable offsets are asked of the broker.
pub const END_PERIOD: Duration = Duration::from_secs(10);
/// Statistics further apart than this mean the stage was not polling: the clocks start again.
const SAMPLE_GAP: Duration = Duration::from_secs(15);

/// A [`FetchWatch`]'s limits: the constants above, shorter in tests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub partition: Duration,
    pub group: Duration,
    pub end_period: Duration,
    /// Must exceed the consumer's `statistics.interval.ms`.
    pub sample_gap: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { partition: PARTITION_STALL, group: GROUP_STALL, end_period: END_PERIOD, sample_gap: SAMPLE_GAP }
    }
}
/// Trouble reported this recently means the runner is retrying a dependency: longer than one
/// attempt of the slowest retried call (a sweep's abort: 30 s, 5 s more before it is given up)
/// and its backoff (at most 5 s).
const TROUBLE_FRESH: Duration = Duration::from_secs(90);

/// One partition as librdkafka's statistics describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// Whether the broker leading it is connected.
    pub leader_up: bool,
    /// librdkafka's fetch state (`active` when fetching).
    pub fetch_state: String,
    /// The next offset to fetch; negative when unknown.
    pub fetch_position: i64,
    /// One past the last message handed to the stage; negative when unknown.
    pub taken: i64,
    /// Messages fetched and not yet taken.
    pub queued: i64,
    /// The last stable offset (what a `read_committed` reader can reach); negative when unknown.
    pub end: i64,
}

/// What the watched consumer reads: whether offsets below the last stable offset are all records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A topic no transactional producer writes (the ingest topic: the gateway's producer is
    /// idempotent, not transactional): every offset is a record, so a committed offset below the
    /// last stable offset means records not done.
    Plain,
    /// A topic written in transactions: commit markers and aborted records take offsets no
    /// reader ever receives, so only the fetch position says whether records wait.
    Transactional,
}

impl PartitionView {
    /// Whether there is something to read that a working consumer would be reading — or, on a
    /// plain input, something read and never committed.
    fn has_work(&self, input: Input, committed: Option<i64>) -> bool {
        self.queued > 0
            || self.fetch_state != "active"
            || (self.end >= 0 && self.fetch_position >= 0 && self.fetch_position < self.end)
            || (input == Input::Plain && committed.is_some_and(|c| self.end >= 0 && c < self.end))
    }

    fn position(&self) -> (i64, i64) {
        (self.fetch_position, self.taken)
    }

    fn describe(&self, committed: Option<i64>) -> String {
        let committed = committed.map_or_else(|| "nothing yet".to_owned(), |c| c.to_string());
        format!(
            "{}[{}] (fetch state {}, fetch position {}, taken up to {}, {} queued, last stable offset {}, committed {committed})",
            self.topic, self.partition, self.fetch_state, self.fetch_position, self.taken, self.queued, self.end
        )
    }
}

/// The consumer's group membership as the statistics describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    /// Whether the group coordinator is connected (`state` is `up`).
    pub coordinator_up: bool,
    /// `steady` once the consumer has its assignment.
    pub join_state: String,
}

/// What librdkafka's statistics say of the consumer's partitions and group membership.
pub fn views(stats: &rdkafka::Statistics) -> (Vec<PartitionView>, Option<GroupView>) {
    let up: BTreeSet<i32> = stats.brokers.values().filter(|b| b.state == "UP" && b.nodeid >= 0).map(|b| b.nodeid).collect();
    let partitions = stats
        .topics
        .values()
        .flat_map(|t| t.partitions.values().filter(|p| p.partition >= 0).map(move |p| (t, p)))
        .map(|(t, p)| PartitionView {
            topic: t.topic.clone(),
            partition: p.partition,
            leader_up: up.contains(&p.leader),
            fetch_state: p.fetch_state.clone(),
            fetch_position: p.next_offset,
            taken: p.app_offset,
            queued: p.fetchq_cnt,
            end: if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset },
        })
        .collect();
    let group = stats.cgrp.as_ref().map(|g| GroupView { coordinator_up: g.state == "up", join_state: g.join_state.clone() });
    (partitions, group)
}

type Partition = (String, i32);

/// Watches a consumer's assigned partitions and its group membership (see the module's doc).
/// Fed by the consumer's rebalances and statistics, and by a thread asking the broker for the
/// partitions' last stable offsets.
pub struct FetchWatch {
    limits: Limits,
    input: Input,
    inner: Mutex<Watched>,
    /// The stage's health: while it reports trouble (retrying Redis or Kafka) nothing counts.
    health: std::sync::OnceLock<Health>,
}

#[derive(Default)]
struct Watched {
    assigned: BTreeSet<Partition>,
    /// Last stable offsets as the broker last answered them.
    ends: HashMap<Partition, i64>,
    last_sample: Option<Instant>,
    /// What the stage last committed per partition (what its successor would start from).
    committed: HashMap<Partition, i64>,
    /// Partitions with work waiting: the position they hold, and since when.
    still: HashMap<Partition, ((i64, i64), Instant)>,
    /// Since when the group has not been steady with its coordinator up.
    unsettled_since: Option<Instant>,
}

impl crate::kafka::ConsumerWatch for FetchWatch {
    fn statistics(&self, statistics: &rdkafka::Statistics) {
        let (partitions, group) = views(statistics);
        if let Some(stalled) = self.observe(Instant::now(), &partitions, group.as_ref()) {
            crate::watchdog::give_up("consuming (work waiting, nothing moving)", &stalled);
        }
    }

    fn assigned(&self, partitions: Vec<(String, i32)>) {
        self.set_assignment(partitions);
    }
}

impl FetchWatch {
    /// A watch, with a thread asking the broker every [`END_PERIOD`] for the last stable offsets
    /// of the assigned partitions (through its own client, so a stuck consumer cannot stop it).
    ///
    /// # Errors
    /// When the client cannot be created.
    pub fn start(kafka: &crate::settings::KafkaSettings, input: Input) -> anyhow::Result<Arc<Self>> {
        Self::start_with(kafka, input, Limits::default())
    }

    /// A watch without its thread (the ends come only from the statistics).
    fn new(input: Input, limits: Limits) -> Self {
        FetchWatch { limits, input, inner: Mutex::default(), health: std::sync::OnceLock::new() }
    }

    /// [`FetchWatch::start`] with other limits.
    ///
    /// # Errors
    /// When the client cannot be created.
    pub fn start_with(kafka: &crate::settings::KafkaSettings, input: Input, limits: Limits) -> anyhow::Result<Arc<Self>> {
        let watch = Arc::new(FetchWatch::new(input, limits));
        let client: BaseConsumer = crate::kafka::reader_config(kafka).create()?;
        let weak = Arc::downgrade(&watch);
        std::thread::Builder::new().name("liveness-ends".into()).spawn(move || {
            while let Some(watch) = weak.upgrade() {
                let assigned = watch.assigned();
                drop(watch);
                let ends: Vec<(Partition, i64)> = assigned
                    .into_iter()
                    // Under `read_committed` (the reader's isolation) the broker answers the last stable offset.
                    .filter_map(|(topic, partition)| client.fetch_watermarks(&topic, partition, Duration::from_secs(5)).ok().map(|(_, end)| ((topic, partition), end)))
                    .collect();
                match weak.upgrade() {
                    Some(watch) => watch.inner.lock().expect("liveness lock").ends.extend(ends),
                    None => break,
                }
                std::thread::sleep(limits.end_period);
            }
        })?;
        Ok(watch)
    }

    /// The stage's health, made after the consumer: while it reports trouble (a dependency being
    /// retried) partitions standing still are waiting, not stalled, and the clocks start again.
    pub fn watch_health(&self, health: Health) {
        let _ = self.health.set(health);
    }

    /// The consumer's assignment changed: these partitions are its whole assignment now.
    pub fn set_assignment(&self, partitions: impl IntoIterator<Item = Partition>) {
        let mut w = self.inner.lock().expect("liveness lock");
        w.assigned = partitions.into_iter().collect();
        let assigned = w.assigned.clone();
        w.still.retain(|p, _| assigned.contains(p));
        w.ends.retain(|p, _| assigned.contains(p));
        w.committed.retain(|p, _| assigned.contains(p));
    }

    /// The stage committed these offsets (a transaction, or stored offsets under at least
    /// once): once known, a partition's progress is its committed offset — a stage that reads on
    /// but never commits (aborting and rewinding over and over) is not moving either.
    pub fn committed<'a>(&self, offsets: impl IntoIterator<Item = (&'a Partition, &'a i64)>) {
        let mut w = self.inner.lock().expect("liveness lock");
        for (partition, offset) in offsets {
            w.committed.insert(partition.clone(), *offset);
        }
    }

    fn assigned(&self) -> BTreeSet<Partition> {
        self.inner.lock().expect("liveness lock").assigned.clone()
    }

    /// Takes one statistics sample made at `now`; says what stalled, once something has.
    pub fn observe(&self, now: Instant, partitions: &[PartitionView], group: Option<&GroupView>) -> Option<String> {
        let mut w = self.inner.lock().expect("liveness lock");
        let polled_meanwhile = w.last_sample.is_none_or(|last| now.saturating_duration_since(last) <= self.limits.sample_gap);
        let troubled = self.health.get().is_some_and(|h| h.troubled_within(TROUBLE_FRESH));
        w.last_sample = Some(now);
        if !polled_meanwhile || troubled {
            // The stage was busy elsewhere (not polling), or is waiting out an outage: what
            // stood still meanwhile says nothing.
            w.still.clear();
            w.unsettled_since = None;
        }
        if troubled {
            return None;
        }
        let mut stalled = Vec::new();
        let mut waiting = BTreeSet::new();
        for view in partitions {
            let key = (view.topic.clone(), view.partition);
            if !w.assigned.contains(&key) || !view.leader_up {
                continue;
            }
            let mut view = view.clone();
            if let Some(end) = w.ends.get(&key) {
                view.end = view.end.max(*end);
            }
            let committed = w.committed.get(&key).copied();
            let work = view.has_work(self.input, committed);
            tracing::debug!(partition = %view.describe(committed), work, "liveness sample");
            if !work {
                continue;
            }
            let position = committed.map_or_else(|| view.position(), |c| (c, i64::MIN));
            let since = match w.still.get(&key) {
                Some((held, since)) if *held == position => *since,
                _ => now,
            };
            w.still.insert(key.clone(), (position, since));
            waiting.insert(key);
            let still_for = now.saturating_duration_since(since);
            if still_for >= self.limits.partition {
                stalled.push(format!("{} has not moved for {}s", view.describe(committed), still_for.as_secs()));
            }
        }
        w.still.retain(|p, _| waiting.contains(p));
        match group {
            Some(g) if g.coordinator_up && g.join_state != "steady" => {
                let since = *w.unsettled_since.get_or_insert(now);
                let unsettled = now.saturating_duration_since(since);
                if unsettled >= self.limits.group {
                    stalled.push(format!("the consumer has been in join state {} for {}s with the group coordinator up", g.join_state, unsettled.as_secs()));
                }
            }
            _ => w.unsettled_since = None,
        }
        (!stalled.is_empty()).then(|| stalled.join("; "))
    }
}

/// Watches the runner's loop: how long it has been on one step (see the module's doc).
pub struct LoopWatch {
    origin: Instant,
    /// Milliseconds since `origin` when the current step began; 0 while the loop waits for work.
    busy_since_ms: AtomicU64,
}

impl LoopWatch {
    /// A watch with a thread that ends the process once the loop has been on one step for
    /// [`LOOP_STALL`] with no trouble reported to `health` in the last [`TROUBLE_FRESH`] (and
    /// shutdown not begun).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(health: Health, shutdown: CancellationToken) -> anyhow::Result<Arc<Self>> {
        let watch = Arc::new(LoopWatch { origin: Instant::now(), busy_since_ms: AtomicU64::new(0) });
        let weak = Arc::downgrade(&watch);
        std::thread::Builder::new().name("liveness-loop".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let Some(watch) = weak.upgrade() else { break };
            if shutdown.is_cancelled() || health.troubled_within(TROUBLE_FRESH) {
                continue;
            }
            if let Some(busy) = watch.busy_for(Instant::now()).filter(|busy| *busy >= LOOP_STALL) {
                crate::watchdog::give_up(
                    "the stage's loop (one step never ended)",
                    &format!("busy with one batch, commit or rewind for {}s, no trouble reported", busy.as_secs()),
                );
            }
        })?;
        Ok(watch)
    }

    /// The loop took up a step.
    pub fn busy(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        self.busy_since_ms.store(ms, Ordering::Relaxed);
    }

    /// The loop is back waiting for work.
    pub fn waiting(&self) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the current step has taken at `now`; `None` while waiting.
    fn busy_for(&self, now: Instant) -> Option<Duration> {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(now.saturating_duration_since(self.origin + Duration::from_millis(ms))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn partition(p: i32, fetch_position: i64, end: i64) -> PartitionView {
        PartitionView { topic: "ingest".into(), partition: p, leader_up: true, fetch_state: "active".into(), fetch_position, taken: fetch_position, queued: 0, end }
    }

    fn steady() -> GroupView {
        GroupView { coordinator_up: true, join_state: "steady".into() }
    }

    /// Samples every 5 s from `start` for `for_secs`, each made of `sample(t)`; the first stall.
    fn run(watch: &FetchWatch, start: Instant, for_secs: u64, sample: impl Fn(u64) -> (Vec<PartitionView>, GroupView)) -> Option<(u64, String)> {
        (0..=for_secs).step_by(5).find_map(|t| {
            let (partitions, group) = sample(t);
            watch.observe(start + Duration::from_secs(t), &partitions, Some(&group)).map(|why| (t, why))
        })
    }

    #[test]
    fn a_partition_with_records_waiting_that_does_not_move_is_a_stall() {
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0), ("ingest".to_owned(), 1)]);
        // Partition 0 moves; partition 1 stays at 40 with 100 to read.
        let (at, why) = run(&watch, Instant::now(), 300, |t| (vec![partition(0, t as i64, t as i64 + 3), partition(1, 40, 100)], steady())).expect("a stall");
        assert_eq!(at, 60);
        assert!(why.starts_with("ingest[1] (fetch state active, fetch position 40"), "{why}");
        assert!(!why.contains("ingest[0]"), "{why}");
    }

    #[test]
    fn a_partition_read_over_and_over_and_never_committed_is_a_stall() {
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0)]);
        watch.committed([(&("ingest".to_owned(), 0), &40)]);
        // Rewound again and again: the fetch position moves, the committed offset does not.
        let (at, why) = run(&watch, Instant::now(), 300, |t| (vec![partition(0, 40 + (t % 20) as i64, 100)], steady())).expect("a stall");
        assert_eq!(at, 60);
        assert!(why.contains("committed 40"), "{why}");
        // Committing moves it.
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0)]);
        let start = Instant::now();
        for t in (0..300).step_by(5) {
            watch.committed([(&("ingest".to_owned(), 0), &(t as i64))]);
            assert_eq!(watch.observe(start + Duration::from_secs(t), &[partition(0, t as i64 + 1, 1_000)], Some(&steady())), None);
        }
    }

    #[test]
    fn on_a_plain_input_records_read_and_never_committed_are_a_stall_on_a_transactional_one_not() {
        // Fetched to the end and idle, 60 records above what was committed: taken and dropped.
        let sample = |_| (vec![partition(0, 100, 100)], steady());
        let watch = FetchWatch::new(Input::Plain, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0)]);
        watch.committed([(&("ingest".to_owned(), 0), &40)]);
        let (at, why) = run(&watch, Instant::now(), 300, sample).expect("a stall");
        assert_eq!(at, 60);
        assert!(why.contains("last stable offset 100, committed 40"), "{why}");
        // On a transactional input the offsets past the committed one may be markers and
        // aborted records, which no reader receives.
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("processed".to_owned(), 0)]);
        watch.committed([(&("processed".to_owned(), 0), &40)]);
        let sample = |_| (vec![PartitionView { topic: "processed".into(), ..partition(0, 100, 100) }], steady());
        assert_eq!(run(&watch, Instant::now(), 300, sample), None);
    }

    #[test]
    fn caught_up_idle_or_moving_partitions_are_not_stalls() {
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0), ("ingest".to_owned(), 1), ("ingest".to_owned(), 2)]);
        let slow = |t: u64| partition(1, 100 + (t / 20) as i64, 1_000);
        assert_eq!(run(&watch, Instant::now(), 600, |t| (vec![partition(0, 7, 7), slow(t), partition(2, 0, 0)], steady())), None);
    }

    #[test]
    fn a_partition_whose_stuck_fetches_hid_its_end_is_found_through_the_broker() {
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 3)]);
        let start = Instant::now();
        // librdkafka's own idea of the end is as stale as the fetch: caught up, seemingly.
        assert_eq!(run(&watch, start, 120, |_| (vec![partition(3, 500, 500)], steady())), None);
        watch.inner.lock().unwrap().ends.insert(("ingest".into(), 3), 900);
        let (at, why) = run(&watch, start + 125 * S, 300, |_| (vec![partition(3, 500, 500)], steady())).expect("a stall");
        assert_eq!(at, 60);
        assert!(why.contains("last stable offset 900"), "{why}");
    }

    #[test]
    fn no_stall_is_seen_while_the_leader_is_down_unassigned_or_the_stage_is_not_polling() {
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0)]);
        let start = Instant::now();
        let down = PartitionView { leader_up: false, ..partition(0, 40, 100) };
        assert_eq!(run(&watch, start, 300, |_| (vec![down.clone()], steady())), None);
        // Samples 20 s apart: the stage polls only between long steps.
        for i in 0..30 {
            assert_eq!(watch.observe(start + Duration::from_secs(400 + i * 20), &[partition(0, 40, 100)], Some(&steady())), None);
        }
        watch.set_assignment(Vec::<Partition>::new());
        assert_eq!(run(&watch, start + 1_100 * S, 300, |_| (vec![partition(0, 40, 100)], steady())), None);
    }

    #[test]
    fn nothing_counts_while_the_stage_reports_trouble() {
        let watch = FetchWatch::new(Input::Plain, Limits::default());
        let health = Health::new(None, None);
        watch.watch_health(health.clone());
        watch.set_assignment([("ingest".to_owned(), 0)]);
        watch.committed([(&("ingest".to_owned(), 0), &40)]);
        let start = Instant::now();
        let stuck = |_| (vec![partition(0, 100, 100)], GroupView { coordinator_up: true, join_state: "wait-join".into() });
        // Retrying Redis for five minutes, polling all along: waiting, not stalled.
        health.set_trouble("redis unavailable, retrying");
        assert_eq!(run(&watch, start, 300, stuck), None);
        // The outage over and the partition still standing: its clock starts when the trouble ends.
        health.clear_trouble();
        let (at, why) = run(&watch, start + 305 * S, 300, stuck).expect("a stall");
        assert_eq!(at, 60);
        assert!(why.contains("committed 40"), "{why}");
    }

    #[test]
    fn a_partition_that_never_fetches_is_a_stall_and_a_group_that_never_settles_too() {
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        watch.set_assignment([("ingest".to_owned(), 0)]);
        let waiting = PartitionView { fetch_state: "offset-query".into(), fetch_position: -1001, taken: -1001, end: -1001, ..partition(0, 0, 0) };
        let (at, why) = run(&watch, Instant::now(), 300, |_| (vec![waiting.clone()], steady())).expect("a stall");
        assert_eq!(at, 60);
        assert!(why.contains("fetch state offset-query"), "{why}");

        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        let joining = GroupView { coordinator_up: true, join_state: "wait-sync".into() };
        let (at, why) = run(&watch, Instant::now(), 300, |_| (vec![], joining.clone())).expect("a stall");
        assert_eq!(at, 120);
        assert!(why.contains("join state wait-sync"), "{why}");
        // Without its coordinator (the broker is down) the group is only waiting.
        let watch = FetchWatch::new(Input::Transactional, Limits::default());
        let orphaned = GroupView { coordinator_up: false, join_state: "wait-join".into() };
        assert_eq!(run(&watch, Instant::now(), 600, |_| (vec![], orphaned.clone())), None);
    }

    #[test]
    fn the_loop_is_busy_only_between_taking_a_step_and_waiting_again() {
        let watch = LoopWatch { origin: Instant::now(), busy_since_ms: AtomicU64::new(0) };
        assert_eq!(watch.busy_for(Instant::now()), None);
        watch.busy();
        let busy = watch.busy_for(Instant::now() + 130 * S).expect("busy");
        assert!(busy >= 129 * S && busy <= 131 * S, "{busy:?}");
        watch.waiting();
        assert_eq!(watch.busy_for(Instant::now() + 130 * S), None);
    }
}
