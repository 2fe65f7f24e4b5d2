//! The proxy service: one per connection. Checks the request target, rewrites headers,
//! injects the current token, forwards with a timeout, and on a 401 refreshes (if the
//! failed token is still current) and replays a buffered body once.
//!
//! Request flow: `handle` -> `forward` -> [`replay::forward`] (`send`, 401? -> replay) ->
//! response. Every error bearerd produces itself goes through [`problem::ProxyError`].

pub mod h1;
mod headers;
pub(crate) mod limit;
pub mod problem;
pub(crate) mod replay;
pub mod route;
pub(crate) mod signals;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::config::Limits;
use crate::metrics::Source;
use crate::ratelimit::Limiter;
use crate::serve::{ClientBody, body_stalled};
use crate::token::{Connection, Token};
use crate::upstream::{HttpClient, Target, UpstreamBody, error_chain};
use problem::{ProblemContext, ProxyError};

pub use headers::{insert_credential, is_hop_by_hop, prepare, strip_hop_by_hop};

/// A proxied response streams the upstream body; bearerd's own answers are small and whole.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Per-connection proxy settings and handles. Cloned per worker, each with its own client.
#[derive(Clone)]
pub struct Proxy {
    /// The connection's cell; for an app, the app's (its metrics and name), while each
    /// request's token comes from the tenant it names ([`Proxy::tenants`]).
    pub connection: Arc<Connection>,
    /// An app's tenants (SPEC section 9); `None` for a connection with one grant.
    pub tenants: Option<Arc<crate::tenants::Tenants>>,
    pub client: HttpClient,
    pub target: Target,
    pub replay_body_limit: u64,
    pub max_body: Option<u64>,
    pub timeout: Duration,
    /// `{public_url}/connections/NAME/connect`, named in 503 answers.
    pub connect_url: String,
    /// Look for provider auth-failure signals in 200 answers (cloudbeds preset).
    pub provider_signals: bool,
    /// Idle connections for the HTTP/1.1 fast path ([`h1`]); `None` (https upstreams): every
    /// request goes through hyper.
    pub pool: Option<h1::Pool>,
    /// Timeouts and head size for app connections (`[limits]`, SPEC section 13).
    pub limits: Limits,
    /// The connection's upstream rate limit (SPEC section 11), shared by every worker.
    pub limiter: Option<Arc<Limiter>>,
    /// The header an API key goes in (SPEC section 10): the app's own is never forwarded.
    pub key_header: Option<http::HeaderName>,
}

/// The request body as it will go upstream.
enum OutBody {
    /// Buffered: can be replayed after a 401.
    Buffered(Bytes),
    /// Streamed: sent once.
    Streamed(ClientBody),
}

/// hyper's path as a [`replay::Transport`]: the prepared head without a credential, and the
/// body (a buffered one is sent again on a replay; a streamed one only once).
struct Outgoing<'a> {
    proxy: &'a Proxy,
    limit: limit::Limit<'a>,
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Option<OutBody>,
}

impl replay::Transport for Outgoing<'_> {
    type Answer = Response<ProxyBody>;

    async fn send(&mut self, token: &Token) -> Result<replay::Sent<Self::Answer>, ProxyError> {
        let (headers, body) = match self.body.take() {
            Some(OutBody::Buffered(bytes)) => {
                self.body = Some(OutBody::Buffered(bytes.clone()));
                (self.headers.clone(), Either::Left(Full::new(bytes)))
            }
            Some(OutBody::Streamed(body)) => {
                let limit = self
                    .proxy
                    .max_body
                    .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
                let headers = std::mem::take(&mut self.headers);
                (headers, Either::Right(Limited::new(body, limit)))
            }
            // `replayable` said no: the policy never sends a streamed body twice.
            None => return Err(ProxyError::BadRequest("request body could not be read")),
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        insert_credential(request.headers_mut(), token);
        let sent = self.proxy.send(self.limit, request).await?;
        let (rejected, answer) = self.proxy.inspect(sent).await?;
        Ok(replay::Sent { rejected, answer })
    }

    fn replayable(&self) -> bool {
        matches!(self.body, Some(OutBody::Buffered(_)))
    }

    async fn discard(&mut self, answer: Self::Answer) {
        // Dropping an unread body closes hyper's upstream connection: it is not reused.
        drop(answer);
    }
}

impl Proxy {
    /// Answers one request from the app. Never fails: errors become problem+json.
    pub async fn handle(&self, request: Request<ClientBody>) -> Response<ProxyBody> {
        let started = Instant::now();
        let (response, source) = match self.forward(request).await {
            Ok(response) => (response, Source::Upstream),
            Err(error) => {
                error.log(&self.connection.name);
                let context = ProblemContext {
                    connection: &self.connection.name,
                    connect_url: &self.connect_url,
                };
                (
                    error.to_response(&context).map(Either::Right),
                    Source::Bearerd,
                )
            }
        };
        self.connection
            .metrics
            .request(response.status(), source, started.elapsed());
        response
    }

    async fn forward(
        &self,
        request: Request<ClientBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        check_target(&request)?;
        if headers::connection_names_framing(request.headers()) {
            return Err(ProxyError::BadRequest(headers::NAMES_FRAMING));
        }
        let (mut parts, body) = request.into_parts();
        let granted = self.route_parts(&mut parts)?;
        let length = content_length(&parts)?;
        if let (Some(max), Some(length)) = (self.max_body, length)
            && length > max
        {
            return Err(ProxyError::TooLarge(max));
        }
        let uri = self
            .target
            .uri(parts.uri.path_and_query())
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
        let body = self.read_body(length, body).await?;
        if let Some(name) = &self.key_header {
            parts.headers.remove(name);
        }
        prepare(&mut parts, uri, self.target.host());
        let mut outgoing = Outgoing {
            proxy: self,
            limit: self.limit_for(&granted),
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body: Some(body),
        };
        replay::forward(self, &granted, &mut outgoing).await
    }

    /// Strips hop-by-hop headers and says whether the upstream rejected the token: a 401,
    /// or (cloudbeds preset) a small HTTP 200 JSON `{"success":false}` auth-failure body.
    async fn inspect(
        &self,
        response: Response<Incoming>,
    ) -> Result<(bool, Response<ProxyBody>), ProxyError> {
        let (mut parts, body) = response.into_parts();
        // Dropping `body` unread closes the upstream connection: it is not reused.
        headers::check_answer(&mut parts.headers)
            .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
        // RFC 9112 section 6.3: chunking overrides a length, which must not be passed on.
        if parts.headers.contains_key(TRANSFER_ENCODING) {
            parts.headers.remove(CONTENT_LENGTH);
        }
        strip_hop_by_hop(&mut parts.headers);
        if parts.status == StatusCode::UNAUTHORIZED {
            return Ok((true, Response::from_parts(parts, Either::Left(body))));
        }
        if !(self.provider_signals && signals::worth_inspecting(&parts)) {
            return Ok((false, Response::from_parts(parts, Either::Left(body))));
        }
        let bytes = Limited::new(body, signals::MAX_INSPECTED)
            .collect()
            .await
            .map_err(|e| ProxyError::Unreachable(format!("reading the upstream answer: {e}")))?
            .to_bytes();
        let rejected = signals::is_cloudbeds_auth_failure(&bytes);
        Ok((
            rejected,
            Response::from_parts(parts, Either::Right(Full::new(bytes))),
        ))
    }

    /// Buffers small bodies (so a 401 can be replayed) and streams the rest.
    async fn read_body(
        &self,
        length: Option<u64>,
        body: ClientBody,
    ) -> Result<OutBody, ProxyError> {
        let small = match length {
            Some(length) => length <= self.replay_body_limit,
            None => body.is_end_stream(),
        };
        if !small {
            return Ok(OutBody::Streamed(body));
        }
        if body.is_end_stream() {
            // Most API calls (GET) have no body: nothing to collect.
            return Ok(OutBody::Buffered(Bytes::new()));
        }
        let limit = usize::try_from(self.replay_body_limit).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(OutBody::Buffered(collected.to_bytes())),
            Err(error) if body_stalled(&*error) => {
                Err(ProxyError::BodyTimeout(self.limits.client_body_timeout))
            }
            Err(_) => Err(ProxyError::BadRequest("request body could not be read")),
        }
    }

    async fn send(
        &self,
        limit: limit::Limit<'_>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.admit(limit).await?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let value = response.headers().get(http::header::RETRY_AFTER);
                self.throttled(
                    limit,
                    status,
                    limit::retry_after(status, value.map(|v| v.as_bytes())),
                );
                Ok(response)
            }
            Ok(Err(error)) if caused_by::<LengthLimitError>(&error) => {
                Err(ProxyError::TooLarge(self.max_body.unwrap_or(u64::MAX)))
            }
            Ok(Err(error)) if body_stalled(&error) => {
                Err(ProxyError::BodyTimeout(self.limits.client_body_timeout))
            }
            Ok(Err(error)) if app_body_failed(&error) => {
                Err(ProxyError::BadRequest("malformed request body"))
            }
            Ok(Err(error)) => Err(ProxyError::Unreachable(error_chain(&error))),
            Err(_) => Err(ProxyError::Timeout(self.timeout)),
        }
    }
}

/// Only origin-form targets: bearerd is never an open proxy.
fn check_target<B>(request: &Request<B>) -> Result<(), ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    // HTTP/2 always carries scheme and authority as pseudo-headers; over HTTP/1 they mean
    // an absolute-form target.
    if request.version() < Version::HTTP_2 && request.uri().authority().is_some() {
        return Err(ProxyError::BadRequest(
            "absolute-form request targets are not accepted; send /path?query",
        ));
    }
    if !request.uri().path().starts_with('/') {
        return Err(ProxyError::BadRequest("request target must start with /"));
    }
    // RFC 9112 section 3.2 (HTTP/1.0 may omit it).
    if request.version() == Version::HTTP_11 && request.headers().get_all(HOST).iter().count() != 1
    {
        return Err(ProxyError::BadRequest(h1::request::HOST_REQUIRED));
    }
    Ok(())
}

fn content_length(parts: &Parts) -> Result<Option<u64>, ProxyError> {
    match parts.headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or(ProxyError::BadRequest("malformed Content-Length")),
    }
}

fn caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<E>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The app's streamed request body failed (a malformed chunk, a cut connection): hyper's
/// client reports a user-body error whose cause is the server side's own `hyper::Error`.
fn app_body_failed(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_user()
        {
            return hyper_cause(hyper);
        }
        cause = e.source();
    }
    false
}

/// Some cause of `error` is a `hyper::Error` (not counting `error` itself).
fn hyper_cause(error: &hyper::Error) -> bool {
    let mut cause = error.source();
    while let Some(e) = cause {
        if e.is::<hyper::Error>() {
            return true;
        }
        cause = e.source();
    }
    false
}
