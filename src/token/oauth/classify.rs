//! Classification of a token endpoint's answer (SPEC section 4): tokens, or a failure that
//! is rejected (the grant is dead), misconfigured (the operator must fix something) or
//! transient (retry with backoff). Pure functions of status, headers and body.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::{TokenFailure, transient};
use crate::secret::SecretString;
use crate::token::TokenSet;

/// Turns a token endpoint answer into tokens or a classified failure (SPEC section 4).
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenSet, TokenFailure> {
    let json: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    let Some(json) = json else {
        return Err(TokenFailure::Transient {
            retry_after: retry_after(headers, SystemTime::now()),
            reason: format!(
                "token endpoint answered HTTP {} without a JSON object",
                status.as_u16()
            ),
            answer_lost: false,
        });
    };
    if status.is_success() {
        return token_set(&json).map_err(transient);
    }
    let code = json.get("error").and_then(Value::as_str).unwrap_or("");
    let text = json
        .get("error_description")
        .or_else(|| json.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let reason = describe(status, code, text);
    let lower = text.to_ascii_lowercase();
    match code {
        "invalid_grant" | "unauthorized_client" => Err(TokenFailure::Rejected { reason }),
        // Cloudbeds' shapes for a dead grant (PROVIDERS.md section 1).
        "invalid_request" if lower.contains("refresh token is invalid") => {
            Err(TokenFailure::Rejected { reason })
        }
        "server_error" if lower.contains("authorization code is invalid") => {
            Err(TokenFailure::Rejected { reason })
        }
        "invalid_client" | "unsupported_grant_type" | "invalid_scope" | "invalid_request" => {
            Err(TokenFailure::Misconfigured { reason })
        }
        _ => Err(TokenFailure::Transient {
            retry_after: retry_after(headers, SystemTime::now()),
            reason,
            answer_lost: false,
        }),
    }
}

fn describe(status: StatusCode, code: &str, text: &str) -> String {
    let mut reason = format!("token endpoint answered HTTP {}", status.as_u16());
    if !code.is_empty() {
        reason.push_str(&format!(" {code}"));
    }
    // Whole: the text is cut to size only after secrets are scrubbed from it, so that a cut
    // cannot leave half a secret that no longer matches ([`TokenFailure::scrubbed`]).
    if !text.is_empty() {
        reason.push_str(&format!(": {text}"));
    }
    reason
}

fn token_set(json: &serde_json::Map<String, Value>) -> Result<TokenSet, String> {
    let access_token = match json.get("access_token").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => token,
        _ => return Err("token endpoint answered 200 without an access_token".into()),
    };
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("token endpoint sent an access_token a header cannot carry".into());
    }
    let expires_in = match json.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64().filter(|s| *s >= 0.0),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|s| *s >= 0.0),
        Some(_) => None,
    }
    .map(|secs| Duration::from_secs_f64(secs.min(10.0 * 365.0 * 86_400.0)));
    let refresh_token = json
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::new(t.to_owned()));
    Ok(TokenSet {
        access_token: SecretString::new(access_token.to_owned()),
        refresh_token,
        expires_in,
        scope: json.get("scope").and_then(Value::as_str).map(str::to_owned),
        facts: Some(Box::new(crate::tenants::ids::grant_facts(json))),
    })
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
