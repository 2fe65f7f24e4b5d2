//! The refresher's side of the token store: adopting records other processes wrote,
//! re-reading under the lock, and writing new tokens durably before they are used.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{DEAD_STATES, Grant, Refresher};
use crate::metrics::Trigger;
use crate::store::{Credential, Record, StoreError, StoreLock};
use crate::token::keys::credential_value;
use crate::token::schedule::refresh_in;
use crate::token::state::ConnState;

impl Refresher {
    /// Looks at the store (no lock) and adopts a record another process (or `bearerd
    /// import`) wrote; redeems at once if the adopted record has no usable access token.
    /// False if the store could not be read.
    pub(super) async fn adopt_if_newer(&mut self) -> bool {
        let Some(store) = self.store.clone() else {
            return true;
        };
        let record = match store.load(&self.connection.name).await {
            Ok(Some(record)) => record,
            Ok(None) => return true,
            Err(error) => {
                tracing::warn!(connection = %self.connection.name, %error, "cannot read the token store");
                if self.connection.cell.load().generation == 0 {
                    self.publish_with(|s| s.last_error = Some(format!("token store: {error}")));
                }
                return false;
            }
        };
        if record.generation > self.connection.cell.load().generation
            && self.adopt(record)
            && self.can_redeem()
        {
            let trigger = if self.connection.cell.load().attempts == 0 {
                Trigger::Startup
            } else {
                Trigger::Manual
            };
            self.refresh(trigger).await;
        }
        true
    }

    /// Swaps in a stored record. True if it carries no usable access token (so a refresh
    /// should follow).
    pub(super) fn adopt(&mut self, record: Record) -> bool {
        self.set_covers(record.covers.clone());
        // A key record switches this refresher to key mode for good: it must never redeem
        // the refresh token it may still hold (that would invalidate the key).
        let key = match record.credential {
            Credential::ApiKey => self.key_header_name(),
            Credential::Token => None,
        };
        if record.credential == Credential::ApiKey {
            self.grant = Grant::ApiKey;
            if let Some(at) = record.last_used_at {
                self.connection.used_at(at);
            }
            self.keys.adopted(record.last_used_at);
        } else if let Some(refresh_token) = record.refresh_token
            && !matches!(self.grant, Grant::ClientCredentials)
        {
            self.grant = Grant::RefreshToken(refresh_token);
        } else if matches!(self.grant, Grant::ApiKey) {
            self.grant = Grant::None;
        }
        let wall = SystemTime::now();
        let now = Instant::now();
        let remaining = record
            .expires_at
            .map(|at| at.duration_since(wall).unwrap_or_default());
        let bearer = match remaining {
            Some(left) if left.is_zero() => None,
            _ => record
                .access_token
                .as_ref()
                .and_then(|t| credential_value(t, key.as_ref())),
        };
        let dead = DEAD_STATES.into_iter().find(|s| s.as_str() == record.state);
        self.backoff.reset();
        self.retry_trigger = None;
        self.answer_lost = false;
        self.next_refresh = match (&bearer, remaining) {
            (Some(_), Some(left)) => Some(now + refresh_in(left, self.skew, rand::random::<f64>())),
            _ => None,
        };
        tracing::info!(connection = %self.connection.name, generation = record.generation, "adopted stored tokens");
        let needs_refresh = bearer.is_none() && dead.is_none() && key.is_none();
        if record.credential == Credential::ApiKey && key.is_none() {
            tracing::error!(connection = %self.connection.name, "the stored record holds an API key, but this connection has no header for one (api_key_header)");
        }
        self.publish_with(|s| {
            s.generation = record.generation;
            // An expired access token's expiry is kept (it is not used): while the refresh
            // that replaces it runs, the connection is reported `degraded`.
            let token = record.access_token.as_ref().filter(|_| dead.is_none());
            s.expires_at = token.and(remaining).map(|left| now + left);
            s.expires_at_wall = token.and(record.expires_at);
            s.set_credential(bearer, key.clone());
            s.retry_at = None;
            s.last_error = None;
            // A record with tokens was written by the refresh that got them (here, by another
            // replica, or before a restart): that is the last refresh the status shows.
            if token.is_some() {
                s.last_refresh = s.last_refresh.max(Some(record.updated_at));
            }
            s.state = match dead {
                Some(dead) => {
                    s.last_error = Some("the provider rejected the stored grant; reconnect".into());
                    dead
                }
                None if needs_refresh => ConnState::Refreshing,
                None if record.credential == Credential::ApiKey && s.bearer.is_none() => {
                    s.last_error = Some(
                        "the stored API key cannot be sent: this connection has no api_key_header"
                            .into(),
                    );
                    ConnState::Misconfigured
                }
                None => ConnState::Connected,
            };
        });
        needs_refresh
    }

    /// Takes the store lock and re-reads the record. `Ok(None)` with a store means a newer
    /// generation was adopted and it has a usable token: nothing to redeem.
    pub(super) async fn lock_and_reread(&mut self) -> Result<Option<Box<dyn StoreLock>>, String> {
        let Some(store) = self.store.clone() else {
            return Ok(None);
        };
        let name = self.connection.name.clone();
        let lock = store
            .lock(&name, self.lock_wait)
            .await
            .map_err(|e| format!("token store lock: {e}"))?;
        let record = store
            .load(&name)
            .await
            .map_err(|e| format!("token store: {e}"))?;
        if let Some(record) = record
            && record.generation > self.connection.cell.load().generation
        {
            let dead = DEAD_STATES.iter().any(|s| s.as_str() == record.state);
            if !self.adopt(record) || dead {
                return Ok(None);
            }
            // Adopted a newer refresh token without a usable access token: redeem it.
            self.publish_with(|s| s.state = ConnState::Refreshing);
        }
        Ok(Some(lock))
    }

    /// Writes `record` until it is durable. Meanwhile the new tokens stay pending in memory
    /// (not used: a token is durable before it is used) and the state says why. False only
    /// if shutdown came first and a last attempt failed too.
    pub(super) async fn save_durably(&mut self, record: &Record) -> bool {
        let Some(store) = self.store.clone() else {
            return true;
        };
        let mut delay = Duration::from_millis(250);
        let mut shutdown = self.shutdown.clone();
        loop {
            let error = match store.save(record).await {
                Ok(()) => return true,
                Err(error @ StoreError::Superseded { .. }) => {
                    // Another replica stored a newer grant while this one had lost its lock:
                    // retrying would overwrite it. Take the stored one instead.
                    tracing::warn!(connection = %self.connection.name, %error, "new tokens superseded; adopting the stored record");
                    self.adopt_stored().await;
                    return false;
                }
                Err(error) => error,
            };
            tracing::error!(
                connection = %self.connection.name,
                generation = record.generation,
                %error,
                "cannot save new tokens; they are kept in memory and the save is retried"
            );
            self.publish_with(|s| {
                s.state = ConnState::Degraded;
                s.last_error = Some(format!("new tokens not saved yet (retrying): {error}"));
            });
            if *shutdown.borrow() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = crate::serve::stopped(&mut shutdown) => {
                    return store.save(record).await.is_ok();
                }
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// After a superseded save: swap in whatever the store holds now, without redeeming here
    /// (a retry is scheduled if it carries no usable access token).
    async fn adopt_stored(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let needs_refresh = match store.load(&self.connection.name).await {
            Ok(Some(record)) => self.adopt(record),
            _ => true,
        };
        if needs_refresh {
            let retry_at = Instant::now() + Duration::from_secs(1);
            self.publish_with(|s| {
                s.state = ConnState::Degraded;
                s.retry_at = Some(retry_at);
            });
        }
    }

    /// Records a dead end in the store so a restart does not redeem a rejected grant.
    pub(super) async fn persist_state(&mut self, state: ConnState) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let name = self.connection.name.clone();
        let Ok(Some(mut record)) = store.load(&name).await else {
            return;
        };
        record.state = state.as_str().to_owned();
        record.access_token = None;
        record.expires_at = None;
        record.updated_at = SystemTime::now();
        if let Err(error) = store.save(&record).await {
            tracing::warn!(connection = %name, %error, "cannot record the connection state");
        }
    }
}
