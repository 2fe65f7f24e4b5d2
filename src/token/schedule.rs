//! When to refresh and how long to back off: small pure functions with clamps, so tests can
//! check them without clocks. `jitter` is a random number in `[0, 1)` supplied by the caller.

use std::time::Duration;

const MIN_SKEW: Duration = Duration::from_secs(30);
const MAX_SKEW: Duration = Duration::from_secs(300);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Backoff (and any `Retry-After` we honour) never exceeds this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How long after issue to refresh a token that lives `lifetime`.
///
/// Skew defaults to 10% of the lifetime clamped to [30s, 5m]; a configured or default skew
/// is at most half the lifetime. The wait is then shortened by up to 10% (`jitter`) so that
/// replicas and connections issued together do not refresh in lockstep.
pub fn refresh_in(lifetime: Duration, configured_skew: Option<Duration>, jitter: f64) -> Duration {
    let skew = configured_skew
        .unwrap_or_else(|| (lifetime / 10).clamp(MIN_SKEW, MAX_SKEW))
        .min(lifetime / 2);
    let wait = lifetime.saturating_sub(skew);
    wait.mul_f64(1.0 - 0.1 * jitter.clamp(0.0, 1.0))
}

/// Exponential backoff with jitter for transient token-endpoint failures.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The delay before the next attempt. A server's `Retry-After` is honoured (capped);
    /// otherwise 1s, 2s, 4s, ... up to 5m, each scaled into [50%, 100%] by `jitter`.
    pub fn next(&mut self, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exponential = BACKOFF_BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_CAP);
        self.failures = self.failures.saturating_add(1);
        match retry_after {
            Some(delay) => delay.min(BACKOFF_CAP),
            None => exponential.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0)),
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn default_skew_is_ten_percent_clamped() {
        // 1h: 10% = 6m, clamped to 5m.
        assert_eq!(refresh_in(S(3600), None, 0.0), S(3300));
        // 10m: 10% = 60s.
        assert_eq!(refresh_in(S(600), None, 0.0), S(540));
        // 2m: 10% = 12s, clamped up to 30s.
        assert_eq!(refresh_in(S(120), None, 0.0), S(90));
        // 20s: 30s is more than half, so half.
        assert_eq!(refresh_in(S(20), None, 0.0), S(10));
    }

    #[test]
    fn configured_skew_is_at_most_half() {
        assert_eq!(refresh_in(S(3600), Some(S(60)), 0.0), S(3540));
        assert_eq!(refresh_in(S(60), Some(S(600)), 0.0), S(30));
    }

    #[test]
    fn jitter_shortens_by_at_most_ten_percent() {
        let full = refresh_in(S(1000), Some(S(0)), 0.0);
        let jittered = refresh_in(S(1000), Some(S(0)), 0.999);
        assert!(jittered < full && jittered >= full.mul_f64(0.9));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..12).map(|_| b.next(None, 1.0)).collect();
        assert_eq!(&delays[..4], &[S(1), S(2), S(4), S(8)]);
        assert_eq!(delays[11], BACKOFF_CAP);
        b.reset();
        assert_eq!(b.next(None, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let mut b = Backoff::default();
        assert_eq!(b.next(Some(S(7)), 0.5), S(7));
        assert_eq!(b.next(Some(S(3600)), 0.5), BACKOFF_CAP);
    }
}
