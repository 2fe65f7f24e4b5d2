//! The log filter: `BEARERD_LOG` (a `RUST_LOG`-style filter, default `info`) for what an
//! operator asks to see, under a fixed cap on every other crate's events.
//!
//! Dependencies print what they handle at debug and trace: the postgres driver its query
//! parameters (access and refresh tokens, when it saves a record), HTTP crates their headers
//! and frames. So whatever `BEARERD_LOG` asks, only bearerd's own targets go below
//! [`DEPENDENCY_CAP`]; bearerd's own events never carry a secret (tests/no_secrets_in_logs.rs
//! checks that at trace level).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;

/// The most any other crate may log.
pub const DEPENDENCY_CAP: LevelFilter = LevelFilter::INFO;

/// The operator's filter from `spec` (`BEARERD_LOG`); `info` when unset or unparsable.
pub fn operator_filter(spec: Option<&str>) -> EnvFilter {
    spec.and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// The cap: bearerd's targets as the operator asks, everything else at most
/// [`DEPENDENCY_CAP`].
pub fn dependency_cap() -> Targets {
    Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), LevelFilter::TRACE)
        .with_default(DEPENDENCY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn dependencies_are_capped_and_bearerd_is_not() {
        let cap = dependency_cap();
        assert!(cap.would_enable("bearerd::store::postgres", &Level::TRACE));
        assert!(cap.would_enable("tokio_postgres::query", &Level::INFO));
        for target in [
            "tokio_postgres::query",
            "hyper::proto::h1",
            "h2::codec",
            "rustls",
        ] {
            assert!(!cap.would_enable(target, &Level::DEBUG), "{target}");
        }
    }
}
