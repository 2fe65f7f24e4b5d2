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
//!
//! # HTTP/1.1 invariants
//!
//! A proxy is safe from request smuggling and response splitting only if it frames every
//! message exactly as the next hop will: whatever the fast path is not certain about, it
//! hands to hyper or refuses. `tests/proxy_differential.rs` checks these against hyper on
//! generated traffic; `tests/proxy_http1/framing.rs` pins each shape found so far.
//!
//! **Requests the fast path serves itself**: HTTP/1.1, origin-form, a method other than
//! `CONNECT`, exactly one `Host`, a head of at most [`Limits::MAX_HEAD_BYTES`] in at most 64
//! fields, no `Transfer-Encoding`, `Expect` or `Upgrade`, and no body or one
//! `Content-Length` value (repeated lines must agree) up to `replay_body_limit`. The body is
//! read whole before anything goes upstream, so the upstream sees exactly the bytes the
//! length framed, with one `Content-Length` line written by bearerd. Safe because the only
//! framing is a number both sides read the same way, and nothing after it is forwarded.
//!
//! **Handed to hyper** (same connection, bytes already read put back): HTTP/1.0, h2c,
//! absolute-form and `CONNECT` targets, `Transfer-Encoding` (chunked bodies, and the
//! ambiguous shapes: with a `Content-Length`, or a final coding other than `chunked`, which
//! hyper's server frames by the coding and then closes, or refuses with 400),
//! `Content-Length` values that are not one number (lists, signs, disagreeing lines: hyper
//! answers 400), `Expect`, `Upgrade`, large bodies, more than 64 fields, and heads httparse
//! refuses (obs-fold, bare CR, malformed names). Safe because hyper frames them by RFC 9112
//! and bearerd forwards them re-framed by hyper's client, never as the app's bytes.
//!
//! **Refused by the fast path** (problem+json, then close): a `Connection` option naming
//! `Content-Length`, `Transfer-Encoding` or `Host` (400; dropping one as hop-by-hop while
//! still framing by it is the smuggling shape of issue 10; the hyper path refuses it the same
//! way in [`Proxy::handle`]), a missing or repeated `Host` (400), an app's tenant header
//! given twice (400, as [`super::route`] refuses it on hyper's path), a head over 64 KiB (431), a
//! body that stalls `client_body_timeout` (408). A head still incomplete at
//! `client_header_timeout`, or no next request within `client_idle_timeout`, closes the
//! connection without an answer.
//!
//! **Tenants** (an app, SPEC section 9): the tenant key is found while parsing (the
//! header's value, forwarded as it is, or the first path segment, which the upstream's
//! request line leaves out) and routed by [`super::route`], the same code hyper's path uses.
//!
//! **Answers** ([`response`]): `Connection` naming a framing field, disagreeing or malformed
//! `Content-Length` values, a coding on an HTTP/1.0 answer, or a head that does not parse are
//! a 502 and the upstream connection is dropped. `Content-Length: 5, 5` goes on as one `5`.
//! `Transfer-Encoding` ending in `chunked` wins over `Content-Length` (the length is not
//! forwarded, and that connection is not reused); its bytes go to the app as they came,
//! checked by a strict chunk scanner ([`chunked`]), so the app's framing is the upstream's
//! exactly. Any other final coding (`identity`, `chunked, identity`, `chunked,`), or no
//! framing at all, means the body runs until the upstream closes: it goes to the app with
//! neither field and `Connection: close`, and the app connection closes after it. An
//! upstream connection goes back to the pool only after an answer whose end was certain,
//! with nothing read past it; an app connection is kept only when its answer's framing was
//! passed exactly as delivered (a length, or chunks, scanned to their end).

mod chunked;
mod exchange;
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

use super::Proxy;
use super::problem::{ProblemContext, ProxyError};
use crate::config::Limits;
use crate::config::TenantRouting;
use crate::metrics::Source;
use crate::serve::stopped;
use exchange::answer;
use request::{BodyLimit, Parsed, Rewrite, TenantKey, UpstreamHead};

pub use pool::Pool;

/// An answer head larger than this is a 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;
/// How long, and how much input, a refused connection is drained before it closes.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

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
    /// Wakes the connection no later than the deadline of what it waits for (the next
    /// request, the rest of a head or body, the upstream's answer). It stays in Tokio's timer
    /// wheel across requests and is re-armed when it fires early (its deadline was an
    /// earlier one's), or moved earlier in the rare case a deadline comes before it
    /// ([`arm`]), so a request usually costs no timer registration.
    timer: Pin<Box<Sleep>>,
}

/// Serves requests from `app` until it closes, asks to close, the fast path hands it over,
/// or `shutdown` turns true while it is idle. `[limits]` apply throughout: the first head is
/// due `client_header_timeout` after the connection opened; later ones may wait
/// `client_idle_timeout` for their first byte, then get `client_header_timeout` to complete;
/// a body that stalls `client_body_timeout` gets 408; a head over
/// [`Limits::MAX_HEAD_BYTES`] gets 431.
pub async fn serve(
    app: &mut TcpStream,
    proxy: &Proxy,
    pool: &Pool,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let limits = &proxy.limits;
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let opened = Instant::now();
    let mut idle_until = opened + limits.client_header_timeout;
    let mut scratch = Scratch {
        head: UpstreamHead::default(),
        out: Vec::new(),
        started: opened,
        timer: Box::pin(tokio::time::sleep_until(idle_until)),
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
        tenant: match proxy.tenants.as_deref().map(|t| &t.routing) {
            None => TenantKey::None,
            Some(TenantRouting::Header(name)) => TenantKey::Header(name.as_str().as_bytes()),
            Some(TenantRouting::Path) => TenantKey::Path,
        },
    };
    loop {
        let mut head_due = None;
        let request = loop {
            if !input.is_empty() {
                let key_header = proxy.key_header.as_ref();
                match request::parse_dropping(
                    &input,
                    limit,
                    &rewrite,
                    key_header,
                    &mut scratch.head,
                ) {
                    Parsed::Fast(request) if request.head_len <= Limits::MAX_HEAD_BYTES => {
                        break request;
                    }
                    Parsed::Reject(reason) => {
                        reject(app, proxy, &ProxyError::BadRequest(reason)).await;
                        return End::Close;
                    }
                    Parsed::HandOff => return End::HandOff(input),
                    Parsed::Fast(_) | Parsed::Partial if input.len() >= Limits::MAX_HEAD_BYTES => {
                        let error = ProxyError::HeadTooLarge(Limits::MAX_HEAD_BYTES);
                        reject(app, proxy, &error).await;
                        return End::Close;
                    }
                    Parsed::Fast(_) | Parsed::Partial => {}
                }
            }
            input.reserve(READ_CHUNK);
            let read = if input.is_empty() {
                // Between requests: the next one's first byte may take `idle_until`.
                arm(&mut scratch.timer, idle_until);
                tokio::select! {
                    read = app.read_buf(&mut input) => read,
                    _ = stopped(shutdown) => return End::Close,
                    () = expired(&mut scratch.timer, idle_until) => return End::Close,
                }
            } else {
                // A head in pieces: it must be whole in `client_header_timeout`.
                let due = *head_due.get_or_insert_with(|| {
                    idle_until.min(Instant::now() + limits.client_header_timeout)
                });
                arm(&mut scratch.timer, due);
                tokio::select! {
                    read = app.read_buf(&mut input) => read,
                    () = expired(&mut scratch.timer, due) => return End::Close,
                }
            };
            if !matches!(read, Ok(n) if n > 0) {
                return End::Close;
            }
        };
        let total = request.head_len + request.body_len;
        while input.len() < total {
            input.reserve(total - input.len());
            let due = Instant::now() + limits.client_body_timeout;
            arm(&mut scratch.timer, due);
            let read = tokio::select! {
                read = app.read_buf(&mut input) => read,
                () = expired(&mut scratch.timer, due) => {
                    let error = ProxyError::BodyTimeout(limits.client_body_timeout);
                    reject(app, proxy, &error).await;
                    return End::Close;
                }
            };
            if !matches!(read, Ok(n) if n > 0) {
                return End::Close;
            }
        }
        let body = &input[request.head_len..total];
        let tenant = request.tenant.clone().map(|at| &input[at]);
        let (keep, finished) = answer(app, proxy, pool, &mut scratch, body, tenant, &request).await;
        idle_until = finished + limits.client_idle_timeout;
        input.advance(total);
        if !keep || request.close || *shutdown.borrow() {
            return End::Close;
        }
    }
}

/// Makes `timer` fire no later than `due`. Usually it already does (it is moved only when it
/// fires early, see [`Scratch::timer`]), so this costs nothing per request.
fn arm(timer: &mut Pin<Box<Sleep>>, due: Instant) {
    if timer.deadline() > due {
        timer.as_mut().reset(due);
    }
}

/// Resolves once `due` has passed, re-arming `timer` each time it fires early.
async fn expired(timer: &mut Pin<Box<Sleep>>, due: Instant) {
    loop {
        timer.as_mut().await;
        if Instant::now() >= due {
            return;
        }
        timer.as_mut().reset(due);
    }
}

/// Answers a request the fast path refuses (nothing goes upstream); the connection closes.
///
/// The app may still be sending (the rest of a large head or a body): closing a socket with
/// unread input resets it, and the reset can destroy the answer before the app reads it. So
/// the write side is shut and input is read and dropped for a moment first (as nginx's
/// lingering close does), bounded in time and bytes.
async fn reject(app: &mut TcpStream, proxy: &Proxy, error: &ProxyError) {
    let mut out = Vec::new();
    let status = write_problem(proxy, error, true, &mut out);
    error.log(&proxy.connection.name);
    proxy
        .connection
        .metrics
        .request(status, Source::Bearerd, Duration::ZERO);
    if app.write_all(&out).await.is_err() || app.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut dropped = 0;
        let mut scrap = [0u8; 4096];
        while dropped < LINGER_BYTES {
            match app.read(&mut scrap).await {
                Ok(n) if n > 0 => dropped += n,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
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
