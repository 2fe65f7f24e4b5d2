//! Notifications (SPEC section 12): when a connection reaches a state someone must act on
//! (`needs_authorization`, `disconnected`, `misconfigured`), stays `degraded` for over five
//! minutes, or recovers from any of those, bearerd POSTs a signed JSON event to
//! `[notify] url`.
//!
//! - [`Tracker`] decides, purely, which state changes are events.
//! - [`watch_connection`] samples each connection's cell once a second (a lock-free load),
//!   feeds the tracker, and puts each event in the store's outbox
//!   ([`crate::store::outbox`]): a restart loses none, and the event id is derived from the
//!   change itself, so replicas that all see the same change store one event.
//! - [`deliver`] sends what is due, signed as Standard Webhooks do, and reschedules failures
//!   for 24 hours.

pub mod deliver;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::{OutboxEntry, TokenStore};
use crate::token::{ConnState, Connection};

/// `degraded` becomes an event once it has lasted this long.
pub const DEGRADED_AFTER: Duration = Duration::from_secs(300);
/// How often each connection's state is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What an event says happened (its `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    NeedsAuthorization,
    Disconnected,
    Misconfigured,
    Degraded,
    /// `connected` again after one of the others.
    Recovered,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeedsAuthorization => "needs_authorization",
            Self::Disconnected => "disconnected",
            Self::Misconfigured => "misconfigured",
            Self::Degraded => "degraded",
            Self::Recovered => "recovered",
        }
    }
}

/// Which state changes are events: a pure function of the states seen and the time.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// The problem last announced and not yet recovered from.
    open: Option<EventKind>,
    degraded_since: Option<Instant>,
}

impl Tracker {
    /// Starts from the state the connection had at start. A problem that was already there is
    /// taken as announced (it was, before the restart, or the operator has seen it at start):
    /// no event, but its recovery is one.
    pub fn new(initial: ConnState, now: Instant) -> Self {
        let mut tracker = Self {
            open: None,
            degraded_since: None,
        };
        let _ = tracker.observe(initial, now);
        tracker
    }

    /// The event, if any, that seeing `state` at `now` makes.
    pub fn observe(&mut self, state: ConnState, now: Instant) -> Option<EventKind> {
        let problem = match state {
            ConnState::NeedsAuthorization => Some(EventKind::NeedsAuthorization),
            ConnState::Disconnected => Some(EventKind::Disconnected),
            ConnState::Misconfigured => Some(EventKind::Misconfigured),
            ConnState::Degraded => {
                let since = *self.degraded_since.get_or_insert(now);
                (now.duration_since(since) >= DEGRADED_AFTER && self.open.is_none())
                    .then_some(EventKind::Degraded)
            }
            ConnState::Connected => {
                self.degraded_since = None;
                return self.open.take().map(|_| EventKind::Recovered);
            }
            ConnState::Refreshing | ConnState::Authorizing => None,
        };
        match problem {
            Some(kind) if self.open != Some(kind) => {
                self.open = Some(kind);
                Some(kind)
            }
            _ => None,
        }
    }
}

/// What the watcher needs to build events.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn TokenStore>,
    /// The admin listener's public URL, for `reconnect_url`.
    pub public_url: String,
    /// Wakes the delivery task when an event is stored.
    pub stored: Arc<tokio::sync::Notify>,
}

/// Samples `connection`'s state until `shutdown`, storing an outbox entry for each event.
pub async fn watch_connection(
    connection: Arc<Connection>,
    context: Context,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watched = Watched::new(&connection);
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::serve::stopped(&mut shutdown) => return,
        }
        watched.sample(&connection, &context).await;
    }
}

/// Samples every tenant of an app (SPEC section 9) until `shutdown`: one task for all of
/// them, however many there are; a tenant is watched from the first sample that sees it.
pub async fn watch_app(
    tenants: Arc<crate::tenants::Tenants>,
    context: Context,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watched: std::collections::HashMap<String, Watched> = Default::default();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::serve::stopped(&mut shutdown) => return,
        }
        for (id, connection, _) in tenants.list() {
            match watched.get_mut(&id) {
                Some(tenant) => tenant.sample(&connection, &context).await,
                None => {
                    watched.insert(id, Watched::new(&connection));
                }
            }
        }
    }
}

/// One watched cell: its tracker and the state last seen.
struct Watched {
    tracker: Tracker,
    previous: ConnState,
}

impl Watched {
    fn new(connection: &Connection) -> Self {
        let first = connection.snapshot();
        Self {
            tracker: Tracker::new(first.state, Instant::now()),
            previous: first.state,
        }
    }

    /// Looks at the cell now; stores the event it makes, if any.
    async fn sample(&mut self, connection: &Connection, context: &Context) {
        let snapshot = connection.snapshot();
        let state = snapshot.state;
        if let Some(kind) = self.tracker.observe(state, Instant::now()) {
            let entry = entry(
                &connection.name,
                kind,
                state,
                self.previous,
                snapshot.generation,
                snapshot.last_error.as_deref(),
                &context.public_url,
                SystemTime::now(),
            );
            tracing::info!(
                connection = %connection.name,
                event = kind.as_str(),
                id = %entry.id,
                "notification queued"
            );
            match context.store.outbox_put(&entry).await {
                Ok(()) => context.stored.notify_one(),
                Err(error) => tracing::error!(
                    connection = %connection.name,
                    event = kind.as_str(),
                    %error,
                    "cannot store a notification; it will not be sent"
                ),
            }
        }
        self.previous = state;
    }
}

/// The outbox entry for one event. The id is the same on every replica that saw the same
/// change (same connection, kind and token generation).
#[allow(clippy::too_many_arguments)]
pub fn entry(
    connection: &str,
    kind: EventKind,
    state: ConnState,
    previous: ConnState,
    generation: u64,
    reason: Option<&str>,
    public_url: &str,
    at: SystemTime,
) -> OutboxEntry {
    let digest = Sha256::digest(format!("{connection}\n\n{}\n{generation}", kind.as_str()));
    let id = format!(
        "evt_{}",
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // A tenant's cell is named `NAME/TENANT` (SPEC section 9).
    let (app, tenant) = match connection.split_once('/') {
        Some((app, tenant)) => (app, Some(tenant)),
        None => (connection, None),
    };
    let reconnect_url = matches!(
        kind,
        EventKind::NeedsAuthorization | EventKind::Disconnected
    )
    .then(|| match tenant {
        Some(tenant) => format!("{public_url}/connections/{app}/tenants/{tenant}/connect"),
        None => format!("{public_url}/connections/{connection}/connect"),
    });
    let body = json!({
        "type": kind.as_str(),
        "connection": app,
        "tenant": tenant,
        "state": state.as_str(),
        "previous_state": previous.as_str(),
        "reason": reason,
        "at": humantime::format_rfc3339_seconds(at).to_string(),
        "reconnect_url": reconnect_url,
    })
    .to_string();
    let now = unix_ms(at);
    OutboxEntry {
        id,
        body,
        created_at: now,
        attempts: 0,
        next_at: now,
        lease_until: None,
        settled_at: None,
    }
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
