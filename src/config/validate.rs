//! Raw schema -> validated [`Config`]: parse addresses, URLs, durations and sizes, apply
//! provider presets, check cross-key rules. Problems are collected, not stopped at, so one
//! run of `bearerd check` shows every mistake.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::keys::{RawKeys, keys};
use super::preset::preset;
use super::raw::{RawAdmin, RawConfig, RawConnection, RawLimits, RawNotify, RawStore};
use super::tenants::{self, TenantsConfig};
use super::{
    AdminConfig, ClientAuth, Config, ConfigError, ConnectionConfig, Credentials, GrantKind, Limits,
    NotifyConfig, Over, Problem, Provider, RateLimitConfig, RateScope, Revocation, RuntimeConfig,
    StoreConfig, StoreKind, parse_duration, parse_size,
};

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
const DEFAULT_REPLAY_LIMIT: u64 = 1 << 20;
/// An admin `auth_token` shorter than this is guessable: a config error.
const MIN_AUTH_TOKEN_LEN: usize = 16;

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records the error of `result` under `key` and turns it into an `Option`.
    fn check<T>(&mut self, key: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(key, message);
                None
            }
        }
    }
}

pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let admin = admin(raw.admin, &mut problems);
    let store = store(raw.store, &mut problems);
    let shutdown_grace = raw
        .shutdown_grace
        .map(|text| problems.check("shutdown_grace", parse_duration(&text)))
        .unwrap_or(Some(Duration::from_secs(10)));
    let runtime = RuntimeConfig {
        worker_threads: raw.runtime.as_ref().and_then(|r| r.worker_threads),
        fast_path: raw
            .runtime
            .as_ref()
            .and_then(|r| r.fast_path)
            .unwrap_or(true),
    };
    let limits = limits(raw.limits, &mut problems);
    let notify = raw.notify.and_then(|n| notify(n, &mut problems));
    if runtime.worker_threads == Some(0) {
        problems.add("runtime.worker_threads", "must be at least 1");
    }

    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    if let Some(admin) = &admin {
        listens.insert(admin.listen);
    }
    let mut connections = Vec::new();
    for (index, raw_connection) in raw.connection.into_iter().enumerate() {
        let key = format!("connection[{index}]");
        if !names.insert(raw_connection.name.clone()) {
            problems.add(
                format!("{key}.name"),
                format!("`{}` is used by another connection", raw_connection.name),
            );
        }
        let public_url = admin.as_ref().map(|a| a.public_url.as_str());
        if let Some(connection) = connection(&key, raw_connection, public_url, &mut problems) {
            if connection.listen.port() != 0 && !listens.insert(connection.listen) {
                problems.add(
                    format!("{key}.listen"),
                    format!("{} is used by another listener", connection.listen),
                );
            }
            connections.push(connection);
        }
    }

    match (admin, store, shutdown_grace, problems.0.is_empty()) {
        (Some(admin), Some(store), Some(shutdown_grace), true) => Ok(Config {
            admin,
            store,
            runtime,
            limits,
            notify,
            shutdown_grace,
            connections,
        }),
        _ => Err(ConfigError {
            problems: problems.0,
        }),
    }
}

fn admin(raw: Option<RawAdmin>, problems: &mut Problems) -> Option<AdminConfig> {
    let raw = raw.unwrap_or(RawAdmin {
        listen: None,
        public_url: None,
        auth_token: None,
        allow_clients: None,
    });
    let allow_clients = allow_clients("admin.allow_clients", raw.allow_clients, problems);
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let listen = problems.check("admin.listen", socket_addr(listen_text))?;
    let public_url = match raw.public_url {
        Some(text) => {
            let url = problems.check("admin.public_url", http_url(&text))?;
            url.as_str().trim_end_matches('/').to_owned()
        }
        None => format!("http://{listen}"),
    };
    let auth_token = match raw.auth_token {
        Some(source) => Some(problems.check("admin.auth_token", source.resolve())?),
        None => None,
    };
    if let Some(token) = &auth_token
        && token.secret().trim().chars().count() < MIN_AUTH_TOKEN_LEN
    {
        problems.add(
            "admin.auth_token",
            format!("is empty or too short: use at least {MIN_AUTH_TOKEN_LEN} random characters"),
        );
        return None;
    }
    if auth_token.is_none() && !listen.ip().is_loopback() {
        problems.add(
            "admin.auth_token",
            format!("required because admin.listen ({listen}) is not a loopback address"),
        );
        return None;
    }
    Some(AdminConfig {
        listen,
        public_url,
        auth_token,
        allow_clients: allow_clients?,
    })
}

fn limits(raw: Option<RawLimits>, problems: &mut Problems) -> Limits {
    let defaults = Limits::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let mut duration = |key: &str, value: Option<String>, default: Duration| {
        let Some(text) = value else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                problems.add(format!("limits.{key}"), "must be more than 0s");
                default
            }
            Ok(d) => d,
            Err(message) => {
                problems.add(format!("limits.{key}"), message);
                default
            }
        }
    };
    let limits = Limits {
        client_header_timeout: duration(
            "client_header_timeout",
            raw.client_header_timeout,
            defaults.client_header_timeout,
        ),
        client_idle_timeout: duration(
            "client_idle_timeout",
            raw.client_idle_timeout,
            defaults.client_idle_timeout,
        ),
        client_body_timeout: duration(
            "client_body_timeout",
            raw.client_body_timeout,
            defaults.client_body_timeout,
        ),
        max_connections: raw.max_connections.unwrap_or(defaults.max_connections),
    };
    if limits.max_connections == 0 {
        problems.add("limits.max_connections", "must be at least 1");
    }
    limits
}

/// Parses a list of CIDR networks (`10.0.0.0/8`) or single addresses (`10.1.2.3`).
fn allow_clients(
    key: &str,
    raw: Option<Vec<String>>,
    problems: &mut Problems,
) -> Option<Vec<IpNet>> {
    let mut networks = Vec::new();
    let mut ok = true;
    for (i, text) in raw.unwrap_or_default().iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => networks.push(net.trunc()),
            Err(_) => {
                problems.add(
                    format!("{key}[{i}]"),
                    format!("`{text}` is not a network like \"10.0.0.0/8\" or an address"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(networks)
}

fn store(raw: Option<RawStore>, problems: &mut Problems) -> Option<StoreConfig> {
    let raw = raw.unwrap_or(RawStore {
        kind: None,
        dir: None,
        url: None,
        key: None,
    });
    let kind = match raw.kind.as_deref().unwrap_or("file") {
        "file" => {
            if raw.url.is_some() {
                problems.add("store.url", "only used with kind = \"postgres\"");
            }
            StoreKind::File {
                dir: raw.dir.unwrap_or_else(|| PathBuf::from("./bearerd-data")),
            }
        }
        "postgres" => {
            if raw.dir.is_some() {
                problems.add("store.dir", "only used with kind = \"file\"");
            }
            match raw.url {
                Some(url) => StoreKind::Postgres { url },
                None => {
                    problems.add("store.url", "required with kind = \"postgres\"");
                    return None;
                }
            }
        }
        other => {
            problems.add(
                "store.kind",
                format!("`{other}` is not one of \"file\", \"postgres\""),
            );
            return None;
        }
    };
    if let Some(source) = &raw.key {
        // Checked here so that a malformed key stops `bearerd check` too; whether it opens
        // the stored records is checked when the store opens.
        let parsed = source.resolve().and_then(|text| {
            crate::store::seal::parse_key(text.secret()).map_err(|e| e.to_string())
        });
        if let Err(message) = parsed {
            problems.add("store.key", message);
        }
    }
    Some(StoreConfig { kind, key: raw.key })
}

fn connection(
    key: &str,
    mut raw: RawConnection,
    public_url: Option<&str>,
    problems: &mut Problems,
) -> Option<ConnectionConfig> {
    let before = problems.0.len();
    let k = |field: &str| format!("{key}.{field}");
    if !valid_name(&raw.name) {
        problems.add(
            k("name"),
            format!("`{}` must match [a-z0-9][a-z0-9-]{{0,62}}", raw.name),
        );
    }
    let provider = match raw.provider.as_str() {
        "cloudbeds" => Some(Provider::Cloudbeds),
        "apaleo" => Some(Provider::Apaleo),
        "oauth2" => Some(Provider::OAuth2),
        other => {
            problems.add(
                k("provider"),
                format!("`{other}` is not one of \"cloudbeds\", \"apaleo\", \"oauth2\""),
            );
            None
        }
    };
    let grant = match raw.grant.as_deref().unwrap_or("authorization_code") {
        "authorization_code" => Some(GrantKind::AuthorizationCode),
        "client_credentials" => Some(GrantKind::ClientCredentials),
        "api_key" => Some(GrantKind::ApiKey),
        other => {
            problems.add(
                k("grant"),
                format!(
                    "`{other}` is not one of \"authorization_code\", \"client_credentials\", \
                     \"api_key\""
                ),
            );
            None
        }
    };
    let listen = problems.check(k("listen"), socket_addr(&raw.listen));
    let upstream = problems.check(k("upstream"), http_url(&raw.upstream));
    if let Some(upstream) = &upstream
        && (upstream.query().is_some() || upstream.fragment().is_some())
    {
        problems.add(k("upstream"), "must not have a query or fragment");
    }
    let issuer = raw
        .issuer
        .map(|text| problems.check(k("issuer"), http_url(&text).map(|_| text)));
    let client_auth = match raw.client_auth.as_deref() {
        None => None,
        Some("client_secret_post") => Some(ClientAuth::ClientSecretPost),
        Some("client_secret_basic") => Some(ClientAuth::ClientSecretBasic),
        Some(other) => {
            problems.add(
                k("client_auth"),
                format!("`{other}` is not one of \"client_secret_post\", \"client_secret_basic\""),
            );
            None
        }
    };
    let mut url_key = |field: &str, value: Option<String>| {
        value.and_then(|text| problems.check(k(field), http_url(&text)))
    };
    let token_url = url_key("token_url", raw.token_url);
    let authorize_url = url_key("authorize_url", raw.authorize_url);
    let revoke_url = url_key("revoke_url", raw.revoke_url);
    let redirect_uri = url_key("redirect_uri", raw.redirect_uri);
    let duration =
        |problems: &mut Problems, field: &str, value: Option<String>, default| match value {
            Some(text) => problems.check(k(field), parse_duration(&text)),
            None => Some(default),
        };
    let timeout = duration(problems, "timeout", raw.timeout, Duration::from_secs(30));
    let connect_timeout = duration(
        problems,
        "connect_timeout",
        raw.connect_timeout,
        Duration::from_secs(5),
    );
    let token_timeout = duration(
        problems,
        "token_timeout",
        raw.token_timeout,
        Duration::from_secs(60),
    );
    let token_wait = duration(
        problems,
        "token_wait",
        raw.token_wait,
        Duration::from_secs(10),
    );
    let allow_clients = allow_clients(&k("allow_clients"), raw.allow_clients, problems);
    if let (Some(listen), Some(networks)) = (&listen, &allow_clients)
        && !listen.ip().is_loopback()
        && networks.is_empty()
    {
        problems.add(
            k("allow_clients"),
            format!(
                "required because listen ({listen}) is not a loopback address: anyone who reaches \
                 it would act as the hotel's app; list the networks that may use it"
            ),
        );
    }
    // Optional keys: `Some(None)` records a problem without stopping the collection.
    let refresh_skew = raw
        .refresh_skew
        .map(|text| problems.check(k("refresh_skew"), parse_duration(&text)));
    let replay_body_limit = match raw.replay_body_limit {
        Some(text) => problems.check(k("replay_body_limit"), parse_size(&text)),
        None => Some(DEFAULT_REPLAY_LIMIT),
    };
    let max_body = raw
        .max_body
        .map(|text| problems.check(k("max_body"), parse_size(&text)));
    if let Some(probe) = &raw.probe
        && !probe.starts_with('/')
    {
        problems.add(k("probe"), "must be a path starting with `/`");
    }
    for (i, scope) in raw.scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            problems.add(
                format!("{key}.scopes[{i}]"),
                "must be a non-empty word without spaces",
            );
        }
    }

    let app_settings = (
        raw.tenants.take(),
        raw.tenant_claim.take(),
        raw.token_concurrency.take(),
    );
    let rate_limit = raw
        .rate_limit
        .map(|value| rate_limit(&k("rate_limit"), &value, problems));
    let (provider, grant) = (provider?, grant?);
    let preset = preset(provider);
    let raw_keys = RawKeys {
        provider,
        grant,
        api_key: raw.api_key.as_ref(),
        api_key_header: raw.api_key_header.as_deref(),
        keepalive: raw.keepalive.as_deref(),
        probe: raw.probe.as_deref(),
        has_client_id: raw.client_id.is_some(),
    };
    let keys = match keys(&raw_keys, &preset) {
        Ok(mut keys) => {
            if let Some(Err(reason)) = &mut keys.configured {
                *reason = format!("{key}.{reason}");
            }
            Some(keys)
        }
        Err(found) => {
            for (field, message) in found {
                problems.add(k(&field), message);
            }
            None
        }
    };
    // A key from the config needs no token endpoint and no browser flow.
    let configured_key = grant == GrantKind::ApiKey && raw.api_key.is_some();
    if raw.client_id.is_none() && !configured_key {
        problems.add(
            k("client_id"),
            "is required (only a grant = \"api_key\" connection with api_key can do without)",
        );
    }
    let rate_limit = match rate_limit {
        None => preset.rate_limit,
        Some(RateLimitChoice::Off) => None,
        Some(RateLimitChoice::On(config)) => Some(config),
        Some(RateLimitChoice::Invalid) => None,
    };
    let issuer = issuer.flatten();
    // With an issuer, discovery at start fills what the file leaves out; presets do not.
    let from_preset = |value: Option<&'static str>| {
        value
            .filter(|_| issuer.is_none())
            .and_then(|u| Url::parse(u).ok())
    };
    let token_url = token_url.or_else(|| from_preset(preset.token_url));
    if token_url.is_none() && issuer.is_none() && !configured_key {
        problems.add(
            k("token_url"),
            "required for provider = \"oauth2\" (or set issuer for discovery)",
        );
    }
    let authorize_url = authorize_url.or_else(|| from_preset(preset.authorize_url));
    let browser_flow =
        grant == GrantKind::AuthorizationCode || (grant == GrantKind::ApiKey && !configured_key);
    if browser_flow && authorize_url.is_none() && issuer.is_none() {
        problems.add(
            k("authorize_url"),
            format!(
                "required for provider = \"oauth2\" with grant = \"{}\" (or set issuer)",
                grant.as_str()
            ),
        );
    }
    let upstream = upstream?;
    let revocation = match (revoke_url, provider) {
        (Some(url), _) => Revocation::Rfc7009(url),
        (None, Provider::Cloudbeds) => match upstream.join("/api/v1.3/postAppState") {
            Ok(url) => Revocation::CloudbedsAppState(url),
            Err(_) => Revocation::None,
        },
        (None, _) => match from_preset(preset.revoke_url) {
            Some(url) => Revocation::Rfc7009(url),
            None => Revocation::None,
        },
    };
    let mut scopes = raw.scopes;
    if grant == GrantKind::AuthorizationCode {
        for extra in preset.refresh_scopes {
            if !scopes.iter().any(|s| s == extra) {
                scopes.push((*extra).to_owned());
            }
        }
    }
    let redirect_uri = match redirect_uri {
        Some(url) => url,
        None => {
            let base = public_url?;
            problems.check(
                k("redirect_uri"),
                http_url(&format!("{base}/oauth/callback")),
            )?
        }
    };
    let credentials = credentials(key, raw.client_id.as_ref(), raw.client_secret.as_ref());
    let tenants = app(key, app_settings, grant, provider, problems);
    if tenants.is_some() && configured_key {
        // One property's key cannot serve an app's many hotels: each tenant's key comes
        // from its own install.
        problems.add(
            k("api_key"),
            "not used by an app (`tenants`): each tenant's key comes from its install \
             (automatic delivery); remove api_key, or remove tenants for one property",
        );
    }
    if problems.0.len() > before {
        return None;
    }
    Some(ConnectionConfig {
        name: raw.name,
        provider,
        listen: listen?,
        upstream,
        grant,
        credentials,
        scopes,
        redirect_uri,
        token_url,
        authorize_url,
        issuer,
        revocation,
        client_auth: client_auth.unwrap_or(preset.client_auth),
        refresh_skew: refresh_skew.flatten(),
        replay_body_limit: replay_body_limit?,
        max_body: max_body.flatten(),
        timeout: timeout?,
        connect_timeout: connect_timeout?,
        token_timeout: token_timeout?,
        token_wait: token_wait?,
        allow_clients: allow_clients?,
        rate_limit,
        probe: raw.probe,
        ca_file: raw.ca_file,
        keys: keys?,
        tenants,
    })
}

/// `tenants`, `tenant_claim`, `token_concurrency`: the app settings of SPEC section 9.
fn app(
    key: &str,
    (tenants, tenant_claim, token_concurrency): (Option<String>, Option<String>, Option<u32>),
    grant: GrantKind,
    provider: Provider,
    problems: &mut Problems,
) -> Option<TenantsConfig> {
    let k = |field: &str| format!("{key}.{field}");
    let Some(value) = &tenants else {
        for (field, set) in [
            ("tenant_claim", tenant_claim.is_some()),
            ("token_concurrency", token_concurrency.is_some()),
        ] {
            if set {
                problems.add(k(field), "only for an app: set `tenants` too");
            }
        }
        return None;
    };
    let routing = problems.check(k("tenants"), tenants::routing(value));
    let claim = tenant_claim
        .as_deref()
        .and_then(|c| problems.check(k("tenant_claim"), tenants::claim(c)));
    problems.check(
        k("tenants"),
        tenants::check_grant(grant, provider, tenant_claim.as_deref()),
    );
    let token_concurrency = match token_concurrency {
        Some(0) => {
            problems.add(k("token_concurrency"), "must be at least 1");
            None
        }
        Some(n) => Some(n),
        None => Some(tenants::DEFAULT_TOKEN_CONCURRENCY),
    };
    Some(TenantsConfig {
        routing: routing?,
        claim,
        token_concurrency: token_concurrency?,
    })
}

fn credentials(
    key: &str,
    client_id: Option<&super::SecretSource>,
    client_secret: Option<&super::SecretSource>,
) -> Result<Credentials, String> {
    let client_id = match client_id {
        Some(source) => source
            .resolve()
            .map_err(|e| format!("{key}.client_id: {e}")),
        None => Err(format!("{key}.client_id: not set")),
    };
    let client_secret = client_secret
        .map(|source| {
            source
                .resolve()
                .map_err(|e| format!("{key}.client_secret: {e}"))
        })
        .transpose();
    // Every unreadable secret at once, so one fix-and-check round is enough.
    match (client_id, client_secret) {
        (Ok(client_id), Ok(client_secret)) => Ok(Credentials {
            client_id,
            client_secret,
        }),
        (id, secret) => Err([id.err(), secret.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    !bytes.is_empty() && bytes.len() <= 63 && bytes[0] != b'-' && bytes.iter().all(allowed)
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address like \"127.0.0.1:8081\""))
}

fn http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        )),
    }
}

enum RateLimitChoice {
    Off,
    On(RateLimitConfig),
    /// A problem was recorded.
    Invalid,
}

/// `rate_limit = false` or `{ rps, burst, per, over, max_wait }`; every mistake names its key.
fn rate_limit(key: &str, value: &toml::Value, problems: &mut Problems) -> RateLimitChoice {
    let table = match value {
        toml::Value::Boolean(false) => return RateLimitChoice::Off,
        toml::Value::Table(table) => table,
        _ => {
            problems.add(
                key,
                "must be false or a table like { rps = 10, burst = 10, per = \"connection\", \
                 over = \"wait\", max_wait = \"5s\" }",
            );
            return RateLimitChoice::Invalid;
        }
    };
    let before = problems.0.len();
    for unknown in table
        .keys()
        .filter(|k| !["rps", "burst", "per", "over", "max_wait"].contains(&k.as_str()))
    {
        problems.add(
            format!("{key}.{unknown}"),
            "unknown key (expected rps, burst, per, over, max_wait)",
        );
    }
    let mut count = |field: &str, required: bool| -> Option<u32> {
        match table.get(field) {
            None if required => {
                problems.add(format!("{key}.{field}"), "is required");
                None
            }
            None => None,
            Some(toml::Value::Integer(n)) if (1..=100_000).contains(n) => u32::try_from(*n).ok(),
            Some(_) => {
                problems.add(
                    format!("{key}.{field}"),
                    "must be a whole number from 1 to 100000",
                );
                None
            }
        }
    };
    let rps = count("rps", true);
    let burst = count("burst", false);
    let mut word = |field: &str, allowed: &[&str], default: &'static str| -> Option<String> {
        match table.get(field) {
            None => Some(default.to_owned()),
            Some(toml::Value::String(text)) if allowed.contains(&text.as_str()) => {
                Some(text.clone())
            }
            Some(_) => {
                let choices: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
                problems.add(
                    format!("{key}.{field}"),
                    format!("must be one of {}", choices.join(", ")),
                );
                None
            }
        }
    };
    let per = word("per", &["connection", "tenant"], "connection");
    let over = word("over", &["wait", "reject"], "wait");
    let max_wait = match table.get("max_wait") {
        None => Some(Duration::from_secs(5)),
        Some(toml::Value::String(text)) => {
            problems.check(format!("{key}.max_wait"), parse_duration(text))
        }
        Some(_) => {
            problems.add(format!("{key}.max_wait"), "must be a duration like \"5s\"");
            None
        }
    };
    if problems.0.len() > before {
        return RateLimitChoice::Invalid;
    }
    match (rps, per, over, max_wait) {
        (Some(rps), Some(per), Some(over), Some(max_wait)) => {
            RateLimitChoice::On(RateLimitConfig {
                rps,
                burst: burst.unwrap_or(rps).min(rps),
                per: if per == "tenant" {
                    RateScope::Tenant
                } else {
                    RateScope::Connection
                },
                over: if over == "reject" {
                    Over::Reject
                } else {
                    Over::Wait
                },
                max_wait,
            })
        }
        _ => RateLimitChoice::Invalid,
    }
}

fn notify(raw: RawNotify, problems: &mut Problems) -> Option<NotifyConfig> {
    let url = problems.check("notify.url", http_url(&raw.url));
    let secret = problems.check("notify.secret", raw.secret.resolve())?;
    // The message says what is wrong with the format, never the value.
    problems.check(
        "notify.secret",
        crate::notify::deliver::parse_secret(secret.secret()),
    )?;
    Some(NotifyConfig { url: url?, secret })
}
