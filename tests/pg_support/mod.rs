//! Helpers for the postgres store tests: a fresh database per test (created from
//! `BEARERD_TEST_DATABASE_URL`, dropped at the end), raw SQL, seeding, and configs for
//! bearerd processes on that database.
//!
//! A database per test (rather than a schema) isolates everything the store touches:
//! tables, the migration advisory lock and the `bearerd_tokens` notification channel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod flaky;

use std::sync::Arc;
use std::time::Duration;

use bearerd::secret::SecretString;
use bearerd::store::postgres::{PgOptions, PgStore};
use bearerd::store::seal::{Sealer, parse_key};
use tokio_postgres::NoTls;

use crate::support::{Daemon, TokenServer, Upstream, free_port};

/// Two valid `store.key`s.
pub const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// A database of its own for one test; dropped (sessions and all) when this is.
pub struct TestDb {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// `None` (after a loud note on stderr) when no test database is configured.
    pub async fn create(tag: &str) -> Option<TestDb> {
        let Ok(admin_url) = std::env::var("BEARERD_TEST_DATABASE_URL") else {
            eprintln!("SKIPPED: BEARERD_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = format!(
            "bearerd_test_{tag}_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        sql(&admin_url, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&admin_url).expect("BEARERD_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Some(TestDb {
            url: url.to_string(),
            name,
            admin_url,
        })
    }

    /// The URL with `application_name=NAME`, to find a process's sessions.
    pub fn url_named(&self, application: &str) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}application_name={application}", self.url)
    }

    /// The first column of every row of `query` as text.
    pub async fn column(&self, query: &str) -> Vec<Option<String>> {
        rows(&self.url, query).await
    }

    pub async fn execute(&self, query: &str) {
        sql(&self.url, query).await;
    }

    /// `(access_token, refresh_token)` as stored for `name`.
    pub async fn raw_tokens(&self, name: &str) -> (Option<String>, Option<String>) {
        let (client, _task) = connect(&self.url).await;
        let row = client
            .query_one(
                "SELECT access_token, refresh_token FROM bearerd_tokens WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// The whole stored row of `name` as text, for before/after comparisons.
    pub async fn raw_row(&self, name: &str) -> String {
        let query = format!("SELECT t::text FROM bearerd_tokens t WHERE name = '{name}'");
        format!("{:?}", self.column(&query).await)
    }

    /// A store on this database for connection `hotel`, as a daemon opens it.
    pub async fn store(&self, key: Option<&str>) -> Arc<PgStore> {
        self.store_for(key, &["hotel"]).await
    }

    pub async fn store_for(&self, key: Option<&str>, names: &[&str]) -> Arc<PgStore> {
        PgStore::connect(self.options(key, names))
            .await
            .expect("store opens")
    }

    pub fn options(&self, key: Option<&str>, names: &[&str]) -> PgOptions {
        PgOptions {
            url: SecretString::new(self.url.clone()),
            sealer: key.map(|k| Arc::new(Sealer::new(&parse_key(k).unwrap()))),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            metrics: None,
        }
    }

    /// Stores `refresh_token` for `name`, as `bearerd import` does.
    pub async fn seed(&self, name: &str, refresh_token: &str, key: Option<&str>) {
        let store = self.store(key).await;
        bearerd::store::import(
            store.as_ref(),
            name,
            SecretString::new(refresh_token.to_owned()),
            true,
        )
        .await
        .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own: this may run inside (or after) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(sql(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ));
        });
        let _ = dropped.join();
    }
}

async fn connect(url: &str) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, task)
}

pub async fn sql(url: &str, query: &str) {
    let (client, _task) = connect(url).await;
    client
        .batch_execute(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
}

async fn rows(url: &str, query: &str) -> Vec<Option<String>> {
    let (client, _task) = connect(url).await;
    let rows = client
        .query(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    rows.iter().map(|r| r.get(0)).collect()
}

/// One bearerd process's config file: connection `hotel` on the postgres store.
pub struct Replica {
    pub config: String,
    pub proxy: String,
    pub admin: String,
    _dir: crate::support::TempDir,
}

impl Replica {
    pub fn new(tokens: &TokenServer, upstream: &Upstream, db_url: &str, store_extra: &str) -> Self {
        let (admin, proxy) = (free_port(), free_port());
        let dir = crate::support::TempDir::new("pg-replica");
        let text = format!(
            r#"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[store]
kind = "postgres"
url = "{db_url}"
{store_extra}
[[connection]]
name = "hotel"
provider = "oauth2"
listen = "127.0.0.1:{proxy}"
upstream = "{upstream}"
token_url = "{token_url}"
authorize_url = "{base}/authorize"
client_id = "{id}"
client_secret = "{secret}"
"#,
            upstream = upstream.url(),
            token_url = tokens.token_url(),
            base = tokens.base_url(),
            id = tokens.client_id(),
            secret = tokens.client_secret(),
        );
        let config = dir.file("bearerd.toml", &text).display().to_string();
        Replica {
            config,
            proxy: format!("http://127.0.0.1:{proxy}"),
            admin: format!("http://127.0.0.1:{admin}"),
            _dir: dir,
        }
    }

    pub fn start(&self) -> Daemon {
        Daemon::spawn(
            &["run", "--config", &self.config],
            &[("BEARERD_LOG", "warn,bearerd::store=info")],
        )
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn ready(&self) {
        let url = format!("{}/readyz", self.admin);
        crate::support::eventually(Duration::from_secs(20), "bearerd ready", || async {
            let r = crate::support::get(&url, None).await.ok()?;
            (r.status == http::StatusCode::OK).then_some(())
        })
        .await;
    }

    /// `GET /connections/hotel` as JSON, if the daemon answers.
    pub async fn connection(&self) -> Option<serde_json::Value> {
        let url = format!("{}/connections/hotel", self.admin);
        Some(crate::support::get(&url, None).await.ok()?.json())
    }

    pub async fn generation(&self) -> u64 {
        self.connection()
            .await
            .and_then(|c| c["generation"].as_u64())
            .unwrap_or(0)
    }

    /// `POST /connections/hotel/refresh` (answers when the refresh is done).
    pub async fn force_refresh(&self) -> crate::support::TestResponse {
        let request = http::Request::post(format!("{}/connections/hotel/refresh", self.admin))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        crate::support::send(request).await.unwrap()
    }
}

/// `kill -9 PID`.
pub fn kill_9(daemon: &Daemon) {
    let status = std::process::Command::new("kill")
        .args(["-9", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
