//! Token persistence (SPEC section 6). A [`TokenStore`] keeps one [`Record`] per
//! connection and a lock per connection that is held for a whole refresh, so that across
//! processes (and replicas) at most one redeems a refresh token; after taking the lock the
//! refresher re-reads the record and adopts a newer generation instead of redeeming.

pub mod file;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::token::SecretString;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store record {path} is not valid: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("timed out after {0:?} waiting for the store lock")]
    LockTimeout(Duration),
}

/// One connection's persisted tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub connection: String,
    pub generation: u64,
    pub access_token: Option<SecretString>,
    pub expires_at: Option<SystemTime>,
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
    /// The connection state when written (`connected`, `needs_authorization`, ...).
    pub state: String,
    pub updated_at: SystemTime,
}

/// Held while a refresh runs; dropping it releases the lock.
pub trait StoreLock: Send {}

/// Where token records live.
pub trait TokenStore: Send + Sync {
    /// The record of `connection`, if any.
    fn load<'a>(&'a self, connection: &'a str)
    -> BoxFuture<'a, Result<Option<Record>, StoreError>>;
    /// Durably writes `record` (it is on disk / committed when this returns `Ok`).
    fn save<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Takes the connection's cross-process lock, waiting up to `wait`.
    fn lock<'a>(
        &'a self,
        connection: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn StoreLock>, StoreError>>;
    /// Removes the record of `connection` (disconnect). Removing a missing record is `Ok`.
    fn delete<'a>(&'a self, connection: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// How often the refresher should look for records written by other processes.
    fn poll_interval(&self) -> Duration;
    /// Names of connections whose record another process changed, as soon as the store
    /// learns of it (postgres `LISTEN`); `None` if the store only supports polling.
    fn changes(&self) -> Option<broadcast::Receiver<String>> {
        None
    }
}

/// The on-disk / in-row JSON shape (SPEC section 6).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordJson {
    pub version: u32,
    pub connection: String,
    pub generation: u64,
    pub access_token: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub state: String,
    /// Unix seconds.
    pub updated_at: u64,
}

impl Record {
    pub fn to_json(&self) -> RecordJson {
        RecordJson {
            version: 1,
            connection: self.connection.clone(),
            generation: self.generation,
            access_token: self.access_token.as_ref().map(|t| t.secret().to_owned()),
            expires_at: self.expires_at.map(crate::metrics::unix_seconds),
            refresh_token: self.refresh_token.as_ref().map(|t| t.secret().to_owned()),
            scope: self.scope.clone(),
            state: self.state.clone(),
            updated_at: crate::metrics::unix_seconds(self.updated_at),
        }
    }

    pub fn from_json(json: RecordJson) -> Result<Self, String> {
        if json.version != 1 {
            return Err(format!("unsupported record version {}", json.version));
        }
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        Ok(Self {
            connection: json.connection,
            generation: json.generation,
            access_token: json.access_token.map(SecretString::new),
            expires_at: json.expires_at.map(at),
            refresh_token: json.refresh_token.map(SecretString::new),
            scope: json.scope,
            state: json.state,
            updated_at: at(json.updated_at),
        })
    }
}

/// `bearerd import`: store a refresh token an integration already holds, as a new
/// generation. Refuses to replace a stored refresh token unless `force`.
pub async fn import(
    store: &dyn TokenStore,
    connection: &str,
    refresh_token: SecretString,
    force: bool,
) -> Result<u64, ImportError> {
    let _lock = store.lock(connection, Duration::from_secs(30)).await?;
    let existing = store.load(connection).await?;
    if let Some(existing) = &existing
        && existing.refresh_token.is_some()
        && existing.state != "needs_authorization"
        && !force
    {
        return Err(ImportError::Newer(existing.generation));
    }
    let generation = existing.map_or(0, |r| r.generation) + 1;
    let record = Record {
        connection: connection.to_owned(),
        generation,
        access_token: None,
        expires_at: None,
        refresh_token: Some(refresh_token),
        scope: None,
        state: "connected".to_owned(),
        updated_at: SystemTime::now(),
    };
    store.save(&record).await?;
    Ok(generation)
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "a refresh token is already stored (generation {0}); it is likely newer than the one given. Use --force to replace it"
    )]
    Newer(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}
