//! Provider signals of a dead token that do not come as a 401 (SPEC section 5): Cloudbeds
//! answers some auth failures with HTTP 200 `{"success":false,"message":...}`.

use http::StatusCode;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::response::Parts;
use serde_json::Value;

/// Only bodies up to this size are inspected.
pub const MAX_INSPECTED: usize = 64 * 1024;

/// A 200 `application/json` answer with a known length of at most 64 KiB. Others stream
/// through untouched.
pub fn worth_inspecting(parts: &Parts) -> bool {
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    worth(parts.status.as_u16(), content_type, length)
}

/// [`worth_inspecting`] on the parts of a head (the HTTP/1.1 fast path parses its own).
pub fn worth(status: u16, content_type: Option<&[u8]>, length: Option<u64>) -> bool {
    const JSON: &[u8] = b"application/json";
    let json = content_type.is_some_and(|v| {
        let v = v.trim_ascii_start();
        v.len() >= JSON.len() && v[..JSON.len()].eq_ignore_ascii_case(JSON)
    });
    let small = length.is_some_and(|n| n <= MAX_INSPECTED as u64);
    status == StatusCode::OK.as_u16() && json && small
}

/// `{"success":false}` with one of Cloudbeds' auth-failure messages.
pub fn is_cloudbeds_auth_failure(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Map<String, Value>>(body) else {
        return false;
    };
    if json.get("success") != Some(&Value::Bool(false)) {
        return false;
    }
    let message = json
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    message.contains("not active anymore")
        || (message.contains("access token")
            && (message.contains("invalid") || message.contains("expired")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_messages_only() {
        let dead = [
            r#"{"success":false,"message":"User who approved this connection is not active anymore"}"#,
            r#"{"success":false,"message":"The access token provided is invalid"}"#,
            r#"{"success":false,"message":"Access token expired"}"#,
        ];
        for body in dead {
            assert!(is_cloudbeds_auth_failure(body.as_bytes()), "{body}");
        }
        let alive = [
            r#"{"success":false,"message":"None of the included property id's match the access_token user's property id"}"#,
            r#"{"success":false,"message":"Scope required for this call was not granted by property."}"#,
            r#"{"success":true,"data":[]}"#,
            r#"{"message":"access token invalid"}"#,
            "not json",
        ];
        for body in alive {
            assert!(!is_cloudbeds_auth_failure(body.as_bytes()), "{body}");
        }
    }
}
