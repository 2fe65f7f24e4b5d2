//! The forwarding rule both request paths share (hyper's in `proxy.rs`, the HTTP/1.1 fast
//! path's in `h1/exchange.rs`), written once: send with the grant's current credential; when
//! the upstream rejects it, count the rejection (for the current token or a superseded one),
//! then either replay once with a newer credential (a body that can be sent again) or pass
//! the rejection on and let a refresh start (a streamed body, gone).
//!
//! A transport only knows how to send its request with a given credential and whether the
//! answer was a rejection; when to refresh, what to count and how often to try live here.

use super::Proxy;
use super::problem::ProxyError;
use super::route::Granted;
use crate::token::Token;

/// One answer from the upstream, and whether it rejected the credential (a 401, or a
/// provider's auth-failure signal).
pub(crate) struct Sent<A> {
    pub rejected: bool,
    pub answer: A,
}

/// How one request path sends a request upstream.
pub(crate) trait Transport {
    type Answer;

    /// Sends the request with `token`'s credential. `Err` only for bearerd's own failures
    /// (unreachable, timeout, limits), never for an upstream status.
    async fn send(&mut self, token: &Token) -> Result<Sent<Self::Answer>, ProxyError>;

    /// Can the request be sent a second time (its body is still at hand)?
    fn replayable(&self) -> bool;

    /// Lets go of a rejected answer before the replay (the fast path reads it off so the
    /// upstream connection can be reused).
    async fn discard(&mut self, answer: Self::Answer);
}

/// Forwards one request for `granted` through `transport`, replaying it once after the
/// upstream rejects the credential.
pub(crate) async fn forward<T: Transport>(
    proxy: &Proxy,
    granted: &Granted<'_>,
    transport: &mut T,
) -> Result<T::Answer, ProxyError> {
    let token = granted.token().await?;
    let first = transport.send(&token).await?;
    if !first.rejected {
        return Ok(first.answer);
    }
    let grant = granted.connection();
    let metrics = &proxy.connection.metrics;
    let current = token.generation >= grant.generation();
    if current {
        metrics.unauthorized_current.inc();
    } else {
        metrics.unauthorized_superseded.inc();
    }
    if !transport.replayable() {
        // The body is gone: the rejection goes to the app, and a refresh starts if this
        // token is still the current one.
        if current {
            grant.ask(token.generation, true);
        }
        metrics.replay_not_replayable.inc();
        return Ok(first.answer);
    }
    transport.discard(first.answer).await;
    // Joins (or starts) the refresh when `token` is current; returns the newer token at once
    // when it was already superseded.
    let newer = granted.newer_than(token.generation, true).await?;
    let replay = transport.send(&newer).await?;
    if replay.rejected {
        metrics.replay_unauthorized.inc();
    } else {
        metrics.replay_ok.inc();
    }
    Ok(replay.answer)
}
