//! Three bearerd replicas share one app's tenants through the postgres store (SPEC section
//! 9, issue 11): 1,000 tenants, access tokens living a few seconds so that every tenant is
//! refreshed many times during the run, a provider with strict rotation (a refresh token
//! presented twice is a reuse and revokes the tenant's grant), and load on every replica
//! spread over every tenant. Measured:
//!
//! 1. requests answered 200 and failed (target: 0 failed);
//! 2. refresh-token reuse at the provider (target: 0) and grants it revoked, also while
//!    the replicas are stopped one by one (SIGTERM) after the load, as in a rolling restart;
//! 3. per cycle (one generation of a tenant's refresh token), how many refresh requests
//!    presented it (target: at most 1, so one replica per cycle) and which replicas did
//!    the refreshes; the shortest gap between two refreshes of a tenant (an early second
//!    refresh with the new token would show here).
//!
//! The replicas are the built binary as child processes (`support::replica`), each with
//! its own token URL (`/rN/token`) so the provider knows which one refreshed. The provider
//! and the clients run in this process. The records are written to a database of the
//! bench's own (`support::db`, from `BEARERD_TEST_DATABASE_URL`, dropped after; SKIPPED
//! without one) before the replicas start, with the seeded access tokens expiring spread
//! over one lifetime so the refreshes spread too.
//!
//! `cargo bench --bench tenant_replicas`
//! (env: `TR_TENANTS`, default 1000; `TR_SECONDS` of load, default 60; `TR_LIFETIME`,
//! access-token seconds, default 10; `TR_CLIENTS` per replica, default 16; `TR_LATENCY_MS`
//! of the token endpoint, default 20; `TR_EXTRA`, more TOML for the app, e.g.
//! `token_concurrency = 8`)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod load;
mod provider;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bearerd::store::TokenStore;
use provider::Provider;
use support::db::TestDb;
use support::records;
use support::replica::{Replica, admin_and_store, free_port, wait_ready};

const REPLICAS: u8 = 3;

/// What a run is made of.
pub struct Settings {
    pub tenants: usize,
    pub seconds: u64,
    pub lifetime: Duration,
    pub clients: usize,
    pub latency: Duration,
}

fn main() {
    let settings = Settings {
        tenants: support::env_or("TR_TENANTS", 1000usize),
        seconds: support::env_or("TR_SECONDS", 60),
        lifetime: Duration::from_secs(support::env_or("TR_LIFETIME", 10).max(2)),
        clients: support::env_or("TR_CLIENTS", 16usize),
        latency: Duration::from_millis(support::env_or("TR_LATENCY_MS", 20)),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let Some(db) = TestDb::create("tr").await else {
            return;
        };
        run(&db, &settings).await;
        db.drop_it().await;
    });
}

/// A replica and where it listens.
struct Running {
    process: Replica,
    admin: String,
    proxy: String,
}

fn spawn(index: u8, db: &TestDb, provider: &Provider) -> Running {
    let (admin, proxy) = (free_port(), free_port());
    let config = format!(
        r#"{header}
[[connection]]
name = "hotels"
provider = "oauth2"
listen = "127.0.0.1:{proxy}"
upstream = "{upstream}"
grant = "authorization_code"
token_url = "{token_url}"
authorize_url = "{upstream}/authorize"
client_id = "bench"
client_secret = "bench-secret"
tenants = "header:X-Tenant"
{extra}
"#,
        header = admin_and_store(admin, &db.url),
        upstream = provider.url(),
        token_url = provider.token_url(index),
        extra = std::env::var("TR_EXTRA").unwrap_or_default(),
    );
    Running {
        process: Replica::spawn(index, "tr-replica", &config),
        admin: format!("http://127.0.0.1:{admin}"),
        proxy: format!("http://127.0.0.1:{proxy}"),
    }
}

/// The app's tenant counts by state, as a replica's admin API gives them.
async fn connected(admin: &str) -> u64 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let Ok(answer) = client
        .get(format!("{admin}/connections").parse().unwrap())
        .await
    else {
        return 0;
    };
    let body = http_body_util::BodyExt::collect(answer.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == "hotels"))
        .and_then(|c| c["tenants"]["connected"].as_u64())
        .unwrap_or(0)
}

async fn run(db: &TestDb, settings: &Settings) {
    let provider = Provider::start(settings.latency, settings.lifetime).await;
    let n = settings.tenants;
    // Seeded access tokens expire over one lifetime, starting once the replicas have had
    // time to start, so the refreshes spread from the first cycle on.
    let (now, wall) = (Instant::now(), SystemTime::now());
    let first = Duration::from_secs(10);
    let mut seeded = Vec::with_capacity(n);
    for t in 0..n {
        let left = first + settings.lifetime.mul_f64(t as f64 / n as f64);
        provider.seed(t, now + left);
        let (access, refresh) = provider::seed_tokens(t);
        seeded.push(records::connected(
            format!("hotels/t{t}"),
            access,
            refresh,
            wall + left,
        ));
    }
    let store: Arc<dyn TokenStore> = db.store().await;
    records::save_all(&store, seeded).await;
    drop(store);

    let replicas: Vec<Running> = (0..REPLICAS).map(|i| spawn(i, db, &provider)).collect();
    for r in &replicas {
        wait_ready(&r.process, &r.admin, Duration::from_secs(30)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for r in &replicas {
        while connected(&r.admin).await < n as u64 {
            assert!(
                Instant::now() < deadline,
                "replica {} does not serve all {n} tenants after 30 s:\n{}",
                r.process.index,
                r.process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "tenant_replicas: {REPLICAS} replicas on one postgres store, {n} tenants, access tokens living {:?}, strict rotation, token endpoint latency {:?}; {} clients per replica for {} s",
        settings.lifetime, settings.latency, settings.clients, settings.seconds
    );
    println!(
        "ready: all {REPLICAS} replicas serving all {n} tenants {:.2} s after the records were written",
        now.elapsed().as_secs_f64()
    );

    let counts: Vec<Arc<load::Counts>> = (0..REPLICAS).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (r, counts) in replicas.iter().zip(&counts) {
        tasks.extend(load::start(
            &r.proxy,
            r.process.index,
            settings.clients,
            n,
            counts,
            &stop,
        ));
    }
    tokio::time::sleep(Duration::from_secs(settings.seconds)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    let end = Instant::now();
    for mut r in replicas {
        r.process.stop();
        let warnings = r.process.lines_with(" WARN ");
        let errors = r.process.lines_with(" ERROR ");
        println!(
            "replica {}: {} WARN and {} ERROR log lines{}",
            r.process.index,
            warnings.len(),
            errors.len(),
            warnings
                .iter()
                .chain(&errors)
                .next()
                .map_or(String::new(), |(_, line)| format!("; the first: {line}"))
        );
    }
    report::print(&provider, &counts, t0, end, settings);
}
