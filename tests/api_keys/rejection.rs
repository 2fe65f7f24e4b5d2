//! A key the provider refuses (revoked, or wrong from the start) puts the connection in
//! `needs_authorization` at the first 401: no retry, no token request, 503 with the connect
//! URL from then on, on both request paths.

use std::time::Duration;

use crate::api_keys::rig::{cloudbeds, config_key, proxied, start, state, status};
use bearerd::token::ConnState;

#[tokio::test]
async fn a_revoked_or_wrong_key_stops_the_connection_without_a_loop() {
    for (fast_path, revoked) in [(true, true), (false, false)] {
        let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
        let key = if revoked {
            let key = tokens.issue_key();
            tokens.revoke_key(&key);
            key
        } else {
            "cbat_never_issued_by_the_provider".to_owned()
        };
        let mut config = config_key(&upstream, &key, "");
        if !fast_path {
            config = config.replace(
                "[[connection]]",
                "[runtime]\nfast_path = false\n\n[[connection]]",
            );
        }
        let bearerd = start(&config).await;
        let first = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
        assert_eq!(first.status, 503, "fast path {fast_path}: {}", first.text());
        let problem = first.json();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("/connections/hotel/connect"),
            "{problem}"
        );
        assert!(first.header("retry-after").is_none());
        assert_eq!(state(&bearerd), ConnState::NeedsAuthorization);
        let shown = status(&bearerd).await;
        let error = shown["last_error"].as_str().unwrap();
        assert!(error.contains("revoked or is wrong"), "{error}");
        assert!(!shown.to_string().contains(&key));
        // More requests: answered by bearerd, never sent upstream again.
        for _ in 0..3 {
            let again = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
            assert_eq!(again.status, 503);
        }
        assert_eq!(upstream.requests(), 1, "one upstream call, then none");
        assert_eq!(upstream.unauthorized(), 1);
        assert_eq!(tokens.token_requests(), 0, "a key is never refreshed");
        // An operator's refresh does not ask the provider either.
        let forced = crate::api_keys::rig::admin_post(&bearerd, "/connections/hotel/refresh").await;
        assert_eq!(forced.status, 503);
        assert_eq!(tokens.token_requests(), 0);
        bearerd.app.shutdown().await;
    }
}

#[tokio::test]
async fn cloudbeds_access_denied_for_a_key_is_a_rejection_too() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let key = tokens.issue_key();
    let bearerd = start(&config_key(&upstream, &key, "")).await;
    // The upstream answers Cloudbeds' 401 access_denied body on this path, key or not.
    let answer = proxied(&bearerd, "/cloudbeds/access_denied", &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(state(&bearerd), ConnState::NeedsAuthorization);
    assert_eq!(upstream.requests(), 1);
    assert_eq!(tokens.token_requests(), 0);
    bearerd.app.shutdown().await;
}
