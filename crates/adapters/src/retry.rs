//! Capped exponential backoff with full jitter, for retrying transient failures.

use std::time::Duration;

use rand::Rng;

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

    /// The next delay: uniformly random in `[0, min(max, base * 2^attempt)]`.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.base.saturating_mul(1 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(millis / 4..=millis.max(1)))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
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
