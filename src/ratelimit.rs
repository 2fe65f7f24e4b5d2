//! Upstream rate limits (SPEC section 11): at most `rps` requests in any one-second window
//! per scope, at most `burst` of them back to back; over the limit a request waits its turn
//! (first come, first served) up to `max_wait`, or is refused with `Retry-After`.
//!
//! Providers count requests per window ("10 requests per second"), so the limiter keeps the
//! times of the last `quota` requests it let through (or scheduled) and gives each new request
//! the first slot that keeps every one-second window within the quota; a
//! generic-cell-rate check on top spaces the requests when `burst` is smaller. A slot is
//! reserved when it is handed out, so callers go in the order they asked, and one short,
//! uncontended critical section is all a request under the limit pays (no await, no
//! allocation: `benches/hot_path.rs` measures it).
//!
//! Replicas sharing a postgres store split the budget ([`Limiter::set_share`]): each takes an
//! integer part of `rps` per window, so the sum over replicas stays within `rps` in every
//! window. An upstream 429 with `Retry-After` pauses the scope ([`Limiter::pause`]); requests
//! already waiting then go, in order, after the pause.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Over, RateLimitConfig};

/// The window providers count in.
const WINDOW: Duration = Duration::from_secs(1);
/// Slack added to the window so that the upstream, whose clock and receive times differ from
/// ours by a little, never counts one request too many in its own window.
const WINDOW_SLACK: Duration = Duration::from_millis(10);
/// The longest pause an upstream's `Retry-After` can impose.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// The limiter of one scope (a connection).
pub struct Limiter {
    burst: u32,
    over: Over,
    max_wait: Duration,
    state: Mutex<State>,
}

struct State {
    /// Requests per window for this process.
    quota: u32,
    /// The window the quota applies to (one second, longer when replicas outnumber `rps`).
    window: Duration,
    /// Slots handed out, oldest first; none older than a window before the newest.
    sent: VecDeque<Instant>,
    /// Theoretical arrival time of the generic-cell-rate check that enforces `burst`.
    tat: Option<Instant>,
    paused_until: Option<Instant>,
    /// Counts pauses, so a waiter can tell that one began while it slept.
    pauses: u64,
}

/// What [`Limiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go now.
    Now,
    /// A slot is reserved at `at`; sleep until then. `pauses` is the pause count at the time.
    Wait { at: Instant, pauses: u64 },
    /// Over the limit: nothing reserved; try again after `retry_after`.
    Reject { retry_after: Duration },
}

/// A request refused by the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

impl Limiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            burst: config.burst.max(1),
            over: config.over,
            max_wait: config.max_wait,
            state: Mutex::new(State {
                quota: config.rps.max(1),
                window: WINDOW,
                sent: VecDeque::with_capacity(config.rps.max(1) as usize),
                tat: None,
                paused_until: None,
                pauses: 0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below is complete before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process's part of `rps` when `live` replicas share it and this one is the
    /// `index`-th (0-based, in an order every replica agrees on).
    pub fn set_share(&self, rps: u32, index: usize, live: usize) {
        let (quota, window) = share(rps, index, live);
        let mut state = self.state();
        state.quota = quota;
        state.window = window;
    }

    /// This process's quota and window now.
    pub fn share(&self) -> (u32, Duration) {
        let state = self.state();
        (state.quota, state.window)
    }

    /// Decides the slot of a request arriving at `now` that may wait at most `budget`.
    pub fn admit(&self, now: Instant, budget: Duration) -> Admission {
        let mut state = self.state();
        let window = state.window + WINDOW_SLACK;
        let quota = state.quota as usize;
        while state
            .sent
            .front()
            .is_some_and(|&t| t + window <= now || state.sent.len() > quota)
        {
            state.sent.pop_front();
        }
        let mut slot = now;
        if let Some(until) = state.paused_until {
            slot = slot.max(until);
        }
        if let Some(&last) = state.sent.back() {
            // First come, first served: never before a slot already handed out.
            slot = slot.max(last);
        }
        if state.sent.len() >= quota
            && let Some(&oldest) = state.sent.get(state.sent.len() - quota)
        {
            slot = slot.max(oldest + window);
        }
        let interval = state.window / state.quota.max(1);
        let burst = self.burst.min(state.quota);
        if let Some(tat) = state.tat {
            let tolerance = interval * (burst - 1);
            if let Some(earliest) = tat.checked_sub(tolerance) {
                slot = slot.max(earliest);
            }
        }
        let wait = slot.saturating_duration_since(now);
        let refuse = match self.over {
            Over::Reject => !wait.is_zero(),
            Over::Wait => wait > budget,
        };
        if refuse {
            return Admission::Reject {
                retry_after: wait.max(Duration::from_millis(1)),
            };
        }
        state.tat = Some(state.tat.map_or(slot, |tat| tat.max(slot)) + interval);
        state.sent.push_back(slot);
        if wait.is_zero() {
            Admission::Now
        } else {
            Admission::Wait {
                at: slot,
                pauses: state.pauses,
            }
        }
    }

    /// True if a pause began after `pauses` was read and is still running at `now`.
    fn paused_since(&self, pauses: u64, now: Instant) -> bool {
        let state = self.state();
        state.pauses != pauses && state.paused_until.is_some_and(|until| until > now)
    }

    /// The upstream said 429 with `Retry-After`: no request from this scope before then.
    pub fn pause(&self, now: Instant, retry_after: Duration) {
        let until = now + retry_after.min(MAX_PAUSE);
        let mut state = self.state();
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        state.pauses += 1;
    }

    /// Waits for this request's turn: `Ok(waited)` once it may go, `Err` when the wait would
    /// pass `max_wait` (or at once with `over = "reject"`).
    pub async fn acquire(&self) -> Result<Duration, Rejected> {
        let start = Instant::now();
        let mut now = start;
        loop {
            let budget = self.max_wait.saturating_sub(now - start);
            match self.admit(now, budget) {
                Admission::Now => return Ok(now - start),
                Admission::Reject { retry_after } => return Err(Rejected { retry_after }),
                Admission::Wait { at, pauses } => {
                    tokio::time::sleep_until(at).await;
                    now = Instant::now();
                    // A pause that began while this request slept moves it behind the pause.
                    if !self.paused_since(pauses, now) {
                        return Ok(now - start);
                    }
                }
            }
        }
    }
}

/// A `Retry-After` value (delay-seconds or an HTTP-date, RFC 9110 section 10.2.3) as a wait
/// from `now`; `None` if it is neither.
pub fn parse_retry_after(value: &[u8], now: std::time::SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `rps` split over `live` replicas: an integer quota per window for replica `index`, the
/// quotas summing to `rps`. With more replicas than `rps`, each gets one request per a
/// longer window instead of none.
pub fn share(rps: u32, index: usize, live: usize) -> (u32, Duration) {
    let rps = rps.max(1);
    let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(u32::MAX).min(live - 1);
    if rps >= live {
        let extra = u32::from(index < rps % live);
        (rps / live + extra, WINDOW)
    } else {
        // Rounded up: a share never adds up to more than the budget.
        let nanos = (WINDOW.as_nanos() * u128::from(live)).div_ceil(u128::from(rps));
        (
            1,
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
        )
    }
}

pub mod replicas;

#[cfg(test)]
mod tests;
