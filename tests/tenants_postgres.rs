//! Tenants across replicas sharing a postgres store (SPEC section 9): a tenant installed on
//! one replica is routed by the others (NOTIFY), and a tenant disconnected on one is
//! disconnected on all. The install's callback may come back to any replica. Skipped, loudly, without `BEARERD_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use pg_support::TestDb;
use support::connect_rig::callback_path;
use support::{Bearerd, TestResponse, TokenServer, TokenServerConfig, Upstream, send};

fn config(tokens: &TokenServer, upstream: &Upstream, db_url: &str) -> String {
    let dir = support::temp_store_dir("unused");
    support::ac_config(
        "hotel",
        "cloudbeds",
        tokens,
        &upstream.url(),
        &dir,
        "tenants = \"header:X-Property-ID\"",
    )
    .replace(
        &format!("kind = \"file\"\ndir = \"{}\"", dir.display()),
        &format!("kind = \"postgres\"\nurl = \"{db_url}\""),
    )
}

async fn request(method: Method, url: &str, property: Option<&str>) -> TestResponse {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(property) = property {
        builder = builder.header("x-property-id", property);
    }
    if url.contains("/disconnect") {
        builder = builder.header("content-type", "application/json");
    }
    send(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_route_a_tenant_installed_on_another_and_share_its_disconnect() {
    let Some(db) = TestDb::create("tenants").await else {
        return;
    };
    let tokens = TokenServer::start(TokenServerConfig {
        cloudbeds: true,
        ..TokenServerConfig::default()
    })
    .await;
    tokens.add_user("alice", "pw");
    tokens.set_properties("alice", &["1001"]);
    let upstream = Upstream::start(tokens.clone()).await;
    let text = config(&tokens, &upstream, &db.url);
    assert!(text.contains("kind = \"postgres\""), "{text}");
    let a = Bearerd::start(&text).await;
    let b = Bearerd::start(&text).await;

    // Install on replica a.
    let start = request(
        Method::GET,
        &format!("{}/connections/hotel/install", a.admin),
        None,
    )
    .await;
    let back = tokens
        .authorize_headless("alice", &start.header("location").unwrap())
        .await;
    // The provider sends the browser back through the load balancer: to replica b, which
    // finishes the flow a started (kept in the store); the callback is honoured once.
    let done = request(
        Method::GET,
        &format!("{}{}", b.admin, callback_path(&back)),
        None,
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    let replayed = request(
        Method::GET,
        &format!("{}{}", a.admin, callback_path(&back)),
        None,
    )
    .await;
    assert_eq!(
        replayed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        replayed.text()
    );
    let stored = db.column("SELECT count(*)::text FROM bearerd_flows").await;
    assert_eq!(stored, vec![Some("0".to_owned())], "a taken flow is gone");
    let installed = Instant::now();

    // Replica b routes it, with the token a stored (no token request of its own).
    let url = format!("{}/x", b.proxy("hotel"));
    let answer = support::eventually(Duration::from_secs(15), "b routes 1001", || {
        let url = url.clone();
        async move {
            let answer = request(Method::GET, &url, Some("1001")).await;
            (answer.status == StatusCode::OK).then_some(answer)
        }
    })
    .await;
    eprintln!(
        "replica b routed the new tenant {:?} after the install",
        installed.elapsed()
    );
    assert_eq!(answer.json()["user"], "alice");
    assert_eq!(tokens.refresh_requests(), 0);

    // Disconnected on a: disconnected on b too.
    let gone = request(
        Method::POST,
        &format!("{}/connections/hotel/tenants/1001/disconnect", a.admin),
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.text());
    let disconnected = Instant::now();
    support::eventually(Duration::from_secs(15), "b sees the disconnect", || {
        let url = url.clone();
        async move {
            let answer = request(Method::GET, &url, Some("1001")).await;
            (answer.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        }
    })
    .await;
    eprintln!(
        "replica b saw the disconnect {:?} after it",
        disconnected.elapsed()
    );
    let state = request(
        Method::GET,
        &format!("{}/connections/hotel/tenants/1001", b.admin),
        None,
    )
    .await;
    assert_eq!(state.json()["state"], "disconnected");
    a.app.shutdown().await;
    b.app.shutdown().await;
}
