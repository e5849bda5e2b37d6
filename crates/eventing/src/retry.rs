//! Bounded exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

/// How often and how fast to try something again: the delay between the tries of a consumer's
/// record that failed transiently, or of a notification delivery.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Total tries, the first one included, for work that gives up (the notification service's
    /// deliveries). A [`Consumer`](crate::Consumer) does not: it retries a record's transient
    /// failure for as long as it lasts.
    pub max_attempts: u32,
    /// Upper bound of the delay after the first failure.
    pub initial_backoff: Duration,
    /// Upper bound of any delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before try `attempt + 1`, after `attempt` failed tries (`attempt >= 1`).
    ///
    /// Full jitter (a uniform draw below the exponential bound) spreads the retries of many
    /// consumers that failed at the same moment, e.g. when the database restarted.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_stays_bounded() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(3) <= Duration::from_millis(400));
            assert!(policy.backoff(30) <= Duration::from_secs(1));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| policy.backoff(4)).collect();
        assert!(spread.len() > 10, "jitter draws should differ");
    }
}
