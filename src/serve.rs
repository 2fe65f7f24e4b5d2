//! The accept loop shared by the proxy and admin listeners: HTTP/1.1 and h2c on one port,
//! `TCP_NODELAY`, and graceful shutdown that lets in-flight requests finish. [`workers`]
//! runs proxy listeners on one current-thread runtime per core.

mod proxy;
mod rewind;
pub mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use proxy::serve_proxy;
pub use workers::Workers;

/// What a stopped listener leaves to wait for: its open connections.
pub enum Drain {
    Hyper(GracefulShutdown),
    Tasks(tokio_util::task::TaskTracker),
}

impl Drain {
    /// Resolves once every connection of the listener has closed.
    pub async fn wait(self) {
        match self {
            Self::Hyper(graceful) => graceful.shutdown().await,
            Self::Tasks(tracker) => tracker.wait().await,
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` turns true, then returns the handle that
/// waits for open connections to finish.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> Drain
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    accept_until(&listener, &mut shutdown, |stream| {
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection closed with an error");
            }
        });
    })
    .await;
    Drain::Hyper(graceful)
}

/// Accepts connections until `shutdown` turns true, handing each (`TCP_NODELAY` set) to
/// `serve_one`.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    mut serve_one: impl FnMut(TcpStream),
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(shutdown) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                serve_one(stream);
            }
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Resolves once `shutdown` turns true or its sender is gone.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, not in the caller's future.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
