//! One request's exchange with the upstream on the fast path: send the head and body on a
//! pooled connection (retrying once on a new one when a reused connection turns out closed,
//! for idempotent requests) under the shared 401-and-replay rule ([`replay`]), and relay the
//! answer. An upstream connection goes back to the pool only when its answer ended for
//! certain ([`response::Head::reusable`] and nothing read past the end).

use std::time::Duration;

use bytes::Buf;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pool::{Pool, Upstream};
use super::request::Request;
use super::response::{self, Head};
use super::{MAX_RESPONSE_HEAD, READ_CHUNK, Scratch, arm, expired, relay, write_problem};
use crate::metrics::Source;
use crate::proxy::limit::Limit;
use crate::proxy::problem::ProxyError;
use crate::proxy::{Proxy, replay, signals};
use crate::token::Token;

/// Answers one request; false when the app connection must close. Also returns when it
/// finished (the clock is read once for the metrics and the idle deadline both).
pub(super) async fn answer(
    app: &mut TcpStream,
    proxy: &Proxy,
    pool: &Pool,
    scratch: &mut Scratch,
    body: &[u8],
    tenant: Option<&[u8]>,
    request: &Request,
) -> (bool, Instant) {
    let started = Instant::now();
    scratch.started = started;
    let exchanged = exchange(app, proxy, pool, scratch, body, tenant, request).await;
    let (status, keep, source) = match exchanged {
        Ok((status, keep)) => (status, keep, Source::Upstream),
        Err(error) => {
            error.log(&proxy.connection.name);
            let status = write_problem(proxy, &error, request.close, &mut scratch.out);
            let written = app.write_all(&scratch.out).await.is_ok();
            (status, written, Source::Bearerd)
        }
    };
    let finished = Instant::now();
    proxy
        .connection
        .metrics
        .request(status, source, finished.saturating_duration_since(started));
    (keep, finished)
}

/// Forwards the request ([`replay::forward`]: once more after a 401 on the current token)
/// and passes the answer to the app. `Err` only before anything was written to the app.
async fn exchange(
    app: &mut TcpStream,
    proxy: &Proxy,
    pool: &Pool,
    scratch: &mut Scratch,
    body: &[u8],
    tenant: Option<&[u8]>,
    request: &Request,
) -> Result<(StatusCode, bool), ProxyError> {
    let granted = proxy.route(tenant)?;
    let mut outgoing = Outgoing {
        proxy,
        limit: proxy.limit_for(&granted),
        pool,
        scratch: &mut *scratch,
        body,
        request,
    };
    let (mut upstream, head) = replay::forward(proxy, &granted, &mut outgoing).await?;
    let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let close = request.close || head.framing == response::Framing::UntilClose;
    if close {
        scratch.out.extend_from_slice(b"Connection: close\r\n");
    }
    scratch.out.extend_from_slice(b"\r\n");
    match relay::forward(&mut upstream, app, &head, &mut scratch.out).await {
        Ok(relay::Done { reusable }) => {
            if reusable && head.reusable {
                pool.checkin(upstream, scratch.started);
            }
            Ok((status, !close))
        }
        Err(error) => {
            tracing::debug!(connection = %proxy.connection.name, %error, "answer cut short");
            Ok((status, false))
        }
    }
}

/// The fast path as a [`replay::Transport`]: the request's prepared head and its whole body
/// (the fast path only takes requests whose body it holds), sent on a pooled connection.
struct Outgoing<'a> {
    proxy: &'a Proxy,
    limit: Limit<'a>,
    pool: &'a Pool,
    scratch: &'a mut Scratch,
    body: &'a [u8],
    request: &'a Request,
}

impl replay::Transport for Outgoing<'_> {
    type Answer = (Upstream, Head);

    async fn send(&mut self, token: &Token) -> Result<replay::Sent<Self::Answer>, ProxyError> {
        let out = &mut self.scratch.out;
        out.clear();
        self.scratch.head.write_token(token, out);
        out.extend_from_slice(self.body);
        let (mut upstream, head) = send(
            self.proxy,
            self.limit,
            self.pool,
            self.scratch,
            self.request,
        )
        .await?;
        let rejected = rejected(self.proxy, &mut upstream, &head).await?;
        Ok(replay::Sent {
            rejected,
            answer: (upstream, head),
        })
    }

    fn replayable(&self) -> bool {
        true
    }

    async fn discard(&mut self, (upstream, head): Self::Answer) {
        discard(self.pool, upstream, &head, self.scratch.started).await;
    }
}

/// The upstream rejected the token: a 401, or (cloudbeds preset) a small HTTP 200 JSON
/// auth-failure body, read whole here so it can be checked.
async fn rejected(proxy: &Proxy, upstream: &mut Upstream, head: &Head) -> Result<bool, ProxyError> {
    if head.status == StatusCode::UNAUTHORIZED.as_u16() {
        return Ok(true);
    }
    if !(proxy.provider_signals && head.inspect) {
        return Ok(false);
    }
    let response::Framing::Length(length) = head.framing else {
        return Ok(false);
    };
    let end = head.head_len + usize::try_from(length).unwrap_or(usize::MAX);
    relay::fill(upstream, end)
        .await
        .map_err(|e| ProxyError::Unreachable(format!("reading the upstream answer: {e}")))?;
    Ok(signals::is_cloudbeds_auth_failure(
        &upstream.buf[head.head_len..end],
    ))
}

/// Reads and drops a rejected answer's body so the connection can be reused; a long or
/// open-ended body closes the connection instead.
async fn discard(pool: &Pool, mut upstream: Upstream, head: &Head, now: Instant) {
    let end = match head.framing {
        response::Framing::Empty => head.head_len,
        response::Framing::Length(n) if n <= signals::MAX_INSPECTED as u64 => {
            head.head_len + n as usize
        }
        _ => return,
    };
    let filled = tokio::time::timeout(Duration::from_secs(1), relay::fill(&mut upstream, end));
    if matches!(filled.await, Ok(Ok(()))) && upstream.buf.len() == end && head.reusable {
        pool.checkin(upstream, now);
    }
}

/// Sends `scratch.out` and reads the answer head (its app version into `scratch.out`),
/// within the connection's timeout. A pooled connection that turns out closed before any
/// answer is retried once on a new one, for idempotent requests.
async fn send(
    proxy: &Proxy,
    limit: Limit<'_>,
    pool: &Pool,
    scratch: &mut Scratch,
    request: &Request,
) -> Result<(Upstream, Head), ProxyError> {
    // The turn under the rate limit comes first; the upstream's timeout counts from the send.
    proxy.admit(limit).await?;
    let deadline = Instant::now() + proxy.timeout;
    let out = &mut scratch.out;
    let attempts = async {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut upstream = pool
                .checkout(deadline - proxy.timeout)
                .await
                .map_err(|e| ProxyError::Unreachable(format!("tcp connect error: {e}")))?;
            match round_trip(&mut upstream, out, request.head_method).await {
                Ok(head) => {
                    proxy.throttled(limit, head.status, head.retry_after);
                    return Ok((upstream, head));
                }
                Err(Failure::Stale(_)) if upstream.reused && attempt == 1 && request.idempotent => {
                    continue;
                }
                Err(failure) => return Err(ProxyError::Unreachable(failure.to_string())),
            }
        }
    };
    tokio::pin!(attempts);
    arm(&mut scratch.timer, deadline);
    tokio::select! {
        biased;
        result = &mut attempts => result,
        () = expired(&mut scratch.timer, deadline) => Err(ProxyError::Timeout(proxy.timeout)),
    }
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Closed or reset before any answer byte: a pooled connection may simply have gone stale.
    #[error("upstream closed the connection before answering: {0}")]
    Stale(std::io::Error),
    #[error("reading the upstream answer: {0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Response(#[from] response::ResponseError),
    #[error("upstream answer head is larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
}

/// Writes the request in `out`, then reads until a final answer head, leaving the app's
/// version of it in `out`.
async fn round_trip(
    upstream: &mut Upstream,
    out: &mut Vec<u8>,
    head_method: bool,
) -> Result<Head, Failure> {
    upstream
        .stream
        .write_all(out)
        .await
        .map_err(Failure::Stale)?;
    let mut received = false;
    loop {
        if !upstream.buf.is_empty() {
            out.clear();
            match response::parse(&upstream.buf, head_method, out)? {
                response::Parsed::Final(head) => return Ok(head),
                response::Parsed::Interim(n) => {
                    upstream.buf.advance(n);
                    continue;
                }
                response::Parsed::Partial if upstream.buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(Failure::HeadTooLarge);
                }
                response::Parsed::Partial => {}
            }
        }
        upstream.buf.reserve(READ_CHUNK);
        match upstream.stream.read_buf(&mut upstream.buf).await {
            Ok(0) if !received => {
                return Err(Failure::Stale(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => received = true,
            Err(e) if !received => return Err(Failure::Stale(e)),
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}
