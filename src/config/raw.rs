//! The config file as written: a serde schema that rejects unknown keys. `config.rs` turns it
//! into the validated, typed [`Config`](super::Config).

use std::path::PathBuf;

use serde::Deserialize;

use super::secret::SecretSource;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub store: Option<RawStore>,
    pub runtime: Option<RawRuntime>,
    pub limits: Option<RawLimits>,
    pub notify: Option<RawNotify>,
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    pub connection: Vec<RawConnection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub auth_token: Option<SecretSource>,
    pub allow_clients: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub dir: Option<PathBuf>,
    pub url: Option<SecretSource>,
    pub key: Option<SecretSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub worker_threads: Option<usize>,
    pub fast_path: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub url: String,
    pub secret: SecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub client_header_timeout: Option<String>,
    pub client_idle_timeout: Option<String>,
    pub client_body_timeout: Option<String>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnection {
    pub name: String,
    pub provider: String,
    pub listen: String,
    pub upstream: String,
    pub grant: Option<String>,
    /// Required unless `grant = "api_key"` with `api_key` (a key from the config).
    pub client_id: Option<SecretSource>,
    pub client_secret: Option<SecretSource>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub redirect_uri: Option<String>,
    pub token_url: Option<String>,
    pub authorize_url: Option<String>,
    pub revoke_url: Option<String>,
    pub issuer: Option<String>,
    pub client_auth: Option<String>,
    pub refresh_skew: Option<String>,
    pub replay_body_limit: Option<String>,
    pub max_body: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub token_timeout: Option<String>,
    pub token_wait: Option<String>,
    pub allow_clients: Option<Vec<String>>,
    /// `false`, or a table; checked by hand so that each mistake names its key.
    pub rate_limit: Option<toml::Value>,
    pub probe: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `grant = "api_key"`: a key from the config instead of automatic delivery.
    pub api_key: Option<SecretSource>,
    /// The header a key is sent in (preset `x-api-key` for cloudbeds).
    pub api_key_header: Option<String>,
    /// Idle time after which a key gets one cheap authenticated call.
    pub keepalive: Option<String>,
    /// `"header:NAME"` or `"path"`: the connection is an app with many tenants (SPEC 9).
    pub tenants: Option<String>,
    /// oauth2 apps: a JSON pointer into the token response (or its id_token's claims).
    pub tenant_claim: Option<String>,
    /// Token requests in flight at once for one app's tenants.
    pub token_concurrency: Option<u32>,
}
