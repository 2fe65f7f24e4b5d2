//! Classification of token endpoint answers, one case per row of SPEC section 4.

use std::time::SystemTime;

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

use super::*;

fn run(status: u16, body: &str) -> Result<TokenSet, TokenFailure> {
    classify(
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
    )
}

fn kind(r: Result<TokenSet, TokenFailure>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(TokenFailure::Transient { .. }) => "transient",
        Err(TokenFailure::Rejected { .. }) => "rejected",
        Err(TokenFailure::Misconfigured { .. }) => "misconfigured",
    }
}

#[test]
fn success_shapes() {
    let set = run(
        200,
        r#"{"access_token":"at1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt1","scope":"a b"}"#,
    )
    .unwrap();
    assert_eq!(set.access_token.secret(), "at1");
    assert_eq!(set.refresh_token.unwrap().secret(), "rt1");
    assert_eq!(set.expires_in, Some(Duration::from_secs(3600)));
    assert_eq!(set.scope.as_deref(), Some("a b"));

    let set = run(200, r#"{"access_token":"at2","expires_in":"60"}"#).unwrap();
    assert_eq!(set.expires_in, Some(Duration::from_secs(60)));
    assert!(set.refresh_token.is_none());
    let set = run(200, r#"{"access_token":"at3"}"#).unwrap();
    assert_eq!(set.expires_in, None);
}

#[test]
fn failure_classes() {
    let cases = [
        (400, r#"{"error":"invalid_grant"}"#, "rejected"),
        (400, r#"{"error":"unauthorized_client"}"#, "rejected"),
        (
            401,
            r#"{"error":"invalid_request","message":"The refresh token is invalid."}"#,
            "rejected",
        ),
        (
            401,
            r#"{"error":"server_error","error_description":"The authorization code is invalid or has expired."}"#,
            "rejected",
        ),
        (401, r#"{"error":"invalid_client"}"#, "misconfigured"),
        (
            400,
            r#"{"error":"unsupported_grant_type"}"#,
            "misconfigured",
        ),
        (400, r#"{"error":"invalid_scope"}"#, "misconfigured"),
        (503, r#"{"error":"temporarily_unavailable"}"#, "transient"),
        (500, r#"{"error":"server_error"}"#, "transient"),
        (500, "<html>oops</html>", "transient"),
        (429, "{}", "transient"),
        (200, "<html>login</html>", "transient"),
        (200, r#"{"token_type":"Bearer"}"#, "transient"),
        (200, r#"{"access_token":""}"#, "transient"),
        (200, r#"{"access_token":"bad\ntoken"}"#, "transient"),
        (200, "[1,2]", "transient"),
    ];
    for (status, body, want) in cases {
        assert_eq!(kind(run(status, body)), want, "{status} {body}");
    }
}

#[test]
fn reasons_name_the_error_not_the_body() {
    let err = run(
        400,
        r#"{"error":"invalid_grant","refresh_token":"rt_secret"}"#,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(!text.contains("rt_secret"), "{text}");
}

#[test]
fn retry_after_seconds_and_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, "7".parse().unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    headers.insert(RETRY_AFTER, later.parse().unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
    headers.insert(RETRY_AFTER, "soon".parse().unwrap());
    assert_eq!(retry_after(&headers, now), None);

    let err = classify(
        StatusCode::TOO_MANY_REQUESTS,
        &{
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, "12".parse().unwrap());
            h
        },
        b"{}",
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TokenFailure::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(12)
    ));
}

#[test]
fn basic_auth_form_encodes_before_base64() {
    // RFC 6749 appendix B: "a b" -> "a+b", ":" -> "%3A".
    let header = basic_auth("a b", "s:c");
    let encoded = header.strip_prefix("Basic ").unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, b"a+b:s%3Ac");
}

#[test]
fn an_echoed_secret_is_scrubbed_before_the_reason_is_cut() {
    let secret = "rt_0123456789abcdefghij";
    // The secret straddles the cut: cutting first would leave a prefix no scrub matches.
    let padding = "x".repeat(MAX_REASON - 83);
    let body = format!(
        r#"{{"error":"temporarily_unavailable","error_description":"{padding} refresh_token={secret}&client_secret=cs%2Fsecret"}}"#
    );
    let failure = run(503, &body).unwrap_err();
    let text = failure.scrubbed(&[secret, "cs/secret"]).to_string();
    assert!(!text.contains("rt_0123"), "{text}");
    assert!(!text.contains("cs%2F"), "{text}");
    assert!(text.chars().count() <= MAX_REASON + 3, "{text}");
}
