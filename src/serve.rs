//! The accept loop shared by the proxy and admin listeners: admission ([`gate`]:
//! `max_connections`, `allow_clients`), HTTP/1.1 and h2c on one port through hyper with the
//! client limits of SPEC section 13 ([`limits`], [`body`]), `TCP_NODELAY`, and graceful
//! shutdown that lets in-flight requests finish. [`workers`] runs proxy listeners on one
//! current-thread runtime per core.

pub mod body;
pub mod gate;
pub mod limits;
mod proxy;
mod rewind;
pub mod workers;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::{self, HttpServerConnExec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use body::Tracked;
pub use body::{BodyError, ClientBody, body_stalled};
pub use gate::Gate;
use gate::Permit;
use limits::{Activity, Watched};
pub use proxy::serve_proxy;
pub use workers::Workers;

/// What a stopped listener leaves to wait for: its open connections.
pub struct Drain(TaskTracker);

impl Drain {
    /// Resolves once every connection of the listener has closed.
    pub async fn wait(self) {
        self.0.wait().await;
    }
}

/// A connection the accept loop let in.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    /// Its place under the listener's `max_connections`; dropped when it closes.
    pub permit: Permit,
    /// The peer is in the listener's `allow_clients` (or the list is empty).
    pub allowed: bool,
}

/// Serves `handler` (the admin listener) on `listener` until `shutdown` turns true, then
/// returns the handle that waits for open connections to finish. Clients outside the
/// gate's networks get a plain 403, a request body that stalls a plain 408; both close.
pub async fn serve<H, F>(
    listener: TcpListener,
    gate: Arc<Gate>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> Drain
where
    H: Fn(Request<ClientBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let builder = Arc::new(http_builder());
    let for_connections = shutdown.clone();
    accept_until(&listener, &gate, "admin", &mut shutdown, |accepted| {
        let (handler, builder) = (handler.clone(), Arc::clone(&builder));
        let mut shutdown = for_connections.clone();
        let activity = Activity::new(*gate.limits());
        tracker.spawn(async move {
            let Accepted {
                stream,
                permit: _permit,
                allowed,
            } = accepted;
            let service = {
                let activity = Arc::clone(&activity);
                service_fn(move |request: Request<Incoming>| {
                    let in_flight = activity.request_started(request.version());
                    let (handler, activity) = (handler.clone(), Arc::clone(&activity));
                    async move {
                        let response = answer(handler, request, allowed, &activity).await;
                        Ok::<_, Infallible>(response.map(|b| Tracked::new(b, in_flight)))
                    }
                })
            };
            let io = Watched::new(stream, Arc::clone(&activity));
            drive(&builder, io, service, &activity, &mut shutdown).await;
        });
    })
    .await;
    tracker.close();
    Drain(tracker)
}

/// The admin handler's answer, or the listener's own: 403 for a client outside
/// `allow_clients`, 408 when the request body stalled (whatever the handler made of it).
async fn answer<H, F>(
    handler: H,
    request: Request<Incoming>,
    allowed: bool,
    activity: &Arc<Activity>,
) -> Response<Full<Bytes>>
where
    H: Fn(Request<ClientBody>) -> F,
    F: Future<Output = Response<Full<Bytes>>>,
{
    let version = request.version();
    if !allowed {
        activity.close();
        return plain(
            version,
            StatusCode::FORBIDDEN,
            "this address may not use this listener\n",
        );
    }
    let (parts, body) = request.into_parts();
    let body = ClientBody::new(body, activity);
    let stalled = body.stalled();
    let response = handler(Request::from_parts(parts, body)).await;
    if stalled.get() {
        return plain(
            version,
            StatusCode::REQUEST_TIMEOUT,
            "the request body stalled\n",
        );
    }
    response
}

/// Settings for every hyper connection: request heads up to [`Limits::MAX_HEAD_BYTES`],
/// larger ones get 431 (hyper for HTTP/1 when its read buffer fills before the head ends,
/// h2 for a header list over the size announced in SETTINGS). No hyper timer: [`limits`]
/// times heads and idle connections, for the reason given there.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(Limits::MAX_HEAD_BYTES);
    let max_header_list = u32::try_from(Limits::MAX_HEAD_BYTES).unwrap_or(u32::MAX);
    builder.http2().max_header_list_size(max_header_list);
    builder
}

/// Runs one hyper connection until it ends, its client is too slow or idle too long
/// ([`Activity::expired`]: the socket is closed at once), or `shutdown` turns true or the
/// connection asks to close ([`Activity::close`]: the answers in flight finish first).
pub(crate) async fn drive<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: Watched<I>,
    service: S,
    activity: &Activity,
    shutdown: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: HttpServerConnExec<S::Future, B>,
{
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "connection closed with an error");
                }
                return;
            }
            () = activity.expired() => {
                tracing::debug!("closing a connection: request head too slow, or idle too long");
                return;
            }
            () = close_wanted(activity, shutdown), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn close_wanted(activity: &Activity, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = activity.close_requested() => {}
        () = stopped(shutdown) => {}
    }
}

/// Marks an HTTP/1 answer as the connection's last (HTTP/2 has no such header; the
/// driver's graceful shutdown sends GOAWAY instead).
pub(crate) fn last_on_connection<B>(version: Version, response: &mut Response<B>) {
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// A plain-text answer of the admin listener's own, its connection's last.
fn plain(version: Version, status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    last_on_connection(version, &mut response);
    response
}

/// Accepts connections until `shutdown` turns true, handing each admitted one
/// (`TCP_NODELAY` set) to `serve_one`. Above the gate's `max_connections` a connection is
/// closed as soon as it is accepted.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    gate: &Gate,
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
    mut serve_one: impl FnMut(Accepted),
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(permit) = gate.admit(what) else {
                    drop(stream);
                    continue;
                };
                let allowed = gate.allows(peer.ip());
                if !allowed {
                    tracing::debug!(listener = what, %peer, "client not in allow_clients");
                }
                let _ = stream.set_nodelay(true);
                serve_one(Accepted {
                    stream,
                    permit,
                    allowed,
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sleeps until `at`; pends forever without one (a `select!` branch with nothing to wait for).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `shutdown` turns true or its sender is gone.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not in the caller's future.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
