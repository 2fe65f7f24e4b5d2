//! Self-tests of the test authorization server (PROVIDERS.md §4 rule 3): login and consent
//! pages, codes bound to `redirect_uri` and PKCE, single use, expiry, deny, Cloudbeds shapes,
//! and the upstream's `/userinfo`, echo `user` and `postAppState`. Part of `support_selftest`.

use crate::support::token_server::pkce_challenge;
use crate::support::{
    self, BoxError, TestResponse, TokenServer, TokenServerConfig, Upstream, get, post_form,
};
use hyper::StatusCode;

type TestResult = Result<(), BoxError>;

/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CALLBACK: &str = "http://127.0.0.1:9/oauth/callback";

async fn server(cloudbeds: bool) -> TokenServer {
    let ts = TokenServer::start(TokenServerConfig {
        cloudbeds,
        ..TokenServerConfig::default()
    })
    .await;
    ts.add_user("alice", "wonderland");
    ts
}

fn authorize_url(ts: &TokenServer, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.extend_pairs([
        ("response_type", "code"),
        ("client_id", &ts.client_id()),
        ("redirect_uri", CALLBACK),
        ("scope", "read:reservation write:guest"),
        ("state", "st-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]);
    q.extend_pairs(extra);
    format!("{}?{}", ts.authorize_url(), q.finish())
}

/// The value of `name` in the query of `url`.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn exchange(ts: &TokenServer, code: &str, redirect: &str, verifier: &str) -> TestResponse {
    let (id, secret) = (ts.client_id(), ts.client_secret());
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
    ];
    if !verifier.is_empty() {
        form.push(("code_verifier", verifier));
    }
    post_form(&ts.token_url(), &form, Some((&id, &secret)))
        .await
        .unwrap_or_else(|e| panic!("token endpoint: {e}"))
}

async fn new_code(ts: &TokenServer) -> String {
    let location = ts
        .authorize_headless("alice", &authorize_url(ts, &[]))
        .await;
    assert!(
        location.starts_with(&format!("{CALLBACK}?code=")),
        "{location}"
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
    query_param(&location, "code").unwrap_or_else(|| panic!("no code: {location}"))
}

fn assert_invalid_grant(r: &TestResponse) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
}

#[tokio::test]
async fn login_consent_and_pkce_exchange() -> TestResult {
    assert_eq!(pkce_challenge(VERIFIER), CHALLENGE);
    let ts = server(false).await;
    let up = Upstream::start(ts.clone()).await;
    let page = get(&authorize_url(&ts, &[]), None).await?;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    for needle in [
        "action=\"/authorize/login\"",
        "name=\"username\" id=\"username\"",
        "name=\"password\" id=\"password\" type=\"password\"",
        "<button type=\"submit\" id=\"login\">Log in</button>",
        &format!("name=\"code_challenge\" value=\"{CHALLENGE}\""),
        "name=\"state\" value=\"st-1\"",
    ] {
        assert!(html.contains(needle), "login page lacks {needle}: {html}");
    }
    let log = ts.authorization_requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].code_challenge_method.as_deref(), Some("S256"));
    assert_eq!(
        log[0].scope.as_deref(),
        Some("read:reservation write:guest")
    );
    assert_eq!(log[0].redirect_uri.as_deref(), Some(CALLBACK));

    // The hidden fields are the authorize query; a wrong password shows the login page again.
    let query = authorize_url(&ts, &[]);
    let query = query.split_once('?').map_or("", |(_, q)| q).to_owned();
    let mut form: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    form.push(("username".into(), "alice".into()));
    let login = |password: &str| {
        let mut f = form.clone();
        f.push(("password".into(), password.into()));
        let url = format!("{}/authorize/login", ts.base_url());
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (&**k, &**v)).collect();
            post_form(&url, &pairs, None).await.expect("login answers")
        }
    };
    let wrong = login("guess").await.text();
    assert!(wrong.contains("Wrong username or password") && wrong.contains("id=\"login\""));
    assert!(!wrong.contains("name=\"ticket\""), "{wrong}");
    let consent = login("wonderland").await.text();
    for needle in [
        "test-client",
        "read:reservation",
        "write:guest",
        "<button id=\"approve\" name=\"decision\" value=\"allow\">Allow</button>",
        "<button id=\"deny\" name=\"decision\" value=\"deny\">Deny</button>",
    ] {
        assert!(
            consent.contains(needle),
            "consent page lacks {needle}: {consent}"
        );
    }

    let code = new_code(&ts).await;
    assert!(
        ts.issued_secrets().contains(&code),
        "codes count as secrets"
    );
    let r = exchange(&ts, &code, CALLBACK, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let (at, rt) = (
        r.json()["access_token"].clone(),
        r.json()["refresh_token"].clone(),
    );
    let (at, rt) = (at.as_str().unwrap_or(""), rt.as_str().unwrap_or(""));
    assert!(
        at.starts_with("at_") && rt.starts_with("rt_"),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["expires_in"], 3600);
    assert_eq!(ts.code_exchanges(), 1);
    assert_eq!(ts.user_of(at).as_deref(), Some("alice"));
    assert_eq!(ts.user_of("at_unknown"), None);

    let info = get(&format!("{}/userinfo", up.url()), Some(at)).await?;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json()["user"], "alice");
    assert_eq!(info.json()["hotel"], "Hotel Test");
    let echo = get(&format!("{}/whoami", up.url()), Some(at)).await?;
    assert_eq!(echo.json()["user"], "alice", "{}", echo.text());

    // The grant keeps its user across a refresh.
    let refreshed = support::refresh_post(&ts, rt).await?;
    let at2 = refreshed.json()["access_token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(ts.user_of(&at2).as_deref(), Some("alice"));
    Ok(())
}

#[tokio::test]
async fn code_is_single_use_and_reuse_revokes_the_grant() -> TestResult {
    let ts = server(false).await;
    let code = new_code(&ts).await;
    let r = exchange(&ts, &code, CALLBACK, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let at = r.json()["access_token"].as_str().unwrap_or("").to_owned();
    assert!(ts.validate_access(&at));
    assert_invalid_grant(&exchange(&ts, &code, CALLBACK, VERIFIER).await);
    assert!(
        !ts.validate_access(&at),
        "a replayed code revokes its grant"
    );
    assert_invalid_grant(&exchange(&ts, "ac_unknown", CALLBACK, VERIFIER).await);
    assert_eq!(ts.code_exchanges(), 3);

    let cb = server(true).await;
    let code = new_code(&cb).await;
    assert_eq!(
        exchange(&cb, &code, CALLBACK, VERIFIER).await.status,
        StatusCode::OK
    );
    let again = exchange(&cb, &code, CALLBACK, VERIFIER).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.json()["error"], "server_error");
    let desc = "The authorization code is invalid or has expired.";
    assert_eq!(again.json()["error_description"], desc);
    Ok(())
}

#[tokio::test]
async fn wrong_or_missing_verifier_is_invalid_grant() -> TestResult {
    let ts = server(false).await;
    let code = new_code(&ts).await;
    let other = "x".repeat(43);
    assert_invalid_grant(&exchange(&ts, &code, CALLBACK, &other).await);
    assert_invalid_grant(&exchange(&ts, &code, CALLBACK, "").await);
    assert_invalid_grant(&exchange(&ts, &code, CALLBACK, CHALLENGE).await);
    // Failed attempts do not consume the code: the right verifier still works.
    let ok = exchange(&ts, &code, CALLBACK, VERIFIER).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    Ok(())
}

#[tokio::test]
async fn wrong_redirect_uri_is_invalid_grant() -> TestResult {
    let ts = server(false).await;
    let code = new_code(&ts).await;
    for wrong in [
        "http://127.0.0.1:9/oauth/callback/",
        "http://localhost:9/oauth/callback",
        "",
    ] {
        assert_invalid_grant(&exchange(&ts, &code, wrong, VERIFIER).await);
    }
    assert_eq!(
        exchange(&ts, &code, CALLBACK, VERIFIER).await.status,
        StatusCode::OK
    );

    // A redirect_uri with a query gets the code appended with `&`.
    let with_query = format!("{}?tenant=7", CALLBACK);
    let url = authorize_url(&ts, &[]).replace(
        &form_urlencoded::byte_serialize(CALLBACK.as_bytes()).collect::<String>(),
        &form_urlencoded::byte_serialize(with_query.as_bytes()).collect::<String>(),
    );
    let location = ts.authorize_headless("alice", &url).await;
    assert!(
        location.starts_with(&format!("{with_query}&code=")),
        "{location}"
    );
    Ok(())
}

#[tokio::test]
async fn expired_code_is_invalid_grant() -> TestResult {
    let ts = server(false).await;
    let code = new_code(&ts).await;
    ts.expire_codes();
    assert_invalid_grant(&exchange(&ts, &code, CALLBACK, VERIFIER).await);
    Ok(())
}

#[tokio::test]
async fn deny_and_bad_requests() -> TestResult {
    let ts = server(false).await;
    let location = ts.deny_headless("alice", &authorize_url(&ts, &[])).await;
    assert!(
        location.starts_with(&format!("{CALLBACK}?error=access_denied")),
        "{location}"
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&location, "code"), None);

    // A bad client_id or redirect_uri is a 400 page, never a redirect.
    for (from, to) in [
        ("client_id=test-client", "client_id=evil"),
        ("redirect_uri=", "x="),
    ] {
        let url = authorize_url(&ts, &[]).replace(from, to);
        let r = get(&url, None).await?;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(r.header("location"), None);
        assert!(r.text().contains("class=\"error\""), "{}", r.text());
    }
    // After that, errors go back to the client.
    for (from, to, error) in [
        (
            "response_type=code",
            "response_type=token",
            "unsupported_response_type",
        ),
        (
            "code_challenge_method=S256",
            "code_challenge_method=plain",
            "invalid_request",
        ),
        ("&code_challenge_method=S256", "", "invalid_request"),
        (CHALLENGE, "short", "invalid_request"),
    ] {
        let url = authorize_url(&ts, &[]).replace(from, to);
        let location = ts.authorize_headless("alice", &url).await;
        assert_eq!(
            query_param(&location, "error").as_deref(),
            Some(error),
            "{url}"
        );
        assert_eq!(query_param(&location, "state").as_deref(), Some("st-1"));
    }
    // A consent ticket is single use.
    let r = post_form(
        &format!("{}/authorize/consent", ts.base_url()),
        &[("ticket", "tk_forged"), ("decision", "allow")],
        None,
    )
    .await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(ts.code_exchanges(), 0);
    Ok(())
}

#[tokio::test]
async fn post_app_state_disabled_revokes_the_grant() -> TestResult {
    let ts = server(true).await;
    let up = Upstream::start(ts.clone()).await;
    let code = new_code(&ts).await;
    let r = exchange(&ts, &code, CALLBACK, VERIFIER).await;
    let at = r.json()["access_token"].as_str().unwrap_or("").to_owned();
    let url = format!("{}/api/v1.3/postAppState", up.url());
    let post = |state: &'static str| {
        let (url, at) = (url.clone(), at.clone());
        async move {
            let req = hyper::Request::post(&url)
                .header("authorization", format!("Bearer {at}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(http_body_util::Full::new(bytes::Bytes::from(state)))
                .expect("request");
            support::send(req).await.expect("postAppState answers")
        }
    };
    assert_eq!(
        post("app_state=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
    let ok = post("app_state=disabled").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json(), serde_json::json!({"success": true}));
    assert!(!ts.validate_access(&at), "the grant is revoked");
    assert_eq!(
        post("app_state=disabled").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(up.app_state_posts(), 3);
    Ok(())
}
