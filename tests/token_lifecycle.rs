//! The client_credentials token lifecycle end to end: fetch at start, single flight at
//! expiry and on 401, replay, stale-generation filtering, backoff on transient failures,
//! dead ends on misconfiguration, the operator's manual refresh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{Bearerd, Failure, TokenServer, TokenServerConfig, Upstream, cc_config};
use tokio::time::Instant;

async fn setup(lifetime: Option<Duration>, extra: &str) -> (TokenServer, Upstream, Bearerd) {
    let tokens = TokenServer::start(TokenServerConfig {
        lifetime,
        ..TokenServerConfig::default()
    })
    .await;
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, extra)).await;
    (tokens, upstream, bearerd)
}

/// Polls `condition` every 10 ms until it holds; panics after `limit`.
async fn until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get_through(bearerd: &Bearerd, path: &str) -> support::TestResponse {
    support::get(&format!("{}{path}", bearerd.proxy("api")), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_a_token_at_start_and_uses_it() {
    let (tokens, upstream, bearerd) = setup(Some(Duration::from_secs(3600)), "").await;
    let response = get_through(&bearerd, "/v1/things?x=1").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(tokens.client_credentials_requests(), 1);
    assert_eq!(upstream.unauthorized(), 0);
    let conn = bearerd.app.connection("api").unwrap();
    assert_eq!(conn.snapshot().generation, 1);
    assert_eq!(
        bearerd
            .metric(
                r#"bearerd_token_refreshes_total{connection="api",result="ok",trigger="startup"}"#
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_requests_at_expiry_cause_one_token_request() {
    // 1 s tokens, refreshed at expiry; the scheduled refresh is slow, so requests that
    // arrive after expiry must all join it.
    let (tokens, _upstream, bearerd) =
        setup(Some(Duration::from_secs(1)), "refresh_skew = \"0s\"").await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first token", || {
        conn.snapshot().generation == 1
    })
    .await;
    tokens.script(Failure::Delay(Duration::from_millis(1500)));
    until(Duration::from_secs(5), "token expiry", || {
        !conn.snapshot().has_valid_token(Instant::now())
    })
    .await;
    assert_eq!(
        tokens.token_requests(),
        2,
        "the scheduled refresh is in flight"
    );

    let proxy = bearerd.proxy("api");
    let client = support::http_client(false);
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let client = client.clone();
        let uri = format!("{proxy}/item/{i}");
        tasks.push(tokio::spawn(async move {
            let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            support::send_with(&client, request).await.unwrap().status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        tokens.token_requests(),
        2,
        "exactly one refresh for the stampede"
    );
    assert_eq!(tokens.max_concurrent_token_requests(), 1);
    assert!(
        bearerd
            .metric(r#"bearerd_token_refresh_waiters_total{connection="api"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_on_current_generation_refreshes_once_and_replays() {
    let (tokens, upstream, bearerd) = setup(Some(Duration::from_secs(3600)), "").await;
    assert_eq!(get_through(&bearerd, "/warm").await.status, StatusCode::OK);
    tokens.kill_all_access_tokens();

    let proxy = bearerd.proxy("api");
    let client = support::http_client(false);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        let uri = format!("{proxy}/after-kill/{i}");
        tasks.push(tokio::spawn(async move {
            let request = Request::post(uri)
                .body(Full::new(Bytes::from(format!("body {i}"))))
                .unwrap();
            support::send_with(&client, request).await.unwrap()
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        // The replayed body is the original one.
        assert_eq!(
            response.json()["body_sha256"],
            support::sha256_hex(format!("body {i}").as_bytes())
        );
    }
    assert_eq!(
        tokens.client_credentials_requests(),
        2,
        "one refresh after the kill"
    );
    assert!(upstream.unauthorized() >= 1);
    let replays_ok = bearerd
        .metric(r#"bearerd_replays_total{connection="api",outcome="ok"}"#)
        .await;
    assert_eq!(replays_ok as usize, upstream.unauthorized());
    assert_eq!(
        bearerd
            .metric(r#"bearerd_token_refreshes_total{connection="api",result="ok",trigger="unauthorized"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_generation_does_not_refresh() {
    let (tokens, _upstream, bearerd) = setup(Some(Duration::from_secs(3600)), "").await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first token", || {
        conn.snapshot().generation == 1
    })
    .await;

    // Generation 1 failed: one refresh.
    let newer = conn.newer_than(1, true).await.unwrap();
    assert_eq!(newer.generation, 2);
    assert_eq!(tokens.token_requests(), 2);
    // A late 401 for generation 1 (superseded): answered at once with generation 2.
    let again = conn.newer_than(1, true).await.unwrap();
    assert_eq!(again.generation, 2);
    assert_eq!(
        tokens.token_requests(),
        2,
        "no refresh for a superseded generation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_back_off_and_the_valid_token_keeps_serving() {
    // 6 s tokens refreshed about 3 s before expiry; the first two refreshes fail.
    let (tokens, upstream, bearerd) =
        setup(Some(Duration::from_secs(6)), "refresh_skew = \"3s\"").await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first token", || {
        conn.snapshot().generation == 1
    })
    .await;
    tokens.script(Failure::Status503 {
        retry_after: Some(1),
    });
    tokens.script(Failure::Html);
    until(Duration::from_secs(6), "degraded", || {
        conn.snapshot().state == bearerd::token::ConnState::Degraded
    })
    .await;
    // Still serving generation 1 while degraded.
    let response = get_through(&bearerd, "/during-outage").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(conn.snapshot().generation, 1);
    let error = conn.snapshot().last_error.clone().unwrap();
    assert!(error.contains("503") || error.contains("JSON"), "{error}");
    until(Duration::from_secs(8), "recovered", || {
        conn.snapshot().generation == 2
    })
    .await;
    assert_eq!(
        tokens.token_requests(),
        4,
        "start, two failures, one success"
    );
    assert_eq!(get_through(&bearerd, "/after").await.status, StatusCode::OK);
    assert_eq!(upstream.unauthorized(), 0);
    assert_eq!(
        bearerd
            .metric(r#"bearerd_token_refreshes_total{connection="api",result="transient",trigger="scheduled"}"#)
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_and_a_failing_endpoint_gives_503_with_retry_after() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::Status429 {
        retry_after: Some(30),
    });
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, "")).await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first attempt", || {
        conn.snapshot().attempts == 1
    })
    .await;
    let response = get_through(&bearerd, "/x").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.header("content-type").unwrap(),
        "application/problem+json"
    );
    let retry: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((25..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(tokens.token_requests(), 1, "backoff honours Retry-After");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_client_is_misconfigured_and_stops_asking() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::InvalidClient);
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, "")).await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "misconfigured", || {
        conn.snapshot().state == bearerd::token::ConnState::Misconfigured
    })
    .await;
    for _ in 0..5 {
        let response = get_through(&bearerd, "/x").await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.header("retry-after").is_none());
        assert!(
            response.json()["detail"]
                .as_str()
                .unwrap()
                .contains("misconfigured")
        );
    }
    assert_eq!(tokens.token_requests(), 1, "a dead end is not retried");
    let ready = support::get(&format!("{}/readyz", bearerd.admin), None)
        .await
        .unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["not_ready"][0]["state"], "misconfigured");
    assert_eq!(
        bearerd
            .metric(r#"bearerd_connection_state{connection="api",state="misconfigured"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_refresh_from_the_admin_listener() {
    let (tokens, _upstream, bearerd) = setup(Some(Duration::from_secs(3600)), "").await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first token", || {
        conn.snapshot().generation == 1
    })
    .await;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/connections/api/refresh", bearerd.admin))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = support::send(request).await.unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["generation"], 2);
    assert_eq!(tokens.token_requests(), 2);
    assert_eq!(
        bearerd
            .metric(
                r#"bearerd_token_refreshes_total{connection="api",result="ok",trigger="manual"}"#
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_expires_in_lives_until_a_401() {
    let (tokens, _upstream, bearerd) = setup(None, "").await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first token", || {
        conn.snapshot().generation == 1
    })
    .await;
    assert!(conn.snapshot().expires_at.is_none());
    assert_eq!(get_through(&bearerd, "/a").await.status, StatusCode::OK);
    tokens.kill_all_access_tokens();
    assert_eq!(get_through(&bearerd, "/b").await.status, StatusCode::OK);
    assert_eq!(tokens.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_slower_than_timeout_is_transient() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::Delay(Duration::from_secs(3)));
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, "timeout = \"1s\"")).await;
    let conn = bearerd.app.connection("api").unwrap();
    until(
        Duration::from_secs(5),
        "the first attempt to time out",
        || conn.snapshot().attempts == 1,
    )
    .await;
    let snapshot = conn.snapshot();
    assert_eq!(snapshot.state, bearerd::token::ConnState::Degraded);
    let error = snapshot.last_error.clone().unwrap();
    assert!(error.contains("timed out"), "{error}");
    // The retry after backoff gets a token.
    until(Duration::from_secs(5), "a token", || {
        conn.snapshot().generation == 1
    })
    .await;
    assert_eq!(get_through(&bearerd, "/x").await.status, StatusCode::OK);
    assert_eq!(tokens.token_requests(), 2);
}
