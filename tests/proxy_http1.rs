//! HTTP/1.1 on the wire, black-box: the app side is a raw `TcpStream` writing exact bytes and
//! reading exact answers, the upstream is [`RawUpstream`], which records exactly what the proxy
//! sent and answers with scripted bytes. Pins message framing both ways (Content-Length,
//! chunked with extensions and trailers, close-delimited, HEAD, 1xx, 204, 304), persistent
//! connections and pipelining, HTTP/1.0 clients, `Expect: 100-continue`, stale pooled
//! connections, header rewriting, and the answers to broken peers. Where RFC 9110/9112 leave a
//! choice (sending `100 Continue`, forwarding interim answers, `Connection: close` on a
//! closing answer) the tests accept any conforming one.

//!
//! These run on the HTTP/1.1 fast path (the default); `proxy_http1_hyper.rs` runs the same
//! cases with `fast_path = false`, through hyper.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

const RUNTIME: &str = "";

include!("proxy_http1/cases.rs");
