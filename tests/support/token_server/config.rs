//! Public configuration and log types of the test token server.

use std::time::Duration;

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
    /// Handle the request normally (commit any rotation), then hold the answer this long:
    /// a provider that stalls after acting, so a client that gives up first loses the answer.
    CommitThenStall(Duration),
    /// 503 `temporarily_unavailable` whose `error_description` echoes the request's
    /// `Authorization` header and body (client secret and refresh token included), as a
    /// misbehaving provider might.
    EchoBody503,
    /// Hold the request until [`super::TokenServer::release_stalled`], then handle it normally
    /// (a token endpoint that hangs while the test looks at what else still works).
    Stall,
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
