//! The upstream's answer head on the fast path: parsed in place (httparse), its body framing
//! found (RFC 9112 section 6.3), and rewritten for the app with hop-by-hop fields dropped by
//! the rules of [`crate::proxy::headers`]. A chunked body is passed through as it is, so its
//! `Transfer-Encoding` stays; a `Content-Length` goes on as one value.
//!
//! Framing is never ambiguous on the way out: `Connection` naming a framing field, or
//! `Content-Length` values that disagree, are a 502; `Transfer-Encoding` wins over
//! `Content-Length` (which is then dropped, and the upstream connection not reused); a
//! `Transfer-Encoding` not ending in `chunked` means the body runs until the upstream
//! closes, and the app's connection closes after it.

use super::fields::{ConnectionOptions, write_field, write_length};
use crate::proxy::headers::{add_length, is_hop_by_hop};
use crate::proxy::signals;

const MAX_HEADERS: usize = 100;

/// How the body after the head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes (HTTP/1.0 style, or a final coding other than chunked).
    UntilClose,
}

/// A final answer's head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream keeps the connection open afterwards, and nothing in the head makes its
    /// end doubtful.
    pub reusable: bool,
    /// A Cloudbeds-style auth failure might hide in this 200 (see [`signals::worth`]).
    pub inspect: bool,
    /// A 429's `Retry-After`, as a wait.
    pub retry_after: Option<std::time::Duration>,
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
    #[error("upstream answer has conflicting or malformed Content-Length values")]
    Length,
    #[error("upstream answer's Connection names Content-Length, Transfer-Encoding or Host")]
    NamesFraming,
    #[error("upstream HTTP/1.0 answer has a Transfer-Encoding")]
    CodedHttp10,
    #[error("upstream switched protocols without being asked")]
    Switching,
}

/// What the framing fields of an answer head say.
#[derive(Default)]
struct Fields<'a> {
    length: Option<u64>,
    /// A `Transfer-Encoding` line was present.
    coded: bool,
    /// The last `Transfer-Encoding` line's final coding is `chunked`.
    chunked: bool,
    content_type: Option<&'a [u8]>,
    connection: ConnectionOptions<'a>,
}

impl<'a> Fields<'a> {
    fn read(headers: &[httparse::Header<'a>]) -> Result<Self, ResponseError> {
        let mut fields = Fields::default();
        for field in headers {
            let name = field.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                fields.length =
                    add_length(fields.length, field.value).map_err(|_| ResponseError::Length)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Chunked only when it is the final coding of the last line (as hyper reads
                // it): `chunked, identity` and `chunked,` are not.
                fields.coded = true;
                let last = field.value.rsplit(|&b| b == b',').next();
                fields.chunked =
                    last.is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"content-type") {
                fields.content_type = Some(field.value);
            } else if name.eq_ignore_ascii_case(b"connection") {
                fields
                    .connection
                    .add(field.value)
                    .map_err(|_| ResponseError::NamesFraming)?;
            }
        }
        Ok(fields)
    }
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
    let found = Fields::read(response.headers)?;
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else if found.coded && version == 0 {
        // RFC 9112 section 6.1: chunking is not HTTP/1.0's; hyper refuses it too.
        return Err(ResponseError::CodedHttp10);
    } else if found.chunked {
        Framing::Chunked
    } else if found.coded {
        Framing::UntilClose
    } else if let Some(length) = found.length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&status_digits(status));
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let connection = &found.connection;
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        // The chunked coding goes on with the body; other codings end here.
        let passed_coding =
            framing == Framing::Chunked && name.eq_ignore_ascii_case(b"transfer-encoding");
        let dropped = (is_hop_by_hop(name) && !passed_coding)
            || name.eq_ignore_ascii_case(b"content-length")
            || connection.names(name);
        if !dropped {
            write_field(out, name, field.value);
        }
    }
    // One length line: the body's, or the representation's for HEAD and 304 (RFC 9110
    // section 8.6); none beside chunking, an until-close body or a 204.
    let length = match framing {
        Framing::Length(length) => Some(length),
        Framing::Empty if status != 204 => found.length,
        _ => None,
    };
    if let Some(length) = length {
        write_length(out, length);
    }
    let body_length = match framing {
        Framing::Length(length) => Some(length),
        _ => None,
    };
    Ok(Parsed::Final(Head {
        status,
        head_len,
        framing,
        // Both a length and a coding may be an attempt at smuggling (RFC 9112 section 6.3):
        // the connection is not trusted with another request.
        reusable: version == 1
            && !connection.close
            && framing != Framing::UntilClose
            && !(found.coded && found.length.is_some()),
        inspect: signals::worth(status, found.content_type, body_length),
        retry_after: crate::proxy::limit::retry_after(
            status,
            response
                .headers
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case("retry-after"))
                .map(|f| f.value),
        ),
    }))
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
                retry_after: None,
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

    #[test]
    fn framing_is_never_ambiguous() {
        let final_head = |raw: &str| match head(raw, false) {
            (Ok(Parsed::Final(h)), out) => (h, out),
            other => panic!("{raw}: {other:?}"),
        };
        for coding in ["identity", "chunked, identity", "chunked,", "gzip"] {
            let raw = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\nContent-Length: 5\r\n\r\n"
            );
            let (h, out) = final_head(&raw);
            assert_eq!(h.framing, Framing::UntilClose, "{coding}");
            assert!(!h.reusable, "{coding}");
            assert_eq!(out, "HTTP/1.1 200 OK\r\n", "{coding}: no coding, no length");
        }
        let (h, out) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
        let (h, out) =
            final_head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), true));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n");
        for raw in [
            "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: x, transfer-encoding\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nConnection: host\r\n\r\n",
        ] {
            assert_eq!(
                head(raw, false).0,
                Err(ResponseError::NamesFraming),
                "{raw}"
            );
        }
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", false).0,
            Err(ResponseError::Length)
        );
        assert_eq!(
            head(
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .0,
            Err(ResponseError::CodedHttp10)
        );
    }
}
