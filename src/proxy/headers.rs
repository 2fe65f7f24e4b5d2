//! Header rewriting between the app and the upstream (SPEC section 3), and the in-place
//! rewrite of a request head into the upstream's ([`prepare`]), the per-request hot path.

use http::header::{AUTHORIZATION, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

use crate::token::Token;

const KEEP_ALIVE: &str = "keep-alive";

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
///
/// One pass over the names finds them: most heads have none or only `Connection`, and a
/// `remove` per candidate name (a hash and a probe each) costs more than the scan.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names `Connection` lists; usually none besides `keep-alive` (removed below anyway), so
    // this allocates only for the rare others.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.is_empty() || token.eq_ignore_ascii_case(KEEP_ALIVE) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() {
        headers.remove(name);
    }
}

/// Hop-by-hop by name (the names `Connection` lists aside).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == KEEP_ALIVE
        || name.as_str().starts_with("proxy-")
}

/// Prepares the app's request headers for the upstream: hop-by-hop headers, the app's own
/// `Authorization` and its `Host` (the client sets the upstream's) are removed.
pub fn strip_request(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(AUTHORIZATION);
    headers.remove(HOST);
}

/// Turns the app's request head into the upstream's, in place (no new header map): headers
/// stripped as [`strip_request`] says, `token` as `Authorization`, `host` (the upstream's,
/// built once; `None` leaves it to the client) as `Host`, `uri` (the joined upstream URI),
/// HTTP/1.1 (the client negotiates h2 itself), no extensions.
pub fn prepare(parts: &mut Parts, uri: Uri, host: Option<&HeaderValue>, token: &Token) {
    let headers = &mut parts.headers;
    strip_request(headers);
    headers.insert(AUTHORIZATION, token.header.clone());
    if let Some(host) = host {
        headers.insert(HOST, host.clone());
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions.clear();
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
}
