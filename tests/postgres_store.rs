//! The postgres store with several bearerd processes (the real binary) on one database:
//! one refresh at a time across replicas under load (strict rotation), kill -9 of the
//! replica holding the row lock mid-refresh (grace rotation), how fast a commit reaches
//! the other replicas, concurrent migrations, and `bearerd import`.
//!
//! Needs `BEARERD_TEST_DATABASE_URL` (a database the tests may create databases from);
//! without it every test prints `SKIPPED` and passes. `BEARERD_PG_LOAD_SECS` sets the
//! length of the load test (default 15).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

use std::io::Write;
use std::time::{Duration, SystemTime};

use bearerd::secret::SecretString;
use bearerd::store::{Record, TokenStore};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use pg_support::{Replica, TestDb, kill_9};
use support::{Failure, Rotation, TokenServer, TokenServerConfig, Upstream, eventually};
use tokio::time::Instant;

async fn token_server(rotation: Rotation, lifetime: Duration, kill_previous: bool) -> TokenServer {
    TokenServer::start(TokenServerConfig {
        rotation,
        lifetime: Some(lifetime),
        kill_previous_access_on_refresh: kill_previous,
        ..TokenServerConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_under_load_never_reuse_a_refresh_token() {
    let Some(db) = TestDb::create("load").await else {
        return;
    };
    let tokens = token_server(Rotation::Strict, Duration::from_secs(2), true).await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::new(&tokens, &upstream, &db.url, ""))
        .collect();
    let daemons: Vec<_> = replicas.iter().map(Replica::start).collect();
    for replica in &replicas {
        replica.ready().await;
    }
    let secs: u64 = std::env::var("BEARERD_PG_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let refreshes_before = tokens.successful_refreshes();
    let proxies: Vec<String> = replicas.iter().map(|r| r.proxy.clone()).collect();
    let (ok, failed) = support::load(&proxies, 24, Duration::from_secs(secs)).await;
    for daemon in daemons {
        daemon.terminate(Duration::from_secs(5)).await;
    }
    let refreshes = tokens.successful_refreshes() - refreshes_before;
    eprintln!(
        "three replicas on postgres, {secs} s of load, 2 s tokens (strict rotation): \
         {ok} requests ok, {failed} failed, {refreshes} refreshes, {} reuse detections",
        tokens.reuse_detections()
    );
    assert_eq!(tokens.reuse_detections(), 0);
    assert!(!tokens.grant_revoked());
    assert_eq!(failed, 0);
    assert!(ok > 100, "{ok} requests");
    // One replica's worth: a refresh about every second, not one per replica.
    let most = (secs as f64 * 1.4) as usize + 2;
    assert!(
        (secs as usize / 3..=most).contains(&refreshes),
        "{refreshes} refreshes in {secs} s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_lock_holder_mid_refresh_loses_nothing() {
    let Some(db) = TestDb::create("kill").await else {
        return;
    };
    let tokens = token_server(Rotation::Grace, Duration::from_secs(300), false).await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::new(&tokens, &upstream, &db.url_named(&format!("r{i}")), ""))
        .collect();
    let mut daemons: Vec<_> = replicas.iter().map(Replica::start).collect();
    for replica in &replicas {
        replica.ready().await;
    }
    let settled = replicas[0].generation().await;
    for replica in &replicas[1..] {
        eventually(Duration::from_secs(10), "same generation", || async {
            (replica.generation().await == settled).then_some(())
        })
        .await;
    }

    // r0 refreshes and stalls inside the token request, holding the row lock.
    let requests_before = tokens.refresh_requests();
    tokens.script(Failure::Delay(Duration::from_secs(5)));
    let victim = replicas[0].admin.clone();
    tokio::spawn(async move {
        let request = Request::post(format!("{victim}/connections/hotel/refresh"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let _ = support::send(request).await;
    });
    eventually(
        Duration::from_secs(10),
        "r0 inside the token request",
        || {
            let arrived = tokens.refresh_requests() > requests_before;
            async move { arrived.then_some(()) }
        },
    )
    .await;
    let holder = "SELECT application_name FROM pg_stat_activity \
                  WHERE datname = current_database() AND state = 'idle in transaction'";
    assert_eq!(db.column(holder).await, vec![Some("r0".to_owned())]);

    // r1 and r2 want a refresh too and queue on the row lock.
    let waiting: Vec<_> = replicas[1..]
        .iter()
        .map(|r| {
            let admin = r.admin.clone();
            tokio::spawn(async move {
                let request = Request::post(format!("{admin}/connections/hotel/refresh"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let _ = support::send(request).await;
            })
        })
        .collect();
    let queued = "SELECT count(*)::text FROM pg_stat_activity \
                  WHERE datname = current_database() AND wait_event_type = 'Lock'";
    eventually(
        Duration::from_secs(10),
        "r1 and r2 waiting for the row lock",
        || {
            let db = &db;
            async move { (db.column(queued).await == vec![Some("2".to_owned())]).then_some(()) }
        },
    )
    .await;

    let killed_at = Instant::now();
    kill_9(&daemons[0]);
    daemons.remove(0).wait(Duration::from_secs(5)).await;
    for replica in &replicas[1..] {
        eventually(
            Duration::from_secs(10),
            "next generation everywhere",
            || async { (replica.generation().await == settled + 1).then_some(()) },
        )
        .await;
    }
    let took = killed_at.elapsed();
    // (The POSTs themselves may answer later: the replica that adopts rather than redeems.)
    for task in waiting {
        task.abort();
    }
    for replica in &replicas[1..] {
        let response = support::get(&format!("{}/after-kill", replica.proxy), None)
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
    let redeemed = tokens.refresh_requests() - requests_before;
    eprintln!(
        "kill -9 of the lock holder: the next refresh completed {took:?} after the kill; \
         {redeemed} refresh requests (the killed one included), {} reuse detections",
        tokens.reuse_detections()
    );
    assert_eq!(
        redeemed, 2,
        "one by the killed replica, one by its successor"
    );
    assert_eq!(tokens.reuse_detections(), 0);
    assert!(!tokens.grant_revoked());
    for daemon in daemons {
        daemon.terminate(Duration::from_secs(5)).await;
    }
}

fn record(generation: u64) -> Record {
    Record {
        connection: "hotel".into(),
        generation,
        access_token: Some(SecretString::new(format!("at_{generation}"))),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        refresh_token: Some(SecretString::new(format!("rt_{generation}"))),
        scope: None,
        state: "connected".into(),
        updated_at: SystemTime::now(),
        credential: bearerd::store::Credential::Token,
        last_used_at: None,
        covers: Vec::new(),
    }
}

fn summary(mut delays: Vec<Duration>) -> String {
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:?}, median {:?}, max {:?} over {}",
        at(0.0),
        at(0.5),
        at(1.0),
        delays.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_reaches_the_other_replicas_by_notification() {
    let Some(db) = TestDb::create("notify").await else {
        return;
    };
    // Store to store: from the save's commit to the other store's `changes()`.
    let writer = db.store(None).await;
    let reader = db.store(None).await;
    let mut changes = reader.changes().unwrap();
    // The reader's listener may still be connecting: write until it hears one.
    let mut warm_up = 0;
    loop {
        warm_up += 1;
        let lock = writer.lock("hotel", Duration::from_secs(5)).await.unwrap();
        writer.save(&record(warm_up)).await.unwrap();
        drop(lock);
        let heard = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        if heard.is_ok() {
            break;
        }
        assert!(warm_up < 20, "the reader never heard a notification");
    }
    while changes.try_recv().is_ok() {}
    let mut delays = Vec::new();
    for generation in warm_up + 1..=warm_up + 20 {
        let lock = writer.lock("hotel", Duration::from_secs(5)).await.unwrap();
        writer.save(&record(generation)).await.unwrap();
        let committed = Instant::now();
        drop(lock);
        let name = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
        delays.push(committed.elapsed());
        assert_eq!(name.unwrap().unwrap(), "hotel");
    }
    eprintln!("NOTIFY propagation, store to store: {}", summary(delays));

    // Process to process: one replica refreshes, the other serves the new generation.
    let tokens = token_server(Rotation::Strict, Duration::from_secs(300), false).await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let a = Replica::new(&tokens, &upstream, &db.url, "");
    let b = Replica::new(&tokens, &upstream, &db.url, "");
    let daemons = [a.start(), b.start()];
    a.ready().await;
    b.ready().await;
    let mut delays = Vec::new();
    for _ in 0..10 {
        let before = b.generation().await;
        assert_eq!(a.force_refresh().await.status, StatusCode::OK);
        let refreshed = Instant::now();
        let target = a.generation().await;
        assert!(target > before);
        // Polling falls back to every 10 s; this is the notification.
        let deadline = refreshed + Duration::from_secs(15);
        while b.generation().await < target {
            assert!(
                Instant::now() < deadline,
                "replica b never adopted {target}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(refreshed.elapsed());
    }
    eprintln!(
        "propagation, replica to replica (refresh answered -> other replica's /connections shows it): {}",
        summary(delays)
    );
    for daemon in daemons {
        daemon.terminate(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_run_concurrently_and_import_reaches_every_replica() {
    let Some(db) = TestDb::create("migrate").await else {
        return;
    };
    // Three processes start at once on an empty database.
    let tokens = token_server(Rotation::Strict, Duration::from_secs(300), false).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::new(&tokens, &upstream, &db.url, ""))
        .collect();
    let daemons: Vec<_> = replicas.iter().map(Replica::start).collect();
    let count = "SELECT count(*)::text FROM bearerd_schema";
    // Every migration applied once, however many replicas raced to apply it.
    let all = vec![Some(bearerd::store::postgres::SCHEMA_VERSIONS.to_string())];
    eventually(Duration::from_secs(20), "schema migrated", || async {
        let tables = db
            .column("SELECT to_regclass('bearerd_schema')::text")
            .await;
        if tables != vec![Some("bearerd_schema".to_owned())] {
            return None;
        }
        (db.column(count).await == all).then_some(())
    })
    .await;

    // `bearerd import` into the postgres store; every replica picks it up.
    let mut import = std::process::Command::new(env!("CARGO_BIN_EXE_bearerd"))
        .args(["import", "hotel", "--config", &replicas[0].config])
        .env_remove("BEARERD_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let grant = tokens.seed_grant();
    import
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{grant}\n").as_bytes())
        .unwrap();
    let output = import.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("generation 1"), "{stdout}");
    for replica in &replicas {
        replica.ready().await;
    }
    assert_eq!(
        tokens.refresh_requests(),
        1,
        "one replica redeems, two adopt"
    );
    assert_eq!(tokens.reuse_detections(), 0);

    let mut applied = 0;
    for daemon in daemons {
        let output = daemon.terminate(Duration::from_secs(5)).await;
        assert!(output.status.success(), "{}", output.stderr);
        assert!(!output.stderr.contains("ERROR"), "{}", output.stderr);
        applied += output.stderr.matches("applied schema migration").count();
    }
    // Each migration is applied once, by whichever process got there first.
    let migrations = all[0]
        .as_deref()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap();
    assert_eq!(
        applied, migrations,
        "each migration applied by exactly one process"
    );

    // In process: eight stores opening at once on another empty database.
    let Some(fresh) = TestDb::create("migrate8").await else {
        return;
    };
    let opening: Vec<_> = (0..8)
        .map(|_| {
            let options = fresh.options(None, &["hotel"]);
            tokio::spawn(bearerd::store::postgres::PgStore::connect(options))
        })
        .collect();
    for store in opening {
        assert!(store.await.unwrap().is_ok());
    }
    assert_eq!(fresh.column(count).await, all);
}

/// Replicas announce themselves for rate-limit sharing: each sees the others and its own
/// place; one that leaves is out of the count at the next heartbeat.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_see_each_other_by_heartbeat_and_leave_cleanly() {
    let Some(db) = TestDb::create("replicas").await else {
        return;
    };
    let (a, b) = (db.store(None).await, db.store(None).await);
    assert_eq!(a.heartbeat("replica-a").await.unwrap(), Some((0, 1)));
    assert_eq!(b.heartbeat("replica-b").await.unwrap(), Some((1, 2)));
    assert_eq!(a.heartbeat("replica-a").await.unwrap(), Some((0, 2)));
    a.leave("replica-a").await.unwrap();
    assert_eq!(b.heartbeat("replica-b").await.unwrap(), Some((0, 1)));
    // A replica that stops announcing itself drops out once it has not been seen for
    // LIVE_WITHIN: age its row instead of waiting.
    assert_eq!(a.heartbeat("replica-a").await.unwrap(), Some((0, 2)));
    db.execute(
        "UPDATE bearerd_replicas SET seen_at = now() - interval '1 minute' WHERE id = 'replica-a'",
    )
    .await;
    assert_eq!(b.heartbeat("replica-b").await.unwrap(), Some((0, 1)));
}

/// The notification outbox in postgres: an event id is stored once, a claim leases it to one
/// replica, a settled event is neither claimed again nor stored again.
#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_claims_each_event_for_one_replica() {
    use bearerd::store::OutboxEntry;
    let Some(db) = TestDb::create("outbox").await else {
        return;
    };
    let (a, b) = (db.store(None).await, db.store(None).await);
    let now = bearerd::notify::unix_ms(SystemTime::now());
    let entry = |id: &str| OutboxEntry {
        id: id.to_owned(),
        body: format!("{{\"id\":\"{id}\"}}"),
        created_at: now,
        attempts: 0,
        next_at: now,
        lease_until: None,
        settled_at: None,
    };
    a.outbox_put(&entry("evt_1")).await.unwrap();
    b.outbox_put(&entry("evt_1")).await.unwrap();
    a.outbox_put(&entry("evt_2")).await.unwrap();
    let (first, second) = tokio::join!(a.outbox_claim(now, 10), b.outbox_claim(now, 10));
    let (first, second) = (first.unwrap(), second.unwrap());
    let mut ids: Vec<String> = first.iter().chain(&second).map(|e| e.id.clone()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["evt_1", "evt_2"],
        "each event claimed once, the duplicate put ignored"
    );
    // Leased: not claimable again until the lease ends.
    assert!(a.outbox_claim(now, 10).await.unwrap().is_empty());
    // evt_1 delivered, evt_2 rescheduled.
    let mut settled = entry("evt_1");
    settled.settled_at = Some(now);
    settled.attempts = 1;
    a.outbox_update(&settled).await.unwrap();
    let mut retry = entry("evt_2");
    retry.attempts = 1;
    retry.next_at = now + 1_000;
    a.outbox_update(&retry).await.unwrap();
    assert!(a.outbox_claim(now, 10).await.unwrap().is_empty());
    let later = b.outbox_claim(now + 1_000, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].id.as_str(), later[0].attempts), ("evt_2", 1));
    // A replica that noticed the delivered change late does not store it again.
    b.outbox_put(&entry("evt_1")).await.unwrap();
    assert!(b.outbox_claim(now + 30_000, 10).await.unwrap().is_empty());
}
