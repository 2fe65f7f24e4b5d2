//! A proxy listener's accept loop: each app connection starts on the HTTP/1.1 fast path
//! ([`crate::proxy::h1`]) and moves to hyper (HTTP/1.1 and h2c, [`Proxy::handle`]) when a
//! request needs it, or at once for https upstreams. On hyper it gets the client limits of
//! [`super::limits`], from the moment it is handed over. A client outside `allow_clients`
//! never reaches the fast path: hyper answers it 403 and closes. Connections are tracked so
//! shutdown can wait for in-flight requests.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::body::{ClientBody, Tracked};
use super::limits::{Activity, Watched};
use super::rewind::Rewind;
use super::{Accepted, Drain, Gate, accept_until, drive, http_builder, last_on_connection};
use crate::proxy::h1::{self, End};
use crate::proxy::problem::{ProblemContext, ProxyError};
use crate::proxy::{Proxy, ProxyBody};

/// Serves `proxy` on `listener` until `shutdown` turns true; the returned [`Drain`] waits
/// for open connections to finish their requests. `gate` is shared by every worker
/// accepting from the same listening socket.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    gate: Arc<Gate>,
    mut shutdown: watch::Receiver<bool>,
) -> Drain {
    let tracker = TaskTracker::new();
    let builder = Arc::new(http_builder());
    let for_connections = shutdown.clone();
    let what = proxy.connection.name.clone();
    accept_until(&listener, &gate, &what, &mut shutdown, |accepted| {
        tracker.spawn(connection(
            accepted,
            Arc::clone(&proxy),
            Arc::clone(&gate),
            Arc::clone(&builder),
            for_connections.clone(),
        ));
    })
    .await;
    tracker.close();
    Drain(tracker)
}

async fn connection(
    accepted: Accepted,
    proxy: Arc<Proxy>,
    gate: Arc<Gate>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Accepted {
        mut stream,
        permit: _permit,
        allowed,
    } = accepted;
    let read = match (&proxy.pool, allowed) {
        (Some(pool), true) => match h1::serve(&mut stream, &proxy, pool, &mut shutdown).await {
            End::Close => return,
            End::HandOff(read) => read.freeze(),
        },
        _ => Bytes::new(),
    };
    // The limits' clocks start at the hand-over; the fast path timed the connection so far.
    let activity = Activity::new(*gate.limits());
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.request_started(request.version());
            let (proxy, activity) = (Arc::clone(&proxy), Arc::clone(&activity));
            async move {
                let response = answer(&proxy, request, allowed, &activity).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
            }
        })
    };
    let io = Watched::new(Rewind::new(stream, read), Arc::clone(&activity));
    drive(&builder, io, service, &activity, &mut shutdown).await;
}

/// The proxy's answer, or 403 problem+json for a client outside `allow_clients`. Either of
/// those and an answer to a stalled body (408) end the connection.
async fn answer(
    proxy: &Proxy,
    request: Request<Incoming>,
    allowed: bool,
    activity: &Arc<Activity>,
) -> Response<ProxyBody> {
    let version = request.version();
    if !allowed {
        activity.close();
        let context = ProblemContext {
            connection: &proxy.connection.name,
            connect_url: &proxy.connect_url,
        };
        let mut response = ProxyError::Forbidden
            .to_response(&context)
            .map(Either::Right);
        proxy.connection.metrics.request(
            StatusCode::FORBIDDEN,
            crate::metrics::Source::Bearerd,
            std::time::Duration::ZERO,
        );
        last_on_connection(version, &mut response);
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = ClientBody::new(body, activity);
    let stalled = body.stalled();
    let mut response = proxy.handle(Request::from_parts(parts, body)).await;
    if stalled.get() {
        last_on_connection(version, &mut response);
    }
    response
}
