//! A proxy listener's accept loop: each app connection starts on the HTTP/1.1 fast path
//! ([`crate::proxy::h1`]) and moves to hyper (HTTP/1.1 and h2c, [`Proxy::handle`]) when a
//! request needs it, or at once for https upstreams. Connections are tracked so shutdown
//! can wait for in-flight requests.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::rewind::Rewind;
use super::{Drain, accept_until, stopped};
use crate::proxy::Proxy;
use crate::proxy::h1::{self, End};

/// Serves `proxy` on `listener` until `shutdown` turns true; the returned [`Drain`] waits
/// for open connections to finish their requests.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) -> Drain {
    let tracker = TaskTracker::new();
    let for_connections = shutdown.clone();
    accept_until(&listener, &mut shutdown, |stream| {
        tracker.spawn(connection(
            stream,
            Arc::clone(&proxy),
            for_connections.clone(),
        ));
    })
    .await;
    tracker.close();
    Drain::Tasks(tracker)
}

async fn connection(mut stream: TcpStream, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let read = match &proxy.pool {
        Some(pool) => match h1::serve(&mut stream, &proxy, pool, &mut shutdown).await {
            End::Close => return,
            End::HandOff(read) => read.freeze(),
        },
        None => Bytes::new(),
    };
    hyper_connection(Rewind::new(stream, read), proxy, shutdown).await;
}

/// hyper serves the rest of the connection; on shutdown it finishes the request in flight.
async fn hyper_connection(io: Rewind, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    let service = service_fn(move |request| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "connection closed with an error");
    }
}
