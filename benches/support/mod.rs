//! Servers the benches run against on `127.0.0.1:0`: a token endpoint with a known latency
//! that counts its requests and can be told to issue a new token (so the upstream rejects
//! the old one), and a small-JSON upstream that checks the bearer token; a bench's own
//! postgres database ([`db`]) and bearerd as a child process ([`replica`]). `tests/support/`
//! cannot be imported from benches, and these stay deliberately minimal.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bearerd::app::App;
use bearerd::config::Config;
use bearerd::serve::Workers;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpSocket;

pub mod db;
pub mod records;
pub mod replica;

/// The environment variable `name` as a number, or `default` when unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub const JSON: &str = r#"{"id":42,"name":"widget","price":9.5,"tags":["a","b"]}"#;

/// Serves `handler` on a fresh `127.0.0.1:0` listener (HTTP/1.1 and h2c), forever.
pub async fn serve<H, F>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    // A deep backlog: the stampede bench opens thousands of connections at once.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let listener = socket.listen(8192).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |r| {
                    let f = handler(r);
                    async move { Ok::<_, Infallible>(f.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A client-credentials token endpoint: every request is counted and answered after
/// `latency` with token `tok-N` (N: this request's number, from 1) living `expires_in`.
#[derive(Clone)]
pub struct TokenEndpoint {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    /// Requests being answered now, and the most at once.
    in_flight: Arc<(AtomicU64, AtomicU64)>,
}

impl TokenEndpoint {
    pub async fn start(latency: Duration, expires_in: Option<u64>) -> Self {
        let requests = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let counter = Arc::clone(&requests);
        let flight = Arc::clone(&in_flight);
        let addr = serve(move |request: Request<Incoming>| {
            let counter = Arc::clone(&counter);
            let flight = Arc::clone(&flight);
            async move {
                let _ = request.into_body().collect().await;
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let now = flight.0.fetch_add(1, Ordering::SeqCst) + 1;
                flight.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(latency).await;
                flight.0.fetch_sub(1, Ordering::SeqCst);
                let expires = expires_in
                    .map(|e| format!(r#","expires_in":{e}"#))
                    .unwrap_or_default();
                let body =
                    format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer"{expires}}}"#);
                json(StatusCode::OK, body)
            }
        })
        .await;
        Self {
            addr,
            requests,
            in_flight,
        }
    }

    /// The most requests it answered at once.
    pub fn max_in_flight(&self) -> u64 {
        self.in_flight.1.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The oldest token number an upstream accepts; raise it to make the provider reject the
/// current token (as if it expired there first).
pub type Gate = Arc<AtomicU64>;

/// An upstream answering every request with [`JSON`], or 401 when the bearer token is older
/// than `gate`. `POST /__reject-below/N` sets the gate (for an upstream in another process).
pub async fn upstream(gate: Gate) -> SocketAddr {
    serve(move |request: Request<Incoming>| {
        let gate = Arc::clone(&gate);
        async move {
            if let Some(n) = request.uri().path().strip_prefix("/__reject-below/") {
                gate.store(n.parse().unwrap_or(0), Ordering::SeqCst);
                return json(StatusCode::OK, "{}".into());
            }
            let number = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer tok-"))
                .and_then(|n| n.parse::<u64>().ok());
            match number {
                Some(n) if n >= gate.load(Ordering::SeqCst) => {
                    json(StatusCode::OK, JSON.to_owned())
                }
                _ => json(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"invalid_token"}"#.into(),
                ),
            }
        }
    })
    .await
}

pub fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// bearerd with one client-credentials connection "bench" from `upstream` to `tokens`, its
/// proxy served by `workers` (as `bearerd run` does) or on the calling runtime.
pub async fn bearerd(
    tokens: &TokenEndpoint,
    upstream: SocketAddr,
    workers: Option<&Workers>,
) -> App {
    let dir = std::env::temp_dir().join(format!("bearerd-bench-{}", std::process::id()));
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9901"
[store]
kind = "file"
dir = "{dir}"
[[connection]]
name = "bench"
provider = "oauth2"
listen = "127.0.0.1:0"
upstream = "http://{upstream}"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "bench"
client_secret = "bench-secret"
"#,
        dir = dir.display(),
        token_url = tokens.url(),
    );
    let config = Config::from_toml_str(&text).expect("bench config");
    let app = App::start_on(config, workers)
        .await
        .expect("bearerd starts");
    // Ready once the first token is in the cell.
    let connection = app.connection("bench").expect("connection bench");
    tokio::time::timeout(Duration::from_secs(10), connection.token())
        .await
        .expect("a first token in 10 s")
        .expect("a first token");
    app
}
