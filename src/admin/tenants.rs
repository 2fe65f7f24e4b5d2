//! An app's admin routes (SPEC section 9): the install flow (no admin token: hotel staff
//! open it from the Marketplace, and a grant comes only from their consent at the provider),
//! the tenant list (paged, filtered), one tenant's status, and refresh, disconnect and
//! reconnect of one tenant (the protection of section 7).

use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use super::respond::{AdminResponse, html, json_response, not_found, redirect};
use super::{Admin, AdminConnection};
use crate::connect::{Pending, tenant_pages};
use crate::scrub::scrub;
use crate::secret::SecretString;
use crate::tenants::list::{ListQuery, page};
use crate::tenants::{Tenants, valid_id};
use crate::token::{ConnState, Connection};

impl Admin {
    /// `GET /connections/NAME/install[?tenant=ID]`: starts the authorization-code flow for
    /// a new (or reinstalled) tenant.
    pub(super) async fn install(&self, c: &AdminConnection, query: Option<&str>) -> AdminResponse {
        let (Some(settings), Some(_)) = (&c.connect, &c.tenants) else {
            return html(
                StatusCode::CONFLICT,
                crate::connect::pages::problem(
                    "Cannot install",
                    "this connection is not an app with tenants, or its credentials are unavailable",
                ),
            );
        };
        let tenant = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "tenant")
            .map(|(_, v)| v.into_owned());
        if let Some(tenant) = &tenant
            && !valid_id(tenant)
        {
            return html(
                StatusCode::BAD_REQUEST,
                crate::connect::pages::problem(
                    "Cannot install",
                    "a tenant id is 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)",
                ),
            );
        }
        let url = self
            .flows
            .start_install(&c.connection.name, settings, tenant, Instant::now());
        self.share_flow(&url).await;
        redirect(StatusCode::FOUND, url.as_str())
    }

    /// The callback of an install: the tenant is learnt from the provider's answer; on
    /// success the browser is sent on to a page it can reload.
    pub(super) async fn finish_install(
        &self,
        c: &AdminConnection,
        tenants: &Arc<Tenants>,
        pending: Pending,
        code: SecretString,
        hint: Option<String>,
    ) -> AdminResponse {
        let result = tenants
            .install(
                &code,
                &pending.verifier,
                &pending.redirect_uri,
                hint.as_deref(),
            )
            .await;
        match result {
            Ok(installed) => redirect(
                StatusCode::SEE_OTHER,
                &format!(
                    "/connections/{}/installed?tenant={}",
                    c.connection.name, installed.id
                ),
            ),
            Err(error) => {
                let mut known = vec![code.secret(), pending.verifier.secret()];
                if let Some(secret) = &c.client_secret {
                    known.push(secret.secret());
                }
                html(
                    StatusCode::BAD_GATEWAY,
                    crate::connect::pages::problem("Not installed", &scrub(&error, &known)),
                )
            }
        }
    }

    /// The page after an install (`/connections/NAME/installed?tenant=ID`: one fixed path,
    /// so an ingress can expose it exactly); reloading it shows the tenant's state again.
    pub(super) fn installed(&self, c: &AdminConnection, query: Option<&str>) -> AdminResponse {
        let id = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "tenant")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let id = id.as_str();
        let Some((connection, covers)) = c.tenants.as_ref().and_then(|t| t.get(id)) else {
            return not_found();
        };
        let state = connection.snapshot().state;
        html(
            StatusCode::OK,
            tenant_pages::installed(&c.connection.name, id, &covers, state),
        )
    }

    /// `GET /connections/NAME/tenants...` (JSON).
    pub(super) fn tenant_list(&self, c: &AdminConnection, query: Option<&str>) -> AdminResponse {
        let Some(tenants) = &c.tenants else {
            return not_found();
        };
        let query = ListQuery::parse(query);
        let (page, next) = page(tenants, &query);
        json_response(
            StatusCode::OK,
            &json!({"tenants": page, "next_cursor": next}),
        )
    }

    pub(super) fn tenant(&self, c: &AdminConnection, id: &str) -> AdminResponse {
        match find(c, id) {
            Some((tenants, connection, covers)) => {
                json_response(StatusCode::OK, &tenants.describe(id, &connection, &covers))
            }
            None => not_found(),
        }
    }

    /// `POST .../tenants/ID/refresh`.
    pub(super) async fn refresh_tenant(
        &self,
        c: &AdminConnection,
        id: &str,
        from_page: bool,
    ) -> AdminResponse {
        let Some((tenants, connection, covers)) = find(c, id) else {
            return not_found();
        };
        let after = connection.refresh_now().await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, &tenants_page(c));
        }
        let status = if after.state == ConnState::Connected {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &tenants.describe(id, &connection, &covers))
    }

    /// `POST .../tenants/ID/disconnect`: as a connection's disconnect, for one tenant.
    pub(super) async fn disconnect_tenant(
        &self,
        c: &AdminConnection,
        id: &str,
        from_page: bool,
    ) -> AdminResponse {
        let Some((connection, _)) = c.tenants.as_ref().and_then(|t| t.get(id)) else {
            return not_found();
        };
        let response = self.disconnect_cell(c, &connection, from_page).await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, &tenants_page(c));
        }
        response
    }

    /// `GET .../tenants/ID/connect`: reconnect one tenant (an install naming it).
    pub(super) async fn connect_tenant(&self, c: &AdminConnection, id: &str) -> AdminResponse {
        if c.tenants.as_ref().and_then(|t| t.get(id)).is_none() {
            return not_found();
        }
        self.install(c, Some(&format!("tenant={id}"))).await
    }

    /// The HTML tenant table of an app (`GET /connections/NAME/page`).
    pub(super) fn tenant_page(&self, c: &AdminConnection, query: Option<&str>) -> AdminResponse {
        let Some(tenants) = &c.tenants else {
            return not_found();
        };
        let list = ListQuery::parse(query);
        let (rows, next) = page(tenants, &list);
        let counts = tenants.counts();
        html(
            StatusCode::OK,
            tenant_pages::table(
                &c.connection.name,
                &counts,
                &rows,
                &list,
                next.as_deref(),
                &self.guard.csrf,
                SystemTime::now(),
            ),
        )
    }
}

/// App `c`'s tenant `id`: the app's registry, the tenant's cell and the ids it serves.
pub(super) fn find<'c>(
    c: &'c AdminConnection,
    id: &str,
) -> Option<(&'c Arc<Tenants>, Arc<Connection>, Vec<String>)> {
    let tenants = c.tenants.as_ref()?;
    let (connection, covers) = tenants.get(id)?;
    Some((tenants, connection, covers))
}

pub(super) fn tenants_page(c: &AdminConnection) -> String {
    format!("/connections/{}/page", c.connection.name)
}
