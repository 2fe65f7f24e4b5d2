//! A postgres database of a bench's own: created from `BEARERD_TEST_DATABASE_URL` (default
//! the local `postgres://postgres@127.0.0.1:5432/test`) and dropped after, so a bench never
//! touches the tables, locks or notification channel of the tests. Without a reachable
//! database a bench says SKIPPED and exits 0.

use std::sync::Arc;

use bearerd::secret::SecretString;
use bearerd::store::postgres::{PgOptions, PgStore};

const DEFAULT_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A fresh database named after `bench`; `None` (after a loud SKIPPED) if none can be made.
    pub async fn create(bench: &str) -> Option<TestDb> {
        let admin_url =
            std::env::var("BEARERD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE.into());
        let name = format!(
            "bearerd_bench_{bench}_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        if let Err(e) = sql(&admin_url, &format!("CREATE DATABASE {name}")).await {
            eprintln!("\n!!!!!!!!!! SKIPPED {bench}: no database at {admin_url}: {e}");
            eprintln!(
                "!!!!!!!!!! set BEARERD_TEST_DATABASE_URL to a postgres the bench may create databases on\n"
            );
            return None;
        }
        let mut url = url::Url::parse(&admin_url).ok()?;
        url.set_path(&format!("/{name}"));
        Some(TestDb {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    /// A store on this database, opened as bearerd opens it (no key).
    pub async fn store(&self) -> Arc<PgStore> {
        PgStore::connect(PgOptions {
            url: SecretString::new(self.url.clone()),
            sealer: None,
            names: Vec::new(),
            metrics: None,
        })
        .await
        .expect("the bench database opens as a store")
    }

    /// Runs `statement` on this database.
    pub async fn execute(&self, statement: &str) {
        sql(&self.url, statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    pub async fn drop_it(self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = sql(&self.admin_url, &drop).await {
            eprintln!("could not drop database {}: {e}", self.name);
        }
    }
}

async fn sql(url: &str, statement: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let result = client.batch_execute(statement).await;
    drop(client);
    let _ = task.await;
    result
}
