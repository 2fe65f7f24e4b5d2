//! Configuration: the TOML file (SPEC section 2) parsed by a raw serde schema
//! ([`raw`]) and validated into the typed [`Config`] the rest of bearerd uses.
//!
//! Every error names the key path (`connection[0].listen`) and what is wrong, and never
//! echoes a secret's value. A secret that cannot be resolved (an unset environment
//! variable, say) is not a config error: the connection starts `misconfigured` and says why,
//! so one missing credential does not take the other connections down.

mod keys;
mod preset;
mod raw;
mod secret;
pub mod tenants;
mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

pub use secret::SecretSource;
pub use tenants::{TenantRouting, TenantsConfig};
pub use units::{parse_duration, parse_size};

use crate::secret::SecretString;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub runtime: RuntimeConfig,
    /// Limits on app- and browser-facing connections, for every listener (SPEC section 13).
    pub limits: Limits,
    /// Where state changes are announced (SPEC section 12); `None`: nowhere.
    pub notify: Option<NotifyConfig>,
    pub shutdown_grace: Duration,
    pub connections: Vec<ConnectionConfig>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// How browsers reach the admin listener, without a trailing slash.
    pub public_url: String,
    pub auth_token: Option<SecretString>,
    /// Networks that may use the admin listener; empty means everyone who reaches it.
    pub allow_clients: Vec<IpNet>,
}

/// `[notify]`: the receiver of signed state-change events.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub url: Url,
    /// A Standard Webhooks secret, `whsec_<base64>` (checked when the config is loaded).
    pub secret: SecretString,
}

/// Timeouts and caps on the connections clients open to bearerd's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head not complete this long after its first byte (or after the
    /// connection opened) closes the connection.
    pub client_header_timeout: Duration,
    /// A kept-alive connection with no request in flight closes after this.
    pub client_idle_timeout: Duration,
    /// A request body that delivers no byte for this long gets 408 and a close.
    pub client_body_timeout: Duration,
    /// Open connections per listener; above it new ones are closed at once.
    pub max_connections: usize,
}

impl Limits {
    /// The largest request head accepted; larger ones get 431.
    pub const MAX_HEAD_BYTES: usize = 64 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client_header_timeout: Duration::from_secs(10),
            client_idle_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub key: Option<SecretSource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    File { dir: PathBuf },
    Postgres { url: SecretSource },
}

impl StoreKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Postgres { .. } => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Tokio worker threads; `None` means one per core.
    pub worker_threads: Option<usize>,
    /// Serve plain-`http` upstreams through the HTTP/1.1 fast path ([`crate::proxy::h1`]);
    /// false sends every request through hyper.
    pub fast_path: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: None,
            fast_path: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cloudbeds,
    Apaleo,
    OAuth2,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cloudbeds => "cloudbeds",
            Self::Apaleo => "apaleo",
            Self::OAuth2 => "oauth2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// Connect once in a browser, then redeem refresh tokens.
    AuthorizationCode,
    /// Machine to machine: no user, no refresh token.
    ClientCredentials,
    /// A long-lived API key (SPEC section 10): from the config, or delivered by the connect
    /// flow; never refreshed.
    ApiKey,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::ClientCredentials => "client_credentials",
            Self::ApiKey => "api_key",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    ClientSecretPost,
    ClientSecretBasic,
}

/// How to tell the provider that a connection is being disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// RFC 7009 token revocation.
    Rfc7009(Url),
    /// Cloudbeds: `POST {upstream}/api/v1.3/postAppState` with `app_state=disabled`.
    CloudbedsAppState(Url),
    None,
}

/// Client credentials, resolved from their sources at load time.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: SecretString,
    pub client_secret: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: String,
    pub provider: Provider,
    pub listen: SocketAddr,
    pub upstream: Url,
    pub grant: GrantKind,
    /// `Err` says which credential could not be read and why (never its value).
    pub credentials: Result<Credentials, String>,
    pub scopes: Vec<String>,
    pub redirect_uri: Url,
    /// `None` only with `issuer`, until discovery at start fills it.
    pub token_url: Option<Url>,
    pub authorize_url: Option<Url>,
    /// RFC 8414 / OpenID discovery source, exactly as configured.
    pub issuer: Option<String>,
    pub revocation: Revocation,
    pub client_auth: ClientAuth,
    pub refresh_skew: Option<Duration>,
    pub replay_body_limit: u64,
    pub max_body: Option<u64>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// One token-endpoint request, apart from the API `timeout`.
    pub token_timeout: Duration,
    /// How long a request waits for a refresh before it gets 503 with `Retry-After`.
    pub token_wait: Duration,
    /// Networks that may use this proxy listener; empty means everyone who reaches it
    /// (allowed only on a loopback `listen`).
    pub allow_clients: Vec<IpNet>,
    /// Upstream rate limit (SPEC section 11); `None`: unlimited.
    pub rate_limit: Option<RateLimitConfig>,
    pub probe: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `Some`: the connection is an app of many tenants (SPEC section 9).
    pub tenants: Option<tenants::TenantsConfig>,
    /// API keys (SPEC section 10): how a key is sent and kept alive. Used by `grant =
    /// "api_key"` and by a connection whose refresh token was migrated to a key.
    pub keys: KeyConfig,
}

/// How this connection sends and keeps alive an API key.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// The header a key goes in (`x-api-key` for cloudbeds, `api_key_header` otherwise);
    /// `None`: this connection cannot hold a key (no preset header, none configured). The
    /// app's own value of it is never forwarded.
    pub header: Option<http::HeaderName>,
    /// `api_key = ...`: the key from the config (`Err` says why it cannot be read, never
    /// its value). `None`: keys come from the connect flow or a migration.
    pub configured: Option<Result<SecretString, String>>,
    /// A key unused this long gets one authenticated call ([`KeepaliveCall`]); `None`:
    /// never.
    pub keepalive: Option<(Duration, KeepaliveCall)>,
}

/// The cheap authenticated call that keeps an idle key alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepaliveCall {
    /// Cloudbeds: `POST /api/v1.2/access_token_check`, no payload.
    CloudbedsTokenCheck,
    /// `GET` the connection's `probe` path.
    Probe(String),
}

/// `rate_limit = { rps, burst, per, over, max_wait }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests in any one-second window (for all replicas of a postgres store together).
    pub rps: u32,
    /// Of those, at most this many back to back.
    pub burst: u32,
    pub per: RateScope,
    pub over: Over,
    /// The longest a request waits for its turn with `over = "wait"`.
    pub max_wait: Duration,
}

/// What one budget covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// One budget for the connection (a provider counting per client id).
    Connection,
    /// One budget per tenant; the same as `Connection` for a connection without tenants.
    Tenant,
}

/// What happens to a request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Wait its turn, up to `max_wait`, then 429.
    Wait,
    /// 429 at once.
    Reject,
}

/// What is wrong with a config: one line per problem, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }

    /// True if some problem is about this key path.
    pub fn names(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses and validates config text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = parse_raw(text)?;
        validate::validate(raw)
    }
}

/// An unreadable credential as anyone who can ask the admin listener sees it: the key, and
/// the environment variable if that is where it comes from, but never a file path (nor the
/// OS error about it). `reason` is the full text from the connection's `credentials`,
/// `KEY: what went wrong`, for the operator's log and `bearerd check`.
pub fn unreadable_credential(reason: &str) -> String {
    match reason.split_once(": ") {
        Some((_, why)) if why.starts_with("environment variable ") => reason.to_owned(),
        Some((key, _)) => format!("{key}: cannot be read"),
        None => "a credential cannot be read".to_owned(),
    }
}

fn parse_raw(text: &str) -> Result<raw::RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::one(line_of(text, &e), e.message().to_owned()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let key = if path == "." {
            line_of(text, &inner)
        } else {
            path
        };
        // `message()` is the bare message; the error's Display would quote the source line,
        // which could hold a secret.
        ConfigError::one(key, inner.message().to_owned())
    })
}

fn line_of(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "config".to_owned(),
    }
}
