//! Scriptable OAuth 2.0 token server for integration tests (PROVIDERS.md §4).
//!
//! `POST /token` supports `client_credentials` and `refresh_token` grants, `client_secret_basic`
//! and `client_secret_post`, four refresh-token rotation modes, optional invalidation of the
//! previous access token on refresh, Cloudbeds response shapes, and a FIFO of scripted failures.
//! `POST /revoke` is RFC 7009. Access tokens are checked by [`TokenServer::validate_access`]
//! (called by the upstream). Time is `tokio::time::Instant`, so paused-clock tests work.
//!
//! The authorization-code grant (PROVIDERS.md §4 rule 3) has real pages for a browser:
//! `GET /authorize` (login form), `POST /authorize/login` (consent form) and
//! `POST /authorize/consent` (302 back to the client with `code` or `error=access_denied`);
//! see `authorize.rs`. Users come from [`TokenServer::add_user`]; tokens issued from a code know
//! their user ([`TokenServer::user_of`]). [`TokenServer::authorize_headless`] walks the same pages
//! over HTTP for tests without a browser.
//!
//! Cloudbeds API keys (`keys.rs`): automatic delivery (`grant_type=urn:ietf:params:oauth:
//! grant-type:api-key`), migration (`refresh_token_exchange`), a later OAuth refresh of the
//! grant invalidating its keys, idle lapse, revocation; [`TokenServer::validate_key`].
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

mod authorize;
mod config;
mod discovery;
mod endpoint;
mod headless;
mod keys;
mod pages;
mod wire;

#[allow(unused_imports)]
pub use authorize::{AuthorizeLog, pkce_challenge};
pub use config::{ClientAuth, Failure, Rotation, TokenRequestLog, TokenServerConfig};

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
    /// Permits for requests held by [`Failure::Stall`].
    stall: tokio::sync::Semaphore,
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
    /// Authorization-code grant: username -> password, grant -> user, live codes, login tickets.
    users: HashMap<String, String>,
    grant_users: HashMap<u64, String>,
    codes: HashMap<String, authorize::Code>,
    tickets: HashMap<String, authorize::Ticket>,
    authorize_log: Vec<AuthorizeLog>,
    code_exchanges: usize,
    /// Overrides the issuer in the discovery documents.
    discovery_issuer: Option<String>,
    /// Cloudbeds API keys (`keys.rs`).
    keys: HashMap<String, keys::ApiKey>,
    key_idle: Option<Duration>,
    key_deliveries: usize,
    key_exchanges: usize,
    keys_invalidated_by_refresh: usize,
    keys_lapsed: usize,
    /// Key grants answer without `resources[]`.
    keys_name_no_property: bool,
    /// Cloudbeds mode: the property ids each user's grants cover (`resources[]`); a user
    /// not listed gets property `1`.
    properties: HashMap<String, Vec<String>>,
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

    /// Creates a new grant; returns it and its first refresh token.
    fn new_grant(&mut self) -> (u64, String) {
        self.next_grant += 1;
        let grant = self.next_grant;
        let token = self.new_secret("rt_");
        let state = RtState::Active;
        self.refresh
            .insert(token.clone(), RefreshToken { grant, state });
        (grant, token)
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
            stall: tokio::sync::Semaphore::new(0),
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
        self.st().new_grant().1
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

    /// Revokes the grant that issued `access_token` (as an uninstall would); false if the token
    /// is unknown or came from `client_credentials`.
    pub fn revoke_grant_of(&self, access_token: &str) -> bool {
        let mut st = self.st();
        let Some(grant) = st.access.get(access_token).and_then(|a| a.grant) else {
            return false;
        };
        st.revoke_grant(grant);
        true
    }

    /// Lets one request held by [`Failure::Stall`] go on.
    pub fn release_stalled(&self) {
        self.inner.stall.add_permits(1);
    }

    /// `/token` requests being handled now (a stalled one included).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// Highest number of `/token` requests in flight at once.
    pub fn max_concurrent_token_requests(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Parses a form body as the token endpoint does in Cloudbeds mode (urlencoded or multipart).
pub(crate) fn parse_form_body(ctype: Option<&str>, body: &[u8]) -> Option<Vec<(String, String)>> {
    wire::parse_body(ctype, body, true).ok()
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
