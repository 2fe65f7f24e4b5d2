//! Proxy workers: one thread per core, each running its own current-thread Tokio runtime
//! with its own accept loop per connection and its own upstream client pool.
//!
//! Why not one multi-thread runtime: a proxied request is four task hand-offs (server
//! connection, proxy, client connection, response body). On one runtime per core they stay
//! on one thread, with no cross-thread wake-ups (futex, IPIs) or work stealing. Measured on
//! 2 cores against nginx's load (`benches/compare.sh`), the proxy's CPU per request went from
//! 24-29 µs (multi-thread runtime, 2 workers) to 23-25 µs (2 workers) and 19-20 µs (1).
//! Only the token cell is shared, and it is lock-free and runtime-agnostic.
//!
//! The workers accept from one listening socket (a duplicate descriptor each; whichever is
//! free takes the next connection), not `SO_REUSEPORT` sockets: with those, a second bearerd
//! started on the same port by mistake would silently share it instead of failing.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// Listen backlog of each worker's listener (Tokio's default for `TcpListener::bind`).
const BACKLOG: u32 = 1024;

/// Running workers. Dropping this stops them: each runtime ends with whatever it still runs,
/// so drain first ([`crate::app::App::shutdown`]).
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropping a sender ends its worker's `block_on`.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("bearerd-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            stops.push(stop);
        }
        Ok(Self {
            handles,
            _stops: stops,
        })
    }

    /// Runtime handles, one per worker.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// One listener on `addr` for each worker, registered with its worker's runtime: the
    /// same socket, bound once (so an address in use is an error, as with one listener).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<Vec<TcpListener>> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let shared = {
            let _entered = self.handles[0].enter();
            // Leaves the socket non-blocking, as `from_std` wants it.
            socket.listen(BACKLOG)?.into_std()?
        };
        let mut listeners = Vec::with_capacity(self.handles.len());
        for handle in &self.handles {
            // A listener belongs to the runtime whose context it is registered in.
            let _entered = handle.enter();
            listeners.push(TcpListener::from_std(shared.try_clone()?)?);
        }
        Ok(listeners)
    }
}
