//! Capped exponential backoff with jitter, for retrying transient failures, and the two loops
//! built on it: [`pause`] (sleep unless shutdown comes) and [`with_redis_retry`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::shutdown::{CancellationToken, Interrupted};

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempt: 0 }
    }

    /// The default for infrastructure calls: 100 ms doubling up to 5 s.
    pub fn infra() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The next delay: uniformly random in `[cap / 4, cap]`, where `cap = min(max, base *
    /// 2^attempt)` — jittered so retries spread out, yet never near zero, so a failing call is
    /// not retried in a tight loop.
    pub fn next_delay(&mut self) -> Duration {
        RETRIES.fetch_add(1, Ordering::Relaxed);
        let cap = self.base.saturating_mul(1 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(millis / 4..=millis.max(1)))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Where a retry loop reports the trouble it is in, so that the service says not ready meanwhile
/// ([`crate::health::Health`] is one). A trait, so that retrying depends on nothing it retries.
pub trait Trouble {
    fn trouble(&self, why: String);
}

/// Runs a Redis operation until it succeeds, with backoff; reports not ready meanwhile. Every
/// failure is taken as transient — a timeout, a lost connection, a Redis still `LOADING` its
/// data after a restart — since the operations it runs are safe to repeat.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
pub async fn with_redis_retry<T, E, F, Fut>(health: &impl Trouble, shutdown: &CancellationToken, mut op: F) -> Result<T, Interrupted>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::infra();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(err) => {
                tracing::warn!(error = %err, "redis call failed; retrying");
                health.trouble(format!("redis failing: {err}"));
                pause(&mut backoff, shutdown).await?;
            }
        }
    }
}

/// Backoff waits this process has taken ([`Backoff::next_delay`]), every retry loop together
/// (`metastream_retries_total`): what shows a retry storm, or its absence, during an outage.
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// How many retries this process has waited for so far.
pub fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Sleeps for the next backoff delay, unless shutdown comes first.
///
/// # Errors
/// [`Interrupted`] when shutdown comes first.
pub async fn pause(backoff: &mut Backoff, shutdown: &CancellationToken) -> Result<(), Interrupted> {
    tokio::select! {
        _ = shutdown.cancelled() => Err(Interrupted),
        _ = tokio::time::sleep(backoff.next_delay()) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        assert!(delays[0] <= Duration::from_millis(100));
        assert_eq!(b.attempts(), 10);
    }
}
