//! Schema migrations, run at start by every replica. Versioned (`bearerd_schema`), each
//! applied once, in one transaction under `pg_advisory_xact_lock`, so replicas that start
//! together queue up: the first migrates, the others find the work done.
//!
//! Migrations only ever add: a replica still running an older version keeps working while
//! a newer one rolls out, and an older binary that meets a newer schema only warns.

use deadpool_postgres::Object;

use super::{db_error, lock::end_transaction};
use crate::store::StoreError;

/// Any fixed 64-bit number: the advisory lock that serializes migrations ("bearerd1").
const MIGRATION_LOCK: i64 = 0x6265_6172_6572_6431;

/// `(version, SQL)`, in order. Never edit a released entry; add a new one.
/// How many schema migrations this build knows (the newest version).
pub const VERSIONS: usize = MIGRATIONS.len();

const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
    "CREATE TABLE bearerd_tokens (
        name          text PRIMARY KEY,
        version       integer NOT NULL DEFAULT 1,
        generation    bigint NOT NULL DEFAULT 0 CHECK (generation >= 0),
        access_token  text,
        expires_at    timestamptz,
        refresh_token text,
        scope         text,
        -- NULL: no record yet; the row exists only so that it can be locked.
        state         text,
        updated_at    timestamptz NOT NULL DEFAULT now()
    );
    COMMENT ON TABLE bearerd_tokens IS
        'bearerd token records, one per connection; token columns are enc:v1: values when store.key is set';",
    ),
    (
        2,
        "CREATE TABLE bearerd_replicas (
        id      text PRIMARY KEY,
        seen_at timestamptz NOT NULL DEFAULT now()
    );
    COMMENT ON TABLE bearerd_replicas IS
        'bearerd replicas sharing this store, by heartbeat; they split upstream rate limits';",
    ),
    (
        3,
        "CREATE TABLE bearerd_outbox (
        id          text PRIMARY KEY,
        body        text NOT NULL,
        created_at  timestamptz NOT NULL,
        attempts    integer NOT NULL DEFAULT 0,
        next_at     timestamptz NOT NULL,
        lease_until timestamptz,
        settled_at  timestamptz
    );
    CREATE INDEX bearerd_outbox_due ON bearerd_outbox (next_at);
    COMMENT ON TABLE bearerd_outbox IS
        'bearerd notifications waiting for delivery (no tokens in them)';",
    ),
    (
        4,
        "ALTER TABLE bearerd_tokens ADD COLUMN covers text;
    COMMENT ON COLUMN bearerd_tokens.covers IS
        'a tenant''s record (app/tenant): the tenant ids its grant serves, comma-separated';",
    ),
    (
        5,
        "CREATE TABLE bearerd_flows (
        key          text PRIMARY KEY,
        connection   text NOT NULL,
        installing   boolean NOT NULL,
        tenant       text,
        verifier     text NOT NULL,
        redirect_uri text NOT NULL,
        expires_at   timestamptz NOT NULL
    );
    COMMENT ON TABLE bearerd_flows IS
        'bearerd connect flows between redirect and callback, by SHA-256 of their state, for any replica to finish';",
    ),
    (
        6,
        "ALTER TABLE bearerd_tokens
        ADD COLUMN credential   text,
        ADD COLUMN last_used_at timestamptz;
    COMMENT ON COLUMN bearerd_tokens.credential IS
        'NULL: OAuth tokens; api_key: access_token holds an API key that is never refreshed';",
    ),
];

/// Brings the schema to the newest version this build knows. Returns that version.
pub(super) async fn migrate(client: Object) -> Result<i32, StoreError> {
    let result = run(&client).await;
    match &result {
        Ok(_) => {}
        Err(_) => end_transaction(client),
    }
    result
}

async fn run(client: &Object) -> Result<i32, StoreError> {
    let error = db_error("migrate");
    client.batch_execute("BEGIN").await.map_err(&error)?;
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&error)?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bearerd_schema (
                version    integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(&error)?;
    let current: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM bearerd_schema", &[])
        .await
        .map_err(&error)?
        .try_get(0)
        .map_err(&error)?;
    let latest = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        client.batch_execute(sql).await.map_err(&error)?;
        client
            .execute(
                "INSERT INTO bearerd_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(&error)?;
        tracing::info!(version, "token store: applied schema migration");
    }
    client.batch_execute("COMMIT").await.map_err(&error)?;
    if current > latest {
        tracing::warn!(
            schema = current,
            known = latest,
            "token store: the database schema is newer than this bearerd; continuing (migrations only add)"
        );
    }
    Ok(current.max(latest))
}
