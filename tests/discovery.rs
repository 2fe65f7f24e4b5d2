//! `provider = "oauth2"` with only an `issuer`: endpoints come from RFC 8414 / OpenID
//! discovery at start; a document naming another issuer is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bearerd::token::ConnState;
use http::StatusCode;
use support::{Bearerd, TokenServer, TokenServerConfig, Upstream};

fn config(issuer: &str, upstream: &str, tokens: &TokenServer, grant: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[store]
dir = "{dir}"
[[connection]]
name = "idp"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "{grant}"
issuer = "{issuer}"
client_id = "{id}"
client_secret = "{secret}"
"#,
        dir = support::temp_store_dir("discovery").display(),
        id = tokens.client_id(),
        secret = tokens.client_secret(),
    )
}

async fn settled(bearerd: &Bearerd) -> ConnState {
    let conn = bearerd.app.connection("idp").unwrap();
    support::eventually(Duration::from_secs(5), "a settled state", || {
        let state = conn.snapshot().state;
        async move { (state != ConnState::Refreshing).then_some(state) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_with_only_an_issuer() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&config(
        &tokens.base_url(),
        &upstream.url(),
        &tokens,
        "client_credentials",
    ))
    .await;
    assert_eq!(settled(&bearerd).await, ConnState::Connected);
    let response = support::get(&format!("{}/x", bearerd.proxy("idp")), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(tokens.client_credentials_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_code_connects_through_discovered_endpoints() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.add_user("hotelier", "pw");
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&config(
        &tokens.base_url(),
        &upstream.url(),
        &tokens,
        "authorization_code",
    ))
    .await;
    assert_eq!(settled(&bearerd).await, ConnState::NeedsAuthorization);
    let start = support::get(&format!("{}/connections/idp/connect", bearerd.admin), None)
        .await
        .unwrap();
    assert_eq!(start.status, StatusCode::FOUND);
    let location = start.header("location").unwrap();
    assert!(location.starts_with(&format!("{}/authorize?", tokens.base_url())));
    let back = tokens.authorize_headless("hotelier", &location).await;
    let path = &back[back.find("/oauth/callback").unwrap()..];
    let done = support::get(&format!("{}{path}", bearerd.admin), None)
        .await
        .unwrap();
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    // Disconnect revokes at the discovered revocation endpoint.
    let request = http::Request::post(format!("{}/connections/idp/disconnect", bearerd.admin))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = support::send(request).await.unwrap();
    assert_eq!(answer.json()["report"]["provider_notified"], true);
    assert_eq!(tokens.revoke_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mismatching_issuer_is_refused() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.set_discovery_issuer("https://evil.example");
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&config(
        &tokens.base_url(),
        &upstream.url(),
        &tokens,
        "client_credentials",
    ))
    .await;
    assert_eq!(settled(&bearerd).await, ConnState::Misconfigured);
    let conn = bearerd.app.connection("idp").unwrap();
    let error = conn.snapshot().last_error.clone().unwrap();
    assert!(
        error.contains("issuer") && error.contains("evil.example"),
        "{error}"
    );
    let response = support::get(&format!("{}/x", bearerd.proxy("idp")), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(tokens.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_issuer_leaves_the_connection_misconfigured_with_the_reason() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dead = support::dead_url();
    let bearerd = Bearerd::start(&config(
        &dead,
        &upstream.url(),
        &tokens,
        "client_credentials",
    ))
    .await;
    assert_eq!(settled(&bearerd).await, ConnState::Misconfigured);
    let conn = bearerd.app.connection("idp").unwrap();
    let error = conn.snapshot().last_error.clone().unwrap();
    assert!(error.contains("discovery document"), "{error}");
}
