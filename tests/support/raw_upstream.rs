//! A scripted raw-TCP HTTP/1.1 upstream, and the byte-level reader it shares with tests.
//!
//! [`RawUpstream`] parses every request itself (no hyper, so it sees what a proxy really put
//! on the wire) and records it: request line, header lines as received (case and order kept),
//! body framing, decoded body, trailers, and which accepted TCP connection carried it. It
//! answers with raw bytes: a [`Reply`] routed by path, else a default reply naming the
//! request (`200`, body `METHOD TARGET`). A reply may be anything a test needs the proxy to
//! cope with (chunked bodies with trailers, close-delimited bodies, 1xx interim answers,
//! garbage, a hang-up) and may close the connection after it is written;
//! [`RawUpstream::close_idle`] closes keep-alive connections waiting for their next request,
//! as an upstream's idle timeout does. A request with `Expect: 100-continue` and a body gets
//! `100 Continue` before the body is read, as real servers do.
//!
//! [`Wire`] is a buffered reader over a `TcpStream` that knows HTTP/1.1 message framing
//! (RFC 9112 section 6): the upstream reads requests with it, tests read the proxy's
//! responses with [`Wire::read_response`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long any wait in this module may take before the test fails.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// How a message's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no length and no chunking in a request; HEAD, 1xx, 204, 304 answers).
    None,
    Length(usize),
    Chunked,
    /// Read until the peer closed (responses only).
    Close,
}

/// A start line and its header lines, as received.
#[derive(Debug, Clone)]
pub struct Head {
    pub start_line: String,
    /// Name and value of each header line in order, names in the case they were sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Parses a head (without the blank line). `None` if a line is not `name: value` or the
    /// name is empty or contains whitespace.
    pub fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n");
        let start_line = lines.next()?.to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
                return None;
            }
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        Some(Head {
            start_line,
            headers,
        })
    }

    /// Every value of header `name` (case-insensitive), in the order received.
    pub fn values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values(name).first().copied()
    }

    /// Whether the comma-separated list in header `name` contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        match self.get("content-length") {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| invalid(format!("bad Content-Length {v:?}"))),
        }
    }
}

/// Every value of header `name` (case-insensitive) in `headers`, in order.
pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A response read by [`Wire::read_response`]: the final one, after any 1xx interim ones.
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub head: Head,
    pub framing: Framing,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// Status codes of the interim (1xx) responses that came first.
    pub interim: Vec<u16>,
}

impl std::fmt::Debug for Response {
    /// The body as text (lossy, cut at 300 characters), so assertion messages are readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.text().chars().take(300).collect();
        f.debug_struct("Response")
            .field("interim", &self.interim)
            .field("status_line", &self.head.start_line)
            .field("headers", &self.head.headers)
            .field("framing", &self.framing)
            .field("body_len", &self.body.len())
            .field("body", &body)
            .field("trailers", &self.trailers)
            .finish()
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.head.values(name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A buffered HTTP/1.1 reader and writer over one TCP connection.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects to `addr` (`host:port`, or a `http://host:port` URL).
    pub async fn connect(addr: &str) -> io::Result<Wire> {
        let addr = addr.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Wire::new(stream))
    }

    /// Writes all of `bytes`. Fails after 10 s (a peer that stops reading).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(WAIT_LIMIT, write).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("peer read nothing for {WAIT_LIMIT:?}"),
            )),
        }
    }

    /// Shuts the write side (the peer reads an end of stream); reading goes on.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream. Cancel safe.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(16 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    async fn fill_or_eof_error(&mut self, what: &str) -> io::Result<()> {
        if self.fill().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed in the middle of {what}"),
            ));
        }
        Ok(())
    }

    /// Reads one head up to its blank line; `None` if the peer closed before sending a byte.
    pub async fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Head::parse(&raw[..end])
                    .map(Some)
                    .ok_or_else(|| invalid(format!("malformed head {:?}", lossy(&raw))));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("head too large".to_owned()));
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed inside a head: {:?}", lossy(&self.buf)),
                ));
            }
        }
    }

    /// Reads exactly `n` body bytes.
    pub async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_eof_error("a Content-Length body").await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(lossy(&line[..end]));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long".to_owned()));
            }
            self.fill_or_eof_error("a chunked body").await?;
        }
    }

    /// Reads a chunked body (extensions ignored): the decoded bytes and the trailers.
    pub async fn read_chunked(&mut self) -> io::Result<(Vec<u8>, Vec<(String, String)>)> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                break;
            }
            body.extend(self.read_exact(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err(invalid("chunk data not followed by CRLF".to_owned()));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                return Ok((body, trailers));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad trailer line {line:?}")))?;
            trailers.push((name.to_owned(), value.trim().to_owned()));
        }
    }

    /// Reads until the peer closes; a reset counts as a close.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill().await {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(std::mem::take(&mut self.buf));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the body that follows `head` by the request framing rules (RFC 9112 §6.3).
    async fn read_request_body(
        &mut self,
        head: &Head,
    ) -> io::Result<(Framing, Vec<u8>, Vec<(String, String)>)> {
        if head.is_chunked() {
            let (body, trailers) = self.read_chunked().await?;
            return Ok((Framing::Chunked, body, trailers));
        }
        match head.content_length()? {
            Some(n) => Ok((Framing::Length(n), self.read_exact(n).await?, Vec::new())),
            None => Ok((Framing::None, Vec::new(), Vec::new())),
        }
    }

    /// Reads one final response (collecting 1xx interim ones first) to a request whose
    /// method was HEAD when `head_request`. Fails after 10 s.
    pub async fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        match tokio::time::timeout(WAIT_LIMIT, self.read_response_now(head_request)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no whole response in {WAIT_LIMIT:?}; have {:?}",
                    lossy(&self.buf)
                ),
            )),
        }
    }

    /// Reads one response head, interim or final, and returns its status: for a client that
    /// waits for `100 Continue` before sending a body. Fails after 10 s.
    pub async fn read_head_status(&mut self) -> io::Result<u16> {
        match tokio::time::timeout(WAIT_LIMIT, self.read_status_head()).await {
            Ok(result) => result.map(|(_, status, _)| status),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no response head in {WAIT_LIMIT:?}; have {:?}",
                    lossy(&self.buf)
                ),
            )),
        }
    }

    /// One response head: (version, status, head).
    async fn read_status_head(&mut self) -> io::Result<(String, u16, Head)> {
        let head = self.read_head().await?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response")
        })?;
        let mut words = head.start_line.splitn(3, ' ');
        let version = words.next().unwrap_or_default().to_owned();
        let status: u16 = words
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/"))
            .ok_or_else(|| invalid(format!("bad status line {:?}", head.start_line)))?;
        Ok((version, status, head))
    }

    async fn read_response_now(&mut self, head_request: bool) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let (version, status, head) = self.read_status_head().await?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let no_body = head_request || status == 204 || status == 304 || status == 101;
            let (framing, body, trailers) = if no_body {
                (Framing::None, Vec::new(), Vec::new())
            } else if head.is_chunked() {
                let (body, trailers) = self.read_chunked().await?;
                (Framing::Chunked, body, trailers)
            } else if let Some(n) = head.content_length()? {
                (Framing::Length(n), self.read_exact(n).await?, Vec::new())
            } else {
                (Framing::Close, self.read_to_end().await?, Vec::new())
            };
            return Ok(Response {
                version,
                status,
                head,
                framing,
                body,
                trailers,
                interim,
            });
        }
    }

    /// Whether the peer closes the connection (EOF or reset) before sending anything more;
    /// bytes arriving first are an error, and a connection still open after 10 s is `false`.
    pub async fn closed_by_peer(&mut self) -> io::Result<bool> {
        if !self.buf.is_empty() {
            return Err(invalid(format!("unexpected bytes {:?}", lossy(&self.buf))));
        }
        match tokio::time::timeout(WAIT_LIMIT, self.fill()).await {
            Ok(Ok(0)) => Ok(true),
            Ok(Ok(_)) => Err(invalid(format!("unexpected bytes {:?}", lossy(&self.buf)))),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A chunked body: each chunk with its size line (and `;ext` when given), then the last
/// chunk and `trailers`.
pub fn chunked(chunks: &[(&[u8], Option<&str>)], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (data, ext) in chunks {
        out.extend(format!("{:x}", data.len()).into_bytes());
        if let Some(ext) = ext {
            out.extend(format!(";{ext}").into_bytes());
        }
        out.extend(b"\r\n");
        out.extend(*data);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n");
    for (name, value) in trailers {
        out.extend(format!("{name}: {value}\r\n").into_bytes());
    }
    out.extend(b"\r\n");
    out
}

/// What the upstream does with one request: raw writes (each a separate `write`), then
/// optionally closing the connection.
#[derive(Debug, Clone)]
pub struct Reply {
    writes: Vec<Vec<u8>>,
    close: bool,
}

impl Reply {
    /// Writes `bytes` as they are.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            writes: vec![bytes.into()],
            close: false,
        }
    }

    /// `200 OK` with `Content-Length` and `body`.
    pub fn ok(body: &[u8]) -> Reply {
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Reply::raw(bytes)
    }

    /// Closes the connection without writing anything.
    pub fn hang_up() -> Reply {
        Reply {
            writes: Vec::new(),
            close: true,
        }
    }

    /// Another write after the previous ones.
    pub fn then(mut self, bytes: impl Into<Vec<u8>>) -> Reply {
        self.writes.push(bytes.into());
        self
    }

    /// Closes the connection once everything is written.
    pub fn then_close(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Which accepted connection carried it (0 for the first accepted).
    pub connection: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    /// Header lines as received (name case and order kept).
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The target's path (before any `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    /// Every value of header `name` (case-insensitive), in the order received.
    pub fn values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }
}

type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Reading or answering a request.
    Busy,
    /// Waiting for the next request.
    Idle,
    Closed,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Reply>,
    responder: Option<Responder>,
    requests: Vec<RecordedRequest>,
    connections: Vec<ConnState>,
    /// Heads that could not be parsed (the connection was closed without an answer).
    malformed: usize,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped after every change of `state`, so waiters can re-check.
    changed: watch::Sender<u64>,
    /// Bumped by [`RawUpstream::close_idle`].
    close_idle: watch::Sender<u64>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the state from the next assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let value = change(&mut self.state());
        self.changed.send_modify(|n| *n += 1);
        value
    }
}

/// The scripted upstream. Clones share the same listener and records.
#[derive(Clone)]
pub struct RawUpstream {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl RawUpstream {
    /// Binds `127.0.0.1:0` and serves from a spawned task.
    pub async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("raw upstream: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("raw upstream: local_addr");
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            close_idle: watch::channel(0).0,
        });
        let accepting = Arc::clone(&inner);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                // Subscribed before the connection is listed as open, so a `close_idle` that
                // waits for it also reaches it.
                let close_idle = accepting.close_idle.subscribe();
                let index = accepting.update(|s| {
                    s.connections.push(ConnState::Busy);
                    s.connections.len() - 1
                });
                tokio::spawn(serve(Arc::clone(&accepting), stream, index, close_idle));
            }
        });
        RawUpstream { addr, inner }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, the `Host` a client of [`Self::url`] sends.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answers every request whose path is `path` with `reply`.
    pub fn route(&self, path: &str, reply: Reply) {
        self.inner
            .update(|s| s.routes.insert(path.to_owned(), reply));
    }

    /// Answers requests no route matches with `responder` instead of the default.
    pub fn respond_with(
        &self,
        responder: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) {
        self.inner
            .update(|s| s.responder = Some(Arc::new(responder)));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.state().requests.clone()
    }

    /// Removes and returns every request received so far (for tests that run many cases
    /// against one upstream).
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        self.inner.update(|s| std::mem::take(&mut s.requests))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.state().connections.len()
    }

    /// Heads that could not be parsed.
    pub fn malformed(&self) -> usize {
        self.inner.state().malformed
    }

    /// One line per connection (its state and the requests it carried), for failure messages.
    pub fn describe(&self) -> String {
        let state = self.inner.state();
        let mut text = format!("{} malformed heads\n", state.malformed);
        for (index, conn) in state.connections.iter().enumerate() {
            let requests: Vec<String> = state
                .requests
                .iter()
                .filter(|r| r.connection == index)
                .map(|r| format!("{} {}", r.method, r.target))
                .collect();
            text.push_str(&format!("connection {index} {conn:?}: {requests:?}\n"));
        }
        text
    }

    /// Waits (up to 10 s, then panics naming `what`) until `check` finds what it wants.
    async fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&State) -> Option<T>) -> T {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            if let Some(value) = check(&self.inner.state()) {
                return value;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("raw upstream: timed out after {WAIT_LIMIT:?} waiting for {what}"),
            }
        }
    }

    /// Waits until at least `n` requests have arrived and returns them all.
    pub async fn wait_requests(&self, n: usize) -> Vec<RecordedRequest> {
        self.wait_until(&format!("{n} requests"), |s| {
            (s.requests.len() >= n).then(|| s.requests.clone())
        })
        .await
    }

    /// Waits until connection `index` is closed (by either side).
    pub async fn wait_closed(&self, index: usize) {
        self.wait_until(&format!("connection {index} to close"), |s| {
            (s.connections.get(index) == Some(&ConnState::Closed)).then_some(())
        })
        .await;
    }

    /// Waits until no connection is reading or answering a request.
    pub async fn wait_quiet(&self) {
        self.wait_until("every connection to be idle or closed", |s| {
            (!s.connections.contains(&ConnState::Busy)).then_some(())
        })
        .await;
    }

    /// Closes every open connection as soon as it waits for its next request (at once for
    /// idle ones), and returns once all of them are closed.
    pub async fn close_idle(&self) {
        let open: Vec<usize> = {
            let state = self.inner.state();
            (0..state.connections.len())
                .filter(|&i| state.connections[i] != ConnState::Closed)
                .collect()
        };
        self.inner.close_idle.send_modify(|n| *n += 1);
        for index in open {
            self.wait_closed(index).await;
        }
    }
}

/// Serves one accepted connection until either side closes it.
async fn serve(
    inner: Arc<Inner>,
    stream: TcpStream,
    index: usize,
    mut close_idle: watch::Receiver<u64>,
) {
    let mut wire = Wire::new(stream);
    loop {
        if wire.buffered() == 0 {
            inner.update(|s| s.connections[index] = ConnState::Idle);
            let closing = tokio::select! {
                read = wire.fill() => !matches!(read, Ok(n) if n > 0),
                _ = close_idle.changed() => true,
            };
            if closing {
                break;
            }
            inner.update(|s| s.connections[index] = ConnState::Busy);
        }
        let Some(reply) = exchange(&inner, &mut wire, index).await else {
            break;
        };
        if write_reply(&mut wire, &reply).await.is_err() || reply.close {
            break;
        }
    }
    let _ = wire.stream.shutdown().await;
    drop(wire);
    inner.update(|s| s.connections[index] = ConnState::Closed);
}

/// Reads and records one request and picks its reply; `None` ends the connection.
async fn exchange(inner: &Inner, wire: &mut Wire, index: usize) -> Option<Reply> {
    let head = match wire.read_head().await {
        Ok(Some(head)) => head,
        Ok(None) => return None,
        Err(_) => {
            inner.update(|s| s.malformed += 1);
            return None;
        }
    };
    let mut words = head.start_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        inner.update(|s| s.malformed += 1);
        return None;
    };
    let body_follows = head.is_chunked() || head.content_length().ok().flatten().unwrap_or(0) > 0;
    if body_follows && head.has_token("expect", "100-continue") {
        wire.send(b"HTTP/1.1 100 Continue\r\n\r\n").await.ok()?;
    }
    let Ok((framing, body, trailers)) = wire.read_request_body(&head).await else {
        inner.update(|s| s.malformed += 1);
        return None;
    };
    let request = RecordedRequest {
        connection: index,
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers: head.headers,
        framing,
        body,
        trailers,
    };
    // The responder runs without the lock held: it may look at the upstream itself.
    let (route, responder) = {
        let state = inner.state();
        let route = state.routes.get(request.path()).cloned();
        (route, state.responder.clone())
    };
    let reply = match (route, responder) {
        (Some(reply), _) => reply,
        (None, Some(responder)) => responder(&request),
        (None, None) => Reply::ok(format!("{} {}", request.method, request.target).as_bytes()),
    };
    inner.update(|s| s.requests.push(request));
    Some(reply)
}

async fn write_reply(wire: &mut Wire, reply: &Reply) -> io::Result<()> {
    for bytes in &reply.writes {
        wire.send(bytes).await?;
    }
    Ok(())
}
