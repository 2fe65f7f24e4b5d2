//! What the API-key tests share: a Cloudbeds-shaped token server and upstream, configs for a
//! key from the config, a delivered key and a refresh-token connection to migrate, and small
//! request helpers.

use std::path::Path;
use std::time::Duration;

use bearerd::store::Record;
use bearerd::token::ConnState;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::{
    Bearerd, TestResponse, TokenServer, TokenServerConfig, Upstream, eventually, send,
};

/// A valid `store.key`.
pub const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A token server in Cloudbeds mode with a user for the connect flow, and an upstream that
/// checks its tokens and keys.
pub async fn cloudbeds(lifetime: Duration) -> (TokenServer, Upstream) {
    let tokens = TokenServer::start(TokenServerConfig {
        cloudbeds: true,
        lifetime: Some(lifetime),
        ..TokenServerConfig::default()
    })
    .await;
    tokens.add_user("hotelier", "correct horse");
    let upstream = Upstream::start(tokens.clone()).await;
    (tokens, upstream)
}

const ADMIN: &str = r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"
"#;

/// A cloudbeds connection `hotel` holding `key` from the config (no client credentials).
pub fn config_key(upstream: &Upstream, key: &str, extra: &str) -> String {
    format!(
        r#"{ADMIN}
[[connection]]
name = "hotel"
provider = "cloudbeds"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "api_key"
api_key = "{key}"
rate_limit = false
{extra}
"#,
        upstream = upstream.url(),
    )
}

/// A cloudbeds connection `hotel` with a file store at `dir`, `grant` as given
/// (`authorization_code` to migrate, `api_key` for automatic delivery).
pub fn stored(
    grant: &str,
    tokens: &TokenServer,
    upstream: &Upstream,
    dir: &Path,
    extra: &str,
) -> String {
    format!(
        r#"{ADMIN}
[store]
kind = "file"
dir = "{dir}"
{extra}

[[connection]]
name = "hotel"
provider = "cloudbeds"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "{grant}"
token_url = "{token_url}"
authorize_url = "{base}/authorize"
client_id = "{client_id}"
client_secret = "{client_secret}"
probe = "/userinfo"
rate_limit = false
"#,
        dir = dir.display(),
        upstream = upstream.url(),
        base = tokens.base_url(),
        token_url = tokens.token_url(),
        client_id = tokens.client_id(),
        client_secret = tokens.client_secret(),
    )
}

/// Waits until the connection is past its first store read (or start-up refresh).
pub async fn settled(bearerd: &Bearerd) -> ConnState {
    let connection = bearerd.app.connection("hotel").unwrap();
    eventually(Duration::from_secs(10), "the connection settles", || {
        let state = connection.snapshot().state;
        async move { (state != ConnState::Refreshing).then_some(state) }
    })
    .await
}

/// The connection's state now.
pub fn state(bearerd: &Bearerd) -> ConnState {
    bearerd.app.connection("hotel").unwrap().snapshot().state
}

/// `GET path` on the proxy with the app's own `headers`.
pub async fn proxied(bearerd: &Bearerd, path: &str, headers: &[(&str, &str)]) -> TestResponse {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(format!("{}{path}", bearerd.proxy("hotel")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

pub use crate::support::upstream::echoed;

/// `POST path` on the admin listener (no body).
pub async fn admin_post(bearerd: &Bearerd, path: &str) -> TestResponse {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", bearerd.admin));
    send(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

/// `GET /connections/hotel` on the admin listener.
pub async fn status(bearerd: &Bearerd) -> serde_json::Value {
    crate::support::get(&format!("{}/connections/hotel", bearerd.admin), None)
        .await
        .unwrap()
        .json()
}

/// The stored record of `hotel` (file store, no `store.key`).
pub async fn record(dir: &Path) -> Record {
    crate::support::stored(dir, "hotel")
        .await
        .expect("a stored record")
}

/// Starts bearerd on `config` and waits for it to settle.
pub async fn start(config: &str) -> Bearerd {
    let bearerd = Bearerd::start(config).await;
    settled(&bearerd).await;
    bearerd
}
