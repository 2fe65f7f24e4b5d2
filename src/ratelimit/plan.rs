//! The plan of one limiter: the slots already due (the last window's worth) and the
//! requests still waiting for theirs, in order, each under a ticket. The rule for the next
//! slot lives here ([`Plan::next_slot`]), and so does re-planning the waiting requests after
//! a new share, a pause, or a waiter leaving the queue.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::WINDOW_SLACK;

pub(super) struct Plan {
    /// Requests per window for this process.
    pub quota: u32,
    /// The window the quota applies to (one second, longer when replicas outnumber `rps`).
    pub window: Duration,
    /// Slots already due, oldest first; none older than a window before now.
    due: VecDeque<Instant>,
    /// Requests waiting for their slot, in ticket (and slot) order.
    waiting: VecDeque<(u64, Instant)>,
    next_ticket: u64,
    /// Theoretical arrival time of the generic-cell-rate check that enforces `burst`.
    tat: Option<Instant>,
    pub paused_until: Option<Instant>,
    /// No slot before this: the replica has not yet taken its share ([`super::Limiter::hold`]).
    pub held_until: Option<Instant>,
    /// Counts re-plans, so a waiter can tell that its slot may have moved.
    pub changes: u64,
}

impl Plan {
    pub fn new(quota: u32, window: Duration) -> Plan {
        Plan {
            quota,
            window,
            due: VecDeque::with_capacity(quota as usize),
            waiting: VecDeque::new(),
            next_ticket: 0,
            tat: None,
            paused_until: None,
            held_until: None,
            changes: 0,
        }
    }

    /// Moves the waiting slots that have come to `now` to the due ones, and forgets the due
    /// slots that no longer bound anything (older than a window).
    pub fn settle(&mut self, now: Instant) {
        while let Some(&(_, slot)) = self.waiting.front() {
            if slot > now {
                break;
            }
            self.waiting.pop_front();
            self.due.push_back(slot);
        }
        let window = self.window + WINDOW_SLACK;
        while self.due.front().is_some_and(|&t| t + window <= now) {
            self.due.pop_front();
        }
    }

    fn interval(&self) -> Duration {
        self.window / self.quota.max(1)
    }

    /// The `k`-th latest slot handed out (1: the latest), due or waiting.
    fn latest(&self, k: usize) -> Option<Instant> {
        let waiting = self.waiting.len();
        if k <= waiting {
            return self.waiting.get(waiting - k).map(|&(_, slot)| slot);
        }
        let due = self.due.len();
        (k - waiting <= due).then(|| self.due[due - (k - waiting)])
    }

    /// The first slot at or after `arrival` that keeps every window within the quota, after
    /// every slot handed out (first come, first served), after a pause, and within `burst`.
    pub fn next_slot(&self, arrival: Instant, burst: u32) -> Instant {
        let window = self.window + WINDOW_SLACK;
        let mut slot = arrival;
        for until in [self.paused_until, self.held_until].into_iter().flatten() {
            slot = slot.max(until);
        }
        if let Some(last) = self.latest(1) {
            slot = slot.max(last);
        }
        if let Some(oldest) = self.latest(self.quota as usize) {
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

    /// Hands out `slot` (from [`Plan::next_slot`]) to a request arriving at `now`: due at
    /// once, or a ticket to wait with.
    pub fn take(&mut self, slot: Instant, now: Instant) -> Option<u64> {
        let interval = self.interval();
        self.tat = Some(self.tat.map_or(slot, |tat| tat.max(slot)) + interval);
        if slot <= now {
            self.due.push_back(slot);
            return None;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.push_back((ticket, slot));
        Some(ticket)
    }

    /// The slot of a waiting `ticket`; `None` once it has come (or the ticket left).
    pub fn slot_of(&self, ticket: u64) -> Option<Instant> {
        let i = self
            .waiting
            .binary_search_by_key(&ticket, |&(t, _)| t)
            .ok()?;
        Some(self.waiting[i].1)
    }

    /// Takes `ticket` out of the queue (its request gave up); true if it was waiting.
    pub fn remove(&mut self, ticket: u64) -> bool {
        match self.waiting.binary_search_by_key(&ticket, |&(t, _)| t) {
            Ok(i) => {
                self.waiting.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives every waiting request, in order, the slot the current share and pause allow
    /// from `now` on.
    pub fn replan(&mut self, now: Instant, burst: u32) {
        self.settle(now);
        let tickets: Vec<u64> = self.waiting.drain(..).map(|(t, _)| t).collect();
        // The burst check starts over from the last slot due: the window bound already
        // holds the past to the current share.
        let interval = self.interval();
        self.tat = self.due.back().map(|&last| last + interval);
        for ticket in tickets {
            let slot = self.next_slot(now, burst);
            self.tat = Some(self.tat.map_or(slot, |tat| tat.max(slot)) + interval);
            self.waiting.push_back((ticket, slot));
        }
        self.changes += 1;
    }
}
