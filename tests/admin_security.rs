//! The admin listener against a hostile browser and hostile callers (SPEC section 13): DNS
//! rebinding (`Host`), cross-site connect starts, a flood of connect starts, credentials that
//! do not decode, the auth scheme's case, CSRF by content type, and what an unauthenticated
//! caller learns about unreadable secrets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bearerd::config::Config;
use bearerd::token::ConnState;
use http::{Method, StatusCode};
use support::connect_rig::{
    Options, Rig, admin_get, admin_get_with, admin_request, callback_path, csrf_of, rig, rig_with,
    state,
};
use support::{Bearerd, TokenServer, TokenServerConfig, stored};

const ADMIN_TOKEN: &str = "admin-s3cret-token-value";

fn port(rig: &Rig) -> u16 {
    rig.bearerd.app.admin_addr.port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_host_gets_421() {
    let rig = rig().await;
    let foreign = [("host", "attacker.example")];
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/connections"),
        (Method::GET, "/connections/hotel/connect"),
        (Method::POST, "/connections/hotel/disconnect"),
        (Method::POST, "/webhooks/hotel"),
    ] {
        let answer = admin_request(&rig, method.clone(), path, &foreign, "").await;
        assert_eq!(
            answer.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{method} {path}"
        );
        assert!(csrf_of(&answer.text()).is_none());
    }
    let rebound = format!("attacker.example:{}", port(&rig));
    let answer = admin_request(&rig, Method::GET, "/", &[("host", &rebound)], "").await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        state(&rig),
        ConnState::NeedsAuthorization,
        "no flow started"
    );

    // The listen address, localhost on a loopback listener, and public_url's authority.
    let localhost = format!("localhost:{}", port(&rig));
    for host in [localhost.as_str(), "127.0.0.1:9901"] {
        let answer = admin_request(&rig, Method::GET, "/", &[("host", host)], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{host}");
    }
    assert_eq!(admin_get(&rig, "/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_site_connect_link_starts_nothing_and_offers_a_button() {
    let rig = rig().await;
    for site in ["cross-site", "same-site"] {
        let answer = admin_request(
            &rig,
            Method::GET,
            "/connections/hotel/connect",
            &[("sec-fetch-site", site)],
            "",
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{site}");
        assert!(answer.header("location").is_none());
    }
    let referred = admin_request(
        &rig,
        Method::GET,
        "/connections/hotel/connect",
        &[("referer", "https://attacker.example/page")],
        "",
    )
    .await;
    assert_eq!(referred.status, StatusCode::FORBIDDEN);
    assert_eq!(
        state(&rig),
        ConnState::NeedsAuthorization,
        "no flow started"
    );
    assert!(rig.tokens.authorization_requests().is_empty());

    // The page's button: a same-origin POST with the CSRF token starts the flow.
    let html = referred.text();
    assert!(
        html.contains("action=\"/connections/hotel/connect\""),
        "{html}"
    );
    let csrf = csrf_of(&html).unwrap();
    let form = [
        ("origin", "http://127.0.0.1:9901"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let forged = admin_request(
        &rig,
        Method::POST,
        "/connections/hotel/connect",
        &form,
        "csrf=x",
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(state(&rig), ConnState::NeedsAuthorization);
    let pressed = admin_request(
        &rig,
        Method::POST,
        "/connections/hotel/connect",
        &form,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(pressed.status, StatusCode::SEE_OTHER, "{}", pressed.text());
    assert!(
        pressed
            .header("location")
            .unwrap()
            .contains("code_challenge=")
    );
    assert_eq!(state(&rig), ConnState::Authorizing);

    // Same-origin pages, the address bar and tools start it with a GET.
    for site in [Some("same-origin"), Some("none"), None] {
        let headers: Vec<(&str, &str)> = site.map(|s| ("sec-fetch-site", s)).into_iter().collect();
        let answer = admin_request(
            &rig,
            Method::GET,
            "/connections/hotel/connect",
            &headers,
            "",
        )
        .await;
        assert_eq!(answer.status, StatusCode::FOUND, "{site:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_flood_on_one_connection_does_not_block_another() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.add_user("hotelier", "correct horse");
    let upstream = support::Upstream::start(tokens.clone()).await;
    let dir = support::temp_store_dir("connect-flood");
    let one = support::ac_config("hotel", "oauth2", &tokens, &upstream.url(), &dir, "");
    let two = support::ac_config("other", "oauth2", &tokens, &upstream.url(), &dir, "");
    let second = &two[two.find("[[connection]]").unwrap()..];
    let bearerd = Bearerd::start(&format!("{one}\n{second}")).await;
    let get = |path: String| {
        let url = format!("{}{path}", bearerd.admin);
        async move { support::get(&url, None).await.unwrap() }
    };
    let first = get("/connections/hotel/connect".into()).await;
    assert_eq!(first.status, StatusCode::FOUND);
    // More than the old global cap of 1024 pending flows.
    for _ in 0..1100 {
        let answer = get("/connections/hotel/connect".into()).await;
        assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.text());
    }
    // Another connection still connects.
    let start = get("/connections/other/connect".into()).await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let back = tokens
        .authorize_headless("hotelier", &start.header("location").unwrap())
        .await;
    let done = get(callback_path(&back)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    // The flood evicted the oldest flows of its own connection only.
    let back = tokens
        .authorize_headless("hotelier", &first.header("location").unwrap())
        .await;
    assert_eq!(
        get(callback_path(&back)).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(stored(&dir, "hotel").await.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_that_do_not_decode_are_unauthorized_and_the_scheme_is_any_case() {
    let rig = rig_with(Options {
        admin_token: Some(ADMIN_TOKEN),
        ..Options::default()
    })
    .await;
    for bad in [
        "Basic !!!not-base64!!!",
        "Basic bm9jb2xvbg==",
        "Basic ",
        "Bearer",
        "Bearer wrong-token-value-xx",
    ] {
        let answer = admin_get_with(&rig, "/", bad).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = admin_get_with(&rig, "/", &format!("{scheme} {ADMIN_TOKEN}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{scheme}");
    }
    let basic = support::basic_auth("admin", ADMIN_TOKEN).replacen("Basic", "basic", 1);
    assert_eq!(
        admin_get_with(&rig, "/", &basic).await.status,
        StatusCode::OK
    );
}

#[test]
fn an_empty_or_short_auth_token_is_a_config_error() {
    let tokens_url = "http://127.0.0.1:1/token";
    for token in ["", " ", "short"] {
        let text = format!(
            "[admin]\nlisten = \"0.0.0.0:9901\"\nauth_token = \"{token}\"\n\n[[connection]]\n\
             name = \"a\"\nprovider = \"oauth2\"\nlisten = \"127.0.0.1:0\"\n\
             upstream = \"http://127.0.0.1:1\"\ngrant = \"client_credentials\"\n\
             token_url = \"{tokens_url}\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n"
        );
        let error = Config::from_toml_str(&text).expect_err("refused");
        assert!(error.names("admin.auth_token"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csrf_is_required_whatever_the_spelling_of_the_content_type() {
    let rig = rig().await;
    assert_eq!(
        support::connect_rig::connect(&rig).await.status,
        StatusCode::OK
    );
    for content_type in [
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let answer = admin_request(
            &rig,
            Method::POST,
            "/connections/hotel/disconnect",
            &[("content-type", content_type)],
            "csrf=forged",
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{content_type}");
        assert_eq!(state(&rig), ConnState::Connected, "{content_type}");
    }
    // The page's own form, spelled oddly, still works.
    let csrf = csrf_of(&admin_get(&rig, "/").await.text()).unwrap();
    let answer = admin_request(
        &rig,
        Method::POST,
        "/connections/hotel/disconnect",
        &[
            ("origin", "http://127.0.0.1:9901"),
            (
                "content-type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            ),
        ],
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(state(&rig), ConnState::Disconnected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_secret_file_is_named_by_its_key_not_its_path() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let dir = support::TempDir::new("unreadable-secret");
    let missing = dir.path().join("no-such-dir").join("client-secret-file");
    let config = support::cc_config_for("api", &tokens, "http://127.0.0.1:1", "").replace(
        &format!("client_secret = \"{}\"", tokens.client_secret()),
        &format!("client_secret = {{ file = \"{}\" }}", missing.display()),
    );
    let bearerd = Bearerd::start(&config).await;
    let path = missing.display().to_string();
    for route in ["/connections", "/connections/api", "/readyz", "/"] {
        let answer = support::get(&format!("{}{route}", bearerd.admin), None)
            .await
            .unwrap();
        let text = answer.text();
        assert!(
            !text.contains(&path) && !text.contains("no-such-dir"),
            "{route}: {text}"
        );
        assert!(
            text.contains("connection[0].client_secret: cannot be read"),
            "{route}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_text_on_the_connect_pages_is_scrubbed() {
    // A probe path the upstream answers by echoing the request, Authorization included.
    let rig = rig_with(Options {
        probe: Some("/echo-the-request"),
        ..Options::default()
    })
    .await;
    let done = support::connect_rig::connect(&rig).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let html = done.text();
    assert!(
        html.contains("class=\"probe\"") && html.contains("[redacted]"),
        "{html}"
    );
    for secret in rig.tokens.issued_secrets() {
        assert!(!html.contains(&secret), "the success page shows a secret");
    }

    // A denial whose description echoes the client secret.
    let start = admin_get(&rig, "/connections/hotel/connect").await;
    let location = start.header("location").unwrap();
    let url = url::Url::parse(&location).unwrap();
    let flow_state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let secret = rig.tokens.client_secret();
    let denied = admin_get(
        &rig,
        &format!(
            "/oauth/callback?state={flow_state}&error=access_denied&error_description=client_secret%3D{secret}"
        ),
    )
    .await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    let text = denied.text();
    assert!(
        !text.contains(&secret) && text.contains("[redacted]"),
        "{text}"
    );
}
