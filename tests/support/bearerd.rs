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
        upstream = upstream.url(),
        token_url = tokens.token_url(),
        client_id = tokens.client_id(),
        client_secret = tokens.client_secret(),
    )
}
