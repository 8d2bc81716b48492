//! The one back-off policy: a delay that doubles with each attempt, from
//! `initial` up to `max`. Used for request timeouts, for how long a provider
//! that failed or answered `Busy` is left alone, and for how often providers
//! are looked up again.

use std::time::Duration;

/// A doubling delay, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The delay before attempt `attempt` (0-based): `initial * 2^attempt`,
    /// at most `max` (and never less than `initial`, whatever `max` says).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max.max(self.initial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let delays: Vec<u64> = (0..6)
            .map(|a| backoff.delay(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(4));
        // A cap below the start is the start.
        let odd = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(odd.delay(3), Duration::from_secs(2));
    }
}
