//! Scale of an app's tenants (SPEC section 9): memory per idle tenant, loading the tenants
//! at start, what routing adds to a request, and a restart after downtime (every tenant's
//! token due at once) as the provider sees it.
//!
//! `cargo bench --bench tenants` (env: `TENANTS_N`, default 10000; `TENANTS_DUE`, default
//! 2000, tenants whose tokens are due at the restart; `TENANTS_REQUESTS`, default 20000;
//! `TENANTS_STORE`, `file` (default) or `postgres`: a database of the bench's own, made from
//! `BEARERD_TEST_DATABASE_URL` and dropped after, SKIPPED without one)
//!
//! 1. **Memory**: bearerd starts with the app and no tenants; then N records are written
//!    to its store (as installs on other replicas would) and its watcher loads them all;
//!    the growth of resident memory over N is the cost of an idle tenant.
//! 2. **Start**: a new bearerd on that store; time until all N tenants serve their stored
//!    tokens (no token request).
//! 3. **Routing**: the same requests, one at a time on one keep-alive connection, through a
//!    single-grant connection and through the app (a tenant header among N): the difference
//!    of the medians; and the routing lookup alone.
//! 4. **Due together**: `TENANTS_DUE` tenants whose access tokens expired while bearerd was
//!    down: how many token requests the provider saw at once (`token_concurrency`, 4) and how
//!    long until all are connected.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use bearerd::app::App;
use bearerd::config::Config;
use bearerd::store::TokenStore;
use bearerd::store::file::FileStore;
use bearerd::tenants::Tenants;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use support::TokenEndpoint;
use support::db::TestDb;
use support::records;
use tokio::net::TcpStream;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Where the tenants' records live: a directory, or a database of the bench's own.
enum Store {
    File(std::path::PathBuf),
    Postgres(TestDb),
}

impl Store {
    /// `TENANTS_STORE`; `None` when postgres was asked for and there is none (SKIPPED).
    async fn from_env() -> Option<Store> {
        match std::env::var("TENANTS_STORE").as_deref() {
            Ok("postgres") => TestDb::create("tenants").await.map(Store::Postgres),
            Ok("file") | Err(_) => {
                let dir = std::env::temp_dir()
                    .join(format!("bearerd-bench-tenants-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                Some(Store::File(dir))
            }
            Ok(other) => panic!("TENANTS_STORE is `file` or `postgres`, not `{other}`"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Store::File(_) => "file",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The `[store]` table of a config.
    fn toml(&self) -> String {
        match self {
            Store::File(dir) => format!("kind = \"file\"\ndir = \"{}\"", dir.display()),
            Store::Postgres(db) => format!("kind = \"postgres\"\nurl = \"{}\"", db.url),
        }
    }

    /// The store as another process (an install on another replica) writes it.
    async fn open(&self) -> Arc<dyn TokenStore> {
        match self {
            Store::File(dir) => Arc::new(FileStore::open(dir, None).unwrap()),
            Store::Postgres(db) => db.store().await,
        }
    }

    /// Every record gone.
    async fn clear(&self) {
        match self {
            Store::File(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Store::Postgres(db) => db.execute("DELETE FROM bearerd_tokens").await,
        }
    }

    async fn remove(self) {
        match self {
            Store::File(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Store::Postgres(db) => db.drop_it().await,
        }
    }
}

/// The app `hotels`, and (`single`) a single-grant connection to compare routing with.
fn config(
    store: &Store,
    tokens: &TokenEndpoint,
    upstream: std::net::SocketAddr,
    single: bool,
) -> Config {
    let mut text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"
[store]
{store}
[[connection]]
name = "hotels"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
grant = "authorization_code"
token_url = "{token_url}"
authorize_url = "http://127.0.0.1:1/authorize"
client_id = "bench"
client_secret = "bench-secret"
tenants = "header:X-Tenant"
"#,
        store = store.toml(),
        token_url = tokens.url(),
    );
    if single {
        text.push_str(&format!(
            r#"
[[connection]]
name = "single"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "bench"
client_secret = "bench-secret"
"#,
            token_url = tokens.url(),
        ));
    }
    Config::from_toml_str(&text).expect("bench config")
}

/// Writes `ids` as tenant records: a valid access token (`expires` from now, or already
/// expired) and a refresh token.
async fn write_records(
    store: &Arc<dyn TokenStore>,
    ids: std::ops::Range<usize>,
    expires: Option<Duration>,
) {
    let now = SystemTime::now();
    let expires_at = match expires {
        Some(left) => now + left,
        None => now - Duration::from_secs(60),
    };
    let records = ids
        .map(|i| {
            records::connected(
                format!("hotels/t{i}"),
                "tok-1".into(),
                format!("rt-{i}"),
                expires_at,
            )
        })
        .collect();
    records::save_all(store, records).await;
}

/// Waits until `want` tenants are connected; returns how long that took.
async fn until_connected(tenants: &Tenants, want: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let connected = tenants.counts().get("connected").copied().unwrap_or(0);
        if connected >= want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {connected} of {want} tenants connected after {limit:?}: {:?}",
            tenants.counts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Median latency of `count` sequential GETs on one keep-alive connection to `addr`.
async fn median_latency(
    addr: std::net::SocketAddr,
    tenant: impl Fn(usize) -> Option<String>,
    count: usize,
) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let mut request = Request::get("/v1/x").header("host", "bench");
        if let Some(t) = tenant(i) {
            request = request.header("x-tenant", t);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let started = Instant::now();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.into_body().collect().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    // As `bearerd run` builds its runtime for the refreshers: 16 blocking threads for store
    // I/O (src/main.rs).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let n = support::env_or("TENANTS_N", 10_000);
    let due = support::env_or("TENANTS_DUE", 2_000);
    let requests = support::env_or("TENANTS_REQUESTS", 20_000);
    let tokens = TokenEndpoint::start(Duration::from_millis(50), Some(3600)).await;
    let upstream = support::upstream(Arc::new(AtomicU64::new(0))).await;
    let Some(store) = Store::from_env().await else {
        return;
    };

    // 1. Memory per idle tenant.
    let app = App::start(config(&store, &tokens, upstream, true))
        .await
        .unwrap();
    let tenants = app.tenants("hotels").unwrap();
    // The writer (another process in production) is opened before the baseline.
    let writer = store.open().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib();
    let written = Instant::now();
    write_records(&writer, 0..n, Some(Duration::from_secs(3600))).await;
    let wrote = written.elapsed();
    let loaded = until_connected(&tenants, n, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss_kib().saturating_sub(base);
    let token_requests = tokens.requests();
    println!("tenants: {n} ({} store)", store.kind());
    println!(
        "memory: resident +{grown} KiB for {n} idle tenants = {:.2} KiB per tenant (target <= 4)",
        grown as f64 / n as f64
    );
    println!(
        "watcher: {n} records written in {wrote:?} were all serving {loaded:?} after the last write; token requests: {} (single-grant connection: 1)",
        token_requests
    );

    // 3. Routing: the same GET through the single-grant connection and through the app.
    let lookups = 1_000_000;
    let keys: Vec<String> = (0..1000).map(|i| format!("t{}", (i * 7919) % n)).collect();
    let started = Instant::now();
    for i in 0..lookups {
        let routed = tenants.route(keys[i % keys.len()].as_bytes());
        std::hint::black_box(routed.is_ok());
    }
    let per_lookup = started.elapsed() / lookups as u32;
    let single = app.proxy_addr("single").unwrap();
    let app_addr = app.proxy_addr("hotels").unwrap();
    // Warm both, then alternate rounds so drift hits both alike.
    median_latency(single, |_| None, 2000).await;
    median_latency(app_addr, |i| Some(format!("t{}", i % n)), 2000).await;
    // Four shapes: the single-grant connection without and with the header (the header's
    // own cost), the app with one tenant throughout, and the app spread over all tenants
    // (routing plus touching a different tenant's cell each time).
    let mut p50 = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let round = requests / 5;
    for _ in 0..5 {
        p50[0].push(median_latency(single, |_| None, round).await);
        p50[1].push(median_latency(single, |_| Some("t1".into()), round).await);
        p50[2].push(median_latency(app_addr, |_| Some("t1".into()), round).await);
        let spread = |i: usize| Some(format!("t{}", (i * 31) % n));
        p50[3].push(median_latency(app_addr, spread, round).await);
    }
    let [plain, header, one, spread] = p50.map(|mut rounds| {
        rounds.sort();
        rounds[2]
    });
    println!(
        "routing: lookup alone {per_lookup:?}; request p50: single-grant {plain:?}, with the header {header:?}; app, one tenant {one:?}, spread over {n} {spread:?}: +{:?} over single-grant with the header (target <= 2us)",
        spread.saturating_sub(header)
    );
    app.shutdown().await;

    // 2. A restart loads every tenant.
    let started = Instant::now();
    let app = App::start(config(&store, &tokens, upstream, false))
        .await
        .unwrap();
    let tenants = app.tenants("hotels").unwrap();
    let load = until_connected(&tenants, n, Duration::from_secs(120)).await;
    println!(
        "start: {n} tenants serving {:?} after App::start was called (target < 3 s); token requests since: {}",
        started.elapsed().max(load),
        tokens.requests() - token_requests
    );
    app.shutdown().await;

    // 4. After downtime: `due` tenants' tokens expired.
    store.clear().await;
    let writer = store.open().await;
    write_records(&writer, 0..due, None).await;
    let before = tokens.requests();
    let started = Instant::now();
    let app = App::start(config(&store, &tokens, upstream, false))
        .await
        .unwrap();
    let tenants = app.tenants("hotels").unwrap();
    let all = until_connected(&tenants, due, Duration::from_secs(600)).await;
    println!(
        "due together: {due} tenants refreshed {} times, at most {} token requests at once (token_concurrency 4; provider latency 50 ms); all connected {:?} after start",
        tokens.requests() - before,
        tokens.max_in_flight(),
        started.elapsed().max(all)
    );
    app.shutdown().await;
    store.remove().await;
}
