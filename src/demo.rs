//! `bearerd demo`: the real bearerd (config, connect flow with state and PKCE, refresher,
//! file store, proxy, metrics) in front of a simulated provider ([`provider`]), all on
//! 127.0.0.1, with no config file and no credentials: see it work in ten seconds, as
//! `vault server -dev` does for Vault.
//!
//! Two connections show the two shapes of SPEC sections 3 and 9: `demo-hotel`, one hotel's
//! grant on its own listener, and `demo-app`, one app that hotels install, routed by the
//! first path segment (`/1001/hotel`, `/1002/hotel`) on another listener.
//!
//! Only the provider is simulated, and only this command starts it: `bearerd run` never
//! reaches this module.

pub mod clients;
pub mod hotels;
pub mod pages;
pub mod provider;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, AppError};
use crate::config::{Config, ConfigError, Limits};
use crate::connect::random_token;
use clients::{APP_CLIENT_ID, CLIENT_ID};
use provider::Provider;

/// The demo's single-hotel connection.
pub const CONNECTION: &str = "demo-hotel";
/// The demo's app: one client, a tenant per hotel that installs it.
pub const APP: &str = "demo-app";

/// `bearerd demo`'s flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// Access token lifetime at the demo provider.
    pub token_ttl: Duration,
    pub listeners: Listeners,
    /// Keep the data directory on exit.
    pub keep: bool,
}

/// Where the demo's bearerd listens (port 0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    /// The proxy listener of the single-hotel connection (the app's base URL).
    pub listen: SocketAddr,
    /// The proxy listener of the app, whose hotels are the first path segment.
    pub app_listen: SocketAddr,
    /// The admin listener (status page, connect flow, metrics).
    pub admin: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid demo settings:\n{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running demo: the provider, bearerd, and where their data is.
pub struct Demo {
    app: App,
    stop_provider: watch::Sender<bool>,
    pub data_dir: PathBuf,
    pub admin_url: String,
    pub proxy_url: String,
    /// The app's base URL: `{app_url}/1001/hotel` is hotel 1001's `/hotel`.
    pub app_url: String,
    pub provider_url: String,
    keep: bool,
}

impl Demo {
    /// Starts the provider, then bearerd configured for it.
    pub async fn start(options: &Options) -> Result<Demo, DemoError> {
        let provider_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let provider_addr = local_addr(&provider_listener)?;
        let client_secret = random_token(24);
        let app_client_secret = random_token(24);
        let provider = Provider::new(&client_secret, &app_client_secret, options.token_ttl);
        let (stop_provider, stopped) = watch::channel(false);
        let handler = move |request| {
            let provider = provider.clone();
            async move { provider.handle(request).await }
        };
        // The provider's own listener, held to bearerd's default client limits.
        let gate = Arc::new(crate::serve::Gate::new(Limits::default(), Vec::new()));
        tokio::spawn(crate::serve::serve(
            provider_listener,
            gate,
            handler,
            stopped,
        ));

        let data_dir = data_dir()?;
        // The admin URL goes into redirect_uri, so port 0 is settled before the config is.
        let admin = settle_port(options.listeners.admin).await?;
        let provider_url = format!("http://{provider_addr}");
        let config = Config::from_toml_str(&config_text(
            &provider_url,
            [&client_secret, &app_client_secret],
            [options.listeners.listen, options.listeners.app_listen],
            admin,
            &data_dir,
        ))?;
        let app = App::start(config).await?;
        let proxy = app
            .proxy_addr(CONNECTION)
            .unwrap_or(options.listeners.listen);
        let app_proxy = app.proxy_addr(APP).unwrap_or(options.listeners.app_listen);
        Ok(Demo {
            app,
            stop_provider,
            data_dir,
            admin_url: format!("http://{admin}"),
            proxy_url: format!("http://{proxy}"),
            app_url: format!("http://{app_proxy}"),
            provider_url,
            keep: options.keep,
        })
    }

    /// What to open and what to run, for the person who started the demo.
    pub fn instructions(&self, token_ttl: Duration) -> String {
        let kept = if self.keep {
            "kept on exit"
        } else {
            "removed on exit; --keep keeps it"
        };
        format!(
            "bearerd demo: the real bearerd in front of a simulated hotel provider, on this \
             machine only.\n\n\
             \x20 1. Open the status page, click Connect, then Approve at the demo provider:\n\
             \x20      status page:      {admin}/\n\
             \x20 2. Call the hotel's API through bearerd (the app never sees a token):\n\
             \x20      curl {proxy}/hotel\n\
             \x20      curl {proxy}/reservations\n\
             \x20 3. One app, many hotels: install the app twice, choosing Lisbon, then Porto,\n\
             \x20    at the demo provider; the app names the hotel in the path:\n\
             \x20      install:          {admin}/connections/{APP}/install\n\
             \x20      curl {app}/1001/hotel\n\
             \x20      curl {app}/1002/hotel\n\
             \x20 4. Watch tokens (they live {ttl}s) being refreshed before they expire:\n\
             \x20      metrics:          {admin}/metrics\n\
             \x20      provider console: {provider}/   (\"Revoke at provider\" ends a grant:\n\
             \x20                        bearerd answers 503 with the connect URL until you reconnect)\n\n\
             Data: {data} ({kept}). Ctrl-C stops.",
            admin = self.admin_url,
            proxy = self.proxy_url,
            app = self.app_url,
            provider = self.provider_url,
            ttl = token_ttl.as_secs(),
            data = self.data_dir.display(),
        )
    }

    /// Stops bearerd (letting requests finish) and the provider; removes the data unless kept.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
        let _ = self.stop_provider.send(true);
        if !self.keep
            && let Err(error) = std::fs::remove_dir_all(&self.data_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.data_dir.display(), %error, "cannot remove the demo data");
        }
    }
}

/// The demo's bearerd config: an authorization-code connection and an app (its own client,
/// tenants by path, the tenant named by the token response's `hotel_id`) on the demo
/// provider, the same text a user would write for a generic OAuth 2.0 provider.
fn config_text(
    provider: &str,
    [client_secret, app_client_secret]: [&str; 2],
    [listen, app_listen]: [SocketAddr; 2],
    admin: SocketAddr,
    data_dir: &std::path::Path,
) -> String {
    format!(
        r#"shutdown_grace = "2s"

[admin]
listen = "{admin}"

[store]
kind = "file"
dir = {dir}

[[connection]]
name = "{CONNECTION}"
provider = "oauth2"
listen = "{listen}"
upstream = "{provider}/api"
grant = "authorization_code"
authorize_url = "{provider}/authorize"
token_url = "{provider}/token"
revoke_url = "{provider}/revoke"
client_id = "{CLIENT_ID}"
client_secret = "{client_secret}"
client_auth = "client_secret_post"
scopes = ["reservations.read"]
probe = "/hotel"

[[connection]]
name = "{APP}"
provider = "oauth2"
listen = "{app_listen}"
upstream = "{provider}/api"
grant = "authorization_code"
authorize_url = "{provider}/authorize"
token_url = "{provider}/token"
revoke_url = "{provider}/revoke"
client_id = "{APP_CLIENT_ID}"
client_secret = "{app_client_secret}"
client_auth = "client_secret_post"
scopes = ["reservations.read"]
tenants = "path"
tenant_claim = "/hotel_id"
"#,
        dir = toml_string(&data_dir.display().to_string()),
    )
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A fresh, private directory for the demo's store.
fn data_dir() -> Result<PathBuf, DemoError> {
    let path = std::env::temp_dir().join(format!("bearerd-demo-{}", random_token(6)));
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&path).map_err(|source| DemoError::DataDir {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// `addr` with port 0 replaced by a port that was free a moment ago.
async fn settle_port(addr: SocketAddr) -> Result<SocketAddr, DemoError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = bind(addr).await?;
    local_addr(&probe)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, DemoError> {
    listener.local_addr().map_err(|source| DemoError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })
}
