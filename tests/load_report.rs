//! Load runs that report figures for the notes (requests, failures, token requests, reuse
//! detections). Ignored by default; they assert correctness (no failures, no reuse), never
//! timings. Run:
//!
//! ```sh
//! cargo test --test load_report -- --ignored --nocapture
//! BEARERD_LOAD_SECS=60 cargo test --test load_report rotating -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{
    Bearerd, Rotation, TokenServer, TokenServerConfig, Upstream, ac_config, cc_config, seed_store,
    temp_store_dir,
};

fn seconds(default: u64) -> Duration {
    let secs = std::env::var("BEARERD_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "load run for the notes"]
async fn client_credentials_load() {
    let duration = seconds(30);
    let tokens = TokenServer::start(TokenServerConfig {
        lifetime: Some(Duration::from_secs(2)),
        kill_previous_access_on_refresh: true,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, "")).await;
    let (ok, failed) = support::load(&[bearerd.proxy("api")], 32, duration).await;
    eprintln!(
        "client_credentials, {duration:?}, 32 workers, 2 s tokens: {} requests, {ok} ok, {failed} failed, {} token requests, {} upstream 401s",
        ok + failed,
        tokens.token_requests(),
        upstream.unauthorized()
    );
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "load run for the notes"]
async fn rotating_refresh_token_load() {
    let duration = seconds(60);
    let tokens = TokenServer::start(TokenServerConfig {
        rotation: Rotation::Strict,
        lifetime: Some(Duration::from_secs(2)),
        kill_previous_access_on_refresh: true,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("load");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = ac_config("hotel", "oauth2", &tokens, &upstream.url(), &dir, "");
    let bearerd = Bearerd::start(&config).await;
    let (ok, failed) = support::load(&[bearerd.proxy("hotel")], 32, duration).await;
    eprintln!(
        "refresh_token strict rotation, {duration:?}, 32 workers, 2 s tokens: {} requests, {ok} ok, {failed} failed, {} refreshes, {} reuse detections, grant revoked: {}",
        ok + failed,
        tokens.successful_refreshes(),
        tokens.reuse_detections(),
        tokens.grant_revoked()
    );
    assert_eq!(failed, 0);
    assert_eq!(tokens.reuse_detections(), 0);
}
