//! Provider presets: the endpoint URLs and conventions that `provider = "..."` fills in.
//! Any key set in the file wins over the preset.

use std::time::Duration;

use super::{ClientAuth, Over, Provider, RateLimitConfig, RateScope};

pub struct Preset {
    pub authorize_url: Option<&'static str>,
    pub token_url: Option<&'static str>,
    pub revoke_url: Option<&'static str>,
    pub client_auth: ClientAuth,
    /// Scopes the provider needs for a refresh token with the authorization-code grant.
    pub refresh_scopes: &'static [&'static str],
    /// The provider's documented request budget, applied unless `rate_limit = false`.
    pub rate_limit: Option<RateLimitConfig>,
    /// The header an API key goes in, if the provider issues keys.
    pub api_key_header: Option<&'static str>,
    /// How long a key may stay unused before it gets a keep-alive call.
    pub keepalive: Option<Duration>,
}

/// Cloudbeds deletes keys unused for 30 days (PROVIDERS.md section 1b); a week leaves room
/// for a keep-alive that fails a few times.
const CLOUDBEDS_KEEPALIVE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Cloudbeds: 10 requests a second per partner client id; credentials of a partner that
/// goes over may be suspended (PROVIDERS.md section 1b).
const CLOUDBEDS_RATE_LIMIT: RateLimitConfig = RateLimitConfig {
    rps: 10,
    burst: 10,
    per: RateScope::Connection,
    over: Over::Wait,
    max_wait: Duration::from_secs(5),
};

pub fn preset(provider: Provider) -> Preset {
    match provider {
        Provider::Cloudbeds => Preset {
            authorize_url: Some("https://hotels.cloudbeds.com/api/v1.3/oauth"),
            token_url: Some("https://api.cloudbeds.com/api/v1.3/access_token"),
            // Cloudbeds has no RFC 7009 endpoint: disconnect is postAppState on the upstream.
            revoke_url: None,
            client_auth: ClientAuth::ClientSecretPost,
            refresh_scopes: &[],
            rate_limit: Some(CLOUDBEDS_RATE_LIMIT),
            api_key_header: Some("x-api-key"),
            keepalive: Some(CLOUDBEDS_KEEPALIVE),
        },
        Provider::Apaleo => Preset {
            authorize_url: Some("https://identity.apaleo.com/connect/authorize"),
            token_url: Some("https://identity.apaleo.com/connect/token"),
            revoke_url: Some("https://identity.apaleo.com/connect/revocation"),
            client_auth: ClientAuth::ClientSecretPost,
            refresh_scopes: &["offline_access"],
            rate_limit: None,
            api_key_header: None,
            keepalive: None,
        },
        Provider::OAuth2 => Preset {
            authorize_url: None,
            token_url: None,
            revoke_url: None,
            client_auth: ClientAuth::ClientSecretBasic,
            refresh_scopes: &[],
            rate_limit: None,
            api_key_header: None,
            keepalive: None,
        },
    }
}
