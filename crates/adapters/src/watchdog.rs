//! A blocking librdkafka call that never returns.
//!
//! librdkafka's transactional and group calls take a timeout, yet some have been seen to wait
//! for ever on an internal condition after a broker restart (`send_offsets_to_transaction`,
//! caught under gdb; `begin_transaction` and `abort_transaction` in librdkafka issues #4420 and
//! #3779). Such a call made on the stage's own task stops the stage for good while the process
//! looks healthy: its HTTP listener still answers, no error is logged, nothing more is
//! published. Calls that run on a blocking thread under a tokio timeout are given up and the
//! producer replaced (`stage::transaction`); a call that cannot be given up — on the runner's
//! task, or in the consumer's rebalance callback — is made under a [`guard`] instead.
//!
//! A guard held past its limit means the call hung. Nothing inside the process can take the
//! thread back, so the process logs an ERROR naming the call and exits with [`EXIT_HUNG`]: the
//! orchestrator starts it again, and what it had not committed is redone by its successor
//! (exactly once: the open transaction is aborted when the new instance claims its
//! transactional id; at least once: uncommitted offsets are read again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The exit code of a process that gave up on a hung call (`EX_TEMPFAIL`: start it again).
pub const EXIT_HUNG: i32 = 75;

/// Calls in progress, by guard id: what each is and when it must have returned.
#[derive(Default)]
struct Calls {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (&'static str, Instant, Duration)>>,
}

impl Calls {
    fn enter(&self, what: &'static str, limit: Duration) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("watchdog lock").insert(id, (what, Instant::now(), limit));
        id
    }

    fn leave(&self, id: u64) {
        self.open.lock().expect("watchdog lock").remove(&id);
    }

    /// A call that has outlived its limit at `now`: what it is and how long it has run.
    fn overdue(&self, now: Instant) -> Option<(&'static str, Duration)> {
        let open = self.open.lock().expect("watchdog lock");
        open.values().map(|(what, since, limit)| (*what, now.saturating_duration_since(*since), *limit)).find(|(_, ran, limit)| ran > limit).map(|(what, ran, _)| (what, ran))
    }
}

/// How often the watchdog looks.
const PERIOD: Duration = Duration::from_secs(1);

fn calls() -> &'static Calls {
    static CALLS: OnceLock<&'static Calls> = OnceLock::new();
    CALLS.get_or_init(|| {
        let calls: &'static Calls = Box::leak(Box::default());
        // A thread of its own: a hung call may hold a tokio worker, or all of them.
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(PERIOD);
                if let Some((what, ran)) = calls.overdue(Instant::now()) {
                    hung(what, ran);
                }
            })
            .expect("starting the watchdog thread");
        calls
    })
}

/// The process cannot go on after `what` failed in a way it cannot recover from in place:
/// exits with [`EXIT_HUNG`] after an ERROR line, as for a hung call.
pub fn give_up(what: &'static str, why: &str) -> ! {
    tracing::error!(during = what, error = why, exit_code = EXIT_HUNG, "cannot go on in place; exiting so the instance is started again (what it had not committed is redone)");
    exit_hung()
}

/// The process cannot go on: say which call hung, and exit so it is started again.
fn hung(what: &'static str, ran: Duration) -> ! {
    tracing::error!(call = what, after = ?ran, exit_code = EXIT_HUNG, "a blocking Kafka call has not returned; exiting so the instance is started again (what it had not committed is redone)");
    exit_hung()
}

/// Exits with [`EXIT_HUNG`], once the ERROR line just logged has had time to reach the
/// collector.
fn exit_hung() -> ! {
    std::thread::sleep(Duration::from_millis(200));
    std::process::exit(EXIT_HUNG)
}

/// Held while a call that may hang runs; dropped when it returns.
#[must_use = "the call is watched only while the guard lives"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        calls().leave(self.0);
    }
}

/// Watches the call about to be made: if the guard is not dropped within `limit` (the call's
/// own timeout and a margin), the process exits with [`EXIT_HUNG`].
pub fn guard(what: &'static str, limit: Duration) -> Guard {
    Guard(calls().enter(what, limit))
}

/// Watches the thread of a current-thread tokio runtime (the transformers'): a task that turns
/// once a second under a guard of `limit`. Any call that blocks the thread — one not guarded
/// on its own, wherever it is — stops the turning, and past `limit` the process exits with
/// [`EXIT_HUNG`]. Calls that may block for a bounded while (seeks, a revoke's abort) must fit
/// well within `limit`.
pub fn watch_runtime(limit: Duration) {
    tokio::spawn(async move {
        loop {
            let _turning = guard("the service's async runtime (a blocking call on its thread)", limit);
            tokio::time::sleep(PERIOD).await;
        }
    });
}

/// Runs `call` under a [`guard`].
pub fn watched<T>(what: &'static str, limit: Duration, call: impl FnOnce() -> T) -> T {
    let _guard = guard(what, limit);
    call()
}

#[cfg(test)]
mod tests {
    use super::Calls;
    use std::time::{Duration, Instant};

    #[test]
    fn a_call_is_overdue_only_past_its_limit_and_only_until_it_returns() {
        let calls = Calls::default();
        let start = Instant::now();
        let quick = calls.enter("begin_transaction", Duration::from_secs(60));
        let slow = calls.enter("abort_transaction in the revoke hook", Duration::from_secs(90));
        assert_eq!(calls.overdue(start + Duration::from_secs(30)), None);
        let (what, ran) = calls.overdue(start + Duration::from_secs(75)).expect("begin_transaction is past its 60 s");
        assert_eq!(what, "begin_transaction");
        assert!(ran > Duration::from_secs(74) && ran <= Duration::from_secs(75));
        calls.leave(quick);
        assert_eq!(calls.overdue(start + Duration::from_secs(75)), None, "returned calls are not watched");
        assert_eq!(calls.overdue(start + Duration::from_secs(100)).map(|(w, _)| w), Some("abort_transaction in the revoke hook"));
        calls.leave(slow);
        assert_eq!(calls.overdue(start + Duration::from_secs(1000)), None);
    }

    /// Run by the test below in a child process: a call that outlives its limit.
    #[test]
    #[ignore = "run in a child process by a_hung_call_ends_the_process_with_exit_75"]
    fn hangs_in_a_watched_call() {
        super::watched("a call that never returns", Duration::from_millis(500), || std::thread::sleep(Duration::from_secs(30)));
    }

    /// Run by the test below in a child process: a blocking call on a watched runtime's thread.
    #[test]
    #[ignore = "run in a child process by a_hung_call_ends_the_process_with_exit_75"]
    fn blocks_a_watched_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            super::watch_runtime(Duration::from_millis(500));
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::thread::sleep(Duration::from_secs(30));
        });
    }

    /// The exit code of this test binary running only the ignored test `name`.
    fn exit_code_of(name: &str) -> Option<i32> {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--ignored", "--test-threads=1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        status.code()
    }

    #[test]
    fn a_hung_call_ends_the_process_with_exit_75() {
        for name in ["watchdog::tests::hangs_in_a_watched_call", "watchdog::tests::blocks_a_watched_runtime"] {
            let started = Instant::now();
            assert_eq!(exit_code_of(name), Some(super::EXIT_HUNG), "{name}");
            assert!(started.elapsed() < Duration::from_secs(20), "{name}: the watchdog ended the call long before it would have returned");
        }
    }

    #[test]
    fn guards_leave_the_registry_when_dropped() {
        {
            let _g = super::guard("test call", Duration::from_secs(3600));
            assert_eq!(super::calls().open.lock().unwrap().values().filter(|(w, _, _)| *w == "test call").count(), 1);
        }
        assert_eq!(super::calls().open.lock().unwrap().values().filter(|(w, _, _)| *w == "test call").count(), 0);
        assert_eq!(super::watched("test call", Duration::from_secs(3600), || 7), 7);
    }
}
