//! Request and answer bodies on connections hyper serves: [`ClientBody`] gives up on a
//! request body that delivers nothing for `client_body_timeout` (the handler answers 408 and
//! the connection closes), [`Tracked`] tells the connection's [`Activity`] when an answer
//! has ended, so the idle clock starts then.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::limits::{Activity, InFlight};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client sent no request body bytes for {0:?}")]
    Stalled(Duration),
    #[error("reading the request body: {0}")]
    Read(#[source] hyper::Error),
}

/// Whether `error` or one of its causes is a [`BodyError::Stalled`].
pub fn body_stalled(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(BodyError::Stalled(_)) = e.downcast_ref::<BodyError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A request body as a client sends it, with a deadline on each wait for its next bytes.
/// The clock runs only while the reader waits on the client: time the reader spends
/// elsewhere (a slow upstream taking the bytes, a token refresh) is not the client's.
pub struct ClientBody {
    inner: Incoming,
    timeout: Duration,
    /// Created on the first wait; most bodies arrive whole with their head.
    timer: Option<Pin<Box<Sleep>>>,
    /// The reader is waiting on the client and `timer` is armed for this wait.
    waiting: bool,
    activity: Arc<Activity>,
    stalled: Stalled,
}

/// Tells whether a [`ClientBody`] gave up on its client.
#[derive(Clone, Default)]
pub struct Stalled(Arc<AtomicBool>);

impl Stalled {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl ClientBody {
    pub fn new(inner: Incoming, activity: &Arc<Activity>) -> Self {
        Self {
            inner,
            timeout: activity.limits().client_body_timeout,
            timer: None,
            waiting: false,
            activity: Arc::clone(activity),
            stalled: Stalled::default(),
        }
    }

    /// A handle that says, after the handler ran, whether this body stalled.
    pub fn stalled(&self) -> Stalled {
        self.stalled.clone()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.stalled.get() {
            return Poll::Ready(Some(Err(BodyError::Stalled(this.timeout))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        if !this.waiting {
            this.waiting = true;
            let deadline = Instant::now() + this.timeout;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let fired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !fired {
            return Poll::Pending;
        }
        this.stalled.0.store(true, Ordering::Relaxed);
        // Whatever is left of this body will not be read: the connection cannot go on.
        this.activity.close();
        Poll::Ready(Some(Err(BodyError::Stalled(this.timeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer body that holds its request's [`InFlight`] until it ends or is dropped.
pub struct Tracked<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
