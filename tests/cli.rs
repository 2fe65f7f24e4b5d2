//! The `bearerd` command line (SPEC section 1), run as the built binary: `check`,
//! `--version`, `help`, `status`, and `run` until SIGTERM or SIGINT (exit 0, in-flight
//! requests finish first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{
    Daemon, TempDir, TokenServer, TokenServerConfig, Upstream, cc_config, eventually, start_daemon,
};

const BIN: &str = env!("CARGO_BIN_EXE_bearerd");

/// Runs `bearerd ARGS...` to completion with bearerd's environment variables cleared.
fn bearerd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("BEARERD_CONFIG")
        .env_remove("BEARERD_ADMIN")
        .env_remove("BEARERD_LOG")
        .env_remove("BEARERD_LOG_FORMAT")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run the bearerd binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config.example.toml")
        .display()
        .to_string()
}

#[test]
fn check_accepts_the_example_and_prints_one_line_per_connection() {
    let out = bearerd(&["check", "--config", &example_config()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for (name, provider, listen, upstream, grant) in [
        (
            "cloudbeds",
            "cloudbeds",
            "127.0.0.1:8081",
            "https://api.cloudbeds.com",
            "authorization_code",
        ),
        (
            "apaleo",
            "apaleo",
            "127.0.0.1:8082",
            "https://api.apaleo.com",
            "client_credentials",
        ),
    ] {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {name}:\n{stdout}");
        for field in [provider, listen, upstream, grant, "file"] {
            assert!(
                lines[0].contains(field),
                "{name} line shows {field}: {}",
                lines[0]
            );
        }
    }
}

#[test]
fn check_touches_nothing() {
    let dir = TempDir::new("cli-check");
    let store = dir.path().join("store-that-must-not-exist");
    let example = std::fs::read_to_string(example_config()).unwrap();
    let from = "dir = \"./bearerd-data\"";
    assert!(example.contains(from), "example still has `{from}`");
    let config = example.replacen(from, &format!("dir = \"{}\"", store.display()), 1);
    let path = dir.file("bearerd.toml", &config);
    let out = bearerd(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!store.exists(), "check created the store directory");
}

#[test]
fn check_rejects_a_bad_config_with_exit_2_naming_the_key() {
    let dir = TempDir::new("cli-bad");
    let cases = [
        (
            "listen = \"127.0.0.1:8082\"",
            "listen = \"nowhere\"",
            "connection[1].listen",
        ),
        (
            "scopes = [\"setup.read\"",
            "retries = 3\nscopes = [\"setup.read\"",
            "retries",
        ),
        ("kind = \"file\"", "kind = \"floppy\"", "store.kind"),
    ];
    let example = std::fs::read_to_string(example_config()).unwrap();
    for (from, to, key) in cases {
        assert!(example.contains(from), "example still has `{from}`");
        let path = dir.file("bad.toml", &example.replacen(from, to, 1));
        let out = bearerd(&["check", "--config", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "stderr names `{key}`: {stderr}");
    }
    let out = bearerd(&["check", "--config", "/nonexistent/bearerd.toml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing config is a bad config"
    );
}

#[test]
fn run_with_a_bad_config_exits_2() {
    let dir = TempDir::new("cli-run-bad");
    let path = dir.file("bad.toml", "[admin]\nlisten = \"nowhere\"\n");
    let out = bearerd(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("admin.listen"));
}

#[test]
fn version_and_help_exit_0() {
    let out = bearerd(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("bearerd") && stdout.contains(env!("CARGO_PKG_VERSION")),
        "{stdout}"
    );
    let out = bearerd(&["help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for command in ["run", "check", "status"] {
        assert!(stdout.contains(command), "help lists `{command}`: {stdout}");
    }
}

#[test]
fn status_against_nothing_exits_1() {
    let out = bearerd(&["status", "--admin", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(!out.stderr.is_empty(), "says why");
}

/// `bearerd run` with a client_credentials connection `crm`, once ready; returns the daemon
/// and its admin and proxy base URLs.
async fn run_daemon(
    tokens: &TokenServer,
    upstream: &Upstream,
    dir: &TempDir,
) -> (Daemon, String, String) {
    let store = dir.path().join("store");
    let (daemon, ports) = start_daemon(dir, &[], &[], 2, |ports| {
        let config = cc_config("crm", tokens, upstream, "")
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{}\"", ports[0]),
                1,
            )
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{}\"", ports[1]),
                1,
            );
        format!("{config}\n[store]\ndir = \"{}\"\n", store.display())
    })
    .await;
    (
        daemon,
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_status_and_exits_0_on_sigterm() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("cli-run");
    let (mut daemon, admin, proxy) = run_daemon(&tokens, &upstream, &dir).await;

    let table = eventually(
        Duration::from_secs(15),
        "`bearerd status` to show crm connected",
        || {
            assert!(
                daemon.try_status().is_none(),
                "bearerd exited early: {:?}",
                daemon.try_status()
            );
            let admin = admin.clone();
            async move {
                let out = tokio::process::Command::new(BIN)
                    .args(["status", "--admin", &admin])
                    .output()
                    .await
                    .unwrap();
                let stdout = text(&out.stdout);
                let connected = stdout
                    .lines()
                    .any(|l| l.starts_with("crm ") && l.contains("connected"));
                (out.status.code() == Some(0) && connected).then_some(stdout)
            }
        },
    )
    .await;
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    for column in ["NAME", "STATE"] {
        assert!(header.contains(column), "table header: {header}");
    }
    assert_eq!(lines.count(), 1, "one row per connection:\n{table}");

    // The proxy works too.
    let response = support::get(&format!("{proxy}/v1/x"), None).await.unwrap();
    assert_eq!(response.status, http::StatusCode::OK, "{}", response.text());

    let out = daemon.terminate(Duration::from_secs(10)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        out.stderr
    );
    let after = bearerd(&["status", "--admin", &admin]);
    assert_eq!(after.status.code(), Some(1), "the admin listener is gone");
}

#[test]
fn disconnect_against_nothing_exits_1() {
    let out = bearerd(&["disconnect", "crm", "--admin", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot disconnect crm"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_on_a_running_daemon() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("cli-disconnect");
    let (daemon, admin, proxy) = run_daemon(&tokens, &upstream, &dir).await;
    let out = tokio::process::Command::new(BIN)
        .args(["disconnect", "crm", "--admin", &admin])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // client_credentials has nothing to revoke: the provider is not told, and it says so.
    assert!(stdout.contains("crm: disconnected"), "{stdout}");
    assert!(stdout.contains("not told"), "{stdout}");
    let status = bearerd(&["status", "--admin", &admin]);
    assert!(
        text(&status.stdout)
            .lines()
            .any(|l| l.starts_with("crm ") && l.contains("disconnected")),
        "{}",
        text(&status.stdout)
    );
    let response = support::get(&format!("{proxy}/v1/x"), None).await.unwrap();
    assert_eq!(response.status, http::StatusCode::SERVICE_UNAVAILABLE);
    let out = daemon.terminate(Duration::from_secs(10)).await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_exits_0_on_sigint() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("cli-sigint");
    let (daemon, _admin, _proxy) = run_daemon(&tokens, &upstream, &dir).await;
    let kill = Command::new("kill")
        .arg("-INT")
        .arg(daemon.pid().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let out = daemon.wait(Duration::from_secs(10)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "clean exit on SIGINT:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("cli-drain");
    let (daemon, _admin, proxy) = run_daemon(&tokens, &upstream, &dir).await;
    let before = upstream.requests();
    let slow_url = format!("{proxy}/delay/1500");
    let slow = tokio::spawn(async move { support::get(&slow_url, None).await });
    eventually(
        Duration::from_secs(10),
        "the slow request to reach the upstream",
        || {
            let n = upstream.requests();
            async move { (n > before).then_some(()) }
        },
    )
    .await;
    let out = daemon.terminate(Duration::from_secs(15)).await;
    let slow = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(slow.status, http::StatusCode::OK, "{}", slow.text());
    assert_eq!(slow.json()["path"], "/delay/1500");
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
}

#[test]
fn a_missing_config_file_says_how_to_give_one() {
    let dir = TempDir::new("cli-missing");
    let out = Command::new(BIN)
        .args(["check"])
        .env_remove("BEARERD_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for needle in ["bearerd.toml", "--config", "BEARERD_CONFIG"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[test]
fn a_config_without_connections_exits_2() {
    let dir = TempDir::new("cli-empty");
    let path = dir.file("empty.toml", "[admin]\nlisten = \"127.0.0.1:0\"\n");
    for command in ["check", "run"] {
        let out = bearerd(&[command, "--config", &path.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(
            text(&out.stderr).contains("no [[connection]]"),
            "{command}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_and_connect_on_a_running_daemon() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("cli-refresh");
    let (daemon, admin, _proxy) = run_daemon(&tokens, &upstream, &dir).await;
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(BIN)
            .args(&args)
            .env_remove("BEARERD_ADMIN")
            .output()
            .await
            .unwrap()
    };
    let before = tokens.client_credentials_requests();
    let out = run(vec![
        "refresh".into(),
        "crm".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("crm: connected (generation "),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        tokens.client_credentials_requests(),
        before + 1,
        "one token request"
    );

    // client_credentials has nothing to connect in a browser; an unknown name is named.
    let out = run(vec![
        "connect".into(),
        "crm".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("client_credentials"),
        "{}",
        text(&out.stderr)
    );
    let out = run(vec![
        "connect".into(),
        "nope".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no connection named nope"),
        "{}",
        text(&out.stderr)
    );
    let out = run(vec![
        "refresh".into(),
        "crm".into(),
        "--admin".into(),
        "http://127.0.0.1:1".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    daemon.terminate(Duration::from_secs(10)).await;

    // An authorization-code connection: the URL to open.
    let store = TempDir::new("cli-connect");
    let bearerd = support::Bearerd::start(&support::ac_config(
        "hotel",
        "oauth2",
        &tokens,
        &upstream.url(),
        store.path(),
        "",
    ))
    .await;
    let out = run(vec![
        "connect".into(),
        "hotel".into(),
        "--admin".into(),
        bearerd.admin.clone(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{}/connections/hotel/connect", bearerd.admin)),
        "{stdout}"
    );
}

/// `bearerd import NAME [--force] --config CONFIG` with `token` on standard input.
async fn import(config: &Path, name: &str, token: &str, force: bool) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut args = vec!["import", name, "--config", config.to_str().unwrap()];
    if force {
        args.push("--force");
    }
    let mut child = tokio::process::Command::new(BIN)
        .args(&args)
        .env_remove("BEARERD_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{token}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// A refresh-token connection `hotel` with a file store in `dir`, written to a file there.
fn import_config(tokens: &TokenServer, upstream: &Upstream, dir: &TempDir) -> std::path::PathBuf {
    let store = dir.path().join("store");
    let config = support::ac_config("hotel", "oauth2", tokens, &upstream.url(), &store, "");
    dir.file("bearerd.toml", &config)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_stores_only_what_the_provider_accepts() {
    // One-time refresh tokens: a consumed one is rejected and nothing else happens.
    let tokens = TokenServer::start(TokenServerConfig {
        rotation: support::Rotation::OneTime,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("cli-import");
    let config = import_config(&tokens, &upstream, &dir);
    let store = dir.path().join("store");

    // A good token: redeemed, and the pair the provider returned is stored.
    let first = tokens.seed_grant();
    let out = import(&config, "hotel", &first, false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("generation 1"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(tokens.refresh_requests(), 1);
    let good = support::stored(&store, "hotel").await.unwrap();
    assert_eq!(good.generation, 1);
    assert!(good.access_token.is_some());
    let rotated = good.refresh_token.clone().unwrap();
    assert_ne!(
        rotated.secret(),
        first,
        "the rotated refresh token is stored"
    );

    // Without --force a usable stored grant is left alone and the provider is not asked.
    let other = tokens.seed_grant();
    let out = import(&config, "hotel", &other, false).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tokens.refresh_requests(), 1);

    // --force with a stale token: the provider rejects it, nothing changes.
    let out = import(&config, "hotel", &first, true).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not accept"), "{stderr}");
    assert!(stderr.contains("invalid_grant"), "{stderr}");
    assert!(!stderr.contains(&first), "{stderr}");
    assert_eq!(tokens.refresh_requests(), 2);
    assert_eq!(support::stored(&store, "hotel").await.unwrap(), good);

    // The stored good grant still works: a daemon serves with it and refreshes it.
    let bearerd = support::Bearerd::start(&std::fs::read_to_string(&config).unwrap()).await;
    let conn = bearerd.app.connection("hotel").unwrap();
    eventually(Duration::from_secs(10), "hotel connected", || {
        let state = conn.snapshot().state;
        async move { (state == bearerd::token::ConnState::Connected).then_some(()) }
    })
    .await;
    let response = support::get(&format!("{}/x", bearerd.proxy("hotel")), None)
        .await
        .unwrap();
    assert_eq!(response.status, http::StatusCode::OK, "{}", response.text());
    let refreshed = conn.refresh_now().await;
    assert_eq!(refreshed.generation, 2, "{:?}", refreshed.last_error);

    // --force with a good token replaces the stored grant.
    let out = import(&config, "hotel", &other, true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let replaced = support::stored(&store, "hotel").await.unwrap();
    assert_eq!(replaced.generation, 3);
    assert!(replaced.access_token.is_some());
    // The running daemon adopts it without redeeming anything itself.
    let requests = tokens.refresh_requests();
    eventually(
        Duration::from_secs(10),
        "the daemon adopts generation 3",
        || {
            let generation = conn.snapshot().generation;
            async move { (generation == 3).then_some(()) }
        },
    )
    .await;
    assert_eq!(tokens.refresh_requests(), requests);
    bearerd.app.shutdown().await;
}
