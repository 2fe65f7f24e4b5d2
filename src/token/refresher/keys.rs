//! The refresher's side of API keys (SPEC section 10): installing a key (durable before
//! use), migrating a refresh token to a key, a rejected key, and the keep-alive of an idle
//! key. A key is never refreshed: once the refresher holds one ([`Grant::ApiKey`]) it sends
//! no token request for the connection, whatever asks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt, Either, Full, Limited};
use tokio::time::Instant;

use super::{Grant, Refresher};
use crate::metrics::Trigger;
use crate::secret::SecretString;
use crate::store::{Credential, Record, StoreLock};
use crate::token::keys::{KEY_REJECTED, KeySettings, keepalive_due, key_header, until};
use crate::token::oauth::{GrantRequest, TokenFailure};
use crate::token::state::{ConnState, Outcome};
use crate::token::{TokenSet, TokenState};

/// A stored key's last use is written at most this often (it is read before a keep-alive,
/// so other replicas do not call for a key this one keeps busy).
const PERSIST_EVERY: Duration = Duration::from_secs(3600);
/// Keep-alive answers are small.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a migration did not happen. Nothing was changed either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The connection is not in a state that can migrate (409).
    #[error("{0}")]
    Conflict(String),
    /// The provider did not exchange the refresh token, or the store failed (502).
    #[error("{0}")]
    Failed(String),
}

/// Key settings and the keep-alive's bookkeeping.
#[derive(Default)]
pub(super) struct KeyRuntime {
    /// Shared: an app's tenants hold one `Arc` of the app's settings, and this struct is in
    /// each of them.
    settings: Option<Arc<KeySettings>>,
    /// The last use written to the store.
    persisted: Option<SystemTime>,
    /// When last use was last written (or the key installed).
    persisted_at: Option<Instant>,
    /// After a keep-alive that failed transiently: not before then.
    retry_at: Option<Instant>,
}

impl KeyRuntime {
    pub(super) fn new(settings: Arc<KeySettings>) -> Self {
        Self {
            settings: Some(settings),
            ..Self::default()
        }
    }

    /// A key record was adopted: its stored last use is what is written, counted from now.
    pub(super) fn adopted(&mut self, stored: Option<SystemTime>) {
        self.persisted = self.persisted.max(stored);
        self.persisted_at.get_or_insert_with(Instant::now);
    }

    fn idle(&self) -> Option<Duration> {
        self.settings
            .as_ref()
            .and_then(|s| s.keepalive.as_ref())
            .map(|(idle, _)| *idle)
    }

    /// How often a stored last use is written: hourly, sooner for short keep-alives.
    fn persist_every(&self) -> Duration {
        self.idle()
            .map_or(PERSIST_EVERY, |idle| (idle / 4).min(PERSIST_EVERY))
    }
}

impl Refresher {
    /// The connection holds an API key: nothing is ever refreshed.
    pub(super) fn holds_key(&self) -> bool {
        matches!(self.grant, Grant::ApiKey)
    }

    /// The connect flow delivers keys (`grant = "api_key"`).
    pub(super) fn delivers_keys(&self) -> bool {
        self.keys.settings.as_ref().is_some_and(|s| s.delivered)
    }

    pub(super) fn key_header_name(&self) -> Option<http::HeaderName> {
        self.keys.settings.as_ref().and_then(|s| s.header.clone())
    }

    /// When the key needs the refresher next: its keep-alive, or writing its last use.
    pub(super) fn key_wake_at(&self) -> Option<Instant> {
        let current = self.connection.cell.load();
        if current.state.is_dead_end() || !current.is_key() {
            return None;
        }
        let now = Instant::now();
        let keepalive = self.keys.idle().map(|idle| {
            let last = self.last_use();
            let due = now + until(keepalive_due(last, idle), SystemTime::now());
            self.keys.retry_at.map_or(due, |retry| due.max(retry))
        });
        let persist = match (self.store.is_some(), self.connection.last_used()) {
            (true, Some(last)) if Some(last) > self.keys.persisted => {
                let since = self.keys.persisted_at.unwrap_or(now);
                Some(since + self.keys.persist_every())
            }
            _ => None,
        };
        match (keepalive, persist) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The key's last use; a key not used since start counts as used at start (a key from
    /// the config, whose uses are not stored).
    fn last_use(&self) -> SystemTime {
        match self.connection.last_used() {
            Some(at) => at,
            None => {
                self.connection.used_now();
                SystemTime::now()
            }
        }
    }

    /// The key's timer fired: keep it alive if it has been idle, else write its last use.
    pub(super) async fn on_key_timer(&mut self) {
        if let Some(idle) = self.keys.idle() {
            self.adopt_last_use().await;
            let last = self.last_use();
            let retry_ok = self.keys.retry_at.is_none_or(|at| at <= Instant::now());
            if until(keepalive_due(last, idle), SystemTime::now()).is_zero() && retry_ok {
                self.keep_alive().await;
                return;
            }
        }
        self.persist_last_used().await;
    }

    /// Takes the last use another replica (or this one before a restart) stored.
    async fn adopt_last_use(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if let Ok(Some(record)) = store.load(&self.connection.name).await
            && let Some(at) = record.last_used_at
        {
            self.connection.used_at(at);
        }
    }

    /// One cheap authenticated call with the key, so the provider keeps it.
    async fn keep_alive(&mut self) {
        let Some(call) = self
            .keys
            .settings
            .as_ref()
            .and_then(|s| s.keepalive.as_ref())
            .map(|(_, call)| call.clone())
        else {
            return;
        };
        let Some(token) = self.connection.cell.load().usable(Instant::now()) else {
            return;
        };
        let name = self.connection.name.clone();
        let mut request = http::Request::builder()
            .method(call.method.clone())
            .uri(call.url.as_str())
            .header(token.name.clone(), token.header.clone())
            .header(http::header::ACCEPT, "application/json");
        if call.method == http::Method::POST {
            // Cloudbeds' check takes no payload; an empty form says so.
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request.body(Either::Left(Full::new(bytes::Bytes::new())));
        let Ok(request) = request else {
            return;
        };
        let exchange = async {
            let response = call
                .client
                .request(request)
                .await
                .map_err(|e| crate::upstream::error_chain(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(call.timeout, exchange).await {
            Ok(Ok((status, body))) if rejects_key(status, &body) => {
                tracing::warn!(connection = %name, status = status.as_u16(), "keep-alive: the provider rejected the API key");
                self.key_rejected().await;
            }
            Ok(Ok((status, _))) if status.is_success() => {
                tracing::info!(connection = %name, path = call.url.path(), "keep-alive: API key used");
                self.keys.retry_at = None;
                self.connection.used_now();
                self.persist_last_used().await;
            }
            outcome => {
                let why = match outcome {
                    Ok(Ok((status, _))) => format!("HTTP {}", status.as_u16()),
                    Ok(Err(error)) => error,
                    Err(_) => "timed out".into(),
                };
                let idle = self.keys.idle().unwrap_or(PERSIST_EVERY);
                let retry = (idle / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600));
                tracing::warn!(connection = %name, error = %why, retry_in_s = retry.as_secs_f64(), "keep-alive call failed; trying again later");
                self.keys.retry_at = Some(Instant::now() + retry);
            }
        }
    }

    /// Writes the key's last use to the store (same generation; never over a newer record).
    async fn persist_last_used(&mut self) {
        let (Some(store), Some(last)) = (self.store.clone(), self.connection.last_used()) else {
            return;
        };
        self.keys.persisted_at = Some(Instant::now());
        if Some(last) <= self.keys.persisted {
            return;
        }
        let name = self.connection.name.clone();
        let Ok(_lock) = store.lock(&name, self.lock_wait).await else {
            return;
        };
        let generation = self.connection.cell.load().generation;
        let mut record = match store.load(&name).await {
            Ok(Some(record))
                if record.credential == Credential::ApiKey && record.generation == generation =>
            {
                record
            }
            _ => return,
        };
        if record.last_used_at >= Some(last) {
            self.keys.persisted = record.last_used_at;
            return;
        }
        record.last_used_at = Some(last);
        match store.save(&record).await {
            Ok(()) => self.keys.persisted = Some(last),
            Err(error) => {
                tracing::warn!(connection = %name, %error, "cannot record the API key's last use")
            }
        }
    }

    /// The provider refused the key: it was revoked or is wrong. No retry, no refresh.
    pub(super) async fn key_rejected(&mut self) {
        let configured = self.keys.settings.as_ref().is_some_and(|s| s.configured);
        let what = if configured {
            "; replace api_key in the config"
        } else {
            "; connect again to get a new key"
        };
        tracing::warn!(connection = %self.connection.name, "{KEY_REJECTED}");
        self.publish_with(|s| {
            s.state = ConnState::NeedsAuthorization;
            // Still a key connection (shown so), without a usable key.
            let header = s.key_header.clone();
            s.set_credential(None, header);
            s.expires_at = None;
            s.expires_at_wall = None;
            s.retry_at = None;
            s.attempts += 1;
            s.last_error = Some(format!("{KEY_REJECTED}{what}"));
        });
        self.persist_state(ConnState::NeedsAuthorization).await;
    }

    /// Stores `key` as `generation` (durably, before anyone uses it), then swaps it in.
    /// False if it could not be made durable (shutdown came first) or cannot be a header.
    pub(super) async fn install_key(
        &mut self,
        key: SecretString,
        lock: Option<Box<dyn StoreLock>>,
        generation: u64,
    ) -> bool {
        let (Some(header), Some(value)) = (self.key_header_name(), key_header(&key)) else {
            tracing::error!(connection = %self.connection.name, "the provider's API key cannot be sent as a header; not installed");
            return false;
        };
        let wall = SystemTime::now();
        if self.store.is_some() {
            let record = Record {
                connection: self.connection.name.clone(),
                generation,
                access_token: Some(key),
                expires_at: None,
                refresh_token: None,
                scope: None,
                state: ConnState::Connected.as_str().to_owned(),
                updated_at: wall,
                credential: Credential::ApiKey,
                last_used_at: Some(wall),
                covers: self.covers.clone(),
            };
            if !self.save_durably(&record).await {
                return false;
            }
            self.keys.persisted = Some(wall);
        }
        drop(lock);
        self.grant = Grant::ApiKey;
        self.next_refresh = None;
        self.retry_trigger = None;
        self.answer_lost = false;
        self.backoff.reset();
        self.keys.retry_at = None;
        self.keys.persisted_at = Some(Instant::now());
        self.connection.used_at(wall);
        tracing::info!(connection = %self.connection.name, generation, "API key installed");
        let previous = self.connection.cell.load_full();
        let mut next = TokenState::initial(ConnState::Connected, None);
        next.generation = generation;
        next.set_credential(Some(value), Some(header));
        next.attempts = previous.attempts + 1;
        next.refreshes = previous.refreshes;
        next.last_refresh = previous.last_refresh;
        self.connection.publish(next);
        true
    }

    /// Automatic delivery (the connect flow, or a tenant's install): the answer's
    /// access_token is a long-lived key, stored as a generation newer than anything stored
    /// or held, serving `covers`.
    pub(super) async fn take_delivered_key(
        &mut self,
        set: TokenSet,
        covers: Vec<String>,
        lock: Option<Box<dyn StoreLock>>,
        stored_generation: u64,
    ) -> Result<u64, String> {
        self.set_covers(covers);
        let generation = stored_generation.max(self.connection.cell.load().generation) + 1;
        self.authorizing = None;
        if self.install_key(set.access_token, lock, generation).await {
            Ok(generation)
        } else {
            Err("the new API key could not be saved".into())
        }
    }

    /// `POST .../migrate`: exchange the stored refresh token for a key under the store lock,
    /// store the key (before use), hold it from then on.
    pub(super) async fn migrate(&mut self) -> Result<u64, MigrateError> {
        let conflict = |text: &str| Err(MigrateError::Conflict(text.to_owned()));
        if self.holds_key() {
            return conflict("this connection already uses an API key; nothing to migrate");
        }
        if self.key_header_name().is_none() {
            return conflict(
                "this connection has no header for an API key: set api_key_header to migrate",
            );
        }
        let Some(store) = self.store.clone() else {
            return conflict("this connection keeps no refresh token to migrate");
        };
        let name = self.connection.name.clone();
        let lock = store
            .lock(&name, self.lock_wait)
            .await
            .map_err(|e| MigrateError::Failed(format!("token store lock: {e}")))?;
        let record = store
            .load(&name)
            .await
            .map_err(|e| MigrateError::Failed(format!("token store: {e}")))?;
        let stored_generation = record.as_ref().map_or(0, |r| r.generation);
        if let Some(record) = record {
            let dead = [ConnState::NeedsAuthorization, ConnState::Disconnected]
                .iter()
                .any(|s| s.as_str() == record.state);
            if record.credential == Credential::ApiKey {
                if record.generation > self.connection.cell.load().generation {
                    self.adopt(record);
                }
                return conflict("this connection already uses an API key; nothing to migrate");
            }
            if dead || record.refresh_token.is_none() {
                return conflict(
                    "this connection has no refresh token to migrate: connect it first",
                );
            }
            if record.generation > self.connection.cell.load().generation {
                self.adopt(record);
            }
        }
        let Grant::RefreshToken(refresh_token) = &self.grant else {
            return conflict("this connection has no refresh token to migrate: connect it first");
        };
        let Some(endpoint) = &self.endpoint else {
            return conflict("client credentials are unavailable");
        };
        let refresh_token = refresh_token.clone();
        let started = Instant::now();
        let result = endpoint
            .request(GrantRequest::RefreshTokenExchange(&refresh_token), &[])
            .await;
        let outcome = result
            .as_ref()
            .map_or_else(TokenFailure::outcome, |_| Outcome::Ok);
        self.connection
            .metrics
            .refresh(Trigger::Manual, outcome, started.elapsed());
        let set = result.map_err(|failure| {
            tracing::warn!(connection = %name, error = %failure, "migration to an API key failed; nothing changed");
            MigrateError::Failed(format!(
                "the provider did not exchange the refresh token: {failure}"
            ))
        })?;
        let generation = stored_generation.max(self.connection.cell.load().generation) + 1;
        if self
            .install_key(set.access_token, Some(lock), generation)
            .await
        {
            tracing::info!(connection = %name, generation, "migrated to an API key; the refresh token is no longer used");
            Ok(generation)
        } else {
            Err(MigrateError::Failed(
                "the new API key could not be saved".into(),
            ))
        }
    }
}

/// A keep-alive answer that says the key is dead: 401, or a Cloudbeds `success:false`.
fn rejects_key(status: http::StatusCode, body: &[u8]) -> bool {
    if status == http::StatusCode::UNAUTHORIZED {
        return true;
    }
    let success = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("success").and_then(serde_json::Value::as_bool));
    status.is_success() && success == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_rejected_by_401_or_success_false() {
        use http::StatusCode;
        assert!(rejects_key(StatusCode::UNAUTHORIZED, b""));
        assert!(rejects_key(StatusCode::OK, br#"{"success":false}"#));
        assert!(!rejects_key(StatusCode::OK, br#"{"success":true}"#));
        assert!(!rejects_key(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"success":false}"#
        ));
    }
}
