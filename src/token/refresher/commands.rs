//! Commands from the admin listener, carried out by the refresher so it stays the only
//! writer of the cell: the connect flow's code exchange, disconnect, and the `authorizing`
//! state while a browser is at the provider.

use std::time::SystemTime;

use tokio::time::Instant;

use super::{Command, DisconnectReport, Grant, Refresher};
use crate::config::Revocation;
use crate::metrics::Trigger;
use crate::secret::SecretString;
use crate::store::{Credential, Record, StoreLock};
use crate::token::TokenSet;
use crate::token::oauth::{GrantRequest, TokenFailure};
use crate::token::state::{ConnState, Outcome};

impl Refresher {
    pub(super) async fn on_command(&mut self, command: Command) {
        match command {
            Command::Authorizing { until, done } => {
                let state = self.connection.cell.load().state;
                // A connection that still serves a token keeps serving it while reconnecting.
                if state.is_dead_end() {
                    let back_to = match self.authorizing {
                        Some((_, previous)) => previous,
                        None => state,
                    };
                    self.authorizing = Some((until, back_to));
                    self.publish_with(|s| s.state = ConnState::Authorizing);
                }
                let _ = done.send(());
            }
            Command::AuthorizingEnded { done } => {
                self.end_authorizing();
                let _ = done.send(());
            }
            Command::Exchange {
                code,
                verifier,
                redirect_uri,
                reply,
            } => {
                let result = self.exchange(&code, &verifier, &redirect_uri).await;
                if result.is_err() {
                    self.end_authorizing();
                }
                let _ = reply.send(result);
            }
            Command::Install { set, covers, reply } => {
                let result = self.install_grant(*set, covers).await;
                let _ = reply.send(result);
            }
            Command::Uncover { id, reply } => {
                let serving = self.uncover(&id).await;
                let _ = reply.send(serving);
            }
            Command::Disconnect {
                notify_provider,
                reason,
                reply,
            } => {
                let report = self.disconnect(notify_provider, &reason).await;
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
            Command::Migrate { reply } => {
                let _ = reply.send(self.migrate().await);
            }
        }
    }

    /// Back from `authorizing` to the state before it, if the flow did not connect.
    pub(super) fn end_authorizing(&mut self) {
        if let Some((_, previous)) = self.authorizing.take()
            && self.connection.cell.load().state == ConnState::Authorizing
        {
            self.publish_with(|s| s.state = previous);
        }
    }

    /// Redeems an authorization code under the store lock, then installs the tokens as a
    /// generation newer than anything stored.
    async fn exchange(
        &mut self,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<u64, String> {
        let Some(endpoint) = self.endpoint.clone() else {
            let reason = self.connection.cell.load().last_error.clone();
            return Err(reason.unwrap_or_else(|| "client credentials are unavailable".into()));
        };
        let (lock, stored_generation) = self.lock_for_new_grant().await?;
        let started = Instant::now();
        let request = GrantRequest::code(self.delivers_keys(), code, verifier, redirect_uri);
        let result = endpoint.request(request, &[]).await;
        let outcome = result
            .as_ref()
            .map_or_else(TokenFailure::outcome, |_| Outcome::Ok);
        self.connection
            .metrics
            .refresh(Trigger::Connect, outcome, started.elapsed());
        let set = result.map_err(|failure| failure.to_string())?;
        let covers = self.covers.clone();
        if self.delivers_keys() {
            return self
                .take_delivered_key(set, covers, lock, stored_generation)
                .await;
        }
        self.take_grant(set, covers, lock, stored_generation).await
    }

    /// A tenant's install: tokens (or, for an app with `grant = "api_key"`, a delivered key)
    /// the install flow already got (it had to read them to learn the tenant), installed as
    /// a new grant serving `covers`.
    pub(super) async fn install_grant(
        &mut self,
        set: TokenSet,
        covers: Vec<String>,
    ) -> Result<u64, String> {
        let (lock, stored_generation) = self.lock_for_new_grant().await?;
        self.connection
            .metrics
            .refresh(Trigger::Connect, Outcome::Ok, std::time::Duration::ZERO);
        if self.delivers_keys() {
            return self
                .take_delivered_key(set, covers, lock, stored_generation)
                .await;
        }
        self.take_grant(set, covers, lock, stored_generation).await
    }

    /// The store lock and the stored generation, before a new grant replaces whatever is
    /// stored.
    async fn lock_for_new_grant(&mut self) -> Result<(Option<Box<dyn StoreLock>>, u64), String> {
        let Some(store) = self.store.clone() else {
            return Ok((None, 0));
        };
        let name = self.connection.name.clone();
        let lock = store
            .lock(&name, self.lock_wait)
            .await
            .map_err(|e| format!("token store lock: {e}"))?;
        let stored = store
            .load(&name)
            .await
            .map_err(|e| format!("token store: {e}"))?
            .map_or(0, |r| r.generation);
        Ok((Some(lock), stored))
    }

    /// Makes `set` the grant: persisted first, then swapped in, as a generation newer than
    /// anything stored or held.
    async fn take_grant(
        &mut self,
        set: TokenSet,
        covers: Vec<String>,
        lock: Option<Box<dyn StoreLock>>,
        stored_generation: u64,
    ) -> Result<u64, String> {
        self.grant = match &set.refresh_token {
            Some(token) => Grant::RefreshToken(token.clone()),
            None => Grant::None,
        };
        // A new grant: nothing lost earlier can explain a rejection of it.
        self.answer_lost = false;
        if set.refresh_token.is_none() {
            tracing::warn!(
                connection = %self.connection.name,
                "the provider issued no refresh token: the connection lasts until the token expires"
            );
        }
        self.set_covers(covers);
        let generation = stored_generation.max(self.connection.cell.load().generation) + 1;
        self.authorizing = None;
        if self.install(set, lock, generation).await {
            Ok(generation)
        } else {
            Err("the new tokens could not be saved".into())
        }
    }

    /// A group grant stops serving `id` (a confirmed uninstall of one property): saved, and
    /// routed no more. False if `id` was its last: the caller disconnects the tenant.
    pub(super) async fn uncover(&mut self, id: &str) -> bool {
        let remaining: Vec<String> = self.covers.iter().filter(|c| *c != id).cloned().collect();
        if remaining.is_empty() {
            return false;
        }
        if remaining.len() == self.covers.len() {
            return true;
        }
        if let Some(store) = self.store.clone() {
            let name = self.connection.name.clone();
            let saved = async {
                let _lock = store.lock(&name, self.lock_wait).await?;
                match store.load(&name).await? {
                    Some(mut record) => {
                        record.covers = remaining.clone();
                        record.updated_at = SystemTime::now();
                        store.save(&record).await
                    }
                    None => Ok(()),
                }
            };
            if let Err(error) = saved.await {
                tracing::warn!(connection = %name, %error, "could not save the properties a grant serves");
            }
        }
        tracing::info!(connection = %self.connection.name, property = id, "the grant no longer serves a property");
        self.set_covers(remaining);
        true
    }

    /// Tells the provider (best effort), then deletes the tokens locally, always.
    async fn disconnect(&mut self, notify_provider: bool, reason: &str) -> DisconnectReport {
        let mut report = DisconnectReport::default();
        if notify_provider {
            match self.notify_provider().await {
                Ok(()) => report.provider_notified = true,
                Err(error) => {
                    tracing::warn!(connection = %self.connection.name, %error, "could not tell the provider about the disconnect");
                    report.provider_error = Some(error);
                }
            }
        }
        let generation = self.connection.cell.load().generation + 1;
        if let Some(store) = self.store.clone() {
            let name = self.connection.name.clone();
            let record = Record {
                connection: name.clone(),
                generation,
                access_token: None,
                expires_at: None,
                refresh_token: None,
                scope: None,
                state: ConnState::Disconnected.as_str().to_owned(),
                updated_at: SystemTime::now(),
                credential: Credential::Token,
                last_used_at: None,
                covers: self.covers.clone(),
            };
            let saved = match store.lock(&name, self.lock_wait).await {
                Ok(_lock) => store.save(&record).await,
                Err(error) => Err(error),
            };
            if let Err(error) = saved {
                report.store_error = Some(error.to_string());
            }
        }
        if !matches!(self.grant, Grant::ClientCredentials) {
            self.grant = Grant::None;
        }
        self.authorizing = None;
        self.next_refresh = None;
        self.retry_trigger = None;
        tracing::info!(connection = %self.connection.name, reason, "disconnected");
        let note = match &report.provider_error {
            Some(error) => format!("{reason} (the provider was not told: {error})"),
            None => reason.to_owned(),
        };
        self.publish_with(|s| {
            s.generation = generation;
            s.state = ConnState::Disconnected;
            s.bearer = None;
            s.expires_at = None;
            s.expires_at_wall = None;
            s.retry_at = None;
            s.last_error = Some(note);
        });
        report
    }

    async fn notify_provider(&self) -> Result<(), String> {
        let Some(endpoint) = &self.endpoint else {
            return Err("client credentials are unavailable".into());
        };
        match &*self.revocation {
            Revocation::Rfc7009(url) => match &self.grant {
                Grant::RefreshToken(token) => endpoint.revoke(url, token, "refresh_token").await,
                _ => Err("no refresh token to revoke".into()),
            },
            Revocation::CloudbedsAppState(url) => {
                let current = self.connection.cell.load_full();
                match current.usable(Instant::now()) {
                    Some(token) => endpoint.disable_app_state(url, &token).await,
                    None => Err("no valid access token to call postAppState with".into()),
                }
            }
            Revocation::None => Err("the provider has no revocation endpoint".into()),
        }
    }
}
