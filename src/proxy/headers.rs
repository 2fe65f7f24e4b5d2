//! Header policy shared by both request paths (SPEC sections 3 and 13), and the in-place
//! rewrite of a request head into the upstream's ([`prepare`]), the per-request hot path of
//! the hyper path.
//!
//! One home per rule: which fields are hop-by-hop, which may never be a `Connection` option
//! (the ones that frame or route a message), and how `Content-Length` values are read. The
//! fast path ([`super::h1`]) applies them to raw field bytes, the hyper path to `HeaderMap`s,
//! through the byte-level predicates here.

use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

use crate::token::Token;

/// Hop-by-hop by name (RFC 9110 section 7.6.1), besides `Proxy-*` and what `Connection`
/// lists: never forwarded as they are, in either direction.
const HOP_BY_HOP: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Fields that say where a message ends or where it goes. A `Connection` option naming one
/// would have the proxy drop it while still framing by it, so the next hop frames the
/// message differently (request smuggling): such a message is refused.
const FRAMING: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];

pub const NAMES_FRAMING: &str =
    "Connection must not name Content-Length, Transfer-Encoding or Host";

/// `name` is hop-by-hop: [`HOP_BY_HOP`] or `Proxy-*`.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) || is_proxy_field(name)
}

/// `Proxy-*`: meant for a proxy the app or the upstream thinks it talks to, never forwarded.
pub fn is_proxy_field(name: &[u8]) -> bool {
    name.len() >= 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
}

/// `name` frames or routes a message, so it may never be a `Connection` option.
pub fn is_framing(name: &[u8]) -> bool {
    FRAMING.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// A `Content-Length` value too large, not digits, or disagreeing with another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("conflicting or malformed Content-Length")]
pub struct BadLength;

/// One `Content-Length` value: digits only (surrounding whitespace aside), as hyper reads it.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Adds one `Content-Length` field line to the length read so far. A line may be a list
/// (`5, 5`, RFC 9110 section 8.6); every value must be the same.
pub fn add_length(length: Option<u64>, line: &[u8]) -> Result<Option<u64>, BadLength> {
    let mut length = length;
    for value in line.split(|&b| b == b',') {
        let value = parse_length(value).ok_or(BadLength)?;
        if length.is_some_and(|l| l != value) {
            return Err(BadLength);
        }
        length = Some(value);
    }
    Ok(length)
}

/// Checks an upstream answer's framing fields before hyper's server writes it to the app:
/// `Connection` must not name a framing field, and `Content-Length` lines that agree
/// (`5, 5`, or the same value twice) become one value.
pub fn check_answer(headers: &mut HeaderMap) -> Result<(), AnswerError> {
    if connection_names_framing(headers) {
        return Err(AnswerError::NamesFraming);
    }
    let mut lines = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = lines.next() else {
        return Ok(());
    };
    let single = lines.next().is_none() && parse_length(first.as_bytes()).is_some();
    if single {
        return Ok(());
    }
    let mut length = None;
    for line in headers.get_all(CONTENT_LENGTH) {
        length = add_length(length, line.as_bytes()).map_err(|_| AnswerError::Length)?;
    }
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(())
}

/// Why an upstream answer cannot be passed on (a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("upstream answer's Connection names Content-Length, Transfer-Encoding or Host")]
    NamesFraming,
    #[error("upstream answer has conflicting or malformed Content-Length values")]
    Length,
}

/// Some `Connection` value names a framing field (see [`FRAMING`]).
pub fn connection_names_framing(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|option| is_framing(option.trim_ascii()))
    })
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
///
/// One pass over the names finds them: most heads have none or only `Connection`, and a
/// `remove` per candidate name (a hash and a probe each) costs more than the scan.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| is_hop_by_hop(name.as_str().as_bytes()))
    {
        return;
    }
    // Names `Connection` lists; usually none besides `keep-alive` (removed below anyway), so
    // this allocates only for the rare others.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        for token in value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
        {
            if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    while let Some(name) = headers
        .keys()
        .find(|name| is_hop_by_hop(name.as_str().as_bytes()))
        .cloned()
    {
        headers.remove(name);
    }
}

/// Prepares the app's request headers for the upstream: hop-by-hop headers, the app's own
/// `Authorization` and its `Host` (the client sets the upstream's) are removed.
pub fn strip_request(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(AUTHORIZATION);
    headers.remove(HOST);
}

/// Turns the app's request head into the upstream's, in place (no new header map): headers
/// stripped as [`strip_request`] says, `host` (the upstream's, built once; `None` leaves it
/// to the client) as `Host`, `uri` (the joined upstream URI), HTTP/1.1 (the client
/// negotiates h2 itself), no extensions. The credential goes in with [`insert_credential`]
/// at each send.
pub fn prepare(parts: &mut Parts, uri: Uri, host: Option<&HeaderValue>) {
    let headers = &mut parts.headers;
    strip_request(headers);
    if let Some(host) = host {
        headers.insert(HOST, host.clone());
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions.clear();
}

/// Puts `token` in its header (`Authorization`, or an API key's): `insert` replaces every
/// value the app sent under that name.
pub fn insert_credential(headers: &mut HeaderMap, token: &Token) {
    headers.insert(token.name.clone(), token.header.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "x-custom, Keep-Alive"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("proxy-client-ip", "10.0.0.1"),
            ("authorization", "Bearer app-token"),
            ("host", "127.0.0.1:8081"),
            ("x-keep", "yes"),
            ("accept", "application/json"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        strip_request(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep", "accept"]);
    }

    #[test]
    fn content_length_lists_and_repeats() {
        assert_eq!(add_length(None, b" 42 "), Ok(Some(42)));
        assert_eq!(add_length(None, b"5, 5"), Ok(Some(5)));
        assert_eq!(add_length(Some(5), b"5"), Ok(Some(5)));
        for bad in [
            &b"+1"[..],
            b"5, 6",
            b"5,",
            b"",
            b"0x5",
            b"99999999999999999999",
        ] {
            assert_eq!(add_length(None, bad), Err(BadLength), "{bad:?}");
        }
        assert_eq!(add_length(Some(4), b"5"), Err(BadLength));
    }

    #[test]
    fn answers_are_checked_before_hyper_writes_them() {
        let map = |fields: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for &(k, v) in fields {
                h.append(k, v.parse().unwrap());
            }
            h
        };
        let mut h = map(&[("content-length", "5, 5"), ("x-a", "1")]);
        assert_eq!(check_answer(&mut h), Ok(()));
        assert_eq!(h.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
        let mut h = map(&[("content-length", "5"), ("content-length", "5")]);
        assert_eq!(check_answer(&mut h), Ok(()));
        assert_eq!(h.get_all(CONTENT_LENGTH).iter().count(), 1);
        let mut h = map(&[("content-length", "5"), ("content-length", "6")]);
        assert_eq!(check_answer(&mut h), Err(AnswerError::Length));
        let mut h = map(&[("connection", "keep-alive, Transfer-Encoding")]);
        assert_eq!(check_answer(&mut h), Err(AnswerError::NamesFraming));
        let mut h = map(&[("connection", "x-hop"), ("content-length", "7")]);
        assert_eq!(check_answer(&mut h), Ok(()));
    }
}
