//! The connect flow without a browser: redirect with state and PKCE, the test
//! authorization server's login and consent walked over HTTP, the callback, the probe,
//! bad states, disconnect (RFC 7009 and Cloudbeds), and the admin token with CSRF. Webhooks are
//! in `webhooks.rs`, the hostile-browser cases in `admin_security.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bearerd::token::ConnState;
use http::StatusCode;
use support::connect_rig::{
    Options, admin_get, admin_get_with, admin_post, callback_path, connect, csrf_of, rig, rig_with,
    state,
};
use support::stored;

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
async fn admin_token_csrf_and_same_origin() {
    let rig = rig_with(Options {
        admin_token: Some("admin-s3cret-token-value"),
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
    let basic = support::basic_auth("admin", "admin-s3cret-token-value");
    let bearer = "Bearer admin-s3cret-token-value";
    let page = admin_get_with(&rig, "/", basic.as_str()).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = csrf_of(&page.text());

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

#[tokio::test(flavor = "multi_thread")]
async fn the_page_form_post_with_its_csrf_token_redirects_back() {
    let rig = rig().await;
    assert_eq!(connect(&rig).await.status, StatusCode::OK);
    let csrf = csrf_of(&admin_get(&rig, "/").await.text()).unwrap();
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
