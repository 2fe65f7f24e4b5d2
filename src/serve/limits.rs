//! The client-facing timeouts of SPEC section 13 on connections hyper serves (the admin
//! listener, proxy connections of https upstreams, and those the fast path hands over):
//! [`Activity`] times a connection's head and idle phases, [`Watched`] feeds it the bytes
//! read, and [`crate::serve::body`] times request bodies and marks the end of answers.
//!
//! A connection is in one of three phases:
//! - *head*: from the connection's start, or from the first byte after the previous answer,
//!   the whole head must arrive within `client_header_timeout`;
//! - *busy*: a request is being answered; nothing here times it (its body has its own
//!   per-read deadline, the upstream its `timeout`);
//! - *idle*: after an answer and before the next byte, a kept-alive connection may wait
//!   `client_idle_timeout`.
//!
//! On h2c the bytes after an answer are often control frames (WINDOW_UPDATE, SETTINGS
//! acknowledgements, PING), not a head, so there they do not start the head phase: an h2c
//! connection owes its next request within `client_idle_timeout` of its last answer.
//!
//! Why not hyper's own `header_read_timeout`: hyper starts it again as soon as a
//! connection goes idle, so a kept-alive connection would close after the header timeout
//! (10 s) instead of the idle timeout (60 s), unlike the fast path; and hyper has no idle
//! timeout for HTTP/1 at all. One watchdog here does both, for HTTP/1 and h2c alike.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Version;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;

/// No such moment (yet).
const NEVER: u64 = u64::MAX;

/// What one connection is doing, for its watchdog. Updated with relaxed atomics from the
/// IO, the service and the answer bodies; a race only moves a deadline by the race's width.
pub struct Activity {
    limits: Limits,
    opened: Instant,
    /// Requests whose answer has not ended.
    in_flight: AtomicUsize,
    /// When the last answer ended (nanoseconds after `opened`), or [`NEVER`].
    idle_since: AtomicU64,
    /// When the first byte of the next head arrived, or [`NEVER`].
    head_since: AtomicU64,
    /// The connection speaks HTTP/2: bytes between requests are not a head.
    multiplexed: AtomicBool,
    /// Wakes the watchdog when the deadline may have moved earlier.
    changed: Notify,
    /// Asks the connection's driver to finish the answer in flight and close.
    close: Notify,
}

impl Activity {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(NEVER),
            head_since: AtomicU64::new(NEVER),
            multiplexed: AtomicBool::new(false),
            changed: Notify::new(),
            close: Notify::new(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn offset(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.opened);
        u64::try_from(elapsed.as_nanos()).unwrap_or(NEVER - 1)
    }

    fn at(&self, offset: u64) -> Instant {
        self.opened + Duration::from_nanos(offset)
    }

    /// When the connection must close unless something happens first; `None` while a
    /// request is being answered.
    pub fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != NEVER {
            return Some(self.at(head) + self.limits.client_header_timeout);
        }
        match self.idle_since.load(Ordering::Relaxed) {
            // A new connection owes its first head from the start.
            NEVER => Some(self.opened + self.limits.client_header_timeout),
            idle => Some(self.at(idle) + self.limits.client_idle_timeout),
        }
    }

    /// Resolves once the connection has been too slow sending a head or idle too long.
    pub async fn expired(&self) {
        loop {
            match self.deadline() {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.changed.notified() => {}
                },
                // Answering: the answer's end will move the deadline.
                None => self.changed.notified().await,
            }
        }
    }

    /// Bytes arrived from the client at `now`: on an idle connection, a head has started.
    fn bytes_read(&self, now: Instant) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NEVER
            && self.idle_since.load(Ordering::Relaxed) != NEVER
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            self.head_since.store(self.offset(now), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// An answer ended at `now`; the last one in flight makes the connection idle.
    fn answer_ended(&self, now: Instant) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.head_since.store(NEVER, Ordering::Relaxed);
            self.idle_since.store(self.offset(now), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A whole head arrived: the request is being answered until the guard drops.
    pub fn request_started(self: &Arc<Self>, version: Version) -> InFlight {
        if version == Version::HTTP_2 {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NEVER, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Asks the driver to close the connection once the answer in flight is written.
    pub fn close(&self) {
        self.close.notify_one();
    }

    /// Resolves once [`Activity::close`] was called.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }
}

/// One request being answered; dropped when its answer's body ends (or is abandoned).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answer_ended(Instant::now());
    }
}

/// A client connection that tells its [`Activity`] when bytes arrive.
pub struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read(Instant::now());
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn activity() -> Arc<Activity> {
        Activity::new(Limits {
            client_header_timeout: 10 * SEC,
            client_idle_timeout: 60 * SEC,
            ..Limits::default()
        })
    }

    /// Ends the answer `guard` stands for at `now` (dropping it would use the real clock).
    fn end(guard: InFlight, now: Instant) {
        let activity = Arc::clone(&guard.0);
        std::mem::forget(guard);
        activity.answer_ended(now);
    }

    #[test]
    fn a_new_connection_owes_its_head_from_its_start() {
        let a = activity();
        let start = a.opened;
        a.bytes_read(start + 3 * SEC);
        assert_eq!(
            a.deadline(),
            Some(start + 10 * SEC),
            "not from its first byte"
        );
    }

    #[test]
    fn an_answered_connection_may_idle_then_owes_the_next_head_from_its_first_byte() {
        let a = activity();
        let start = a.opened;
        let guard = a.request_started(Version::HTTP_11);
        assert_eq!(a.deadline(), None, "no deadline while answering");
        end(guard, start + 5 * SEC);
        assert_eq!(a.deadline(), Some(start + 65 * SEC));
        a.bytes_read(start + 35 * SEC);
        assert_eq!(a.deadline(), Some(start + 45 * SEC));
        a.bytes_read(start + 36 * SEC);
        assert_eq!(
            a.deadline(),
            Some(start + 45 * SEC),
            "later bytes do not extend it"
        );
        let _next = a.request_started(Version::HTTP_11);
        assert_eq!(a.deadline(), None, "the head arrived whole");
    }

    #[test]
    fn on_h2c_bytes_after_an_answer_do_not_start_a_head() {
        let a = activity();
        let start = a.opened;
        end(a.request_started(Version::HTTP_2), start + SEC);
        a.bytes_read(start + 2 * SEC);
        assert_eq!(
            a.deadline(),
            Some(start + 61 * SEC),
            "a WINDOW_UPDATE is not a head"
        );
    }

    #[test]
    fn bytes_read_while_answering_do_not_start_a_head() {
        let a = activity();
        let start = a.opened;
        let first = a.request_started(Version::HTTP_11);
        end(a.request_started(Version::HTTP_11), start + SEC);
        a.bytes_read(start + 2 * SEC);
        assert_eq!(a.deadline(), None, "one request is still answered");
        end(first, start + 3 * SEC);
        assert_eq!(a.deadline(), Some(start + 63 * SEC));
    }
}
