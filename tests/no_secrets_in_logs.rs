//! No token, secret or cookie in any log line, at any level (SPEC section 1): the binary runs
//! with `BEARERD_LOG=trace` while a client_credentials and a refresh-token connection fetch
//! tokens, refresh them on schedule, after a 401 and at the operator's request, rotate refresh
//! tokens through the file store, and serve HTTP/1.1 and h2c requests that carry the app's own
//! `Authorization` and `Cookie`; then its whole output is searched for every secret in play.
//! The postgres store runs the same way, with the database driver asked for trace too: its
//! query parameters are tokens, so its logging is held down whatever `BEARERD_LOG` says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{
    DaemonOutput, TempDir, TokenServer, TokenServerConfig, Upstream, basic_auth, cc_config,
    eventually, get, http_client, send, send_with, start_daemon,
};

const APP_SECRET: &str = "app-secret-xyz";
const COOKIE_SECRET: &str = "cookie-secret-abc";
const BODY_SECRET: &str = "body-secret-qrs";

#[derive(Clone, Copy)]
enum Format {
    Json,
    Human,
}

impl Format {
    fn flag(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Human => "human",
        }
    }

    /// Does `line` look like a TRACE-level event in this format?
    fn is_trace(self, line: &str) -> bool {
        match self {
            Self::Json => {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["level"] == "TRACE")
            }
            Self::Human => line.split_whitespace().take(3).any(|w| w == "TRACE"),
        }
    }
}

/// An app request carrying its own credentials, which must go nowhere near a log.
fn app_request(method: Method, url: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {APP_SECRET}"))
        .header("cookie", format!("session={COOKIE_SECRET}"))
        .header("x-api-key", APP_SECRET)
        .body(Full::new(Bytes::from(format!(
            "{{\"password\":\"{BODY_SECRET}\"}}"
        ))))
        .unwrap()
}

/// Runs bearerd at trace level through a token's whole life and returns everything it printed,
/// with every secret that was in play.
async fn run_and_collect(format: Format) -> (DaemonOutput, Vec<String>) {
    let tokens = TokenServer::start(TokenServerConfig {
        client_id: "bearerd-log-test".into(),
        client_secret: "client-secret-Zx81q".into(),
        lifetime: Some(Duration::from_secs(2)),
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("no-secrets");
    // A refresh-token connection too: its rotating refresh tokens are the most sensitive
    // secrets bearerd holds, and they go through the file store.
    let store = dir.path().join("store");
    support::seed_store(&store, "hotel", &tokens.seed_grant()).await;
    let config = |ports: &[u16]| {
        let crm = cc_config("crm", &tokens, &upstream, "")
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
        format!(
            r#"{crm}
[[connection]]
name = "hotel"
provider = "oauth2"
listen = "127.0.0.1:{hotel_port}"
upstream = "{upstream}"
grant = "authorization_code"
authorize_url = "{base}/authorize"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = "{client_secret}"
client_auth = "client_secret_post"

[store]
dir = "{store}"
"#,
            hotel_port = ports[2],
            upstream = upstream.url(),
            base = tokens.base_url(),
            token_url = tokens.token_url(),
            client_id = tokens.client_id(),
            client_secret = tokens.client_secret(),
            store = store.display(),
        )
    };
    let (daemon, ports) = start_daemon(
        &dir,
        &["--log-format", format.flag()],
        &[("BEARERD_LOG", "trace")],
        3,
        config,
    )
    .await;
    let admin = format!("http://127.0.0.1:{}", ports[0]);
    let proxy = format!("http://127.0.0.1:{}", ports[1]);
    let hotel = format!("http://127.0.0.1:{}", ports[2]);

    // HTTP/1.1 and h2c requests with the app's own credentials.
    let h2 = http_client(true);
    for (i, method) in [Method::GET, Method::POST, Method::PUT]
        .into_iter()
        .enumerate()
    {
        let url = format!("{proxy}/v1/items/{i}?q=1");
        let r = send(app_request(method.clone(), &url)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = send_with(&h2, app_request(method, &url)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }

    let r = send(app_request(
        Method::POST,
        &format!("{hotel}/v1/reservations"),
    ))
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // A 401 from the upstream: refresh, then replay.
    tokens.kill_all_access_tokens();
    let r = send(app_request(Method::POST, &format!("{proxy}/after-401")))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "replayed: {}", r.text());

    // Scheduled refreshes of the 2 s tokens, of both grants.
    let (cc_before, rt_before) = (
        tokens.client_credentials_requests(),
        tokens.successful_refreshes(),
    );
    eventually(
        Duration::from_secs(15),
        "two scheduled refreshes each",
        || {
            let n = tokens.client_credentials_requests();
            let m = tokens.successful_refreshes();
            async move { (n >= cc_before + 2 && m >= rt_before + 2).then_some(()) }
        },
    )
    .await;

    // The operator's refresh.
    for name in ["crm", "hotel"] {
        let forced = send(
            Request::builder()
                .method(Method::POST)
                .uri(format!("{admin}/connections/{name}/refresh"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(forced.status, StatusCode::OK, "{name}: {}", forced.text());
    }
    for path in [
        "/connections",
        "/connections/crm",
        "/connections/hotel",
        "/metrics",
        "/readyz",
    ] {
        let r = get(&format!("{admin}{path}"), None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    for base in [&proxy, &hotel] {
        let r = send(app_request(Method::GET, &format!("{base}/last")))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }

    // A connect flow (authorization code, PKCE verifier) and a disconnect (revocation).
    tokens.add_user("hotelier", "user-password-Qw3");
    let start = get(&format!("{admin}/connections/hotel/connect"), None)
        .await
        .unwrap();
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.text());
    let back = tokens
        .authorize_headless("hotelier", &start.header("location").unwrap())
        .await;
    let callback = &back[back.find("/oauth/callback").unwrap()..];
    let done = get(&format!("{admin}{callback}"), None).await.unwrap();
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    let disconnected = send(
        Request::builder()
            .method(Method::POST)
            .uri(format!("{admin}/connections/hotel/disconnect"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        disconnected.status,
        StatusCode::OK,
        "{}",
        disconnected.text()
    );

    let out = daemon.terminate(Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "clean exit:\n{}", out.stderr);

    let mut secrets = tokens.issued_secrets();
    assert!(
        secrets.iter().filter(|s| s.starts_with("rt_")).count() >= 4
            && secrets.iter().filter(|s| s.starts_with("at_")).count() >= 8,
        "client secret plus access and refresh tokens: {}",
        secrets.len()
    );
    // The client_secret_basic header, whole and base64 part alone.
    let basic = basic_auth(&tokens.client_id(), &tokens.client_secret());
    secrets.push(basic.trim_start_matches("Basic ").to_owned());
    secrets.push(base64::engine::general_purpose::STANDARD.encode(tokens.client_secret()));
    secrets.extend([APP_SECRET, COOKIE_SECRET, BODY_SECRET].map(str::to_owned));
    secrets.push("user-password-Qw3".to_owned());
    // The code travelled in the callback's query: it must not be logged either.
    let code = callback
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("code="))
        .unwrap()
        .to_owned();
    assert!(secrets.contains(&code), "the token server lists its codes");
    (out, secrets)
}

fn assert_no_secrets(format: Format, out: &DaemonOutput, secrets: &[String]) {
    assert!(!out.stderr.trim().is_empty(), "bearerd logged nothing");
    let trace_lines = out.stderr.lines().filter(|l| format.is_trace(l)).count();
    assert!(
        trace_lines > 0,
        "BEARERD_LOG=trace produced no TRACE lines; first lines:\n{}",
        out.stderr.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.stderr.contains("token refreshed"),
        "bearerd's own refresh events are in the log"
    );
    for (stream, text) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
        for secret in secrets {
            if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
                panic!(
                    "a secret ({}...) appears on {stream} ({} lines, {trace_lines} TRACE):\n{line}",
                    &secret[..secret.len().min(6)],
                    text.lines().count()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_at_trace_level_contain_no_secrets() {
    let (out, secrets) = run_and_collect(Format::Json).await;
    assert!(
        out.stderr
            .lines()
            .all(|l| l.trim().is_empty() || serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "--log-format json writes JSON lines"
    );
    assert_no_secrets(Format::Json, &out, &secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn human_logs_at_trace_level_contain_no_secrets() {
    let (out, secrets) = run_and_collect(Format::Human).await;
    assert!(
        !out.stderr.contains('\u{1b}'),
        "no ANSI colours when stderr is not a terminal"
    );
    assert_no_secrets(Format::Human, &out, &secrets);
}

/// The postgres store at trace level, its driver included: tokens are query parameters there.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_store_logs_at_trace_level_contain_no_secrets() {
    let Some(db) = pg_support::TestDb::create("logs").await else {
        return;
    };
    let tokens = TokenServer::start(TokenServerConfig {
        lifetime: Some(Duration::from_secs(2)),
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let replica = pg_support::Replica::new(&tokens, &upstream, &db.url, "");
    let daemon = support::Daemon::spawn(
        &["run", "--config", &replica.config, "--log-format", "json"],
        &[(
            "BEARERD_LOG",
            "trace,tokio_postgres=trace,tokio_postgres::query=trace,postgres_protocol=trace",
        )],
    );
    replica.ready().await;
    let before = tokens.successful_refreshes();
    eventually(Duration::from_secs(15), "two scheduled refreshes", || {
        let n = tokens.successful_refreshes();
        async move { (n >= before + 2).then_some(()) }
    })
    .await;
    let r = send(app_request(Method::GET, &format!("{}/v1/x", replica.proxy)))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let forced = replica.force_refresh().await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());

    let out = daemon.terminate(Duration::from_secs(15)).await;
    let secrets = tokens.issued_secrets();
    assert!(
        secrets.iter().filter(|s| s.starts_with("rt_")).count() >= 3,
        "refresh tokens were rotated through the store: {}",
        secrets.len()
    );
    assert!(
        out.stderr.contains("bearerd::store"),
        "the store's own events are logged"
    );
    let below_info_from_dependencies = out.stderr.lines().find(|line| {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        let target = event["target"].as_str().unwrap_or_default();
        matches!(event["level"].as_str(), Some("DEBUG" | "TRACE")) && !target.starts_with("bearerd")
    });
    assert_eq!(
        below_info_from_dependencies, None,
        "dependencies are capped at info"
    );
    assert_no_secrets(Format::Json, &out, &secrets);
}

/// API keys at trace level (SPEC section 10): a key from the config kept alive, a refresh
/// token migrated to a key (the exchange, the save, requests on HTTP/1.1 and h2c), and a key
/// the provider revokes. No key appears in the output.
#[tokio::test(flavor = "multi_thread")]
async fn api_keys_at_trace_level_are_not_logged() {
    let tokens = TokenServer::start(TokenServerConfig {
        client_secret: "client-secret-Kq27v".into(),
        cloudbeds: true,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = TempDir::new("no-secrets-keys");
    let store = dir.path().join("store");
    support::seed_store(&store, "hotel", &tokens.seed_grant()).await;
    let configured = tokens.issue_key();
    let config = |ports: &[u16]| {
        format!(
            r#"
[admin]
listen = "127.0.0.1:{admin}"

[store]
dir = "{store}"

[[connection]]
name = "keyed"
provider = "cloudbeds"
listen = "127.0.0.1:{keyed}"
upstream = "{upstream}"
grant = "api_key"
api_key = "{configured}"
keepalive = "1s"
rate_limit = false

[[connection]]
name = "hotel"
provider = "cloudbeds"
listen = "127.0.0.1:{hotel}"
upstream = "{upstream}"
grant = "authorization_code"
authorize_url = "{base}/authorize"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = "{client_secret}"
rate_limit = false
"#,
            admin = ports[0],
            keyed = ports[1],
            hotel = ports[2],
            store = store.display(),
            upstream = upstream.url(),
            base = tokens.base_url(),
            token_url = tokens.token_url(),
            client_id = tokens.client_id(),
            client_secret = tokens.client_secret(),
        )
    };
    let (daemon, ports) = start_daemon(
        &dir,
        &["--log-format", "json"],
        &[("BEARERD_LOG", "trace")],
        3,
        config,
    )
    .await;
    let admin = format!("http://127.0.0.1:{}", ports[0]);
    let keyed = format!("http://127.0.0.1:{}", ports[1]);
    let hotel = format!("http://127.0.0.1:{}", ports[2]);
    let post = |path: String| {
        send(
            Request::builder()
                .method(Method::POST)
                .uri(path)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };

    let h2 = http_client(true);
    let r = send(app_request(Method::GET, &format!("{keyed}/v1/a")))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    eventually(Duration::from_secs(10), "a keep-alive call", || {
        let checks = upstream.token_checks();
        async move { (checks >= 1).then_some(()) }
    })
    .await;

    eventually(Duration::from_secs(10), "hotel connected", || {
        let url = format!("{admin}/connections/hotel");
        async move {
            let r = get(&url, None).await.ok()?;
            (r.json()["state"] == "connected").then_some(())
        }
    })
    .await;
    let migrated = post(format!("{admin}/connections/hotel/migrate"))
        .await
        .unwrap();
    assert_eq!(migrated.status, StatusCode::OK, "{}", migrated.text());
    for method in [Method::GET, Method::POST] {
        let url = format!("{hotel}/v1/reservations");
        let r = send(app_request(method.clone(), &url)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = send_with(&h2, app_request(method, &url)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let refused = post(format!("{admin}/connections/hotel/migrate"))
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::CONFLICT);

    // Revoked: rejected once, then answered by bearerd.
    tokens.revoke_key(&configured);
    for _ in 0..2 {
        let r = send(app_request(Method::GET, &format!("{keyed}/v1/b")))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    }
    for path in ["/connections", "/"] {
        let r = get(&format!("{admin}{path}"), None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }

    let out = daemon.terminate(Duration::from_secs(15)).await;
    assert_eq!(out.status.code(), Some(0), "clean exit:\n{}", out.stderr);
    assert!(
        out.stderr.contains("API key installed"),
        "the migration is logged"
    );
    assert!(
        out.stderr.contains("keep-alive"),
        "the keep-alive is logged"
    );
    let mut secrets = tokens.issued_secrets();
    assert!(
        secrets.iter().filter(|s| s.starts_with("cbat_")).count() >= 2,
        "a configured and a migrated key: {}",
        secrets.len()
    );
    secrets.extend([APP_SECRET, COOKIE_SECRET, BODY_SECRET].map(str::to_owned));
    for (stream, text) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
        for secret in &secrets {
            if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
                panic!(
                    "a secret ({}...) appears on {stream}:\n{line}",
                    &secret[..secret.len().min(6)]
                );
            }
        }
    }
    assert!(
        out.stderr.lines().any(|l| Format::Json.is_trace(l)),
        "BEARERD_LOG=trace produced TRACE lines"
    );
}
