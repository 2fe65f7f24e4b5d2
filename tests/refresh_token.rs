//! Refresh-token grants on the file store: rotation modes of the test token server,
//! lost responses, revocation, store write failures, restarts, import, and Cloudbeds'
//! HTTP-200 auth-failure signal. Concurrency tests run against strict rotation (mode b),
//! where any double redemption revokes the grant and is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bearerd::token::ConnState;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{
    Bearerd, Failure, Rotation, TokenServer, TokenServerConfig, Upstream, ac_config, seed_store,
    stored, temp_store_dir,
};
use tokio::time::Instant;

struct Rig {
    tokens: TokenServer,
    upstream: Upstream,
    dir: PathBuf,
    config: String,
}

/// A token server in `rotation` mode with one grant, seeded into a fresh store.
async fn rig(rotation: Rotation, lifetime: Duration, extra: &str) -> Rig {
    let tokens = TokenServer::start(TokenServerConfig {
        rotation,
        lifetime: Some(lifetime),
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("rt");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = ac_config("hotel", "oauth2", &tokens, &upstream.url(), &dir, extra);
    Rig {
        tokens,
        upstream,
        dir,
        config,
    }
}

async fn until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connected(bearerd: &Bearerd, generation_at_least: u64) {
    let conn = bearerd.app.connection("hotel").unwrap();
    until(Duration::from_secs(10), "connected", || {
        let s = conn.snapshot();
        s.state == ConnState::Connected && s.generation >= generation_at_least
    })
    .await;
}

async fn get(bearerd: &Bearerd, path: &str) -> support::TestResponse {
    support::get(&format!("{}{path}", bearerd.proxy("hotel")), None)
        .await
        .unwrap()
}

async fn force_refresh(bearerd: &Bearerd) -> support::TestResponse {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/connections/hotel/refresh", bearerd.admin))
        .body(Full::new(Bytes::new()))
        .unwrap();
    support::send(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn redeems_the_imported_token_and_a_restart_uses_the_newest() {
    let r = rig(Rotation::Strict, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await; // import = generation 1, first refresh = 2
    assert_eq!(get(&bearerd, "/a").await.status, StatusCode::OK);
    assert_eq!(r.tokens.refresh_requests(), 1);
    bearerd.app.shutdown().await;

    let record = stored(&r.dir, "hotel").await.unwrap();
    assert_eq!(record.generation, 2);
    assert!(record.access_token.is_some() && record.refresh_token.is_some());

    // Restart: the stored access token is still valid, so no token request.
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    // The status still knows when the last refresh was: the record's write.
    let status = support::get(&format!("{}/connections/hotel", bearerd.admin), None)
        .await
        .unwrap()
        .json();
    let last = status["last_refresh_at"].as_str().unwrap_or_default();
    assert_eq!(
        humantime::parse_rfc3339(last).ok(),
        Some(record.updated_at).map(|t| {
            std::time::UNIX_EPOCH
                + Duration::from_secs(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
        }),
        "{status}"
    );
    assert_eq!(get(&bearerd, "/b").await.status, StatusCode::OK);
    assert_eq!(r.tokens.refresh_requests(), 1);
    // The next refresh redeems the newest refresh token: strict mode would revoke on reuse.
    assert_eq!(force_refresh(&bearerd).await.status, StatusCode::OK);
    assert_eq!(get(&bearerd, "/c").await.status, StatusCode::OK);
    assert_eq!(r.tokens.reuse_detections(), 0);
    assert!(!r.tokens.grant_revoked());
    assert_eq!(stored(&r.dir, "hotel").await.unwrap().generation, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_requests_with_an_expired_token_cause_one_refresh() {
    let r = rig(
        Rotation::Strict,
        Duration::from_secs(1),
        "refresh_skew = \"0s\"",
    )
    .await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    let conn = bearerd.app.connection("hotel").unwrap();
    r.tokens.script(Failure::Delay(Duration::from_millis(1500)));
    // The refreshed token lives long: on a loaded machine a slow stampede must not outlive
    // it and meet the next expiry (a second, legitimate refresh, or an upstream 401).
    r.tokens.set_lifetime(Some(Duration::from_secs(3600)));
    until(Duration::from_secs(5), "expiry", || {
        !conn.snapshot().has_valid_token(Instant::now())
    })
    .await;
    let before = r.tokens.refresh_requests();
    let client = support::http_client(false);
    let proxy = bearerd.proxy("hotel");
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            let uri = format!("{proxy}/r/{i}");
            tokio::spawn(async move {
                let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
                support::send_with(&client, request).await.unwrap().status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    // The scheduled refresh was already in flight when the requests came: all joined it.
    assert!(r.tokens.refresh_requests() - before <= 1);
    assert_eq!(r.tokens.max_concurrent_token_requests(), 1);
    assert_eq!(r.tokens.reuse_detections(), 0);
    assert!(!r.tokens.grant_revoked());
}

#[tokio::test(flavor = "multi_thread")]
async fn all_access_tokens_killed_under_load_one_refresh_and_no_failures() {
    let r = rig(Rotation::Strict, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    let client = support::http_client(false);
    let proxy = bearerd.proxy("hotel");
    let tasks: Vec<_> = (0..32)
        .map(|worker| {
            let client = client.clone();
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..40 {
                    let request = Request::get(format!("{proxy}/w/{worker}/{i}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    statuses.push(support::send_with(&client, request).await.unwrap().status);
                }
                statuses
            })
        })
        .collect();
    until(Duration::from_secs(10), "load under way", || {
        r.upstream.requests() > 200
    })
    .await;
    r.tokens.kill_all_access_tokens();
    for task in tasks {
        for status in task.await.unwrap() {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(
        r.tokens.refresh_requests(),
        2,
        "startup + one after the kill"
    );
    assert!(
        r.upstream.unauthorized() >= 1,
        "the kill was seen under load"
    );
    assert_eq!(r.tokens.reuse_detections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_response_in_grace_mode_recovers_with_the_old_refresh_token() {
    let r = rig(Rotation::Grace, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    r.tokens.script(Failure::LostResponse);
    let admin = force_refresh(&bearerd).await;
    assert_eq!(
        admin.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the first try was lost"
    );
    // The retry after backoff presents the same refresh token; grace mode answers it.
    connected(&bearerd, 3).await;
    assert_eq!(get(&bearerd, "/after").await.status, StatusCode::OK);
    assert!(!r.tokens.grant_revoked());
    assert_eq!(r.tokens.refresh_requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_response_in_strict_mode_ends_in_needs_authorization_without_a_loop() {
    let r = rig(Rotation::Strict, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    r.tokens.script(Failure::LostResponse);
    force_refresh(&bearerd).await;
    let conn = bearerd.app.connection("hotel").unwrap();
    until(Duration::from_secs(10), "needs_authorization", || {
        conn.snapshot().state == ConnState::NeedsAuthorization
    })
    .await;
    assert!(r.tokens.grant_revoked(), "the retry was a reuse");
    let requests = r.tokens.refresh_requests();
    assert_eq!(requests, 3);
    let response = get(&bearerd, "/x").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.header("retry-after").is_none());
    let detail = response.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("http://127.0.0.1:9901/connections/hotel/connect"),
        "{detail}"
    );
    // No loop: more requests and time bring no more token requests.
    for _ in 0..5 {
        assert_eq!(
            get(&bearerd, "/y").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.tokens.refresh_requests(), requests);
    assert_eq!(
        stored(&r.dir, "hotel").await.unwrap().state,
        "needs_authorization"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_gives_503_with_the_connect_url_and_no_more_token_requests() {
    let r = rig(Rotation::Strict, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    r.tokens.disconnect();
    let response = get(&bearerd, "/after-uninstall").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response.json()["detail"]
            .as_str()
            .unwrap()
            .contains("/connections/hotel/connect")
    );
    let requests = r.tokens.refresh_requests();
    for _ in 0..5 {
        assert_eq!(
            get(&bearerd, "/again").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(r.tokens.refresh_requests(), requests);
    let ready = support::get(&format!("{}/readyz", bearerd.admin), None)
        .await
        .unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        bearerd
            .metric(r#"bearerd_connection_state{connection="hotel",state="needs_authorization"}"#)
            .await,
        1.0
    );
    assert_eq!(
        bearerd
            .metric(r#"bearerd_token_refreshes_total{connection="hotel",result="rejected",trigger="unauthorized"}"#)
            .await,
        1.0
    );

    // A restart does not ask the provider about a grant it already rejected.
    bearerd.app.shutdown().await;
    let bearerd = Bearerd::start(&r.config).await;
    let conn = bearerd.app.connection("hotel").unwrap();
    until(
        Duration::from_secs(5),
        "needs_authorization after restart",
        || conn.snapshot().state == ConnState::NeedsAuthorization,
    )
    .await;
    assert_eq!(r.tokens.refresh_requests(), requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_store_write_keeps_the_new_tokens_pending_until_it_succeeds() {
    let r = rig(Rotation::Strict, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    // A directory where the temp file must go makes every save fail, even for root.
    let blocker = r.dir.join(".hotel.json.tmp");
    std::fs::create_dir(&blocker).unwrap();

    let admin = bearerd.admin.clone();
    let refresh = tokio::spawn(async move {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{admin}/connections/hotel/refresh"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        support::send(request).await.unwrap()
    });
    let conn = bearerd.app.connection("hotel").unwrap();
    until(Duration::from_secs(10), "pending save visible", || {
        let s = conn.snapshot();
        s.state == ConnState::Degraded
            && s.last_error.as_deref().unwrap_or("").contains("not saved")
    })
    .await;
    assert_eq!(r.tokens.refresh_requests(), 2, "the provider rotated");
    assert_eq!(
        conn.snapshot().generation,
        2,
        "not used before it is durable"
    );
    assert!(
        bearerd
            .metric(r#"bearerd_store_operations_total{op="save",result="error"}"#)
            .await
            >= 1.0
    );
    std::fs::remove_dir(&blocker).unwrap();
    connected(&bearerd, 3).await;
    assert_eq!(refresh.await.unwrap().status, StatusCode::OK);
    assert_eq!(stored(&r.dir, "hotel").await.unwrap().generation, 3);

    // Nothing was lost: after a restart the stored refresh token is the live one.
    bearerd.app.shutdown().await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 3).await;
    assert_eq!(force_refresh(&bearerd).await.status, StatusCode::OK);
    assert_eq!(r.tokens.reuse_detections(), 0);
    assert!(!r.tokens.grant_revoked());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_adopts_an_imported_token() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("import");
    let config = ac_config("hotel", "oauth2", &tokens, &upstream.url(), &dir, "");
    let bearerd = Bearerd::start(&config).await;
    let response = get(&bearerd, "/before").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    connected(&bearerd, 2).await;
    assert_eq!(get(&bearerd, "/after").await.status, StatusCode::OK);
    assert_eq!(tokens.refresh_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_without_a_refresh_token_keeps_the_old_one() {
    let r = rig(Rotation::Reuse, Duration::from_secs(3600), "").await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    let before = stored(&r.dir, "hotel").await.unwrap().refresh_token;
    assert_eq!(force_refresh(&bearerd).await.status, StatusCode::OK);
    let after = stored(&r.dir, "hotel").await.unwrap();
    assert_eq!(after.generation, 3);
    assert_eq!(after.refresh_token, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn cloudbeds_http_200_auth_failure_counts_as_a_401() {
    let tokens = TokenServer::start(TokenServerConfig {
        cloudbeds: true,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let dir = temp_store_dir("cloudbeds");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = ac_config("hotel", "cloudbeds", &tokens, &upstream.url(), &dir, "");
    let bearerd = Bearerd::start(&config).await;
    connected(&bearerd, 2).await;
    let response = get(&bearerd, "/cloudbeds/dead").await;
    // The upstream says the same to the new token: the answer is passed through as is.
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json()["success"], false);
    assert_eq!(
        tokens.refresh_requests(),
        2,
        "the signal caused one refresh"
    );
    let metric = |outcome: &str| {
        format!(r#"bearerd_replays_total{{connection="hotel",outcome="{outcome}"}}"#)
    };
    assert_eq!(bearerd.metric(&metric("unauthorized")).await, 1.0);
    assert_eq!(
        bearerd
            .metric(r#"bearerd_upstream_unauthorized_total{connection="hotel",token="current"}"#)
            .await,
        1.0
    );
    // An ordinary JSON answer is not mistaken for one.
    assert_eq!(get(&bearerd, "/plain").await.status, StatusCode::OK);
    assert_eq!(tokens.refresh_requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_at_start_wait_for_the_first_refresh_of_an_imported_grant() {
    let r = rig(Rotation::Strict, Duration::from_secs(3600), "").await;
    // The first redemption is slow, so requests that arrive before and after the stored
    // record (without an access token) is adopted all wait for it.
    r.tokens.script(Failure::Delay(Duration::from_millis(500)));
    let bearerd = Bearerd::start(&r.config).await;
    // Asked at once, before the refresher has read the store.
    let conn = bearerd.app.connection("hotel").unwrap();
    let direct: Vec<_> = (0..20)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.token().await })
        })
        .collect();
    let client = support::http_client(false);
    let proxy = bearerd.proxy("hotel");
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            let uri = format!("{proxy}/early/{i}");
            tokio::spawn(async move {
                let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
                support::send_with(&client, request).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
    for task in direct {
        assert!(
            task.await.unwrap().is_ok(),
            "a caller gave up before the first refresh"
        );
    }
    assert_eq!(r.tokens.refresh_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_after_a_lost_answer_says_the_grant_may_have_rotated() {
    // The provider rotates on the first refresh but holds its answer past token_timeout;
    // the retry presents the old, consumed refresh token and is rejected.
    let r = rig(
        Rotation::OneTime,
        Duration::from_secs(3600),
        "token_timeout = \"1s\"",
    )
    .await;
    let bearerd = Bearerd::start(&r.config).await;
    connected(&bearerd, 2).await;
    r.tokens
        .script(Failure::CommitThenStall(Duration::from_secs(30)));
    force_refresh(&bearerd).await;
    let conn = bearerd.app.connection("hotel").unwrap();
    until(Duration::from_secs(10), "needs_authorization", || {
        conn.snapshot().state == ConnState::NeedsAuthorization
    })
    .await;
    assert_eq!(
        r.tokens.refresh_requests(),
        3,
        "start, the lost one, the retry"
    );
    assert_eq!(
        r.tokens.successful_refreshes(),
        2,
        "the lost one was committed"
    );
    let status = support::get(&format!("{}/connections/hotel", bearerd.admin), None)
        .await
        .unwrap()
        .json();
    let reason = status["last_error"].as_str().unwrap().to_owned();
    assert!(reason.contains("invalid_grant"), "{reason}");
    assert!(
        reason.contains("may have rotated the grant while its answer was lost"),
        "{reason}"
    );
    assert!(reason.contains("reconnect"), "{reason}");
}

/// `bearerd run` for one refresh-token connection `hotel` whose token endpoint answers
/// every request with 503 echoing the request (`Authorization` and body); returns what
/// `/connections/hotel` said and everything the daemon logged, with `log` as `BEARERD_LOG`.
async fn echoing_provider_run(
    tokens: &TokenServer,
    upstream: &Upstream,
    client_auth: &str,
    log: Option<&str>,
) -> (serde_json::Value, String) {
    let dir = support::TempDir::new("echo");
    let store = dir.path().join("store");
    seed_store(&store, "hotel", &tokens.seed_grant()).await;
    for _ in 0..50 {
        tokens.script(Failure::EchoBody503);
    }
    // Never ready (no valid token), so started by hand rather than with `start_daemon`.
    let ports = [support::free_port(), support::free_port()];
    let extra = format!("client_auth = \"{client_auth}\"");
    let config = ac_config("hotel", "oauth2", tokens, &upstream.url(), &store, &extra)
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
    let path = dir.file("bearerd.toml", &config);
    let envs: Vec<(&str, &str)> = log
        .map(|level| ("BEARERD_LOG", level))
        .into_iter()
        .collect();
    let daemon = support::Daemon::spawn(&["run", "--config", path.to_str().unwrap()], &envs);
    let url = format!("http://127.0.0.1:{}/connections/hotel", ports[0]);
    let status = support::eventually(Duration::from_secs(20), "the echoed 503", || async {
        let status = support::get(&url, None).await.ok()?.json();
        let echoed = status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("could not process"));
        echoed.then_some(status)
    })
    .await;
    let output = daemon.terminate(Duration::from_secs(10)).await;
    (status, output.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_a_provider_echoes_are_not_stored_shown_or_logged() {
    // A client secret with characters that form encoding changes, so the echo (of the form
    // body) carries it encoded.
    let client_secret = "cs-Q/9+z=&secret";
    let tokens = TokenServer::start(TokenServerConfig {
        client_secret: client_secret.into(),
        rotation: Rotation::Reuse,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let encoded: String = form_urlencoded::byte_serialize(client_secret.as_bytes()).collect();
    let basic = support::basic_auth(&tokens.client_id(), client_secret);
    let basic = basic.trim_start_matches("Basic ");
    for (client_auth, log) in [
        ("client_secret_post", None),
        ("client_secret_post", Some("trace")),
        ("client_secret_basic", None),
        ("client_secret_basic", Some("trace")),
    ] {
        let (status, logged) = echoing_provider_run(&tokens, &upstream, client_auth, log).await;
        let last_error = status["last_error"].as_str().unwrap().to_owned();
        let echoed = match client_auth {
            "client_secret_post" => "client_secret=[redacted]",
            _ => "Basic [redacted]",
        };
        for shown in ["refresh_token=[redacted]", echoed] {
            assert!(last_error.contains(shown), "{last_error}");
        }
        assert!(
            logged.contains("could not process"),
            "the echo was logged ({client_auth}, {log:?}):\n{logged}"
        );
        let refresh_tokens: Vec<String> = tokens
            .token_request_log()
            .iter()
            .filter_map(|r| r.refresh_token.clone())
            .collect();
        assert!(!refresh_tokens.is_empty());
        for secret in refresh_tokens.iter().map(String::as_str).chain([
            client_secret,
            encoded.as_str(),
            "cs-Q",
            basic,
        ]) {
            assert!(!last_error.contains(secret), "{secret} in {last_error}");
            assert!(
                !logged.contains(secret),
                "{secret} logged ({client_auth}, {log:?})"
            );
        }
    }
}
