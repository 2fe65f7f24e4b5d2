//! Keeps each limiter's share of its budget current: every heartbeat, ask the store how many
//! replicas are live and where this one stands, and split every connection's `rps` by it.
//! A store without replicas (the file store) leaves every limiter its whole budget.

use std::sync::Arc;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Limiter, WINDOW, share};
use crate::serve::sleep_until;
use crate::store::TokenStore;
use crate::store::postgres::replicas::HEARTBEAT;
use crate::tenants::Tenants;

/// One connection's limiter and the budget it splits; for an app whose budget is per
/// tenant, its tenants' limiters too.
pub struct Budget {
    pub rps: u32,
    pub limiter: Arc<Limiter>,
    pub tenants: Option<Arc<Tenants>>,
}

impl Budget {
    /// Applies `change` to every limiter of this budget.
    pub fn each(&self, change: impl Fn(&Limiter)) {
        match &self.tenants {
            // The app's limiter and each tenant's, under the lock creating a tenant takes.
            Some(tenants) if tenants.limits_per_tenant() => tenants.each_limiter(change),
            _ => change(&self.limiter),
        }
    }
}

/// A replica id that is unique across restarts: the host (the pod's name in Kubernetes),
/// the process id, and a random part.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bearerd".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        crate::connect::random_token(6)
    )
}

/// How long a joining replica holds back after its first heartbeat: until every other
/// replica has seen it (their next heartbeat, within [`HEARTBEAT`]) and the requests they
/// sent under their larger shares have left the provider's window.
pub const JOIN_SETTLE: Duration =
    Duration::from_millis((HEARTBEAT.as_millis() + WINDOW.as_millis() + SETTLE.as_millis()) as u64);
/// How long a larger share waits after the heartbeat that first showed it. A replica that
/// left sent nothing in the window before: one that stops holds its requests for
/// [`LEAVE_SETTLE`] before it withdraws, and one that was killed drops out of the count only
/// [`crate::store::postgres::replicas::LIVE_WITHIN`] after its last heartbeat. So only the
/// heartbeats' own timing needs slack.
pub const GROW_SETTLE: Duration = SETTLE;
/// How long a stopping replica holds its requests before it withdraws: its last requests
/// leave the provider's window before the others take its share.
pub const LEAVE_SETTLE: Duration =
    Duration::from_millis((WINDOW.as_millis() + SETTLE.as_millis()) as u64);
/// Slack for a heartbeat's round trip and the provider's clock.
const SETTLE: Duration = Duration::from_millis(250);

/// A replica's place among the live ones: `(index, live)`.
pub type View = (usize, usize);

/// When a replica may use the share a heartbeat's view gives it, so that the shares in use
/// never add up to more than the budget, also while replicas come and go: a smaller share
/// applies at once; a larger one (a replica left) after [`GROW_SETTLE`]; and a joining
/// replica sends nothing until [`JOIN_SETTLE`] after its first view. Pure: the heartbeat
/// loop feeds it views and times and carries out what it says.
#[derive(Debug, Default)]
pub struct Pacing {
    /// The view whose share is in use.
    applied: Option<View>,
    /// A larger share waiting for its time.
    pending: Option<(View, Instant)>,
}

/// What to do with a heartbeat's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing changes.
    Keep,
    /// Use this view's share now (and, when joining, hold until the time).
    Apply(View, Option<Instant>),
    /// Use this view's share at the time (the loop calls [`Pacing::due`] then).
    Later(Instant),
}

impl Pacing {
    /// A heartbeat at `now` answered `view`; `rps` is a budget the share is taken of (the
    /// order of shares is the same for every budget).
    pub fn on_view(&mut self, view: View, rps: u32, now: Instant) -> Step {
        let Some(applied) = self.applied else {
            // Joining: take the share now (nothing goes out before the hold ends), and hold
            // until the others have made room.
            self.applied = Some(view);
            return Step::Apply(view, Some(now + JOIN_SETTLE));
        };
        if view == applied {
            self.pending = None;
            return Step::Keep;
        }
        if rate(rps, view) <= rate(rps, applied) {
            self.applied = Some(view);
            self.pending = None;
            return Step::Apply(view, None);
        }
        match self.pending {
            Some((waiting, at)) if waiting == view => Step::Later(at),
            _ => {
                let at = now + GROW_SETTLE;
                self.pending = Some((view, at));
                Step::Later(at)
            }
        }
    }

    /// The time a larger share waits for, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.map(|(_, at)| at)
    }

    /// At `now`: the larger share whose time has come, if any.
    pub fn due(&mut self, now: Instant) -> Option<View> {
        let (view, at) = self.pending?;
        if at > now {
            return None;
        }
        self.pending = None;
        self.applied = Some(view);
        Some(view)
    }
}

/// Requests per second a view's share allows, in millionths (shares are compared, never
/// summed).
fn rate(rps: u32, (index, live): View) -> u128 {
    let (quota, window) = share(rps, index, live);
    u128::from(quota) * 1_000_000_000_000 / window.as_nanos().max(1)
}

/// Runs until `shutdown`, then withdraws this replica so the others take its share. The
/// limiters start held ([`Limiter::hold`], by the app) until the first heartbeat says
/// whether the store has replicas at all.
pub async fn keep_shares(
    store: Arc<dyn TokenStore>,
    replica: String,
    budgets: Vec<Budget>,
    mut shutdown: watch::Receiver<bool>,
) {
    if budgets.is_empty() {
        return;
    }
    let mut pacing = Pacing::default();
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = pacing.next_due();
        tokio::select! {
            _ = ticks.tick() => {}
            () = sleep_until(due) => {
                if let Some(view) = pacing.due(Instant::now()) {
                    apply(&replica, &budgets, view, None);
                }
                continue;
            }
            _ = crate::serve::stopped(&mut shutdown) => break,
        }
        match store.heartbeat(&replica).await {
            Ok(None) => {
                // No replicas (the file store): every limiter keeps its whole budget.
                for budget in &budgets {
                    budget.each(|l| l.hold(Some(Instant::now())));
                }
                return;
            }
            Ok(Some(view)) => {
                let rps = budgets.first().map_or(1, |b| b.rps);
                match pacing.on_view(view, rps, Instant::now()) {
                    Step::Keep | Step::Later(_) => {}
                    Step::Apply(view, hold) => apply(&replica, &budgets, view, hold),
                }
            }
            // Keep the last share: a store outage must not hand every replica the whole budget.
            Err(error) => {
                tracing::warn!(%error, "replica heartbeat failed; keeping the current rate-limit shares")
            }
        }
    }
    // Nothing more goes out from here (requests still waiting are refused with a short
    // Retry-After), and this replica's last requests leave the window before the others learn
    // that it left and take its share.
    for budget in &budgets {
        budget.each(|l| l.hold(None));
    }
    tokio::time::sleep(LEAVE_SETTLE).await;
    if let Err(error) = store.leave(&replica).await {
        tracing::warn!(%error, "could not withdraw this replica from the store");
    }
}

/// Sets every limiter's share for `view`, held until `hold` when joining.
fn apply(replica: &str, budgets: &[Budget], (index, live): View, hold: Option<Instant>) {
    tracing::info!(replica = %replica, index, live, "rate limits split across replicas");
    for budget in budgets {
        budget.each(|l| {
            l.set_share(budget.rps, index, live);
            if let Some(until) = hold {
                l.hold(Some(until));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_replica_holds_until_the_others_made_room() {
        let mut pacing = Pacing::default();
        let t0 = Instant::now();
        assert_eq!(
            pacing.on_view((0, 3), 10, t0),
            Step::Apply((0, 3), Some(t0 + JOIN_SETTLE))
        );
        assert!(JOIN_SETTLE > HEARTBEAT + WINDOW);
        // The same view again changes nothing.
        assert_eq!(pacing.on_view((0, 3), 10, t0 + HEARTBEAT), Step::Keep);
    }

    #[test]
    fn a_smaller_share_applies_at_once_a_larger_one_a_little_later() {
        let mut pacing = Pacing::default();
        let t0 = Instant::now();
        pacing.on_view((0, 2), 10, t0);
        // A third replica joined: 5 -> 4, at once.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(pacing.on_view((0, 3), 10, t1), Step::Apply((0, 3), None));
        // It left: 4 -> 5 only after GROW_SETTLE from the first sight, not restarted by a
        // later heartbeat showing the same.
        let t2 = t1 + Duration::from_secs(5);
        let soon = Duration::from_millis(100);
        assert_eq!(
            pacing.on_view((0, 2), 10, t2),
            Step::Later(t2 + GROW_SETTLE)
        );
        assert_eq!(
            pacing.on_view((0, 2), 10, t2 + soon),
            Step::Later(t2 + GROW_SETTLE)
        );
        assert_eq!(
            pacing.due(t2 + GROW_SETTLE - Duration::from_millis(1)),
            None
        );
        assert_eq!(pacing.next_due(), Some(t2 + GROW_SETTLE));
        assert_eq!(pacing.due(t2 + GROW_SETTLE), Some((0, 2)));
        assert_eq!(pacing.next_due(), None);
        assert_eq!(pacing.on_view((0, 2), 10, t2 + GROW_SETTLE), Step::Keep);
    }

    #[test]
    fn a_larger_share_still_waiting_gives_way_to_a_smaller_one() {
        let mut pacing = Pacing::default();
        let t0 = Instant::now();
        pacing.on_view((0, 3), 10, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert!(matches!(pacing.on_view((0, 2), 10, t1), Step::Later(_)));
        // Another joined before the larger share was taken: the share stays as it is.
        assert_eq!(pacing.on_view((0, 3), 10, t1 + HEARTBEAT), Step::Keep);
        assert_eq!(pacing.next_due(), None);
        assert_eq!(pacing.due(t1 + Duration::from_secs(60)), None);
    }

    /// The shares in use never add up to more than the budget: three replicas start a few
    /// hundred ms apart with heartbeats at their own phases, one joins later and one is
    /// killed; at every 10 ms step, the sum of the rates in use (a held replica uses none)
    /// stays within `rps`, counting a replica's old rate for a window after it shrank (its
    /// requests are still in the provider's window).
    #[test]
    fn shares_in_use_never_exceed_the_budget_while_replicas_come_and_go() {
        let rps = 10;
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // (id, starts, stops, killed): ids order the replicas as the store does. A killed
        // replica stays in the count for LIVE_WITHIN (3 s); one that stops holds, then
        // withdraws after LEAVE_SETTLE.
        let replicas: [(u8, u64, u64, bool); 5] = [
            (1, 0, 60_000, false),
            (3, 130, 30_000, true),
            (2, 270, 60_000, false),
            (0, 12_340, 60_000, false),
            (4, 35_500, 47_730, false),
        ];
        let leave = LEAVE_SETTLE.as_millis() as u64;
        struct Sim {
            pacing: Pacing,
            /// (rate, from, until) of the shares it used, and its hold.
            used: Vec<(u128, Instant, Instant)>,
            current: Option<(u128, Instant)>,
            held_until: Option<Instant>,
        }
        let mut sims: Vec<Sim> = replicas
            .iter()
            .map(|_| Sim {
                pacing: Pacing::default(),
                used: Vec::new(),
                current: None,
                held_until: None,
            })
            .collect();
        let live_at = |t: u64| -> Vec<u8> {
            let mut ids: Vec<u8> = replicas
                .iter()
                // A start shows at once.
                .filter(|(_, start, stop, killed)| {
                    *start <= t && t < stop + if *killed { 3_000 } else { leave }
                })
                .map(|(id, ..)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let end = 60_000;
        for step in (0..end).step_by(10) {
            let now = ms(step);
            for (i, (id, start, stop, _)) in replicas.iter().enumerate() {
                let sim = &mut sims[i];
                if step < *start || step >= *stop {
                    if step == *stop
                        && let Some((rate, from)) = sim.current.take()
                    {
                        sim.used.push((rate, from, now));
                    }
                    continue;
                }
                let set = |sim: &mut Sim, view: View| {
                    let rate = rate(rps, view);
                    if let Some((old, from)) = sim.current.take() {
                        sim.used.push((old, from, now));
                    }
                    sim.current = Some((rate, now));
                };
                if let Some(view) = sim.pacing.due(now) {
                    set(sim, view);
                }
                // Heartbeats every second from the start, at the replica's own phase.
                if (step - start) % 1_000 == 0 {
                    let live = live_at(step);
                    let index = live.iter().position(|x| x == id).unwrap();
                    match sim.pacing.on_view((index, live.len()), rps, now) {
                        Step::Apply(view, hold) => {
                            set(sim, view);
                            if hold.is_some() {
                                sim.held_until = hold;
                            }
                        }
                        Step::Keep | Step::Later(_) => {}
                    }
                }
            }
        }
        for sim in &mut sims {
            if let Some((rate, from)) = sim.current.take() {
                sim.used.push((rate, from, ms(end)));
            }
        }
        let budget = rate(rps, (0, 1));
        for step in (0..end).step_by(10) {
            let now = ms(step);
            let total: u128 = sims
                .iter()
                .map(|sim| {
                    if sim.held_until.is_some_and(|h| now < h) {
                        return 0;
                    }
                    // A rate counts from when it was set until a window after it ended.
                    sim.used
                        .iter()
                        .filter(|(_, from, until)| *from <= now && now < *until + WINDOW)
                        .map(|(rate, ..)| *rate)
                        .max()
                        .unwrap_or(0)
                })
                .sum();
            assert!(
                total <= budget,
                "at {step} ms the shares in use add up to {total} > {budget}"
            );
        }
    }
}
