//! Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to a cap, each delay drawn uniformly
//! from its upper half so a fleet of agents does not reconnect in lockstep after a relay restart.

use std::time::Duration;

use rand::Rng;

/// Backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, attempt: 0 }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// Back to the first delay, after a session that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut last_ceiling = Duration::ZERO;
        for i in 0..20 {
            let d = b.next_delay();
            let ceiling = (Duration::from_millis(500) * (1 << i.min(16))).min(Duration::from_secs(30));
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {i}: {d:?}");
            assert!(ceiling >= last_ceiling);
            last_ceiling = ceiling;
        }
        assert_eq!(last_ceiling, Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
