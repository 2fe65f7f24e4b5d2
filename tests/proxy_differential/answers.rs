//! The upstream's raw answers in differential cases: a status, fields and a tagged body,
//! framed by length, chunks or the close, and now and then mutated around framing (CL/TE
//! combinations, `Content-Length` lists, `Connection` options naming framing fields,
//! obs-fold, bare LF, chunk grammar, HTTP/1.0, a planted second answer, truncation, 1xx).

use super::generate::{Rng, chunks, tag, text};

#[derive(Clone)]
pub struct Answer {
    pub writes: Vec<Vec<u8>>,
    pub close: bool,
    pub mutation: &'static str,
    /// The chunk grammar is one hyper reads leniently and the fast path refuses (it passes
    /// chunked bytes on as they are, so it must be strict): the fast path may cut the answer
    /// short where hyper delivers it.
    pub lenient: bool,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let writes: Vec<_> = self
            .writes
            .iter()
            .map(|w| String::from_utf8_lossy(w))
            .collect();
        f.debug_struct("Answer")
            .field("mutation", &self.mutation)
            .field("writes", &writes)
            .field("close", &self.close)
            .finish()
    }
}

const ANSWER_MUTATIONS: [&str; 24] = [
    "te-and-cl",
    "te-identity",
    "te-chunked-identity",
    "te-chunked-comma",
    "te-gzip",
    "cl-list",
    "cl-twice",
    "cl-differ",
    "cl-plus",
    "cl-space",
    "connection-names-cl",
    "connection-names-te",
    "connection-names-host",
    "obs-fold",
    "bare-lf",
    "chunk-size-space",
    "chunk-bad-hex",
    "chunk-bare-lf-trailer",
    "http-1.0",
    "http-1.0-chunked",
    "planted-after",
    "truncated",
    "interim",
    "connection-close",
];

/// The upstream's raw answer to request `k` of `case`.
pub fn answer(rng: &mut Rng, case: usize, k: usize, head_request: bool) -> Answer {
    let mut mutation = if rng.chance(45) {
        rng.pick(&ANSWER_MUTATIONS)
    } else {
        "none"
    };
    let status = rng.pick(&[200, 200, 200, 201, 404, 500, 204, 304]);
    let bodiless = head_request || status == 204 || status == 304;
    let mut body = tag(case, k).into_bytes();
    body.extend(text(rng, 80));
    let chunk_mutation = mutation.starts_with("chunk-") || mutation == "http-1.0-chunked";
    if bodiless && (chunk_mutation || mutation == "truncated" || mutation == "planted-after") {
        mutation = "none";
    }
    let mut framing = if chunk_mutation || mutation == "te-and-cl" || mutation == "te-gzip" {
        "chunked"
    } else {
        rng.pick(&["length", "length", "length", "chunked", "chunked", "close"])
    };
    if mutation.starts_with("te-") && mutation != "te-and-cl" && mutation != "te-gzip" {
        framing = "coded";
    }
    let version = if mutation.starts_with("http-1.0") {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut fields: Vec<(String, String)> = vec![("Content-Type".into(), "text/plain".into())];
    fields.push(("X-Answer".into(), format!("a{k}")));
    if rng.chance(25) {
        fields.push(("Set-Cookie".into(), "a=1".into()));
        fields.push(("Set-Cookie".into(), "b=2".into()));
    }
    if rng.chance(20) {
        fields.push(("Connection".into(), "keep-alive, X-Hop".into()));
        fields.push(("X-Hop".into(), "dropped".into()));
    }
    let payload = if bodiless {
        Vec::new()
    } else if framing == "chunked" {
        chunks(rng, &body, mutation)
    } else {
        body.clone()
    };
    let length = if bodiless && !head_request && status == 204 {
        None
    } else if bodiless {
        Some(body.len())
    } else {
        Some(payload.len())
    };
    let mut push = |name: &str, value: String| fields.push((name.to_owned(), value));
    match (framing, mutation) {
        (_, "te-and-cl") => {
            push("Transfer-Encoding", "chunked".into());
            push("Content-Length", rng.below(payload.len() + 2).to_string());
        }
        (_, "te-identity") => push("Transfer-Encoding", "identity".into()),
        (_, "te-chunked-identity") => push("Transfer-Encoding", "chunked, identity".into()),
        (_, "te-chunked-comma") => push("Transfer-Encoding", "chunked,".into()),
        (_, "te-gzip") => push("Transfer-Encoding", "gzip, chunked".into()),
        ("chunked", _) => push("Transfer-Encoding", "chunked".into()),
        (_, "cl-list") if length.is_some() => {
            let n = length.unwrap_or_default();
            push("Content-Length", format!("{n}, {n}"));
        }
        (_, "cl-twice") if length.is_some() => {
            let n = length.unwrap_or_default().to_string();
            push("Content-Length", n.clone());
            push("Content-Length", n);
        }
        (_, "cl-differ") => {
            let n = length.unwrap_or_default();
            push("Content-Length", n.to_string());
            push("Content-Length", (n + 1).to_string());
        }
        (_, "cl-plus") => push("Content-Length", format!("+{}", length.unwrap_or_default())),
        (_, "cl-space") if length.is_some() => {
            push(
                "Content-Length",
                format!(" {} ", length.unwrap_or_default()),
            );
        }
        ("close", _) if !bodiless => {}
        _ => {
            if let Some(n) = length {
                push("Content-Length", n.to_string());
            }
        }
    }
    match mutation {
        "te-identity" | "te-chunked-identity" | "te-chunked-comma" if rng.chance(50) => {
            push("Content-Length", "3".into());
        }
        "connection-names-cl" => push("Connection", "Content-Length".into()),
        "connection-names-te" => push("Connection", "x-b, transfer-encoding".into()),
        "connection-names-host" => push("Connection", "Host".into()),
        "obs-fold" => push("X-Folded", "a\r\n b".into()),
        "connection-close" => push("Connection", "close".into()),
        _ => {}
    }
    // Anything unusual, and a body that runs to the close, ends the upstream connection, so
    // nobody waits for bytes that never come. It says so: hyper-util's pool may reuse a
    // connection closed unannounced before it notices (hyperium/hyper#3553), a race the
    // wire tests cover and the comparison must not trip on.
    let close = mutation != "none" || framing == "close" || framing == "coded" || rng.chance(20);
    if close && mutation != "connection-close" {
        fields.insert(0, ("Connection".into(), "close".into()));
    }
    let eol = if mutation == "bare-lf" { "\n" } else { "\r\n" };
    let mut raw = Vec::new();
    if mutation == "interim" {
        raw.extend(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    }
    raw.extend(format!("{version} {status} {reason}{eol}").into_bytes());
    for (name, value) in &fields {
        raw.extend(format!("{name}: {value}{eol}").into_bytes());
    }
    raw.extend(eol.as_bytes());
    let mut payload = payload;
    if mutation == "truncated" && !payload.is_empty() {
        payload.truncate(rng.below(payload.len()));
    }
    raw.extend(&payload);
    if mutation == "planted-after" || mutation.starts_with("connection-names") {
        let planted = format!("{}-planted", tag(case, k));
        raw.extend(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{planted}",
                planted.len()
            )
            .into_bytes(),
        );
    }
    let mut writes = Vec::new();
    let mut rest = raw.as_slice();
    while rest.len() > 1 && rng.chance(30) {
        let at = 1 + rng.below(rest.len() - 1);
        writes.push(rest[..at].to_vec());
        rest = &rest[at..];
    }
    writes.push(rest.to_vec());
    Answer {
        writes,
        close,
        mutation,
        lenient: matches!(mutation, "chunk-size-space" | "chunk-bare-lf-trailer"),
    }
}
