//! The status page an on-call person reads in two seconds (issue 13), with six connections
//! brought into six states by the test providers: connected, needs_authorization (its stored
//! grant is rejected), misconfigured (its client_secret file is missing), disconnected (on
//! purpose, through the admin API), never connected, and degraded (its token endpoint
//! answers 503). The page must list the problems first, say each state in plain words with
//! deliberate and never-connected rows neutral, show the app's base URL and the upstream on
//! each row, and keep times on one line.
//!
//! Two views of the same scenario: the served HTML (always runs), and a real headless
//! Chromium reading the DOM and saving `target/browser-status-page.png` (skipped loudly
//! without chromium/chromedriver, failed under `CI`).
//! Run: `cargo test --test status_page -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod support;

use std::time::Duration;

use bearerd::token::ConnState;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::{Bearerd, Failure, TempDir, TokenServer, TokenServerConfig, Upstream};

/// The rows as the page must list them: name, label, state word.
const EXPECTED: [(&str, &str, &str); 6] = [
    (
        "channel-manager",
        "Needs authorization",
        "needs_authorization",
    ),
    ("reporting", "Misconfigured", "misconfigured"),
    ("payments", "Degraded", "degraded"),
    ("spa", "Not connected yet", "needs_authorization"),
    ("front-desk", "Connected", "connected"),
    ("housekeeping", "Disconnected", "disconnected"),
];

const SUMMARY: &str = "6 connections: 1 needs authorization, 1 misconfigured, 1 degraded, \
1 not connected yet, 1 connected, 1 disconnected";

struct World {
    bearerd: Bearerd,
    upstream: Upstream,
    _tokens: TokenServer,
    _failing: TokenServer,
    _dir: TempDir,
}

/// An authorization-code connection on `tokens`, with `secret` as its client_secret value.
fn authorization_code(name: &str, tokens: &TokenServer, upstream: &str, secret: &str) -> String {
    format!(
        r#"
[[connection]]
name = "{name}"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "authorization_code"
token_url = "{token_url}"
authorize_url = "{base}/authorize"
revoke_url = "{revoke_url}"
client_id = "{client_id}"
client_secret = {secret}
"#,
        token_url = tokens.token_url(),
        base = tokens.base_url(),
        revoke_url = tokens.revoke_url(),
        client_id = tokens.client_id(),
    )
}

/// Bearerd with the six connections (in an order unlike the page's), each settled in its
/// state.
async fn world() -> World {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let failing = TokenServer::start(TokenServerConfig {
        client_id: "payments-client".into(),
        client_secret: "payments-secret".into(),
        ..TokenServerConfig::default()
    })
    .await;
    // Transient failures with a long Retry-After: degraded for the whole test.
    for _ in 0..3 {
        failing.script(Failure::Status503 {
            retry_after: Some(600),
        });
    }
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("status-page");
    let store = dir.path().join("store");
    support::seed_store(&store, "front-desk", &tokens.seed_grant()).await;
    support::seed_store(&store, "housekeeping", &tokens.seed_grant()).await;
    // A grant the provider does not know (revoked, or from another client): rejected.
    support::seed_store(&store, "channel-manager", "a-grant-the-provider-revoked").await;
    let literal = format!("\"{}\"", tokens.client_secret());
    let missing = format!(
        "{{ file = \"{}\" }}",
        dir.path().join("missing-secret").display()
    );
    let url = upstream.url();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"

[store]
kind = "file"
dir = "{store}"
{front_desk}{housekeeping}{spa}
[[connection]]
name = "payments"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{url}"
grant = "client_credentials"
token_url = "{failing_url}"
client_id = "payments-client"
client_secret = "payments-secret"
{reporting}{channel_manager}"#,
        store = store.display(),
        front_desk = authorization_code("front-desk", &tokens, &url, &literal),
        housekeeping = authorization_code("housekeeping", &tokens, &url, &literal),
        spa = authorization_code("spa", &tokens, &url, &literal),
        failing_url = failing.token_url(),
        reporting = authorization_code("reporting", &tokens, &url, &missing),
        channel_manager = authorization_code("channel-manager", &tokens, &url, &literal),
    );
    let bearerd = Bearerd::start(&config).await;
    settle(&bearerd, "housekeeping", ConnState::Connected).await;
    let disconnect = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "{}/connections/housekeeping/disconnect",
            bearerd.admin
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = support::send(disconnect).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    for (name, state) in [
        ("front-desk", ConnState::Connected),
        ("housekeeping", ConnState::Disconnected),
        ("spa", ConnState::NeedsAuthorization),
        ("payments", ConnState::Degraded),
        ("reporting", ConnState::Misconfigured),
        ("channel-manager", ConnState::NeedsAuthorization),
    ] {
        settle(&bearerd, name, state).await;
    }
    World {
        bearerd,
        upstream,
        _tokens: tokens,
        _failing: failing,
        _dir: dir,
    }
}

async fn settle(bearerd: &Bearerd, name: &str, state: ConnState) {
    let connection = bearerd.app.connection(name).unwrap();
    let what = format!("{name} to be {}", state.as_str());
    support::eventually(Duration::from_secs(10), &what, || {
        let now = connection.snapshot().state;
        async move { (now == state).then_some(()) }
    })
    .await;
}

/// The text between `from` and the next `to` after it.
fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text.find(from).unwrap_or_else(|| panic!("no {from:?}")) + from.len();
    let rest = &text[start..];
    &rest[..rest
        .find(to)
        .unwrap_or_else(|| panic!("no {to:?} after {from:?}"))]
}

fn without_tags(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_page_lists_problems_first_in_plain_words() {
    let w = world().await;
    let page = support::get(&format!("{}/", w.bearerd.admin), None)
        .await
        .unwrap();
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert_eq!(
        without_tags(between(&html, "id=\"summary\">", "</p>")),
        SUMMARY
    );
    let ids: Vec<&str> = html
        .split("<tr id=\"conn-")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    let names: Vec<&str> = EXPECTED.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(ids, names);
    for (name, label, state) in EXPECTED {
        let row = between(&html, &format!("<tr id=\"conn-{name}\""), "</tr>");
        assert!(row.contains(&format!(">{label}</span>")), "{name}: {row}");
        assert!(
            row.contains(&format!("<code class=\"state\">{state}</code>")),
            "{name}: {row}"
        );
        let listen = w.bearerd.proxy(name);
        assert!(
            row.contains(&format!("base URL\">{listen}</span>")),
            "{name} does not show {listen}: {row}"
        );
        assert!(
            row.contains(&format!("→ {}", w.upstream.url().trim_end_matches('/'))),
            "{name} does not show its upstream: {row}"
        );
    }
    let row = |name: &str| between(&html, &format!("<tr id=\"conn-{name}\""), "</tr>").to_owned();
    // Problems say why; neutral rows are grey and offer Connect.
    assert!(row("channel-manager").contains("class=\"error\">Last error: "));
    assert!(row("channel-manager").contains("invalid_grant"));
    assert!(row("reporting").contains("client_secret: cannot be read"));
    assert!(!row("reporting").contains("missing-secret"), "a file path");
    assert!(row("payments").contains("class=\"error\">Last error: "));
    for name in ["spa", "housekeeping"] {
        let row = row(name);
        assert!(row.contains("class=\"row tone-off\""), "{row}");
        assert!(!row.contains("class=\"error\""), "{row}");
        assert!(row.contains("class=\"button connect\""), "{row}");
    }
    assert!(
        row("front-desk").contains(">in 59m</time>") || row("front-desk").contains(">in 1h</time>")
    );
    assert!(row("front-desk").contains("class=\"button reconnect\""));
    assert!(!html.contains("(disabled)") && !html.contains(">disabled<"));
}

/// Everything the test reads from the page in one script, so a self-reload cannot land
/// between two reads.
const READ_PAGE: &str = r#"
const rows = Array.from(document.querySelectorAll('tbody tr'));
const red = 'rgb(179, 38, 30)';
return {
  summary: document.getElementById('summary').innerText,
  rows: rows.map(r => ({
    id: r.id,
    label: r.querySelector('.label').innerText,
    state: r.querySelector('code.state').innerText,
    listen: r.querySelector('.listen').innerText,
    label_color: getComputedStyle(r.querySelector('.label')).color,
    connect: r.querySelector('a.button.connect') !== null,
  })),
  red: red,
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  wrapped: Array.from(document.querySelectorAll('.when'))
    .filter(e => e.getClientRects().length !== 1)
    .map(e => e.innerText),
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_the_states_in_order_and_a_screenshot_is_saved() {
    if !browser::tools_or_skip() {
        return;
    }
    let w = world().await;
    let b = browser::Browser::launch().await;
    let result = tokio::time::timeout(Duration::from_secs(60), read(&w, &b)).await;
    // Tall enough for every row in the picture (the checks above ran at 1024 x 900).
    let _ = b.client.set_window_size(1024, 1300).await;
    b.screenshot("status-page").await;
    b.close().await;
    let page = match result {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the browser did not read the page within 60 s"),
    };
    assert_eq!(page["summary"].as_str().unwrap().trim(), SUMMARY);
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), EXPECTED.len(), "{page}");
    for (row, (name, label, state)) in rows.iter().zip(EXPECTED) {
        assert_eq!(row["id"], format!("conn-{name}"), "{page}");
        assert_eq!(row["label"], label, "{name}");
        assert_eq!(row["state"], state, "{name}");
        assert_eq!(row["listen"], w.bearerd.proxy(name), "{name}");
    }
    let by_name = |name: &str| {
        rows.iter()
            .find(|r| r["id"] == format!("conn-{name}"))
            .unwrap()
    };
    // Red for what needs someone, not for a deliberate disconnect or a fresh install.
    assert_eq!(by_name("channel-manager")["label_color"], page["red"]);
    for name in ["spa", "housekeeping"] {
        assert_ne!(by_name(name)["label_color"], page["red"], "{name}");
        assert_eq!(by_name(name)["connect"], true, "{name}");
    }
    assert_eq!(page["wrapped"], Value::Array(vec![]), "times wrapped");
    assert_eq!(page["overflow"], 0, "the page scrolls sideways at 1024 px");
}

async fn read(w: &World, b: &browser::Browser) -> Result<Value, support::BoxError> {
    b.goto(&format!("{}/", w.bearerd.admin)).await?;
    b.wait_css("#summary").await?;
    Ok(b.client.execute(READ_PAGE, vec![]).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_row_counts_its_tenants_and_links_their_table() {
    use support::connect_rig::{Options, admin_get, callback_path, rig_with};
    let rig = rig_with(Options {
        provider: "cloudbeds",
        cloudbeds: true,
        no_revoke_url: true,
        extra: "tenants = \"header:X-Property-ID\"",
        ..Options::default()
    })
    .await;
    rig.tokens.add_user("front-office", "pw");
    rig.tokens.set_properties("front-office", &["1001"]);
    let start = admin_get(&rig, "/connections/hotel/install").await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let authorize = start.header("location").unwrap();
    let back = rig
        .tokens
        .authorize_headless("front-office", &authorize)
        .await;
    let installed = admin_get(&rig, &callback_path(&back)).await;
    assert_eq!(
        installed.status,
        StatusCode::SEE_OTHER,
        "{}",
        installed.text()
    );
    let html = admin_get(&rig, "/").await.text();
    let row = between(&html, "<tr id=\"conn-hotel\"", "</tr>");
    assert!(
        row.contains(
            "<div class=\"tenants\">1 tenant: <span class=\"count ok\">1 connected</span></div>"
        ),
        "{row}"
    );
    assert!(
        row.contains("href=\"/connections/hotel/page\">Tenants</a>"),
        "{row}"
    );
    assert!(row.contains(">Install a tenant</a>"), "{row}");
}
