//! Starts bearerd in-process from a TOML config, on `127.0.0.1:0` listeners.

use std::net::SocketAddr;

use bearerd::app::App;
use bearerd::config::Config;

use super::{TokenServer, Upstream};

pub struct Bearerd {
    pub app: App,
    pub admin: String,
}

impl Bearerd {
    pub async fn start(toml: &str) -> Bearerd {
        let config = Config::from_toml_str(toml).expect("test config is valid");
        let app = App::start(config).await.expect("bearerd starts");
        let admin = format!("http://{}", app.admin_addr);
        Bearerd { app, admin }
    }

    /// Base URL of a connection's proxy listener.
    pub fn proxy(&self, name: &str) -> String {
        let addr: SocketAddr = self.app.proxy_addr(name).expect("connection exists");
        format!("http://{addr}")
    }

    /// Text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        super::get(&format!("{}/metrics", self.admin), None)
            .await
            .expect("metrics answer")
            .text()
    }

    /// Value of one series in `/metrics` (e.g. `bearerd_token_generation{connection="x"}`).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

/// A client_credentials connection named `name` to `upstream`, tokens from `tokens`.
pub fn cc_config(name: &str, tokens: &TokenServer, upstream: &Upstream, extra: &str) -> String {
    cc_config_for(name, tokens, &upstream.url(), extra)
}

/// [`cc_config`] for any upstream URL.
pub fn cc_config_for(name: &str, tokens: &TokenServer, upstream: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"

[[connection]]
name = "{name}"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = "{client_secret}"
{extra}
"#,
        token_url = tokens.token_url(),
        client_id = tokens.client_id(),
        client_secret = tokens.client_secret(),
    )
}

/// A fresh, empty directory for a file store.
pub fn temp_store_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bearerd-test-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Stores `refresh_token` for `name` in the file store at `dir`, as `bearerd import` does.
pub async fn seed_store(dir: &std::path::Path, name: &str, refresh_token: &str) {
    let store = bearerd::store::file::FileStore::open(dir, None).unwrap();
    bearerd::store::import(
        &store,
        name,
        bearerd::secret::SecretString::new(refresh_token.to_owned()),
        true,
    )
    .await
    .unwrap();
}

/// The stored record of `name`, if any.
pub async fn stored(dir: &std::path::Path, name: &str) -> Option<bearerd::store::Record> {
    use bearerd::store::TokenStore;
    let store = bearerd::store::file::FileStore::open(dir, None).unwrap();
    store.load(name).await.unwrap()
}

/// An authorization-code connection (refresh-token grant) with its file store at `dir`.
pub fn ac_config(
    name: &str,
    provider: &str,
    tokens: &TokenServer,
    upstream: &str,
    dir: &std::path::Path,
    extra: &str,
) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"

[store]
kind = "file"
dir = "{dir}"

[[connection]]
name = "{name}"
provider = "{provider}"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "authorization_code"
token_url = "{token_url}"
authorize_url = "{base}/authorize"
client_id = "{client_id}"
client_secret = "{client_secret}"
{extra}
"#,
        dir = dir.display(),
        base = tokens.base_url(),
        token_url = tokens.token_url(),
        client_id = tokens.client_id(),
        client_secret = tokens.client_secret(),
    )
}
