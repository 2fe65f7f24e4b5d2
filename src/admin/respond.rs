//! Small response builders for the admin listener.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

pub type AdminResponse = Response<Full<Bytes>>;

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn html(status: StatusCode, body: String) -> AdminResponse {
    let mut response = text(status, "text/html; charset=utf-8", body);
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
}

/// `response` (from [`html`]) with its forms also allowed to end up at `origin`.
pub fn with_form_target(mut response: AdminResponse, origin: &str) -> AdminResponse {
    let policy = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {origin}; frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::try_from(policy) {
        response
            .headers_mut()
            .insert("content-security-policy", value);
    }
    response
}

pub fn json_response(status: StatusCode, value: &Value) -> AdminResponse {
    text(status, "application/json", value.to_string())
}

pub fn problem(status: StatusCode, detail: &str) -> AdminResponse {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    text(status, "application/problem+json", body.to_string())
}

pub fn redirect(status: StatusCode, location: &str) -> AdminResponse {
    let mut response = text(status, "text/plain", String::new());
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

pub fn not_found() -> AdminResponse {
    problem(StatusCode::NOT_FOUND, "no such resource")
}
