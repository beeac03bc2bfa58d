//! One backoff for everything that retries: the supervisor restarting a
//! child, a daemon reconnecting to the controller, an informer's watch.
//! Exponential and capped; the callers that many replicas run at once
//! draw a jittered delay under the ceiling, so a controller restart is not
//! met by every daemon of the cluster at the same instant.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `initial × 2^attempt`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling for retry number `attempt` (from 0): `initial × 2^attempt`,
    /// at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max)
    }

    /// "Full jitter": a delay drawn uniformly from zero to the ceiling of
    /// `attempt`. Spreads best; a retry may come at once.
    pub fn full_jitter(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = millis(self.ceiling(attempt));
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// "Equal jitter": a delay drawn uniformly from half the ceiling of
    /// `attempt` to all of it. Spreads, and never retries at once.
    pub fn equal_jitter(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = millis(self.ceiling(attempt));
        Duration::from_millis(rng.random_range(ceiling / 2..=ceiling))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(10) };

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        assert_eq!(B.ceiling(0), Duration::from_millis(100));
        assert_eq!(B.ceiling(1), Duration::from_millis(200));
        assert_eq!(B.ceiling(6), Duration::from_millis(6400));
        assert_eq!(B.ceiling(7), Duration::from_secs(10));
        assert_eq!(B.ceiling(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_varies() {
        let mut rng = rand::rng();
        let delays: Vec<Duration> = (0..200).map(|_| B.full_jitter(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        assert!(delays.iter().any(|d| *d != delays[0]), "full jitter should spread the delays");
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half_and_varies() {
        let mut rng = rand::rng();
        let delays: Vec<Duration> = (0..200).map(|_| B.equal_jitter(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| (Duration::from_millis(400)..=Duration::from_millis(800)).contains(d)));
        assert!(delays.iter().any(|d| *d != delays[0]), "equal jitter should spread the delays");
    }
}
