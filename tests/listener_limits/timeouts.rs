//! Slow heads, idle keep-alive connections and stalled bodies are closed (408 for a body).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

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
    // Only the idle timeout is short, so the close can only come from it.
    let tables = format!(
        "{HYPER}{}",
        limits("client_header_timeout = \"60s\"\nclient_idle_timeout = \"300ms\"")
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
