//! The client_credentials token lifecycle end to end: fetch at start, single flight at
//! expiry and on 401, replay, stale-generation filtering, backoff on transient failures,
//! dead ends on misconfiguration, the operator's manual refresh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
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
    // The refreshed token lives long: a slow stampede on a loaded machine must not meet the
    // next scheduled refresh and count it as a second one.
    tokens.set_lifetime(Some(Duration::from_secs(3600)));
    until(Duration::from_secs(5), "token expiry", || {
        !conn.snapshot().has_valid_token(Instant::now())
    })
    .await;
    // The scheduled refresh starts at expiry; on a loaded machine its request may reach the
    // provider a moment after the token is seen expired.
    until(Duration::from_secs(5), "the scheduled refresh in flight", || {
        tokens.token_requests() >= 2
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
async fn a_token_endpoint_slower_than_token_timeout_is_transient() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::Delay(Duration::from_secs(3)));
    let upstream = Upstream::start(tokens.clone()).await;
    let extra = "token_timeout = \"1s\"";
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, extra)).await;
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
    assert!(error.contains("token_timeout"), "{error}");
    // The retry after backoff gets a token.
    until(Duration::from_secs(5), "a token", || {
        conn.snapshot().generation == 1
    })
    .await;
    assert_eq!(get_through(&bearerd, "/x").await.status, StatusCode::OK);
    assert_eq!(tokens.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_request_is_bounded_by_token_timeout_not_the_api_timeout() {
    // The token endpoint takes longer than the API `timeout`, well within `token_timeout`:
    // the first request succeeds.
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::Delay(Duration::from_secs(2)));
    let upstream = Upstream::start(tokens.clone()).await;
    let extra = "timeout = \"1s\"\ntoken_timeout = \"30s\"";
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, extra)).await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(10), "the first attempt", || {
        conn.snapshot().attempts == 1
    })
    .await;
    let snapshot = conn.snapshot();
    assert_eq!(snapshot.generation, 1, "{:?}", snapshot.last_error);
    assert_eq!(tokens.token_requests(), 1);
}

/// A response within `limit`, or a panic: a guard so that a request left waiting far longer
/// than `token_wait` fails the test instead of hanging it.
async fn answered_within(
    limit: Duration,
    request: impl Future<Output = support::TestResponse>,
) -> support::TestResponse {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| {
            panic!("no answer within {limit:?}: the caller was not released after token_wait")
        })
}

/// 503 problem+json with a `Retry-After`.
fn assert_retry_later(response: &support::TestResponse) {
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        response.text()
    );
    assert_eq!(
        response.header("content-type").unwrap(),
        "application/problem+json"
    );
    let retry: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "retry-after {retry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_token_endpoint_releases_callers_after_token_wait() {
    // The first token request stalls for far longer than `token_wait`, and the API
    // `timeout` and `token_timeout` are long: callers get 503 + Retry-After while it is
    // still in flight.
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::Delay(Duration::from_secs(600)));
    let upstream = Upstream::start(tokens.clone()).await;
    let extra = "timeout = \"300s\"\ntoken_timeout = \"300s\"\ntoken_wait = \"1s\"";
    let bearerd = Bearerd::start(&cc_config("api", &tokens, &upstream, extra)).await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "the first token request", || {
        tokens.token_requests() == 1
    })
    .await;
    // The fast path (HTTP/1.1) and hyper (h2c) both let go.
    let get = answered_within(Duration::from_secs(60), get_through(&bearerd, "/stalled")).await;
    assert_retry_later(&get);
    let h2c = support::http_client(true);
    let request = Request::get(format!("{}/stalled", bearerd.proxy("api")))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let post = answered_within(Duration::from_secs(60), async {
        support::send_with(&h2c, request).await.unwrap()
    })
    .await;
    assert_retry_later(&post);
    // The refresh they waited for is still in flight: released by token_wait, not by its end.
    let snapshot = conn.snapshot();
    assert_eq!(snapshot.attempts, 0, "{:?}", snapshot.last_error);
    assert_eq!(snapshot.state, bearerd::token::ConnState::Refreshing);
    assert_eq!(tokens.token_requests(), 1);
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_expires_during_a_stalled_refresh_is_reported_degraded() {
    // 2 s tokens refreshed 1 s before expiry; that refresh stalls well past the expiry.
    let extra = "refresh_skew = \"1s\"\ntoken_timeout = \"300s\"";
    let (tokens, _upstream, bearerd) = setup(Some(Duration::from_secs(2)), extra).await;
    let conn = bearerd.app.connection("api").unwrap();
    until(Duration::from_secs(5), "first token", || {
        conn.snapshot().generation == 1
    })
    .await;
    tokens.script(Failure::Delay(Duration::from_secs(600)));
    until(Duration::from_secs(5), "the scheduled refresh", || {
        tokens.token_requests() == 2
    })
    .await;
    let gauge =
        |state: &str| format!(r#"bearerd_connection_state{{connection="api",state="{state}"}}"#);
    let status = format!("{}/connections/api", bearerd.admin);
    support::eventually(
        Duration::from_secs(10),
        "degraded on /connections and in the state gauge",
        || async {
            let state = support::get(&status, None).await.ok()?.json()["state"].clone();
            let degraded = bearerd.metric(&gauge("degraded")).await;
            let refreshing = bearerd.metric(&gauge("refreshing")).await;
            (state == "degraded" && degraded == 1.0 && refreshing == 0.0).then_some(())
        },
    )
    .await;
    // Only the clock changed: the stalled refresh is the one still in flight.
    assert!(!conn.snapshot().has_valid_token(Instant::now()));
    assert_eq!(conn.snapshot().attempts, 1);
    assert_eq!(tokens.token_requests(), 2);
    assert_eq!(bearerd.metric(&gauge("connected")).await, 0.0);
    let page = support::get(&format!("{}/", bearerd.admin), None)
        .await
        .unwrap()
        .text();
    assert!(page.contains("degraded"), "{page}");
    assert!(!page.contains("a token refresh is under way"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_waiting_on_a_stalled_refresh_gets_503_after_token_wait() {
    let extra = "timeout = \"300s\"\ntoken_timeout = \"300s\"\ntoken_wait = \"1s\"";
    let (tokens, upstream, bearerd) = setup(Some(Duration::from_secs(3600)), extra).await;
    assert_eq!(get_through(&bearerd, "/warm").await.status, StatusCode::OK);
    // The upstream now rejects the token, and the refresh that the 401 starts stalls.
    tokens.kill_all_access_tokens();
    tokens.script(Failure::Delay(Duration::from_secs(600)));
    let response = answered_within(Duration::from_secs(60), get_through(&bearerd, "/killed")).await;
    assert_retry_later(&response);
    assert_eq!(upstream.unauthorized(), 1);
    assert_eq!(tokens.token_requests(), 2, "the refresh is still in flight");
    assert_eq!(
        bearerd.app.connection("api").unwrap().snapshot().attempts,
        1
    );
}
