//! The arithmetic of the bench's figures: requests in 1-second windows (sliding and
//! aligned), per-second series, and when the survivors of a kill reach the full budget.

use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// The most arrivals in any window `[t, t + 1 s)`, and where the first such window starts.
/// `times` sorted. A busiest window can always be slid to start at an arrival, so looking at
/// windows starting at each arrival finds the exact maximum over all windows.
pub fn max_sliding(times: &[Instant]) -> (usize, Option<Instant>) {
    let mut best = (0, None);
    let mut end = 0;
    for (start, &t) in times.iter().enumerate() {
        while end < times.len() && times[end] < t + SECOND {
            end += 1;
        }
        if end - start > best.0 {
            best = (end - start, Some(t));
        }
    }
    best
}

/// Arrivals per whole second since `origin` (second k is `[origin + k s, origin + k+1 s)`),
/// for `seconds` seconds.
pub fn per_second(times: &[Instant], origin: Instant, seconds: usize) -> Vec<usize> {
    let mut counts = vec![0; seconds];
    for t in times {
        if let Some(since) = t.checked_duration_since(origin) {
            let k = since.as_secs() as usize;
            if k < seconds {
                counts[k] += 1;
            }
        }
    }
    counts
}

/// Arrivals in `[from, to)` per second.
pub fn rate(times: &[Instant], from: Instant, to: Instant) -> f64 {
    let n = times.iter().filter(|&&t| t >= from && t < to).count();
    n as f64 / to.duration_since(from).as_secs_f64()
}

/// The first arrival after `after` at which `times` (sorted) hold at least `count` in the
/// trailing second `(t - 1 s, t]`.
pub fn first_full_second(times: &[Instant], after: Instant, count: usize) -> Option<Instant> {
    let mut start = 0;
    for (end, &t) in times.iter().enumerate() {
        while t.duration_since(times[start]) >= SECOND {
            start += 1;
        }
        if t > after && end + 1 - start >= count {
            return Some(t);
        }
    }
    None
}
