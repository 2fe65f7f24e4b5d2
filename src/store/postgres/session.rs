//! Sessions with PostgreSQL: `store.url` parsed into a client config (with bearerd's
//! defaults), the TLS it asks for, and database errors turned into text that never quotes
//! a row or the URL.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::PoolError;
use tokio_postgres::Config as PgConfig;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::secret::SecretString;
use crate::store::StoreError;

/// The TLS choice the URL asks for: rustls for `sslmode=require`, plain otherwise.
#[derive(Clone)]
pub(super) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

/// Parses `store.url` and picks TLS. The URL may hold a password: errors never quote it.
pub(super) fn client_config(url: &SecretString) -> Result<(PgConfig, Tls), StoreError> {
    let invalid = |reason: &str| StoreError::Database {
        op: "store.url",
        reason: reason.to_owned(),
    };
    let mut config: PgConfig = url.secret().parse().map_err(|_| {
        invalid("not a valid PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DB?OPTIONS)")
    })?;
    if config.get_hosts().is_empty() {
        return Err(invalid("names no host"));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("bearerd");
    }
    config.keepalives_idle(Duration::from_secs(30));
    let tls = match config.get_ssl_mode() {
        SslMode::Require => Tls::Rustls(rustls_connector()?),
        _ => {
            config.ssl_mode(SslMode::Disable);
            Tls::Plain
        }
    };
    Ok((config, tls))
}

/// rustls with the system roots (`SSL_CERT_FILE` adds a private CA), as for upstreams.
fn rustls_connector() -> Result<MakeRustlsConnect, StoreError> {
    let tls_error = |reason: String| StoreError::Database { op: "tls", reason };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(tls_error("no trusted root certificates found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A database error as text: the server's message and SQLSTATE, never its DETAIL (which
/// can quote a row, tokens included).
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn db_error(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| StoreError::Database {
        op,
        reason: describe(&error),
    }
}

pub(super) fn pool_error(error: PoolError, wait: Duration) -> StoreError {
    let reason = match &error {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(_) => format!("no database session within {wait:?}"),
        other => other.to_string(),
    };
    StoreError::Database {
        op: "connect",
        reason,
    }
}
