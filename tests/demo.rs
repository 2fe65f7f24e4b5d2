//! `bearerd demo` as a user runs it: the binary started as a process with no config, its
//! printed URLs followed. Connect through the demo provider (headless, then in a real
//! browser: Connect → Approve), call the API through the proxy, see a refresh after one token
//! lifetime, revoke at the provider and get 503 with the connect URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{eventually, get, send};

/// A running `bearerd demo` and the URLs it printed.
struct Demo {
    child: Child,
    admin: String,
    proxy: String,
    provider: String,
    data_dir: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo with short tokens on free ports and reads its instructions.
    fn start(token_ttl: &str) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bearerd"))
            .args(["demo", "--admin", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .args(["--token-ttl", token_ttl])
            .env_remove("BEARERD_LOG")
            .env_remove("BEARERD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bearerd demo");
        let stdout = child.stdout.take().unwrap();
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the demo's output");
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Ctrl-C stops") {
                break;
            }
        }
        let url_after = |label: &str| {
            printed
                .lines()
                .find(|l| l.contains(label))
                .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| panic!("no `{label}` URL in the demo's output:\n{printed}"))
        };
        let proxy = url_after("curl ");
        let proxy = proxy.trim_end_matches("/hotel").to_owned();
        let data_dir = printed
            .lines()
            .find_map(|l| l.strip_prefix("Data: "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        Demo {
            admin: url_after("status page:"),
            proxy,
            provider: url_after("provider console:"),
            data_dir,
            child,
        }
    }

    async fn stats(&self) -> serde_json::Value {
        get(&format!("{}/stats", self.provider), None)
            .await
            .unwrap()
            .json()
    }

    /// Connect → Approve without a browser: the same requests a browser makes.
    async fn connect_headless(&self) {
        let start = send(
            Request::get(format!("{}/connections/demo-hotel/connect", self.admin))
                .header("sec-fetch-site", "none")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
        let authorize = url::Url::parse(&start.header("location").unwrap()).unwrap();
        let query: std::collections::HashMap<String, String> =
            authorize.query_pairs().into_owned().collect();
        let page = get(authorize.as_str(), None).await.unwrap();
        assert!(page.text().contains("Approve"), "{}", page.text());
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect_uri", &query["redirect_uri"])
            .append_pair("state", &query["state"])
            .append_pair("code_challenge", &query["code_challenge"])
            .append_pair("decision", "approve")
            .finish();
        let approved = send(
            Request::post(format!("{}/authorize", self.provider))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(approved.status, StatusCode::SEE_OTHER);
        let callback = approved.header("location").unwrap();
        assert!(callback.starts_with(&format!("{}/oauth/callback?", self.admin)));
        let done = get(&callback, None).await.unwrap();
        assert!(
            done.status == StatusCode::OK || done.status.is_redirection(),
            "callback: {} {}",
            done.status,
            done.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_proxies_refreshes_and_shows_a_revoked_grant() {
    let demo = Demo::start("3s");
    assert!(
        std::path::Path::new(&demo.data_dir).is_dir(),
        "{}",
        demo.data_dir
    );

    // Before anyone connects: 503 that says where to connect.
    let before = get(&format!("{}/hotel", demo.proxy), None).await.unwrap();
    assert_eq!(before.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(before.text().contains("/connections/demo-hotel/connect"));

    demo.connect_headless().await;
    let hotel = get(&format!("{}/hotel", demo.proxy), None).await.unwrap();
    assert_eq!(hotel.status, StatusCode::OK, "{}", hotel.text());
    assert_eq!(hotel.json()["name"], "Hotel Demo");

    // After one token lifetime the provider has counted a refresh and requests still work.
    eventually(
        Duration::from_secs(20),
        "a refresh at the provider",
        || async { (demo.stats().await["refreshes"].as_u64() >= Some(1)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // one whole lifetime of the first token
    let later = get(&format!("{}/reservations", demo.proxy), None)
        .await
        .unwrap();
    assert_eq!(later.status, StatusCode::OK, "{}", later.text());
    assert_eq!(demo.stats().await["rejected_api_calls"], 0);

    // Revoked at the provider: bearerd notices (401, rejected refresh) and says where to
    // reconnect.
    let revoked = send(
        Request::builder()
            .method(Method::POST)
            .uri(format!("{}/console/revoke", demo.provider))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let after = get(&format!("{}/hotel", demo.proxy), None).await.unwrap();
    assert_eq!(
        after.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        after.text()
    );
    assert!(
        after
            .text()
            .contains(&format!("{}/connections/demo-hotel/connect", demo.admin)),
        "{}",
        after.text()
    );
    let state = get(&format!("{}/connections/demo-hotel", demo.admin), None)
        .await
        .unwrap()
        .json();
    assert_eq!(state["state"], "needs_authorization");

    // Reconnecting brings it back.
    demo.connect_headless().await;
    let again = get(&format!("{}/hotel", demo.proxy), None).await.unwrap();
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_removes_its_data_on_exit_unless_kept() {
    let mut demo = Demo::start("30s");
    let dir = demo.data_dir.clone();
    assert!(std::path::Path::new(&dir).is_dir());
    let pid = demo.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = demo.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!std::path::Path::new(&dir).exists(), "{dir} removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_approve_in_a_real_browser() {
    if !browser::tools_or_skip() {
        return;
    }
    let demo = Demo::start("30s");
    let browser = tokio::time::timeout(Duration::from_secs(30), browser::Browser::start())
        .await
        .expect("the browser starts within 30 s")
        .expect("the browser starts");
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        browser.goto(&format!("{}/", demo.admin)).await?;
        browser.click("tr#conn-demo-hotel .connect").await?;
        browser.wait_css("#approve").await?;
        browser.click("#approve").await?;
        browser.wait_css("pre.probe").await?;
        let probe = browser.text("pre.probe").await?;
        if !probe.contains("Hotel Demo") {
            return Err(format!("success page probe: {probe}").into());
        }
        Ok::<_, support::BoxError>(())
    })
    .await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the browser flow did not finish within 60 s".to_owned()),
    };
    if failure.is_some() {
        browser.screenshot("demo-failure").await;
        eprintln!("{}", browser.source().await);
    }
    browser.close().await;
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
    let hotel = get(&format!("{}/hotel", demo.proxy), None).await.unwrap();
    assert_eq!(hotel.status, StatusCode::OK, "{}", hotel.text());
}
