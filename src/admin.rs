//! The admin listener (SPEC section 7): health, readiness, metrics, connection status, the
//! status page, the connect flow, disconnect, manual refresh and provider webhooks.
//! Answers never contain a token.

mod auth;
mod flow;
mod host;
mod migrate;
mod respond;
mod status_page;
mod tenants;
mod webhook;
mod wiring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use auth::Guard;
pub use host::Hosts;
use respond::{AdminResponse, html, json_response, not_found, problem, redirect, text};

use crate::config::{GrantKind, Provider};
use crate::connect::webhook::confirm::AppStateCheck;
use crate::connect::{ConnectFlows, ConnectSettings, pages};
use crate::metrics::Metrics;
use crate::secret::SecretString;
use crate::serve::ClientBody;
use crate::tenants::Tenants;
use crate::token::{ConnState, Connection, TokenState};
use crate::upstream::HttpClient;

/// Admin request bodies (forms, webhooks) are small.
const MAX_BODY: usize = 64 * 1024;

/// What the admin listener serves from.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub connections: Vec<AdminConnection>,
    pub guard: Guard,
    /// The `Host` values this listener answers to.
    pub hosts: Hosts,
    pub flows: ConnectFlows,
    /// App-state events being confirmed with the provider.
    pub confirmations: webhook::Confirmations,
    /// Where flows are kept for the other replicas (a postgres store; others keep none).
    pub shared_flows: Option<Arc<dyn crate::store::TokenStore>>,
}

pub struct AdminConnection {
    pub connection: Arc<Connection>,
    /// The proxy listener's bound address: the app's base URL is `http://` this.
    pub listen: SocketAddr,
    /// The upstream's base URL, for the status page.
    pub upstream: String,
    pub provider: Provider,
    pub grant: GrantKind,
    /// Present for authorization-code connections that can be connected from the page.
    pub connect: Option<ConnectSettings>,
    /// The connection's client id, to match provider webhooks.
    pub client_id: Option<String>,
    /// Scrubbed from provider text before it is shown.
    pub client_secret: Option<SecretString>,
    /// `GET` after connecting, shown on the success page.
    pub probe: Option<Probe>,
    /// Cloudbeds: how to confirm an app-state webhook with the provider.
    pub app_state: Option<Arc<AppStateCheck>>,
    /// An app's tenants (SPEC section 9).
    pub tenants: Option<Arc<Tenants>>,
}

pub struct Probe {
    pub client: HttpClient,
    pub uri: Uri,
}

impl Admin {
    pub async fn handle(&self, request: Request<ClientBody>) -> AdminResponse {
        let (parts, body) = request.into_parts();
        if !self.hosts.allows(&parts.uri, &parts.headers) {
            // DNS rebinding: a page on another name pointed at this address.
            return problem(
                StatusCode::MISDIRECTED_REQUEST,
                "this listener answers to admin.public_url's host and its own address only",
            );
        }
        let path = parts.uri.path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, [""]) => self.status_page(&parts.headers),
            (&Method::GET, ["healthz"]) => text(StatusCode::OK, "text/plain", "ok\n".into()),
            (&Method::GET, ["readyz"]) => self.readyz(),
            (&Method::GET, ["metrics"]) => match self.metrics.encode() {
                Ok(body) => text(StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            (&Method::GET, ["connections"]) => {
                let all: Vec<Value> = self.connections.iter().map(describe).collect();
                json_response(StatusCode::OK, &Value::Array(all))
            }
            (&Method::GET, ["connections", name]) => match self.find(name) {
                Some(c) => json_response(StatusCode::OK, &describe(c)),
                None => not_found(),
            },
            (&Method::GET, ["connections", name, "connect"]) => {
                if !self.guard.authorized(&parts.headers) {
                    return self.guard.challenge();
                }
                let Some(c) = self.find(name) else {
                    return not_found();
                };
                // Starting a flow changes state: only a same-origin page, the address bar or
                // a tool may do it with a GET. Anyone else gets a button to press here.
                if let Some(settings) = &c.connect
                    && !self.guard.not_cross_site(&parts.headers)
                {
                    let page = pages::confirm_connect(&c.connection.name, &self.guard.csrf);
                    // The button's POST is redirected to the provider: CSP `form-action`
                    // covers redirects, so the provider's origin must be allowed.
                    let provider = settings.authorize_url.origin().ascii_serialization();
                    return respond::with_form_target(html(StatusCode::FORBIDDEN, page), &provider);
                }
                self.start_connect(c, StatusCode::FOUND).await
            }
            (&Method::GET, ["oauth", "callback"]) => self.callback(&parts.uri).await,
            (&Method::GET, ["connections", name, "install"]) => match self.find(name) {
                Some(c) => self.install(c, parts.uri.query()).await,
                None => not_found(),
            },
            (&Method::GET, ["connections", name, "tenants"]) => match self.find(name) {
                Some(c) => self.tenant_list(c, parts.uri.query()),
                None => not_found(),
            },
            (&Method::GET, ["connections", name, "page"]) => {
                if !self.guard.authorized(&parts.headers) {
                    return self.guard.challenge();
                }
                match self.find(name) {
                    Some(c) => self.tenant_page(c, parts.uri.query()),
                    None => not_found(),
                }
            }
            (&Method::GET, ["connections", name, "tenants", id]) => match self.find(name) {
                Some(c) => self.tenant(c, id),
                None => not_found(),
            },
            (&Method::GET, ["connections", name, "installed"]) => match self.find(name) {
                Some(c) => self.installed(c, parts.uri.query()),
                None => not_found(),
            },
            (&Method::GET, ["connections", name, "tenants", id, "connect"]) => {
                if !self.guard.authorized(&parts.headers) {
                    return self.guard.challenge();
                }
                let Some(c) = self.find(name) else {
                    return not_found();
                };
                if !self.guard.not_cross_site(&parts.headers) {
                    return problem(
                        StatusCode::FORBIDDEN,
                        "a reconnect starts from the status page at admin.public_url",
                    );
                }
                self.connect_tenant(c, id).await
            }
            (
                &Method::POST,
                [
                    "connections",
                    name,
                    "tenants",
                    id,
                    action @ ("refresh" | "disconnect" | "migrate"),
                ],
            ) => {
                let from_page = match self.checked_post(&parts.headers, body).await {
                    Ok(from_page) => from_page,
                    Err(refused) => return refused,
                };
                let Some(c) = self.find(name) else {
                    return not_found();
                };
                match *action {
                    "refresh" => self.refresh_tenant(c, id, from_page).await,
                    "migrate" => self.migrate_tenant(c, id, from_page).await,
                    _ => self.disconnect_tenant(c, id, from_page).await,
                }
            }
            (&Method::POST, ["webhooks", name]) => match self.find(name) {
                Some(c) => {
                    let content_type = header(&parts.headers, "content-type");
                    match read_body(body).await {
                        Some(bytes) => self.webhook(c, &content_type, &bytes).await,
                        None => problem(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large"),
                    }
                }
                None => not_found(),
            },
            (
                &Method::POST,
                [
                    "connections",
                    name,
                    action @ ("refresh" | "disconnect" | "connect" | "migrate"),
                ],
            ) => {
                let from_page = match self.checked_post(&parts.headers, body).await {
                    Ok(from_page) => from_page,
                    Err(refused) => return refused,
                };
                let Some(c) = self.find(name) else {
                    return not_found();
                };
                match *action {
                    "refresh" => self.refresh(c, from_page).await,
                    "disconnect" => self.disconnect(c, from_page).await,
                    "migrate" => self.migrate(c, from_page).await,
                    _ => self.start_connect(c, StatusCode::SEE_OTHER).await,
                }
            }
            (_, ["" | "healthz" | "readyz" | "metrics" | "connections"])
            | (_, ["connections", _])
            | (
                _,
                [
                    "connections",
                    _,
                    "refresh" | "disconnect" | "connect" | "migrate",
                ],
            )
            | (_, ["oauth", "callback"])
            | (
                _,
                [
                    "connections",
                    _,
                    "install" | "installed" | "tenants" | "page",
                ],
            )
            | (_, ["connections", _, "tenants", _])
            | (
                _,
                [
                    "connections",
                    _,
                    "tenants",
                    _,
                    "connect" | "refresh" | "disconnect" | "migrate",
                ],
            )
            | (_, ["webhooks", _]) => problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => not_found(),
        }
    }

    /// The checks of every state-changing POST: the admin token, a small body, and (from a
    /// browser) the same origin with the page's CSRF token. `Ok(true)`: it came from the
    /// status page's form (answer with a redirect back).
    async fn checked_post(
        &self,
        headers: &http::HeaderMap,
        body: ClientBody,
    ) -> Result<bool, AdminResponse> {
        if !self.guard.authorized(headers) {
            return Err(self.guard.challenge());
        }
        let Some(bytes) = read_body(body).await else {
            return Err(problem(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
        };
        let from_page = auth::is_form(headers);
        let form: Vec<(String, String)> = if from_page {
            form_urlencoded::parse(&bytes).into_owned().collect()
        } else {
            Vec::new()
        };
        if !self.guard.same_origin(headers, &form) {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "cross-site request or missing CSRF token; use the status page at admin.public_url",
            ));
        }
        Ok(from_page)
    }

    fn find(&self, name: &str) -> Option<&AdminConnection> {
        self.connections.iter().find(|c| c.connection.name == name)
    }

    fn readyz(&self) -> AdminResponse {
        let now = Instant::now();
        let not_ready: Vec<Value> = self
            .connections
            .iter()
            .filter_map(|c| {
                let s = c.connection.snapshot();
                if c.tenants.is_some() {
                    // An app is ready when it can serve: a tenant needing authorization does
                    // not make the pod unready (SPEC section 9).
                    return (s.state == ConnState::Misconfigured).then(|| {
                        json!({"name": c.connection.name, "state": s.state.as_str(), "last_error": s.last_error})
                    });
                }
                let serving = matches!(
                    s.state,
                    ConnState::Connected | ConnState::Refreshing | ConnState::Degraded
                );
                (!(serving && s.has_valid_token(now))).then(|| {
                    json!({"name": c.connection.name, "state": s.state.as_str(), "last_error": s.last_error})
                })
            })
            .collect();
        if not_ready.is_empty() {
            json_response(StatusCode::OK, &json!({"ready": true}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "not_ready": not_ready}),
            )
        }
    }

    async fn refresh(&self, c: &AdminConnection, from_page: bool) -> AdminResponse {
        let after = c.connection.refresh_now().await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, "/");
        }
        let status = if after.state == ConnState::Connected {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &describe(c))
    }
}

/// A connection's public status: never a token.
fn describe(c: &AdminConnection) -> Value {
    let s: Arc<TokenState> = c.connection.snapshot();
    if let Some(tenants) = &c.tenants {
        return json!({
            "name": c.connection.name,
            "provider": c.provider.as_str(),
            "grant": c.grant.as_str(),
            "state": s.state.as_str(),
            "app_state": s.state.app_state(),
            "last_error": s.last_error,
            "tenants": tenants.counts(),
            "tenant_count": tenants.len(),
            "install_url": tenants.install_url(),
        });
    }
    json!({
        "name": c.connection.name,
        "provider": c.provider.as_str(),
        "grant": c.grant.as_str(),
        "state": s.state.as_str(),
        "app_state": s.state.app_state(),
        "generation": s.generation,
        "access_expires_at": s.expires_at_wall.map(rfc3339),
        "last_refresh_at": s.last_refresh.map(rfc3339),
        "last_error": s.last_error,
        "refreshes": s.refreshes,
        "credential": migrate::credential(c, &s),
        "last_used_at": migrate::last_used_at(c, &s).map(rfc3339),
    })
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn read_body(body: ClientBody) -> Option<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}
