//! One refresh attempt: under the store lock, adopt or redeem, then install the new tokens
//! (durable before use) or publish the failure, saying why a grant was rejected after a
//! token request lost its answer.

use std::time::SystemTime;

use tokio::time::Instant;

use super::{Grant, Refresher};
use crate::metrics::Trigger;
use crate::store::{Credential, Record, StoreLock};
use crate::token::oauth::{GrantRequest, TokenFailure};
use crate::token::schedule::refresh_in;
use crate::token::state::{ConnState, Outcome};
use crate::token::{TokenSet, TokenState, bearer_header};

/// Added to a rejection that follows a token request which got no answer.
const LOST_ANSWER: &str = "an earlier token request got no answer, so the provider may have \
rotated the grant while its answer was lost; reconnect to get a new grant";

impl Refresher {
    /// One refresh: under the store lock, adopt or redeem, persist, then publish.
    pub(super) async fn refresh(&mut self, trigger: Trigger) {
        if !self.can_redeem() {
            return;
        }
        // An app's tenants share `token_concurrency` token requests: no stampede at the
        // provider when many tenants fall due together.
        let link = self.tenant.clone();
        let _permit = match &link {
            Some(link) => link.permits.acquire().await.ok(),
            None => None,
        };
        self.publish_with(|s| s.state = ConnState::Refreshing);
        let lock = match self.lock_and_reread().await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) if self.store.is_some() => return, // adopted a newer generation
            Ok(None) => None,
            Err(reason) => {
                let failure = TokenFailure::Transient {
                    retry_after: None,
                    reason,
                    answer_lost: false,
                };
                self.fail(trigger, failure);
                return;
            }
        };
        let held = self.held_tokens();
        let held: Vec<&str> = held.iter().map(String::as_str).collect();
        let started = Instant::now();
        let result = match (&self.endpoint, &self.grant) {
            (Some(endpoint), Grant::ClientCredentials) => {
                endpoint
                    .request(GrantRequest::ClientCredentials, &held)
                    .await
            }
            (Some(endpoint), Grant::RefreshToken(token)) => {
                endpoint
                    .request(GrantRequest::RefreshToken(token), &held)
                    .await
            }
            _ => return,
        };
        let outcome = result
            .as_ref()
            .map_or_else(TokenFailure::outcome, |_| Outcome::Ok);
        self.connection
            .metrics
            .refresh(trigger, outcome, started.elapsed());
        match result {
            Ok(set) => {
                let generation = self.connection.cell.load().generation + 1;
                self.install(set, lock, generation).await;
            }
            Err(failure) => {
                let user_grant = matches!(self.grant, Grant::RefreshToken(_));
                let failure = explain_lost_answer(failure, user_grant && self.answer_lost);
                if let TokenFailure::Transient {
                    answer_lost: true, ..
                } = failure
                {
                    self.answer_lost = true;
                }
                self.fail(trigger, failure);
                if outcome == Outcome::Rejected {
                    self.persist_state(ConnState::NeedsAuthorization).await;
                }
            }
        }
    }

    /// Persists (with a store) and swaps in a token set as `generation`; the lock is released
    /// after both. False if the set could not be made durable (shutdown came first).
    pub(super) async fn install(
        &mut self,
        set: TokenSet,
        lock: Option<Box<dyn StoreLock>>,
        generation: u64,
    ) -> bool {
        let Some(bearer) = bearer_header(&set.access_token) else {
            // classify() already refuses such tokens; keep the old set if one slips through.
            return false;
        };
        if let Some(rotated) = &set.refresh_token
            && !matches!(self.grant, Grant::ClientCredentials)
        {
            self.grant = Grant::RefreshToken(rotated.clone());
        }
        let wall = SystemTime::now();
        if self.store.is_some() {
            let record = Record {
                connection: self.connection.name.clone(),
                generation,
                access_token: Some(set.access_token.clone()),
                expires_at: set.expires_in.map(|d| wall + d),
                refresh_token: match &self.grant {
                    Grant::RefreshToken(token) => Some(token.clone()),
                    _ => None,
                },
                scope: set.scope.clone(),
                state: ConnState::Connected.as_str().to_owned(),
                updated_at: wall,
                credential: Credential::Token,
                last_used_at: None,
                covers: self.covers.clone(),
            };
            if !self.save_durably(&record).await {
                return false;
            }
        }
        drop(lock);
        let now = Instant::now();
        self.answer_lost = false;
        self.backoff.reset();
        self.retry_trigger = None;
        self.next_refresh = set
            .expires_in
            .map(|lifetime| now + refresh_in(lifetime, self.skew, rand::random::<f64>()));
        tracing::info!(
            connection = %self.connection.name,
            generation,
            expires_in_s = set.expires_in.map(|d| d.as_secs()),
            "token refreshed"
        );
        let previous = self.connection.cell.load_full();
        self.connection.publish(TokenState {
            generation,
            bearer: Some(bearer),
            key_header: None,
            expires_at: set.expires_in.map(|d| now + d),
            expires_at_wall: set.expires_in.map(|d| wall + d),
            state: ConnState::Connected,
            retry_at: None,
            attempts: previous.attempts + 1,
            refreshes: previous.refreshes + 1,
            last_refresh: Some(wall),
            last_error: None,
        });
        true
    }

    /// Publishes a failed attempt: the state it leads to, the backoff of a transient one,
    /// and its reason (already scrubbed by the token endpoint client).
    pub(super) fn fail(&mut self, trigger: Trigger, failure: TokenFailure) {
        let has_user_grant = matches!(self.grant, Grant::RefreshToken(_));
        let state = ConnState::after(failure.outcome(), has_user_grant);
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
            retry_in_s = retry_at.map(|at| (at - Instant::now()).as_secs_f64()),
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

    /// The tokens this connection holds besides the one a request carries, for scrubbing
    /// a provider's echo of them from a failure's reason.
    fn held_tokens(&self) -> Vec<String> {
        let current = self.connection.cell.load();
        let access = current
            .bearer
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_owned);
        let refresh = match &self.grant {
            Grant::RefreshToken(token) => Some(token.secret().to_owned()),
            _ => None,
        };
        access.into_iter().chain(refresh).collect()
    }
}

/// A rejection that follows a request which reached the provider unanswered says so: the
/// provider may have acted on that request (rotated the refresh token, so the one bearerd
/// still holds is spent), and the operator should know why the grant died and what to do.
fn explain_lost_answer(failure: TokenFailure, earlier_answer_lost: bool) -> TokenFailure {
    match failure {
        TokenFailure::Rejected { reason } if earlier_answer_lost => TokenFailure::Rejected {
            reason: format!("{reason}; {LOST_ANSWER}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_after_a_lost_answer_says_the_grant_may_have_rotated() {
        let rejected = || TokenFailure::Rejected {
            reason: "token endpoint answered HTTP 400 invalid_grant".into(),
        };
        let explained = explain_lost_answer(rejected(), true).to_string();
        assert!(explained.starts_with("token endpoint answered HTTP 400 invalid_grant; "));
        assert!(explained.contains("may have rotated the grant while its answer was lost"));
        assert_eq!(explain_lost_answer(rejected(), false), rejected());
        let transient = TokenFailure::Transient {
            retry_after: None,
            reason: "HTTP 503".into(),
            answer_lost: false,
        };
        assert_eq!(explain_lost_answer(transient.clone(), true), transient);
    }
}
