//! Client limits and exposure on the listeners (SPEC section 13), black-box on real sockets:
//! slow heads, idle keep-alive connections and stalled bodies are closed (408 for the body),
//! heads over 64 KiB get 431, `max_connections` closes one connection too many at once
//! while the others and the other listener keep answering, and `allow_clients` answers 403.
//!
//! The proxy cases run through hyper (`fast_path = false`, the path of https upstreams) or
//! on connections the fast path hands to hyper; the fast path's own timers are tested with
//! the wire-level cases. Timeouts are configured short (300 ms) and the other timeouts long
//! (60 s), so a close within the support code's 10 s wait can only come from the one under
//! test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bearerd::app::App;
use bearerd::config::Config;
use serde_json::Value;
use support::raw_upstream::{Response, Wire};
use support::{Bearerd, TokenServer, TokenServerConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NAME: &str = "api";
const HYPER: &str = "[runtime]\nfast_path = false\n";

struct Rig {
    _tokens: TokenServer,
    upstream: Upstream,
    bearerd: Bearerd,
}

/// bearerd with one client_credentials connection `NAME`; `connection` is more of its keys,
/// `tables` whole tables after it (`[limits]`, `[runtime]`), `admin_allow` the admin
/// listener's `allow_clients`.
async fn rig(connection: &str, tables: &str, admin_allow: &[&str]) -> Rig {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let extra = format!("{connection}\n{tables}");
    let mut config = Config::from_toml_str(&support::cc_config(NAME, &tokens, &upstream, &extra))
        .expect("test config is valid");
    config.admin.allow_clients = admin_allow.iter().map(|n| n.parse().unwrap()).collect();
    let app = App::start(config).await.expect("bearerd starts");
    let admin = format!("http://{}", app.admin_addr);
    Rig {
        _tokens: tokens,
        upstream,
        bearerd: Bearerd { app, admin },
    }
}

fn limits(lines: &str) -> String {
    format!("[limits]\n{lines}\n")
}

impl Rig {
    fn proxy(&self) -> String {
        self.bearerd.proxy(NAME)
    }

    fn admin(&self) -> String {
        self.bearerd.admin.clone()
    }
}

/// `METHOD PATH` with the `Host` of `base` (a listener's URL) and `more` header lines.
fn request(method: &str, path: &str, base: &str, more: &str) -> Vec<u8> {
    let host = base.trim_start_matches("http://");
    format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{more}\r\n").into_bytes()
}

async fn exchange(wire: &mut Wire, bytes: &[u8]) -> Response {
    wire.send(bytes).await.unwrap();
    wire.read_response(false).await.unwrap()
}

/// A connection to `base` that has had one `GET path` answered 200, so the listener has
/// certainly accepted it.
async fn answered(base: &str, path: &str) -> Wire {
    let mut wire = Wire::connect(base).await.unwrap();
    let response = exchange(&mut wire, &request("GET", path, base, "")).await;
    assert_eq!(response.status, 200, "{response:?}");
    wire
}

/// Sends the start of a head to `base`, then one more header byte every 50 ms, and says
/// whether the listener closed the connection within 10 s.
async fn closes_a_dripping_head(base: &str) -> bool {
    let stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let host = base.trim_start_matches("http://").to_owned();
    let drip = tokio::spawn(async move {
        let start = format!("GET /slow HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
        write.write_all(start.as_bytes()).await?;
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            write.write_all(b"a").await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let mut byte = [0u8; 1];
    let closed = match tokio::time::timeout(Duration::from_secs(10), read.read(&mut byte)).await {
        Ok(Ok(0)) => true,
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(Ok(_)) => panic!("the listener answered a head that never ended"),
        Err(_) => false,
    };
    drip.abort();
    closed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_slowly_is_closed_on_the_hyper_path() {
    let tables = format!(
        "{HYPER}{}",
        limits("client_header_timeout = \"300ms\"\nclient_idle_timeout = \"60s\"")
    );
    let rig = rig("", &tables, &[]).await;
    assert!(closes_a_dripping_head(&rig.proxy()).await);
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_slowly_is_closed_on_the_admin_listener() {
    let tables = limits("client_header_timeout = \"300ms\"\nclient_idle_timeout = \"60s\"");
    let rig = rig("", &tables, &[]).await;
    assert!(closes_a_dripping_head(&rig.admin()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_next_head_on_a_kept_alive_connection_is_closed() {
    let tables = format!(
        "{HYPER}{}",
        limits("client_header_timeout = \"300ms\"\nclient_idle_timeout = \"60s\"")
    );
    let rig = rig("", &tables, &[]).await;
    let mut wire = answered(&rig.proxy(), "/first").await;
    // Half a head, then nothing: the header clock runs from its first byte.
    wire.send(b"GET /second HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    assert!(wire.closed_by_peer().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_on_the_hyper_path() {
    let tables = format!(
        "{HYPER}{}",
        limits("client_header_timeout = \"60s\"\nclient_idle_timeout = \"300ms\"")
    );
    let rig = rig("", &tables, &[]).await;
    let mut wire = answered(&rig.proxy(), "/once").await;
    assert!(wire.closed_by_peer().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_on_the_admin_listener() {
    let tables = limits("client_header_timeout = \"60s\"\nclient_idle_timeout = \"300ms\"");
    let rig = rig("", &tables, &[]).await;
    let mut wire = answered(&rig.admin(), "/healthz").await;
    assert!(wire.closed_by_peer().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2c_connection_is_closed() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // Both short: after an answer an h2 client sends control frames (WINDOW_UPDATE, SETTINGS
    // acknowledgements), which start the header clock as any byte on an idle connection does.
    let tables = format!(
        "{HYPER}{}",
        limits("client_header_timeout = \"300ms\"\nclient_idle_timeout = \"300ms\"")
    );
    let rig = rig("", &tables, &[]).await;
    let base = rig.proxy();
    let stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("{base}/h2"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(
        closed.is_ok(),
        "the idle h2c connection is still open after 10 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_handed_to_hyper_is_closed_when_idle() {
    // The fast path is on; a chunked body makes it hand the connection to hyper.
    let tables = limits("client_header_timeout = \"60s\"\nclient_idle_timeout = \"300ms\"");
    let rig = rig("", &tables, &[]).await;
    let base = rig.proxy();
    let mut wire = Wire::connect(&base).await.unwrap();
    let mut post = request("POST", "/chunked", &base, "Transfer-Encoding: chunked\r\n");
    post.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    let response = exchange(&mut wire, &post).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(wire.closed_by_peer().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_slower_than_the_idle_and_header_timeouts_is_not_cut() {
    let tables = format!(
        "{HYPER}{}",
        limits("client_header_timeout = \"300ms\"\nclient_idle_timeout = \"300ms\"")
    );
    let rig = rig("", &tables, &[]).await;
    let mut wire = Wire::connect(&rig.proxy()).await.unwrap();
    let get = request("GET", "/delay/1200", &rig.proxy(), "");
    let response = exchange(&mut wire, &get).await;
    assert_eq!(response.status, 200, "{response:?}");
}

/// Asserts `response` is bearerd's 408 problem and the connection closes after it.
async fn assert_408_and_close(wire: &mut Wire, response: &Response, problem: bool) {
    assert_eq!(response.status, 408, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    if problem {
        assert_eq!(content_type, "application/problem+json", "{response:?}");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["status"], 408);
        assert_eq!(body["connection"], NAME);
    } else {
        assert!(content_type.starts_with("text/plain"), "{response:?}");
    }
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(wire.closed_by_peer().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_gets_408_and_a_close_on_the_hyper_path() {
    let tables = format!("{HYPER}{}", limits("client_body_timeout = \"300ms\""));
    let rig = rig("", &tables, &[]).await;
    let base = rig.proxy();
    let mut wire = Wire::connect(&base).await.unwrap();
    // Small enough to be buffered for a replay: 3 of 10 bytes, then nothing.
    let mut post = request("POST", "/stalled", &base, "Content-Length: 10\r\n");
    post.extend_from_slice(b"abc");
    let response = exchange(&mut wire, &post).await;
    assert_408_and_close(&mut wire, &response, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_streamed_body_gets_408_and_a_close_after_a_hand_off() {
    let tables = limits("client_body_timeout = \"300ms\"");
    let rig = rig("", &tables, &[]).await;
    let base = rig.proxy();
    let mut wire = Wire::connect(&base).await.unwrap();
    // Chunked: handed to hyper, streamed upstream; one chunk, then nothing.
    let mut post = request("POST", "/stalled", &base, "Transfer-Encoding: chunked\r\n");
    post.extend_from_slice(b"5\r\nhello\r\n");
    let response = exchange(&mut wire, &post).await;
    assert_408_and_close(&mut wire, &response, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_gets_408_and_a_close_on_the_admin_listener() {
    let tables = limits("client_body_timeout = \"300ms\"");
    let rig = rig("", &tables, &[]).await;
    let base = rig.admin();
    let mut wire = Wire::connect(&base).await.unwrap();
    let path = format!("/webhooks/{NAME}");
    let mut post = request(
        "POST",
        &path,
        &base,
        "Content-Type: application/json\r\nContent-Length: 10\r\n",
    );
    post.extend_from_slice(b"{\"a\"");
    let response = exchange(&mut wire, &post).await;
    assert_408_and_close(&mut wire, &response, false).await;
}

/// Sends exactly 64 KiB of a head that has not ended and returns the answer.
async fn oversized_head(base: &str) -> Response {
    let mut head = request("GET", "/big", base, "");
    head.truncate(head.len() - 2);
    head.extend_from_slice(b"X-Big: ");
    head.resize(64 * 1024, b'a');
    let mut wire = Wire::connect(base).await.unwrap();
    wire.send(&head).await.unwrap();
    wire.read_response(false).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_64_kib_gets_431_on_the_hyper_path_and_the_admin_listener() {
    let rig = rig("", HYPER, &[]).await;
    let proxied = oversized_head(&rig.proxy()).await;
    assert_eq!(proxied.status, 431, "{proxied:?}");
    let admin = oversized_head(&rig.admin()).await;
    assert_eq!(admin.status, 431, "{admin:?}");
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_64_kib_gets_431_when_the_fast_path_hands_it_over() {
    let rig = rig("", "", &[]).await;
    let proxied = oversized_head(&rig.proxy()).await;
    assert_eq!(proxied.status, 431, "{proxied:?}");
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_just_under_64_kib_is_served_on_the_hyper_path() {
    let rig = rig("", HYPER, &[]).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(60 * 1024));
    let base = rig.proxy();
    let mut wire = Wire::connect(&base).await.unwrap();
    let response = exchange(&mut wire, &request("GET", "/big", &base, &big)).await;
    assert_eq!(response.status, 200, "{response:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn above_max_connections_a_proxy_connection_is_closed_at_once() {
    let rig = rig("", &limits("max_connections = 2"), &[]).await;
    let base = rig.proxy();
    let mut first = answered(&base, "/one").await;
    let second = answered(&base, "/two").await;
    let mut third = Wire::connect(&base).await.unwrap();
    assert!(third.closed_by_peer().await.unwrap(), "one too many");
    // The open ones still work, and so does the other listener.
    let again = exchange(&mut first, &request("GET", "/again", &base, "")).await;
    assert_eq!(again.status, 200, "{again:?}");
    let health = support::get(&format!("{}/healthz", rig.admin()), None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    // A closed connection frees its place.
    drop(second);
    let path = "/after-close";
    support::eventually(Duration::from_secs(10), "a place under the cap", || {
        let base = base.clone();
        async move {
            let mut wire = Wire::connect(&base).await.ok()?;
            wire.send(&request("GET", path, &base, "")).await.ok()?;
            let response = wire.read_response(false).await.ok()?;
            (response.status == 200).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_on_the_admin_listener_leaves_the_proxy_answering() {
    let rig = rig("", &limits("max_connections = 2"), &[]).await;
    let admin = rig.admin();
    let mut first = answered(&admin, "/healthz").await;
    let _second = answered(&admin, "/healthz").await;
    let mut third = Wire::connect(&admin).await.unwrap();
    assert!(third.closed_by_peer().await.unwrap(), "one too many");
    let proxied = support::get(&format!("{}/flood", rig.proxy()), None)
        .await
        .unwrap();
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    let again = exchange(&mut first, &request("GET", "/healthz", &admin, "")).await;
    assert_eq!(again.status, 200, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_outside_allow_clients_gets_403_and_a_close() {
    // A loopback listener that only 10.0.0.0/8 may use; the fast path is on.
    let rig = rig("allow_clients = [\"10.0.0.0/8\"]", "", &[]).await;
    let base = rig.proxy();
    let mut wire = Wire::connect(&base).await.unwrap();
    let response = exchange(&mut wire, &request("GET", "/secret", &base, "")).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["status"], 403);
    assert_eq!(body["connection"], NAME);
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(wire.closed_by_peer().await.unwrap());
    assert_eq!(rig.upstream.requests(), 0, "nothing went upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_inside_allow_clients_is_served() {
    let rig = rig("allow_clients = [\"127.0.0.0/8\"]", "", &["127.0.0.1/32"]).await;
    let proxied = support::get(&format!("{}/mine", rig.proxy()), None)
        .await
        .unwrap();
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    let health = support::get(&format!("{}/healthz", rig.admin()), None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_answers_403_outside_its_allow_clients() {
    let rig = rig("", "", &["10.0.0.0/8"]).await;
    let admin = rig.admin();
    let mut wire = Wire::connect(&admin).await.unwrap();
    let response = exchange(&mut wire, &request("GET", "/healthz", &admin, "")).await;
    assert_eq!(response.status, 403, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert!(wire.closed_by_peer().await.unwrap());
}
