//! The per-connection refresher: the only writer of a connection's token cell.
//!
//! One task per connection. It sleeps until the scheduled refresh (`expires_at - skew`),
//! a retry after backoff, a wake-up from a caller that needs a newer generation, or the
//! store poll; then acts and publishes the result. Callers never talk to the token endpoint,
//! so there is at most one refresh in flight per connection in a process.
//!
//! With a store (refresh-token grants), a refresh is: take the store lock -> re-read the
//! record -> adopt a newer generation if another process wrote one, else redeem -> write the
//! new record durably (retrying until it is written) -> swap it in -> release the lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use super::oauth::TokenEndpoint;
use super::schedule::Backoff;
use super::state::ConnState;
use super::{Connection, TokenSet, TokenState};
use crate::config::Revocation;
use crate::metrics::Trigger;
use crate::secret::SecretString;
use crate::serve::sleep_until;
use crate::store::TokenStore;

/// What the refresher redeems.
pub enum Grant {
    /// `client_credentials`: a fresh request each time, nothing stored.
    ClientCredentials,
    /// A refresh token (rotated as the provider answers).
    RefreshToken(SecretString),
    /// Nothing to redeem: the connection must be (re)authorized first.
    None,
    /// An API key (SPEC section 10): never redeemed, never refreshed; a rejection means
    /// it was revoked.
    ApiKey,
}

/// What the admin listener asks of a connection's refresher.
pub enum Command {
    /// A connect flow started; show `authorizing` until `until` if there is no token.
    /// `done` is answered once the state is published.
    Authorizing {
        until: Instant,
        done: oneshot::Sender<()>,
    },
    /// The connect flow ended without a code (denied, bad state): undo `Authorizing`.
    /// `done` is answered once the state is published, so the answer to the browser never
    /// runs ahead of the state it describes.
    AuthorizingEnded { done: oneshot::Sender<()> },
    /// Exchange an authorization code (connect callback); replies with the new generation.
    Exchange {
        code: SecretString,
        verifier: SecretString,
        redirect_uri: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A tenant's new grant from the install flow (its tokens already redeemed), serving
    /// `covers`; replies with the new generation.
    Install {
        set: Box<TokenSet>,
        covers: Vec<String>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A group grant stops serving one tenant id; replies false if that was its last.
    Uncover {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    /// Delete the tokens (telling the provider first if `notify_provider`).
    Disconnect {
        notify_provider: bool,
        reason: String,
        reply: Option<oneshot::Sender<DisconnectReport>>,
    },
    /// Exchange the stored refresh token for an API key and hold the key from then on;
    /// replies with the key's generation.
    Migrate {
        reply: oneshot::Sender<Result<u64, MigrateError>>,
    },
}

/// How a disconnect went. Local deletion happens even when the provider could not be told.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DisconnectReport {
    pub provider_notified: bool,
    pub provider_error: Option<String>,
    pub store_error: Option<String>,
}

pub struct Refresher {
    connection: Arc<Connection>,
    commands: super::Inbox,
    /// How to tell the provider about a disconnect (an app's tenants share the app's).
    revocation: Arc<Revocation>,
    /// While a connect flow is under way: when to give up on it, and the state to go back to.
    authorizing: Option<(Instant, ConnState)>,
    /// `None` when the credentials could not be read: the connection stays misconfigured.
    endpoint: Option<Arc<TokenEndpoint>>,
    grant: Grant,
    /// Where refresh-token grants persist; `None` for client_credentials.
    store: Option<Arc<dyn TokenStore>>,
    skew: Option<Duration>,
    /// Longest wait for the store lock.
    lock_wait: Duration,
    backoff: Backoff,
    next_refresh: Option<Instant>,
    /// The trigger of the attempt that failed, carried to its retry.
    retry_trigger: Option<Trigger>,
    /// A token request for the current grant got no answer since its last success: a
    /// rejection now may mean the provider rotated the grant while its answer was lost.
    answer_lost: bool,
    /// API keys: how they are sent and kept alive, and the keep-alive's bookkeeping.
    keys: KeyRuntime,
    /// A tenant's record: the ids its grant serves (empty: its own id).
    covers: Vec<String>,
    /// Set for a tenant of an app.
    tenant: Option<Arc<TenantLink>>,
    shutdown: watch::Receiver<bool>,
}

/// What an app shares with each of its tenants' refreshers (SPEC section 9).
pub struct TenantLink {
    /// Token requests in flight at once for the app (`token_concurrency`).
    pub permits: tokio::sync::Semaphore,
    /// Told the tenant record's name and the ids its grant serves whenever they change.
    pub on_covers: CoversHook,
}

/// See [`TenantLink::on_covers`].
pub type CoversHook = Box<dyn Fn(&str, &[String]) + Send + Sync>;

/// Persisted `state` values that mean "do not redeem until the grant changes".
const DEAD_STATES: [ConnState; 2] = [ConnState::NeedsAuthorization, ConnState::Disconnected];

impl Refresher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connection: Arc<Connection>,
        commands: super::Inbox,
        revocation: Arc<Revocation>,
        endpoint: Option<Arc<TokenEndpoint>>,
        grant: Grant,
        store: Option<Arc<dyn TokenStore>>,
        skew: Option<Duration>,
        lock_wait: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            connection,
            commands,
            revocation,
            authorizing: None,
            endpoint,
            grant,
            store,
            skew,
            lock_wait,
            backoff: Backoff::default(),
            next_refresh: None,
            retry_trigger: None,
            answer_lost: false,
            keys: KeyRuntime::default(),
            covers: Vec::new(),
            tenant: None,
            shutdown,
        }
    }

    /// Holds API keys as `settings` say (a connection that cannot hold keys has none). An
    /// app's tenants share one `Arc` of their app's settings.
    pub fn with_keys(mut self, settings: impl Into<Arc<KeySettings>>) -> Self {
        self.keys = KeyRuntime::new(settings.into());
        self
    }

    /// Makes this the refresher of a tenant: the app's registry tells it when the store
    /// changed (it neither polls nor listens itself), and token requests take one of the
    /// app's permits.
    pub fn for_tenant(mut self, link: Arc<TenantLink>, covers: Vec<String>) -> Self {
        self.tenant = Some(link);
        self.covers = covers;
        self
    }

    /// Records the ids the grant serves and tells the app's registry if they changed.
    fn set_covers(&mut self, covers: Vec<String>) {
        if covers == self.covers {
            return;
        }
        self.covers = covers;
        if let Some(link) = &self.tenant {
            (link.on_covers)(&self.connection.name, &self.covers);
        }
    }

    /// Runs until shutdown.
    ///
    /// The refresher lives on the heap and the task's future holds a pointer to it: a
    /// future that held it by value would carry it several times over (once per state that
    /// may own it), and an app has one such task per tenant.
    pub fn run(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let connection = Arc::clone(&self.connection);
        let this = Box::new(self);
        async move {
            tokio::select! {
                () = this.run_loop() => {}
                () = report_expiry(connection) => {}
            }
        }
    }

    async fn run_loop(mut self: Box<Self>) {
        // The work of each branch is boxed: it is allocated only while it runs, so an
        // idle refresher (one per tenant, thousands of them) stays small.
        Box::pin(self.startup()).await;
        // A tenant's registry watches the store for all of its tenants.
        let own_watch = self.tenant.is_none();
        let poll_every = self
            .store
            .as_ref()
            .filter(|_| own_watch)
            .map(|s| s.poll_interval());
        let mut poll = match poll_every {
            Some(every) => {
                let mut poll = tokio::time::interval(every);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                poll.tick().await;
                Some(poll)
            }
            None => None,
        };
        let mut changes = self
            .store
            .as_ref()
            .filter(|_| own_watch)
            .and_then(|s| s.changes());
        let mut shutdown = self.shutdown.clone();
        loop {
            let wake_at = self.wake_at();
            tokio::select! {
                _ = crate::serve::stopped(&mut shutdown) => return,
                _ = sleep_until(wake_at) => {
                    if self.authorizing.is_some() {
                        self.end_authorizing();
                        continue;
                    }
                    if self.holds_key() {
                        Box::pin(self.on_key_timer()).await;
                        continue;
                    }
                    let trigger = self.retry_trigger.take().unwrap_or(Trigger::Scheduled);
                    Box::pin(self.refresh(trigger)).await;
                }
                command = self.commands.recv() => Box::pin(self.on_command(*command)).await,
                _ = self.connection.wake.notified() => Box::pin(self.on_wake()).await,
                _ = self.connection.stored.notified() => {
                    let loaded = Box::pin(self.adopt_if_newer()).await;
                    self.settle_if_unconnected(loaded);
                }
                _ = next_tick(&mut poll) => {
                    let loaded = Box::pin(self.adopt_if_newer()).await;
                    self.settle_if_unconnected(loaded);
                }
                changed = next_change(&mut changes) => {
                    if changed.is_none_or(|name| name == self.connection.name) {
                        Box::pin(self.adopt_if_newer()).await;
                    }
                }
            }
        }
    }

    /// Client credentials: fetch now. Refresh tokens: load the stored record, use its access
    /// token while valid, refresh now if it has none.
    async fn startup(&mut self) {
        if self.store.is_none() {
            if self.can_redeem() {
                self.refresh(Trigger::Startup).await;
            }
            return;
        }
        let loaded = self.adopt_if_newer().await;
        self.settle_if_unconnected(loaded);
    }

    /// Before any record was adopted: a store that holds none means "never connected"; a
    /// store that could not be read means "try again" (503 with `Retry-After` meanwhile).
    fn settle_if_unconnected(&mut self, loaded: bool) {
        let current = self.connection.cell.load();
        if current.generation != 0
            || !matches!(current.state, ConnState::Refreshing | ConnState::Degraded)
        {
            return;
        }
        if loaded {
            self.publish_with(|s| {
                s.state = ConnState::NeedsAuthorization;
                s.retry_at = None;
                s.last_error = Some("not connected yet: press Connect on the status page".into());
            });
        } else {
            let retry = self
                .store
                .as_ref()
                .map_or(Duration::from_secs(2), |s| s.poll_interval());
            self.publish_with(|s| {
                s.state = ConnState::Degraded;
                s.retry_at = Some(Instant::now() + retry);
            });
        }
    }

    fn can_redeem(&self) -> bool {
        self.endpoint.is_some() && !matches!(self.grant, Grant::None | Grant::ApiKey)
    }

    /// The next time the refresher must act by itself.
    fn wake_at(&self) -> Option<Instant> {
        if let Some((until, _)) = self.authorizing {
            return Some(until);
        }
        if self.holds_key() {
            return self.key_wake_at();
        }
        let current = self.connection.cell.load();
        if current.state.is_dead_end() || !self.can_redeem() {
            return None;
        }
        current.retry_at.or(self.next_refresh)
    }

    async fn on_wake(&mut self) {
        let connection = Arc::clone(&self.connection);
        if connection.forced.swap(false, Ordering::AcqRel) {
            // An operator's refresh is tried even from a dead end or during backoff.
            if self.can_redeem() {
                self.refresh(Trigger::Manual).await;
            } else {
                // Nothing to redeem: finish the attempt so the caller gets an answer.
                self.publish_with(|s| s.attempts += 1);
            }
            return;
        }
        let current = connection.cell.load_full();
        let wanted = connection.wanted.load(Ordering::Acquire);
        if self.holds_key() {
            // A key is never refreshed: a caller needing a newer one means the provider
            // refused it.
            connection.unauthorized.store(false, Ordering::Release);
            if wanted > current.generation && !current.state.is_dead_end() {
                self.key_rejected().await;
            }
            return;
        }
        if wanted > current.generation && !current.state.is_dead_end() && !self.can_redeem() {
            // A token without a refresh token (e.g. apaleo without offline_access) expired.
            self.publish_with(|s| {
                s.state = ConnState::NeedsAuthorization;
                s.bearer = None;
                s.last_error = Some(
                    "the token expired and the provider gave no refresh token; reconnect".into(),
                );
            });
            return;
        }
        let in_backoff = current.retry_at.is_some_and(|at| at > Instant::now());
        if wanted > current.generation
            && !current.state.is_dead_end()
            && !in_backoff
            && self.can_redeem()
        {
            let trigger = if connection.unauthorized.swap(false, Ordering::AcqRel) {
                Trigger::Unauthorized
            } else {
                Trigger::Scheduled
            };
            self.refresh(trigger).await;
        }
    }

    fn publish_with(&self, change: impl FnOnce(&mut TokenState)) {
        let mut next = TokenState::clone(&self.connection.cell.load());
        change(&mut next);
        self.connection.publish(next);
    }
}

mod attempt;
mod commands;
mod keys;
mod persist;

pub use super::keys::KeySettings;
use keys::KeyRuntime;
pub use keys::MigrateError;

/// The next changed connection name; `None` when notifications were missed (lagged), so
/// the caller re-reads. Pends forever without a subscription.
async fn next_change(changes: &mut Option<broadcast::Receiver<String>>) -> Option<String> {
    let Some(receiver) = changes else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(name) => Some(name),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *changes = None;
            None
        }
    }
}

/// Keeps the state gauge true to the clock. A token that expires while its refresh is still
/// running (or failing) is reported `degraded` from that moment ([`TokenState::reported_state`]);
/// nothing is written to the cell then, so the gauge is re-published at each expiry. Runs
/// beside the refresher's loop and ends with it.
async fn report_expiry(connection: Arc<Connection>) {
    loop {
        let changed = connection.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let expiry = connection
            .cell
            .load()
            .expires_at
            .filter(|at| *at > Instant::now());
        tokio::select! {
            () = sleep_until(expiry) => connection.metrics.publish(&connection.cell.load()),
            () = changed => {}
        }
    }
}

/// The next tick of `poll`; pends forever without one.
async fn next_tick(poll: &mut Option<tokio::time::Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    /// An app holds one refresher and one connection per tenant, idle or not (issue 11's
    /// budget: 4 KiB per idle tenant, `cargo bench --bench tenants`). What only some
    /// connections need (API key settings) is boxed and what an app's tenants share
    /// (metric handles, revocation) is behind an `Arc`; this keeps it that way.
    #[test]
    fn per_tenant_structures_stay_small() {
        let sizes = [
            ("Refresher", size_of::<super::Refresher>(), 320),
            ("Connection", size_of::<super::Connection>(), 384),
            (
                "ConnectionMetrics",
                size_of::<crate::metrics::ConnectionMetrics>(),
                32,
            ),
        ];
        for (name, size, budget) in sizes {
            assert!(size <= budget, "{name} is {size} bytes, over its {budget}");
        }
    }
}
