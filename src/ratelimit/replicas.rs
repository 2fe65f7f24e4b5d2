//! Keeps each limiter's share of its budget current: every heartbeat, ask the store how many
//! replicas are live and where this one stands, and split every connection's `rps` by it.
//! A store without replicas (the file store) leaves every limiter its whole budget.

use std::sync::Arc;

use tokio::sync::watch;

use super::Limiter;
use crate::store::TokenStore;
use crate::store::postgres::replicas::HEARTBEAT;

/// One connection's limiter and the budget it splits.
pub struct Budget {
    pub rps: u32,
    pub limiter: Arc<Limiter>,
}

/// A replica id that is unique across restarts: the host (the pod's name in Kubernetes),
/// the process id, and a random part.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "bearerd".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        crate::connect::random_token(6)
    )
}

/// Runs until `shutdown`, then withdraws this replica so the others take its share.
pub async fn keep_shares(
    store: Arc<dyn TokenStore>,
    replica: String,
    budgets: Vec<Budget>,
    mut shutdown: watch::Receiver<bool>,
) {
    if budgets.is_empty() {
        return;
    }
    let mut last = None;
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::serve::stopped(&mut shutdown) => break,
        }
        match store.heartbeat(&replica).await {
            Ok(None) => return,
            Ok(Some(place)) => {
                if last != Some(place) {
                    let (index, live) = place;
                    tracing::info!(replica = %replica, index, live, "rate limits split across replicas");
                    for budget in &budgets {
                        budget.limiter.set_share(budget.rps, index, live);
                    }
                    last = Some(place);
                }
            }
            // Keep the last share: a store outage must not hand every replica the whole budget.
            Err(error) => {
                tracing::warn!(%error, "replica heartbeat failed; keeping the current rate-limit shares")
            }
        }
    }
    if let Err(error) = store.leave(&replica).await {
        tracing::warn!(%error, "could not withdraw this replica from the store");
    }
}
