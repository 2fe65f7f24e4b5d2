//! Wire helpers of the test token server: responses, scripted failures, client credentials
//! and request-body parsing.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Failure, Resp};

pub(super) fn json_resp(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub(super) fn text_resp(status: StatusCode, ctype: &'static str, body: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

pub(super) fn oauth_error(status: StatusCode, code: &str, desc: &str) -> Resp {
    json_resp(status, json!({"error": code, "error_description": desc}))
}

pub(super) fn invalid_client(basic_challenge: bool) -> Resp {
    let mut r = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic_challenge {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"token\""),
        );
    }
    r
}

pub(super) fn cloudbeds_invalid_refresh() -> Resp {
    json_resp(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_request", "message": "The refresh token is invalid."}),
    )
}

pub(super) fn with_retry_after(mut r: Resp, retry_after: Option<u64>) -> Resp {
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

pub(super) fn failure_response(f: &Failure) -> Option<Resp> {
    use StatusCode as S;
    Some(match f {
        Failure::Status500 => text_resp(S::INTERNAL_SERVER_ERROR, "text/plain", "internal error"),
        Failure::Status502 => text_resp(S::BAD_GATEWAY, "text/plain", "bad gateway"),
        Failure::Status503 { retry_after } => with_retry_after(
            text_resp(S::SERVICE_UNAVAILABLE, "text/plain", "unavailable"),
            *retry_after,
        ),
        Failure::Status429 { retry_after } => with_retry_after(
            text_resp(S::TOO_MANY_REQUESTS, "text/plain", "slow down"),
            *retry_after,
        ),
        Failure::Html => text_resp(
            S::OK,
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><body><h1>Maintenance</h1></body></html>",
        ),
        Failure::NoAccessToken => {
            json_resp(S::OK, json!({"token_type": "Bearer", "expires_in": 3600}))
        }
        Failure::TemporarilyUnavailable => oauth_error(
            S::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "try again later",
        ),
        Failure::InvalidClient => invalid_client(false),
        Failure::InvalidGrant => oauth_error(S::BAD_REQUEST, "invalid_grant", "grant is invalid"),
        Failure::UnauthorizedClient => {
            oauth_error(S::BAD_REQUEST, "unauthorized_client", "client not allowed")
        }
        Failure::InvalidScope => oauth_error(S::BAD_REQUEST, "invalid_scope", "scope not allowed"),
        Failure::CloudbedsInvalidRefresh => cloudbeds_invalid_refresh(),
        Failure::Delay(_)
        | Failure::LostResponse
        | Failure::CommitThenStall(_)
        | Failure::EchoBody503
        | Failure::Stall => return None,
    })
}

pub(super) fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn basic_credentials(auth: Option<&str>) -> Option<&str> {
    let auth = auth?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
}

pub(super) fn presented_auth(
    auth: Option<&str>,
    form: &[(String, String)],
) -> Option<&'static str> {
    if basic_credentials(auth).is_some() {
        Some("basic")
    } else if param(form, "client_secret").is_some() {
        Some("post")
    } else {
        None
    }
}

pub(super) fn decode_basic(b64: &str) -> Option<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one component (`+` is a space).
pub(super) fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Rule 1: urlencoded always, multipart in Cloudbeds mode, anything else (JSON) is 400.
/// Repeated parameters are 400 too (RFC 6749 §3.2).
pub(super) fn parse_body(
    ctype: Option<&str>,
    body: &[u8],
    cloudbeds: bool,
) -> Result<Vec<(String, String)>, Box<Resp>> {
    let bad = |d| Box::new(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d));
    let ctype = ctype.unwrap_or("");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let form: Vec<(String, String)> = match mime.as_str() {
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body).into_owned().collect(),
        "multipart/form-data" if cloudbeds => {
            let boundary = ctype
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .ok_or_else(|| bad("multipart without boundary"))?;
            parse_multipart(body, &boundary).ok_or_else(|| bad("malformed multipart body"))?
        }
        _ => return Err(bad("body must be application/x-www-form-urlencoded")),
    };
    for (i, (k, _)) in form.iter().enumerate() {
        if form[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(bad("repeated parameter"));
        }
    }
    Ok(form)
}

/// Minimal `multipart/form-data` reader (text fields only).
pub(super) fn parse_multipart(body: &[u8], boundary: &str) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let delim = format!("--{boundary}");
    let mut out = Vec::new();
    for part in text.split(delim.as_str()).skip(1) {
        if part.starts_with("--") {
            return Some(out);
        }
        let part = part.strip_prefix("\r\n")?;
        let (headers, value) = part.split_once("\r\n\r\n")?;
        let name = headers.split("\r\n").find_map(|line| {
            let (hname, hval) = line.split_once(':')?;
            if !hname.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            hval.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == "name").then(|| v.trim_matches('"').to_owned())
            })
        })?;
        out.push((name, value.strip_suffix("\r\n").unwrap_or(value).to_owned()));
    }
    None
}
