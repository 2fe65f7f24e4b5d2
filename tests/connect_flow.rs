//! The connect flow without a browser: redirect with state and PKCE, the test
//! authorization server's login and consent walked over HTTP, the callback, the probe,
//! bad states, disconnect (RFC 7009 and Cloudbeds), webhooks, and admin security.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bearerd::token::ConnState;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{
    Bearerd, TestResponse, TokenServer, TokenServerConfig, Upstream, ac_config, stored,
    temp_store_dir,
};
use tokio::time::Instant;

struct Rig {
    tokens: TokenServer,
    upstream: Upstream,
    dir: std::path::PathBuf,
    bearerd: Bearerd,
}

/// How a test's bearerd differs from the default rig.
#[derive(Default)]
struct Options<'a> {
    provider: &'a str,
    cloudbeds: bool,
    /// `Some(url)`: revoke there; `None`: the token server's RFC 7009 endpoint; the cloudbeds
    /// preset with `no_revoke_url` uses postAppState.
    revoke_url: Option<String>,
    no_revoke_url: bool,
    extra: &'a str,
    admin_token: Option<&'a str>,
}

async fn rig_with(options: Options<'_>) -> Rig {
    let tokens = TokenServer::start(TokenServerConfig {
        cloudbeds: options.cloudbeds,
        ..TokenServerConfig::default()
    })
    .await;
    tokens.add_user("hotelier", "correct horse");
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("connect");
    let revoke = match (options.no_revoke_url, options.revoke_url) {
        (true, _) => String::new(),
        (false, Some(url)) => format!("revoke_url = \"{url}\""),
        (false, None) => format!("revoke_url = \"{}\"", tokens.revoke_url()),
    };
    let provider = if options.provider.is_empty() {
        "oauth2"
    } else {
        options.provider
    };
    let extra = format!("probe = \"/userinfo\"\n{revoke}\n{}", options.extra);
    let mut config = ac_config("hotel", provider, &tokens, &upstream.url(), &dir, &extra);
    if let Some(token) = options.admin_token {
        config = config.replace("[admin]\n", &format!("[admin]\nauth_token = \"{token}\"\n"));
    }
    let bearerd = Bearerd::start(&config).await;
    // The first store read settles the state (no record: needs_authorization).
    let conn = bearerd.app.connection("hotel").unwrap();
    support::eventually(std::time::Duration::from_secs(5), "store loaded", || {
        let settled = conn.snapshot().state != ConnState::Refreshing;
        async move { settled.then_some(()) }
    })
    .await;
    Rig {
        tokens,
        upstream,
        dir,
        bearerd,
    }
}

async fn rig() -> Rig {
    rig_with(Options::default()).await
}

async fn admin_get(rig: &Rig, path_and_query: &str) -> TestResponse {
    support::get(&format!("{}{path_and_query}", rig.bearerd.admin), None)
        .await
        .unwrap()
}

async fn admin_post(rig: &Rig, path: &str, headers: &[(&str, &str)], body: &str) -> TestResponse {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", rig.bearerd.admin));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    support::send(
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
    .unwrap()
}

/// The callback URL's path and query (the configured redirect_uri names port 9901; the test
/// admin listener is elsewhere).
fn callback_path(location: &str) -> String {
    let at = location.find("/oauth/callback").expect("a callback URL");
    location[at..].to_owned()
}

/// Connect → provider → callback; returns the callback's answer.
async fn connect(rig: &Rig) -> TestResponse {
    let start = admin_get(rig, "/connections/hotel/connect").await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let authorize = start.header("location").unwrap();
    let back = rig.tokens.authorize_headless("hotelier", &authorize).await;
    admin_get(rig, &callback_path(&back)).await
}

fn state(rig: &Rig) -> ConnState {
    rig.bearerd
        .app
        .connection("hotel")
        .unwrap()
        .snapshot()
        .state
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_with_state_and_pkce_then_proxy_as_the_user() {
    let rig = rig_with(Options {
        extra: "scopes = [\"read\"]",
        ..Options::default()
    })
    .await;
    assert_eq!(state(&rig), ConnState::NeedsAuthorization);
    let page = admin_get(&rig, "/").await;
    assert!(page.text().contains("class=\"button connect\""));

    let start = admin_get(&rig, "/connections/hotel/connect").await;
    assert_eq!(start.status, StatusCode::FOUND);
    assert_eq!(state(&rig), ConnState::Authorizing);
    let authorize = start.header("location").unwrap();
    let back = rig.tokens.authorize_headless("hotelier", &authorize).await;
    let log = rig.tokens.authorization_requests();
    let request = log.last().unwrap();
    assert_eq!(request.code_challenge_method.as_deref(), Some("S256"));
    assert!(request.code_challenge.as_deref().unwrap().len() >= 43);
    assert!(request.state.as_deref().unwrap().len() >= 43);
    assert_eq!(request.scope.as_deref(), Some("read"));
    assert_eq!(
        request.redirect_uri.as_deref(),
        Some("http://127.0.0.1:9901/oauth/callback")
    );

    let done = admin_get(&rig, &callback_path(&back)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let html = done.text();
    assert!(html.contains("<h1>Connected</h1>") && html.contains("hotel"));
    assert!(
        html.contains("class=\"probe\"") && html.contains("hotelier"),
        "{html}"
    );
    assert_eq!(state(&rig), ConnState::Connected);
    assert_eq!(rig.tokens.code_exchanges(), 1);

    let echo = support::get(&format!("{}/whoami", rig.bearerd.proxy("hotel")), None)
        .await
        .unwrap();
    assert_eq!(echo.status, StatusCode::OK);
    assert_eq!(echo.json()["user"], "hotelier");
    let record = stored(&rig.dir, "hotel").await.unwrap();
    assert!(record.refresh_token.is_some());
    // No token, code or state on any page.
    let page = admin_get(&rig, "/").await.text();
    for secret in rig.tokens.issued_secrets() {
        assert!(!page.contains(&secret) && !html.contains(&secret));
    }
    assert!(page.contains("class=\"disconnect\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_states_get_400_and_change_nothing() {
    let rig = rig().await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let generation = stored(&rig.dir, "hotel").await.unwrap().generation;

    let missing = admin_get(&rig, "/oauth/callback?code=abc").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let forged = admin_get(&rig, "/oauth/callback?code=abc&state=forged").await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);

    // A replayed callback: the state was used up by the first one.
    let start = admin_get(&rig, "/connections/hotel/connect").await;
    let back = rig
        .tokens
        .authorize_headless("hotelier", &start.header("location").unwrap())
        .await;
    assert_eq!(
        admin_get(&rig, &callback_path(&back)).await.status,
        StatusCode::OK
    );
    let generation_after = stored(&rig.dir, "hotel").await.unwrap().generation;
    assert_eq!(generation_after, generation + 1);
    let replay = admin_get(&rig, &callback_path(&back)).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(replay.text().contains("already used"));
    assert_eq!(
        stored(&rig.dir, "hotel").await.unwrap().generation,
        generation_after
    );
    assert_eq!(rig.tokens.code_exchanges(), 2);
    assert_eq!(state(&rig), ConnState::Connected, "still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_gets_400_and_returns_to_needs_authorization() {
    let rig = rig().await;
    let start = admin_get(&rig, "/connections/hotel/connect").await;
    assert_eq!(state(&rig), ConnState::Authorizing);
    let back = rig
        .tokens
        .deny_headless("hotelier", &start.header("location").unwrap())
        .await;
    assert!(back.contains("error=access_denied"));
    let answer = admin_get(&rig, &callback_path(&back)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("access_denied"));
    assert_eq!(state(&rig), ConnState::NeedsAuthorization);
    assert!(stored(&rig.dir, "hotel").await.is_none());
    assert_eq!(rig.tokens.code_exchanges(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_code_is_refused_by_the_provider_and_nothing_is_stored() {
    let rig = rig().await;
    let start = admin_get(&rig, "/connections/hotel/connect").await;
    let back = rig
        .tokens
        .authorize_headless("hotelier", &start.header("location").unwrap())
        .await;
    rig.tokens.expire_codes();
    let answer = admin_get(&rig, &callback_path(&back)).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.text().contains("invalid_grant"), "{}", answer.text());
    assert!(stored(&rig.dir, "hotel").await.is_none());
    assert_eq!(state(&rig), ConnState::NeedsAuthorization);
}

#[tokio::test(flavor = "multi_thread")]
async fn apaleo_preset_asks_for_offline_access() {
    let rig = rig_with(Options {
        provider: "apaleo",
        extra: "scopes = [\"setup.read\"]",
        ..Options::default()
    })
    .await;
    let start = admin_get(&rig, "/connections/hotel/connect").await;
    let location = start.header("location").unwrap();
    let url = url::Url::parse(&location).unwrap();
    let scope = url
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(scope, "setup.read offline_access");
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_revokes_deletes_and_503s() {
    let rig = rig().await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let answer = admin_post(&rig, "/connections/hotel/disconnect", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["report"]["provider_notified"], true);
    assert!(rig.tokens.revoke_requests() >= 1);
    assert!(rig.tokens.grant_revoked());
    assert_eq!(state(&rig), ConnState::Disconnected);
    let record = stored(&rig.dir, "hotel").await.unwrap();
    assert!(record.refresh_token.is_none() && record.access_token.is_none());
    assert_eq!(record.state, "disconnected");
    let proxied = support::get(&format!("{}/x", rig.bearerd.proxy("hotel")), None)
        .await
        .unwrap();
    assert_eq!(proxied.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        proxied.json()["detail"]
            .as_str()
            .unwrap()
            .contains("/connections/hotel/connect")
    );
    let page = admin_get(&rig, "/").await.text();
    assert!(page.contains(">disconnected<") && page.contains("class=\"button connect\""));
    // Reconnecting works.
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Connected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_error_while_revoking_still_disconnects_locally() {
    let rig = rig_with(Options {
        revoke_url: Some(format!("{}/revoke", support::dead_url())),
        ..Options::default()
    })
    .await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let answer = admin_post(&rig, "/connections/hotel/disconnect", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.json()["report"]["provider_error"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    assert_eq!(state(&rig), ConnState::Disconnected);
    let last_error = rig
        .bearerd
        .app
        .connection("hotel")
        .unwrap()
        .snapshot()
        .last_error
        .clone();
    assert!(last_error.unwrap().contains("not told"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudbeds_disconnect_posts_app_state_disabled() {
    // Without revoke_url the cloudbeds preset disconnects with postAppState.
    let rig = rig_with(Options {
        provider: "cloudbeds",
        cloudbeds: true,
        no_revoke_url: true,
        ..Options::default()
    })
    .await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let answer = admin_post(&rig, "/connections/hotel/disconnect", &[], "").await;
    assert_eq!(
        answer.json()["report"]["provider_notified"],
        true,
        "{}",
        answer.text()
    );
    assert_eq!(rig.upstream.app_state_posts(), 1);
    assert_eq!(state(&rig), ConnState::Disconnected);
}

#[tokio::test(flavor = "multi_thread")]
async fn appstate_webhook_disconnects_only_for_our_client_id() {
    let rig = rig().await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let json = |client: &str, new_state: &str| {
        format!(
            r#"{{"version":"1.0","event":"integration/appstate_changed","timestamp":1700000000.25,"propertyID":1,"clientID":"{client}","oldState":"enabled","newState":"{new_state}"}}"#
        )
    };
    let ct = [("content-type", "application/json")];
    let foreign = admin_post(
        &rig,
        "/webhooks/hotel",
        &ct,
        &json("someone-else", "disabled"),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Connected);
    let enabled = admin_post(
        &rig,
        "/webhooks/hotel",
        &ct,
        &json("test-client", "enabled"),
    )
    .await;
    assert_eq!(enabled.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Connected);
    let malformed = admin_post(&rig, "/webhooks/hotel", &ct, "{nope").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

    let started = Instant::now();
    let disabled = admin_post(
        &rig,
        "/webhooks/hotel",
        &ct,
        &json("test-client", "disabled"),
    )
    .await;
    eprintln!("webhook answered in {:?}", started.elapsed());
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Disconnected);
    let record = stored(&rig.dir, "hotel").await.unwrap();
    assert!(record.refresh_token.is_none());
    assert_eq!(
        rig.tokens.revoke_requests(),
        0,
        "the provider already knows"
    );
    // The provider retries: still 200, nothing else happens.
    let retry = admin_post(
        &rig,
        "/webhooks/hotel",
        &ct,
        &json("test-client", "disabled"),
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        stored(&rig.dir, "hotel").await.unwrap().generation,
        record.generation
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn appstate_webhook_as_a_form() {
    let rig = rig().await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let answer = admin_post(
        &rig,
        "/webhooks/hotel",
        &form,
        "client_id=test-client&app_state=disabled",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Disconnected);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_token_csrf_and_same_origin() {
    let rig = rig_with(Options {
        admin_token: Some("admin-s3cret"),
        ..Options::default()
    })
    .await;
    let page = admin_get(&rig, "/").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        admin_get(&rig, "/connections/hotel/connect").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin_get(&rig, "/healthz").await.status, StatusCode::OK);
    let basic = support::basic_auth("admin", "admin-s3cret");
    let bearer = "Bearer admin-s3cret";
    let page = admin_get_with(&rig, "/", basic.as_str()).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned());

    let unauth = admin_post(&rig, "/connections/hotel/refresh", &[], "").await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    let cross = admin_post(
        &rig,
        "/connections/hotel/refresh",
        &[
            ("authorization", bearer),
            ("origin", "https://evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let no_csrf = admin_post(
        &rig,
        "/connections/hotel/disconnect",
        &[
            ("authorization", bearer),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "csrf=forged",
    )
    .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    // The page has no forms while not connected; a tool's POST with the token works.
    assert!(csrf.is_none());
    let tool = admin_post(
        &rig,
        "/connections/hotel/disconnect",
        &[("authorization", bearer)],
        "",
    )
    .await;
    assert_eq!(tool.status, StatusCode::OK);
    assert_eq!(state(&rig), ConnState::Disconnected);
}

async fn admin_get_with(rig: &Rig, path: &str, authorization: &str) -> TestResponse {
    let request = Request::get(format!("{}{path}", rig.bearerd.admin))
        .header("authorization", authorization)
        .body(Full::new(Bytes::new()))
        .unwrap();
    support::send(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_form_post_with_its_csrf_token_redirects_back() {
    let rig = rig().await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let html = admin_get(&rig, "/").await.text();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    // The configured public_url is http://127.0.0.1:9901: that is the origin browsers use.
    let answer = admin_post(
        &rig,
        "/connections/hotel/disconnect",
        &[
            ("origin", "http://127.0.0.1:9901"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.header("location").as_deref(), Some("/"));
    assert_eq!(state(&rig), ConnState::Disconnected);
}
