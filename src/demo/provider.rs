//! The demo provider: a small OAuth 2.0 authorization server and API that behave like a
//! real hotel provider, on 127.0.0.1 only, for `bearerd demo`.
//!
//! - `GET /authorize` shows an approval page; `POST /authorize` redirects back with a code
//!   bound to the PKCE challenge and the redirect URI.
//! - `POST /token` redeems a code (PKCE S256 checked) or a refresh token. Refresh tokens
//!   rotate: each is single use, and the access token it replaces dies at once.
//! - `GET /api/...` answers JSON for the current, unexpired access token, 401 otherwise.
//! - `POST /revoke` (RFC 7009) ends the grant, as bearerd's Disconnect asks.
//! - `GET /` is the provider's console (what it issued, a "Revoke at provider" button);
//!   `GET /stats` the same counters as JSON.
//!
//! It is never started by `bearerd run`: only [`crate::demo`] uses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::pages;
use crate::connect::random_token;
use crate::serve::ClientBody;

/// The client bearerd is registered as.
pub const CLIENT_ID: &str = "bearerd-demo";
/// A code is redeemable this long, once.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Request bodies the provider reads at most.
const MAX_BODY: usize = 16 * 1024;

/// The demo provider's state, shared by its request handlers.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Mutex<State>>,
    client_secret: Arc<str>,
    token_ttl: Duration,
}

struct State {
    codes: HashMap<String, Code>,
    grant: Option<Grant>,
    stats: Stats,
}

struct Code {
    redirect_uri: String,
    challenge: String,
    issued: Instant,
}

/// The hotel's one grant: the tokens that are valid now.
struct Grant {
    access_token: String,
    refresh_token: String,
    access_expires: Instant,
    generation: u64,
}

/// What the provider has done, for its console and the tests.
#[derive(Default, Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub authorizations: u64,
    pub refreshes: u64,
    pub rejected_refreshes: u64,
    pub api_calls: u64,
    pub rejected_api_calls: u64,
    pub revocations: u64,
}

pub type DemoResponse = Response<Full<Bytes>>;

impl Provider {
    pub fn new(client_secret: &str, token_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                codes: HashMap::new(),
                grant: None,
                stats: Stats::default(),
            })),
            client_secret: client_secret.into(),
            token_ttl,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the state consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> Stats {
        self.state().stats
    }

    /// Serves one request.
    pub async fn handle(&self, request: Request<ClientBody>) -> DemoResponse {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let form = match read_form(body).await {
            Ok(form) => form,
            Err(status) => return json_answer(status, &json!({"error": "invalid_request"})),
        };
        match (&parts.method, path.as_str()) {
            (&Method::GET, "/") => pages::console(&self.console()),
            (&Method::GET, "/stats") => json_answer(StatusCode::OK, &json!(self.stats())),
            (&Method::GET, "/authorize") => self.authorize_page(&pairs(&query)),
            (&Method::POST, "/authorize") => self.approve(&form),
            (&Method::POST, "/token") => self.token(&parts.headers, &form),
            (&Method::POST, "/revoke") => self.revoke(&form),
            (&Method::POST, "/console/revoke") => self.revoke_from_console(),
            (_, p) if p == "/api" || p.starts_with("/api/") => self.api(&parts.headers, p),
            _ => json_answer(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    fn console(&self) -> pages::Console {
        let state = self.state();
        let now = Instant::now();
        pages::Console {
            generation: state.grant.as_ref().map(|g| g.generation),
            expires_in: state
                .grant
                .as_ref()
                .map(|g| g.access_expires.saturating_duration_since(now)),
            stats: state.stats,
            token_ttl: self.token_ttl,
        }
    }

    fn authorize_page(&self, query: &HashMap<String, String>) -> DemoResponse {
        let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        if field("client_id") != CLIENT_ID
            || field("response_type") != "code"
            || field("code_challenge_method") != "S256"
            || field("code_challenge").is_empty()
            || field("redirect_uri").is_empty()
        {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "This authorization request is not one the demo provider accepts \
                 (it wants client_id bearerd-demo, response_type=code and PKCE S256).",
            );
        }
        pages::approve(
            field("redirect_uri"),
            field("state"),
            field("code_challenge"),
            field("scope"),
        )
    }

    fn approve(&self, form: &HashMap<String, String>) -> DemoResponse {
        let field = |name: &str| form.get(name).cloned().unwrap_or_default();
        let redirect_uri = field("redirect_uri");
        let Ok(mut target) = url::Url::parse(&redirect_uri) else {
            return pages::error(StatusCode::BAD_REQUEST, "The redirect URI is not a URL.");
        };
        if form.get("decision").map(String::as_str) == Some("approve") {
            let code = random_token(24);
            let mut state = self.state();
            let now = Instant::now();
            state
                .codes
                .retain(|_, c| now.duration_since(c.issued) < CODE_LIFETIME);
            state.codes.insert(
                code.clone(),
                Code {
                    redirect_uri: redirect_uri.clone(),
                    challenge: field("code_challenge"),
                    issued: now,
                },
            );
            target.query_pairs_mut().append_pair("code", &code);
        } else {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied");
        }
        target
            .query_pairs_mut()
            .append_pair("state", &field("state"));
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, target.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    }

    fn token(&self, headers: &http::HeaderMap, form: &HashMap<String, String>) -> DemoResponse {
        if !self.client_authenticated(headers, form) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        let mut state = self.state();
        match field("grant_type") {
            "authorization_code" => {
                let Some(code) = state.codes.remove(field("code")) else {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                };
                let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier")));
                if code.issued.elapsed() >= CODE_LIFETIME
                    || code.redirect_uri != field("redirect_uri")
                    || code.challenge != challenge
                {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                state.stats.authorizations += 1;
                let generation = state.grant.as_ref().map_or(0, |g| g.generation);
                self.issue(&mut state, generation + 1)
            }
            "refresh_token" => {
                let current = state
                    .grant
                    .as_ref()
                    .filter(|g| g.refresh_token == field("refresh_token"))
                    .map(|g| g.generation);
                match current {
                    Some(generation) => {
                        state.stats.refreshes += 1;
                        self.issue(&mut state, generation + 1)
                    }
                    None => {
                        state.stats.rejected_refreshes += 1;
                        oauth_error(StatusCode::BAD_REQUEST, "invalid_grant")
                    }
                }
            }
            _ => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        }
    }

    /// A new token pair replaces the grant's: the old access and refresh tokens die now.
    fn issue(&self, state: &mut State, generation: u64) -> DemoResponse {
        let grant = Grant {
            access_token: format!("demo_at_{}", random_token(24)),
            refresh_token: format!("demo_rt_{}", random_token(24)),
            access_expires: Instant::now() + self.token_ttl,
            generation,
        };
        let body = json!({
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": self.token_ttl.as_secs().max(1),
            "refresh_token": grant.refresh_token,
            "scope": "reservations.read",
        });
        state.grant = Some(grant);
        json_answer(StatusCode::OK, &body)
    }

    fn client_authenticated(
        &self,
        headers: &http::HeaderMap,
        form: &HashMap<String, String>,
    ) -> bool {
        let secret = self.client_secret.as_ref();
        let in_body = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("client_secret").map(String::as_str) == Some(secret);
        let basic = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{secret}")));
        let in_header = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == basic.as_bytes());
        in_body || in_header
    }

    fn revoke(&self, form: &HashMap<String, String>) -> DemoResponse {
        let token = form.get("token").map(String::as_str).unwrap_or_default();
        let mut state = self.state();
        let matches = state
            .grant
            .as_ref()
            .is_some_and(|g| g.refresh_token == token || g.access_token == token);
        if matches {
            state.grant = None;
            state.stats.revocations += 1;
        }
        // RFC 7009: an unknown token is not an error.
        json_answer(StatusCode::OK, &json!({}))
    }

    fn revoke_from_console(&self) -> DemoResponse {
        let mut state = self.state();
        if state.grant.take().is_some() {
            state.stats.revocations += 1;
        }
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, "/")
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    }

    fn api(&self, headers: &http::HeaderMap, path: &str) -> DemoResponse {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let mut state = self.state();
        let now = Instant::now();
        let generation = state
            .grant
            .as_ref()
            .filter(|g| g.access_token == presented && g.access_expires > now)
            .map(|g| g.generation);
        let Some(generation) = generation else {
            state.stats.rejected_api_calls += 1;
            let mut answer = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
            answer.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return answer;
        };
        state.stats.api_calls += 1;
        let body = match path.trim_end_matches('/') {
            "/api/hotel" => json!({"id": 1001, "name": "Hotel Demo", "city": "Lisbon"}),
            "/api/reservations" => json!({"reservations": [
                {"id": "R-1", "guest": "Ada Lovelace", "nights": 2},
                {"id": "R-2", "guest": "Alan Turing", "nights": 1},
            ]}),
            _ => {
                json!({"path": path, "message": "the demo API has /api/hotel and /api/reservations"})
            }
        };
        let mut answer = json_answer(StatusCode::OK, &body);
        if let Ok(value) = http::HeaderValue::from_str(&generation.to_string()) {
            answer
                .headers_mut()
                .insert("x-demo-token-generation", value);
        }
        answer
    }
}

fn pairs(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// A form body (or none), at most [`MAX_BODY`] bytes.
async fn read_form(body: ClientBody) -> Result<HashMap<String, String>, StatusCode> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn oauth_error(status: StatusCode, error: &str) -> DemoResponse {
    json_answer(status, &json!({ "error": error }))
}

fn json_answer(status: StatusCode, value: &serde_json::Value) -> DemoResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}
