//! A request head over 64 KiB gets 431 (HTTP/1.1 and h2c); one just under is served.

use tokio::net::TcpStream;

use super::*;

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
async fn an_h2c_header_list_over_64_kib_gets_431() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let rig = rig("", HYPER, &[]).await;
    let base = rig.proxy();
    let stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = |value: String| {
        http::Request::get(format!("{base}/h2-big"))
            .header("x-big", value)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let small = send
        .send_request(request("a".repeat(60 * 1024)))
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let big = send
        .send_request(request("a".repeat(70 * 1024)))
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    assert_eq!(
        rig.upstream.requests(),
        1,
        "only the small one went upstream"
    );
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
