//! API keys (SPEC section 10): a long-lived credential sent in its own header (`x-api-key`
//! for Cloudbeds) instead of `Authorization`, never refreshed. What the refresher needs to
//! hold one ([`KeySettings`]), the header value, and the keep-alive schedule as a pure
//! function of the last use.
//!
//! A key reaches a connection three ways: from the config (`api_key = ...`), from the
//! connect flow with automatic delivery (the code exchanged with
//! [`API_KEY_GRANT`]), or by migrating a stored refresh token
//! ([`REFRESH_TOKEN_EXCHANGE`]). The last two are stored like tokens (encrypted with
//! `store.key`), marked [`crate::store::Credential::ApiKey`] so that no process sharing the
//! store, before or after a restart, ever redeems a refresh token for that connection again:
//! the provider invalidates the key when the OAuth refresh is used.

use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};
use url::Url;

use super::oauth::GrantRequest;
use super::refresher::Grant;
use super::state::ConnState;
use super::{TokenState, bearer_header};
use crate::config::{ConnectionConfig, GrantKind, KeepaliveCall};
use crate::secret::SecretString;
use crate::upstream::HttpClient;

/// `grant_type` of the code exchange that delivers a key (Cloudbeds automatic delivery).
pub const API_KEY_GRANT: &str = "urn:ietf:params:oauth:grant-type:api-key";
/// `grant_type` that exchanges a refresh token for a key (Cloudbeds migration).
pub const REFRESH_TOKEN_EXCHANGE: &str = "refresh_token_exchange";
/// Cloudbeds' cheap "is this credential valid" call, on the upstream's host.
pub const CLOUDBEDS_TOKEN_CHECK: &str = "/api/v1.2/access_token_check";

/// What `last_error` says when the provider refused a key.
pub const KEY_REJECTED: &str = "the provider rejected the API key: it was revoked or is wrong";

/// How a connection's refresher holds API keys.
#[derive(Clone)]
pub struct KeySettings {
    /// The header a key goes in; `None`: this connection cannot hold keys.
    pub header: Option<HeaderName>,
    /// `grant = "api_key"`: the connect flow delivers a key instead of tokens.
    pub delivered: bool,
    /// `api_key = ...` in the config: the key is not stored and cannot be replaced here.
    pub configured: bool,
    /// Idle time after which the key gets [`KeepAlive`]'s call.
    pub keepalive: Option<(Duration, KeepAlive)>,
}

/// The keep-alive request, resolved against the upstream.
#[derive(Clone)]
pub struct KeepAlive {
    pub method: http::Method,
    pub url: Url,
    pub client: HttpClient,
    pub timeout: Duration,
}

impl KeepAlive {
    /// The request `call` makes on `upstream`; `None` if the URL cannot be built.
    pub fn new(
        call: &KeepaliveCall,
        upstream: &Url,
        client: HttpClient,
        timeout: Duration,
    ) -> Option<Self> {
        let (method, path) = match call {
            KeepaliveCall::CloudbedsTokenCheck => (http::Method::POST, CLOUDBEDS_TOKEN_CHECK),
            KeepaliveCall::Probe(path) => (http::Method::GET, path.as_str()),
        };
        // `upstream` may carry a base path; the probe is relative to it, the Cloudbeds
        // check is on the API host's root (like postAppState).
        let url = match call {
            KeepaliveCall::CloudbedsTokenCheck => upstream.join(path).ok()?,
            KeepaliveCall::Probe(_) => {
                let base = upstream.as_str().trim_end_matches('/');
                Url::parse(&format!("{base}{path}")).ok()?
            }
        };
        Some(Self {
            method,
            url,
            client,
            timeout,
        })
    }
}

/// The value of a key's header, marked sensitive. `None` if the key has characters a header
/// cannot carry.
pub fn key_header(key: &SecretString) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(key.secret()).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// When an idle key is due for its keep-alive call: `idle` after its last use.
pub fn keepalive_due(last_used: SystemTime, idle: Duration) -> SystemTime {
    last_used + idle
}

/// How long from `now` until `due` (zero if it has passed).
pub fn until(due: SystemTime, now: SystemTime) -> Duration {
    due.duration_since(now).unwrap_or_default()
}

impl TokenState {
    /// A cell holding `key` (sent in `header`) as `generation`, connected; `None` if the key
    /// cannot be a header value.
    pub fn with_key(header: HeaderName, key: &SecretString, generation: u64) -> Option<Self> {
        let value = key_header(key)?;
        let mut state = Self::initial(ConnState::Connected, None);
        state.generation = generation;
        state.bearer = Some(value);
        state.key_header = Some(header);
        Some(state)
    }

    /// The same state holding `key` in `header` (or, with `None`, a bearer token).
    pub(crate) fn set_credential(&mut self, value: Option<HeaderValue>, key: Option<HeaderName>) {
        self.bearer = value;
        self.key_header = key;
    }
}

/// `grant = "api_key"` with `api_key = ...`: the key comes from the config.
pub fn from_config(c: &ConnectionConfig) -> bool {
    c.grant == GrantKind::ApiKey && c.keys.configured.is_some()
}

/// How `c`'s refresher holds keys; `client` makes the keep-alive call.
pub fn settings(c: &ConnectionConfig, client: &HttpClient) -> KeySettings {
    KeySettings {
        header: c.keys.header.clone(),
        delivered: c.grant == GrantKind::ApiKey && c.keys.configured.is_none(),
        configured: from_config(c),
        keepalive: c.keys.keepalive.as_ref().and_then(|(idle, call)| {
            let call = KeepAlive::new(call, &c.upstream, client.clone(), c.timeout)?;
            Some((*idle, call))
        }),
    }
}

/// For a key from the config: the cell the connection starts with (the key as generation 1,
/// or `misconfigured` saying why it cannot be used) and the refresher's grant.
pub fn configured_state(c: &ConnectionConfig) -> Option<(TokenState, Grant)> {
    let configured = c.keys.configured.as_ref()?;
    if c.grant != GrantKind::ApiKey {
        return None;
    }
    let misconfigured = |why: String| {
        let state = TokenState::initial(ConnState::Misconfigured, Some(why));
        Some((state, Grant::None))
    };
    let key = match configured {
        Ok(key) => key,
        Err(reason) => {
            tracing::error!(connection = %c.name, %reason, "the API key cannot be read: the connection starts misconfigured");
            return misconfigured(crate::config::unreadable_credential(reason));
        }
    };
    let Some(header) = c.keys.header.clone() else {
        return misconfigured("api_key_header: not set".into());
    };
    match TokenState::with_key(header, key, 1) {
        Some(state) => Some((state, Grant::ApiKey)),
        None => misconfigured("api_key: not a value a header can carry".into()),
    }
}

impl<'a> GrantRequest<'a> {
    /// The exchange of an authorization code: for an API key when the connection's (or
    /// app's) flow delivers keys (`grant = "api_key"`), else for tokens.
    pub fn code(
        key: bool,
        code: &'a SecretString,
        verifier: &'a SecretString,
        redirect_uri: &'a str,
    ) -> Self {
        if key {
            Self::ApiKeyCode {
                code,
                verifier,
                redirect_uri,
            }
        } else {
            Self::AuthorizationCode {
                code,
                verifier,
                redirect_uri,
            }
        }
    }
}

/// Builds the value for a token or a key, as `header` says.
pub(crate) fn credential_value(
    secret: &SecretString,
    header: Option<&HeaderName>,
) -> Option<HeaderValue> {
    match header {
        Some(_) => key_header(secret),
        None => bearer_header(secret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_in_its_own_header_unprefixed_and_sensitive() {
        let header = HeaderName::from_static("x-api-key");
        let state =
            TokenState::with_key(header, &SecretString::new("cbat_k1".to_owned()), 3).unwrap();
        let token = state.usable(tokio::time::Instant::now()).unwrap();
        assert_eq!(token.name.as_str(), "x-api-key");
        assert_eq!(token.header, "cbat_k1");
        assert!(token.header.is_sensitive());
        assert!(token.is_key());
        assert_eq!(token.secret(), "cbat_k1");
        assert_eq!(token.generation, 3);
        assert!(key_header(&SecretString::new("bad\nkey".to_owned())).is_none());
    }

    #[test]
    fn keepalive_is_due_idle_after_the_last_use() {
        let used = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let due = keepalive_due(used, Duration::from_secs(60));
        assert_eq!(until(due, used), Duration::from_secs(60));
        assert_eq!(until(due, due + Duration::from_secs(5)), Duration::ZERO);
    }
}
