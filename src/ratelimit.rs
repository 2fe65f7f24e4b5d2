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
//! window. An upstream 429 with `Retry-After` pauses the scope ([`Limiter::pause`]).
//!
//! Either change re-plans the slots already handed out to waiting requests, in their order,
//! under the new share or after the pause, and wakes the waiters to take their new slots
//! (each holds a ticket into the plan). Without that, a replica whose share shrank (another
//! joined) would keep sending at the old rate for up to `max_wait`, over the budget, and one
//! whose share grew (another left) would not use it until its queue drained.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
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
    /// The plan's version ([`State::changes`]), for waiters to notice a re-plan.
    replanned: watch::Sender<u64>,
}

struct State {
    /// Requests per window for this process.
    quota: u32,
    /// The window the quota applies to (one second, longer when replicas outnumber `rps`).
    window: Duration,
    /// Slots handed out, in order: those of the last window and every one still ahead.
    sent: VecDeque<Instant>,
    /// The ticket of `sent[0]`; the slot of ticket `t` is `sent[t - first]`.
    first: u64,
    /// Theoretical arrival time of the generic-cell-rate check that enforces `burst`.
    tat: Option<Instant>,
    paused_until: Option<Instant>,
    /// Counts re-plans (a pause, a new share), so a waiter can tell its slot may have moved.
    changes: u64,
}

/// What [`Limiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go now.
    Now,
    /// A slot is reserved at `at` for `ticket`; sleep until then. `changes` is the plan's
    /// version at the time: if it changes, the ticket's slot may have moved.
    Wait {
        at: Instant,
        ticket: u64,
        changes: u64,
    },
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
                first: 0,
                tat: None,
                paused_until: None,
                changes: 0,
            }),
            replanned: watch::channel(0).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below is complete before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process's part of `rps` when `live` replicas share it and this one is the
    /// `index`-th (0-based, in an order every replica agrees on).
    /// Requests already waiting are re-planned under the new share at once.
    pub fn set_share(&self, rps: u32, index: usize, live: usize) {
        let (quota, window) = share(rps, index, live);
        let mut state = self.state();
        if (state.quota, state.window) == (quota, window) {
            return;
        }
        state.quota = quota;
        state.window = window;
        self.replan(state, Instant::now());
    }

    /// This process's quota and window now.
    pub fn share(&self) -> (u32, Duration) {
        let state = self.state();
        (state.quota, state.window)
    }

    /// Decides the slot of a request arriving at `now` that may wait at most `budget`.
    pub fn admit(&self, now: Instant, budget: Duration) -> Admission {
        let mut state = self.state();
        state.forget_before(now);
        let slot = state.next_slot(now, self.burst);
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
        let ticket = state.take(slot);
        if wait.is_zero() {
            Admission::Now
        } else {
            Admission::Wait {
                at: slot,
                ticket,
                changes: state.changes,
            }
        }
    }

    /// The slot of `ticket` now, and the plan's version; `None` once it is long past.
    fn slot_of(&self, ticket: u64) -> (Option<Instant>, u64) {
        let state = self.state();
        let slot = ticket
            .checked_sub(state.first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| state.sent.get(i).copied());
        (slot, state.changes)
    }

    /// Moves every slot still ahead of `now` to where the current share and pause put it,
    /// keeping their order, then wakes the waiters.
    fn replan(&self, mut state: MutexGuard<'_, State>, now: Instant) {
        state.forget_before(now);
        let kept = state
            .sent
            .iter()
            .position(|&slot| slot > now)
            .unwrap_or(state.sent.len());
        let moved = state.sent.len() - kept;
        state.sent.truncate(kept);
        // The burst check starts over from the last slot kept: the window bound above
        // already holds the past to the new share.
        let interval = state.interval();
        state.tat = state.sent.back().map(|&last| last + interval);
        for _ in 0..moved {
            let slot = state.next_slot(now, self.burst);
            state.sent.push_back(slot);
            state.tat = Some(state.tat.map_or(slot, |tat| tat.max(slot)) + interval);
        }
        state.changes += 1;
        let changes = state.changes;
        drop(state);
        self.replanned.send_replace(changes);
    }

    /// The upstream said 429 with `Retry-After`: no request from this scope before then.
    /// Requests already waiting keep their order, after the pause.
    pub fn pause(&self, now: Instant, retry_after: Duration) {
        let until = now + retry_after.min(MAX_PAUSE);
        let mut state = self.state();
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        self.replan(state, now);
    }

    /// Waits for this request's turn: `Ok(waited)` once it may go, `Err` when the wait would
    /// pass `max_wait` (or at once with `over = "reject"`). A waiter whose slot a re-plan
    /// moves past `max_wait` is refused then; its slot stays taken until it passes.
    pub async fn acquire(&self) -> Result<Duration, Rejected> {
        let start = Instant::now();
        let (mut at, ticket, mut seen) = match self.admit(start, self.max_wait) {
            Admission::Now => return Ok(Duration::ZERO),
            Admission::Reject { retry_after } => return Err(Rejected { retry_after }),
            Admission::Wait {
                at,
                ticket,
                changes,
            } => (at, ticket, changes),
        };
        let mut replans = self.replanned.subscribe();
        loop {
            // A re-plan between the admission and the subscription is caught here.
            let (slot, changes) = self.slot_of(ticket);
            if changes != seen {
                seen = changes;
                match slot {
                    Some(slot) => at = slot,
                    None => return Ok(start.elapsed()),
                }
            }
            let now = Instant::now();
            if at <= now {
                return Ok(now - start);
            }
            if at - start > self.max_wait {
                return Err(Rejected {
                    retry_after: at - now,
                });
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                _ = replans.changed() => {}
            }
        }
    }
}

impl State {
    /// Drops the slots that no longer bound anything: older than a window before `now`.
    fn forget_before(&mut self, now: Instant) {
        let window = self.window + WINDOW_SLACK;
        while self.sent.front().is_some_and(|&t| t + window <= now) {
            self.sent.pop_front();
            self.first += 1;
        }
    }

    fn interval(&self) -> Duration {
        self.window / self.quota.max(1)
    }

    /// The first slot at or after `arrival` that keeps every window within the quota, after
    /// every slot handed out (first come, first served), after a pause, and within `burst`.
    fn next_slot(&self, arrival: Instant, burst: u32) -> Instant {
        let window = self.window + WINDOW_SLACK;
        let quota = self.quota as usize;
        let mut slot = arrival;
        if let Some(until) = self.paused_until {
            slot = slot.max(until);
        }
        if let Some(&last) = self.sent.back() {
            slot = slot.max(last);
        }
        if self.sent.len() >= quota
            && let Some(&oldest) = self.sent.get(self.sent.len() - quota)
        {
            slot = slot.max(oldest + window);
        }
        if let Some(tat) = self.tat {
            let tolerance = self.interval() * (burst.min(self.quota) - 1);
            if let Some(earliest) = tat.checked_sub(tolerance) {
                slot = slot.max(earliest);
            }
        }
        slot
    }

    /// Hands out `slot` (from [`State::next_slot`]); returns its ticket.
    fn take(&mut self, slot: Instant) -> u64 {
        let interval = self.interval();
        self.tat = Some(self.tat.map_or(slot, |tat| tat.max(slot)) + interval);
        self.sent.push_back(slot);
        self.first + self.sent.len() as u64 - 1
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
