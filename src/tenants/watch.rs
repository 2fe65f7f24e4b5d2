//! One watcher per app keeps its tenants in step with the store: tenants installed or
//! changed by another process or replica are created here or told to re-read their record.
//! Postgres `NOTIFY` says at once which record changed; a listing of the app's records
//! (every `poll_interval`: 2 s for the file store, 10 s for postgres) catches the rest, and
//! only records whose stamp changed wake their tenant.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::Tenants;
use crate::serve::stopped;
use crate::store::TokenStore;

/// Loads every stored tenant of the app, then follows the store until shutdown.
pub async fn run(
    tenants: Arc<Tenants>,
    store: Arc<dyn TokenStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = store.changes();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut poll = tokio::time::interval(store.poll_interval());
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = poll.tick() => sync(&tenants, &*store, &mut seen).await,
            changed = next(&mut changes) => match changed {
                Some(name) => {
                    if let Some(id) = tenants.tenant_of(&name) {
                        match tenants.get(id) {
                            Some((connection, _)) => connection.stored_changed(),
                            None => {
                                tenants.get_or_create(id);
                            }
                        }
                    }
                }
                // Notifications were missed: list now.
                None => sync(&tenants, &*store, &mut seen).await,
            },
        }
    }
}

/// Creates tenants the store has and this process does not, and wakes those whose record
/// changed since the last listing.
async fn sync(tenants: &Tenants, store: &dyn TokenStore, seen: &mut HashMap<String, u64>) {
    let listed = match store.tenants(&tenants.app).await {
        Ok(listed) => listed,
        Err(error) => {
            tracing::warn!(connection = %tenants.app, %error, "cannot list the app's tenants in the store");
            return;
        }
    };
    let first = seen.is_empty();
    let mut new = Vec::new();
    for (id, stamp) in listed {
        let changed = seen.insert(id.clone(), stamp) != Some(stamp);
        match tenants.get(&id) {
            Some((connection, _)) if changed && !first => connection.stored_changed(),
            Some(_) => {}
            None => new.push(id),
        }
    }
    if !new.is_empty() {
        let count = new.len();
        tenants.get_or_create_many(new);
        tracing::info!(connection = %tenants.app, tenants = count, "tenants loaded from the store");
    }
}

async fn next(changes: &mut Option<broadcast::Receiver<String>>) -> Option<String> {
    let Some(receiver) = changes else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(name) => Some(name),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *changes = None;
            None
        }
    }
}
