//! Seeded generation of differential cases: HTTP/1.1 requests from the app and the upstream's
//! raw answers to them, well-formed or mutated around framing (CL/TE combinations,
//! `Content-Length` lists, whitespace, obs-fold, bare CR/LF, `Connection` options, chunk
//! grammar, HTTP/1.0, planted messages, truncation). A small xorshift generator keeps every
//! case reproducible from the seed.

use super::answers::{self, Answer};

/// xorshift64*: small, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with `percent` % probability.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// One case: the requests of one app connection and the upstream's answer to each.
#[derive(Debug)]
pub struct Case {
    pub index: usize,
    pub requests: Vec<Req>,
    /// All requests are written at once instead of one per answer.
    pub pipelined: bool,
    /// Early close: only this many bytes of the (only) request are sent, then the app shuts
    /// its write side.
    pub truncate: Option<usize>,
}

pub struct Req {
    pub path: String,
    pub method: &'static str,
    pub raw: Vec<u8>,
    /// The body the upstream must see if the request goes there; `None` when a mutation
    /// leaves that to the paths to agree on.
    pub body: Option<Vec<u8>>,
    pub mutation: &'static str,
    pub answer: Answer,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Req")
            .field("mutation", &self.mutation)
            .field("raw", &String::from_utf8_lossy(&self.raw))
            .field("body", &self.body.as_deref().map(String::from_utf8_lossy))
            .field("answer", &self.answer)
            .finish()
    }
}

/// The marker every answer body of request `k` in case `case` carries.
pub fn tag(case: usize, k: usize) -> String {
    format!("<<c{case}a{k}>>")
}

/// A case; with `tenants`, its requests also name a tenant in `X-Tenant` (or fail to:
/// missing, unknown, twice, a list), for an app with `tenants = "header:X-Tenant"` whose
/// one tenant is `t1`.
pub fn case_for(rng: &mut Rng, index: usize, tenants: bool) -> Case {
    let count = 1 + rng.below(3);
    let mut requests: Vec<Req> = (0..count)
        .map(|k| request(rng, index, k, tenants))
        .collect();
    // Requests a parser might wait on forever are sent alone, then the app hangs up.
    let waits = requests
        .iter()
        .position(|r| r.mutation == "chunk-bare-lf-trailer");
    let truncate = if waits.is_some() || rng.chance(4) {
        requests.swap(0, waits.unwrap_or(0));
        requests.truncate(1);
        requests[0].path = format!("/c{index}/0");
        let len = requests[0].raw.len();
        Some(if waits.is_some() { len } else { rng.below(len) })
    } else {
        None
    };
    Case {
        index,
        requests,
        pipelined: truncate.is_none() && rng.chance(35),
        truncate,
    }
}

const REQUEST_MUTATIONS: [&str; 22] = [
    "te-and-cl",
    "te-identity",
    "te-chunked-identity",
    "te-chunked-comma",
    "te-gzip-chunked",
    "cl-twice",
    "cl-differ",
    "cl-list",
    "cl-space",
    "cl-plus",
    "obs-fold",
    "bare-lf",
    "bare-cr",
    "connection-names-cl",
    "connection-names-te",
    "connection-names-host",
    "connection-many",
    "no-host",
    "two-hosts",
    "chunk-size-space",
    "chunk-bad-hex",
    "chunk-bare-lf-trailer",
];

fn request(rng: &mut Rng, case: usize, k: usize, tenants: bool) -> Req {
    let path = format!("/c{case}/{k}");
    let method = rng.pick(&["GET", "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]);
    let has_body = matches!(method, "POST" | "PUT" | "PATCH");
    let body = if has_body { text(rng, 60) } else { Vec::new() };
    let mut mutation = if rng.chance(45) {
        rng.pick(&REQUEST_MUTATIONS)
    } else {
        "none"
    };
    let chunk_mutation = mutation.starts_with("chunk-") || mutation.starts_with("te-");
    if chunk_mutation && !has_body {
        mutation = "none";
    }
    if mutation == "none" && rng.chance(8) {
        mutation = rng.pick(&["planted", "http-1.0", "absolute-form"]);
    }
    // A planted request after a chunked body would be a legitimate next request.
    let plants = mutation == "planted" || mutation.starts_with("connection-names");
    let chunked = has_body && !plants && (chunk_mutation || rng.chance(25));

    let version = if mutation == "http-1.0" {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let target = if mutation == "absolute-form" {
        format!("http://app.test{path}")
    } else {
        path.clone()
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    let field = |fields: &mut Vec<(String, String)>, name: &str, value: &str| {
        fields.push((name.to_owned(), value.to_owned()));
    };
    match mutation {
        "no-host" => {}
        "two-hosts" => {
            field(&mut fields, "Host", "app.test");
            field(&mut fields, "Host", "other.test");
        }
        _ if version == "HTTP/1.0" => {}
        _ => field(&mut fields, "Host", "app.test"),
    }
    field(&mut fields, "X-Test", &format!("t{k}"));
    if tenants {
        match rng.below(12) {
            0 => {}
            1 => field(&mut fields, "X-Tenant", "t9"),
            2 => {
                field(&mut fields, "X-Tenant", "t1");
                field(&mut fields, "x-tenant", "t1");
            }
            3 => field(&mut fields, "X-Tenant", "t1, t1"),
            4 => field(&mut fields, "X-Tenant", "../t1"),
            _ => field(&mut fields, "X-Tenant", "t1"),
        }
    }
    if rng.chance(30) {
        field(&mut fields, "Authorization", "Bearer app-token");
    }
    if rng.chance(20) {
        field(&mut fields, "Connection", "keep-alive, X-Hop");
        field(&mut fields, "X-Hop", "dropped");
    }
    if rng.chance(20) {
        field(&mut fields, "Accept", "application/json");
        field(&mut fields, "accept", "text/plain");
    }
    let mut sent = if chunked {
        chunks(rng, &body, mutation)
    } else {
        body.clone()
    };
    let planted = format!("GET /planted-{case} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    if plants {
        if !has_body {
            sent = Vec::new();
        }
        sent.extend_from_slice(&planted);
    }
    let length = sent.len();
    match mutation {
        "te-and-cl" => {
            field(&mut fields, "Transfer-Encoding", "chunked");
            field(
                &mut fields,
                "Content-Length",
                &rng.below(length + 2).to_string(),
            );
        }
        "te-identity" => field(&mut fields, "Transfer-Encoding", "identity"),
        "te-chunked-identity" => field(&mut fields, "Transfer-Encoding", "chunked, identity"),
        "te-chunked-comma" => field(&mut fields, "Transfer-Encoding", "chunked,"),
        "te-gzip-chunked" => field(&mut fields, "Transfer-Encoding", "gzip, chunked"),
        _ if chunked => field(&mut fields, "Transfer-Encoding", "chunked"),
        "cl-twice" => {
            field(&mut fields, "Content-Length", &length.to_string());
            field(&mut fields, "Content-Length", &length.to_string());
        }
        "cl-differ" => {
            // The body has the larger length, so nobody waits for bytes that never come.
            field(
                &mut fields,
                "Content-Length",
                &length.saturating_sub(1).to_string(),
            );
            field(&mut fields, "Content-Length", &length.to_string());
        }
        "cl-list" => field(
            &mut fields,
            "Content-Length",
            &format!("{length}, {length}"),
        ),
        "cl-space" => field(&mut fields, "Content-Length", &format!("  {length}  ")),
        "cl-plus" => field(&mut fields, "Content-Length", &format!("+{length}")),
        _ if length > 0 || (has_body && rng.chance(50)) => {
            field(&mut fields, "Content-Length", &length.to_string());
        }
        _ => {}
    }
    match mutation {
        "obs-fold" => field(&mut fields, "X-Folded", "a\r\n b"),
        "bare-cr" => field(&mut fields, "X-Cr", "a\rb"),
        "connection-names-cl" => field(&mut fields, "Connection", "Content-Length"),
        "connection-names-te" => field(&mut fields, "Connection", "x-a, Transfer-Encoding"),
        "connection-names-host" => field(&mut fields, "Connection", "host"),
        "connection-many" => {
            let names: Vec<String> = (0..12).map(|n| format!("x-opt-{n}")).collect();
            field(&mut fields, "Connection", &names.join(", "));
            for name in &names {
                field(&mut fields, name, "dropped");
            }
        }
        _ => {}
    }
    // Field order is not the point: shuffle a little so framing fields are not always last.
    if fields.len() > 2 && rng.chance(50) {
        let a = rng.below(fields.len());
        let b = rng.below(fields.len());
        fields.swap(a, b);
    }
    let eol = if mutation == "bare-lf" { "\n" } else { "\r\n" };
    let mut raw = format!("{method} {target} {version}{eol}").into_bytes();
    for (name, value) in &fields {
        raw.extend(format!("{name}: {value}{eol}").into_bytes());
    }
    raw.extend(eol.as_bytes());
    raw.extend(&sent);
    let expected = matches!(
        mutation,
        "none" | "planted" | "cl-twice" | "cl-space" | "bare-lf"
    );
    Req {
        path,
        method,
        raw,
        body: expected.then(|| if plants { sent.clone() } else { body.clone() }),
        mutation,
        answer: answers::answer(rng, case, k, method == "HEAD"),
    }
}

/// Random printable bytes, up to `max` of them.
pub fn text(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.below(max + 1);
    (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
}

/// `body` chunked in random pieces, with extensions and trailers now and then, and the chunk
/// grammar broken as `mutation` says.
pub fn chunks(rng: &mut Rng, body: &[u8], mutation: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut first = true;
    while !rest.is_empty() {
        let take = 1 + rng.below(rest.len());
        let size = format!("{take:x}");
        let line = match mutation {
            "chunk-size-space" if first => format!("{size} \r\n"),
            "chunk-bad-hex" if first => format!("{size}g\r\n"),
            _ if rng.chance(15) => format!("{size};ext=\"v\"\r\n"),
            _ if rng.chance(10) => format!("{size} ;e\r\n"),
            _ => format!("{size}\r\n"),
        };
        out.extend(line.into_bytes());
        out.extend(&rest[..take]);
        out.extend(b"\r\n");
        rest = &rest[take..];
        first = false;
    }
    out.extend(b"0\r\n");
    match mutation {
        "chunk-bare-lf-trailer" => out.extend(b"X-Trailer: t\n\r\n"),
        _ if rng.chance(15) => out.extend(b"X-Trailer: t\r\n\r\n"),
        _ => out.extend(b"\r\n"),
    }
    out
}
