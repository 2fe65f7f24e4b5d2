//! The row lock and the save that happens under it.
//!
//! [`acquire`] leaves a transaction open on a pooled session, holding `FOR UPDATE` on the
//! connection's row, and registers that session under the connection's name. [`save`] for
//! that name writes in the transaction and commits it (releasing the row lock with the
//! commit); dropping a [`PgLock`] that saved nothing rolls back. A `load` of that name
//! reads in the same transaction ([`query_held`]: the re-read after the lock, so a refresh
//! needs one session); the store's other operations use other sessions, and nothing waits
//! for a refresh's token request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Object;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use super::{CHANNEL, OP_WAIT, PgStore, db_error, row_location};
use crate::store::{Record, StoreError, StoreLock};

/// A session whose open transaction holds a row lock; `None` once committed or given up.
type Slot = Arc<tokio::sync::Mutex<Option<Object>>>;

/// The row locks this process holds, by connection name.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<Mutex<HashMap<String, (u64, Slot)>>>);

impl Held {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Slot)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, name: &str) -> Option<Slot> {
        self.map().get(name).map(|(_, slot)| Arc::clone(slot))
    }
}

/// Held while a refresh runs. The row lock ends with the session's transaction: at the
/// commit of a save, when this is dropped, or when the process dies.
pub(super) struct PgLock {
    name: String,
    id: u64,
    slot: Slot,
    held: Held,
}

impl StoreLock for PgLock {}

impl Drop for PgLock {
    fn drop(&mut self) {
        {
            let mut map = self.held.map();
            if map.get(&self.name).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&self.name);
            }
        }
        let slot = Arc::clone(&self.slot);
        match slot.try_lock().map(|mut guard| guard.take()) {
            Ok(Some(client)) => end_transaction(client),
            Ok(None) => {}
            Err(_) => {
                // A save is using the session right now; finish after it.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Some(client) = slot.lock().await.take() {
                            end_transaction(client);
                        }
                    });
                }
            }
        }
    }
}

/// Rolls back whatever transaction `client` has open and returns it to the pool; a session
/// that cannot roll back is closed instead (the server then drops its locks).
pub(super) fn end_transaction(client: Object) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    drop(Object::take(client));
                }
            });
        }
        Err(_) => drop(Object::take(client)),
    }
}

/// Takes the row lock of `name`, waiting up to `wait` (for a session and for the lock).
pub(super) async fn acquire(
    store: &PgStore,
    name: &str,
    wait: Duration,
) -> Result<PgLock, StoreError> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let deadline = Instant::now() + wait;
    let client = store.client(wait).await?;
    // Idle in a transaction longer than this means the holder is stuck or partitioned away
    // (a refresh holds the lock for one token request): the server ends the session, which
    // frees the row. The holder's save then takes the fenced path below.
    let idle_limit = (wait * 4).max(Duration::from_secs(120));
    for _ in 0..3 {
        client
            .execute(
                "INSERT INTO bearerd_tokens (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await
            .map_err(db_error("lock"))?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'; \
             SET LOCAL idle_in_transaction_session_timeout = '{}ms'",
            left.as_millis(),
            idle_limit.as_millis()
        );
        if let Err(error) = client.batch_execute(&begin).await {
            end_transaction(client);
            return Err(db_error("lock")(error));
        }
        let locked = client
            .query_opt(
                "SELECT generation FROM bearerd_tokens WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await;
        match locked {
            Ok(Some(_)) => {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let slot = Arc::new(tokio::sync::Mutex::new(Some(client)));
                let held = store.held.clone();
                held.map().insert(name.to_owned(), (id, Arc::clone(&slot)));
                return Ok(PgLock {
                    name: name.to_owned(),
                    id,
                    slot,
                    held,
                });
            }
            // Deleted between the insert and the lock: insert again.
            Ok(None) => {
                if let Err(error) = client.batch_execute("ROLLBACK").await {
                    drop(Object::take(client));
                    return Err(db_error("lock")(error));
                }
            }
            Err(error) => {
                let timed_out = error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE);
                end_transaction(client);
                return Err(if timed_out {
                    StoreError::LockTimeout(wait)
                } else {
                    db_error("lock")(error)
                });
            }
        }
    }
    end_transaction(client);
    Err(StoreError::Database {
        op: "lock",
        reason: format!("{} keeps being deleted", row_location(name)),
    })
}

/// Runs `query` (`$1`: the name, at most one row) in the transaction of this process's lock
/// on `name`; `None` if it holds none (or the lock's session is gone).
pub(super) async fn query_held(
    store: &PgStore,
    name: &str,
    query: &str,
) -> Option<Result<Option<tokio_postgres::Row>, tokio_postgres::Error>> {
    let slot = store.held.get(name)?;
    let guard = slot.lock().await;
    let client = guard.as_ref()?;
    Some(client.query_opt(query, &[&name]).await)
}

/// Whether a write may trust that this process holds the row lock since it last read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// In the lock's own transaction: the holder re-read under it and decides.
    Held,
    /// The lock was lost or never taken: refuse to replace a newer generation.
    Checked,
}

/// Writes `record` durably (committed, notified) before returning `Ok`.
pub(super) async fn save(store: &PgStore, record: &Record) -> Result<(), StoreError> {
    if let Some(slot) = store.held.get(&record.connection) {
        let mut guard = slot.lock().await;
        if let Some(client) = guard.take() {
            let result = write(store, &client, record, Fence::Held).await;
            if result.is_err() {
                end_transaction(client);
            }
            return result;
        }
    }
    let client = store.client(OP_WAIT).await?;
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms'",
        OP_WAIT.as_millis()
    );
    if let Err(error) = client.batch_execute(&begin).await {
        end_transaction(client);
        return Err(db_error("save")(error));
    }
    let result = write(store, &client, record, Fence::Checked).await;
    if result.is_err() {
        end_transaction(client);
    }
    result
}

/// The write itself, inside an open transaction on `client`; commits on success.
async fn write(
    store: &PgStore,
    client: &Object,
    record: &Record,
    fence: Fence,
) -> Result<(), StoreError> {
    let name = record.connection.as_str();
    let sealer = store.sealer.as_deref();
    if fence == Fence::Checked {
        client
            .execute(
                "INSERT INTO bearerd_tokens (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await
            .map_err(db_error("save"))?;
    }
    let row = client
        .query_one(
            "SELECT generation, access_token, refresh_token, state FROM bearerd_tokens \
             WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(db_error("save"))?;
    let state: Option<String> = row.try_get(3).map_err(db_error("save"))?;
    if state.is_some() {
        // Never replace tokens this key cannot read: that would lose a grant.
        let stored_refresh = {
            let field = |i: usize, field: &str| -> Result<_, StoreError> {
                let value: Option<String> = row.try_get(i).map_err(db_error("save"))?;
                crate::store::seal::open_field(sealer, name, field, value.as_deref())
                    .map_err(|e| StoreError::unsealing(e, name, &row_location(name)))
            };
            field(1, "access_token")?;
            field(2, "refresh_token")?
        };
        let stored: i64 = row.try_get(0).map_err(db_error("save"))?;
        let stored = u64::try_from(stored).unwrap_or_default();
        let competing = stored > record.generation
            || (stored == record.generation && stored_refresh != record.refresh_token);
        if fence == Fence::Checked && competing {
            return Err(StoreError::Superseded {
                connection: name.to_owned(),
                stored,
                attempted: record.generation,
            });
        }
    }
    let json = record.to_sealed_json(sealer);
    let generation = i64::try_from(record.generation).map_err(|_| StoreError::Corrupt {
        path: row_location(name),
        reason: "generation out of range".into(),
    })?;
    let version = i32::try_from(json.version).unwrap_or(1);
    let covers = (!record.covers.is_empty()).then(|| record.covers.join(","));
    client
        .execute(
            "UPDATE bearerd_tokens SET version = $2, generation = $3, access_token = $4, \
             expires_at = $5, refresh_token = $6, scope = $7, state = $8, updated_at = $9, \
             covers = $10, credential = $11, last_used_at = $12 WHERE name = $1",
            &[
                &name,
                &version,
                &generation,
                &json.access_token,
                &record.expires_at,
                &json.refresh_token,
                &record.scope,
                &record.state,
                &record.updated_at,
                &covers,
                &json.credential,
                &record.last_used_at,
            ],
        )
        .await
        .map_err(db_error("save"))?;
    // Delivered to every listener when the transaction commits, and only then.
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &name])
        .await
        .map_err(db_error("save"))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(db_error("save"))
}
