//! Self-tests for the test-support servers in `tests/support/` (token server and upstream),
//! driven directly with a hyper-util legacy client.

#[path = "support_selftest/authorize_code.rs"]
mod authorize_code;
mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Version};
use serde_json::Value;
use support::{
    BoxError, ClientAuth, Failure, Rotation, TestResponse, TokenServer, TokenServerConfig,
    Upstream, get, post_form, refresh_post, send, send_with, sha256_hex,
};

type TestResult = Result<(), BoxError>;

async fn server(cfg: TokenServerConfig) -> TokenServer {
    TokenServer::start(cfg).await
}

fn field(r: &TestResponse, name: &str) -> String {
    r.json()[name].as_str().unwrap_or_default().to_owned()
}

async fn client_credentials(ts: &TokenServer) -> Result<TestResponse, BoxError> {
    post_form(
        &ts.token_url(),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &ts.client_id()),
            ("client_secret", &ts.client_secret()),
        ],
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_issue_and_validate() -> TestResult {
    let ts = server(TokenServerConfig::default()).await;
    let up = Upstream::start(ts.clone()).await;
    let r = client_credentials(&ts).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let j = r.json();
    let at = field(&r, "access_token");
    assert!(at.starts_with("at_") && at.len() == 35, "{at}");
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3600);
    assert!(j.get("refresh_token").is_none() && j.get("resources").is_none());
    assert!(ts.validate_access(&at));
    assert!(!ts.validate_access("at_bogus"));
    assert_eq!(
        (ts.token_requests(), ts.client_credentials_requests()),
        (1, 1)
    );
    assert!(ts.issued_secrets().contains(&at) && ts.issued_secrets().contains(&ts.client_secret()));

    let ok = get(&format!("{}/some/path?x=1", up.url()), Some(&at)).await?;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["path"], "/some/path");
    assert_eq!(ok.json()["query"], "x=1");
    ts.kill_all_access_tokens();
    let dead = get(&up.url(), Some(&at)).await?;
    assert_eq!(dead.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.unauthorized(), 1);

    ts.set_lifetime(Some(Duration::from_millis(300)));
    let r = client_credentials(&ts).await?;
    assert_eq!(r.json()["expires_in"], 1);
    let short = field(&r, "access_token");
    assert!(ts.validate_access(&short));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !ts.validate_access(&short),
        "expired token must be rejected"
    );
    ts.set_lifetime(None);
    let r = client_credentials(&ts).await?;
    assert!(r.json().get("expires_in").is_none());
    Ok(())
}

/// Refreshes `rt`, asserting success; returns (access, refresh).
async fn refresh_ok(ts: &TokenServer, rt: &str) -> Result<(String, String), BoxError> {
    let r = refresh_post(ts, rt).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    Ok((field(&r, "access_token"), field(&r, "refresh_token")))
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_modes_on_reuse() -> TestResult {
    for rotation in [
        Rotation::Reuse,
        Rotation::Strict,
        Rotation::OneTime,
        Rotation::Grace,
    ] {
        let ts = server(TokenServerConfig {
            rotation,
            ..TokenServerConfig::default()
        })
        .await;
        let r0 = ts.seed_grant();
        let (a1, r1) = refresh_ok(&ts, &r0).await?;
        assert!(r1.starts_with("rt_"));
        assert_eq!(r1 == r0, rotation == Rotation::Reuse, "{rotation:?}");
        let again = refresh_post(&ts, &r0).await?;
        match rotation {
            Rotation::Reuse => {
                assert_eq!(again.status, StatusCode::OK);
                assert_eq!(field(&again, "refresh_token"), r0);
                assert_eq!(ts.reuse_detections(), 0);
            }
            Rotation::Strict => {
                assert_eq!(again.status, StatusCode::BAD_REQUEST);
                assert_eq!(again.json()["error"], "invalid_grant");
                assert_eq!(ts.reuse_detections(), 1);
                assert!(ts.grant_revoked());
                assert!(
                    !ts.validate_access(&a1),
                    "family revocation kills access tokens"
                );
                let newest = refresh_post(&ts, &r1).await?;
                assert_eq!(newest.json()["error"], "invalid_grant");
            }
            Rotation::OneTime => {
                assert_eq!(again.json()["error"], "invalid_grant");
                assert_eq!(ts.reuse_detections(), 1);
                assert!(!ts.grant_revoked());
                assert!(ts.validate_access(&a1));
                refresh_ok(&ts, &r1).await?;
            }
            Rotation::Grace => {
                assert_eq!(again.status, StatusCode::OK);
                assert_eq!(field(&again, "access_token"), a1, "idempotent replay");
                assert_eq!(field(&again, "refresh_token"), r1);
                assert!(ts.validate_access(&a1));
                let late = refresh_post(&ts, &r0).await?;
                assert_eq!(late.json()["error"], "invalid_grant");
                assert_eq!(ts.reuse_detections(), 1);
                assert!(!ts.grant_revoked());
                refresh_ok(&ts, &r1).await?;
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_previous_access_and_revocation() -> TestResult {
    let ts = server(TokenServerConfig {
        kill_previous_access_on_refresh: true,
        ..TokenServerConfig::default()
    })
    .await;
    let r0 = ts.seed_grant();
    let (a1, r1) = refresh_ok(&ts, &r0).await?;
    let (a2, r2) = refresh_ok(&ts, &r1).await?;
    assert!(!ts.validate_access(&a1) && ts.validate_access(&a2));

    let id = ts.client_id();
    let secret = ts.client_secret();
    let unknown = post_form(&ts.revoke_url(), &[("token", "nope")], Some((&id, &secret))).await?;
    assert_eq!(unknown.status, StatusCode::OK);
    assert!(!ts.grant_revoked());
    let rev = post_form(
        &ts.revoke_url(),
        &[("token", &r2), ("token_type_hint", "refresh_token")],
        Some((&id, &secret)),
    )
    .await?;
    assert_eq!(rev.status, StatusCode::OK);
    assert!(ts.grant_revoked() && !ts.validate_access(&a2));
    assert_eq!(
        refresh_post(&ts, &r2).await?.json()["error"],
        "invalid_grant"
    );

    let cb = server(TokenServerConfig {
        cloudbeds: true,
        ..TokenServerConfig::default()
    })
    .await;
    let rt = cb.seed_grant();
    cb.disconnect();
    let r = refresh_post(&cb, &rt).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["message"], "The refresh token is invalid.");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scripted_failures_are_consumed_once() -> TestResult {
    let ts = server(TokenServerConfig::default()).await;
    let rt = ts.seed_grant();
    ts.script(Failure::Status503 {
        retry_after: Some(7),
    });
    ts.script(Failure::Html);
    ts.script(Failure::TemporarilyUnavailable);
    let r = refresh_post(&ts, &rt).await?;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after").as_deref(), Some("7"));
    let r = refresh_post(&ts, &rt).await?;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let r = refresh_post(&ts, &rt).await?;
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    refresh_ok(&ts, &rt).await?;
    assert_eq!((ts.refresh_requests(), ts.successful_refreshes()), (4, 1));
    let log = ts.token_request_log();
    assert!(
        log.iter()
            .all(|l| l.refresh_token.as_deref() == Some(rt.as_str()))
    );

    // Two delayed requests overlap.
    ts.script(Failure::Delay(Duration::from_millis(300)));
    ts.script(Failure::Delay(Duration::from_millis(300)));
    let (x, y) = tokio::join!(client_credentials(&ts), client_credentials(&ts));
    assert_eq!((x?.status, y?.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(ts.max_concurrent_token_requests(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_auth_methods_and_encodings() -> TestResult {
    let secret = "s3:cr t+/=é";
    let cfg = |client_auth, cloudbeds| TokenServerConfig {
        client_secret: secret.into(),
        client_auth,
        cloudbeds,
        ..TokenServerConfig::default()
    };
    let cc = [("grant_type", "client_credentials")];
    let basic = server(cfg(ClientAuth::Basic, false)).await;
    let ok = post_form(&basic.token_url(), &cc, Some(("test-client", secret))).await?;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let wrong = post_form(&basic.token_url(), &cc, Some(("test-client", "nope"))).await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Basic")
    );
    let post = client_credentials(&basic).await?;
    assert_eq!(post.json()["error"], "invalid_client");
    assert!(post.header("www-authenticate").is_none());

    let post_only = server(cfg(ClientAuth::Post, false)).await;
    assert_eq!(client_credentials(&post_only).await?.status, StatusCode::OK);
    let b = post_form(&post_only.token_url(), &cc, Some(("test-client", secret))).await?;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert!(b.header("www-authenticate").is_some());

    // JSON is rejected; multipart only in Cloudbeds mode.
    let json = Request::builder()
        .method(Method::POST)
        .uri(post_only.token_url())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            r#"{"grant_type":"client_credentials"}"#,
        )))?;
    let r = send(json).await?;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (StatusCode::BAD_REQUEST, Value::from("invalid_request"))
    );
    let multipart = |url: String| -> Result<Request<Full<Bytes>>, BoxError> {
        let mut body = String::new();
        for (k, v) in [
            ("grant_type", "client_credentials"),
            ("client_id", "test-client"),
            ("client_secret", secret),
        ] {
            body +=
                &format!("--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n");
        }
        body += "--XyZ--\r\n";
        Ok(Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
            .body(Full::new(Bytes::from(body)))?)
    };
    let cb = server(cfg(ClientAuth::Either, true)).await;
    let r = send(multipart(cb.token_url())?).await?;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["resources"][0]["type"], "property");
    let r = send(multipart(post_only.token_url())?).await?;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_response_commits_rotation() -> TestResult {
    for rotation in [Rotation::Strict, Rotation::Grace] {
        let ts = server(TokenServerConfig {
            rotation,
            ..TokenServerConfig::default()
        })
        .await;
        let r0 = ts.seed_grant();
        ts.script(Failure::LostResponse);
        assert!(
            refresh_post(&ts, &r0).await.is_err(),
            "connection must drop"
        );
        assert_eq!(ts.successful_refreshes(), 1);
        let retry = refresh_post(&ts, &r0).await?;
        if rotation == Rotation::Grace {
            assert_eq!(retry.status, StatusCode::OK);
            assert!(!ts.grant_revoked());
        } else {
            assert_eq!(retry.json()["error"], "invalid_grant");
            assert!(ts.grant_revoked());
            assert_eq!(ts.reuse_detections(), 1);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_echo_stream_and_statuses() -> TestResult {
    let ts = server(TokenServerConfig::default()).await;
    let up = Upstream::start(ts.clone()).await;
    let at = field(&client_credentials(&ts).await?, "access_token");

    let none = get(&up.url(), None).await?;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.header("www-authenticate").as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );

    let payload = vec![7u8; 200_000];
    let req = |h2: bool| -> Result<Request<Full<Bytes>>, BoxError> {
        Ok(Request::builder()
            .method(Method::PUT)
            .uri(format!("{}/echo", up.url()))
            .version(if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            })
            .header(AUTHORIZATION, format!("Bearer {at}"))
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(Full::new(Bytes::from(payload.clone())))?)
    };
    let r = send(req(false)?).await?;
    let j = r.json();
    assert_eq!(
        (j["method"].as_str(), j["version"].as_str()),
        (Some("PUT"), Some("HTTP/1.1"))
    );
    assert_eq!(j["body_len"], 200_000);
    assert_eq!(j["body_sha256"], sha256_hex(&payload));
    assert_eq!(j["headers"]["x-multi"], serde_json::json!(["a", "b"]));
    assert!(j["query"].is_null());
    let h2 = send_with(&support::http_client(true), req(true)?).await?;
    assert_eq!(h2.json()["version"], "HTTP/2.0");

    let bytes = get(&format!("{}/bytes/200000", up.url()), Some(&at)).await?;
    assert_eq!(
        bytes.body.as_ref(),
        support::pattern_bytes(200_000).as_slice()
    );
    let teapot = get(&format!("{}/status/418", up.url()), Some(&at)).await?;
    assert_eq!(teapot.status.as_u16(), 418);
    let dead = get(&format!("{}/cloudbeds/dead", up.url()), Some(&at)).await?;
    assert_eq!(
        (dead.status, dead.json()["success"].clone()),
        (StatusCode::OK, Value::Bool(false))
    );
    let hop = get(&format!("{}/hop", up.url()), Some(&at)).await?;
    assert_eq!(hop.header("x-hop").as_deref(), Some("1"));
    assert_eq!(hop.header("connection").as_deref(), Some("x-hop"));
    let delayed = get(&format!("{}/delay/50", up.url()), Some(&at)).await?;
    assert_eq!(delayed.json()["path"], "/delay/50");
    assert_eq!((up.requests(), up.unauthorized()), (8, 1));

    let open = Upstream::start_open().await;
    assert_eq!(get(&open.url(), None).await?.status, StatusCode::OK);
    Ok(())
}
