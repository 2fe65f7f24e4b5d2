//! The upstream's answer head on the fast path: parsed in place (httparse), its body framing
//! found (RFC 9112 section 6.3), and rewritten for the app with hop-by-hop fields dropped as
//! [`crate::proxy::strip_hop_by_hop`] does. A chunked body is passed through as it is, so its
//! `Transfer-Encoding` stays.

use super::fields::{ConnectionOptions, is_proxy_field, parse_length, write_field};
use crate::proxy::signals;

const MAX_HEADERS: usize = 100;

/// How the body after the head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes (HTTP/1.0 style).
    UntilClose,
}

/// A final answer's head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open afterwards.
    pub reusable: bool,
    /// A Cloudbeds-style auth failure might hide in this 200 (see [`signals::worth`]).
    pub inspect: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Final(Head),
    /// A 1xx interim answer of this many bytes: skipped, as hyper's client does.
    Interim(usize),
    Partial,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed upstream answer: {0}")]
    Malformed(httparse::Error),
    #[error("upstream answer has conflicting Content-Length values")]
    Length,
    #[error("upstream switched protocols without being asked")]
    Switching,
}

/// Parses the answer head at the start of `buf` (to a `HEAD` request if `head_method`) and,
/// for a final answer, writes the app's head into `out` without the closing blank line.
pub fn parse(buf: &[u8], head_method: bool, out: &mut Vec<u8>) -> Result<Parsed, ResponseError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let head_len = match response.parse(buf).map_err(ResponseError::Malformed)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(Parsed::Partial),
    };
    let (Some(status), Some(version)) = (response.code, response.version) else {
        return Ok(Parsed::Partial);
    };
    match status {
        101 => return Err(ResponseError::Switching),
        100..=199 => return Ok(Parsed::Interim(head_len)),
        _ => {}
    }
    let mut length = None;
    let mut chunked = false;
    let mut connection = ConnectionOptions::default();
    let mut content_type = None;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = parse_length(field.value).ok_or(ResponseError::Length)?;
            if length.is_some_and(|l| l != value) {
                return Err(ResponseError::Length);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked only when it is the final coding.
            let last = field
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(<[u8]>::trim_ascii);
            chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            // Past the names kept, the rest are forwarded (as hyper's strip did with names
            // that do not parse): an upstream that lists so many is not worth a 502.
            let _ = connection.add(field.value);
        }
    }
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(status));
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        let dropped = is_hop_by_hop(name)
            || (chunked && name.eq_ignore_ascii_case(b"content-length"))
            || connection.names(name);
        if !dropped {
            write_field(out, name, field.value);
        }
    }
    Ok(Parsed::Final(Head {
        status,
        head_len,
        framing,
        reusable: version == 1 && !connection.close && framing != Framing::UntilClose,
        inspect: signals::worth(status, content_type, length.filter(|_| !chunked)),
    }))
}

/// Answer fields never passed to the app (`Transfer-Encoding` is: the body keeps its coding).
fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 5] = [b"connection", b"keep-alive", b"te", b"trailer", b"upgrade"];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) || is_proxy_field(name)
}

/// A status code as three digits (httparse accepts only 100..=999).
fn status_digits(status: u16) -> [u8; 3] {
    let digit = |n: u16| b'0' + (n % 10) as u8;
    [digit(status / 100), digit(status / 10), digit(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_method: bool) -> (Result<Parsed, ResponseError>, String) {
        let mut out = Vec::new();
        let parsed = parse(raw.as_bytes(), head_method, &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    fn framing(raw: &str) -> Framing {
        match head(raw, false).0 {
            Ok(Parsed::Final(h)) => h.framing,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rewrites_the_head() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\n\
                   Proxy-Foo: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: application/json\r\n\
                   Content-Length: 2\r\n\r\n{}";
        let (parsed, out) = head(raw, false);
        assert_eq!(
            parsed,
            Ok(Parsed::Final(Head {
                status: 200,
                head_len: raw.len() - 2,
                framing: Framing::Length(2),
                reusable: true,
                inspect: true,
            }))
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n"
        );
    }

    #[test]
    fn finds_the_framing() {
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n"
            ),
            Framing::Chunked
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\n\r\n"), Framing::Empty);
        let (parsed, out) = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert!(matches!(
            parsed,
            Ok(Parsed::Final(Head {
                framing: Framing::Empty,
                ..
            }))
        ));
        assert!(out.contains("Content-Length: 9"));
    }

    #[test]
    fn close_interim_and_errors() {
        let reusable = |raw: &str| match head(raw, false).0 {
            Ok(Parsed::Final(h)) => h.reusable,
            other => panic!("{other:?}"),
        };
        assert!(!reusable(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!reusable("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(
            head(
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200",
                false
            )
            .0,
            Ok(Parsed::Interim(40))
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-", false).0,
            Ok(Parsed::Partial)
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .0,
            Err(ResponseError::Length)
        );
        assert!(matches!(
            head("garbage\r\n\r\n", false).0,
            Err(ResponseError::Malformed(_))
        ));
        assert_eq!(
            head("HTTP/1.1 101 Switching\r\n\r\n", false).0,
            Err(ResponseError::Switching)
        );
    }
}
