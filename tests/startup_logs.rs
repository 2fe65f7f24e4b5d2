//! A connection that starts misconfigured says so in the log at the default level (no
//! `BEARERD_LOG`), naming the connection and the reason, never a secret: its client_secret
//! file cannot be read, or its issuer's discovery fails. The binary runs as an operator runs
//! it; its stderr is read after a clean stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::StatusCode;
use support::{Daemon, TempDir, dead_url, eventually, free_port, get};

const SECRET: &str = "sso-client-secret-Qw7";

#[tokio::test]
async fn a_connection_that_starts_misconfigured_is_logged_at_the_default_level() {
    let dir = TempDir::new("startup-logs");
    let (admin, reporting, sso) = (free_port(), free_port(), free_port());
    let missing = dir.path().join("client-secret");
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{admin}"

[store]
dir = "{store}"

[[connection]]
name = "reporting"
provider = "oauth2"
listen = "127.0.0.1:{reporting}"
upstream = "https://api.example.com"
grant = "authorization_code"
token_url = "https://id.example.com/token"
authorize_url = "https://id.example.com/authorize"
client_id = "reporting-client"
client_secret = {{ file = "{missing}" }}

[[connection]]
name = "sso"
provider = "oauth2"
listen = "127.0.0.1:{sso}"
upstream = "https://api.example.com"
grant = "client_credentials"
issuer = "{issuer}"
client_id = "sso-client"
client_secret = "{SECRET}"
"#,
        store = dir.path().join("store").display(),
        missing = missing.display(),
        issuer = dead_url(),
    );
    let path = dir.file("bearerd.toml", &config);
    let daemon = Daemon::spawn(&["run", "--config", path.to_str().unwrap()], &[]);
    let health = format!("http://127.0.0.1:{admin}/healthz");
    eventually(
        Duration::from_secs(20),
        "bearerd to answer /healthz",
        || {
            let health = health.clone();
            async move {
                let answer = get(&health, None).await.ok()?;
                (answer.status == StatusCode::OK).then_some(())
            }
        },
    )
    .await;
    let out = daemon.terminate(Duration::from_secs(15)).await;
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at_default = |line: &&&str| line.contains(" ERROR ") || line.contains(" WARN ");
    let reporting = lines
        .iter()
        .filter(at_default)
        .find(|line| line.contains("connection=reporting"))
        .unwrap_or_else(|| panic!("no warning or error for reporting:\n{}", out.stderr));
    assert!(
        reporting.contains("misconfigured") && reporting.contains("client_secret"),
        "{reporting}"
    );
    let sso = lines
        .iter()
        .filter(at_default)
        .find(|line| line.contains("connection=sso"))
        .unwrap_or_else(|| panic!("no warning or error for sso:\n{}", out.stderr));
    assert!(sso.contains("discovery failed"), "{sso}");
    assert!(!out.stderr.contains(SECRET), "a secret in the log");
    assert!(
        !lines
            .iter()
            .any(|line| line.contains(" DEBUG ") || line.contains(" TRACE ")),
        "not the default level:\n{}",
        out.stderr
    );
}
