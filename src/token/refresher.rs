//! The per-connection refresher: the only writer of a connection's token cell.
//!
//! One task per connection. It sleeps until the scheduled refresh (`expires_at - skew`),
//! a retry after backoff, or a wake-up from a caller that needs a newer generation; then
//! runs one token request and publishes the result. Callers never talk to the token
//! endpoint, so there is at most one refresh in flight per connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::oauth::{GrantRequest, TokenEndpoint, TokenFailure};
use super::schedule::{Backoff, refresh_in};
use super::state::{ConnState, Outcome};
use super::{Connection, SecretString, TokenSet, TokenState, bearer_header};
use crate::metrics::Trigger;

/// What the refresher redeems.
pub enum Grant {
    /// `client_credentials`: a fresh request each time.
    ClientCredentials,
    /// A refresh token (rotated as the provider answers).
    RefreshToken(SecretString),
    /// Nothing to redeem: the connection must be (re)authorized first.
    None,
}

pub struct Refresher {
    connection: Arc<Connection>,
    /// `None` when the credentials could not be read: the connection stays misconfigured.
    endpoint: Option<TokenEndpoint>,
    grant: Grant,
    skew: Option<Duration>,
    backoff: Backoff,
    next_refresh: Option<Instant>,
    /// The trigger of the attempt that failed, carried to its retry.
    retry_trigger: Option<Trigger>,
}

impl Refresher {
    pub fn new(
        connection: Arc<Connection>,
        endpoint: Option<TokenEndpoint>,
        grant: Grant,
        skew: Option<Duration>,
    ) -> Self {
        Self {
            connection,
            endpoint,
            grant,
            skew,
            backoff: Backoff::default(),
            next_refresh: None,
            retry_trigger: None,
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if self.can_redeem() {
            self.refresh(Trigger::Startup).await;
        }
        loop {
            let wake_at = self.wake_at();
            tokio::select! {
                _ = crate::serve::stopped(&mut shutdown) => return,
                _ = sleep_until(wake_at) => {
                    let trigger = self.retry_trigger.take().unwrap_or(Trigger::Scheduled);
                    self.refresh(trigger).await;
                }
                _ = self.connection.wake.notified() => self.on_wake().await,
            }
        }
    }

    fn can_redeem(&self) -> bool {
        self.endpoint.is_some() && !matches!(self.grant, Grant::None)
    }

    /// The next time the refresher must act by itself.
    fn wake_at(&self) -> Option<Instant> {
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

    /// One token request, and the cell updated with what came of it.
    async fn refresh(&mut self, trigger: Trigger) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        self.publish_with(|s| s.state = ConnState::Refreshing);
        let started = Instant::now();
        let request = match &self.grant {
            Grant::ClientCredentials => GrantRequest::ClientCredentials,
            Grant::RefreshToken(token) => GrantRequest::RefreshToken(token),
            Grant::None => return,
        };
        let result = endpoint.request(request).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(TokenFailure::Transient { .. }) => Outcome::Transient,
            Err(TokenFailure::Rejected { .. }) => Outcome::Rejected,
            Err(TokenFailure::Misconfigured { .. }) => Outcome::Misconfigured,
        };
        self.connection.metrics.refresh(trigger, outcome, elapsed);
        match result {
            Ok(set) => self.install(set),
            Err(failure) => self.fail(trigger, outcome, failure),
        }
    }

    fn install(&mut self, set: TokenSet) {
        let Some(bearer) = bearer_header(&set.access_token) else {
            // classify() already refuses such tokens; keep the old set if one slips through.
            return;
        };
        if let Some(rotated) = set.refresh_token {
            self.grant = match self.grant {
                Grant::RefreshToken(_) => Grant::RefreshToken(rotated),
                // A client_credentials answer with a refresh token: ignore it (RFC 6749 4.4.3).
                Grant::ClientCredentials => Grant::ClientCredentials,
                Grant::None => Grant::RefreshToken(rotated),
            };
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        self.backoff.reset();
        self.retry_trigger = None;
        self.next_refresh = set
            .expires_in
            .map(|lifetime| now + refresh_in(lifetime, self.skew, rand::random::<f64>()));
        let previous = self.connection.cell.load_full();
        tracing::info!(
            connection = %self.connection.name,
            generation = previous.generation + 1,
            expires_in = ?set.expires_in,
            "token refreshed"
        );
        self.connection.publish(TokenState {
            generation: previous.generation + 1,
            bearer: Some(bearer),
            expires_at: set.expires_in.map(|d| now + d),
            expires_at_wall: set.expires_in.map(|d| wall + d),
            state: ConnState::Connected,
            retry_at: None,
            attempts: previous.attempts + 1,
            refreshes: previous.refreshes + 1,
            last_refresh: Some(wall),
            last_error: None,
        });
    }

    fn fail(&mut self, trigger: Trigger, outcome: Outcome, failure: TokenFailure) {
        let has_user_grant = matches!(self.grant, Grant::RefreshToken(_));
        let state = ConnState::after(outcome, has_user_grant);
        let retry_at = match &failure {
            TokenFailure::Transient { retry_after, .. } => {
                let delay = self.backoff.next(*retry_after, rand::random::<f64>());
                self.retry_trigger = Some(trigger);
                Some(Instant::now() + delay)
            }
            _ => None,
        };
        tracing::warn!(
            connection = %self.connection.name,
            state = state.as_str(),
            retry_in = ?retry_at.map(|at| at - Instant::now()),
            error = %failure,
            "token refresh failed"
        );
        let keep_token = state == ConnState::Degraded;
        self.publish_with(|s| {
            s.state = state;
            s.retry_at = retry_at;
            s.attempts += 1;
            s.last_error = Some(failure.to_string());
            if !keep_token {
                s.bearer = None;
                s.expires_at = None;
                s.expires_at_wall = None;
            }
        });
    }

    fn publish_with(&self, change: impl FnOnce(&mut TokenState)) {
        let mut next = TokenState::clone(&self.connection.cell.load());
        change(&mut next);
        self.connection.publish(next);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
