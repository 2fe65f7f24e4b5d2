//! The PostgreSQL store (`store.kind = "postgres"`), shared by every replica of a scaled
//! deployment: one row per connection in `bearerd_tokens`.
//!
//! - **Single flight across replicas.** [`TokenStore::lock`] takes a pooled session, begins
//!   a transaction and `SELECT ... FOR UPDATE`s the connection's row (inserting an empty
//!   row first if there is none). The transaction stays open inside the returned lock, so
//!   the row lock lives exactly as long as the session: a replica that dies (kill -9, lost
//!   network) releases it when its session ends, with no lease to expire.
//! - **The save of a refresh** is written *in that transaction* and commits it, with a
//!   `NOTIFY bearerd_tokens, '<name>'`: the token is durable before `save` returns, and the
//!   commit releases the row lock. Dropping a lock that saved nothing rolls it back. A save
//!   whose lock session was lost (database restarted mid-refresh) re-takes the row lock and
//!   writes only if no other replica stored a newer generation meanwhile
//!   ([`StoreError::Superseded`] otherwise): no refresh token is overwritten blindly.
//! - **Propagation.** A task per store `LISTEN`s on its own session and forwards names to
//!   [`TokenStore::changes`]; after every (re)connect it announces every configured name, so
//!   a notification missed while disconnected only delays a reload. Polling every 10 s
//!   stays as a fallback.
//! - **Faults.** An unreachable database at start is logged and retried in the background;
//!   each operation fails fast with an error the refresher treats as transient. The request
//!   path never touches the store, so a slow or exhausted pool cannot block a request.
//! - **Encryption.** With `store.key` the token columns hold `enc:v1:` values
//!   ([`super::seal`]); a row that does not open under the key is reported, never replaced.

mod flows;
mod listen;
mod lock;
mod outbox;
pub mod replicas;
mod schema;
pub use schema::VERSIONS as SCHEMA_VERSIONS;
mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use deadpool_postgres::{Runtime, Timeouts};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio_postgres::NoTls;

pub(crate) use session::describe;
use session::{Tls, client_config, db_error, pool_error};

use super::seal::Sealer;
use super::{BoxFuture, Record, RecordJson, StoreError, StoreLock, TokenStore};
use crate::metrics::{Metrics, unix_seconds};
use crate::secret::SecretString;

/// The notification channel (SPEC section 6).
pub const CHANNEL: &str = "bearerd_tokens";
/// How long a plain operation (load, delete, an unlocked save) waits for a pooled session.
const OP_WAIT: Duration = Duration::from_secs(10);

/// What [`PgStore`] is opened with.
pub struct PgOptions {
    /// `store.url`, resolved (it may hold a password).
    pub url: SecretString,
    pub sealer: Option<Arc<Sealer>>,
    /// The configured connections: checked at start, announced after a `LISTEN` reconnect.
    pub names: Vec<String>,
    pub metrics: Option<Arc<Metrics>>,
}

pub struct PgStore {
    pool: Pool,
    sealer: Option<Arc<Sealer>>,
    metrics: Option<Arc<Metrics>>,
    names: Vec<String>,
    held: lock::Held,
    changes: broadcast::Sender<String>,
    schema_ready: AtomicBool,
    migrating: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl PgStore {
    /// Connects, migrates and checks the records now; fails if the database is unreachable.
    pub async fn connect(options: PgOptions) -> Result<Arc<Self>, StoreError> {
        let store = Self::new(options)?;
        store.init().await?;
        Ok(store)
    }

    /// Like [`PgStore::connect`], but an unreachable database is logged and retried in the
    /// background instead of failing. A wrong `store.key` still fails.
    pub async fn start(options: PgOptions) -> Result<Arc<Self>, StoreError> {
        let store = Self::new(options)?;
        match store.init().await {
            Ok(()) => {}
            Err(error) if is_fatal(&error) => return Err(error),
            Err(error) => {
                tracing::error!(%error, "token store: PostgreSQL is not usable yet; starting without stored tokens and retrying in the background");
                let task = tokio::spawn(retry_init(Arc::downgrade(&store)));
                store.keep(task.abort_handle());
            }
        }
        Ok(store)
    }

    fn new(options: PgOptions) -> Result<Arc<Self>, StoreError> {
        let (config, tls) = client_config(&options.url)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Plain => Manager::from_config(config.clone(), NoTls, manager_config),
            Tls::Rustls(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
        };
        // One session per refresh in flight plus a few for reads; refreshes are rare.
        let size = (options.names.len() + 2).clamp(4, 16);
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database {
                op: "pool",
                reason: e.to_string(),
            })?;
        let (changes, _) = broadcast::channel(256);
        let store = Arc::new(Self {
            pool,
            sealer: options.sealer,
            metrics: options.metrics,
            names: options.names,
            held: lock::Held::default(),
            changes,
            schema_ready: AtomicBool::new(false),
            migrating: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
        });
        let listener = listen::spawn(config, tls, store.names.clone(), store.changes.clone());
        store.keep(listener.abort_handle());
        Ok(store)
    }

    fn keep(&self, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Migrates the schema, then checks every configured record against the key.
    async fn init(&self) -> Result<(), StoreError> {
        self.ensure_schema().await?;
        let migrated = self.check_records().await?;
        if migrated > 0 {
            tracing::info!(
                records = migrated,
                "re-wrote plaintext token records encrypted with store.key"
            );
        }
        Ok(())
    }

    async fn ensure_schema(&self) -> Result<(), StoreError> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one_at_a_time = self.migrating.lock().await;
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let client = self.client(OP_WAIT).await?;
        schema::migrate(client).await?;
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Fails on a record that does not open under the key; re-seals plaintext records.
    async fn check_records(&self) -> Result<usize, StoreError> {
        let mut migrated = 0;
        for name in &self.names {
            let Some(json) = self.load_json(name).await? else {
                continue;
            };
            let sealer = self.sealer.as_deref();
            if super::check_and_reseal(self, sealer, name, json, &row_location(name)).await? {
                migrated += 1;
            }
        }
        Ok(migrated)
    }

    /// A pooled session, waiting at most `wait` for one.
    async fn client(&self, wait: Duration) -> Result<Object, StoreError> {
        let timeouts = Timeouts {
            wait: Some(wait),
            create: Some(wait),
            recycle: Some(wait),
        };
        self.pool
            .timeout_get(&timeouts)
            .await
            .map_err(|e| pool_error(e, wait))
    }

    async fn load_json(&self, name: &str) -> Result<Option<RecordJson>, StoreError> {
        const LOAD: &str = "SELECT version, generation, access_token, expires_at, \
            refresh_token, scope, state, updated_at, covers, credential, last_used_at \
            FROM bearerd_tokens WHERE name = $1 AND state IS NOT NULL";
        self.ensure_schema().await?;
        // The re-read of a refresh runs in its lock's own transaction: one session per
        // refresh, not two. An app's `token_concurrency` refreshes could otherwise hold every
        // pooled session with their locks and leave their own re-reads waiting for one
        // (measured: at most 3 of 4 token requests at once, and refreshes failing after
        // OP_WAIT under three replicas' load). A lock whose transaction failed is skipped.
        let row = match lock::query_held(self, name, LOAD).await {
            Some(Ok(row)) => row,
            Some(Err(_)) | None => {
                let client = self.client(OP_WAIT).await?;
                client
                    .query_opt(LOAD, &[&name])
                    .await
                    .map_err(db_error("load"))?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: row_location(name),
            reason: reason.to_owned(),
        };
        let version: i32 = row.try_get(0).map_err(db_error("load"))?;
        let generation: i64 = row.try_get(1).map_err(db_error("load"))?;
        let expires_at: Option<SystemTime> = row.try_get(3).map_err(db_error("load"))?;
        let updated_at: SystemTime = row.try_get(7).map_err(db_error("load"))?;
        let last_used_at: Option<SystemTime> = row.try_get(10).map_err(db_error("load"))?;
        Ok(Some(RecordJson {
            version: u32::try_from(version).map_err(|_| corrupt("negative version"))?,
            connection: name.to_owned(),
            generation: u64::try_from(generation).map_err(|_| corrupt("negative generation"))?,
            access_token: row.try_get(2).map_err(db_error("load"))?,
            expires_at: expires_at.map(unix_seconds),
            refresh_token: row.try_get(4).map_err(db_error("load"))?,
            scope: row.try_get(5).map_err(db_error("load"))?,
            state: row.try_get(6).map_err(db_error("load"))?,
            updated_at: unix_seconds(updated_at),
            covers: row
                .try_get::<_, Option<String>>(8)
                .map_err(db_error("load"))?
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            credential: row.try_get(9).map_err(db_error("load"))?,
            last_used_at: last_used_at.map(unix_seconds),
        }))
    }

    fn count<T>(&self, op: &str, result: &Result<T, StoreError>) {
        if let Some(metrics) = &self.metrics {
            metrics.store_operation(op, result.is_ok());
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            task.abort();
        }
    }
}

impl TokenStore for PgStore {
    fn load<'a>(
        &'a self,
        connection: &'a str,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let result = match self.load_json(connection).await {
                Ok(Some(json)) => {
                    Record::from_sealed_json(json, connection, self.sealer.as_deref())
                        .map(Some)
                        .map_err(|e| e.into_store_error(connection, &row_location(connection)))
                }
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            };
            self.count("load", &result);
            result
        })
    }

    fn save<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let result = match self.ensure_schema().await {
                Ok(()) => lock::save(self, record).await,
                Err(error) => Err(error),
            };
            self.count("save", &result);
            result
        })
    }

    fn lock<'a>(
        &'a self,
        connection: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn StoreLock>, StoreError>> {
        Box::pin(async move {
            let result = match self.ensure_schema().await {
                Ok(()) => lock::acquire(self, connection, wait).await,
                Err(error) => Err(error),
            };
            self.count("lock", &result);
            result.map(|lock| Box::new(lock) as Box<dyn StoreLock>)
        })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn tenants<'a>(
        &'a self,
        app: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move {
            let result = async {
                self.ensure_schema().await?;
                let client = self.client(OP_WAIT).await?;
                let prefix = format!("{app}/");
                let rows = client
                    .query(
                        "SELECT name, generation, updated_at FROM bearerd_tokens \
                         WHERE state IS NOT NULL AND left(name, length($1)) = $1",
                        &[&prefix],
                    )
                    .await
                    .map_err(db_error("load"))?;
                let mut ids = Vec::with_capacity(rows.len());
                for row in rows {
                    let name: String = row.try_get(0).map_err(db_error("load"))?;
                    let generation: i64 = row.try_get(1).map_err(db_error("load"))?;
                    let updated: SystemTime = row.try_get(2).map_err(db_error("load"))?;
                    let micros = updated
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64);
                    let stamp = (generation as u64).rotate_left(40) ^ micros;
                    if let Some(id) = name.strip_prefix(&prefix) {
                        ids.push((id.to_owned(), stamp));
                    }
                }
                Ok(ids)
            }
            .await;
            self.count("load", &result);
            result
        })
    }

    fn flow_put<'a>(
        &'a self,
        flow: &'a crate::store::flows::FlowRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { flows::put(self, flow).await.map(|()| true) })
    }

    fn flow_take<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::store::flows::FlowRecord>, StoreError>> {
        Box::pin(async move { flows::take(self, key).await })
    }

    fn changes(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.changes.subscribe())
    }

    fn has_replicas(&self) -> bool {
        true
    }

    fn heartbeat<'a>(
        &'a self,
        replica: &'a str,
    ) -> BoxFuture<'a, Result<Option<(usize, usize)>, StoreError>> {
        Box::pin(async move { replicas::heartbeat(self, replica).await.map(Some) })
    }

    fn leave<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(replicas::leave(self, replica))
    }

    fn outbox_put<'a>(
        &'a self,
        entry: &'a crate::store::OutboxEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(outbox::put(self, entry))
    }

    fn outbox_claim(
        &self,
        now: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::store::OutboxEntry>, StoreError>> {
        Box::pin(outbox::claim(self, now, limit))
    }

    fn outbox_update<'a>(
        &'a self,
        entry: &'a crate::store::OutboxEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(outbox::update(self, entry))
    }
}

/// Keeps trying to migrate and check the records until it works or the store is dropped.
async fn retry_init(store: Weak<PgStore>) {
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::time::sleep(delay).await;
        let Some(store) = store.upgrade() else {
            return;
        };
        match store.init().await {
            Ok(()) => {
                tracing::info!("token store: PostgreSQL is reachable and migrated");
                return;
            }
            Err(error) if is_fatal(&error) => {
                tracing::error!(%error, "token store: records cannot be read with store.key; they are left unchanged");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_s = delay.as_secs_f64(), "token store: PostgreSQL is still not usable");
            }
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Errors that retrying cannot fix: a key that does not open the records.
fn is_fatal(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::WrongKey { .. } | StoreError::KeyMissing { .. } | StoreError::Key(_)
    )
}

/// How an error names a row.
fn row_location(name: &str) -> String {
    format!("bearerd_tokens row {name}")
}
