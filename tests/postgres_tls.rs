//! `sslmode=require` in `store.url`: bearerd talks to PostgreSQL over rustls and verifies
//! the server's certificate (system roots, or `SSL_CERT_FILE`); without it, plain TCP.
//!
//! Uses the test server's own certificate (Debian's snakeoil, `CN=localhost`) as the trust
//! root. Skipped (with a note) without `BEARERD_TEST_DATABASE_URL`, or when the server
//! does not offer TLS with that certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;
mod support;

use std::time::Duration;

use pg_support::{Replica, TestDb};
use support::{Daemon, TokenServer, TokenServerConfig, Upstream, eventually};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Which sessions of `application` use TLS, as the server sees them.
async fn ssl_of(db: &TestDb, application: &str) -> Vec<Option<String>> {
    let query = format!(
        "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = '{application}'"
    );
    db.column(&query).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_require_uses_verified_tls_and_plain_urls_do_not() {
    let Some(db) = TestDb::create("tls").await else {
        return;
    };
    let server_ssl = db.column("SHOW ssl").await;
    if server_ssl != vec![Some("on".to_owned())] || !std::path::Path::new(SNAKEOIL).exists() {
        eprintln!("SKIPPED: the test PostgreSQL does not offer TLS with {SNAKEOIL}");
        return;
    }
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    db.seed("hotel", &tokens.seed_grant(), None).await;
    let localhost = |application: &str, tls: &str| {
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_host(Some("localhost")).unwrap();
        url.query_pairs_mut()
            .append_pair("sslmode", tls)
            .append_pair("application_name", application);
        url.to_string()
    };
    // Exactly these roots: SSL_CERT_DIR (often /etc/ssl/certs, which holds the snakeoil
    // certificate too) would add others.
    let no_dir = support::TempDir::new("no-cert-dir");
    let no_dir = no_dir.path().display().to_string();
    let start = |replica: &Replica, cert_file: &str| {
        Daemon::spawn(
            &["run", "--config", &replica.config],
            &[
                ("BEARERD_LOG", "warn"),
                ("SSL_CERT_FILE", cert_file),
                ("SSL_CERT_DIR", &no_dir),
            ],
        )
    };

    // Trusted certificate: ready, and every session of it is TLS.
    let secure = Replica::new(&tokens, &upstream, &localhost("tls-yes", "require"), "");
    let secure_daemon = start(&secure, SNAKEOIL);
    secure.ready().await;
    let sessions = ssl_of(&db, "tls-yes").await;
    assert!(!sessions.is_empty());
    assert!(
        sessions.iter().all(|s| s.as_deref() == Some("true")),
        "{sessions:?}"
    );

    // No sslmode: plain TCP even though the server offers TLS.
    let plain = Replica::new(&tokens, &upstream, &localhost("tls-no", "disable"), "");
    let plain_daemon = start(&plain, SNAKEOIL);
    plain.ready().await;
    let sessions = ssl_of(&db, "tls-no").await;
    assert!(
        sessions.iter().all(|s| s.as_deref() == Some("false")),
        "{sessions:?}"
    );

    // The public roots do not vouch for the snakeoil certificate: refused; bearerd runs,
    // not ready, and says why.
    let public_roots = "/etc/ssl/certs/ca-certificates.crt";
    let untrusted = Replica::new(&tokens, &upstream, &localhost("tls-bad", "require"), "");
    let mut untrusted_daemon = start(&untrusted, public_roots);
    // The refresher's first read of the store fails and says so.
    eventually(
        Duration::from_secs(20),
        "last_error naming the token store",
        || async {
            let state = untrusted.connection().await?;
            let error = state["last_error"].as_str()?.to_owned();
            error.contains("token store").then_some(())
        },
    )
    .await;
    assert!(untrusted_daemon.try_status().is_none(), "bearerd exited");
    assert!(ssl_of(&db, "tls-bad").await.is_empty());

    for daemon in [secure_daemon, plain_daemon, untrusted_daemon] {
        daemon.terminate(Duration::from_secs(5)).await;
    }
}
