//! Cloudbeds API keys in the test token server (PROVIDERS.md section 1b): `cbat_` keys from
//! automatic delivery (`grant_type=urn:ietf:params:oauth:grant-type:api-key`, a code
//! exchanged for a key) and from migration (`grant_type=refresh_token_exchange`), keys issued
//! directly for a property-level config, revocation, a later OAuth refresh of the same grant
//! invalidating its keys, and keys that lapse when unused for a configurable idle period.
//! [`TokenServer::validate_key`] is what the upstream calls for `x-api-key`.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use super::wire::*;
use super::*;

/// `grant_type` of automatic delivery.
pub const API_KEY_GRANT: &str = "urn:ietf:params:oauth:grant-type:api-key";
/// `grant_type` of the migration exchange.
pub const REFRESH_TOKEN_EXCHANGE: &str = "refresh_token_exchange";

pub(super) struct ApiKey {
    /// The OAuth grant the key came from; `None` for a key issued to a property directly.
    grant: Option<u64>,
    last_used: Instant,
    revoked: bool,
    uses: usize,
}

impl State {
    fn issue_key(&mut self, grant: Option<u64>) -> String {
        let key = self.new_secret("cbat_");
        let entry = ApiKey {
            grant,
            last_used: Instant::now(),
            revoked: false,
            uses: 0,
        };
        self.keys.insert(key.clone(), entry);
        key
    }

    /// A successful OAuth refresh of `grant`: "will invalidate the new API key".
    pub(super) fn invalidate_keys_of(&mut self, grant: u64) {
        for key in self.keys.values_mut().filter(|k| k.grant == Some(grant)) {
            if !key.revoked {
                key.revoked = true;
                self.keys_invalidated_by_refresh += 1;
            }
        }
    }
}

/// The success body of a key grant: the key as `access_token`, nothing that expires; in
/// Cloudbeds mode the grant's `resources[]`, unless deliveries were told to name none.
fn key_success(inner: &Inner, st: &State, key: &str, grant: u64) -> Resp {
    let mut body = json!({"access_token": key, "token_type": "Bearer"});
    if inner.cfg.cloudbeds && !st.keys_name_no_property {
        body["resources"] = super::endpoint::resources(st, Some(grant));
    }
    json_resp(StatusCode::OK, body)
}

/// Automatic delivery: the code was checked and its grant created by `authorize::exchange`.
pub(super) fn deliver(inner: &Inner, st: &mut State, grant: u64) -> Resp {
    let key = st.issue_key(Some(grant));
    key_success(inner, st, &key, grant)
}

/// Migration: a live refresh token becomes a key of the same grant. The refresh token stays
/// valid, but using it again invalidates the key.
pub(super) fn exchange_refresh(inner: &Inner, presented: Option<&str>) -> Resp {
    let Some(presented) = presented else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing refresh_token",
        );
    };
    let mut st = inner.state();
    let live = st
        .refresh
        .get(presented)
        .filter(|rt| !matches!(rt.state, RtState::Consumed))
        .map(|rt| rt.grant)
        .filter(|grant| !st.revoked(*grant));
    let Some(grant) = live else {
        return if inner.cfg.cloudbeds {
            cloudbeds_invalid_refresh()
        } else {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token is invalid, expired or revoked",
            )
        };
    };
    let key = st.issue_key(Some(grant));
    key_success(inner, &st, &key, grant)
}

impl TokenServer {
    /// A key for a property-level config (`api_key = ...`), bound to no OAuth grant.
    pub fn issue_key(&self) -> String {
        self.st().issue_key(None)
    }

    /// Is `key` a live key? Records its use. A key unused for longer than the idle period
    /// ([`TokenServer::set_key_idle`]) lapses here, as Cloudbeds deletes keys unused for 30
    /// days.
    pub fn validate_key(&self, key: &str) -> bool {
        let mut st = self.st();
        let now = Instant::now();
        let idle = st.key_idle;
        let Some(grant) = st.keys.get(key).map(|k| k.grant) else {
            return false;
        };
        let grant_revoked = grant.is_some_and(|g| st.revoked(g));
        let Some(entry) = st.keys.get_mut(key) else {
            return false;
        };
        if !entry.revoked && idle.is_some_and(|idle| now.duration_since(entry.last_used) > idle) {
            entry.revoked = true;
            st.keys_lapsed += 1;
            return false;
        }
        if entry.revoked || grant_revoked {
            return false;
        }
        entry.last_used = now;
        entry.uses += 1;
        true
    }

    /// Key grants answer without `resources[]` from now on (an automatic delivery that
    /// names no property: the client asks `getHotels` with the new key).
    pub fn keys_name_no_property(&self) {
        self.st().keys_name_no_property = true;
    }

    /// The user whose grant the key came from; `None` for unknown keys and keys issued to a
    /// property directly.
    pub fn user_of_key(&self, key: &str) -> Option<String> {
        let st = self.st();
        let grant = st.keys.get(key)?.grant?;
        st.grant_users.get(&grant).cloned()
    }

    /// The properties `user`'s grants cover (`1` for a user the test gave none).
    pub fn properties_of(&self, user: &str) -> Vec<String> {
        self.st()
            .properties
            .get(user)
            .cloned()
            .unwrap_or_else(|| vec!["1".to_owned()])
    }

    /// Keys unused this long lapse (`None`: never).
    pub fn set_key_idle(&self, idle: Option<Duration>) {
        self.st().key_idle = idle;
    }

    /// Revokes `key` (an uninstall, or the hotel deleting it): the upstream then answers 401.
    pub fn revoke_key(&self, key: &str) {
        if let Some(entry) = self.st().keys.get_mut(key) {
            entry.revoked = true;
        }
    }

    /// Every key issued, in order.
    pub fn keys_issued(&self) -> Vec<String> {
        let st = self.st();
        st.issued
            .iter()
            .filter(|s| s.starts_with("cbat_") && st.keys.contains_key(*s))
            .cloned()
            .collect()
    }

    /// Is `key` live now (without using it)?
    pub fn key_is_live(&self, key: &str) -> bool {
        let st = self.st();
        let now = Instant::now();
        st.keys.get(key).is_some_and(|k| {
            let lapsed = st
                .key_idle
                .is_some_and(|idle| now.duration_since(k.last_used) > idle);
            let grant_revoked = k.grant.is_some_and(|g| st.revoked(g));
            !(k.revoked || grant_revoked || lapsed)
        })
    }

    /// Successful uses of `key` at the upstream.
    pub fn key_uses(&self, key: &str) -> usize {
        self.st().keys.get(key).map_or(0, |k| k.uses)
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:api-key` requests received.
    pub fn key_deliveries(&self) -> usize {
        self.st().key_deliveries
    }

    /// `grant_type=refresh_token_exchange` requests received.
    pub fn key_exchanges(&self) -> usize {
        self.st().key_exchanges
    }

    /// Keys killed because their grant's refresh token was used again.
    pub fn keys_invalidated_by_refresh(&self) -> usize {
        self.st().keys_invalidated_by_refresh
    }

    /// Keys that lapsed unused.
    pub fn keys_lapsed(&self) -> usize {
        self.st().keys_lapsed
    }
}
