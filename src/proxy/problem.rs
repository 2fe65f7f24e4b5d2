//! Errors bearerd itself answers with, and the one exhaustive map from cause to HTTP status
//! and `application/problem+json` body (SPEC section 3).

use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::token::{ConnState, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connection is {}", state.as_str())]
    NotConnected { state: ConnState },
    #[error("no valid token: the token endpoint is failing")]
    TokenUnavailable { retry_after: Duration },
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer in {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("request body is larger than max_body ({0} bytes)")]
    TooLarge(u64),
    #[error("the request body stalled: no bytes for {0:?} (client_body_timeout)")]
    BodyTimeout(Duration),
    #[error("request head is larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("this client's address is not in the connection's allow_clients")]
    Forbidden,
    #[error("over the upstream rate limit; retry in {0:?}")]
    RateLimited(Duration),
    /// An app's request that names no tenant (the text says how to name one).
    #[error("{0}")]
    NoTenant(String),
    #[error("tenant {tenant} is not installed; install it at {install_url}")]
    UnknownTenant { tenant: String, install_url: String },
    #[error("tenant {tenant} has no usable token ({}); reconnect it at {connect_url}", state.as_str())]
    TenantNotConnected {
        tenant: String,
        state: ConnState,
        connect_url: String,
    },
}

impl From<TokenError> for ProxyError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::NotConnected { state } => Self::NotConnected { state },
            TokenError::Unavailable { retry_after } => Self::TokenUnavailable { retry_after },
        }
    }
}

impl ProxyError {
    /// One log line for an answer bearerd gives instead of the upstream's: a warning when it
    /// is a 5xx (the app did not get what it asked for, and an operator should know why),
    /// debug for the app's own mistakes.
    pub fn log(&self, connection: &str) {
        match self {
            Self::NotConnected { .. }
            | Self::TenantNotConnected { .. }
            | Self::TokenUnavailable { .. }
            | Self::Unreachable(_)
            | Self::Timeout(_) => {
                tracing::warn!(connection, error = %self, "answered the app with an error of bearerd's own");
            }
            Self::BadRequest(_)
            | Self::TooLarge(_)
            | Self::BodyTimeout(_)
            | Self::HeadTooLarge(_)
            | Self::Forbidden
            | Self::NoTenant(_)
            | Self::UnknownTenant { .. }
            | Self::RateLimited(_) => {
                tracing::debug!(connection, error = %self, "refused an app request");
            }
        }
    }
}

/// What a problem response needs to know about its connection.
pub struct ProblemContext<'a> {
    pub connection: &'a str,
    pub connect_url: &'a str,
}

/// A problem answer, ready to send.
pub struct Problem {
    pub status: StatusCode,
    retry_after: Option<u64>,
    body: String,
}

impl Problem {
    /// The whole answer as HTTP/1.1 bytes, with `Connection: close` if `close`.
    pub fn write_http1(&self, close: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\n\
             cache-control: no-store\r\ncontent-length: {}\r\ndate: {}\r\n",
            self.status.as_str(),
            self.status.canonical_reason().unwrap_or(""),
            self.body.len(),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        if let Some(secs) = self.retry_after {
            let _ = write!(out, "retry-after: {secs}\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.as_bytes());
    }
}

impl ProxyError {
    pub fn to_response(&self, context: &ProblemContext<'_>) -> Response<Full<Bytes>> {
        let problem = self.problem(context);
        let mut response = Response::new(Full::new(Bytes::from(problem.body)));
        *response.status_mut() = problem.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        if let Some(secs) = problem.retry_after {
            headers.insert(RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }

    /// Status and body for this error (SPEC section 3).
    pub fn problem(&self, context: &ProblemContext<'_>) -> Problem {
        let (status, title, retry_after) = match self {
            Self::NotConnected { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Not connected", None),
            Self::TokenUnavailable { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Token temporarily unavailable",
                Some(retry_after.as_secs().max(1)),
            ),
            Self::Unreachable(_) => (StatusCode::BAD_GATEWAY, "Upstream unreachable", None),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Upstream timed out", None),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request", None),
            Self::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
                None,
            ),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "Request body timed out", None),
            Self::HeadTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request head too large",
                None,
            ),
            Self::Forbidden => (StatusCode::FORBIDDEN, "Forbidden", None),
            Self::NoTenant(_) => (StatusCode::BAD_REQUEST, "No tenant named", None),
            Self::UnknownTenant { .. } => (StatusCode::NOT_FOUND, "Unknown tenant", None),
            Self::TenantNotConnected { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Tenant not connected",
                None,
            ),
            Self::RateLimited(retry_after) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Over the upstream rate limit",
                // Rounded up: a client that waits this long finds a slot.
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)),
            ),
        };
        let detail = match self {
            Self::NotConnected {
                state: ConnState::Misconfigured,
            } => format!(
                "connection {} is misconfigured; the operator must fix its configuration (see {})",
                context.connection,
                context.connect_url.trim_end_matches("/connect"),
            ),
            Self::NotConnected { state } => format!(
                "connection {} has no usable token ({}); reconnect it at {}",
                context.connection,
                state.as_str(),
                context.connect_url,
            ),
            other => other.to_string(),
        };
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
            "connection": context.connection,
        });
        if let Self::UnknownTenant { tenant, .. } | Self::TenantNotConnected { tenant, .. } = self {
            body["tenant"] = serde_json::Value::String(tenant.clone());
        }
        Problem {
            status,
            retry_after,
            body: body.to_string(),
        }
    }
}
