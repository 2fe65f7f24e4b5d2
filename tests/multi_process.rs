//! Several bearerd processes on one file store: the store lock plus re-read-after-lock
//! keeps one redemption per rotation across processes, and kill -9 at any point loses no
//! refresh token. Runs the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use support::{
    Daemon, Rotation, TokenServer, TokenServerConfig, Upstream, eventually, free_port, seed_store,
    temp_store_dir,
};

/// Writes a config for one process and returns (config path, proxy URL, admin URL).
fn process_config(
    tokens: &TokenServer,
    upstream: &Upstream,
    dir: &Path,
    tag: &str,
) -> (String, String, String) {
    let (admin, proxy) = (free_port(), free_port());
    let text = format!(
        r#"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[store]
dir = "{dir}"
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
        dir = dir.display(),
        upstream = upstream.url(),
        token_url = tokens.token_url(),
        base = tokens.base_url(),
        id = tokens.client_id(),
        secret = tokens.client_secret(),
    );
    let path = dir.with_extension(format!("{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    (
        path.display().to_string(),
        format!("http://127.0.0.1:{proxy}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

async fn ready(admin: &str) {
    eventually(Duration::from_secs(15), "bearerd ready", || async {
        let r = support::get(&format!("{admin}/readyz"), None).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
}

fn start(config: &str) -> Daemon {
    Daemon::spawn(&["run", "--config", config], &[("BEARERD_LOG", "warn")])
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
    let (config_a, proxy_a, admin_a) = process_config(&tokens, &upstream, &dir, "a");
    let (config_b, proxy_b, admin_b) = process_config(&tokens, &upstream, &dir, "b");
    let a = start(&config_a);
    let b = start(&config_b);
    ready(&admin_a).await;
    ready(&admin_b).await;

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
    for cycle in 0..20 {
        let (config, proxy, admin) = process_config(&tokens, &upstream, &dir, "k");
        let daemon = start(&config);
        ready(&admin).await;
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
    let (config, proxy, admin) = process_config(&tokens, &upstream, &dir, "final");
    let daemon = start(&config);
    ready(&admin).await;
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
