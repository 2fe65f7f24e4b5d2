//! Several bearerd processes on one file store: the store lock plus re-read-after-lock
//! keeps one redemption per rotation across processes, and kill -9 at any point loses no
//! refresh token. Runs the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use support::{
    Daemon, Rotation, TempDir, TokenServer, TokenServerConfig, Upstream, seed_store, start_daemon,
    temp_store_dir,
};

/// Starts one bearerd process on the file store at `store` (config files in `dir`) and waits
/// until it is ready; returns it with its proxy and admin URLs. `start_daemon` picks the ports
/// and starts again on new ones if a port was taken between choosing and binding.
async fn start(
    tokens: &TokenServer,
    upstream: &Upstream,
    dir: &TempDir,
    store: &Path,
) -> (Daemon, String, String) {
    let (daemon, ports) = start_daemon(dir, &[], &[("BEARERD_LOG", "warn")], 2, |ports| {
        format!(
            r#"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[store]
dir = "{store}"
[[connection]]
name = "hotel"
provider = "oauth2"
listen = "127.0.0.1:{proxy}"
upstream = "{upstream}"
token_url = "{token_url}"
authorize_url = "{base}/authorize"
client_id = "{id}"
client_secret = "{secret}"
"#,
            admin = ports[0],
            proxy = ports[1],
            store = store.display(),
            upstream = upstream.url(),
            token_url = tokens.token_url(),
            base = tokens.base_url(),
            id = tokens.client_id(),
            secret = tokens.client_secret(),
        )
    })
    .await;
    (
        daemon,
        format!("http://127.0.0.1:{}", ports[1]),
        format!("http://127.0.0.1:{}", ports[0]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_store_never_reuse_a_refresh_token() {
    let tokens = TokenServer::start(TokenServerConfig {
        rotation: Rotation::Strict,
        lifetime: Some(Duration::from_secs(2)),
        kill_previous_access_on_refresh: true,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("two-procs");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let (dir_a, dir_b) = (TempDir::new("two-procs-a"), TempDir::new("two-procs-b"));
    let (a, proxy_a, _) = start(&tokens, &upstream, &dir_a, &dir).await;
    let (b, proxy_b, _) = start(&tokens, &upstream, &dir_b, &dir).await;

    let (ok, failed) = support::load(&[proxy_a, proxy_b], 16, Duration::from_secs(8)).await;
    a.terminate(Duration::from_secs(5)).await;
    b.terminate(Duration::from_secs(5)).await;
    let refreshes = tokens.successful_refreshes();
    eprintln!(
        "two processes, 8 s, 2 s tokens: {} ok, {} failed, {refreshes} refreshes, {} reuse detections",
        ok,
        failed,
        tokens.reuse_detections()
    );
    assert_eq!(tokens.reuse_detections(), 0);
    assert!(!tokens.grant_revoked());
    assert_eq!(failed, 0);
    assert!(ok > 100);
    // One process's worth: a refresh about every second, not two.
    assert!((4..=14).contains(&refreshes), "{refreshes} refreshes");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_refreshes_loses_no_refresh_token() {
    let tokens = TokenServer::start(TokenServerConfig {
        rotation: Rotation::Grace,
        lifetime: Some(Duration::from_secs(1)),
        kill_previous_access_on_refresh: true,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("kill9");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let configs = TempDir::new("kill9");
    for cycle in 0..20 {
        let (daemon, proxy, _) = start(&tokens, &upstream, &configs, &dir).await;
        let response = support::get(&format!("{proxy}/cycle/{cycle}"), None)
            .await
            .unwrap();
        assert_eq!(
            response.status,
            StatusCode::OK,
            "cycle {cycle}: {}",
            response.text()
        );
        // Refreshes happen every ~0.5 s; kill at a random point among them.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..900))).await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &daemon.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        daemon.wait(Duration::from_secs(5)).await;
    }
    let (daemon, proxy, _) = start(&tokens, &upstream, &configs, &dir).await;
    assert_eq!(
        support::get(&format!("{proxy}/final"), None)
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    daemon.terminate(Duration::from_secs(5)).await;
    eprintln!(
        "20 kill -9 cycles: {} refreshes, {} reuse detections",
        tokens.successful_refreshes(),
        tokens.reuse_detections()
    );
    assert!(!tokens.grant_revoked());
    assert_eq!(
        tokens.reuse_detections(),
        0,
        "a stale refresh token was redeemed"
    );
    assert!(tokens.successful_refreshes() >= 20);
}
