//! Keep-alive: Cloudbeds deletes keys unused for 30 days; a key idle for `keepalive` gets one
//! `POST /api/v1.2/access_token_check`, so it stays alive while a key nobody uses lapses.
//! The test token server lapses keys idle for 3 s; bearerd's keep-alive is 2 s.

use std::time::Duration;

use crate::api_keys::rig::{admin_post, cloudbeds, config_key, record, start, status, stored};
use crate::support::{eventually, seed_store, temp_store_dir};

#[tokio::test]
async fn an_idle_key_gets_a_token_check_and_stays_alive() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    tokens.set_key_idle(Some(Duration::from_secs(3)));
    let key = tokens.issue_key();
    let unused = tokens.issue_key();
    let bearerd = start(&config_key(&upstream, &key, "keepalive = \"2s\"")).await;
    eventually(Duration::from_secs(15), "two keep-alive calls", || {
        let checks = upstream.token_checks();
        async move { (checks >= 2).then_some(()) }
    })
    .await;
    // More than the provider's idle period has passed without a request from the app.
    assert!(tokens.key_is_live(&key), "the kept-alive key lives");
    assert!(!tokens.key_is_live(&unused), "an unused key lapses");
    assert_eq!(upstream.unauthorized(), 0);
    assert_eq!(tokens.token_requests(), 0);
    let shown = status(&bearerd).await;
    assert_eq!(shown["state"], "connected");
    assert!(shown["last_used_at"].is_string(), "{shown}");
    bearerd.app.shutdown().await;
}

#[tokio::test]
async fn a_stored_key_records_its_keep_alive_in_the_store() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    tokens.set_key_idle(Some(Duration::from_secs(3)));
    let dir = temp_store_dir("key-keepalive");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = stored("authorization_code", &tokens, &upstream, &dir, "").replace(
        "rate_limit = false",
        "rate_limit = false\nkeepalive = \"2s\"",
    );
    let bearerd = start(&config).await;
    let migrated = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(migrated.status, 200, "{}", migrated.text());
    let installed = record(&dir)
        .await
        .last_used_at
        .expect("a last use at install");
    eventually(Duration::from_secs(15), "a keep-alive, recorded", || {
        let dir = dir.clone();
        let checks = upstream.token_checks();
        async move {
            let last = record(&dir).await.last_used_at?;
            (checks >= 1 && last > installed).then_some(())
        }
    })
    .await;
    let key = tokens.keys_issued().pop().unwrap();
    assert!(tokens.key_is_live(&key));
    assert_eq!(tokens.refresh_requests(), 1, "only the start-up redeem");
    bearerd.app.shutdown().await;
}
