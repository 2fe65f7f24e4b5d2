//! What one path did with a case, normalised so the two paths can be compared: what the
//! upstream saw and what the app got. Header order and name case (hyper lower-cases and
//! groups fields), `Date`, and the framing fields themselves are set aside; status, every
//! other field, bodies and message boundaries are not.

use super::generate::{Case, tag};
use super::support::raw_upstream::{Framing, RecordedRequest, Response};

/// A request as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub fields: Vec<(String, String)>,
    pub chunked: bool,
    pub body: Vec<u8>,
}

/// What the app got in answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// The upstream's answer, passed on.
    Passed {
        status: u16,
        fields: Vec<(String, String)>,
        body: Vec<u8>,
        /// The app connection ends after it.
        closing: bool,
    },
    /// bearerd's (or hyper's) own refusal or error answer.
    Refused { status: u16 },
    /// Nothing whole: the connection closed, or what came could not be read as an answer.
    Cut,
}

impl Got {
    /// The app connection may be over after this answer.
    pub fn ends(&self) -> bool {
        !matches!(self, Got::Passed { closing: false, .. })
    }
}

pub fn seen(request: &RecordedRequest) -> (String, Seen) {
    let mut fields: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| !matches!(n.as_str(), "content-length" | "transfer-encoding"))
        .map(|(n, v)| match n.as_str() {
            // Each path has its own upstream and token.
            "host" => (n, "UPSTREAM".to_owned()),
            "authorization" if v.starts_with("Bearer ") && v != "Bearer app-token" => {
                (n, "Bearer TOKEN".to_owned())
            }
            _ => (n, v),
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    (
        request.path().to_owned(),
        Seen {
            method: request.method.clone(),
            target: request.target.clone(),
            fields,
            chunked: request.framing == Framing::Chunked,
            body: request.body.clone(),
        },
    )
}

pub fn got(answer: std::io::Result<Response>) -> Got {
    let Ok(answer) = answer else {
        return Got::Cut;
    };
    let own = answer.header("content-type") == Some("application/problem+json")
        || (answer.body.is_empty() && matches!(answer.status, 400 | 408 | 414 | 431 | 502));
    if own {
        return Got::Refused {
            status: answer.status,
        };
    }
    let closing = answer.framing == Framing::Close
        || answer
            .values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
    let mut fields: Vec<(String, String)> = answer
        .head
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "content-length" | "transfer-encoding" | "date" | "connection" | "keep-alive"
            )
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Got::Passed {
        status: answer.status,
        fields,
        body: answer.body,
        closing,
    }
}

/// Compares what the app got on each path; returns the last request whose upstream view
/// must agree too (after an answer that may end the app connection, the paths may part
/// ways: one closes, as it may after a close-delimited body or a refusal, the other goes on).
pub fn check_answers(case: &Case, fast: &[Got], hyper: &[Got]) -> Result<usize, String> {
    for (name, got) in [("fast path", fast), ("hyper", hyper)] {
        answers_are_their_own(case, got).map_err(|e| format!("{name}: {e}"))?;
    }
    for k in 0..case.requests.len() {
        let (f, h) = (fast.get(k), hyper.get(k));
        if !agree(case, k, f, h) {
            return Err(format!(
                "answer {k} differs:\n  fast:  {f:?}\n  hyper: {h:?}"
            ));
        }
        if f.is_none_or(Got::ends) || h.is_none_or(Got::ends) {
            return Ok(k);
        }
    }
    Ok(case.requests.len())
}

/// Compares what the upstream saw of `case` on each path, up to request `last`.
pub fn check_seen(
    case: &Case,
    last: usize,
    fast: &[(String, Seen)],
    hyper: &[(String, Seen)],
) -> Result<(), String> {
    for (name, seen) in [("fast path", fast), ("hyper", hyper)] {
        seen_as_sent(case, seen).map_err(|e| format!("{name}: {e}"))?;
    }
    let upto = |seen: &[(String, Seen)]| -> Vec<(String, Seen)> {
        seen.iter()
            .filter(|(path, _)| {
                let index = case.requests.iter().position(|r| &r.path == path);
                index.is_some_and(|i| i <= last)
            })
            .cloned()
            .collect()
    };
    if let Some(sent) = case.truncate {
        // Whether a whole request went before the app's end of stream was noticed is a race
        // on hyper's side; a request cut short must never go anywhere.
        let request = &case.requests[0];
        if sent < request.raw.len() && !(fast.is_empty() && hyper.is_empty()) {
            return Err(format!(
                "a request cut short went upstream: {fast:?} {hyper:?}"
            ));
        }
        return Ok(());
    }
    let (f, h) = (upto(fast), upto(hyper));
    if f != h {
        return Err(format!(
            "the upstream saw different requests:\n  fast:  {f:?}\n  hyper: {h:?}"
        ));
    }
    Ok(())
}

/// Both paths did the same with request `k`: the same answer passed on, or both refused it
/// with the same status, or both cut it. A refusal and a cut are the same to an early-closing
/// app (it may never read the refusal); an answer whose chunk grammar only hyper accepts may
/// be cut by the fast path.
fn agree(case: &Case, k: usize, fast: Option<&Got>, hyper: Option<&Got>) -> bool {
    let request = &case.requests[k];
    let none_or_cut = |g: Option<&Got>| matches!(g, None | Some(Got::Cut));
    if fast == hyper || (none_or_cut(fast) && none_or_cut(hyper)) {
        return true;
    }
    if let Some(sent) = case.truncate {
        let quiet = |g: Option<&Got>| matches!(g, None | Some(Got::Cut | Got::Refused { .. }));
        if sent < request.raw.len() {
            return quiet(fast) && quiet(hyper);
        }
        // A whole request, then the app's end of stream: hyper's server drops the request
        // in flight (it does not allow half-closed connections), the fast path answers it.
        // Either is fine; two answers must still be the same.
        let passed_or_quiet = |g: Option<&Got>| quiet(g) || matches!(g, Some(Got::Passed { .. }));
        let both_passed = matches!(
            (fast, hyper),
            (Some(Got::Passed { .. }), Some(Got::Passed { .. }))
        );
        return !both_passed && passed_or_quiet(fast) && passed_or_quiet(hyper);
    }
    if request.answer.lenient && matches!(fast, None | Some(Got::Cut | Got::Refused { .. })) {
        return true;
    }
    if matches!(
        request.answer.mutation,
        "truncated" | "chunk-size-space" | "chunk-bad-hex" | "chunk-bare-lf-trailer"
    ) {
        return cut_alike(fast, hyper);
    }
    // The close itself may differ: the fast path closes after a body that ran to the
    // upstream's close, hyper re-chunks it and keeps the app connection.
    match (fast, hyper) {
        (
            Some(Got::Passed {
                status: s1,
                fields: f1,
                body: b1,
                ..
            }),
            Some(Got::Passed {
                status: s2,
                fields: f2,
                body: b2,
                ..
            }),
        ) => s1 == s2 && f1 == f2 && b1 == b2,
        _ => false,
    }
}

/// An answer the upstream broke off: a path may notice at once (502), or pass on what came
/// and cut the app's connection, and how much came first is a race. Passed bodies must
/// still agree as far as both go.
fn cut_alike(fast: Option<&Got>, hyper: Option<&Got>) -> bool {
    match (fast, hyper) {
        (
            Some(Got::Passed {
                status: s1,
                fields: f1,
                body: b1,
                ..
            }),
            Some(Got::Passed {
                status: s2,
                fields: f2,
                body: b2,
                ..
            }),
        ) => s1 == s2 && f1 == f2 && (b1.starts_with(b2) || b2.starts_with(b1)),
        (Some(Got::Passed { closing, .. }), other) | (other, Some(Got::Passed { closing, .. })) => {
            *closing && broke_off(other)
        }
        (f, h) => broke_off(f) && broke_off(h),
    }
}

fn broke_off(got: Option<&Got>) -> bool {
    matches!(got, None | Some(Got::Cut | Got::Refused { status: 502 }))
}

/// Every request the upstream saw was sent whole by the app, with its method and (when the
/// request was well-formed) its body, and with bearerd's token only.
fn seen_as_sent(case: &Case, seen: &[(String, Seen)]) -> Result<(), String> {
    for (path, seen) in seen {
        let Some(request) = case.requests.iter().find(|r| &r.path == path) else {
            return Err(format!(
                "the upstream saw a request nobody sent: {path} {seen:?}"
            ));
        };
        if seen.method != request.method {
            return Err(format!("{path} went upstream as {}", seen.method));
        }
        if seen
            .fields
            .iter()
            .any(|(n, v)| n == "authorization" && v != "Bearer TOKEN")
        {
            return Err(format!("{path}: the app's Authorization went upstream"));
        }
        if let Some(body) = &request.body
            && &seen.body != body
        {
            return Err(format!(
                "{path}: the upstream got body {:?}, the app sent {:?}",
                String::from_utf8_lossy(&seen.body),
                String::from_utf8_lossy(body)
            ));
        }
    }
    Ok(())
}

/// No answer carries a tag of another request: that would be an answer (or part of one)
/// that reached the wrong request.
fn answers_are_their_own(case: &Case, got: &[Got]) -> Result<(), String> {
    for (k, got) in got.iter().enumerate() {
        let Got::Passed { body, .. } = got else {
            continue;
        };
        let own = tag(case.index, k);
        let text = String::from_utf8_lossy(body);
        for (at, _) in text.match_indices("<<") {
            let Some(end) = text[at..].find(">>") else {
                continue;
            };
            let found = &text[at..at + end + 2];
            if found != own {
                return Err(format!("answer {k} carries {found}, another request's"));
            }
        }
    }
    Ok(())
}
