// Included by tests/proxy_http1/cases.rs: `[limits]` on app connections (SPEC section 13),
// with short timeouts so each test waits for the proxy's own deadline to close a connection.

/// `[limits]` for these tests: every timeout short.
const SHORT_LIMITS: &str = "\n[limits]\nclient_header_timeout = \"400ms\"\n\
                            client_idle_timeout = \"400ms\"\nclient_body_timeout = \"400ms\"\n";

async fn limits_rig() -> Rig {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = RawUpstream::start().await;
    let extra = format!("{RUNTIME}{SHORT_LIMITS}");
    let config = support::cc_config_for(NAME, &tokens, &upstream.url(), &extra);
    let bearerd = Bearerd::start(&config).await;
    Rig {
        tokens,
        upstream,
        bearerd,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let rig = limits_rig().await;
    let addr = rig.bearerd.proxy(NAME);
    let stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    // A valid head that never ends: one header byte every 50 ms, far past the 400 ms.
    let dribble = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut next: &[u8] = b"GET /slow HTTP/1.1\r\nHost: app.test\r\nX-Slow: ";
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(50));
        while write.write_all(next).await.is_ok() {
            ticks.tick().await;
            next = b"a";
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        read.read_to_end(&mut answer).await
    })
    .await;
    dribble.abort();
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the connection was still open after 10 s"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "closed without an answer, or with a 408: {text:?}"
    );
    assert!(rig.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let rig = limits_rig().await;
    let mut app = rig.app().await;
    assert_default(&exchange(&mut app, &get("/once")).await, "GET", "/once");
    assert!(
        app.closed_by_peer().await.unwrap(),
        "an idle connection is closed"
    );
    // A connection that never sends a byte is closed too.
    let mut silent = rig.app().await;
    assert!(silent.closed_by_peer().await.unwrap(), "a silent connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_gets_408_and_a_close() {
    let rig = limits_rig().await;
    let mut app = rig.app().await;
    app.send(b"POST /stall HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let response = app.read_response(false).await.unwrap();
    assert_problem(&response, 408);
    assert!(app.closed_by_peer().await.unwrap(), "closed after the 408");
    assert!(rig.upstream.requests().is_empty(), "nothing went upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_64_kib_gets_431() {
    let rig = rig().await;
    let mut app = rig.app().await;
    let big = "a".repeat(70 * 1024);
    let raw = format!("GET /big HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\n\r\n");
    // The proxy may answer before it has read it all.
    let _ = app.send(raw.as_bytes()).await;
    let response = app.read_response(false).await.unwrap();
    assert_eq!(response.status, 431, "{response:?}");
    assert!(rig.upstream.requests().is_empty(), "nothing went upstream");
}
