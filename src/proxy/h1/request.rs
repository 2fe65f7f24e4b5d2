//! The app's request head on the fast path: parsed in place (httparse), checked, and
//! rewritten into the upstream's head with the same rules as [`crate::proxy::prepare`]:
//! hop-by-hop headers, `Proxy-*`, the app's `Host` and `Authorization` are dropped; the
//! upstream's `Host` and the current token are set.
//!
//! Whatever the fast path does not serve itself is [`Parsed::HandOff`]: hyper takes the
//! connection over and answers exactly as before (h2c, HTTP/1.0, CONNECT, absolute-form or
//! malformed targets, chunked or large bodies, `Expect`, `Upgrade`, heads it cannot parse,
//! `Content-Length` values that are not one number). What neither path may forward is
//! [`Parsed::Reject`]ed here (see the invariants in [`super`]).

use http::{HeaderName, HeaderValue};

use super::fields::{ConnectionOptions, write_field, write_length};
use crate::proxy::headers::{NAMES_FRAMING, is_hop_by_hop, parse_length};
use crate::proxy::route::split_tenant;
use crate::token::Token;

/// Header fields the fast path parses; more hands the request to hyper.
const MAX_HEADERS: usize = 64;

pub const HOST_REQUIRED: &str = "an HTTP/1.1 request needs exactly one Host header";

/// What the fast path needs to know about one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the head, CRLF CRLF included.
    pub head_len: usize,
    /// Bytes of the body (Content-Length, or 0).
    pub body_len: usize,
    /// `HEAD`: the answer has no body whatever its headers say.
    pub head_method: bool,
    /// Safe to send again after a pooled connection turned out closed (RFC 9110 9.2.2).
    pub idempotent: bool,
    /// The app sent `Connection: close`.
    pub close: bool,
    /// Where in the head the tenant key is (an app's header value or first path segment).
    pub tenant: Option<std::ops::Range<usize>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Fast(Request),
    /// Answered 400 without going upstream; the connection closes.
    Reject(&'static str),
    /// More bytes are needed.
    Partial,
    HandOff,
}

/// Limits a body must meet to be read whole (so a 401 can be replayed).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub u64);

/// The upstream's request head, kept in two parts so the token can be set, and set again
/// for a replay, without rebuilding the rest.
#[derive(Debug, Default)]
pub struct UpstreamHead {
    /// Request line and `Host`.
    line: Vec<u8>,
    /// The forwarded header fields and the blank line.
    fields: Vec<u8>,
}

impl UpstreamHead {
    /// Appends the whole head with `authorization` to `out`.
    pub fn write(&self, authorization: &HeaderValue, out: &mut Vec<u8>) {
        self.write_credential(b"Authorization", authorization, out);
    }

    /// Appends the whole head with `token` in its header (`Authorization`, or an API key's
    /// such as `x-api-key`) to `out`. No allocation beyond `out`'s growth.
    pub fn write_token(&self, token: &Token, out: &mut Vec<u8>) {
        let name: &[u8] = if token.is_key() {
            token.name.as_str().as_bytes()
        } else {
            b"Authorization"
        };
        self.write_credential(name, &token.header, out);
    }

    fn write_credential(&self, name: &[u8], value: &HeaderValue, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.line);
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.fields);
    }
}

/// The upstream's base path and `Host` value, and where an app's requests name their
/// tenant.
pub struct Rewrite<'a> {
    pub base_path: &'a str,
    pub host: &'a [u8],
    pub tenant: TenantKey<'a>,
}

/// Where a request names its tenant ([`crate::config::TenantRouting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKey<'a> {
    /// Not an app.
    None,
    /// This header's value (lower case), forwarded as it is.
    Header(&'a [u8]),
    /// The first path segment, removed before forwarding.
    Path,
}

pub const TENANT_HEADER_TWICE: &str = "the tenant header appears more than once; send it once";

/// Parses the head at the start of `buf` and, for a request the fast path serves, writes
/// the upstream head into `head`.
pub fn parse(
    buf: &[u8],
    limit: BodyLimit,
    rewrite: &Rewrite<'_>,
    head: &mut UpstreamHead,
) -> Parsed {
    parse_dropping(buf, limit, rewrite, None, head)
}

/// [`parse`], also dropping the app's `key_header` (an API key's header, SPEC section 10),
/// which bearerd sets itself.
pub fn parse_dropping(
    buf: &[u8],
    limit: BodyLimit,
    rewrite: &Rewrite<'_>,
    key_header: Option<&HeaderName>,
    head: &mut UpstreamHead,
) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::HandOff;
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Parsed::HandOff;
    }
    let mut body_len = None;
    let mut hosts = 0;
    let mut tenant = None;
    let mut connection = ConnectionOptions::default();
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(length) = parse_length(field.value) else {
                return Parsed::HandOff;
            };
            if body_len.is_some_and(|l| l != length) {
                return Parsed::HandOff;
            }
            body_len = Some(length);
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if let TenantKey::Header(header) = rewrite.tenant
            && name.eq_ignore_ascii_case(header)
        {
            if tenant.is_some() {
                return Parsed::Reject(TENANT_HEADER_TWICE);
            }
            tenant = Some(span(buf, field.value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            if connection.add(field.value).is_err() {
                return Parsed::Reject(NAMES_FRAMING);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::HandOff;
        }
    }
    if hosts != 1 {
        // RFC 9112 section 3.2.
        return Parsed::Reject(HOST_REQUIRED);
    }
    let length = body_len;
    let body_len = body_len.unwrap_or(0);
    if body_len > limit.0 {
        return Parsed::HandOff;
    }
    let Ok(body_len) = usize::try_from(body_len) else {
        return Parsed::HandOff;
    };

    let line = &mut head.line;
    line.clear();
    line.extend_from_slice(method.as_bytes());
    line.push(b' ');
    line.extend_from_slice(rewrite.base_path.as_bytes());
    match rewrite.tenant {
        TenantKey::Path => match split_tenant(path) {
            Some((key, rest)) => {
                tenant = Some(span(buf, key.as_bytes()));
                if !rest.starts_with('/') {
                    line.push(b'/');
                }
                line.extend_from_slice(rest.as_bytes());
            }
            // No tenant: the request is refused before anything is sent.
            None => line.extend_from_slice(path.as_bytes()),
        },
        _ => line.extend_from_slice(path.as_bytes()),
    }
    line.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    line.extend_from_slice(rewrite.host);
    line.extend_from_slice(b"\r\n");
    let out = &mut head.fields;
    out.clear();
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let is_key = key_header.is_some_and(|k| k.as_str().as_bytes().eq_ignore_ascii_case(name));
        if !is_dropped(name) && !connection.names(name) && !is_key {
            write_field(out, name, field.value);
        }
    }
    // Repeated equal lengths go on as one line.
    if let Some(length) = length {
        write_length(out, length);
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Fast(Request {
        head_len,
        body_len,
        head_method: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        close: connection.close,
        tenant,
    })
}

/// Where `part` (a slice of `buf`) lies in `buf`.
fn span(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// Request fields never forwarded as they are: hop-by-hop ones, the two bearerd sets, and
/// `Content-Length` (written once, after the others).
fn is_dropped(name: &[u8]) -> bool {
    const SET: [&[u8]; 3] = [b"host", b"authorization", b"content-length"];
    SET.iter().any(|d| d.eq_ignore_ascii_case(name)) || is_hop_by_hop(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: BodyLimit = BodyLimit(1024);

    fn rewrite() -> Rewrite<'static> {
        Rewrite {
            base_path: "/api",
            host: b"up.example:8080",
            tenant: TenantKey::None,
        }
    }

    fn upstream(raw: &str) -> (Parsed, String) {
        let mut head = UpstreamHead::default();
        let parsed = parse(raw.as_bytes(), LIMIT, &rewrite(), &mut head);
        let mut out = Vec::new();
        head.write(&HeaderValue::from_static("Bearer t1"), &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    #[test]
    fn rewrites_the_head() {
        let raw = "POST /v1/x?a=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Bearer app\r\n\
                   Connection: X-Custom, keep-alive\r\nX-Custom: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
                   Proxy-Authorization: Basic x\r\nAccept: a\r\nAccept: b\r\nContent-Length: 3\r\n\r\nabcGET";
        let (parsed, out) = upstream(raw);
        assert_eq!(
            parsed,
            Parsed::Fast(Request {
                head_len: raw.len() - 6,
                body_len: 3,
                head_method: false,
                idempotent: false,
                close: false,
                tenant: None,
            })
        );
        assert_eq!(
            out,
            "POST /api/v1/x?a=1 HTTP/1.1\r\nHost: up.example:8080\r\nAuthorization: Bearer t1\r\n\
             Accept: a\r\nAccept: b\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn connection_close_and_head() {
        let (parsed, _) = upstream("HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        let Parsed::Fast(request) = parsed else {
            panic!("{parsed:?}")
        };
        assert!(request.close && request.head_method && request.idempotent);
    }

    #[test]
    fn hands_off_what_it_does_not_serve() {
        for raw in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n",
        ] {
            assert_eq!(upstream(raw).0, Parsed::HandOff, "{raw}");
        }
        assert_eq!(
            upstream("GET / HTTP/1.1\r\nAccept: x\r\n").0,
            Parsed::Partial
        );
    }

    #[test]
    fn refuses_framing_named_as_a_connection_option() {
        for option in ["Content-Length", "x, transfer-encoding", "host"] {
            let raw = format!(
                "POST / HTTP/1.1\r\nHost: h\r\nConnection: {option}\r\nContent-Length: 1\r\n\r\nx"
            );
            assert_eq!(upstream(&raw).0, Parsed::Reject(NAMES_FRAMING), "{option}");
        }
    }

    #[test]
    fn an_api_key_goes_in_its_header_and_the_apps_is_dropped() {
        let raw = "GET /x HTTP/1.1\r\nHost: h\r\nX-Api-Key: app-key\r\nAuthorization: Bearer app\r\n\
                   Accept: a\r\n\r\n";
        let mut head = UpstreamHead::default();
        let key = http::HeaderName::from_static("x-api-key");
        let parsed = parse_dropping(raw.as_bytes(), LIMIT, &rewrite(), Some(&key), &mut head);
        assert!(matches!(parsed, Parsed::Fast(_)), "{parsed:?}");
        let token = Token {
            name: key,
            header: HeaderValue::from_static("cbat_k"),
            generation: 1,
        };
        let mut out = Vec::new();
        head.write_token(&token, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /api/x HTTP/1.1\r\nHost: up.example:8080\r\nx-api-key: cbat_k\r\nAccept: a\r\n\r\n"
        );
    }

    #[test]
    fn repeated_equal_lengths_go_on_as_one() {
        let raw = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX: 1\r\nContent-Length: 2\r\n\r\nab";
        let (parsed, out) = upstream(raw);
        assert!(matches!(parsed, Parsed::Fast(Request { body_len: 2, .. })));
        assert_eq!(
            out,
            "POST /api/ HTTP/1.1\r\nHost: up.example:8080\r\nAuthorization: Bearer t1\r\n\
             X: 1\r\nContent-Length: 2\r\n\r\n"
        );
    }

    fn tenant_of(raw: &str, key: TenantKey<'_>) -> (Parsed, String, Option<String>) {
        let mut head = UpstreamHead::default();
        let rewrite = Rewrite {
            tenant: key,
            ..rewrite()
        };
        let parsed = parse(raw.as_bytes(), LIMIT, &rewrite, &mut head);
        let mut out = Vec::new();
        head.write(&HeaderValue::from_static("Bearer t1"), &mut out);
        let tenant = match &parsed {
            Parsed::Fast(r) => r.tenant.clone().map(|t| raw[t].to_owned()),
            _ => None,
        };
        (parsed, String::from_utf8(out).unwrap(), tenant)
    }

    #[test]
    fn finds_the_tenant_in_a_header_and_forwards_it() {
        let raw = "GET /x HTTP/1.1\r\nHost: h\r\nX-Property-ID: 1001\r\n\r\n";
        let (_, out, tenant) = tenant_of(raw, TenantKey::Header(b"x-property-id"));
        assert_eq!(tenant.as_deref(), Some("1001"));
        assert!(out.contains("X-Property-ID: 1001\r\n"), "{out}");
        let twice = "GET /x HTTP/1.1\r\nHost: h\r\nX-Property-ID: 1\r\nx-property-id: 2\r\n\r\n";
        assert_eq!(
            tenant_of(twice, TenantKey::Header(b"x-property-id")).0,
            Parsed::Reject(TENANT_HEADER_TWICE)
        );
    }

    #[test]
    fn takes_the_tenant_off_the_path() {
        for (target, forwarded, tenant) in [
            ("/1001/v1/x?a=1", "/api/v1/x?a=1", Some("1001")),
            ("/1001", "/api/", Some("1001")),
            ("/1001?a", "/api/?a", Some("1001")),
            ("/", "/api/", None),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (_, out, found) = tenant_of(&raw, TenantKey::Path);
            assert!(
                out.starts_with(&format!("GET {forwarded} HTTP/1.1")),
                "{target}: {out}"
            );
            assert_eq!(found.as_deref(), tenant, "{target}");
        }
    }
}
