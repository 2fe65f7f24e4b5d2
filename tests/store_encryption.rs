//! `store.key`: token fields encrypted at rest in both stores, a wrong or missing key
//! stops `bearerd run` (exit 1, naming `store.key`) without touching the record, plaintext
//! records are re-written encrypted, and a malformed key is a config error.
//!
//! The postgres halves need `BEARERD_TEST_DATABASE_URL`; without it they print `SKIPPED`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bearerd::config::{Config, SecretSource, StoreConfig, StoreKind};
use bearerd::secret::SecretString;
use bearerd::store::file::FileStore;
use bearerd::store::seal::{Sealer, parse_key};
use bearerd::store::{Reach, Record, StoreError, TokenStore};
use pg_support::{KEY, OTHER_KEY, Replica, TestDb};
use support::{Daemon, TokenServer, TokenServerConfig, Upstream, temp_store_dir};

fn sealer(key: &str) -> Option<Arc<Sealer>> {
    Some(Arc::new(Sealer::new(&parse_key(key).unwrap())))
}

fn record(generation: u64) -> Record {
    Record {
        connection: "hotel".into(),
        generation,
        access_token: Some(SecretString::new("at_plaintext_access_value")),
        expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
        refresh_token: Some(SecretString::new("rt_plaintext_refresh_value")),
        scope: Some("read".into()),
        state: "connected".into(),
        updated_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        credential: bearerd::store::Credential::Token,
        last_used_at: None,
        covers: Vec::new(),
    }
}

fn file_store(dir: &Path, key: Option<&str>) -> FileStore {
    FileStore::open(dir, None)
        .unwrap()
        .with_sealer(key.and_then(sealer))
}

fn assert_sealed(text: &str) {
    assert!(text.contains("enc:v1:"), "{text}");
    assert!(!text.contains("plaintext_access"), "{text}");
    assert!(!text.contains("plaintext_refresh"), "{text}");
}

/// Runs `bearerd run` on `config` and expects it to stop at once with exit 1 naming
/// `store.key`.
async fn run_fails_naming_store_key(config: &str) {
    let daemon = Daemon::spawn(&["run", "--config", config], &[]);
    let output = daemon.wait(Duration::from_secs(20)).await;
    assert_eq!(output.status.code(), Some(1), "{}", output.stderr);
    assert!(output.stderr.contains("store.key"), "{}", output.stderr);
    assert!(!output.stderr.contains("plaintext"), "{}", output.stderr);
}

fn file_config(tokens: &TokenServer, upstream: &Upstream, dir: &Path, key: Option<&str>) -> String {
    let key = key.map(|k| format!("key = \"{k}\"")).unwrap_or_default();
    let store = format!("[store]\ndir = \"{}\"\n{key}\n", dir.display());
    let text = support::ac_config("hotel", "oauth2", tokens, &upstream.url(), dir, "").replace(
        &format!("[store]\nkind = \"file\"\ndir = \"{}\"\n", dir.display()),
        &store,
    );
    assert!(text.contains(&store));
    let path = dir.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn file_records_are_sealed_and_a_wrong_key_changes_nothing() {
    let dir = temp_store_dir("sealed");
    let store = file_store(&dir, Some(KEY));
    store.save(&record(7)).await.unwrap();
    let path = store.record_path("hotel");
    let before = std::fs::read(&path).unwrap();
    assert_sealed(&String::from_utf8_lossy(&before));
    assert_eq!(store.load("hotel").await.unwrap(), Some(record(7)));

    let wrong = file_store(&dir, Some(OTHER_KEY));
    assert!(matches!(
        wrong.load("hotel").await,
        Err(StoreError::WrongKey { .. })
    ));
    let refused = wrong.save(&record(8)).await;
    assert!(
        matches!(refused, Err(StoreError::WrongKey { .. })),
        "{refused:?}"
    );
    let missing = file_store(&dir, None);
    assert!(matches!(
        missing.load("hotel").await,
        Err(StoreError::KeyMissing { .. })
    ));
    assert!(missing.save(&record(8)).await.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    run_fails_naming_store_key(&file_config(&tokens, &upstream, &dir, Some(OTHER_KEY))).await;
    run_fails_naming_store_key(&file_config(&tokens, &upstream, &dir, None)).await;
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the record was modified"
    );
    assert_eq!(tokens.token_requests(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_plaintext_file_record_is_rewritten_encrypted_at_open() {
    let dir = temp_store_dir("migrate");
    file_store(&dir, None).save(&record(3)).await.unwrap();
    let path = dir.join("hotel.json");
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("plaintext_refresh")
    );
    let config = StoreConfig {
        kind: StoreKind::File { dir: dir.clone() },
        key: Some(SecretSource::Literal(SecretString::new(KEY))),
    };
    let names = ["hotel".to_owned()];
    let store = bearerd::store::open(&config, &names, None, Reach::Required)
        .await
        .unwrap();
    assert_sealed(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(store.load("hotel").await.unwrap(), Some(record(3)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_malformed_key_is_a_config_error_naming_store_key() {
    for (key, what) in [
        ("\"not*base64*at*all\"", "base64"),
        ("\"c2hvcnQ=\"", "32"),
        (
            "{ env = \"BEARERD_TEST_SURELY_UNSET_KEY\" }",
            "BEARERD_TEST_SURELY_UNSET_KEY",
        ),
    ] {
        let text = format!("[store]\nkey = {key}\n");
        let error = Config::from_toml_str(&text).unwrap_err();
        assert!(error.names("store.key"), "{error}");
        assert!(error.to_string().contains(what), "{error}");
        assert!(!error.to_string().contains("c2hvcnQ"), "{error}");
    }
    let good = format!("[store]\nkey = \"{KEY}\"\n");
    assert!(Config::from_toml_str(&good).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_records_are_sealed_and_a_wrong_key_changes_nothing() {
    let Some(db) = TestDb::create("sealed").await else {
        return;
    };
    let store = db.store(Some(KEY)).await;
    let lock = store.lock("hotel", Duration::from_secs(5)).await.unwrap();
    store.save(&record(7)).await.unwrap();
    drop(lock);
    let (access, refresh) = db.raw_tokens("hotel").await;
    assert_sealed(&format!("{access:?} {refresh:?}"));
    assert_sealed(&db.raw_row("hotel").await);
    assert_eq!(store.load("hotel").await.unwrap(), Some(record(7)));
    let before = db.raw_row("hotel").await;

    let wrong =
        bearerd::store::postgres::PgStore::connect(db.options(Some(OTHER_KEY), &["hotel"])).await;
    let error = wrong.err().expect("a wrong key fails at open");
    assert!(matches!(error, StoreError::WrongKey { .. }), "{error}");
    assert!(error.to_string().contains("store.key"), "{error}");
    // Even a store that opened for other connections refuses to overwrite the row.
    let other = db.store_for(Some(OTHER_KEY), &["other"]).await;
    let lock = other.lock("hotel", Duration::from_secs(5)).await.unwrap();
    let refused = other.save(&record(8)).await;
    assert!(
        matches!(refused, Err(StoreError::WrongKey { .. })),
        "{refused:?}"
    );
    drop(lock);

    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let key_line = format!("key = \"{OTHER_KEY}\"");
    run_fails_naming_store_key(&Replica::new(&tokens, &upstream, &db.url, &key_line).config).await;
    run_fails_naming_store_key(&Replica::new(&tokens, &upstream, &db.url, "").config).await;
    assert_eq!(db.raw_row("hotel").await, before, "the row was modified");
    assert_eq!(tokens.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_postgres_record_is_rewritten_encrypted_at_start() {
    let Some(db) = TestDb::create("migrate").await else {
        return;
    };
    let plain = db.store(None).await;
    let lock = plain.lock("hotel", Duration::from_secs(5)).await.unwrap();
    plain.save(&record(3)).await.unwrap();
    drop(lock);
    assert!(db.raw_row("hotel").await.contains("plaintext_refresh"));
    let sealed = db.store(Some(KEY)).await;
    assert_sealed(&db.raw_row("hotel").await);
    assert_eq!(sealed.load("hotel").await.unwrap(), Some(record(3)));
}
