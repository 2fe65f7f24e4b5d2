//! `max_connections` per listener and `allow_clients` (403 and a close).

use std::time::Duration;

use serde_json::Value;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn above_max_connections_a_proxy_connection_is_closed_at_once() {
    let rig = rig("", &limits("max_connections = 2"), &[]).await;
    let base = rig.proxy();
    let mut first = answered(&base, "/one").await;
    let second = answered(&base, "/two").await;
    let mut third = Wire::connect(&base).await.unwrap();
    assert!(third.closed_by_peer().await.unwrap(), "one too many");
    // The open ones still work, and so does the other listener.
    let again = exchange(&mut first, &request("GET", "/again", &base, "")).await;
    assert_eq!(again.status, 200, "{again:?}");
    let health = support::get(&format!("{}/healthz", rig.admin()), None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    // A closed connection frees its place.
    drop(second);
    let path = "/after-close";
    support::eventually(Duration::from_secs(10), "a place under the cap", || {
        let base = base.clone();
        async move {
            let mut wire = Wire::connect(&base).await.ok()?;
            wire.send(&request("GET", path, &base, "")).await.ok()?;
            let response = wire.read_response(false).await.ok()?;
            (response.status == 200).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_on_the_admin_listener_leaves_the_proxy_answering() {
    let rig = rig("", &limits("max_connections = 2"), &[]).await;
    let admin = rig.admin();
    let mut first = answered(&admin, "/healthz").await;
    let _second = answered(&admin, "/healthz").await;
    let mut third = Wire::connect(&admin).await.unwrap();
    assert!(third.closed_by_peer().await.unwrap(), "one too many");
    let proxied = support::get(&format!("{}/flood", rig.proxy()), None)
        .await
        .unwrap();
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    let again = exchange(&mut first, &request("GET", "/healthz", &admin, "")).await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_outside_allow_clients_gets_403_and_a_close() {
    // A loopback listener that only 10.0.0.0/8 may use; the fast path is on.
    let rig = rig("allow_clients = [\"10.0.0.0/8\"]", "", &[]).await;
    let base = rig.proxy();
    let mut wire = Wire::connect(&base).await.unwrap();
    let response = exchange(&mut wire, &request("GET", "/secret", &base, "")).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["status"], 403);
    assert_eq!(body["connection"], NAME);
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(wire.closed_by_peer().await.unwrap());
    assert_eq!(rig.upstream.requests(), 0, "nothing went upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_inside_allow_clients_is_served() {
    let rig = rig("allow_clients = [\"127.0.0.0/8\"]", "", &["127.0.0.1/32"]).await;
    let proxied = support::get(&format!("{}/mine", rig.proxy()), None)
        .await
        .unwrap();
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    let health = support::get(&format!("{}/healthz", rig.admin()), None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_answers_403_outside_its_allow_clients() {
    let rig = rig("", "", &["10.0.0.0/8"]).await;
    let admin = rig.admin();
    let mut wire = Wire::connect(&admin).await.unwrap();
    let response = exchange(&mut wire, &request("GET", "/healthz", &admin, "")).await;
    assert_eq!(response.status, 403, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(wire.closed_by_peer().await.unwrap());
}
