//! `GET /`: the HTML status page ([`pages::status`]) from each connection's snapshot.

use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;
use tokio::time::Instant;

use super::respond::{AdminResponse, html};
use super::{Admin, AdminConnection};
use crate::connect::pages::{self, Expiry};
use crate::token::{ConnState, TokenState};

impl Admin {
    pub(super) fn status_page(&self, headers: &http::HeaderMap) -> AdminResponse {
        if !self.guard.authorized(headers) {
            return self.guard.challenge();
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        let snapshots: Vec<Arc<TokenState>> = self
            .connections
            .iter()
            .map(|c| c.connection.snapshot())
            .collect();
        let rows: Vec<pages::Row<'_>> = self
            .connections
            .iter()
            .zip(&snapshots)
            .map(|(c, s)| row(c, s, now))
            .collect();
        html(StatusCode::OK, pages::status(&rows, &self.guard.csrf, wall))
    }
}

fn row<'a>(c: &'a AdminConnection, s: &'a TokenState, now: Instant) -> pages::Row<'a> {
    let token = match (s.has_valid_token(now), s.expires_at_wall) {
        (true, Some(at)) => Expiry::At(at),
        (true, None) => Expiry::Unknown,
        (false, Some(at)) => Expiry::Expired(at),
        (false, None) => Expiry::None,
    };
    pages::Row {
        name: &c.connection.name,
        provider: c.provider.as_str(),
        state: s.state,
        // Generation 0: no grant was ever stored or installed (a disconnect or a rejected
        // stored grant has a generation of its own).
        never_connected: s.generation == 0,
        listen: format!("http://{}", c.listen),
        upstream: &c.upstream,
        token,
        last_refresh: s.last_refresh,
        last_error: s.last_error.as_deref(),
        connectable: c.connect.is_some(),
        api_key: (super::migrate::credential(c, s) == "api_key")
            .then(|| super::migrate::last_used_at(c, s)),
        tenants: c.tenants.as_ref().map(|tenants| {
            let counts = tenants.counts();
            pages::AppTenants {
                counts: ConnState::ALL
                    .iter()
                    .map(|&state| (state, counts.get(state.as_str()).copied().unwrap_or(0)))
                    .collect(),
            }
        }),
    }
}
