//! The connect-flow rig shared by the admin tests: a test token server with a user, an
//! upstream that checks its tokens, and bearerd with one authorization-code connection named
//! `hotel` (file store), settled past its first store read; plus small admin request helpers.

use bearerd::token::ConnState;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use super::{
    Bearerd, TestResponse, TokenServer, TokenServerConfig, Upstream, ac_config, temp_store_dir,
};

pub struct Rig {
    pub tokens: TokenServer,
    pub upstream: Upstream,
    pub dir: std::path::PathBuf,
    pub bearerd: Bearerd,
    /// The config bearerd was started with (to start it again on the same store).
    pub config: String,
}

/// How a test's bearerd differs from the default rig.
#[derive(Default)]
pub struct Options<'a> {
    pub provider: &'a str,
    pub cloudbeds: bool,
    /// `Some(url)`: revoke there; `None`: the token server's RFC 7009 endpoint; the cloudbeds
    /// preset with `no_revoke_url` uses postAppState.
    pub revoke_url: Option<String>,
    pub no_revoke_url: bool,
    pub extra: &'a str,
    pub admin_token: Option<&'a str>,
    /// The connection's `probe` path; `/userinfo` when `None`.
    pub probe: Option<&'a str>,
    /// The connection's `grant`; `authorization_code` when empty.
    pub grant: &'a str,
}

pub async fn rig_with(options: Options<'_>) -> Rig {
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
    let probe = options.probe.unwrap_or("/userinfo");
    let extra = format!("probe = \"{probe}\"\n{revoke}\n{}", options.extra);
    let mut config = ac_config("hotel", provider, &tokens, &upstream.url(), &dir, &extra);
    if !options.grant.is_empty() {
        let grant = format!("grant = \"{}\"", options.grant);
        config = config.replace("grant = \"authorization_code\"", &grant);
    }
    if let Some(token) = options.admin_token {
        config = config.replace("[admin]\n", &format!("[admin]\nauth_token = \"{token}\"\n"));
    }
    let bearerd = Bearerd::start(&config).await;
    // The first store read settles the state (no record: needs_authorization).
    let conn = bearerd.app.connection("hotel").unwrap();
    super::eventually(std::time::Duration::from_secs(5), "store loaded", || {
        let settled = conn.snapshot().state != ConnState::Refreshing;
        async move { settled.then_some(()) }
    })
    .await;
    Rig {
        tokens,
        upstream,
        dir,
        bearerd,
        config,
    }
}

pub async fn rig() -> Rig {
    rig_with(Options::default()).await
}

pub async fn admin_get(rig: &Rig, path_and_query: &str) -> TestResponse {
    super::get(&format!("{}{path_and_query}", rig.bearerd.admin), None)
        .await
        .unwrap()
}

pub async fn admin_post(
    rig: &Rig,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TestResponse {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", rig.bearerd.admin));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    super::send(
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
    .unwrap()
}

/// The callback URL's path and query (the configured redirect_uri names port 9901; the test
/// admin listener is elsewhere).
pub fn callback_path(location: &str) -> String {
    let at = location.find("/oauth/callback").expect("a callback URL");
    location[at..].to_owned()
}

/// Connect → provider → callback; returns the callback's answer.
pub async fn connect(rig: &Rig) -> TestResponse {
    let start = admin_get(rig, "/connections/hotel/connect").await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let authorize = start.header("location").unwrap();
    let back = rig.tokens.authorize_headless("hotelier", &authorize).await;
    admin_get(rig, &callback_path(&back)).await
}

pub fn state(rig: &Rig) -> ConnState {
    rig.bearerd
        .app
        .connection("hotel")
        .unwrap()
        .snapshot()
        .state
}

/// `GET path` with an `Authorization` header.
pub async fn admin_get_with(rig: &Rig, path: &str, authorization: &str) -> TestResponse {
    admin_request(
        rig,
        Method::GET,
        path,
        &[("authorization", authorization)],
        "",
    )
    .await
}

/// Any request to the admin listener with extra headers.
pub async fn admin_request(
    rig: &Rig,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TestResponse {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", rig.bearerd.admin));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    super::send(
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
    .unwrap()
}

/// The CSRF token embedded in an admin page's forms.
pub fn csrf_of(html: &str) -> Option<String> {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
}
