//! Replicas announce themselves: each upserts its row in `bearerd_replicas` every
//! [`HEARTBEAT`] and reads which replicas were seen within [`LIVE_WITHIN`]. A replica that
//! stops (or is killed) drops out of every other's count within `LIVE_WITHIN` plus one
//! heartbeat; a clean stop deletes its row at once. The rate limiter splits its budget by the
//! answer ([`crate::ratelimit::share`]).

use std::time::Duration;

use super::{OP_WAIT, PgStore, db_error};
use crate::store::StoreError;

/// How often a replica announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica not seen for this long is gone. Three heartbeats: one slow round trip does not
/// make a live replica vanish, and a dead one is out of the count within about 4 s.
pub const LIVE_WITHIN: Duration = Duration::from_secs(3);

/// This replica's place among the live ones: `(index, live)`, index by replica id order.
pub(super) async fn heartbeat(
    store: &PgStore,
    replica: &str,
) -> Result<(usize, usize), StoreError> {
    store.ensure_schema().await?;
    let client = store.client(OP_WAIT).await?;
    let error = db_error("heartbeat");
    let live_within = LIVE_WITHIN.as_secs_f64();
    client
        .execute(
            "INSERT INTO bearerd_replicas (id, seen_at) VALUES ($1, now()) \
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
            &[&replica],
        )
        .await
        .map_err(&error)?;
    // Rows of replicas long gone are cleaned up by whoever is alive.
    client
        .execute(
            "DELETE FROM bearerd_replicas WHERE seen_at < now() - interval '1 hour'",
            &[],
        )
        .await
        .map_err(&error)?;
    let rows = client
        .query(
            "SELECT id FROM bearerd_replicas \
             WHERE seen_at > now() - make_interval(secs => $1) ORDER BY id",
            &[&live_within],
        )
        .await
        .map_err(&error)?;
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<_, _>>()
        .map_err(&error)?;
    let index = ids.iter().position(|id| id == replica).unwrap_or(0);
    Ok((index, ids.len().max(1)))
}

/// Removes this replica's row: the others take its share at their next heartbeat.
pub(super) async fn leave(store: &PgStore, replica: &str) -> Result<(), StoreError> {
    let client = store.client(OP_WAIT).await?;
    client
        .execute("DELETE FROM bearerd_replicas WHERE id = $1", &[&replica])
        .await
        .map_err(db_error("leave"))?;
    Ok(())
}
