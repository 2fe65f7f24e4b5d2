//! `bearerd demo` as a user runs it: the binary started as a process with no config, its
//! printed URLs followed. Connect through the demo provider (headless, then in a real
//! browser: Connect → Approve, and install one hotel of the app), call the API through the proxy, see a refresh after one token
//! lifetime, revoke at the provider and get 503 with the connect URL. Then the app: install
//! two hotels (install URL → Approve with a hotel chosen → callback), each answers its own
//! data through one base URL, both refresh, and revoking one leaves the other answering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{eventually, get, post_form, send};

/// A running `bearerd demo` and the URLs it printed.
struct Demo {
    child: Child,
    admin: String,
    proxy: String,
    /// The app's base URL (hotel id as the first path segment).
    app: String,
    /// The printed install URL of the app.
    install: String,
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
            .args(["--app-listen", "127.0.0.1:0"])
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
        let app = url_after("/1001/hotel");
        let app = app.trim_end_matches("/1001/hotel").to_owned();
        let data_dir = printed
            .lines()
            .find_map(|l| l.strip_prefix("Data: "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        Demo {
            admin: url_after("status page:"),
            proxy,
            app,
            install: url_after("install:"),
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

    /// Connect → Approve without a browser: the same requests a browser makes (the form as
    /// an older approval page posted it: no client or hotel field).
    async fn connect_headless(&self) {
        let url = format!("{}/connections/demo-hotel/connect", self.admin);
        let done = self.approve_headless(&url, &[]).await;
        assert!(
            done.status == StatusCode::OK || done.status.is_redirection(),
            "callback: {} {}",
            done.status,
            done.text()
        );
    }

    /// Install the app for `hotel` (chosen on the approval page) without a browser; returns
    /// the callback's answer.
    async fn install_headless(&self, hotel: &str) -> support::TestResponse {
        let install = self.install.clone();
        let page = self.approval_page(&install).await;
        assert!(page.contains("bearerd demo app"), "{page}");
        assert!(page.contains(&format!("value=\"{hotel}\"")), "{page}");
        self.approve_headless(
            &install,
            &[("client_id", "bearerd-demo-app"), ("hotel", hotel)],
        )
        .await
    }

    /// The approval page the flow started at `start` leads to.
    async fn approval_page(&self, start: &str) -> String {
        let authorize = self.authorize_url(start).await;
        let page = get(authorize.as_str(), None).await.unwrap();
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        page.text()
    }

    /// Starts a flow at bearerd (connect or install URL); returns the provider URL it
    /// redirects to.
    async fn authorize_url(&self, start: &str) -> url::Url {
        let start = send(
            Request::get(start)
                .header("sec-fetch-site", "none")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
        url::Url::parse(&start.header("location").unwrap()).unwrap()
    }

    /// Start at `start` → the provider's approval page → Approve (with `fields` added to
    /// the form) → bearerd's callback; returns the callback's answer.
    async fn approve_headless(
        &self,
        start: &str,
        fields: &[(&str, &str)],
    ) -> support::TestResponse {
        let authorize = self.authorize_url(start).await;
        let query: std::collections::HashMap<String, String> =
            authorize.query_pairs().into_owned().collect();
        let page = get(authorize.as_str(), None).await.unwrap();
        assert!(page.text().contains("Approve"), "{}", page.text());
        let mut form = vec![
            ("redirect_uri", query["redirect_uri"].as_str()),
            ("state", query["state"].as_str()),
            ("code_challenge", query["code_challenge"].as_str()),
            ("decision", "approve"),
        ];
        form.extend_from_slice(fields);
        let approved = post_form(&format!("{}/authorize", self.provider), &form, None)
            .await
            .unwrap();
        assert_eq!(approved.status, StatusCode::SEE_OTHER);
        let callback = approved.header("location").unwrap();
        assert!(callback.starts_with(&format!("{}/oauth/callback?", self.admin)));
        get(&callback, None).await.unwrap()
    }

    /// `GET path` through the app, for `hotel`.
    async fn app_get(&self, hotel: &str, path: &str) -> support::TestResponse {
        get(&format!("{}/{hotel}{path}", self.app), None)
            .await
            .unwrap()
    }

    /// "Revoke at provider" on the console: the grants of `fields` (all when empty).
    async fn revoke_at_provider(&self, fields: &[(&str, &str)]) {
        let console = format!("{}/console/revoke", self.provider);
        let revoked = post_form(&console, fields, None).await.unwrap();
        assert_eq!(revoked.status, StatusCode::SEE_OTHER);
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
    assert_eq!(hotel.json()["name"], "Hotel Demo Lisbon");

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
    // (Not asserted: the provider's count of rejected calls. A request that races a refresh
    // meets the token the refresh just superseded, and bearerd replays it with the new one.)

    // Revoked at the provider: bearerd notices (401, rejected refresh) and says where to
    // reconnect.
    demo.revoke_at_provider(&[]).await;
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
async fn two_hotels_install_behind_one_app_and_are_revoked_one_at_a_time() {
    let demo = Demo::start("3s");
    assert_eq!(
        demo.install,
        format!("{}/connections/demo-app/install", demo.admin)
    );

    // Before any install: the app's hotel is unknown, and the answer says where to install.
    let before = demo.app_get("1001", "/hotel").await;
    assert_eq!(before.status, StatusCode::NOT_FOUND, "{}", before.text());
    assert!(before.text().contains(&demo.install), "{}", before.text());
    // The single-hotel connection holds its own grant for Lisbon: the app's grants for the
    // same hotel neither replace it nor are replaced by it.
    demo.connect_headless().await;

    // Each install names its hotel in the token response; bearerd makes it that tenant.
    for hotel in ["1001", "1002"] {
        let done = demo.install_headless(hotel).await;
        assert_eq!(
            done.header("location").as_deref(),
            Some(format!("/connections/demo-app/installed?tenant={hotel}").as_str()),
            "{} {}",
            done.status,
            done.text()
        );
    }
    let lisbon = demo.app_get("1001", "/hotel").await;
    assert_eq!(lisbon.status, StatusCode::OK, "{}", lisbon.text());
    assert_eq!(lisbon.json()["name"], "Hotel Demo Lisbon");
    let porto = demo.app_get("1002", "/reservations").await;
    assert_eq!(porto.status, StatusCode::OK, "{}", porto.text());
    assert_eq!(porto.json()["hotel_id"], "1002");
    assert_eq!(porto.json()["reservations"][0]["guest"], "Grace Hopper");
    let stats = demo.stats().await;
    assert_eq!(stats["hotels"]["1001"]["authorizations"], 2, "{stats}");
    assert_eq!(stats["hotels"]["1002"]["authorizations"], 1, "{stats}");

    // After one token lifetime the provider has refreshed each hotel's grant and both answer.
    eventually(
        Duration::from_secs(20),
        "a refresh of each hotel's grant at the provider",
        || async {
            let stats = demo.stats().await;
            let refreshed = |h: &str| stats["hotels"][h]["refreshes"].as_u64() >= Some(1);
            (refreshed("1001") && refreshed("1002")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // one whole lifetime of the first tokens
    for (hotel, name) in [("1001", "Hotel Demo Lisbon"), ("1002", "Hotel Demo Porto")] {
        let later = demo.app_get(hotel, "/hotel").await;
        assert_eq!(later.status, StatusCode::OK, "{hotel}: {}", later.text());
        assert_eq!(later.json()["name"], name);
    }
    // (A request that races a refresh may meet the just-superseded token at the provider;
    // bearerd replays it with the new one, so the provider's rejection count is not asserted:
    // every answer above is a 200.)

    // Lisbon withdraws the app at the provider: its requests get 503 with its reconnect URL;
    // Porto keeps answering, and so does the single-hotel connection's own Lisbon grant.
    demo.revoke_at_provider(&[("client", "bearerd-demo-app"), ("hotel", "1001")])
        .await;
    let revoked = demo.app_get("1001", "/hotel").await;
    assert_eq!(
        revoked.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        revoked.text()
    );
    let reconnect = format!("{}/connections/demo-app/tenants/1001/connect", demo.admin);
    assert!(revoked.text().contains(&reconnect), "{}", revoked.text());
    let porto = demo.app_get("1002", "/hotel").await;
    assert_eq!(porto.status, StatusCode::OK, "{}", porto.text());
    assert_eq!(porto.json()["name"], "Hotel Demo Porto");
    let tenant = get(
        &format!("{}/connections/demo-app/tenants/1001", demo.admin),
        None,
    )
    .await
    .unwrap()
    .json();
    assert_eq!(tenant["state"], "needs_authorization", "{tenant}");
    let single = get(&format!("{}/hotel", demo.proxy), None).await.unwrap();
    assert_eq!(single.status, StatusCode::OK, "{}", single.text());
    assert_eq!(single.json()["name"], "Hotel Demo Lisbon");
    let stats = demo.stats().await;
    assert_eq!(stats["hotels"]["1001"]["revocations"], 1, "{stats}");
    assert_eq!(stats["hotels"]["1002"]["revocations"], 0, "{stats}");
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
        // The app: the printed install URL, Porto chosen on the approval page.
        browser.goto(&demo.install).await?;
        browser.click("#hotel-1002").await?;
        browser.click("#approve").await?;
        browser.wait_text("h1", "Installed").await?;
        let installed = browser.url().await;
        if !installed.ends_with("/connections/demo-app/installed?tenant=1002") {
            return Err(format!("install ended at {installed}").into());
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
    let porto = demo.app_get("1002", "/hotel").await;
    assert_eq!(porto.status, StatusCode::OK, "{}", porto.text());
    assert_eq!(porto.json()["name"], "Hotel Demo Porto");
    // Only the chosen hotel was installed.
    let lisbon = demo.app_get("1001", "/hotel").await;
    assert_eq!(lisbon.status, StatusCode::NOT_FOUND, "{}", lisbon.text());
}
