//! Upstream resource server for integration tests (HTTP/1.1 and h2c).
//!
//! [`Upstream::start`] checks `Authorization: Bearer` with [`TokenServer::validate_access`] and
//! answers 401 `WWW-Authenticate: Bearer error="invalid_token"` when it fails;
//! [`Upstream::start_open`] accepts everything. Paths:
//! * `/bytes/N`: N bytes of [`pattern_bytes`], streamed in 64 KiB chunks;
//! * `/delay/MS`: echo after MS milliseconds;
//! * `/status/NNN`: that status with a small JSON body;
//! * `/cloudbeds/dead`: 200 `{"success":false,"message":"User who approved this connection is
//!   not active anymore"}`; `/cloudbeds/unauthorized` and `/cloudbeds/access_denied`: the two
//!   Cloudbeds 401 bodies of PROVIDERS.md §4 rule 14;
//! * `/hop`: echo plus hop-by-hop response headers a proxy must strip;
//! * `/userinfo`: `{"user": USER, "hotel": "Hotel Test"}` (USER: [`TokenServer::user_of`]);
//! * `POST /api/v1.3/postAppState`: Cloudbeds disconnect; form `app_state=disabled` revokes the
//!   token's grant, marks every property disabled and answers `{"success":true}` (`enabled`
//!   is a no-op), counted by [`Upstream::app_state_posts`];
//! * `GET /api/v1.3/getAppState?propertyID=P`: `{"success":true,"data":{"app_state":S}}` for a
//!   property the test set with [`Upstream::set_app_state`] (property `1`, the one the token
//!   server's Cloudbeds `resources` name, starts `enabled`); any other property gets Cloudbeds'
//!   HTTP 200 `success:false` "None of the included property id's match"; counted by
//!   [`Upstream::app_state_gets`];
//! * `POST /api/v1.2/access_token_check`: `{"success":true}` for a live credential, counted
//!   by [`Upstream::token_checks`];
//! * `GET /api/v1.3/getHotels`: the echo plus Cloudbeds' `"success":true` and `"data"`: one
//!   `{"propertyID","propertyName"}` per property of the credential's user
//!   ([`TokenServer::properties_of`]);
//! * anything else: a JSON echo of the request (body hashed while streaming), whose `"user"` is
//!   the user of the presented token or key (or null).
//!
//! A request with `x-api-key` and no bearer token is checked with
//! [`TokenServer::validate_key`] instead; a dead key gets Cloudbeds' 401
//! `{"type":"unauthorized",...}` (PROVIDERS.md section 1). A live key sent with an
//! `X-PROPERTY-ID` naming a property its user's grant does not cover (when the test gave the
//! user properties) gets Cloudbeds' HTTP 200 `success:false` "None of the included property
//! id's match", as a key used for another hotel would.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{BoxError, TokenServer};

type Resp = Response<BoxBody<Bytes, Infallible>>;

const CHUNK: u64 = 64 * 1024;
const APP_STATE: &str = "/api/v1.3/postAppState";
const GET_APP_STATE: &str = "/api/v1.3/getAppState";
const TOKEN_CHECK: &str = "/api/v1.2/access_token_check";
const GET_HOTELS: &str = "/api/v1.3/getHotels";

/// The deterministic pattern served by `/bytes/N`: byte i is `(i % 251) as u8`.
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

struct Inner {
    tokens: Option<TokenServer>,
    requests: AtomicUsize,
    unauthorized: AtomicUsize,
    app_state_posts: AtomicUsize,
    app_state_gets: AtomicUsize,
    token_checks: AtomicUsize,
    /// Property id -> app state, for getAppState.
    app_states: Mutex<HashMap<String, String>>,
}

impl Upstream {
    /// Validates bearer tokens with `tokens.validate_access`.
    pub async fn start(tokens: TokenServer) -> Upstream {
        Self::start_with(Some(tokens)).await
    }

    /// Accepts any request without an auth check.
    pub async fn start_open() -> Upstream {
        Self::start_with(None).await
    }

    async fn start_with(tokens: Option<TokenServer>) -> Upstream {
        let inner = Arc::new(Inner {
            tokens,
            requests: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
            app_state_posts: AtomicUsize::new(0),
            app_state_gets: AtomicUsize::new(0),
            token_checks: AtomicUsize::new(0),
            app_states: Mutex::new(HashMap::from([("1".to_owned(), "enabled".to_owned())])),
        });
        let handler_inner = inner.clone();
        let addr = super::spawn_server(move |req| handle(handler_inner.clone(), req)).await;
        Upstream { inner, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Every request received, 401s included.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }
    /// 401s answered for a missing, invalid or expired token.
    pub fn unauthorized(&self) -> usize {
        self.inner.unauthorized.load(Ordering::SeqCst)
    }
    /// Requests to `/api/v1.3/postAppState` (any method, answered 401 or not).
    pub fn app_state_posts(&self) -> usize {
        self.inner.app_state_posts.load(Ordering::SeqCst)
    }
    /// Requests to `/api/v1.3/getAppState` (answered 401 or not).
    pub fn app_state_gets(&self) -> usize {
        self.inner.app_state_gets.load(Ordering::SeqCst)
    }
    /// Requests to `/api/v1.2/access_token_check` (answered 401 or not).
    pub fn token_checks(&self) -> usize {
        self.inner.token_checks.load(Ordering::SeqCst)
    }
    /// What getAppState answers for `property` from now on.
    pub fn set_app_state(&self, property: &str, state: &str) {
        self.inner
            .app_states()
            .insert(property.to_owned(), state.to_owned());
    }
}

impl Inner {
    fn app_states(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.app_states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn full(body: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(body.into()).boxed()
}

fn json_resp(status: StatusCode, body: &Value) -> Resp {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Resp, BoxError> {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    if req.uri().path() == APP_STATE {
        inner.app_state_posts.fetch_add(1, Ordering::SeqCst);
    }
    if req.uri().path() == GET_APP_STATE {
        inner.app_state_gets.fetch_add(1, Ordering::SeqCst);
    }
    if req.uri().path() == TOKEN_CHECK {
        inner.token_checks.fetch_add(1, Ordering::SeqCst);
    }
    // A bearer token wins: an app may send an x-api-key of its own to an OAuth connection.
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|_| bearer(&req).is_none())
        .map(str::to_owned);
    if let (Some(tokens), Some(key)) = (&inner.tokens, &key)
        && !tokens.validate_key(key)
    {
        inner.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Ok(json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"type": "unauthorized", "title": "Unauthorized", "status": 401, "detail": "401 UNAUTHORIZED"}),
        ));
    }
    if let Some(tokens) = &inner.tokens
        && key.is_none()
        && !bearer(&req).is_some_and(|t| tokens.validate_access(t))
    {
        inner.unauthorized.fetch_add(1, Ordering::SeqCst);
        let mut r = json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_token", "error_description": "missing, invalid or expired access token"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return Ok(r);
    }
    let path = req.uri().path().to_owned();
    let token = bearer(&req).map(str::to_owned);
    let tokens = inner.tokens.as_ref();
    let user = match (&key, tokens) {
        (Some(key), Some(t)) => t.user_of_key(key),
        (None, Some(t)) => token.as_deref().and_then(|b| t.user_of(b)),
        _ => None,
    };
    if key.is_some()
        && let (Some(t), Some(user)) = (tokens, &user)
        && let Some(named) = req.headers().get("x-property-id")
    {
        let covered = t.properties_of(user);
        let named = String::from_utf8_lossy(named.as_bytes()).into_owned();
        if !named
            .split(',')
            .all(|id| covered.iter().any(|c| c == id.trim()))
        {
            return Ok(json_resp(
                StatusCode::OK,
                &json!({"success": false, "message": "None of the included property id's match the access_token user's property id"}),
            ));
        }
    }
    let hotels = (path == GET_HOTELS).then(|| {
        let properties = match (tokens, &user) {
            (Some(t), Some(user)) => t.properties_of(user),
            _ => vec!["1".to_owned()],
        };
        properties
            .iter()
            .map(|id| json!({"propertyID": id, "propertyName": format!("Hotel {id}")}))
            .collect::<Vec<_>>()
    });
    if let Some(n) = path.strip_prefix("/bytes/") {
        let Ok(total) = n.parse::<u64>() else {
            return Ok(json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad length"}),
            ));
        };
        let mut r = Response::new(PatternBody { sent: 0, total }.boxed());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return Ok(json_resp(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad delay"}),
            ));
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return echo(req, user, None).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(
            match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => json_resp(status, &json!({"status": status.as_u16()})),
                None => json_resp(StatusCode::BAD_REQUEST, &json!({"error": "bad status"})),
            },
        );
    }
    match path.as_str() {
        "/cloudbeds/dead" => Ok(json_resp(
            StatusCode::OK,
            &json!({"success": false, "message": "User who approved this connection is not active anymore"}),
        )),
        "/cloudbeds/unauthorized" => Ok(json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"type": "unauthorized", "title": "Unauthorized", "status": 401, "detail": "401 UNAUTHORIZED"}),
        )),
        "/cloudbeds/access_denied" => Ok(json_resp(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "access_denied", "message": "The resource owner or authorization server denied the request."}),
        )),
        TOKEN_CHECK if req.method() == Method::POST => {
            Ok(json_resp(StatusCode::OK, &json!({"success": true})))
        }
        "/userinfo" => Ok(json_resp(
            StatusCode::OK,
            &json!({"user": user, "hotel": "Hotel Test"}),
        )),
        APP_STATE if req.method() == Method::POST => {
            let ctype = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let ctype = ctype.map(str::to_owned);
            let body = req.into_body().collect().await?.to_bytes();
            let form = super::token_server::parse_form_body(ctype.as_deref(), &body);
            let app_state = form
                .as_ref()
                .and_then(|f| f.iter().find(|(k, _)| k == "app_state"));
            match app_state.map(|(_, v)| v.as_str()) {
                Some("disabled") => {
                    if let Some((tokens, token)) = tokens.zip(token) {
                        tokens.revoke_grant_of(&token);
                    }
                    for state in inner.app_states().values_mut() {
                        *state = "disabled".to_owned();
                    }
                    Ok(json_resp(StatusCode::OK, &json!({"success": true})))
                }
                Some("enabled") => Ok(json_resp(StatusCode::OK, &json!({"success": true}))),
                _ => Ok(json_resp(
                    StatusCode::BAD_REQUEST,
                    &json!({"success": false, "message": "app_state must be enabled or disabled"}),
                )),
            }
        }
        GET_APP_STATE if req.method() == Method::GET => {
            let property = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "propertyID")
                .map(|(_, v)| v.into_owned());
            let state = property.and_then(|p| inner.app_states().get(&p).cloned());
            Ok(match state {
                Some(state) => json_resp(
                    StatusCode::OK,
                    &json!({"success": true, "data": {"app_state": state}}),
                ),
                None => json_resp(
                    StatusCode::OK,
                    &json!({"success": false, "message": "None of the included property id's match the access_token user's property id"}),
                ),
            })
        }
        "/hop" => {
            let mut r = echo(req, user, None).await?;
            let h = r.headers_mut();
            for (name, value) in [
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic"),
                ("trailer", "x-t"),
                ("connection", "x-hop"),
            ] {
                h.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            Ok(r)
        }
        _ => echo(req, user, hotels).await,
    }
}

/// JSON description of the request; the body is hashed as its chunks arrive. `hotels`: a
/// `getHotels` answer's `data`, added with `"success": true`.
async fn echo(
    req: Request<Incoming>,
    user: Option<String>,
    hotels: Option<Vec<Value>>,
) -> Result<Resp, BoxError> {
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            hasher.update(&data);
            len += data.len() as u64;
        }
    }
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        if let Value::Array(values) = headers
            .entry(name.as_str())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            values.push(value);
        }
    }
    let mut body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": len,
        "body_sha256": super::hex(&hasher.finalize()),
        "user": user,
    });
    if let Some(hotels) = hotels {
        body["success"] = json!(true);
        body["data"] = Value::Array(hotels);
    }
    Ok(json_resp(StatusCode::OK, &body))
}

/// The values of header `name` in the upstream's echo of a request.
pub fn echoed(response: &super::TestResponse, name: &str) -> Vec<String> {
    response.json()["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Streams `total` bytes of [`pattern_bytes`] in 64 KiB frames.
struct PatternBody {
    sent: u64,
    total: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= self.total {
            return Poll::Ready(None);
        }
        let n = CHUNK.min(self.total - self.sent);
        let chunk: Vec<u8> = (self.sent..self.sent + n)
            .map(|i| (i % 251) as u8)
            .collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}
