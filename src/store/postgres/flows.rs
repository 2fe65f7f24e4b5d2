//! Shared connect flows in postgres ([`crate::store::flows`]): one row per flow in
//! `bearerd_flows`, deleted when taken (`DELETE ... RETURNING`: exactly one replica gets
//! it) or, once expired, by the next put.

use std::time::SystemTime;

use super::{OP_WAIT, PgStore, db_error};
use crate::store::StoreError;
use crate::store::flows::FlowRecord;
use crate::store::seal;

const FIELD: &str = "flow_verifier";

pub(super) async fn put(store: &PgStore, flow: &FlowRecord) -> Result<(), StoreError> {
    store.ensure_schema().await?;
    let client = store.client(OP_WAIT).await?;
    let now = SystemTime::now();
    client
        .execute("DELETE FROM bearerd_flows WHERE expires_at < $1", &[&now])
        .await
        .map_err(db_error("flow put"))?;
    let verifier = seal::seal_field(
        store.sealer.as_deref(),
        &flow.key,
        FIELD,
        Some(&flow.verifier),
    );
    let (installing, tenant) = match &flow.install {
        Some(tenant) => (true, tenant.clone()),
        None => (false, None),
    };
    client
        .execute(
            "INSERT INTO bearerd_flows (key, connection, installing, tenant, verifier, \
             redirect_uri, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (key) DO NOTHING",
            &[
                &flow.key,
                &flow.connection,
                &installing,
                &tenant,
                &verifier,
                &flow.redirect_uri,
                &flow.expires_at,
            ],
        )
        .await
        .map_err(db_error("flow put"))?;
    Ok(())
}

pub(super) async fn take(store: &PgStore, key: &str) -> Result<Option<FlowRecord>, StoreError> {
    store.ensure_schema().await?;
    let client = store.client(OP_WAIT).await?;
    let row = client
        .query_opt(
            "DELETE FROM bearerd_flows WHERE key = $1 AND expires_at > $2 \
             RETURNING connection, installing, tenant, verifier, redirect_uri, expires_at",
            &[&key, &SystemTime::now()],
        )
        .await
        .map_err(db_error("flow take"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let error = db_error("flow take");
    let connection: String = row.try_get(0).map_err(&error)?;
    let installing: bool = row.try_get(1).map_err(&error)?;
    let tenant: Option<String> = row.try_get(2).map_err(&error)?;
    let sealed: String = row.try_get(3).map_err(&error)?;
    let verifier = seal::open_field(store.sealer.as_deref(), key, FIELD, Some(&sealed))
        .map_err(|e| StoreError::unsealing(e, &connection, "bearerd_flows"))?
        .ok_or_else(|| StoreError::Corrupt {
            path: "bearerd_flows".into(),
            reason: "a flow without its verifier".into(),
        })?;
    Ok(Some(FlowRecord {
        key: key.to_owned(),
        connection,
        install: installing.then_some(tenant),
        verifier,
        redirect_uri: row.try_get(4).map_err(&error)?,
        expires_at: row.try_get(5).map_err(&error)?,
    }))
}
