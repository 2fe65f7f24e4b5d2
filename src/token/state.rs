//! Connection states (SPEC section 4), the pure transition taken after a refresh attempt,
//! and the pure rule for the state reported at a given moment.

use tokio::time::Instant;

/// A connection's state; Cloudbeds' app-state word is [`ConnState::app_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Has a valid token.
    Connected,
    /// A refresh is in flight (the current token, if any, is still served).
    Refreshing,
    /// The last refresh failed transiently; retrying with backoff.
    Degraded,
    /// A connect flow started; no token yet.
    Authorizing,
    /// No usable grant: never connected, or the provider rejected it.
    NeedsAuthorization,
    /// Deliberately disconnected.
    Disconnected,
    /// The operator must fix the config (credentials, client, scopes).
    Misconfigured,
}

/// What a refresh attempt came to, as far as the state machine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Transient,
    Rejected,
    Misconfigured,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Transient => "transient",
            Self::Rejected => "rejected",
            Self::Misconfigured => "misconfigured",
        }
    }
}

impl ConnState {
    pub const ALL: [ConnState; 7] = [
        Self::Connected,
        Self::Refreshing,
        Self::Degraded,
        Self::Authorizing,
        Self::NeedsAuthorization,
        Self::Disconnected,
        Self::Misconfigured,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Refreshing => "refreshing",
            Self::Degraded => "degraded",
            Self::Authorizing => "authorizing",
            Self::NeedsAuthorization => "needs_authorization",
            Self::Disconnected => "disconnected",
            Self::Misconfigured => "misconfigured",
        }
    }

    /// Cloudbeds' vocabulary for the same state.
    pub fn app_state(self) -> &'static str {
        match self {
            Self::Connected | Self::Refreshing | Self::Degraded => "enabled",
            Self::Authorizing => "pending",
            Self::NeedsAuthorization | Self::Disconnected | Self::Misconfigured => "disabled",
        }
    }

    /// States in which the refresher will not ask the provider again until something
    /// changes the grant (config, connect, import, or an operator's manual refresh).
    pub fn is_dead_end(self) -> bool {
        matches!(
            self,
            Self::Authorizing | Self::NeedsAuthorization | Self::Disconnected | Self::Misconfigured
        )
    }

    /// The state after a refresh attempt. A rejected client-credentials grant has no user
    /// who could re-authorize it, so it is a configuration problem.
    pub fn after(outcome: Outcome, has_user_grant: bool) -> ConnState {
        match outcome {
            Outcome::Ok => Self::Connected,
            Outcome::Transient => Self::Degraded,
            Outcome::Rejected if has_user_grant => Self::NeedsAuthorization,
            Outcome::Rejected | Outcome::Misconfigured => Self::Misconfigured,
        }
    }

    /// The state to report at `now` for a connection whose refresher last published
    /// `stored`, with an access token that expires at `expires_at` (`None`: no token, or one
    /// without a known lifetime). A token that has expired while its refresh is still running,
    /// or while the connection is otherwise unrefreshed, shows as `degraded`: requests are
    /// waiting or failing, whatever the last write said. Other states report as stored.
    pub fn reported(stored: ConnState, expires_at: Option<Instant>, now: Instant) -> ConnState {
        let expired = expires_at.is_some_and(|at| at <= now);
        match stored {
            Self::Connected | Self::Refreshing if expired => Self::Degraded,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_expired_token_is_reported_degraded_while_connected_or_refreshing() {
        let now = Instant::now();
        let past = Some(now - Duration::from_secs(1));
        let future = Some(now + Duration::from_secs(60));
        for stored in [ConnState::Connected, ConnState::Refreshing] {
            assert_eq!(ConnState::reported(stored, past, now), ConnState::Degraded);
            assert_eq!(
                ConnState::reported(stored, Some(now), now),
                ConnState::Degraded
            );
            assert_eq!(ConnState::reported(stored, future, now), stored);
            assert_eq!(ConnState::reported(stored, None, now), stored);
        }
        // Every other state is reported as written, expired token or not.
        for stored in ConnState::ALL {
            if !matches!(stored, ConnState::Connected | ConnState::Refreshing) {
                assert_eq!(ConnState::reported(stored, past, now), stored);
            }
        }
    }

    #[test]
    fn transitions() {
        assert_eq!(ConnState::after(Outcome::Ok, true), ConnState::Connected);
        assert_eq!(
            ConnState::after(Outcome::Transient, false),
            ConnState::Degraded
        );
        assert_eq!(
            ConnState::after(Outcome::Rejected, true),
            ConnState::NeedsAuthorization
        );
        assert_eq!(
            ConnState::after(Outcome::Rejected, false),
            ConnState::Misconfigured
        );
        assert_eq!(
            ConnState::after(Outcome::Misconfigured, true),
            ConnState::Misconfigured
        );
    }

    #[test]
    fn app_state_words() {
        assert_eq!(ConnState::Degraded.app_state(), "enabled");
        assert_eq!(ConnState::Authorizing.app_state(), "pending");
        assert_eq!(ConnState::NeedsAuthorization.app_state(), "disabled");
        assert!(ConnState::NeedsAuthorization.is_dead_end());
        assert!(!ConnState::Degraded.is_dead_end());
    }
}
