// Included by tests/proxy_http1/cases.rs: message framing that must never be ambiguous
// (SPEC section 13), one test per smuggling shape found on the landed code (issue 10).

/// A request prefix hidden in a body, which an upstream would read as a request of its own
/// if the proxy dropped the body's framing but still forwarded the body.
const PLANTED_REQUEST: &str =
    "GET /planted HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-Swallow: ";

/// An answer hidden after a body, which the proxy would hand to the next request on the same
/// upstream connection if it misjudged where the first answer ended.
const PLANTED_ANSWER: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nplanted";

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_connection_names_a_framing_field_gets_400_and_nothing_goes_upstream() {
    let rig = rig().await;
    for option in ["Content-Length", "content-length, x-other", "Transfer-Encoding", "Host"] {
        let raw = format!(
            "POST /attack HTTP/1.1\r\nHost: app.test\r\nConnection: {option}\r\n\
             Content-Length: {}\r\n\r\n{PLANTED_REQUEST}",
            PLANTED_REQUEST.len()
        );
        let mut attacker = rig.app().await;
        attacker.send(raw.as_bytes()).await.unwrap();
        let response = attacker.read_response(false).await.unwrap();
        assert_problem(&response, 400);
        // Another app's request on the (possibly shared) upstream connection is its own.
        let mut victim = rig.app().await;
        let answer = exchange(&mut victim, &get("/victim")).await;
        assert_default(&answer, "GET", "/victim");
    }
    let requests = rig.upstream.requests();
    assert!(
        requests.iter().all(|r| r.path() == "/victim"),
        "only the victims' requests went upstream: {requests:?}"
    );
    for request in &requests {
        assert!(request.body.is_empty(), "{request:?}");
        rig.assert_rewritten(request);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_whose_connection_names_a_framing_field_is_a_502_and_its_connection_is_dropped() {
    let rig = rig().await;
    for (path, option) in [
        ("/names-length", "Content-Length"),
        ("/names-coding", "transfer-encoding, x-hop"),
    ] {
        rig.upstream.route(
            path,
            Reply::raw(format!(
                "HTTP/1.1 200 OK\r\nConnection: {option}\r\nContent-Length: 5\r\n\r\n\
                 hello{PLANTED_ANSWER}"
            )),
        );
        let mut app = rig.app().await;
        let response = exchange(&mut app, &get(path)).await;
        assert_problem(&response, 502);
        // The next request gets its own answer, not the one planted after the body.
        let mut next = rig.app().await;
        let answer = exchange(&mut next, &get("/next")).await;
        assert_default(&answer, "GET", "/next");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_coded_other_than_chunked_runs_until_close_and_is_never_framed_by_its_length() {
    // RFC 9112 section 6.3: a final coding other than chunked means the body ends when the
    // connection does; a Content-Length beside it means nothing.
    let rig = rig().await;
    for (path, coding) in [
        ("/identity", "identity"),
        ("/chunked-identity", "chunked, identity"),
        ("/chunked-comma", "chunked,"),
    ] {
        rig.upstream.route(
            path,
            Reply::raw(format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: {coding}\r\nContent-Length: 5\r\n\r\nhello"
            ))
            .then(PLANTED_ANSWER)
            .then_close(),
        );
        let mut app = rig.app().await;
        let response = exchange(&mut app, &get(path)).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(
            response.text(),
            format!("hello{PLANTED_ANSWER}"),
            "{path}: the whole close-delimited body, framed for the app as it really is"
        );
        for coding in response.values("transfer-encoding") {
            assert!(
                coding.trim().to_ascii_lowercase().ends_with("chunked"),
                "{path}: a coding the app would misframe: {response:?}"
            );
        }
        if response.framing != Framing::Close {
            assert_still_in_sync(&mut app).await;
        }
        let mut next = rig.app().await;
        assert_default(&exchange(&mut next, &get("/next")).await, "GET", "/next");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_with_a_length_and_chunking_drops_the_length_and_its_connection_is_not_reused() {
    let rig = rig().await;
    rig.upstream.route(
        "/both",
        Reply::raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n",
        ),
    );
    let mut app = rig.app().await;
    let response = exchange(&mut app, &get("/both")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "hello");
    assert!(
        response.header("content-length").is_none(),
        "the length went on beside the chunking: {response:?}"
    );
    assert_still_in_sync(&mut app).await;
    if !RUNTIME.contains("fast_path = false") {
        // hyper-util's pool keeps such a connection (hyper's client rule); the fast path
        // does not trust it with another request.
        let requests = rig.upstream.wait_requests(2).await;
        assert_ne!(requests[0].connection, requests[1].connection, "{requests:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answers_equal_content_lengths_go_on_as_one_and_differing_ones_are_a_502() {
    let rig = rig().await;
    rig.upstream.route(
        "/list",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"),
    );
    rig.upstream.route(
        "/twice",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    );
    rig.upstream.route(
        "/differ",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
    );
    let mut app = rig.app().await;
    for path in ["/list", "/twice"] {
        let response = exchange(&mut app, &get(path)).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.values("content-length"), ["5"], "{path}: {response:?}");
        assert_eq!(response.text(), "hello");
    }
    assert_still_in_sync(&mut app).await;
    let response = exchange(&mut app, &get("/differ")).await;
    assert_problem(&response, 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requests_repeated_content_length_goes_upstream_as_one() {
    let rig = rig().await;
    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"POST /twice HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_default(&response, "POST", "/twice");
    let request = &rig.upstream.wait_requests(1).await[0];
    assert_eq!(request.values("content-length"), ["5"], "{request:?}");
    assert_eq!(request.body, b"hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunked_request_body_gets_400_not_502() {
    let rig = rig().await;
    for (path, body) in [
        ("/bad-size", "zz\r\nhello\r\n0\r\n\r\n"),
        ("/size-junk", "5 x\r\nhello\r\n0\r\n\r\n"),
        ("/no-crlf", "5\r\nhelloXX0\r\n\r\n"),
    ] {
        let mut app = rig.app().await;
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let response = exchange(&mut app, raw.as_bytes()).await;
        assert_eq!(response.status, 400, "{path}: {response:?}");
    }
}
