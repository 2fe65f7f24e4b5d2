//! Scriptable OAuth 2.0 token server for integration tests (PROVIDERS.md §4).
//!
//! `POST /token` supports `client_credentials` and `refresh_token` grants, `client_secret_basic`
//! and `client_secret_post`, four refresh-token rotation modes, optional invalidation of the
//! previous access token on refresh, Cloudbeds response shapes, and a FIFO of scripted failures.
//! `POST /revoke` is RFC 7009. Access tokens are checked by [`TokenServer::validate_access`]
//! (called by the upstream). Time is `tokio::time::Instant`, so paused-clock tests work.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use rand::RngExt;
use rand::distr::Alphanumeric;
use tokio::time::Instant;

use super::BoxError;

mod endpoint;
mod wire;

/// Which client authentication methods the token endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_secret_post` only.
    Post,
    /// `client_secret_basic` only.
    Basic,
    /// Either method (never both in one request).
    #[default]
    Either,
}

/// Refresh-token rotation, PROVIDERS.md §4 rule 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rotation {
    /// (a) The same refresh token is returned and stays valid.
    Reuse,
    /// (b) One-time use; presenting a consumed token revokes the whole grant.
    #[default]
    Strict,
    /// (c) One-time use; a consumed token gets `invalid_grant`, nothing else happens.
    OneTime,
    /// (d) The old token keeps returning the same new pair until the new access token is used.
    Grace,
}

#[derive(Clone, Debug)]
pub struct TokenServerConfig {
    pub client_id: String,
    pub client_secret: String,
    pub client_auth: ClientAuth,
    /// Access-token lifetime; `expires_in` is its whole seconds (at least 1). `None`: no
    /// `expires_in` and tokens never expire.
    pub lifetime: Option<Duration>,
    pub rotation: Rotation,
    /// Rule 6: a successful refresh kills every earlier access token of the grant.
    pub kill_previous_access_on_refresh: bool,
    /// Cloudbeds shapes: multipart accepted, `resources` in successes, bad refresh tokens get
    /// 401 `{"error":"invalid_request","message":"The refresh token is invalid."}`.
    pub cloudbeds: bool,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        TokenServerConfig {
            client_id: "test-client".into(),
            client_secret: "test-secret".into(),
            client_auth: ClientAuth::Either,
            lifetime: Some(Duration::from_secs(3600)),
            rotation: Rotation::Strict,
            kill_previous_access_on_refresh: false,
            cloudbeds: false,
        }
    }
}

/// A scripted failure; each one is consumed by exactly one later `POST /token`.
#[derive(Clone, Debug)]
pub enum Failure {
    Status500,
    Status502,
    Status503 {
        retry_after: Option<u64>,
    },
    Status429 {
        retry_after: Option<u64>,
    },
    /// 200 `text/html`.
    Html,
    /// 200 JSON without `access_token`.
    NoAccessToken,
    /// 503 `{"error":"temporarily_unavailable"}`.
    TemporarilyUnavailable,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    InvalidScope,
    /// 401 `{"error":"invalid_request","message":"The refresh token is invalid."}`.
    CloudbedsInvalidRefresh,
    /// Sleep, then handle the request normally.
    Delay(Duration),
    /// Handle the request normally (commit any rotation), then drop the connection unanswered.
    LostResponse,
}

/// One `POST /token` as received (before any check).
#[derive(Clone, Debug)]
pub struct TokenRequestLog {
    pub grant_type: Option<String>,
    pub refresh_token: Option<String>,
    /// `"basic"` if an `Authorization: Basic` header was sent, `"post"` if a body
    /// `client_secret` was, `None` otherwise (validity not considered).
    pub client_auth: Option<&'static str>,
    pub content_type: Option<String>,
    /// The decoded body parameters (empty if the body could not be parsed).
    pub form: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct TokenServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

struct Inner {
    cfg: TokenServerConfig,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Default)]
struct State {
    lifetime: Option<Duration>,
    script: VecDeque<Failure>,
    next_grant: u64,
    revoked_grants: Vec<u64>,
    refresh: HashMap<String, RefreshToken>,
    access: HashMap<String, AccessToken>,
    issued: Vec<String>,
    log: Vec<TokenRequestLog>,
    token_requests: usize,
    cc_requests: usize,
    refresh_requests: usize,
    successful_refreshes: usize,
    reuse_detections: usize,
    revoke_requests: usize,
}

struct RefreshToken {
    grant: u64,
    state: RtState,
}

#[derive(Clone)]
enum RtState {
    Active,
    Consumed,
    /// Grace mode: still usable, replays this pair.
    Grace {
        refresh: String,
        access: String,
    },
}

struct AccessToken {
    grant: Option<u64>,
    expires_at: Option<Instant>,
    killed: bool,
    used: bool,
    /// Grace mode: the refresh token to consume when this access token is first used.
    grace_parent: Option<String>,
}

impl State {
    fn revoked(&self, grant: u64) -> bool {
        self.revoked_grants.contains(&grant)
    }

    fn new_secret(&mut self, prefix: &str) -> String {
        let tail: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let token = format!("{prefix}{tail}");
        self.issued.push(token.clone());
        token
    }

    fn issue_access(&mut self, grant: Option<u64>) -> String {
        let token = self.new_secret("at_");
        let expires_at = self.lifetime.map(|l| Instant::now() + l);
        self.access.insert(
            token.clone(),
            AccessToken {
                grant,
                expires_at,
                killed: false,
                used: false,
                grace_parent: None,
            },
        );
        token
    }

    fn revoke_grant(&mut self, grant: u64) {
        if !self.revoked(grant) {
            self.revoked_grants.push(grant);
        }
        for at in self.access.values_mut().filter(|a| a.grant == Some(grant)) {
            at.killed = true;
        }
    }

    /// `expires_in` for an access token: seconds left, rounded to nearest, at least 1;
    /// `None` if it never expires.
    fn expires_in(&self, access: &str) -> Option<u64> {
        let at = self.access.get(access)?;
        let left = at.expires_at?.saturating_duration_since(Instant::now());
        Some((left + Duration::from_millis(500)).as_secs().max(1))
    }
}

type Resp = Response<Full<Bytes>>;

impl TokenServer {
    pub async fn start(cfg: TokenServerConfig) -> TokenServer {
        let state = State {
            lifetime: cfg.lifetime,
            issued: vec![cfg.client_secret.clone()],
            ..State::default()
        };
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(state),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let handler_inner = inner.clone();
        let addr =
            super::spawn_server(move |req| endpoint::handle(handler_inner.clone(), req)).await;
        TokenServer { inner, addr }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }
    pub fn revoke_url(&self) -> String {
        format!("{}/revoke", self.base_url())
    }
    pub fn client_id(&self) -> String {
        self.inner.cfg.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.inner.cfg.client_secret.clone()
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    /// Creates a new grant and returns its first refresh token.
    pub fn seed_grant(&self) -> String {
        let mut st = self.st();
        st.next_grant += 1;
        let grant = st.next_grant;
        let token = st.new_secret("rt_");
        st.refresh.insert(
            token.clone(),
            RefreshToken {
                grant,
                state: RtState::Active,
            },
        );
        token
    }

    pub fn script(&self, f: Failure) {
        self.st().script.push_back(f);
    }
    pub fn set_lifetime(&self, l: Option<Duration>) {
        self.st().lifetime = l;
    }
    pub fn token_requests(&self) -> usize {
        self.st().token_requests
    }
    pub fn client_credentials_requests(&self) -> usize {
        self.st().cc_requests
    }
    pub fn refresh_requests(&self) -> usize {
        self.st().refresh_requests
    }
    /// Refresh requests answered 200 (Grace replays and LostResponse commits included).
    pub fn successful_refreshes(&self) -> usize {
        self.st().successful_refreshes
    }
    pub fn reuse_detections(&self) -> usize {
        self.st().reuse_detections
    }
    pub fn grant_revoked(&self) -> bool {
        !self.st().revoked_grants.is_empty()
    }
    pub fn revoke_requests(&self) -> usize {
        self.st().revoke_requests
    }
    /// Every `POST /token` received, in order.
    pub fn token_request_log(&self) -> Vec<TokenRequestLog> {
        self.st().log.clone()
    }
    /// Every access and refresh token ever issued, plus the client secret.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.st().issued.clone()
    }
    pub fn kill_all_access_tokens(&self) {
        for at in self.st().access.values_mut() {
            at.killed = true;
        }
    }
    /// Server-side uninstall: revokes every grant and kills every access token
    /// (`client_credentials` still works afterwards; script `InvalidClient` for that case).
    pub fn disconnect(&self) {
        let mut st = self.st();
        let grants: Vec<u64> = (1..=st.next_grant).collect();
        for g in grants {
            st.revoke_grant(g);
        }
        for at in st.access.values_mut() {
            at.killed = true;
        }
    }

    /// Is `token` a live, unexpired access token? Records its first use (Grace mode).
    pub fn validate_access(&self, token: &str) -> bool {
        let mut st = self.st();
        let now = Instant::now();
        let Some(at) = st.access.get(token) else {
            return false;
        };
        let dead = at.killed
            || at.grant.is_some_and(|g| st.revoked(g))
            || at.expires_at.is_some_and(|e| now >= e);
        if dead {
            return false;
        }
        let Some(at) = st.access.get_mut(token) else {
            return false;
        };
        if !at.used {
            at.used = true;
            if let Some(parent) = at.grace_parent.take()
                && let Some(rt) = st.refresh.get_mut(&parent)
                && matches!(rt.state, RtState::Grace { .. })
            {
                rt.state = RtState::Consumed;
            }
        }
        true
    }

    /// Highest number of `/token` requests in flight at once.
    pub fn max_concurrent_token_requests(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
