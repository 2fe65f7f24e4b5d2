//! `bearerd import`: take over a refresh token an integration already holds, validating it
//! first (SPEC section 13). Under the store's lock: refuse to replace a usable stored grant
//! unless forced, redeem the given token at the token endpoint, and only if the provider
//! accepts it store the pair it returned as the next generation, so a running bearerd adopts
//! it (on its store poll, or at once with postgres `NOTIFY`). A rejected or unanswered token
//! leaves the store exactly as it was.

use std::time::{Duration, SystemTime};

use super::oauth::{GrantRequest, TokenEndpoint, TokenFailure};
use super::state::ConnState;
use crate::secret::SecretString;
use crate::store::{Credential, Record, StoreError, TokenStore};

/// Longest wait for the store lock (a running refresher holds it for one token request).
const LOCK_WAIT: Duration = Duration::from_secs(90);
/// Saves of an accepted pair tried before giving up: the given token is spent by then.
const SAVE_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "a usable grant is already stored (generation {0}); nothing was sent to the provider. \
         Use --force to redeem the given token and replace the stored grant if the provider \
         accepts it"
    )]
    GrantStored(u64),
    #[error("the provider did not accept the refresh token; nothing was stored: {0}")]
    Rejected(#[source] TokenFailure),
    #[error(
        "the token endpoint refused the client (check client_id, client_secret, client_auth \
         and scopes); nothing was stored: {0}"
    )]
    Misconfigured(#[source] TokenFailure),
    #[error(
        "the token endpoint could not validate the refresh token; nothing was stored, try \
         again: {0}"
    )]
    Unavailable(#[source] TokenFailure),
    #[error(
        "the provider accepted the refresh token, but its new tokens could not be saved \
         ({0}); the given token is likely spent: reconnect the connection"
    )]
    NotSaved(#[source] StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Redeems `refresh_token` at `endpoint` and stores the result for `connection`; returns the
/// generation written. Without `force`, a stored grant bearerd can still use is left alone
/// and the provider is not asked: with rotating refresh tokens, redeeming an older token of
/// the same grant can make the provider revoke the whole grant.
pub async fn import(
    store: &dyn TokenStore,
    endpoint: &TokenEndpoint,
    connection: &str,
    refresh_token: SecretString,
    force: bool,
) -> Result<u64, ImportError> {
    let _lock = store.lock(connection, LOCK_WAIT).await?;
    let existing = store.load(connection).await?;
    let stored_generation = existing.as_ref().map_or(0, |r| r.generation);
    if existing.as_ref().is_some_and(holds_usable_grant) && !force {
        return Err(ImportError::GrantStored(stored_generation));
    }
    let set = endpoint
        .request(GrantRequest::RefreshToken(&refresh_token), &[])
        .await
        .map_err(|failure| match failure {
            TokenFailure::Transient { .. } => ImportError::Unavailable(failure),
            TokenFailure::Rejected { .. } => ImportError::Rejected(failure),
            TokenFailure::Misconfigured { .. } => ImportError::Misconfigured(failure),
        })?;
    let wall = SystemTime::now();
    let record = Record {
        connection: connection.to_owned(),
        generation: stored_generation + 1,
        access_token: Some(set.access_token),
        expires_at: set.expires_in.map(|lifetime| wall + lifetime),
        // A response without a refresh token keeps the one redeemed (SPEC section 4).
        refresh_token: Some(set.refresh_token.unwrap_or(refresh_token)),
        scope: set.scope,
        state: ConnState::Connected.as_str().to_owned(),
        updated_at: wall,
        credential: Credential::Token,
        last_used_at: None,
        covers: Vec::new(),
    };
    save(store, &record).await?;
    Ok(record.generation)
}

/// Does the stored record carry a grant bearerd would still redeem, or a live API key (which
/// redeeming a refresh token of the same grant would invalidate)?
fn holds_usable_grant(record: &Record) -> bool {
    let dead = [ConnState::NeedsAuthorization, ConnState::Disconnected]
        .iter()
        .any(|s| s.as_str() == record.state);
    (record.refresh_token.is_some() || record.credential == Credential::ApiKey) && !dead
}

/// The provider has already rotated the given token, so a save that fails is retried a few
/// times before the import gives up.
async fn save(store: &dyn TokenStore, record: &Record) -> Result<(), ImportError> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match store.save(record).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= SAVE_ATTEMPTS => return Err(ImportError::NotSaved(error)),
            Err(error) => {
                tracing::warn!(%error, attempt, "cannot save the imported tokens; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}
