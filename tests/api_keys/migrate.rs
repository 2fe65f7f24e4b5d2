//! Migration (SPEC section 10): `POST /connections/NAME/migrate` and `bearerd migrate`
//! exchange the stored refresh token with `grant_type=refresh_token_exchange`, store the key
//! before it is used, and from then on no refresh grant is sent. What cannot migrate gets a
//! clear 409 (CLI: exit 1 with the reason) and changes nothing.

use std::time::Duration;

use crate::api_keys::rig::{
    admin_post, cloudbeds, echoed, proxied, record, start, state, status, stored,
};
use crate::support::{Bearerd, Failure, cc_config, seed_store, temp_store_dir};
use bearerd::store::Credential;
use bearerd::token::ConnState;

const BIN: &str = env!("CARGO_BIN_EXE_bearerd");

/// A connected cloudbeds refresh-token connection (redeemed once at start) and its dir.
async fn connected(
    tokens: &crate::support::TokenServer,
    upstream: &crate::support::Upstream,
) -> (Bearerd, std::path::PathBuf) {
    let dir = temp_store_dir("migrate");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let bearerd = start(&stored("authorization_code", tokens, upstream, &dir, "")).await;
    assert_eq!(state(&bearerd), ConnState::Connected);
    assert_eq!(tokens.refresh_requests(), 1);
    (bearerd, dir)
}

#[tokio::test]
async fn migrate_from_the_admin_listener_stores_the_key_and_never_refreshes_again() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let (bearerd, dir) = connected(&tokens, &upstream).await;
    let before = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(echoed(&before, "authorization").len(), 1);
    assert!(echoed(&before, "x-api-key").is_empty());

    let answer = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let shown = answer.json();
    assert_eq!(shown["migrated"], true);
    assert_eq!(shown["credential"], "api_key");
    assert_eq!(shown["state"], "connected");
    assert_eq!(tokens.key_exchanges(), 1);
    let key = tokens.keys_issued().pop().unwrap();
    assert!(!answer.text().contains(&key));

    let stored = record(&dir).await;
    assert_eq!(stored.credential, Credential::ApiKey);
    assert_eq!(stored.access_token.as_ref().unwrap().secret(), key);
    assert!(stored.refresh_token.is_none(), "the refresh token is gone");
    assert_eq!(stored.generation, shown["generation"].as_u64().unwrap());

    let after = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(after.status, 200);
    assert_eq!(echoed(&after, "x-api-key"), [key.as_str()]);
    assert!(echoed(&after, "authorization").is_empty());

    // An operator's refresh is not a refresh grant any more.
    let forced = admin_post(&bearerd, "/connections/hotel/refresh").await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(tokens.refresh_requests(), 1);

    // Again: 409, nothing changed.
    let again = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(again.status, 409, "{}", again.text());
    let detail = again.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("already uses an API key"), "{detail}");
    assert_eq!(tokens.key_exchanges(), 1);
    assert_eq!(record(&dir).await, stored);
    assert!(tokens.key_is_live(&key));
    assert_eq!(tokens.keys_invalidated_by_refresh(), 0);
    bearerd.app.shutdown().await;
}

#[tokio::test]
async fn bearerd_migrate_asks_the_daemon_and_exits_1_with_the_reason() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let (bearerd, dir) = connected(&tokens, &upstream).await;
    let run = || {
        tokio::process::Command::new(BIN)
            .args(["migrate", "hotel", "--admin", &bearerd.admin])
            .env_remove("BEARERD_ADMIN_TOKEN")
            .output()
    };
    let out = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hotel: migrated to an API key"), "{stdout}");
    assert_eq!(record(&dir).await.credential, Credential::ApiKey);
    let key = tokens.keys_issued().pop().unwrap();
    assert!(!stdout.contains(&key));

    let out = run().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already uses an API key"), "{stderr}");
    assert_eq!(tokens.key_exchanges(), 1);
    assert_eq!(tokens.refresh_requests(), 1);
    bearerd.app.shutdown().await;

    // No daemon there: exit 1.
    let out = run().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn what_cannot_migrate_gets_409_and_nothing_changes() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;

    // Never connected: no refresh token.
    let dir = temp_store_dir("migrate-none");
    let bearerd = start(&stored("authorization_code", &tokens, &upstream, &dir, "")).await;
    let answer = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(answer.status, 409, "{}", answer.text());
    assert_eq!(
        answer.header("content-type").unwrap(),
        "application/problem+json"
    );
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("no refresh token")
    );
    assert_eq!(state(&bearerd), ConnState::NeedsAuthorization);
    assert!(crate::support::stored(&dir, "hotel").await.is_none());
    bearerd.app.shutdown().await;

    // client_credentials: nothing to exchange, and no header for a key.
    let bearerd = Bearerd::start(&cc_config("hotel", &tokens, &upstream, "")).await;
    let answer = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(answer.status, 409, "{}", answer.text());
    bearerd.app.shutdown().await;

    // oauth2 without api_key_header: nowhere to send a key.
    let dir = temp_store_dir("migrate-oauth2");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = stored("authorization_code", &tokens, &upstream, &dir, "")
        .replace("provider = \"cloudbeds\"", "provider = \"oauth2\"");
    let bearerd = start(&config).await;
    let answer = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(answer.status, 409, "{}", answer.text());
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("api_key_header")
    );
    bearerd.app.shutdown().await;
    assert_eq!(tokens.key_exchanges(), 0);

    // The provider refuses the exchange: 502, still the same tokens.
    let (bearerd, dir) = {
        let (tokens, upstream) = (tokens.clone(), upstream.clone());
        let refreshes = tokens.refresh_requests();
        let dir = temp_store_dir("migrate-refused");
        seed_store(&dir, "hotel", &tokens.seed_grant()).await;
        let bearerd = start(&stored("authorization_code", &tokens, &upstream, &dir, "")).await;
        assert_eq!(tokens.refresh_requests(), refreshes + 1);
        (bearerd, dir)
    };
    let before = record(&dir).await;
    tokens.script(Failure::InvalidGrant);
    let answer = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(record(&dir).await, before);
    assert_eq!(state(&bearerd), ConnState::Connected);
    assert_eq!(status(&bearerd).await["credential"], "token");
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(echoed(&answer, "authorization").len(), 1);
    bearerd.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_cannot_be_saved_stays_pending_and_unused_until_it_is() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let (bearerd, dir) = connected(&tokens, &upstream).await;
    // A directory where the temp file must go makes every save fail, even for root.
    let blocker = dir.join(".hotel.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let admin = bearerd.admin.clone();
    let migrate = tokio::spawn(async move {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{admin}/connections/hotel/migrate"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        crate::support::send(request).await.unwrap()
    });
    let connection = bearerd.app.connection("hotel").unwrap();
    crate::support::eventually(Duration::from_secs(10), "the pending save shows", || {
        let s = connection.snapshot();
        let pending = s.state == ConnState::Degraded
            && s.last_error.as_deref().unwrap_or("").contains("not saved");
        async move { pending.then_some(()) }
    })
    .await;
    assert_eq!(tokens.key_exchanges(), 1, "the provider issued the key");
    let key = tokens.keys_issued().pop().unwrap();
    // Meanwhile the app is served with the access token it had; the key is not used.
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(echoed(&answer, "authorization").len(), 1);
    assert_eq!(tokens.key_uses(&key), 0, "not used before it is durable");
    assert_eq!(record(&dir).await.credential, Credential::Token);

    std::fs::remove_dir(&blocker).unwrap();
    let answer = migrate.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(record(&dir).await.credential, Credential::ApiKey);
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
    assert_eq!(tokens.refresh_requests(), 1);
    bearerd.app.shutdown().await;
}

#[tokio::test]
async fn an_app_of_many_tenants_is_migrated_tenant_by_tenant() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let dir = temp_store_dir("migrate-app");
    let config = stored("authorization_code", &tokens, &upstream, &dir, "").replace(
        "rate_limit = false",
        "rate_limit = false\ntenants = \"header:X-Property-ID\"",
    );
    let bearerd = Bearerd::start(&config).await;
    let answer = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(answer.status, 409, "{}", answer.text());
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("/connections/hotel/tenants/ID/migrate")
    );
    assert_eq!(tokens.token_requests(), 0);
    bearerd.app.shutdown().await;
}
