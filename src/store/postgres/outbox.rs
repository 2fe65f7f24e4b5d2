//! The outbox in postgres: one row per event in `bearerd_outbox`. A claim sets a lease on
//! rows that are due and not leased, skipping rows another replica is claiming right now
//! (`FOR UPDATE SKIP LOCKED`), so each event goes out from one replica at a time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{OP_WAIT, PgStore, db_error};
use crate::store::StoreError;
use crate::store::outbox::{KEEP_SETTLED, LEASE, OutboxEntry};

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) async fn put(store: &PgStore, entry: &OutboxEntry) -> Result<(), StoreError> {
    store.ensure_schema().await?;
    let client = store.client(OP_WAIT).await?;
    client
        .execute(
            "INSERT INTO bearerd_outbox (id, body, created_at, attempts, next_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            &[
                &entry.id,
                &entry.body,
                &at(entry.created_at),
                &i32::try_from(entry.attempts).unwrap_or(i32::MAX),
                &at(entry.next_at),
            ],
        )
        .await
        .map_err(db_error("outbox put"))?;
    Ok(())
}

pub(super) async fn claim(
    store: &PgStore,
    now: u64,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    store.ensure_schema().await?;
    let client = store.client(OP_WAIT).await?;
    let lease = at(now) + LEASE;
    client
        .execute(
            "DELETE FROM bearerd_outbox WHERE settled_at < $1",
            &[&(at(now) - KEEP_SETTLED)],
        )
        .await
        .map_err(db_error("outbox claim"))?;
    let rows = client
        .query(
            "UPDATE bearerd_outbox SET lease_until = $2 WHERE id IN ( \
                 SELECT id FROM bearerd_outbox \
                 WHERE settled_at IS NULL AND next_at <= $1 \
                   AND (lease_until IS NULL OR lease_until <= $1) \
                 ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, body, created_at, attempts, next_at",
            &[&at(now), &lease, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(db_error("outbox claim"))?;
    let error = db_error("outbox claim");
    let mut entries = rows
        .iter()
        .map(|row| {
            Ok(OutboxEntry {
                id: row.try_get(0)?,
                body: row.try_get(1)?,
                created_at: ms(row.try_get(2)?),
                attempts: u32::try_from(row.try_get::<_, i32>(3)?).unwrap_or(0),
                next_at: ms(row.try_get(4)?),
                lease_until: Some(ms(lease)),
                settled_at: None,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(&error)?;
    entries.sort_by_key(|e| (e.created_at, e.id.clone()));
    Ok(entries)
}

pub(super) async fn update(store: &PgStore, entry: &OutboxEntry) -> Result<(), StoreError> {
    let client = store.client(OP_WAIT).await?;
    client
        .execute(
            "UPDATE bearerd_outbox SET attempts = $2, next_at = $3, settled_at = $4, \
             lease_until = NULL WHERE id = $1",
            &[
                &entry.id,
                &i32::try_from(entry.attempts).unwrap_or(i32::MAX),
                &at(entry.next_at),
                &entry.settled_at.map(at),
            ],
        )
        .await
        .map_err(db_error("outbox update"))?;
    Ok(())
}
