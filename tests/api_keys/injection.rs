//! A key from the config goes upstream as `x-api-key`, on the fast path and on hyper's, and
//! the app's own `Authorization` and `x-api-key` never do.

use std::time::Duration;

use crate::api_keys::rig::{cloudbeds, config_key, echoed, proxied, start, state, status};
use crate::support::raw_upstream::Wire;
use bearerd::token::ConnState;

const APP_CREDENTIALS: [(&str, &str); 2] = [
    ("authorization", "Bearer app-own-token"),
    ("x-api-key", "app-own-key"),
];

#[tokio::test]
async fn a_config_key_goes_as_x_api_key_on_the_fast_path() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let key = tokens.issue_key();
    let bearerd = start(&config_key(&upstream, &key, "")).await;
    assert_eq!(state(&bearerd), ConnState::Connected);
    for _ in 0..2 {
        let answer = proxied(&bearerd, "/api/v1.3/getHotels", &APP_CREDENTIALS).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
        assert!(
            echoed(&answer, "authorization").is_empty(),
            "{}",
            answer.text()
        );
    }
    assert_eq!(tokens.key_uses(&key), 2);
    assert_eq!(upstream.unauthorized(), 0);
    assert_eq!(tokens.token_requests(), 0, "a key needs no token endpoint");
    let shown = status(&bearerd).await;
    assert_eq!(shown["grant"], "api_key");
    assert_eq!(shown["credential"], "api_key");
    assert!(shown["last_used_at"].is_string(), "{shown}");
    assert!(
        !shown.to_string().contains(&key),
        "the status never shows the key"
    );
    bearerd.app.shutdown().await;
}

#[tokio::test]
async fn a_config_key_goes_as_x_api_key_through_hyper() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let key = tokens.issue_key();
    let config = config_key(&upstream, &key, "").replace(
        "[[connection]]",
        "[runtime]\nfast_path = false\n\n[[connection]]",
    );
    let bearerd = start(&config).await;
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &APP_CREDENTIALS).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
    assert!(echoed(&answer, "authorization").is_empty());
    assert_eq!(tokens.key_uses(&key), 1);
    bearerd.app.shutdown().await;
}

#[tokio::test]
async fn a_chunked_request_handed_to_hyper_carries_the_key_too() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let key = tokens.issue_key();
    let bearerd = start(&config_key(&upstream, &key, "")).await;
    let mut wire = Wire::connect(&bearerd.proxy("hotel")).await.unwrap();
    // Chunked: the fast path hands the connection to hyper.
    wire.send(
        b"POST /api/v1.3/postReservation HTTP/1.1\r\nHost: app\r\n\
          Authorization: Bearer app-own-token\r\nX-Api-Key: app-own-key\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = wire.read_response(false).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["headers"]["x-api-key"], serde_json::json!([key]));
    assert!(json["headers"].get("authorization").is_none(), "{json}");
    assert_eq!(json["body_len"], 5);
    bearerd.app.shutdown().await;
}
