//! Tokens and the per-connection token cell.
//!
//! [`Connection`] is shared by the proxy and the connection's refresher. The proxy reads the
//! current [`TokenState`] from an `ArcSwap` without locks; when the token is unusable it
//! *asks* for a generation newer than the one that failed and waits on a `watch`. The
//! refresher ([`refresher`]) is the only writer of the cell, so single flight holds by
//! construction: asking "newer than G" when the cell already holds a newer generation is
//! answered at once, and many askers of the same G share one refresh.

pub mod import;
pub mod keys;
mod mailbox;
pub mod oauth;
pub mod refresher;
pub mod schedule;
pub mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use refresher::{Command, DisconnectReport};
pub use state::{ConnState, Outcome};

use crate::metrics::ConnectionMetrics;
pub use crate::secret::SecretString;

/// What a token endpoint returned.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
    /// What the response says about the grant, without its tokens
    /// ([`crate::tenants::ids::grant_facts`]): how the install flow learns a tenant's ids.
    pub facts: Option<Box<serde_json::Value>>,
}

/// A credential ready for a request: the header it goes in (`Authorization`, or an API key's
/// header such as `x-api-key`), its value (marked sensitive) and the generation it belongs
/// to, so a 401 can say which generation failed.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: HeaderName,
    pub header: HeaderValue,
    pub generation: u64,
}

impl Token {
    /// The credential is an API key (sent in its own header), not a bearer token.
    pub fn is_key(&self) -> bool {
        self.name != AUTHORIZATION
    }

    /// The secret itself (the access token or the key), to scrub an echo of it.
    pub fn secret(&self) -> &str {
        let value = self.header.to_str().unwrap_or("");
        if self.is_key() {
            value
        } else {
            value.strip_prefix("Bearer ").unwrap_or(value)
        }
    }
}

/// The contents of a connection's cell. Replaced whole on every change.
#[derive(Debug, Clone)]
pub struct TokenState {
    /// +1 per token set swapped in.
    pub generation: u64,
    bearer: Option<HeaderValue>,
    /// `Some(header)`: `bearer` is an API key sent in that header (SPEC section 10), never
    /// refreshed; `None`: an `Authorization: Bearer` value.
    key_header: Option<HeaderName>,
    pub expires_at: Option<Instant>,
    pub expires_at_wall: Option<SystemTime>,
    pub state: ConnState,
    /// When the refresher will try again after a transient failure.
    pub retry_at: Option<Instant>,
    /// Refresh attempts finished, successful or not.
    pub attempts: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
}

impl TokenState {
    pub fn initial(state: ConnState, last_error: Option<String>) -> Self {
        Self {
            generation: 0,
            bearer: None,
            key_header: None,
            expires_at: None,
            expires_at_wall: None,
            state,
            retry_at: None,
            attempts: 0,
            refreshes: 0,
            last_refresh: None,
            last_error,
        }
    }

    /// The token, if there is one and it has not expired at `now`.
    pub fn usable(&self, now: Instant) -> Option<Token> {
        let header = self.bearer.as_ref()?;
        match self.expires_at {
            Some(at) if at <= now => None,
            _ => Some(Token {
                name: self.key_header.clone().unwrap_or(AUTHORIZATION),
                header: header.clone(),
                generation: self.generation,
            }),
        }
    }

    /// The credential in the cell is an API key.
    pub fn is_key(&self) -> bool {
        self.key_header.is_some()
    }

    pub fn has_valid_token(&self, now: Instant) -> bool {
        self.bearer.is_some() && self.expires_at.is_none_or(|at| at > now)
    }

    /// The state to report at `now` ([`ConnState::reported`]): `degraded` once the token
    /// has expired while its refresh runs or fails, whatever was last written.
    pub fn reported_state(&self, now: Instant) -> ConnState {
        ConnState::reported(self.state, self.expires_at, now)
    }

    /// Why a caller that needs a newer token should not wait, if it should not.
    fn refusal(&self, now: Instant) -> Option<TokenError> {
        if self.state.is_dead_end() {
            return Some(TokenError::NotConnected { state: self.state });
        }
        match self.retry_at {
            Some(at) if self.state == ConnState::Degraded && at > now => {
                Some(TokenError::Unavailable {
                    retry_after: at - now,
                })
            }
            _ => None,
        }
    }
}

/// Why a request cannot have a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("connection is {}", state.as_str())]
    NotConnected { state: ConnState },
    #[error("token endpoint is failing; retry in {retry_after:?}")]
    Unavailable { retry_after: Duration },
}

/// Shared between the proxy (reader) and the refresher (the only writer).
pub struct Connection {
    pub name: String,
    cell: ArcSwap<TokenState>,
    /// The lowest generation some caller needs (its failed generation + 1).
    wanted: AtomicU64,
    /// Some caller's need comes from an upstream 401 (for the refresh metric's trigger).
    unauthorized: AtomicBool,
    /// An operator asked for a refresh whatever the current token.
    forced: AtomicBool,
    wake: Notify,
    /// The store may hold a newer record (a tenant's registry says so; see
    /// [`refresher::TenantLink`]).
    stored: Notify,
    /// Woken (all waiters) at each publish. A `Notify` rather than a `watch` channel: it
    /// lives inline, and an app has one `Connection` per tenant.
    changed: Notify,
    /// Longest a request waits for a refresh before it gets 503.
    wait_limit: Duration,
    pub metrics: ConnectionMetrics,
    /// Connect, disconnect and the like, for the refresher to carry out.
    commands: mailbox::Mailbox,
    /// A tenant's own rate limit when its app's budget is per tenant (SPEC section 11);
    /// unset otherwise (the proxy's limiter applies).
    limiter: std::sync::OnceLock<Arc<crate::ratelimit::Limiter>>,
    /// When an API key was last handed to a request (Unix seconds; 0: not since start).
    /// Written on the request path (one relaxed store), read by the refresher's keep-alive.
    last_used: AtomicU64,
}

impl Connection {
    /// The connection and the receiving end of its commands, for its refresher.
    pub fn new(
        name: String,
        initial: TokenState,
        wait_limit: Duration,
        metrics: ConnectionMetrics,
    ) -> (Arc<Self>, Inbox) {
        metrics.publish(&initial);
        let connection = Arc::new(Self {
            name,
            cell: ArcSwap::from_pointee(initial),
            wanted: AtomicU64::new(0),
            unauthorized: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            wake: Notify::new(),
            stored: Notify::new(),
            changed: Notify::new(),
            wait_limit,
            metrics,
            commands: mailbox::Mailbox::default(),
            limiter: std::sync::OnceLock::new(),
            last_used: AtomicU64::new(0),
        });
        let inbox = Inbox(Arc::clone(&connection));
        (connection, inbox)
    }

    /// Hands `command` to the refresher. False if the refresher is gone (shutting down).
    pub async fn command(&self, command: Command) -> bool {
        self.commands.send(Box::new(command)).await
    }

    /// A snapshot of the cell for status reporting, its `state` as reported now
    /// ([`TokenState::reported_state`]). The refresher and the request path read the cell
    /// itself.
    pub fn snapshot(&self) -> Arc<TokenState> {
        let current = self.cell.load_full();
        let reported = current.reported_state(Instant::now());
        if reported == current.state {
            return current;
        }
        let mut shown = TokenState::clone(&current);
        shown.state = reported;
        Arc::new(shown)
    }

    /// A token for a request. Lock-free when the current token is usable; otherwise joins
    /// (or starts) the refresh and waits for it.
    pub async fn token(&self) -> Result<Token, TokenError> {
        let generation = {
            let current = self.cell.load();
            if let Some(token) = current.usable(Instant::now()) {
                if token.is_key() {
                    self.used_now();
                }
                return Ok(token);
            }
            current.generation
        };
        self.newer_than(generation, false).await
    }

    /// This grant's own rate limit, if it has one ([`Connection::limit_with`]).
    pub fn limiter(&self) -> Option<&Arc<crate::ratelimit::Limiter>> {
        self.limiter.get()
    }

    /// Gives this grant a rate limit of its own (a tenant of an app limited per tenant);
    /// the first one given stays.
    pub fn limit_with(&self, limiter: Arc<crate::ratelimit::Limiter>) {
        let _ = self.limiter.set(limiter);
    }

    /// Records that the key was used now (the keep-alive counts idle time from here).
    pub fn used_now(&self) {
        let now = crate::metrics::unix_seconds(SystemTime::now());
        self.last_used.fetch_max(now, Ordering::Relaxed);
    }

    /// When the key was last used, if it was since start or since a stored use was adopted.
    pub fn last_used(&self) -> Option<SystemTime> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    /// Takes a last use recorded elsewhere (the store: another replica, before a restart).
    pub fn used_at(&self, at: SystemTime) {
        self.last_used
            .fetch_max(crate::metrics::unix_seconds(at), Ordering::Relaxed);
    }

    /// A token newer than `failed`: at once if the cell already has one, else after the
    /// refresh this call joins or starts. `unauthorized` says the upstream rejected `failed`.
    pub async fn newer_than(&self, failed: u64, unauthorized: bool) -> Result<Token, TokenError> {
        let attempts_before = {
            let current = self.cell.load();
            if current.generation <= failed {
                if let Some(refusal) = current.refusal(Instant::now()) {
                    return Err(refusal);
                }
                self.ask(failed, unauthorized);
                self.metrics.refresh_waiters.inc();
            }
            current.attempts
        };
        let deadline = Instant::now() + self.wait_limit;
        loop {
            // Registered before the cell is read: a publish in between still wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let current = self.cell.load();
                let now = Instant::now();
                if current.generation > failed {
                    if let Some(token) = current.usable(now) {
                        return Ok(token);
                    }
                    // A stored record without an access token was adopted; the refresh that
                    // redeems it is under way, so keep waiting for that.
                    if current.state != ConnState::Refreshing {
                        return Err(TokenError::Unavailable {
                            retry_after: Duration::from_secs(1),
                        });
                    }
                }
                if let Some(refusal) = current.refusal(now) {
                    return Err(refusal);
                }
                if current.attempts > attempts_before && current.state != ConnState::Refreshing {
                    // The refresh we joined failed (a dead end or backoff is caught above).
                    return Err(TokenError::Unavailable {
                        retry_after: Duration::from_secs(1),
                    });
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(TokenError::Unavailable {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
    }

    /// Asks the refresher for a generation newer than `failed`, without waiting. Asking
    /// again for the same or an older generation changes nothing.
    pub fn ask(&self, failed: u64, unauthorized: bool) {
        if unauthorized {
            self.unauthorized.store(true, Ordering::Relaxed);
        }
        self.wanted.fetch_max(failed + 1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Tells the refresher to re-read the store (a tenant's record changed).
    pub fn stored_changed(&self) {
        self.stored.notify_one();
    }

    /// The generation in the cell now.
    pub fn generation(&self) -> u64 {
        self.cell.load().generation
    }

    /// Asks for a refresh whatever the current token (admin `POST .../refresh`) and waits
    /// until that attempt finishes. Joins a refresh already in flight.
    pub async fn refresh_now(&self) -> Arc<TokenState> {
        let (attempts, generation) = {
            let current = self.cell.load();
            (current.attempts, current.generation)
        };
        self.forced.store(true, Ordering::Release);
        self.wake.notify_one();
        let deadline = Instant::now() + self.wait_limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let current = self.cell.load_full();
            // Finished: an attempt was made, or a newer generation was adopted instead.
            let done = current.attempts > attempts || current.generation > generation;
            if done && current.state != ConnState::Refreshing {
                return current;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return current;
            }
        }
    }

    /// Refresher side: swap in a new state and wake every waiter.
    fn publish(&self, next: TokenState) {
        self.metrics.publish(&next);
        self.cell.store(Arc::new(next));
        self.changed.notify_waiters();
    }
}

/// The refresher's end of a connection's commands. Dropping it (the refresher ended)
/// makes every later [`Connection::command`] answer false.
pub struct Inbox(Arc<Connection>);

impl Inbox {
    /// The next command for the refresher.
    pub async fn recv(&self) -> Box<Command> {
        self.0.commands.recv().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.0.commands.close();
    }
}

/// Builds the `Authorization` header value for an access token, marked sensitive so HTTP/2
/// never indexes it. `None` if the token has characters a header cannot carry.
/// ([`keys::key_header`] builds an API key's.)
pub fn bearer_header(access_token: &SecretString) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", access_token.secret())).ok()?;
    value.set_sensitive(true);
    Some(value)
}
