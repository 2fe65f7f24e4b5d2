//! The postgres store when the database is not there: unreachable at start (bearerd runs,
//! says why, and picks the tokens up once it can), and lost in the middle of a refresh
//! (the row lock dies with the session; the new tokens stay pending, the save is retried
//! and lands once the database is back, and no refresh token is redeemed twice).
//!
//! A TCP forwarder stands between bearerd and PostgreSQL so the test can take it away.
//! Needs `BEARERD_TEST_DATABASE_URL`; without it every test prints `SKIPPED` and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

use std::time::Duration;

use std::time::SystemTime;

use bearerd::secret::SecretString;
use bearerd::store::{Record, StoreError, TokenStore};
use http::StatusCode;
use pg_support::flaky::{Flaky, target};
use pg_support::{Replica, TestDb};
use support::{Failure, Rotation, TokenServer, TokenServerConfig, Upstream, eventually};
use tokio::time::Instant;

async fn grace_tokens(lifetime: Duration) -> TokenServer {
    TokenServer::start(TokenServerConfig {
        rotation: Rotation::Grace,
        lifetime: Some(lifetime),
        ..TokenServerConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_at_start_is_retried_in_the_background() {
    let Some(db) = TestDb::create("unreachable").await else {
        return;
    };
    let tokens = grace_tokens(Duration::from_secs(300)).await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let flaky = Flaky::start(target(&db.url), false).await;
    let replica = Replica::new(&tokens, &upstream, &flaky.url(&db.url), "");
    let mut daemon = replica.start();

    // Up, healthy, not ready, and saying why.
    // The refresher's first read of the store fails and says so.
    eventually(
        Duration::from_secs(20),
        "last_error naming the token store",
        || async {
            let state = replica.connection().await?;
            let error = state["last_error"].as_str()?.to_owned();
            error.contains("token store").then_some(())
        },
    )
    .await;
    assert!(daemon.try_status().is_none(), "bearerd exited");
    let readyz = support::get(&format!("{}/readyz", replica.admin), None)
        .await
        .unwrap();
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);

    let up_at = Instant::now();
    flaky.set_up(true);
    replica.ready().await;
    eprintln!(
        "database reachable again: bearerd ready {:?} later",
        up_at.elapsed()
    );
    let response = support::get(&format!("{}/after", replica.proxy), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let output = daemon.terminate(Duration::from_secs(5)).await;
    assert!(
        output.stderr.contains("retrying in the background"),
        "{}",
        output.stderr
    );
    assert_eq!(tokens.reuse_detections(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_lost_mid_refresh_delays_the_save_and_loses_nothing() {
    let Some(db) = TestDb::create("lost").await else {
        return;
    };
    let tokens = grace_tokens(Duration::from_secs(300)).await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let flaky = Flaky::start(target(&db.url), true).await;
    let replica = Replica::new(&tokens, &upstream, &flaky.url(&db.url), "");
    let daemon = replica.start();
    replica.ready().await;
    let before = replica.generation().await;
    let requests_before = tokens.refresh_requests();

    // The refresh holds the row lock while the token endpoint is slow; then the database
    // goes away (every session cut, new ones refused) until after the answer came.
    tokens.script(Failure::Delay(Duration::from_secs(2)));
    let admin = replica.admin.clone();
    let refresh = tokio::spawn(async move {
        let request = http::Request::post(format!("{admin}/connections/hotel/refresh"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        support::send(request).await.unwrap().status
    });
    eventually(Duration::from_secs(10), "inside the token request", || {
        let arrived = tokens.refresh_requests() > requests_before;
        async move { arrived.then_some(()) }
    })
    .await;
    flaky.set_up(false);
    flaky.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pending = replica.connection().await.unwrap();
    eprintln!("while the database is away: {pending}");
    assert_eq!(
        pending["generation"].as_u64(),
        Some(before),
        "used before saved"
    );
    flaky.set_up(true);
    let back = Instant::now();
    eventually(
        Duration::from_secs(30),
        "the pending save lands",
        || async { (replica.generation().await == before + 1).then_some(()) },
    )
    .await;
    eprintln!(
        "database back: new tokens saved and in use {:?} later",
        back.elapsed()
    );
    assert_eq!(refresh.await.unwrap(), StatusCode::OK);

    let stored = db.store(None).await.load("hotel").await.unwrap().unwrap();
    assert_eq!(stored.generation, before + 1);
    let response = support::get(&format!("{}/after", replica.proxy), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(
        tokens.refresh_requests() - requests_before,
        1,
        "redeemed once"
    );
    assert_eq!(tokens.reuse_detections(), 0);
    assert!(!tokens.grant_revoked());
    daemon.terminate(Duration::from_secs(5)).await;
}

fn record(generation: u64, refresh_token: &str) -> Record {
    Record {
        connection: "hotel".into(),
        generation,
        access_token: Some(SecretString::new(format!("at_{refresh_token}"))),
        expires_at: None,
        refresh_token: Some(SecretString::new(refresh_token.to_owned())),
        scope: None,
        state: "connected".into(),
        updated_at: SystemTime::now(),
        credential: bearerd::store::Credential::Token,
        last_used_at: None,
        covers: Vec::new(),
    }
}

/// Ends the session that holds a row lock (idle in its transaction), as a server restart
/// or a network cut would.
async fn terminate_lock_holder(db: &TestDb) {
    let killed = db
        .column(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle in transaction'",
        )
        .await;
    assert_eq!(killed, vec![Some("true".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_save_whose_lock_was_lost_never_overwrites_another_replicas_refresh() {
    let Some(db) = TestDb::create("fence").await else {
        return;
    };
    let (a, b) = (db.store(None).await, db.store(None).await);
    let lock = a.lock("hotel", Duration::from_secs(5)).await.unwrap();
    a.save(&record(1, "rt_1")).await.unwrap();
    drop(lock);

    // Lost lock, nobody else wrote: the save re-takes the row and lands.
    let lock = a.lock("hotel", Duration::from_secs(5)).await.unwrap();
    terminate_lock_holder(&db).await;
    assert!(
        a.save(&record(2, "rt_2a")).await.is_err(),
        "the lock's session is gone"
    );
    a.save(&record(2, "rt_2a")).await.unwrap();
    drop(lock);
    let stored = b.load("hotel").await.unwrap().unwrap();
    assert_eq!(stored.refresh_token.unwrap().secret(), "rt_2a");

    // Lost lock, and another replica refreshed meanwhile: refused, theirs stays.
    let lock = a.lock("hotel", Duration::from_secs(5)).await.unwrap();
    terminate_lock_holder(&db).await;
    let other = b.lock("hotel", Duration::from_secs(5)).await.unwrap();
    b.save(&record(3, "rt_3b")).await.unwrap();
    drop(other);
    assert!(
        a.save(&record(3, "rt_3a")).await.is_err(),
        "the lock's session is gone"
    );
    let refused = a.save(&record(3, "rt_3a")).await;
    let superseded = matches!(
        refused,
        Err(StoreError::Superseded {
            stored: 3,
            attempted: 3,
            ..
        })
    );
    assert!(superseded, "{refused:?}");
    drop(lock);
    let stored = b.load("hotel").await.unwrap().unwrap();
    assert_eq!(stored.refresh_token.unwrap().secret(), "rt_3b");
}
