//! End-to-end connect and disconnect in a real browser (issue 4): headless Chromium opens
//! bearerd's status page, presses Connect, logs in and consents on the test authorization
//! server's pages, lands on bearerd's success page with the probe's answer; a request through
//! the proxy then reaches the upstream as the logged-in user. Disconnect from the status page
//! revokes at the provider and the proxy answers 503 again. Then a page on another origin
//! (a second 127.0.0.1 port) embeds the connect URL in `<img>` tags: no flow starts; its
//! plain link gets bearerd's "Connect?" page, whose same-origin button does start one.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (skipped loudly without them, failed
//! under `CI`). Screenshots go to `target/browser-*.png`.
//! Run: `cargo test --test browser_connect -- --nocapture`.

mod browser;
mod support;

use std::path::Path;
use std::time::Duration;

use browser::{Browser, check};
use hyper::StatusCode;
use support::{Bearerd, BoxError, TokenServer, TokenServerConfig, Upstream};

const NAME: &str = "hotel";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
/// Both flows, once the browser runs (starting it has its own 30 s).
const OVERALL: Duration = Duration::from_secs(60);

fn config(port: u16, tokens: &TokenServer, upstream: &Upstream, dir: &Path) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
kind = "file"
dir = "{dir}"

[[connection]]
name = "{NAME}"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "authorization_code"
authorize_url = "{authorize_url}"
token_url = "{token_url}"
revoke_url = "{revoke_url}"
client_id = "{client_id}"
client_secret = "{client_secret}"
scopes = ["read:hotel", "write:reservation"]
probe = "/userinfo"
"#,
        dir = dir.display(),
        upstream = upstream.url(),
        authorize_url = tokens.authorize_url(),
        token_url = tokens.token_url(),
        revoke_url = tokens.revoke_url(),
        client_id = tokens.client_id(),
        client_secret = tokens.client_secret(),
    )
}

struct World {
    tokens: TokenServer,
    bearerd: Bearerd,
    dir: std::path::PathBuf,
    port: u16,
}

impl World {
    async fn proxied_status(&self) -> Result<(StatusCode, serde_json::Value), BoxError> {
        let r = support::get(&format!("{}/whoami", self.bearerd.proxy(NAME)), None).await?;
        Ok((r.status, r.json()))
    }
}

/// Does the store hold a token for the connection? (A disconnected record may remain.)
async fn has_tokens(w: &World) -> bool {
    support::stored(&w.dir, NAME)
        .await
        .is_some_and(|r| r.access_token.is_some() || r.refresh_token.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_disconnect_in_a_real_browser() {
    if !browser::tools_or_skip() {
        return;
    }
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.add_user(USER, PASSWORD);
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = support::temp_store_dir("browser-connect");
    let port = support::free_port();
    let bearerd = Bearerd::start(&config(port, &tokens, &upstream, &dir)).await;
    let world = World {
        tokens,
        bearerd,
        dir,
        port,
    };
    let browser = Browser::launch().await;
    let failure = browser
        .run_steps(OVERALL, "failure", run(&world, &browser))
        .await;
    let _ = std::fs::remove_dir_all(&world.dir);
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
}

async fn run(w: &World, b: &Browser) -> Result<(), BoxError> {
    let admin = format!("http://127.0.0.1:{}", w.port);
    // The row of the connection; its state word is the text of its `.state` cell or element.
    let row = format!("tr#conn-{NAME}");
    let (status, _) = w.proxied_status().await?;
    check(
        status == StatusCode::SERVICE_UNAVAILABLE,
        format!("before connect: {status}"),
    )?;

    // Status page: not connected yet, so it offers Connect.
    b.goto(&format!("{admin}/")).await?;
    b.wait_text(&format!("{row} .state"), "needs_authorization")
        .await?;
    b.screenshot("status").await;
    let connect = b.wait_css(&format!("{row} a.button.connect")).await?;
    let href = connect.attr("href").await?.unwrap_or_default();
    check(
        href.ends_with(&format!("/connections/{NAME}/connect")),
        format!("Connect href {href}"),
    )?;
    connect.click().await?;

    // The provider's login page; a wrong password first.
    b.type_into("#username", USER).await?;
    b.type_into("#password", "wrong").await?;
    b.click("#login").await?;
    let error = b.text(".error").await?;
    check(
        error.contains("Wrong username or password"),
        format!("login error: {error}"),
    )?;
    b.type_into("#username", USER).await?;
    b.type_into("#password", PASSWORD).await?;
    b.click("#login").await?;

    // The authorize request bearerd sent: PKCE S256, exact redirect_uri, the scopes, a state.
    let log = w.tokens.authorization_requests();
    let first = log.first().ok_or("bearerd sent no authorize request")?;
    let callback = format!("{admin}/oauth/callback");
    check(
        first.redirect_uri.as_deref() == Some(&callback),
        format!("{first:?}"),
    )?;
    check(
        first.code_challenge_method.as_deref() == Some("S256"),
        format!("{first:?}"),
    )?;
    check(
        first.code_challenge.as_ref().is_some_and(|c| c.len() == 43),
        format!("{first:?}"),
    )?;
    check(
        first.state.as_ref().is_some_and(|s| s.len() >= 16),
        format!("weak state {first:?}"),
    )?;
    let scope = first.scope.clone().unwrap_or_default();
    check(
        scope.contains("read:hotel") && scope.contains("write:reservation"),
        scope,
    )?;

    // Consent, then bearerd's success page with the probe's answer.
    let client = b.text("#client").await?;
    check(
        client == w.tokens.client_id(),
        format!("consent names {client}"),
    )?;
    b.click("#approve").await?;
    b.wait_css("pre.probe").await?;
    let h1 = b.text("h1").await?;
    b.screenshot("connected").await;
    check(h1.trim() == "Connected", format!("success page h1: {h1}"))?;
    let page = b.source().await;
    check(
        page.contains(NAME),
        "success page does not name the connection",
    )?;
    let probe = b.text("pre.probe").await?;
    check(
        probe.contains(USER),
        format!("probe shows {probe:?}, not the user"),
    )?;
    check(
        b.url().await.starts_with(&admin),
        format!("landed on {}", b.url().await),
    )?;
    check(
        w.tokens.code_exchanges() == 1,
        format!("{} code exchanges", w.tokens.code_exchanges()),
    )?;
    check(has_tokens(w).await, "no tokens stored after connect")?;

    // The proxy now works as the logged-in user.
    let (status, echo) = w.proxied_status().await?;
    check(
        status == StatusCode::OK,
        format!("proxied after connect: {status} {echo}"),
    )?;
    check(
        echo["user"] == USER,
        format!("upstream saw user {}", echo["user"]),
    )?;

    // Disconnect from the status page: back on it (303), state `disconnected`, revoked, 503.
    b.goto(&format!("{admin}/")).await?;
    b.wait_text(&format!("{row} .state"), "connected").await?;
    b.wait_css(&format!("{row} a.reconnect")).await?;
    let revokes_before = w.tokens.revoke_requests();
    b.click(&format!(
        "{row} form[action='/connections/{NAME}/disconnect'] button.disconnect"
    ))
    .await?;
    b.wait_text(&format!("{row} .state"), "disconnected")
        .await?;
    b.screenshot("disconnected").await;
    let url = b.url().await;
    check(
        url.trim_end_matches('/') == admin,
        format!("after disconnect the browser is at {url}"),
    )?;
    b.wait_css(&format!("{row} a.button.connect")).await?;
    check(
        w.tokens.revoke_requests() > revokes_before,
        "the provider saw no revocation",
    )?;
    let (status, body) = w.proxied_status().await?;
    check(
        status == StatusCode::SERVICE_UNAVAILABLE,
        format!("after disconnect: {status} {body}"),
    )?;
    check(!has_tokens(w).await, "tokens still stored after disconnect")?;
    cross_origin(w, b, &admin).await
}

/// How many `<img>` tags the cross-origin page points at the connect URL.
const IMAGES: usize = 20;

/// A page on another origin that tries to start connect flows with `<img>` tags and offers
/// a plain link; `#status` reads `loaded N` once every image request was answered.
async fn attacker_page(admin: &str) -> String {
    let connect = format!("{admin}/connections/{NAME}/connect");
    let images: String = (0..IMAGES)
        .map(|i| format!("<img src=\"{connect}?i={i}\" onload=\"done()\" onerror=\"done()\">"))
        .collect();
    let html = format!(
        "<!doctype html><html><head><title>elsewhere</title><script>let left = {IMAGES};\
function done() {{ left -= 1; if (left === 0) {{ document.getElementById('status').textContent = 'loaded {IMAGES}'; }} }}\
</script></head><body><p id=\"status\">loading</p><a id=\"connect\" href=\"{connect}\">Connect</a>{images}</body></html>"
    );
    let addr = support::spawn_server(move |_request| {
        let html = html.clone();
        async move {
            let mut response =
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(html)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            Ok::<_, BoxError>(response)
        }
    })
    .await;
    format!("http://{addr}/")
}

async fn cross_origin(w: &World, b: &Browser, admin: &str) -> Result<(), BoxError> {
    let authorize_before = w.tokens.authorization_requests().len();
    let page = attacker_page(admin).await;
    b.goto(&page).await?;
    b.wait_text("#status", &format!("loaded {IMAGES}")).await?;
    b.screenshot("cross-origin").await;
    let state = w
        .bearerd
        .app
        .connection(NAME)
        .ok_or("no connection")?
        .snapshot()
        .state;
    check(
        state == bearerd::token::ConnState::Disconnected,
        format!(
            "after the cross-origin images the state is {}",
            state.as_str()
        ),
    )?;
    check(
        w.tokens.authorization_requests().len() == authorize_before,
        "a cross-origin <img> reached the provider's authorize page",
    )?;

    // Its plain link: bearerd asks first; the same-origin button starts the flow.
    b.click("#connect").await?;
    let h1 = b.text("h1").await?;
    check(
        h1.starts_with("Connect"),
        format!("the link's answer: {h1}"),
    )?;
    b.screenshot("connect-confirm").await;
    b.click(&format!(
        "form[action='/connections/{NAME}/connect'] button"
    ))
    .await?;
    b.wait_css("#username").await?;
    check(
        w.tokens.authorization_requests().len() == authorize_before + 1,
        "the button did not start exactly one flow",
    )?;
    Ok(())
}
