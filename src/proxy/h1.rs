//! The HTTP/1.1 fast path for plain-`http` upstreams: one task per app connection reads a
//! request head, writes the upstream head (token set) and the buffered body to a pooled
//! upstream connection, and passes the answer back, with no per-request header map, URI,
//! hyper dispatch or task hand-off. Same rules as [`Proxy::handle`]: 401 (or a provider
//! signal) on the current token -> refresh and one replay; errors -> problem+json; the same
//! metrics.
//!
//! Why by hand: hyper and hyper-util cost ~36,000 instructions per proxied request here,
//! about four times nginx's user-space work, and no crate offers an HTTP/1.1 forwarding
//! path that passes heads and bodies through. This one serves the common shape only
//! (HTTP/1.1, origin-form, no body or a Content-Length body up to `replay_body_limit`);
//! anything else is handed to hyper ([`End::HandOff`]) on the same connection, so every
//! unusual case keeps hyper's tested behaviour.

mod chunked;
mod fields;
mod pool;
mod relay;
/// Public for `benches/hot_path.rs`.
pub mod request;
/// Public for `benches/hot_path.rs`.
pub mod response;

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::problem::{ProblemContext, ProxyError};
use super::{Proxy, signals};
use crate::serve::stopped;
use pool::Upstream;
use request::{BodyLimit, Parsed, Request, Rewrite, UpstreamHead};
use response::Head;

pub use pool::Pool;

/// A request head larger than this goes to hyper (which answers 431 past its own limit).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// An answer head larger than this is a 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// How an app connection left the fast path.
pub enum End {
    Close,
    /// Hyper serves the rest of the connection, starting with these bytes already read.
    HandOff(BytesMut),
}

/// Buffers and the timer reused for every request on one app connection.
struct Scratch {
    head: UpstreamHead,
    /// The upstream request, then the app's answer head.
    out: Vec<u8>,
    /// When the current request arrived.
    started: Instant,
    /// Wakes the connection no later than the current request's deadline. It stays in
    /// Tokio's timer wheel across requests and is re-armed only when it fires early (its
    /// deadline was an earlier request's), so a request costs no timer registration.
    timer: Pin<Box<Sleep>>,
}

/// Serves requests from `app` until it closes, asks to close, the fast path hands it over,
/// or `shutdown` turns true while it is idle.
pub async fn serve(
    app: &mut TcpStream,
    proxy: &Proxy,
    pool: &Pool,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let started = Instant::now();
    let mut scratch = Scratch {
        head: UpstreamHead::default(),
        out: Vec::new(),
        started,
        timer: Box::pin(tokio::time::sleep_until(started + proxy.timeout)),
    };
    let limit = BodyLimit(
        proxy
            .replay_body_limit
            .min(proxy.max_body.unwrap_or(u64::MAX)),
    );
    let Some(host) = proxy.target.host() else {
        return End::HandOff(input);
    };
    let rewrite = Rewrite {
        base_path: proxy.target.base_path(),
        host: host.as_bytes(),
    };
    loop {
        let request = loop {
            if !input.is_empty() {
                match request::parse(&input, limit, &rewrite, &mut scratch.head) {
                    Parsed::Fast(request) => break request,
                    Parsed::Reject(reason) => {
                        reject(app, proxy, reason).await;
                        return End::Close;
                    }
                    Parsed::HandOff => return End::HandOff(input),
                    Parsed::Partial if input.len() >= MAX_REQUEST_HEAD => {
                        return End::HandOff(input);
                    }
                    Parsed::Partial => {}
                }
            }
            input.reserve(READ_CHUNK);
            let read = if input.is_empty() {
                tokio::select! {
                    read = app.read_buf(&mut input) => read,
                    _ = stopped(shutdown) => return End::Close,
                }
            } else {
                app.read_buf(&mut input).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return End::Close;
            }
        };
        let total = request.head_len + request.body_len;
        while input.len() < total {
            input.reserve(total - input.len());
            if !matches!(app.read_buf(&mut input).await, Ok(n) if n > 0) {
                return End::Close;
            }
        }
        let body = &input[request.head_len..total];
        let keep = answer(app, proxy, pool, &mut scratch, body, &request).await;
        input.advance(total);
        if !keep || request.close || *shutdown.borrow() {
            return End::Close;
        }
    }
}

/// Answers a request the fast path refuses with a 400 (nothing goes upstream).
async fn reject(app: &mut TcpStream, proxy: &Proxy, reason: &'static str) {
    let mut out = Vec::new();
    let status = write_problem(proxy, &ProxyError::BadRequest(reason), true, &mut out);
    let _ = app.write_all(&out).await;
    proxy.connection.metrics.request(status, Duration::ZERO);
}

/// The problem+json answer for `error`, as HTTP/1.1 bytes in `out`; returns its status.
fn write_problem(proxy: &Proxy, error: &ProxyError, close: bool, out: &mut Vec<u8>) -> StatusCode {
    let context = ProblemContext {
        connection: &proxy.connection.name,
        connect_url: &proxy.connect_url,
    };
    let problem = error.problem(&context);
    out.clear();
    problem.write_http1(close, out);
    problem.status
}

/// Answers one request; false when the app connection must close.
async fn answer(
    app: &mut TcpStream,
    proxy: &Proxy,
    pool: &Pool,
    scratch: &mut Scratch,
    body: &[u8],
    request: &Request,
) -> bool {
    let started = Instant::now();
    scratch.started = started;
    let (status, keep) = match exchange(app, proxy, pool, scratch, body, request).await {
        Ok(done) => done,
        Err(error) => {
            tracing::debug!(connection = %proxy.connection.name, %error, "request failed");
            let status = write_problem(proxy, &error, request.close, &mut scratch.out);
            let written = app.write_all(&scratch.out).await.is_ok();
            (status, written)
        }
    };
    proxy.connection.metrics.request(status, started.elapsed());
    keep
}

/// Forwards the request (replaying it once after a 401 on the current token) and passes the
/// answer to the app. `Err` only before anything was written to the app.
async fn exchange(
    app: &mut TcpStream,
    proxy: &Proxy,
    pool: &Pool,
    scratch: &mut Scratch,
    body: &[u8],
    request: &Request,
) -> Result<(StatusCode, bool), ProxyError> {
    let token = proxy.connection.token().await?;
    scratch.out.clear();
    scratch.head.write(&token.header, &mut scratch.out);
    scratch.out.extend_from_slice(body);
    let (mut upstream, mut head) = send(proxy, pool, scratch, request).await?;
    if rejected(proxy, &mut upstream, &head).await? {
        proxy.count_unauthorized(&token);
        discard(pool, upstream, &head, scratch.started).await;
        // Joins (or starts) the refresh when `token` is current; returns the newer token at
        // once when it was already superseded.
        let newer = proxy.connection.newer_than(token.generation, true).await?;
        scratch.out.clear();
        scratch.head.write(&newer.header, &mut scratch.out);
        scratch.out.extend_from_slice(body);
        (upstream, head) = send(proxy, pool, scratch, request).await?;
        let metrics = &proxy.connection.metrics;
        if rejected(proxy, &mut upstream, &head).await? {
            metrics.replay_unauthorized.inc();
        } else {
            metrics.replay_ok.inc();
        }
    }
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
    pool: &Pool,
    scratch: &mut Scratch,
    request: &Request,
) -> Result<(Upstream, Head), ProxyError> {
    let deadline = scratch.started + proxy.timeout;
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
                Ok(head) => return Ok((upstream, head)),
                Err(Failure::Stale(_)) if upstream.reused && attempt == 1 && request.idempotent => {
                    continue;
                }
                Err(failure) => return Err(ProxyError::Unreachable(failure.to_string())),
            }
        }
    };
    tokio::pin!(attempts);
    loop {
        tokio::select! {
            biased;
            result = &mut attempts => return result,
            () = scratch.timer.as_mut() => {
                if Instant::now() >= deadline {
                    return Err(ProxyError::Timeout(proxy.timeout));
                }
                scratch.timer.as_mut().reset(deadline);
            }
        }
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
