//! After a migration no refresh grant is ever sent for the connection: not after a restart,
//! and not by a second bearerd sharing the store (file store here; postgres when
//! `BEARERD_TEST_DATABASE_URL` is set), even when its access token falls due for refresh.
//! The provider invalidates the key when the OAuth refresh is used, so the test token server
//! counts keys killed that way: it must stay 0.

use std::time::Duration;

use crate::api_keys::rig::{admin_post, cloudbeds, echoed, proxied, settled, start, stored};
use crate::pg_support::TestDb;
use crate::support::{TokenServer, eventually, seed_store, temp_store_dir};
use bearerd::token::ConnState;

#[tokio::test]
async fn a_migrated_record_is_never_refreshed_after_a_restart() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(3600)).await;
    let dir = temp_store_dir("key-restart");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = stored("authorization_code", &tokens, &upstream, &dir, "");
    let bearerd = start(&config).await;
    let migrated = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(migrated.status, 200, "{}", migrated.text());
    bearerd.app.shutdown().await;
    let refreshes = tokens.refresh_requests();
    let key = tokens.keys_issued().pop().unwrap();

    let bearerd = start(&config).await;
    assert_eq!(crate::api_keys::rig::state(&bearerd), ConnState::Connected);
    let answer = proxied(&bearerd, "/api/v1.3/getHotels", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
    let forced = admin_post(&bearerd, "/connections/hotel/refresh").await;
    assert_eq!(forced.status, 200);
    let migrate_again = admin_post(&bearerd, "/connections/hotel/migrate").await;
    assert_eq!(migrate_again.status, 409);
    assert_eq!(tokens.refresh_requests(), refreshes);
    assert_eq!(tokens.keys_invalidated_by_refresh(), 0);
    assert!(tokens.key_is_live(&key));
    bearerd.app.shutdown().await;
}

/// Two bearerds on one store, tokens short-lived so both would refresh soon; the first
/// migrates; the second must switch to the key and never send a refresh grant.
async fn second_process_switches_to_the_key(tokens: &TokenServer, config: &str) {
    let first = start(config).await;
    let second = start(config).await;
    assert_eq!(settled(&second).await, ConnState::Connected);
    let migrated = admin_post(&first, "/connections/hotel/migrate").await;
    assert_eq!(migrated.status, 200, "{}", migrated.text());
    let refreshes = tokens.refresh_requests();
    let key = tokens.keys_issued().pop().unwrap();
    let on_second = eventually(
        Duration::from_secs(10),
        "the second process uses the key",
        || async {
            let answer = proxied(&second, "/api/v1.3/getHotels", &[]).await;
            (echoed(&answer, "x-api-key") == [key.as_str()]).then_some(answer)
        },
    )
    .await;
    assert!(echoed(&on_second, "authorization").is_empty());
    // Past the old access token's lifetime (and refresh schedule) on both processes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for bearerd in [&first, &second] {
        let answer = proxied(bearerd, "/api/v1.3/getHotels", &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(echoed(&answer, "x-api-key"), [key.as_str()]);
        let forced = admin_post(bearerd, "/connections/hotel/refresh").await;
        assert_eq!(forced.status, 200, "{}", forced.text());
    }
    assert_eq!(
        tokens.refresh_requests(),
        refreshes,
        "no refresh grant after the migration"
    );
    assert_eq!(tokens.keys_invalidated_by_refresh(), 0);
    assert!(tokens.key_is_live(&key));
    first.app.shutdown().await;
    second.app.shutdown().await;
}

#[tokio::test]
async fn a_second_process_on_the_file_store_never_refreshes_a_migrated_record() {
    let (tokens, upstream) = cloudbeds(Duration::from_secs(4)).await;
    let dir = temp_store_dir("key-shared");
    seed_store(&dir, "hotel", &tokens.seed_grant()).await;
    let config = stored("authorization_code", &tokens, &upstream, &dir, "");
    second_process_switches_to_the_key(&tokens, &config).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_replica_on_postgres_never_refreshes_a_migrated_record() {
    let Some(db) = TestDb::create("keys").await else {
        eprintln!("SKIPPED: the postgres case of no-refresh-after-migration");
        return;
    };
    let (tokens, upstream) = cloudbeds(Duration::from_secs(4)).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let dir = temp_store_dir("key-pg");
    let config = stored("authorization_code", &tokens, &upstream, &dir, "").replace(
        &format!("kind = \"file\"\ndir = \"{}\"", dir.display()),
        &format!("kind = \"postgres\"\nurl = \"{}\"", db.url),
    );
    assert!(config.contains("postgres"), "{config}");
    second_process_switches_to_the_key(&tokens, &config).await;
    let row = db.raw_row("hotel").await;
    assert!(row.contains("api_key"), "{row}");
}
