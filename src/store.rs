//! Token persistence (SPEC section 6). A [`TokenStore`] keeps one [`Record`] per
//! connection and a lock per connection that is held for a whole refresh, so that across
//! processes (and replicas) at most one redeems a refresh token; after taking the lock the
//! refresher re-reads the record and adopts a newer generation instead of redeeming.
//!
//! [`file`] is the embedded store, [`postgres`] the one shared by replicas; [`seal`] encrypts
//! the token fields of both when `store.key` is set. [`open`] builds the configured one.

pub mod file;
pub mod flows;
pub mod outbox;
pub mod postgres;
pub mod seal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::{StoreConfig, StoreKind};
use crate::metrics::Metrics;
use crate::secret::SecretString;
pub use outbox::OutboxEntry;
use seal::{KeyError, OpenError, Sealer};

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
    #[error(
        "the record of connection {connection} cannot be decrypted with store.key (written with another key?); it is left unchanged"
    )]
    WrongKey { connection: String },
    #[error("the record of connection {connection} is encrypted, but store.key is not set")]
    KeyMissing { connection: String },
    #[error("store.key: {0}")]
    Key(#[from] KeyError),
    /// A database error: the operation and the server's message, never a parameter value.
    #[error("postgres {op}: {reason}")]
    Database { op: &'static str, reason: String },
    #[error(
        "generation {attempted} of connection {connection} was not saved: another process stored generation {stored} after this one lost its lock"
    )]
    Superseded {
        connection: String,
        stored: u64,
        attempted: u64,
    },
}

impl StoreError {
    /// A field of `connection`'s record at `location` that did not open under the key.
    pub(crate) fn unsealing(error: OpenError, connection: &str, location: &str) -> Self {
        match error {
            OpenError::WrongKey => Self::WrongKey {
                connection: connection.to_owned(),
            },
            OpenError::NoKey => Self::KeyMissing {
                connection: connection.to_owned(),
            },
            OpenError::Malformed => Self::Corrupt {
                path: location.to_owned(),
                reason: "a token field is not a valid `enc:v1:` value".to_owned(),
            },
        }
    }
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
    /// What `access_token` holds: a bearer token, or an API key that must never be
    /// refreshed (SPEC section 10).
    pub credential: Credential,
    /// An API key's last known use (written now and then, not per request).
    pub last_used_at: Option<SystemTime>,
    /// A tenant's record (`NAME/TENANT`): the tenant ids its grant serves (a Cloudbeds group
    /// grant covers several properties). Empty: just the tenant's own id.
    pub covers: Vec<String>,
}

/// The kind of credential a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credential {
    /// OAuth tokens: an access token, maybe a refresh token.
    #[default]
    Token,
    /// A long-lived API key in `access_token`; no refresh token; never refreshed.
    ApiKey,
}

impl Credential {
    /// As stored: absent for tokens (records written before keys existed), `"api_key"`.
    pub fn stored(self) -> Option<&'static str> {
        match self {
            Self::Token => None,
            Self::ApiKey => Some("api_key"),
        }
    }

    fn from_stored(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("token") => Ok(Self::Token),
            Some("api_key") => Ok(Self::ApiKey),
            Some(other) => Err(format!("unknown credential kind `{other}`")),
        }
    }
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
    /// How often the refresher should look for records written by other processes.
    fn poll_interval(&self) -> Duration;
    /// Names of connections whose record another process changed, as soon as the store
    /// learns of it (postgres `LISTEN`); `None` if the store only supports polling.
    fn changes(&self) -> Option<broadcast::Receiver<String>> {
        None
    }
    /// Whether replicas share this store (and so its rate-limit budgets): their limiters
    /// hold back until [`TokenStore::heartbeat`] places them.
    fn has_replicas(&self) -> bool {
        false
    }
    /// Announces this replica (`replica` is its id) to the others sharing the store and
    /// returns `(index, live)`: its place in an order every replica agrees on and how many are
    /// live. `None` if the store is not shared by replicas (the file store).
    fn heartbeat<'a>(
        &'a self,
        replica: &'a str,
    ) -> BoxFuture<'a, Result<Option<(usize, usize)>, StoreError>> {
        let _ = replica;
        Box::pin(async { Ok(None) })
    }
    /// Adds a notification to the outbox; an entry with the same id is left as it is (the
    /// same change seen by another replica).
    fn outbox_put<'a>(&'a self, entry: &'a OutboxEntry) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Claims up to `limit` entries due at `now` (Unix ms) for [`outbox::LEASE`].
    fn outbox_claim(
        &self,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxEntry>, StoreError>>;
    /// After an attempt: stores the entry's new schedule (releasing the lease), or that it
    /// is settled (`settled_at`: delivered or given up).
    fn outbox_update<'a>(&'a self, entry: &'a OutboxEntry)
    -> BoxFuture<'a, Result<(), StoreError>>;
    /// The tenant ids of app `app` that have a record (`app/ID`), in no set order, each
    /// with a stamp that changes whenever its record is written.
    fn tenants<'a>(&'a self, app: &'a str)
    -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>>;
    /// Keeps a connect flow for the other replicas (any may get its callback); true if it
    /// was kept. Stores that are not shared by replicas keep nothing (false): the flow lives
    /// in the process that started it.
    fn flow_put<'a>(
        &'a self,
        flow: &'a flows::FlowRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = flow;
        Box::pin(async { Ok(false) })
    }
    /// Takes (and deletes) the unexpired flow kept under `key`, if any; one caller gets it.
    fn flow_take<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<flows::FlowRecord>, StoreError>> {
        let _ = key;
        Box::pin(async { Ok(None) })
    }
    /// Withdraws this replica at a clean stop, so the others take its share at once.
    fn leave<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = replica;
        Box::pin(async { Ok(()) })
    }
}

/// The on-disk / in-row JSON shape (SPEC section 6).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// `"api_key"` for an API key (SPEC section 10); absent for OAuth tokens, so records
    /// written before keys existed load unchanged. A bearerd without key support refuses a
    /// key record (unknown field) instead of refreshing it, which would invalidate the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Unix seconds: an API key's last known use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<String>,
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
            credential: self.credential.stored().map(str::to_owned),
            last_used_at: self.last_used_at.map(crate::metrics::unix_seconds),
            covers: self.covers.clone(),
        }
    }

    /// The stored shape, token fields sealed under `sealer` if given.
    pub fn to_sealed_json(&self, sealer: Option<&Sealer>) -> RecordJson {
        let field = |name, value| seal::seal_field(sealer, &self.connection, name, value);
        RecordJson {
            access_token: field("access_token", self.access_token.as_ref()),
            refresh_token: field("refresh_token", self.refresh_token.as_ref()),
            ..self.to_json()
        }
    }

    /// Reads a stored shape for `connection`, opening sealed token fields.
    pub fn from_sealed_json(
        json: RecordJson,
        connection: &str,
        sealer: Option<&Sealer>,
    ) -> Result<Self, OpenOrInvalid> {
        let field = |name, value: &Option<String>| {
            seal::open_field(sealer, connection, name, value.as_deref())
        };
        let access_token = field("access_token", &json.access_token)?;
        let refresh_token = field("refresh_token", &json.refresh_token)?;
        let mut record = Self::from_json(RecordJson {
            access_token: None,
            refresh_token: None,
            ..json
        })
        .map_err(OpenOrInvalid::Invalid)?;
        record.access_token = access_token;
        record.refresh_token = refresh_token;
        Ok(record)
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
            credential: Credential::from_stored(json.credential.as_deref())?,
            last_used_at: json.last_used_at.map(at),
            covers: json.covers,
        })
    }
}

impl RecordJson {
    /// True if a token field is stored in plaintext (written before `store.key` was set).
    pub fn has_plaintext_token(&self) -> bool {
        [&self.access_token, &self.refresh_token]
            .into_iter()
            .flatten()
            .any(|value| !seal::is_sealed(value))
    }
}

/// Why a stored record could not be read.
#[derive(Debug)]
pub enum OpenOrInvalid {
    Open(OpenError),
    Invalid(String),
}

impl From<OpenError> for OpenOrInvalid {
    fn from(error: OpenError) -> Self {
        Self::Open(error)
    }
}

impl OpenOrInvalid {
    pub(crate) fn into_store_error(self, connection: &str, location: &str) -> StoreError {
        match self {
            Self::Open(error) => StoreError::unsealing(error, connection, location),
            Self::Invalid(reason) => StoreError::Corrupt {
                path: location.to_owned(),
                reason,
            },
        }
    }
}

/// The start-up check both stores run on each record: it must open under the key (else the
/// error names `store.key`; nothing is written), and a plaintext record is re-written sealed,
/// under the lock. True if it was re-written.
pub(crate) async fn check_and_reseal(
    store: &dyn TokenStore,
    sealer: Option<&Sealer>,
    name: &str,
    json: RecordJson,
    location: &str,
) -> Result<bool, StoreError> {
    let plaintext = json.has_plaintext_token();
    Record::from_sealed_json(json, name, sealer).map_err(|e| e.into_store_error(name, location))?;
    if sealer.is_none() || !plaintext {
        return Ok(false);
    }
    // A process refreshing right now seals the record with its own save anyway.
    let Ok(_lock) = store.lock(name, Duration::from_secs(5)).await else {
        return Ok(false);
    };
    match store.load(name).await? {
        Some(record) => store.save(&record).await.map(|()| true),
        None => Ok(false),
    }
}

/// How [`open`] behaves when the database cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The daemon: start anyway and keep trying in the background.
    RetryInBackground,
    /// A one-shot command (`bearerd import`): fail.
    Required,
}

/// Opens the configured store for the connections `names`: reads `store.key`, checks that
/// every stored record of those connections opens under it (a wrong key is an error here,
/// before anything is written) and re-writes plaintext records sealed.
pub async fn open(
    config: &StoreConfig,
    names: &[String],
    metrics: Option<Arc<Metrics>>,
    reach: Reach,
) -> Result<Arc<dyn TokenStore>, StoreError> {
    let sealer = match &config.key {
        Some(source) => Some(Arc::new(Sealer::from_source(source)?)),
        None => None,
    };
    match &config.kind {
        StoreKind::File { dir } => {
            let store = file::FileStore::open(dir, metrics)?.with_sealer(sealer);
            let migrated = store.check_records(names).await?;
            if migrated > 0 {
                tracing::info!(
                    records = migrated,
                    "re-wrote plaintext token records encrypted with store.key"
                );
            }
            Ok(Arc::new(store))
        }
        StoreKind::Postgres { url } => {
            let url = url.resolve().map_err(|reason| StoreError::Database {
                op: "store.url",
                reason,
            })?;
            let options = postgres::PgOptions {
                url,
                sealer,
                names: names.to_vec(),
                metrics,
            };
            let store = match reach {
                Reach::RetryInBackground => postgres::PgStore::start(options).await?,
                Reach::Required => postgres::PgStore::connect(options).await?,
            };
            Ok(store)
        }
    }
}

/// Stores a refresh token as a new generation without asking the provider (a running
/// bearerd redeems it). Refuses to replace a stored refresh token unless `force`. Tests seed
/// stores with it; `bearerd import` validates first ([`crate::token::import`]).
pub async fn import(
    store: &dyn TokenStore,
    connection: &str,
    refresh_token: SecretString,
    force: bool,
) -> Result<u64, ImportError> {
    let _lock = store.lock(connection, Duration::from_secs(30)).await?;
    let existing = store.load(connection).await?;
    if let Some(existing) = &existing
        && (existing.refresh_token.is_some() || existing.credential == Credential::ApiKey)
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
        credential: Credential::Token,
        last_used_at: None,
        covers: Vec::new(),
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
