//! Proxying (SPEC section 3) through a client_credentials connection to the echoing test
//! upstream: token injection, what is forwarded and what is dropped, streaming both ways,
//! origin-form only, h2c, and the problem+json answers bearerd produces itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::{
    Bearerd, Failure, TestResponse, TokenServer, TokenServerConfig, Upstream, cc_config, dead_url,
    get, http_client, pattern_bytes, send, send_with, sha256_hex,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const NAME: &str = "api";
const MIB: usize = 1 << 20;

async fn setup(extra: &str) -> (TokenServer, Upstream, Bearerd) {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config(NAME, &tokens, &upstream, extra)).await;
    (tokens, upstream, bearerd)
}

/// The values the upstream echo saw for header `name` (empty if none).
fn echoed(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The one access token the upstream saw, checked to be a live token the server issued.
fn injected_token(tokens: &TokenServer, echo: &Value) -> String {
    let auth = echoed(echo, "authorization");
    assert_eq!(
        auth.len(),
        1,
        "exactly one Authorization upstream: {auth:?}"
    );
    let token = auth[0]
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer value: {}", auth[0]))
        .to_owned();
    assert!(
        tokens.issued_secrets().contains(&token),
        "upstream saw a token the token server never issued"
    );
    assert!(tokens.validate_access(&token), "the injected token is live");
    token
}

fn assert_problem(response: &TestResponse, status: StatusCode) -> Value {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("application/problem+json"),
        "bearerd's own errors are problem+json"
    );
    let body = response.json();
    for field in ["type", "title", "status", "detail", "connection"] {
        assert!(body.get(field).is_some(), "problem has `{field}`: {body}");
    }
    assert_eq!(body["status"], status.as_u16(), "{body}");
    body
}

fn request(method: Method, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

#[tokio::test(flavor = "multi_thread")]
async fn injects_the_live_token_and_drops_the_apps_authorization() {
    let (tokens, upstream, bearerd) = setup("").await;
    let response = get(
        &format!("{}/v1/things", bearerd.proxy(NAME)),
        Some("app-token-123"),
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let echo = response.json();
    let token = injected_token(&tokens, &echo);
    assert_ne!(token, "app-token-123");
    assert!(token.starts_with("at_"), "an access token, not a secret");
    assert_eq!(upstream.unauthorized(), 0);
    assert_eq!(tokens.client_credentials_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn method_path_query_headers_and_body_go_upstream_with_the_upstreams_host() {
    let (tokens, upstream, bearerd) = setup("").await;
    let upstream_host = upstream.url().trim_start_matches("http://").to_owned();
    let proxy = bearerd.proxy(NAME);
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let body = format!("payload for {method}");
        let response = send(
            request(
                method.clone(),
                &format!("{proxy}/v1/items/a%20b/42?b=2&a=1&a=3&empty="),
            )
            .header("accept", "application/json")
            .header("content-type", "text/plain")
            .header("x-request-id", "req-7")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("host", "app.example.internal")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{method}: {}",
            response.text()
        );
        let echo = response.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["path"], "/v1/items/a%20b/42");
        assert_eq!(echo["query"], "b=2&a=1&a=3&empty=");
        assert_eq!(echoed(&echo, "accept"), ["application/json"]);
        assert_eq!(echoed(&echo, "content-type"), ["text/plain"]);
        assert_eq!(echoed(&echo, "x-request-id"), ["req-7"]);
        assert_eq!(echoed(&echo, "x-multi"), ["one", "two"], "{method}");
        assert_eq!(echoed(&echo, "host"), [upstream_host.as_str()], "{method}");
        assert_eq!(echo["body_len"], body.len(), "{method}");
        assert_eq!(echo["body_sha256"], sha256_hex(body.as_bytes()), "{method}");
        for added in [
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
        ] {
            assert!(echoed(&echo, added).is_empty(), "{added} is not added");
        }
        injected_token(&tokens, &echo);
    }
    // An empty path goes upstream as `/`.
    let echo = get(&proxy, None).await.unwrap().json();
    assert_eq!(echo["path"], "/");
    assert_eq!(echo["query"], Value::Null);
}

const HOP_BY_HOP_REQUEST: [(&str, &str); 9] = [
    ("connection", "x-custom, x-other"),
    ("x-custom", "named-by-connection"),
    ("x-other", "also-named"),
    ("keep-alive", "timeout=5"),
    ("te", "trailers"),
    ("trailer", "x-checksum"),
    ("proxy-authorization", "Basic cHJveHk6cHJveHk="),
    ("proxy-connection", "keep-alive"),
    ("upgrade", "websocket"),
];

async fn echo_with_hop_headers(base: &str) -> Value {
    let mut builder = request(Method::GET, &format!("{base}/v1/hop")).header("x-kept", "yes");
    for (name, value) in HOP_BY_HOP_REQUEST {
        builder = builder.header(name, value);
    }
    let response = send(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    // Control: sent straight to an upstream, the test client really does send them all.
    let open = Upstream::start_open().await;
    let direct = echo_with_hop_headers(&open.url()).await;
    for (name, _) in HOP_BY_HOP_REQUEST {
        assert!(
            !echoed(&direct, name).is_empty(),
            "control: client sent `{name}`"
        );
    }

    let (_tokens, _upstream, bearerd) = setup("").await;
    let echo = echo_with_hop_headers(&bearerd.proxy(NAME)).await;
    for (name, _) in HOP_BY_HOP_REQUEST {
        assert!(
            echoed(&echo, name).is_empty(),
            "hop-by-hop `{name}` reached the upstream: {echo}"
        );
    }
    assert_eq!(
        echoed(&echo, "x-kept"),
        ["yes"],
        "end-to-end headers are kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_response_headers_do_not_reach_the_app() {
    let dropped_headers = ["x-hop", "keep-alive", "proxy-authenticate", "trailer"];
    // Control: the upstream's `/hop` really sends them.
    let open = Upstream::start_open().await;
    let direct = get(&format!("{}/hop", open.url()), None).await.unwrap();
    for name in dropped_headers {
        assert!(
            direct.header(name).is_some(),
            "control: upstream sent `{name}`"
        );
    }

    let (_tokens, _upstream, bearerd) = setup("").await;
    let response = get(&format!("{}/hop", bearerd.proxy(NAME)), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["path"], "/hop");
    for dropped in dropped_headers {
        assert!(
            response.header(dropped).is_none(),
            "hop-by-hop response header `{dropped}` reached the app: {:?}",
            response.headers
        );
    }
    if let Some(connection) = response.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-hop"),
            "the upstream's Connection header reached the app: {connection}"
        );
    }
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("application/json"),
        "end-to-end response headers are kept"
    );
}

/// A request body fed chunk by chunk from a channel: its length is unknown up front.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// 8 MiB of bytes that are not a short period, so a dropped or repeated chunk shows.
fn big_payload() -> Vec<u8> {
    (0..8 * MIB as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_mib_request_body_streams_upstream_intact() {
    // The body is far over replay_body_limit, so it must be streamed, not buffered.
    let (_tokens, _upstream, bearerd) = setup("replay_body_limit = \"64KiB\"").await;
    let payload = Bytes::from(big_payload());
    let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    for with_length in [false, true] {
        let (tx, rx) = mpsc::channel(4);
        let mut builder = request(Method::POST, &format!("{}/upload", bearerd.proxy(NAME)))
            .header("content-type", "application/octet-stream");
        if with_length {
            builder = builder.header("content-length", payload.len());
        }
        let feeder = {
            let payload = payload.clone();
            tokio::spawn(async move {
                for chunk in payload.chunks(100_003) {
                    if tx.send(payload.slice_ref(chunk)).await.is_err() {
                        return;
                    }
                }
            })
        };
        let response = client
            .request(builder.body(ChannelBody(rx)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        feeder.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let echo: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            echo["body_len"],
            payload.len(),
            "content-length: {with_length}"
        );
        assert_eq!(
            echo["body_sha256"],
            sha256_hex(&payload),
            "content-length: {with_length}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_mib_response_streams_back_intact() {
    let (_tokens, _upstream, bearerd) = setup("").await;
    let len = 8 * MIB + 12_345;
    let response = get(&format!("{}/bytes/{len}", bearerd.proxy(NAME)), None)
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.len(), len);
    assert!(
        response.body == pattern_bytes(len),
        "the streamed response body differs from what the upstream sent"
    );
}

/// Writes `raw` on a fresh connection to `addr` and reads one response: (status, head, body).
async fn raw_exchange(addr: &str, raw: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return (head, body.into_owned());
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a whole response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head, body)
}

fn head_header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_and_connect_requests_get_400() {
    let (_tokens, upstream, bearerd) = setup("").await;
    let proxy = bearerd.proxy(NAME);
    let addr = proxy.trim_start_matches("http://");
    let cases = [
        "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        &format!(
            "GET {}/v1/things HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
            upstream.url()
        ),
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ];
    for raw in cases {
        let (status, head, body) = raw_exchange(addr, raw).await;
        let first = raw.lines().next().unwrap_or_default();
        assert_eq!(status, 400, "{first}: {head}\n{body}");
        assert_eq!(
            head_header(&head, "content-type").as_deref(),
            Some("application/problem+json"),
            "{first}: {head}"
        );
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], 400, "{body}");
        assert_eq!(problem["connection"], NAME, "{body}");
    }
    assert_eq!(upstream.requests(), 0, "nothing was forwarded");
    // The same listener still serves an origin-form request.
    let ok = get(&format!("{proxy}/v1/things"), None).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_clients_are_proxied() {
    let (tokens, upstream, bearerd) = setup("").await;
    let client = http_client(true);
    let url = format!("{}/v2/things?page=3", bearerd.proxy(NAME));
    let response = send_with(
        &client,
        request(Method::POST, &url)
            .header("authorization", "Bearer app-token-h2")
            .header("x-request-id", "h2-1")
            .body(Full::new(Bytes::from_static(b"h2 body")))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.version, Version::HTTP_2, "the app spoke h2c");
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v2/things");
    assert_eq!(echo["query"], "page=3");
    assert_eq!(echoed(&echo, "x-request-id"), ["h2-1"]);
    assert_eq!(echo["body_sha256"], sha256_hex(b"h2 body"));
    assert_eq!(
        echoed(&echo, "host"),
        [upstream.url().trim_start_matches("http://")]
    );
    let token = injected_token(&tokens, &echo);
    assert_ne!(token, "app-token-h2");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_upstream_gives_502() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let config = cc_config(NAME, &tokens, &upstream, "").replace(&upstream.url(), &dead_url());
    let bearerd = Bearerd::start(&config).await;
    let response = get(&format!("{}/v1/things", bearerd.proxy(NAME)), None)
        .await
        .unwrap();
    let problem = assert_problem(&response, StatusCode::BAD_GATEWAY);
    assert_eq!(problem["connection"], NAME);
    assert_eq!(
        tokens.client_credentials_requests(),
        1,
        "a token was fetched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_gives_504_after_the_timeout() {
    let (_tokens, _upstream, bearerd) = setup("timeout = \"1s\"").await;
    let proxy = bearerd.proxy(NAME);
    // Fetch the token first so the timer covers only the upstream request. The upstream would
    // answer after 10 s; the 1 s timeout must answer long before.
    let warm = get(&format!("{proxy}/warm"), None).await.unwrap();
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.text());
    let started = tokio::time::Instant::now();
    let response = get(&format!("{proxy}/delay/10000"), None).await.unwrap();
    let elapsed = started.elapsed();
    let problem = assert_problem(&response, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(problem["connection"], NAME);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(8),
        "504 after the 1 s timeout, not before or after the upstream answered: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeout_counts_from_each_request_on_a_kept_alive_connection() {
    // The fast path keeps one timer per app connection, armed by an earlier request: a
    // later slow request must still get its own full timeout, neither less nor more.
    let (_tokens, _upstream, bearerd) = setup("timeout = \"1s\"").await;
    let proxy = bearerd.proxy(NAME);
    let client = support::http_client(false);
    let send = |path: &str| {
        let request = Request::get(format!("{proxy}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        support::send_with(&client, request)
    };
    let slow_gives_504 = |elapsed: Duration, what: &str| {
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(8),
            "{what}: 504 one timeout after the request, not before: {elapsed:?}"
        );
    };
    let begun = tokio::time::Instant::now();
    while begun.elapsed() < Duration::from_millis(700) {
        assert_eq!(send("/quick").await.unwrap().status, StatusCode::OK);
    }
    let started = tokio::time::Instant::now();
    let response = send("/delay/10000").await.unwrap();
    assert_problem(&response, StatusCode::GATEWAY_TIMEOUT);
    slow_gives_504(started.elapsed(), "after quick requests");
    // The scenario, not a synchronisation: the connection idles past the timer it armed.
    assert_eq!(send("/quick").await.unwrap().status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = tokio::time::Instant::now();
    let response = send("/delay/10000").await.unwrap();
    assert_problem(&response, StatusCode::GATEWAY_TIMEOUT);
    slow_gives_504(started.elapsed(), "after an idle spell");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_rejecting_the_client_gives_503() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    tokens.script(Failure::InvalidClient);
    let upstream = Upstream::start(tokens.clone()).await;
    let bearerd = Bearerd::start(&cc_config(NAME, &tokens, &upstream, "")).await;
    let response = get(&format!("{}/v1/things", bearerd.proxy(NAME)), None)
        .await
        .unwrap();
    let problem = assert_problem(&response, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["connection"], NAME);
    assert!(
        response.header("retry-after").is_none(),
        "misconfigured is not transient: no Retry-After"
    );
    assert_eq!(
        upstream.requests(),
        0,
        "nothing goes upstream without a token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_max_body_gets_413() {
    let (_tokens, upstream, bearerd) = setup("max_body = \"1KiB\"").await;
    let url = format!("{}/upload", bearerd.proxy(NAME));
    let post = |len: usize| {
        request(Method::POST, &url)
            .body(Full::new(Bytes::from(vec![b'x'; len])))
            .unwrap()
    };
    let small = send(post(1024)).await.unwrap();
    assert_eq!(
        small.status,
        StatusCode::OK,
        "1 KiB is allowed: {}",
        small.text()
    );
    assert_eq!(upstream.requests(), 1);
    let large = send(post(4096)).await.unwrap();
    let problem = assert_problem(&large, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["connection"], NAME);
    assert_eq!(upstream.requests(), 1, "the large body was not forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_never_connected_authorization_code_connection_gives_503_with_the_connect_url() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"

[[connection]]
name = "hotel"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "{upstream}"
grant = "authorization_code"
authorize_url = "{base}/authorize"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = "{client_secret}"
"#,
        upstream = upstream.url(),
        base = tokens.base_url(),
        token_url = tokens.token_url(),
        client_id = tokens.client_id(),
        client_secret = tokens.client_secret(),
    );
    let bearerd = Bearerd::start(&config).await;
    let response = get(&format!("{}/v1/things", bearerd.proxy("hotel")), None)
        .await
        .unwrap();
    let problem = assert_problem(&response, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["connection"], "hotel");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("http://127.0.0.1:9901/connections/hotel/connect"),
        "detail says where to connect: {detail}"
    );
    assert!(
        response.header("retry-after").is_none(),
        "waiting does not help: no Retry-After"
    );
    assert_eq!(upstream.requests(), 0);
    assert_eq!(tokens.token_requests(), 0, "nothing to redeem yet");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_over_max_body_gets_413() {
    // No Content-Length: the limit can only be noticed while the body streams.
    let (_tokens, _upstream, bearerd) = setup("max_body = \"1KiB\"").await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let (tx, rx) = mpsc::channel(8);
    let feeder = tokio::spawn(async move {
        for _ in 0..4 {
            if tx.send(Bytes::from(vec![b'x'; 1024])).await.is_err() {
                return;
            }
        }
    });
    let url = format!("{}/upload", bearerd.proxy(NAME));
    let response = client
        .request(request(Method::POST, &url).body(ChannelBody(rx)).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    feeder.await.unwrap();
    let response = TestResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    };
    let problem = assert_problem(&response, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["connection"], NAME);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_proxy_star_request_header_is_dropped() {
    // SPEC section 3 lists `Proxy-*` among the hop-by-hop headers, not only the three
    // registered ones: e.g. `Proxy-Client-IP`, which some load balancers add.
    let (_tokens, _upstream, bearerd) = setup("").await;
    let response = send(
        request(Method::GET, &format!("{}/v1/x", bearerd.proxy(NAME)))
            .header("proxy-client-ip", "10.1.2.3")
            .header("proxy-x-debug", "1")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let echo = response.json();
    for name in ["proxy-client-ip", "proxy-x-debug"] {
        assert!(
            echoed(&echo, name).is_empty(),
            "`{name}` (a Proxy-* header) reached the upstream: {echo}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_base_path_prefixes_every_request() {
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    let upstream = Upstream::start(tokens.clone()).await;
    let base = format!("{}/api/v1.3/", upstream.url());
    let config = cc_config(NAME, &tokens, &upstream, "").replace(
        &format!("upstream = \"{}\"", upstream.url()),
        &format!("upstream = \"{base}\""),
    );
    assert!(config.contains(&base));
    let bearerd = Bearerd::start(&config).await;
    let response = get(
        &format!("{}/getReservations?status=confirmed", bearerd.proxy(NAME)),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["path"], "/api/v1.3/getReservations");
    assert_eq!(echo["query"], "status=confirmed");
    injected_token(&tokens, &echo);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_grant_is_served_right_after_start() {
    // A restart (sidecar rollout, crash) with a refresh token in the store: the app's first
    // request must be served, not told "needs_authorization; reconnect it". Several fresh
    // starts, each asked at once, so a start-up window shows.
    for round in 0..5 {
        let tokens = TokenServer::start(TokenServerConfig::default()).await;
        let upstream = Upstream::start(tokens.clone()).await;
        let store = support::TempDir::new("proxy-stored-grant");
        support::seed_store(store.path(), "hotel", &tokens.seed_grant()).await;
        let config = support::ac_config(
            "hotel",
            "oauth2",
            &tokens,
            &upstream.url(),
            store.path(),
            "",
        );
        let bearerd = Bearerd::start(&config).await;
        let state = bearerd.app.connection("hotel").unwrap().snapshot().state;
        assert_ne!(
            state.as_str(),
            "needs_authorization",
            "round {round}: a stored grant is not 'needs authorization'"
        );
        let response = get(&format!("{}/v1/x", bearerd.proxy("hotel")), None)
            .await
            .unwrap();
        assert_eq!(
            response.status,
            StatusCode::OK,
            "round {round}: {}",
            response.text()
        );
    }
}
