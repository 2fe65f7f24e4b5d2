//! The upstream rate limit on the request path, for both transports: every request that goes
//! upstream (a replay after a 401 too) first takes its turn ([`Proxy::admit`]), and every
//! upstream 429 pauses the connection ([`Proxy::throttled`]). The limiter itself is
//! [`crate::ratelimit`].

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Proxy;
use super::problem::ProxyError;
use super::route::Granted;
use crate::ratelimit::{Limiter, parse_retry_after};

/// How long an upstream 429 without a usable `Retry-After` pauses the connection.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// The wait a 429 answer's `Retry-After` field asks for (only a 429's is read).
pub(crate) fn retry_after(status: u16, value: Option<&[u8]>) -> Option<Duration> {
    if status != 429 {
        return None;
    }
    value.and_then(|value| parse_retry_after(value, SystemTime::now()))
}

/// The rate limit a request is under: its tenant's own with a budget per tenant, else the
/// connection's (or none).
#[derive(Clone, Copy)]
pub(crate) struct Limit<'a>(Option<&'a Limiter>);

impl Proxy {
    /// The limit for a request that `granted` serves.
    pub(crate) fn limit_for<'a>(&'a self, granted: &'a Granted<'_>) -> Limit<'a> {
        let own = granted.connection().limiter().map(|l| &**l);
        Limit(own.or(self.limiter.as_deref()))
    }

    /// Waits for this request's turn under the connection's rate limit; `Err` (429) when it
    /// would wait longer than `max_wait`, or at once with `over = "reject"`.
    pub(crate) async fn admit(&self, limit: Limit<'_>) -> Result<(), ProxyError> {
        let Some(limiter) = limit.0 else {
            return Ok(());
        };
        let metrics = &self.connection.metrics;
        match limiter.acquire().await {
            Ok(waited) => {
                metrics.rate_passed(waited);
                Ok(())
            }
            Err(rejected) => {
                metrics.rate_rejected();
                Err(ProxyError::RateLimited(rejected.retry_after))
            }
        }
    }

    /// Notes an upstream answer's status: a 429 is counted and pauses the connection for its
    /// `Retry-After` (parsed with [`retry_after`]; capped by the limiter).
    pub(crate) fn throttled(&self, limit: Limit<'_>, status: u16, retry_after: Option<Duration>) {
        if status != 429 {
            return;
        }
        self.connection.metrics.throttled.inc();
        let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
        tracing::info!(
            connection = %self.connection.name,
            pause_s = pause.as_secs_f64(),
            "upstream answered 429: pausing this connection's requests"
        );
        if let Some(limiter) = limit.0 {
            limiter.pause(Instant::now(), pause);
        }
    }
}
