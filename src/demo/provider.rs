//! The demo provider: a small OAuth 2.0 authorization server and API that behave like a
//! real hotel provider, on 127.0.0.1 only, for `bearerd demo`.
//!
//! - It hosts two hotels ([`hotels`]) and knows two clients: bearerd's single-hotel
//!   connection and bearerd's app ([`super::clients`]). A grant is one client's access to
//!   one hotel; approving again replaces that grant's tokens.
//! - `GET /authorize` shows an approval page where the person chooses the hotel;
//!   `POST /authorize` redirects back with a code bound to the client, the hotel, the PKCE
//!   challenge and the redirect URI.
//! - `POST /token` redeems a code (PKCE S256 checked) or a refresh token; the answer names
//!   the hotel (`"hotel_id": "1001"`). Refresh tokens rotate per grant: each is single use,
//!   and the access token it replaces dies at once.
//! - `GET /api/...` answers JSON about the token's hotel for a current, unexpired access
//!   token, 401 otherwise.
//! - `POST /revoke` (RFC 7009) ends the grant, as bearerd's Disconnect asks.
//! - `GET /` is the provider's console (each grant, each with a "Revoke at provider"
//!   button); `GET /stats` the counters as JSON, in total and per hotel.
//!
//! It is never started by `bearerd run`: only [`crate::demo`] uses it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::clients::{CLIENT_ID, Clients};
use super::hotels::{self, HOTELS};
use super::pages;
use super::stats::{Event, Stats};
use crate::connect::random_token;
use crate::serve::ClientBody;

/// A code is redeemable this long, once.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Request bodies the provider reads at most.
const MAX_BODY: usize = 16 * 1024;

/// The demo provider's state, shared by its request handlers.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Mutex<State>>,
    clients: Arc<Clients>,
    token_ttl: Duration,
}

/// A grant: which client may access which hotel.
type GrantKey = (&'static str, &'static str);

struct State {
    codes: HashMap<String, Code>,
    grants: BTreeMap<GrantKey, Grant>,
    stats: Stats,
}

struct Code {
    grant: GrantKey,
    redirect_uri: String,
    challenge: String,
    issued: Instant,
}

/// A grant's tokens that are valid now.
struct Grant {
    access_token: String,
    refresh_token: String,
    access_expires: Instant,
    generation: u64,
}

pub type DemoResponse = Response<Full<Bytes>>;

impl Provider {
    /// A provider whose two clients ([`super::clients`]) have these secrets.
    pub fn new(client_secret: &str, app_client_secret: &str, token_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State {
                codes: HashMap::new(),
                grants: BTreeMap::new(),
                stats: Stats::default(),
            })),
            clients: Arc::new(Clients::new(client_secret, app_client_secret)),
            token_ttl,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the state consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> Stats {
        self.state().stats.clone()
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
            (&Method::POST, "/console/revoke") => self.revoke_from_console(&form),
            (_, p) if p == "/api" || p.starts_with("/api/") => self.api(&parts.headers, p),
            _ => json_answer(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    fn console(&self) -> pages::Console {
        let state = self.state();
        let now = Instant::now();
        pages::Console {
            grants: state
                .grants
                .iter()
                .filter_map(|(&(client, hotel), g)| {
                    Some(pages::GrantView {
                        client,
                        hotel: hotels::find(hotel)?,
                        generation: g.generation,
                        expires_in: g.access_expires.saturating_duration_since(now),
                    })
                })
                .collect(),
            stats: state.stats.clone(),
            token_ttl: self.token_ttl,
        }
    }

    fn authorize_page(&self, query: &HashMap<String, String>) -> DemoResponse {
        let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
        if Clients::find(field("client_id")).is_none()
            || field("response_type") != "code"
            || field("code_challenge_method") != "S256"
            || field("code_challenge").is_empty()
            || field("redirect_uri").is_empty()
        {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "This authorization request is not one the demo provider accepts \
                 (it wants client_id bearerd-demo or bearerd-demo-app, response_type=code \
                 and PKCE S256).",
            );
        }
        pages::approve(&pages::Approval {
            client_id: field("client_id"),
            redirect_uri: field("redirect_uri"),
            state: field("state"),
            challenge: field("code_challenge"),
            scope: field("scope"),
        })
    }

    /// The approval form's answer. A form without `client_id` or `hotel` (an older page) is
    /// for [`CLIENT_ID`] and the first hotel.
    fn approve(&self, form: &HashMap<String, String>) -> DemoResponse {
        let field = |name: &str| form.get(name).cloned().unwrap_or_default();
        let redirect_uri = field("redirect_uri");
        let Ok(mut target) = url::Url::parse(&redirect_uri) else {
            return pages::error(StatusCode::BAD_REQUEST, "The redirect URI is not a URL.");
        };
        let client = form
            .get("client_id")
            .map_or(Some(CLIENT_ID), |c| Clients::find(c));
        let hotel = form
            .get("hotel")
            .map_or(Some(&HOTELS[0]), |h| hotels::find(h));
        let (Some(client), Some(hotel)) = (client, hotel) else {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "The demo provider knows no such client or hotel.",
            );
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
                    grant: (client, hotel.id),
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
        let Some(client) = self.clients.authenticated(headers, form) else {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        };
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        let mut state = self.state();
        match field("grant_type") {
            "authorization_code" => {
                let Some(code) = state.codes.remove(field("code")) else {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                };
                let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier")));
                if code.issued.elapsed() >= CODE_LIFETIME
                    || code.grant.0 != client
                    || code.redirect_uri != field("redirect_uri")
                    || code.challenge != challenge
                {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
                }
                state.stats.count(Event::Authorization, code.grant.1);
                let generation = state.grants.get(&code.grant).map_or(0, |g| g.generation);
                self.issue(&mut state, code.grant, generation + 1)
            }
            "refresh_token" => {
                let current = state
                    .grants
                    .iter()
                    .find(|(key, g)| key.0 == client && g.refresh_token == field("refresh_token"))
                    .map(|(&key, g)| (key, g.generation));
                match current {
                    Some((key, generation)) => {
                        state.stats.count(Event::Refresh, key.1);
                        self.issue(&mut state, key, generation + 1)
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
    fn issue(&self, state: &mut State, key: GrantKey, generation: u64) -> DemoResponse {
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
            "hotel_id": key.1,
        });
        state.grants.insert(key, grant);
        json_answer(StatusCode::OK, &body)
    }

    fn revoke(&self, form: &HashMap<String, String>) -> DemoResponse {
        let token = form.get("token").map(String::as_str).unwrap_or_default();
        let mut state = self.state();
        let key = state
            .grants
            .iter()
            .find(|(_, g)| g.refresh_token == token || g.access_token == token)
            .map(|(&key, _)| key);
        if let Some(key) = key {
            state.grants.remove(&key);
            state.stats.count(Event::Revocation, key.1);
        }
        // RFC 7009: an unknown token is not an error.
        json_answer(StatusCode::OK, &json!({}))
    }

    /// The console's "Revoke at provider": ends the grants of `client` for `hotel` (a form
    /// field left out matches every client or every hotel).
    fn revoke_from_console(&self, form: &HashMap<String, String>) -> DemoResponse {
        let wanted = |name: &str, value: &str| form.get(name).is_none_or(|w| w == value);
        let mut state = self.state();
        let ended: Vec<GrantKey> = state
            .grants
            .keys()
            .filter(|(client, hotel)| wanted("client", client) && wanted("hotel", hotel))
            .copied()
            .collect();
        for key in ended {
            state.grants.remove(&key);
            state.stats.count(Event::Revocation, key.1);
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
        let current = state
            .grants
            .iter()
            .find(|(_, g)| g.access_token == presented && g.access_expires > now)
            .and_then(|(&(_, hotel), g)| Some((hotels::find(hotel)?, g.generation)));
        let Some((hotel, generation)) = current else {
            state.stats.rejected_api_calls += 1;
            let mut answer = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token");
            answer.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return answer;
        };
        state.stats.count(Event::ApiCall, hotel.id);
        let mut answer = json_answer(StatusCode::OK, &hotel.answer(path));
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
