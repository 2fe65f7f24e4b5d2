//! Idle HTTP/1.1 connections to a plain-`http` upstream, one pool per proxy worker (so the
//! lock is never contended: a worker is one thread). Last in, first out: the warmest
//! connection is reused and the rest age out.
//!
//! A request that finds no idle connection starts a connect and also queues for the next
//! connection another request checks in, and takes whichever comes first (as hyper-util
//! does): a burst of requests then shares the connections that open first instead of
//! waiting on a thousand handshakes (and on SYN retries when the upstream's queue overflows).
//!
//! Why not hyper-util's pool: it keys every checkout by scheme and authority (hashing), runs
//! a connect future and spawns a task per request; callgrind put it at 15 % of the proxy's
//! instructions. Here a checkout is a `Vec::pop`.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::BytesMut;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use url::{Host, Url};

/// Idle connections are closed after this long (as hyper-util's pool was set up).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per worker; more are closed.
const MAX_IDLE: usize = 512;
/// Room for an answer head (and the body that follows it) per read.
const READ_BUFFER: usize = 16 * 1024;

/// One connection to the upstream and its read buffer.
pub struct Upstream {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// It came from the pool: a failure before any answer may only mean it went stale.
    pub reused: bool,
}

struct Idle {
    upstream: Upstream,
    since: Instant,
}

#[derive(Default)]
struct Slots {
    idle: Vec<Idle>,
    /// Requests waiting for a checked-in connection while their own connect runs.
    waiters: VecDeque<oneshot::Sender<Upstream>>,
}

#[derive(Clone)]
pub struct Pool {
    slots: Arc<Mutex<Slots>>,
    host: String,
    port: u16,
    connect_timeout: Duration,
}

impl Pool {
    /// A pool for `url` if the fast path serves it: plain `http` (TLS upstreams keep
    /// hyper-util's client, with HTTP/2 where offered).
    pub fn for_upstream(url: &Url, connect_timeout: Duration) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = match url.host()? {
            Host::Domain(domain) => domain.to_owned(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Self {
            slots: Arc::default(),
            host,
            port: url.port_or_known_default()?,
            connect_timeout,
        })
    }

    /// The same upstream with no connections of its own (one per worker).
    pub fn empty_copy(&self) -> Self {
        Self {
            slots: Arc::default(),
            ..self.clone()
        }
    }

    /// A pooled connection that is still open (idle ages counted to `now`), or a new one, or
    /// one checked in by another request while the new one was connecting.
    pub async fn checkout(&self, now: Instant) -> io::Result<Upstream> {
        let mut waiter = {
            let mut slots = self.lock();
            loop {
                let Some(idle) = slots.idle.pop() else { break };
                let age = now.saturating_duration_since(idle.since);
                if age > IDLE_TIMEOUT || !still_open(&idle.upstream.stream) {
                    continue;
                }
                return Ok(idle.upstream);
            }
            if slots.waiters.len() >= MAX_IDLE {
                slots.waiters.retain(|w| !w.is_closed());
            }
            let (send, receive) = oneshot::channel();
            slots.waiters.push_back(send);
            receive
        };
        let pool = self.clone();
        let mut connecting = tokio::spawn(async move { pool.connect().await });
        tokio::select! {
            biased;
            joined = &mut connecting => {
                // A connection handed over meanwhile goes back for the next request.
                waiter.close();
                if let Ok(upstream) = waiter.try_recv() {
                    self.checkin(upstream, Instant::now());
                }
                match joined {
                    Ok(connected) => connected,
                    Err(e) => Err(io::Error::other(e)),
                }
            }
            Ok(upstream) = &mut waiter => {
                // The connect goes on; its connection will serve a later request.
                let pool = self.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(upstream)) = connecting.await {
                        pool.checkin(upstream, Instant::now());
                    }
                });
                Ok(upstream)
            }
        }
    }

    /// Hands `upstream` to the longest-waiting request, or keeps it for the next one (idle
    /// since `now`). Its buffer must hold nothing unread.
    pub fn checkin(&self, mut upstream: Upstream, now: Instant) {
        upstream.buf.clear();
        upstream.reused = true;
        let mut slots = self.lock();
        while let Some(waiter) = slots.waiters.pop_front() {
            match waiter.send(upstream) {
                Ok(()) => return,
                Err(back) => upstream = back,
            }
        }
        if slots.idle.len() < MAX_IDLE {
            slots.idle.push(Idle {
                upstream,
                since: now,
            });
        }
    }

    /// A new connection, with `TCP_NODELAY` and keep-alive probes as hyper-util set them.
    pub async fn connect(&self) -> io::Result<Upstream> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(stream) => stream?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.connect_timeout),
                ));
            }
        };
        stream.set_nodelay(true)?;
        let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(60));
        SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        Ok(Upstream {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER),
            reused: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // Nothing can be left half-done under this lock: a poisoned pool is still a pool.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// False when the upstream closed (or wrote unasked) while the connection sat idle.
///
/// Usually no system call: the last read of the answer was short, which tells Tokio the
/// socket was drained (it clears the readiness), so the readiness is set again only if the
/// upstream has since closed or sent something. Only when it is set does one non-blocking
/// read tell which.
fn still_open(stream: &TcpStream) -> bool {
    let mut context = Context::from_waker(Waker::noop());
    if stream.poll_read_ready(&mut context).is_pending() {
        return true;
    }
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
