// Included by tests/proxy_http1.rs (fast path) and tests/proxy_http1_hyper.rs (hyper only),
// each declaring `mod support` and defining `RUNTIME`, the `[runtime]` table of the config.

use serde_json::Value;
use support::raw_upstream::{
    Framing, RawUpstream, RecordedRequest, Reply, Response, Wire, chunked,
};
use support::{Bearerd, TokenServer, TokenServerConfig, pattern_bytes};

const NAME: &str = "api";
const MIB: usize = 1 << 20;

struct Rig {
    tokens: TokenServer,
    upstream: RawUpstream,
    bearerd: Bearerd,
}

/// A client_credentials connection to a fresh [`RawUpstream`] whose URL ends in `base_path`.
async fn rig_at(base_path: &str) -> Rig {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = RawUpstream::start().await;
    // `RUNTIME` after the connection's keys starts the `[runtime]` table.
    let url = format!("{}{base_path}", upstream.url());
    let config = support::cc_config_for(NAME, &tokens, &url, RUNTIME);
    let bearerd = Bearerd::start(&config).await;
    Rig {
        tokens,
        upstream,
        bearerd,
    }
}

async fn rig() -> Rig {
    rig_at("").await
}

impl Rig {
    /// A fresh app connection to the proxy listener.
    async fn app(&self) -> Wire {
        Wire::connect(&self.bearerd.proxy(NAME)).await.unwrap()
    }

    /// Asserts `request` reached the upstream as HTTP/1.1 with exactly one `Host` (the
    /// upstream's) and one `Authorization: Bearer` carrying a live token the token server
    /// issued; returns the token.
    fn assert_rewritten(&self, request: &RecordedRequest) -> String {
        assert_eq!(request.version, "HTTP/1.1", "{request:?}");
        assert_eq!(
            request.values("host"),
            [self.upstream.host()],
            "{request:?}"
        );
        let auth = request.values("authorization");
        assert_eq!(auth.len(), 1, "exactly one Authorization: {request:?}");
        let token = auth[0]
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer value: {}", auth[0]));
        assert!(
            self.tokens.issued_secrets().iter().any(|t| t == token),
            "the upstream saw a token the token server never issued: {token}"
        );
        assert!(self.tokens.validate_access(token), "the token is live");
        token.to_owned()
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

/// Sends `request` on `app` and reads the final answer.
async fn exchange(app: &mut Wire, request: &[u8]) -> Response {
    app.send(request).await.unwrap();
    app.read_response(false).await.unwrap()
}

/// Asserts the upstream's default answer to `METHOD TARGET` (200, body `METHOD TARGET`).
fn assert_default(response: &Response, method: &str, target: &str) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.text(),
        format!("{method} {target}"),
        "{response:?}"
    );
}

/// The requests the upstream got for `path`.
fn to_path(requests: &[RecordedRequest], path: &str) -> Vec<RecordedRequest> {
    requests
        .iter()
        .filter(|r| r.path() == path)
        .cloned()
        .collect()
}

/// A `GET /after` on `app` is answered normally: the connection is still in sync.
async fn assert_still_in_sync(app: &mut Wire) {
    let after = exchange(app, &get("/after")).await;
    assert_default(&after, "GET", "/after");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_answers_arrive_whole_and_the_connection_stays_usable() {
    let rig = rig().await;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    let plain = chunked(
        &[
            (b"hello ", None),
            (b"chunked ", None),
            (&[b'x'; 300], None),
            (b" world", None),
        ],
        &[],
    );
    // Split inside a chunk-size line, so the proxy must parse across reads.
    let (first, rest) = plain.split_at(9);
    rig.upstream
        .route("/chunked", Reply::raw(head).then(first).then(rest));
    let with_trailers = chunked(
        &[(b"abc", Some("name=value")), (b"defgh", Some("x"))],
        &[("X-Checksum", "c0ffee"), ("X-Other", "1")],
    );
    rig.upstream
        .route("/trailers", Reply::raw(head).then(with_trailers));

    let mut app = rig.app().await;
    let response = exchange(&mut app, &get("/chunked")).await;
    assert_eq!(response.status, 200, "{response:?}");
    let mut want = b"hello chunked ".to_vec();
    want.extend([b'x'; 300]);
    want.extend(b" world");
    assert_eq!(response.text(), String::from_utf8_lossy(&want));

    let response = exchange(&mut app, &get("/trailers")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "abcdefgh");
    assert_still_in_sync(&mut app).await;

    let requests = rig.upstream.wait_requests(3).await;
    let paths: Vec<&str> = requests.iter().map(RecordedRequest::path).collect();
    assert_eq!(paths, ["/chunked", "/trailers", "/after"]);
    for request in &requests {
        rig.assert_rewritten(request);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_delimited_answer_arrives_whole() {
    let rig = rig().await;
    let body = pattern_bytes(200_000);
    let (first, second) = body.split_at(70_000);
    rig.upstream.route(
        "/close-delimited",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            .then(first)
            .then(second)
            .then_close(),
    );
    let mut app = rig.app().await;
    let response = exchange(&mut app, &get("/close-delimited")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body, "the body differs from what was sent");
    // An HTTP/1.1 app learns where the body ends from chunking or a length (then the
    // connection can be reused) or from the close.
    let closing = response.framing == Framing::Close
        || response
            .values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
    if !closing {
        assert_still_in_sync(&mut app).await;
    }
    assert_eq!(
        rig.upstream.wait_requests(1).await[0].path(),
        "/close-delimited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_answers_have_no_body_and_the_connection_stays_in_sync() {
    let rig = rig().await;
    rig.upstream.route(
        "/head",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"),
    );
    rig.upstream.route(
        "/head-chunked",
        Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    );
    let mut app = rig.app().await;
    for path in ["/head", "/head-chunked"] {
        app.send(format!("HEAD {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let response = app.read_response(true).await.unwrap();
        assert_eq!(response.status, 200, "{path}: {response:?}");
        if let Some(length) = response.header("content-length") {
            assert_eq!(length, "1000", "{path}: a HEAD length is the GET length");
        }
        // Any body bytes would be read as the start of the next answer.
        assert_still_in_sync(&mut app).await;
    }
    let requests = rig.upstream.wait_requests(4).await;
    let methods: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path()))
        .collect();
    assert_eq!(
        methods,
        [
            ("HEAD", "/head"),
            ("GET", "/after"),
            ("HEAD", "/head-chunked"),
            ("GET", "/after")
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_204_and_304_have_no_body_and_the_connection_stays_in_sync() {
    let rig = rig().await;
    rig.upstream.route(
        "/no-content",
        Reply::raw("HTTP/1.1 204 No Content\r\nX-Deleted: yes\r\n\r\n"),
    );
    // A 304 may carry the Content-Length of the representation it stands for.
    rig.upstream.route(
        "/not-modified",
        Reply::raw("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 500\r\n\r\n"),
    );
    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"DELETE /no-content HTTP/1.1\r\nHost: app.test\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 204, "{response:?}");
    assert_eq!(response.header("x-deleted"), Some("yes"));
    for framing in ["transfer-encoding", "content-length"] {
        assert!(
            response.header(framing).is_none(),
            "{framing}: {response:?}"
        );
    }
    assert_still_in_sync(&mut app).await;

    let response = exchange(
        &mut app,
        b"GET /not-modified HTTP/1.1\r\nHost: app.test\r\nIf-None-Match: \"v1\"\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 304, "{response:?}");
    assert_eq!(response.header("etag"), Some("\"v1\""));
    assert_still_in_sync(&mut app).await;

    let requests = rig.upstream.wait_requests(4).await;
    let conditional = &to_path(&requests, "/not-modified")[0];
    assert_eq!(conditional.values("if-none-match"), ["\"v1\""]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let rig = rig().await;
    let mut app = rig.app().await;
    app.send(
        b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n\
          POST /two-is-longer HTTP/1.1\r\nHost: app.test\r\nContent-Length: 7\r\n\r\npayload\
          GET /three?q=3 HTTP/1.1\r\nHost: app.test\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(app.read_response(false).await.unwrap());
    }
    assert_default(&answers[0], "GET", "/one");
    assert_default(&answers[1], "POST", "/two-is-longer");
    assert_default(&answers[2], "GET", "/three?q=3");

    let requests = rig.upstream.wait_requests(3).await;
    let post = &to_path(&requests, "/two-is-longer")[0];
    assert_eq!(post.body, b"payload");
    assert_eq!(to_path(&requests, "/one").len(), 1);
    assert_eq!(to_path(&requests, "/three")[0].target, "/three?q=3");
    for request in &requests {
        rig.assert_rewritten(request);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_1_0_requests_are_answered_without_chunking() {
    let rig = rig().await;
    rig.upstream.route(
        "/chunked",
        Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .then(chunked(&[(b"old ", None), (b"client", None)], &[])),
    );
    for (path, want) in [("/old", "GET /old"), ("/chunked", "old client")] {
        let mut app = rig.app().await;
        // No Host: HTTP/1.0 does not require one.
        let response = exchange(
            &mut app,
            format!("GET {path} HTTP/1.0\r\nAuthorization: Bearer app-token\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(response.version.starts_with("HTTP/1."), "{response:?}");
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.text(), want, "{path}");
        assert!(
            response.header("transfer-encoding").is_none(),
            "{path}: an HTTP/1.0 client must not get Transfer-Encoding: {response:?}"
        );
        // No keep-alive asked for: the proxy closes after the answer.
        assert!(
            app.closed_by_peer().await.unwrap(),
            "{path}: the connection is closed"
        );
    }
    let requests = rig.upstream.wait_requests(2).await;
    for request in &requests {
        let token = rig.assert_rewritten(request);
        assert_ne!(token, "app-token");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_bodies_reach_the_upstream() {
    let rig = rig().await;
    // A client that waits for 100 Continue before sending the body.
    let mut app = rig.app().await;
    app.send(
        b"POST /expect HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n\
          Content-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    // The upstream would take the body, so the only conforming first answer is 100.
    let interim = app.read_head_status().await.unwrap();
    assert_eq!(interim, 100, "100 Continue before the body");
    let response = exchange(&mut app, b"hello world").await;
    assert_default(&response, "POST", "/expect");
    assert_still_in_sync(&mut app).await;

    // A client that sends the body at once.
    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"PUT /eager HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\nfive!",
    )
    .await;
    assert_default(&response, "PUT", "/eager");
    assert!(response.interim.iter().all(|&s| s == 100), "{response:?}");
    assert_still_in_sync(&mut app).await;

    let requests = rig.upstream.wait_requests(4).await;
    assert_eq!(to_path(&requests, "/expect")[0].body, b"hello world");
    assert_eq!(to_path(&requests, "/eager")[0].body, b"five!");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_request_bodies_reach_the_upstream_whole() {
    let rig = rig().await;
    let mut app = rig.app().await;
    let small = chunked(
        &[(b"hello", Some("ext=1")), (b" world", None)],
        &[("X-Request-Trailer", "t")],
    );
    let mut request = b"POST /small HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    request.extend(&small);
    let response = exchange(&mut app, &request).await;
    assert_default(&response, "POST", "/small");

    // Far over the replay buffer: streamed, in writes that split chunks.
    let payload = pattern_bytes(3 * MIB / 2);
    let chunks: Vec<(&[u8], Option<&str>)> = payload.chunks(50_021).map(|c| (c, None)).collect();
    let body = chunked(&chunks, &[]);
    app.send(b"PUT /large HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for part in body.chunks(65_537) {
        app.send(part).await.unwrap();
    }
    let response = app.read_response(false).await.unwrap();
    assert_default(&response, "PUT", "/large");
    assert_still_in_sync(&mut app).await;

    let requests = rig.upstream.wait_requests(3).await;
    assert_eq!(to_path(&requests, "/small")[0].body, b"hello world");
    let large = &to_path(&requests, "/large")[0];
    assert_eq!(large.body.len(), payload.len());
    assert!(large.body == payload, "the streamed body differs");
    for request in &requests {
        rig.assert_rewritten(request);
    }
}

/// `GET path` for even rounds, a `POST path` with an 8-byte body (`round NN`) for odd ones: a
/// POST may not be retried once sent, so a stale connection must be noticed before it is used.
fn round_request(round: usize, path: &str) -> Vec<u8> {
    if round.is_multiple_of(2) {
        return get(path);
    }
    format!("POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 8\r\n\r\nround {round:02}")
        .into_bytes()
}

/// Runs `rounds` requests (see [`round_request`]) to `/stale/N` on one app connection,
/// calling `between` after each answer, and checks each went upstream once, on a new
/// connection, with its body.
async fn requests_across_upstream_closes<F, Fut>(rig: &Rig, rounds: usize, mut between: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut app = rig.app().await;
    for round in 0..rounds {
        let path = format!("/stale/{round}");
        app.send(&round_request(round, &path)).await.unwrap();
        let response = app.read_response(false).await.unwrap_or_else(|e| {
            panic!("round {round}: {e}\n{}", rig.upstream.describe());
        });
        assert_eq!(
            response.status,
            200,
            "round {round}: {response:?}\n{}",
            rig.upstream.describe()
        );
        assert_eq!(response.text(), "answered", "round {round}");
        between(round).await;
    }
    let requests = rig.upstream.wait_requests(rounds).await;
    for round in 0..rounds {
        let sent = to_path(&requests, &format!("/stale/{round}"));
        assert_eq!(sent.len(), 1, "round {round} went upstream once: {sent:?}");
        if !round.is_multiple_of(2) {
            assert_eq!(sent[0].body, format!("round {round:02}").into_bytes());
        }
    }
    let mut connections: Vec<usize> = requests.iter().map(|r| r.connection).collect();
    connections.dedup();
    assert_eq!(
        connections.len(),
        requests.len(),
        "each request after a close went on a new connection: {connections:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_closing_the_connection_after_answering_is_not_a_502() {
    // The upstream closes right after each answer, without saying so in the answer.
    let rig = rig().await;
    rig.upstream
        .respond_with(|_| Reply::ok(b"answered").then_close());
    let upstream = rig.upstream.clone();
    requests_across_upstream_closes(&rig, 20, |_| {
        let upstream = upstream.clone();
        async move {
            let last = upstream.requests().last().expect("recorded").connection;
            upstream.wait_closed(last).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interim_answers_before_the_final_one_are_not_the_answer() {
    let rig = rig().await;
    rig.upstream.route(
        "/hints",
        Reply::raw("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            .then("HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n")
            .then("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLink: </style.css>\r\n\r\nhints"),
    );
    let mut app = rig.app().await;
    let response = exchange(&mut app, &get("/hints")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "hints");
    assert!(
        response.interim.iter().all(|&s| s == 103),
        "only the upstream's interim answers, if any: {response:?}"
    );
    assert_still_in_sync(&mut app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apps_connection_close_is_honoured() {
    let rig = rig().await;
    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"GET /bye HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_default(&response, "GET", "/bye");
    assert!(app.closed_by_peer().await.unwrap(), "the proxy closes");
    let request = &rig.upstream.wait_requests(1).await[0];
    rig.assert_rewritten(request);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_connection_close_does_not_end_the_apps_connection() {
    let rig = rig().await;
    // Says close and closes; says close but leaves the socket open (the proxy must still not
    // send another request on it).
    rig.upstream.route(
        "/last",
        Reply::raw("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast")
            .then_close(),
    );
    rig.upstream.route(
        "/last-open",
        Reply::raw("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\nlast-open"),
    );
    let mut app = rig.app().await;
    for (path, body) in [("/last", "last"), ("/last-open", "last-open")] {
        let response = exchange(&mut app, &get(path)).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.text(), body);
        assert_still_in_sync(&mut app).await;
    }
    let requests = rig.upstream.wait_requests(4).await;
    for pair in requests.chunks(2) {
        assert_eq!(pair[1].path(), "/after");
        assert_ne!(
            pair[0].connection, pair[1].connection,
            "a request went on a connection the upstream said it would close: {requests:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mib_sized_answers_arrive_byte_exact() {
    let rig = rig().await;
    let body = pattern_bytes(MIB);
    let mut sized = format!("HTTP/1.1 200 OK\r\nContent-Length: {MIB}\r\n\r\n").into_bytes();
    sized.extend(&body);
    rig.upstream.route("/sized", Reply::raw(sized));
    // Chunks of uneven sizes (1 byte to ~64 KiB).
    let mut chunks: Vec<(&[u8], Option<&str>)> = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < body.len() {
        let end = (at + size).min(body.len());
        chunks.push((&body[at..end], None));
        at = end;
        size = size * 7 % 65_521 + 1;
    }
    let mut streamed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    streamed.extend(chunked(&chunks, &[]));
    rig.upstream.route("/chunked", Reply::raw(streamed));

    let mut app = rig.app().await;
    for path in ["/sized", "/chunked", "/sized"] {
        let response = exchange(&mut app, &get(path)).await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.body.len(), MIB, "{path}");
        assert!(response.body == body, "{path}: the body differs");
    }
    assert_still_in_sync(&mut app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn request_headers_are_rewritten_and_the_rest_forwarded_in_order() {
    let rig = rig_at("/base/").await;
    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"GET /v1/items?q=a%20b&x=1&x=2 HTTP/1.1\r\n\
          Host: app.example.internal\r\n\
          Authorization: Bearer app-token\r\n\
          Connection: keep-alive, X-Drop-Me\r\n\
          X-Drop-Me: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Authorization: Basic cHJveHk6cHJveHk=\r\n\
          Proxy-Connection: keep-alive\r\n\
          Proxy-Client-IP: 10.0.0.1\r\n\
          TE: trailers\r\n\
          X-Multi: one\r\n\
          Accept: application/json\r\n\
          X-Multi: two\r\n\
          X-Value: MiXeD  case,  spaces\r\n\
          X-Multi: three\r\n\
          User-Agent: raw-test/1\r\n\
          \r\n",
    )
    .await;
    assert_default(&response, "GET", "/base/v1/items?q=a%20b&x=1&x=2");
    let bare = exchange(&mut app, &get("/?only=query")).await;
    assert_default(&bare, "GET", "/base/?only=query");

    let requests = rig.upstream.wait_requests(2).await;
    let request = &requests[0];
    let token = rig.assert_rewritten(request);
    assert_ne!(token, "app-token");
    for dropped in [
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "proxy-client-ip",
        "te",
    ] {
        assert!(
            request.values(dropped).is_empty(),
            "`{dropped}` reached the upstream: {request:?}"
        );
    }
    for connection in request.values("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-drop-me"),
            "the app's Connection reached the upstream: {connection}"
        );
    }
    assert_eq!(request.values("x-multi"), ["one", "two", "three"]);
    assert_eq!(request.values("accept"), ["application/json"]);
    assert_eq!(request.values("x-value"), ["MiXeD  case,  spaces"]);
    assert_eq!(request.values("user-agent"), ["raw-test/1"]);
    rig.assert_rewritten(&requests[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_answer_headers_are_dropped_and_repeated_ones_keep_their_order() {
    let rig = rig().await;
    rig.upstream.route(
        "/hop",
        Reply::raw(
            "HTTP/1.1 200 OK\r\n\
             Set-Cookie: a=1; Path=/\r\n\
             Connection: keep-alive, X-Hop\r\n\
             X-Hop: secret\r\n\
             Keep-Alive: timeout=5, max=100\r\n\
             Proxy-Authenticate: Basic realm=\"x\"\r\n\
             Proxy-Foo: bar\r\n\
             Upgrade: h2c\r\n\
             X-Kept: yes\r\n\
             Set-Cookie: b=2\r\n\
             Vary: Accept\r\n\
             Set-Cookie: c=3; HttpOnly\r\n\
             Vary: Origin\r\n\
             Content-Length: 2\r\n\
             \r\nok",
        ),
    );
    let mut app = rig.app().await;
    let response = exchange(&mut app, &get("/hop")).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.text(), "ok");
    for dropped in [
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-foo",
        "upgrade",
    ] {
        assert!(
            response.header(dropped).is_none(),
            "`{dropped}` reached the app: {response:?}"
        );
    }
    for connection in response.values("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-hop"),
            "the upstream's Connection reached the app: {connection}"
        );
    }
    assert_eq!(response.header("x-kept"), Some("yes"));
    assert_eq!(
        response.values("set-cookie"),
        ["a=1; Path=/", "b=2", "c=3; HttpOnly"],
        "Set-Cookie lines are never merged or reordered"
    );
    // A list header may be joined into one line, but its order is kept.
    assert_eq!(response.values("vary").join(", "), "Accept, Origin");
    assert_still_in_sync(&mut app).await;
}

fn assert_problem(response: &Response, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{response:?}"
    );
    let problem: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(problem["status"], status, "{problem}");
    assert_eq!(problem["connection"], NAME, "{problem}");
    for field in ["type", "title", "detail"] {
        assert!(
            problem.get(field).is_some(),
            "problem has `{field}`: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_hanging_up_or_talking_garbage_gives_502() {
    let rig = rig().await;
    rig.upstream.route("/hang-up", Reply::hang_up());
    rig.upstream.route(
        "/garbage",
        Reply::raw("this is not http at all\r\n\r\n").then_close(),
    );
    rig.upstream.route(
        "/half-head",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Le").then_close(),
    );
    rig.upstream.route(
        "/bad-length",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n0123456789").then_close(),
    );
    // Two different lengths: the framing is unknowable (RFC 9112 §6.3: a proxy MUST answer
    // 502).
    rig.upstream.route(
        "/two-lengths",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello"),
    );
    for path in [
        "/hang-up",
        "/garbage",
        "/half-head",
        "/bad-length",
        "/two-lengths",
    ] {
        let mut app = rig.app().await;
        let response = exchange(&mut app, &get(path)).await;
        assert_problem(&response, 502);
        let requests = rig.upstream.requests();
        assert!(
            !to_path(&requests, path).is_empty(),
            "{path}: the request went upstream"
        );
    }
    let mut app = rig.app().await;
    assert_still_in_sync(&mut app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_answer_body_is_not_passed_off_as_complete() {
    let rig = rig().await;
    rig.upstream.route(
        "/short-length",
        Reply::raw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").then_close(),
    );
    rig.upstream.route(
        "/short-chunked",
        Reply::raw("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .then_close(),
    );
    for path in ["/short-length", "/short-chunked"] {
        let mut app = rig.app().await;
        app.send(&get(path)).await.unwrap();
        // Either the proxy noticed before answering (502), or the app's answer is cut off
        // too: a complete 200 would hand the app a truncated body as if it were whole.
        match app.read_response(false).await {
            Ok(response) => assert_problem(&response, 502),
            Err(error) => assert_eq!(
                error.kind(),
                std::io::ErrorKind::UnexpectedEof,
                "{path}: {error}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_and_nothing_goes_upstream() {
    let rig = rig().await;
    // (request, whether RFC 9112 requires the connection to be closed after the 400)
    let cases: [(&[u8], bool); 10] = [
        (b"G@T / HTTP/1.1\r\nHost: app.test\r\n\r\n", false),
        (b"GET / HTZP/1.1\r\nHost: app.test\r\n\r\n", false),
        (b"this is not a request\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Space : x\r\n\r\n", false),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nNoColonHere\r\n\r\n", false),
        (b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: abc\r\n\r\nabc", false),
        (
            b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            false,
        ),
        // Chunked is not the final coding: the body length cannot be known (§6.3).
        (
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
            true,
        ),
    ];
    for (raw, must_close) in cases {
        let mut app = rig.app().await;
        let response = exchange(&mut app, raw).await;
        let raw = String::from_utf8_lossy(raw);
        assert_eq!(response.status, 400, "{raw:?}: {response:?}");
        if must_close {
            assert!(app.closed_by_peer().await.unwrap(), "{raw:?}: closed");
        }
    }
    assert!(
        rig.upstream.requests().is_empty(),
        "nothing was forwarded: {:?}",
        rig.upstream.requests()
    );
    let mut app = rig.app().await;
    assert_still_in_sync(&mut app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn obs_folded_header_lines_are_rejected_or_unfolded() {
    // RFC 9112 §5.2: a server rejects a folded request line with 400 or unfolds it; a proxy
    // answers 502 to a folded response line or unfolds it. Never forwarded folded.
    let rig = rig().await;
    rig.upstream.route(
        "/folded",
        Reply::raw("HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
    );
    let mut app = rig.app().await;
    let response = exchange(&mut app, &get("/folded")).await;
    if response.status == 502 {
        assert_problem(&response, 502);
    } else {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.values("x-folded"), ["a b"], "{response:?}");
    }

    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"GET /fold-request HTTP/1.1\r\nHost: app.test\r\nX-Folded: a\r\n b\r\n\r\n",
    )
    .await;
    let forwarded = to_path(&rig.upstream.requests(), "/fold-request");
    if response.status == 400 {
        assert!(forwarded.is_empty(), "{forwarded:?}");
    } else {
        assert_default(&response, "GET", "/fold-request");
        assert_eq!(forwarded[0].values("x-folded"), ["a b"], "{forwarded:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn content_length_frames_the_body_and_the_rest_is_the_next_request() {
    let rig = rig().await;
    let mut app = rig.app().await;
    // Ten bytes follow a head that announces five: "hello" is the body, "PATCH" starts the
    // next request line.
    app.send(
        b"POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\n\
          helloPATCH /second HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let first = app.read_response(false).await.unwrap();
    assert_default(&first, "POST", "/first");
    let second = app.read_response(false).await.unwrap();
    assert_default(&second, "PATCH", "/second");

    let requests = rig.upstream.wait_requests(2).await;
    let first = &to_path(&requests, "/first")[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.body, b"hello");
    let second = &to_path(&requests, "/second")[0];
    assert_eq!(second.method, "PATCH");
    assert!(second.body.is_empty(), "{second:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_both_length_and_chunking_is_framed_by_the_chunking_and_ends_the_connection()
{
    // The request-smuggling shape: RFC 9112 §6.1 lets the server reject it or frame it by
    // Transfer-Encoding alone, and either way MUST close the connection afterwards, so the
    // bytes after the chunked body are never read as a request.
    let rig = rig().await;
    let mut app = rig.app().await;
    let response = exchange(
        &mut app,
        b"POST /both HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n",
    )
    .await;
    assert!(app.closed_by_peer().await.unwrap(), "closed: {response:?}");
    let requests = rig.upstream.requests();
    assert!(to_path(&requests, "/smuggled").is_empty(), "{requests:?}");
    if response.status == 400 {
        assert!(requests.is_empty(), "{requests:?}");
    } else {
        assert_default(&response, "POST", "/both");
        let both = &to_path(&requests, "/both")[0];
        assert_eq!(both.body, b"hello");
        assert!(
            both.values("content-length").iter().all(|&v| v == "5"),
            "the app's Content-Length was not forwarded: {both:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_with_both_length_and_chunking_reaches_the_app_by_its_chunking() {
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an intermediary that
    // forwards such a message MUST first remove the Content-Length.
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
    if response.status == 502 {
        assert_problem(&response, 502);
    } else {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.text(), "hello", "{response:?}");
    }
    assert_still_in_sync(&mut app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_1_1_requests_without_exactly_one_host_get_400() {
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request that lacks a Host
    // header field or has more than one.
    let rig = rig().await;
    for raw in [
        &b"GET /no-host HTTP/1.1\r\n\r\n"[..],
        b"GET /two-hosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    ] {
        let mut app = rig.app().await;
        let response = exchange(&mut app, raw).await;
        assert_eq!(
            response.status,
            400,
            "{:?}: {response:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(rig.upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_closing_idle_pooled_connections_is_not_a_502() {
    if RUNTIME.contains("fast_path = false") {
        // hyper-util's pool sometimes reuses a connection the upstream closed while it sat
        // idle (about 1 run in 100 on a busy machine: 502, or a hang until `timeout`; see
        // hyperium/hyper#3553). Pinned on the fast path only.
        eprintln!("skipped through hyper: a known hyper-util race");
        return;
    }
    // The upstream's idle timeout: it closes kept-alive connections while they sit in the
    // proxy's pool, between two requests of the app.
    let rig = rig().await;
    rig.upstream.respond_with(|_| Reply::ok(b"answered"));
    let upstream = rig.upstream.clone();
    requests_across_upstream_closes(&rig, 40, |_| {
        let upstream = upstream.clone();
        async move { upstream.close_idle().await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_connection_closed_before_answering_is_retried_only_when_idempotent() {
    if RUNTIME.contains("fast_path = false") {
        // hyper-util does not resend a request once it was written (a 502 either way).
        eprintln!("skipped through hyper: the retry is the fast path's");
        return;
    }
    // The upstream hangs up, unanswered, on every request but the first of a connection: the
    // race of an upstream closing a kept-alive connection as the next request arrives.
    let rig = rig().await;
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    rig.upstream.respond_with(move |request| {
        if seen.lock().unwrap().insert(request.connection) {
            Reply::ok(b"answered")
        } else {
            Reply::hang_up()
        }
    });
    let mut app = rig.app().await;
    assert_eq!(exchange(&mut app, &get("/first")).await.status, 200);
    // A GET is sent again on a new connection.
    let again = exchange(&mut app, &get("/again")).await;
    assert_eq!(again.status, 200, "{again:?}");
    let sent: Vec<usize> = rig
        .upstream
        .requests()
        .iter()
        .filter(|r| r.path() == "/again")
        .map(|r| r.connection)
        .collect();
    assert_eq!(sent.len(), 2, "once on the pooled connection, once on a new one");
    assert_ne!(sent[0], sent[1]);
    // A POST may have been acted on: it is not sent again, the app gets a 502.
    let post = b"POST /once HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi";
    let response = exchange(&mut app, post).await;
    assert_eq!(response.status, 502, "{response:?}");
    let posts = rig.upstream.requests();
    assert_eq!(posts.iter().filter(|r| r.path() == "/once").count(), 1);
}

include!("framing.rs");
include!("limits.rs");
