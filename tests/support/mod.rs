//! Test-support servers for bearerd integration tests.
//!
//! * [`TokenServer`]: a scriptable OAuth 2.0 token endpoint (PROVIDERS.md §4) with rotation modes,
//!   scripted failures, RFC 7009 revocation and counters for assertions.
//! * [`Upstream`]: a resource server that checks bearer tokens against a [`TokenServer`] and
//!   offers echo, streaming, delay, status and Cloudbeds-style paths (HTTP/1.1 and h2c).
//!
//! Both bind `127.0.0.1:0` and serve from spawned tokio tasks, so they live as long as the test's
//! runtime. Small client helpers ([`get`], [`post_form`], [`send`]) are included for tests that
//! talk to the servers (or to the proxy) directly. Use with `mod support;` in a `tests/*.rs` file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod bearerd;
pub mod connect_rig;
pub mod raw_upstream;
pub mod tenant_rig;
pub mod token_server;
pub mod upstream;

#[allow(unused_imports)]
pub use bearerd::{
    Bearerd, ac_config, cc_config, cc_config_for, seed_store, stored, temp_store_dir,
};
#[allow(unused_imports)]
pub use token_server::{
    ClientAuth, Failure, Rotation, TokenRequestLog, TokenServer, TokenServerConfig,
};
#[allow(unused_imports)]
pub use upstream::{Upstream, pattern_bytes};

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// Error type used by the support code and its helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Binds `127.0.0.1:0` and serves every accepted connection with `handler` (HTTP/1.1 and h2c via
/// the hyper-util auto builder) from a spawned task. A handler error closes the connection
/// without a response (HTTP/1.1) or resets the stream (h2).
pub(crate) async fn spawn_server<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, BoxError>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("support server: bind 127.0.0.1:0 failed: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("support server: local_addr failed: {e}"),
    };
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(handler);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Lower-case hex SHA-256 of `data` (matches the upstream echo's `body_sha256`).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Basic` credentials as RFC 6749 §2.3.1 wants them: id and secret form-urlencoded, then base64.
pub fn basic_auth(client_id: &str, client_secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A fully read response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A header as a string (first value), if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A plain-HTTP hyper-util legacy client (HTTP/1.1; `http2_only` for h2c prior knowledge).
pub fn http_client(http2_only: bool) -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .build_http()
}

/// Sends `req` on a fresh HTTP/1.1 client and reads the whole response.
pub async fn send(req: Request<Full<Bytes>>) -> Result<TestResponse, BoxError> {
    send_with(&http_client(false), req).await
}

/// Sends `req` with `client` and reads the whole response.
pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<TestResponse, BoxError> {
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(TestResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// `GET url`, with `Authorization: Bearer <token>` when given.
pub async fn get(url: &str, bearer: Option<&str>) -> Result<TestResponse, BoxError> {
    let mut req = Request::builder().method(Method::GET).uri(url);
    if let Some(t) = bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    send(req.body(Full::new(Bytes::new()))?).await
}

/// `POST url` with an `application/x-www-form-urlencoded` body; `basic` adds
/// `Authorization: Basic` (see [`basic_auth`]).
pub async fn post_form(
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<TestResponse, BoxError> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = Request::builder().method(Method::POST).uri(url).header(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    if let Some((id, secret)) = basic {
        req = req.header(AUTHORIZATION, basic_auth(id, secret));
    }
    send(req.body(Full::new(Bytes::from(body)))?).await
}

/// `grant_type=refresh_token` with the server's own `client_secret_post` credentials.
pub async fn refresh_post(
    server: &TokenServer,
    refresh_token: &str,
) -> Result<TestResponse, BoxError> {
    let (id, secret) = (server.client_id(), server.client_secret());
    post_form(
        &server.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await
}

/// A port on 127.0.0.1 that was free a moment ago (bound, read, released), for a child process
/// whose listen address must be written into its config before it starts.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `http://127.0.0.1:PORT` where nothing listens (the port was bound, then released).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Polls `check` every 20 ms until it returns `Some`; panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "bearerd-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The built `bearerd` binary running as a child process. Its stdout and stderr are drained
/// by threads from the start (a chatty log must never block the daemon on a full pipe). A
/// daemon still running when this is dropped is killed.
pub struct Daemon {
    child: Option<std::process::Child>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

/// What a [`Daemon`] printed and how it ended.
#[derive(Debug)]
pub struct DaemonOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Daemon {
    /// Starts `bearerd ARGS...` with `envs` set and bearerd's own variables cleared.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_bearerd"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "BEARERD_CONFIG",
            "BEARERD_ADMIN",
            "BEARERD_LOG",
            "BEARERD_LOG_FORMAT",
        ] {
            command.env_remove(var);
        }
        command.envs(envs.iter().copied());
        let mut child = command.spawn().expect("spawn the bearerd binary");
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut out);
                }
                out
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        Daemon {
            child: Some(child),
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// The exit status if the daemon has already exited.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM (with `kill -TERM PID`) and waits up to `limit` for the exit.
    pub async fn terminate(self, limit: Duration) -> DaemonOutput {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
        self.wait(limit).await
    }

    /// Waits up to `limit` for the daemon to exit by itself, then collects its output.
    pub async fn wait(mut self, limit: Duration) -> DaemonOutput {
        let status = eventually(limit, "bearerd to exit", || {
            let status = self.try_status();
            async move { status }
        })
        .await;
        self.child = None;
        let collect = |handle: Option<std::thread::JoinHandle<Vec<u8>>>| {
            let bytes = handle.map(|h| h.join().unwrap_or_default());
            String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
        };
        DaemonOutput {
            status,
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `bearerd [global_args] run --config FILE` on `ports` fresh free ports (`ports[0]` is
/// the admin listener) with the config `config(&ports)` written into `dir`, and waits until
/// `/readyz` answers 200. If a chosen port was taken by someone else between choosing and
/// binding (bearerd exits saying it cannot listen), it starts again on new ports.
pub async fn start_daemon(
    dir: &TempDir,
    global_args: &[&str],
    envs: &[(&str, &str)],
    ports: usize,
    config: impl Fn(&[u16]) -> String,
) -> (Daemon, Vec<u16>) {
    for _attempt in 0..5 {
        let mut chosen: Vec<u16> = Vec::new();
        while chosen.len() < ports.max(1) {
            let port = free_port();
            if !chosen.contains(&port) {
                chosen.push(port);
            }
        }
        let path = dir.file("bearerd.toml", &config(&chosen));
        let mut args = global_args.to_vec();
        args.extend(["run", "--config", path.to_str().expect("utf-8 temp path")]);
        let mut daemon = Daemon::spawn(&args, envs);
        let ready_url = format!("http://127.0.0.1:{}/readyz", chosen[0]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let exited = loop {
            if daemon.try_status().is_some() {
                break true;
            }
            let last = match get(&ready_url, None).await {
                Ok(r) if r.status == StatusCode::OK => break false,
                Ok(r) => format!("{} {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                // Say why: what /readyz last said and what bearerd printed.
                let out = daemon.terminate(Duration::from_secs(5)).await;
                panic!(
                    "bearerd not ready after 20 s; last /readyz: {last}\nstderr:\n{}",
                    out.stderr
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if !exited {
            return (daemon, chosen);
        }
        let out = daemon.wait(Duration::from_secs(5)).await;
        assert!(
            out.stderr.contains("cannot listen") || out.stderr.contains("in use"),
            "bearerd exited before it was ready ({}):\n{}",
            out.status,
            out.stderr
        );
    }
    panic!("could not start bearerd on free ports in 5 attempts");
}

/// `workers` keep-alive clients sending `GET /load/W` for `duration`, worker W through
/// `proxies[W % len]`. Returns (answered 200, anything else); each failure is printed.
pub async fn load(proxies: &[String], workers: usize, duration: Duration) -> (usize, usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let client = http_client(false);
    let until = tokio::time::Instant::now() + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
            let uri = format!("{}/load/{w}", proxies[w % proxies.len()]);
            tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    let request = Request::get(&uri).body(Full::new(Bytes::new())).unwrap();
                    match send_with(&client, request).await {
                        Ok(r) if r.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("load: {} {}", r.status, r.text());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("load: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}
