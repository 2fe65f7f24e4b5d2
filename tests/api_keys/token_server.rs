//! The test token server's Cloudbeds key endpoints behave as PROVIDERS.md section 1b says:
//! `refresh_token_exchange` turns a refresh token into a `cbat_` key, a later OAuth refresh
//! of the same grant invalidates that key, and keys lapse when idle.

use std::time::Duration;

use crate::support::{TokenServer, TokenServerConfig, post_form, refresh_post};

#[tokio::test]
async fn refresh_token_exchange_gives_a_key_that_a_later_refresh_invalidates() {
    let tokens = TokenServer::start(TokenServerConfig {
        cloudbeds: true,
        ..TokenServerConfig::default()
    })
    .await;
    let refresh_token = tokens.seed_grant();
    let (id, secret) = (tokens.client_id(), tokens.client_secret());
    let answer = post_form(
        &tokens.token_url(),
        &[
            ("grant_type", "refresh_token_exchange"),
            ("refresh_token", &refresh_token),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    let key = json["access_token"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cbat_"));
    assert!(json.get("refresh_token").is_none() && json.get("expires_in").is_none());
    assert!(tokens.validate_key(&key));
    assert_eq!(tokens.key_exchanges(), 1);

    let refreshed = refresh_post(&tokens, &refresh_token).await.unwrap();
    assert_eq!(refreshed.status, 200);
    assert!(
        !tokens.validate_key(&key),
        "the OAuth refresh invalidated the key"
    );
    assert_eq!(tokens.keys_invalidated_by_refresh(), 1);

    let bad = post_form(
        &tokens.token_url(),
        &[
            ("grant_type", "refresh_token_exchange"),
            ("refresh_token", "rt_unknown"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 401, "Cloudbeds' shape for a bad refresh token");
}

#[tokio::test(start_paused = true)]
async fn keys_lapse_when_idle_and_revoked_keys_are_refused() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.set_key_idle(Some(Duration::from_secs(30)));
    let used = tokens.issue_key();
    let idle = tokens.issue_key();
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(tokens.validate_key(&used));
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(tokens.validate_key(&used), "used 20 s ago: alive");
    assert!(!tokens.validate_key(&idle), "unused for 40 s: lapsed");
    assert_eq!(tokens.keys_lapsed(), 1);
    tokens.revoke_key(&used);
    assert!(!tokens.validate_key(&used));
    assert!(!tokens.validate_key("cbat_unknown"));
}
