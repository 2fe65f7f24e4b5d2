//! The admin listener (SPEC section 7): health, readiness, metrics, connection status and
//! the operator's refresh. Answers are never allowed to contain a token.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{GrantKind, Provider};
use crate::metrics::Metrics;
use crate::token::{ConnState, Connection, SecretString, TokenState};

/// What the admin listener serves from.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub connections: Vec<AdminConnection>,
    pub auth_token: Option<SecretString>,
}

pub struct AdminConnection {
    pub connection: Arc<Connection>,
    pub provider: Provider,
    pub grant: GrantKind,
}

type AdminResponse = Response<Full<Bytes>>;

impl Admin {
    pub async fn handle(&self, request: Request<Incoming>) -> AdminResponse {
        let path = request.uri().path();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = request.method();
        match (method, segments.as_slice()) {
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
            (&Method::POST, ["connections", name, "refresh"]) => {
                if !self.authorized(&request) {
                    return unauthorized();
                }
                let Some(c) = self.find(name) else {
                    return not_found();
                };
                let after = c.connection.refresh_now().await;
                let status = if after.state == ConnState::Connected {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, &describe(c))
            }
            (_, ["healthz" | "readyz" | "metrics" | "connections"])
            | (_, ["connections", _])
            | (_, ["connections", _, "refresh"]) => {
                problem(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => not_found(),
        }
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

    /// With an `auth_token` configured, the request must carry it as a bearer token.
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(expected) = &self.auth_token else {
            return true;
        };
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), expected.secret().as_bytes())
    }
}

/// A connection's public status: never a token.
fn describe(c: &AdminConnection) -> Value {
    let s: Arc<TokenState> = c.connection.snapshot();
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
    })
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, value: &Value) -> AdminResponse {
    text(status, "application/json", value.to_string())
}

fn problem(status: StatusCode, detail: &str) -> AdminResponse {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    text(status, "application/problem+json", body.to_string())
}

fn not_found() -> AdminResponse {
    problem(StatusCode::NOT_FOUND, "no such resource")
}

fn unauthorized() -> AdminResponse {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "this admin endpoint needs Authorization: Bearer <admin.auth_token>",
    );
    response
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    response
}
