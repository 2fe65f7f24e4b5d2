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
//! allocation: `benches/ratelimit.rs` measures it).
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

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Over, RateLimitConfig};

/// A hold "until further notice" ([`Limiter::hold`]) as a time: beyond any `max_wait`.
const HOLD_INDEFINITELY: Duration = Duration::from_secs(3600);
/// The window providers count in.
const WINDOW: Duration = Duration::from_secs(1);
/// Slack added to the window so that the upstream, which counts requests when they arrive,
/// never counts one too many in its own window: a slot is planned when bearerd admits a
/// request, and the request reaches the upstream a little later (a pooled connection to take
/// or open, the write), by more for some requests than for others. On the loaded 2-core VM
/// of `benches/rate_limit_replicas` that spread reached 15–25 ms, and with 10 ms of slack the
/// upstream counted 11–16 in a sliding second. The price: at most `rps / 1.05` a second on
/// average (9.5 for 10).
const WINDOW_SLACK: Duration = Duration::from_millis(50);
/// The longest pause an upstream's `Retry-After` can impose.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The `Retry-After` of a request refused while the replica holds back ([`Limiter::hold`]):
/// soon, or at another replica.
const HELD_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The limiter of one scope (a connection).
pub struct Limiter {
    burst: u32,
    over: Over,
    max_wait: Duration,
    plan: Mutex<Plan>,
    /// The plan's version ([`Plan::changes`]), for waiters to notice a re-plan.
    replanned: watch::Sender<u64>,
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
            plan: Mutex::new(Plan::new(config.rps.max(1), WINDOW)),
            replanned: watch::channel(0).0,
        }
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // Every update below is complete before anything that could panic.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process's part of `rps` when `live` replicas share it and this one is the
    /// `index`-th (0-based, in an order every replica agrees on). Requests already waiting
    /// are re-planned under the new share at once.
    pub fn set_share(&self, rps: u32, index: usize, live: usize) {
        let (quota, window) = share(rps, index, live);
        let mut plan = self.plan();
        if (plan.quota, plan.window) == (quota, window) {
            return;
        }
        plan.quota = quota;
        plan.window = window;
        self.replan(plan, Instant::now());
    }

    /// Lets no request go before `until` (`None`: until further notice; `Some(now)` or
    /// earlier: releases), whatever the share. A replica holds back while it joins (the
    /// others have not yet made room for it) and once it leaves (they are about to take
    /// its share); waiting requests are re-planned after the hold, and those it pushes past
    /// `max_wait` are refused with a short `Retry-After`.
    pub fn hold(&self, until: Option<Instant>) {
        let now = Instant::now();
        let until = until.unwrap_or(now + HOLD_INDEFINITELY);
        let mut plan = self.plan();
        plan.held_until = (until > now).then_some(until);
        self.replan(plan, now);
    }

    /// Whether requests are held back now.
    pub fn held(&self) -> bool {
        self.plan()
            .held_until
            .is_some_and(|until| until > Instant::now())
    }

    /// A limiter for one tenant of an app whose budget is per tenant (`per = "tenant"`),
    /// made from the app's (`self`, which admits nothing itself): the same settings, and this
    /// replica's share and hold as they are now. Later changes reach it through
    /// [`crate::tenants::Tenants::each_limiter`].
    pub fn follower(&self) -> Limiter {
        let plan = self.plan();
        let mut own = Plan::new(plan.quota, plan.window);
        own.held_until = plan.held_until;
        Limiter {
            burst: self.burst,
            over: self.over,
            max_wait: self.max_wait,
            plan: Mutex::new(own),
            replanned: watch::channel(0).0,
        }
    }

    /// This process's quota and window now.
    pub fn share(&self) -> (u32, Duration) {
        let plan = self.plan();
        (plan.quota, plan.window)
    }

    /// Decides the slot of a request arriving at `now` that may wait at most `budget`.
    pub fn admit(&self, now: Instant, budget: Duration) -> Admission {
        let mut plan = self.plan();
        plan.settle(now);
        let slot = plan.next_slot(now, self.burst);
        let wait = slot.saturating_duration_since(now);
        let refuse = match self.over {
            Over::Reject => !wait.is_zero(),
            Over::Wait => wait > budget,
        };
        if refuse {
            let held = plan.held_until.is_some_and(|until| until >= slot);
            let retry_after = if held {
                wait.min(HELD_RETRY_AFTER)
            } else {
                wait
            };
            return Admission::Reject {
                retry_after: retry_after.max(Duration::from_millis(1)),
            };
        }
        match plan.take(slot, now) {
            None => Admission::Now,
            Some(ticket) => Admission::Wait {
                at: slot,
                ticket,
                changes: plan.changes,
            },
        }
    }

    /// The slot of a waiting `ticket` (`None` once it has come) and the plan's version.
    fn slot_of(&self, ticket: u64) -> (Option<Instant>, u64) {
        let plan = self.plan();
        (plan.slot_of(ticket), plan.changes)
    }

    /// A waiter gave up (refused after a re-plan, or its request went away): its slot goes
    /// to the requests behind it.
    fn leave(&self, ticket: u64) {
        let mut plan = self.plan();
        if plan.remove(ticket) {
            self.replan(plan, Instant::now());
        }
    }

    /// Re-plans the waiting requests and wakes them to take their new slots.
    fn replan(&self, mut plan: MutexGuard<'_, Plan>, now: Instant) {
        plan.replan(now, self.burst);
        let changes = plan.changes;
        drop(plan);
        self.replanned.send_replace(changes);
    }

    /// The upstream said 429 with `Retry-After`: no request from this scope before then.
    /// Requests already waiting keep their order, after the pause.
    pub fn pause(&self, now: Instant, retry_after: Duration) {
        let until = now + retry_after.min(MAX_PAUSE);
        let mut plan = self.plan();
        plan.paused_until = Some(plan.paused_until.map_or(until, |u| u.max(until)));
        self.replan(plan, now);
    }

    /// Waits for this request's turn: `Ok(waited)` once it may go, `Err` when the wait would
    /// pass `max_wait` (or at once with `over = "reject"`). A waiter that a re-plan moves past
    /// `max_wait` is refused then, and one whose request goes away leaves the queue: their
    /// slots go to the requests behind them.
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
        let mut waiting = Waiting {
            limiter: self,
            ticket: Some(ticket),
        };
        let mut replans = self.replanned.subscribe();
        loop {
            // A re-plan between the admission and the subscription is caught here.
            let (slot, changes) = self.slot_of(ticket);
            if changes != seen {
                seen = changes;
                match slot {
                    Some(slot) => at = slot,
                    None => {
                        waiting.ticket = None;
                        return Ok(start.elapsed());
                    }
                }
            }
            let now = Instant::now();
            if at <= now {
                waiting.ticket = None;
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

/// A request in the queue; dropped before its turn (refused, or its future dropped because
/// the app went away), it leaves the queue.
struct Waiting<'a> {
    limiter: &'a Limiter,
    ticket: Option<u64>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.limiter.leave(ticket);
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

mod plan;
pub mod replicas;

use plan::Plan;

#[cfg(test)]
mod tests;
