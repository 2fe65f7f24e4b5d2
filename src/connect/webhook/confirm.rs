//! Asking the provider whether an app-state event is true (SPEC section 5).
//!
//! Cloudbeds does not sign its webhooks and the client id in them is public, so an event is a
//! hint. Before disconnecting, bearerd asks `GET {upstream}/api/v1.3/getAppState?propertyID=P`
//! with the connection's current token. Only two answers confirm the event: `app_state` is
//! `disabled`, or the token itself is rejected (HTTP 401, or Cloudbeds' HTTP 200 auth-failure
//! body) - after an uninstall Cloudbeds ends every session, so a genuine event often looks like
//! that. Anything else (`enabled`, a property the grant does not cover, an error, a timeout)
//! changes nothing.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::ACCEPT;
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::Value;
use url::Url;

use crate::proxy::signals::is_cloudbeds_auth_failure;
use crate::scrub::scrub;
use crate::secret::SecretString;
use crate::token::Token;
use crate::upstream::HttpClient;

/// getAppState answers are tiny.
const MAX_ANSWER: usize = 64 * 1024;
/// Provider text kept in a reason.
const MAX_REASON: usize = 200;

/// A Cloudbeds connection's way to ask for a property's app state.
pub struct AppStateCheck {
    client: HttpClient,
    /// `{upstream}/api/v1.3/getAppState`.
    url: Url,
    timeout: Duration,
    /// Scrubbed from whatever the provider answers.
    client_secret: Option<SecretString>,
}

/// What the provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `data.app_state` is `disabled`.
    Disabled,
    /// The token the question was asked with was rejected.
    TokenRejected,
    /// Anything else, in words (scrubbed).
    NotConfirmed(String),
}

impl AppStateCheck {
    pub fn new(
        client: HttpClient,
        upstream: &Url,
        timeout: Duration,
        client_secret: Option<SecretString>,
    ) -> Option<Self> {
        let url = upstream.join("/api/v1.3/getAppState").ok()?;
        Some(Self {
            client,
            url,
            timeout,
            client_secret,
        })
    }

    /// Asks for `property`'s app state with `token`. `property` is ASCII digits (see
    /// [`super::parse`]).
    pub async fn ask(&self, property: &str, token: &Token) -> Answer {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("propertyID", property);
        let request = http::Request::get(url.as_str())
            .header(token.name.clone(), token.header.clone())
            .header(ACCEPT, "application/json")
            .body(Either::Left(Full::new(Bytes::new())));
        let Ok(request) = request else {
            return Answer::NotConfirmed("the getAppState request could not be built".into());
        };
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| {
                    format!("getAppState failed: {}", crate::upstream::error_chain(&e))
                })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| "getAppState answer too large or cut off".to_owned())?
                .to_bytes();
            Ok::<_, String>(classify(status, &body))
        };
        let answer = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => Answer::NotConfirmed(error),
            Err(_) => {
                Answer::NotConfirmed(format!("getAppState timed out after {:?}", self.timeout))
            }
        };
        match answer {
            Answer::NotConfirmed(text) => Answer::NotConfirmed(self.scrubbed(&text, token)),
            other => other,
        }
    }

    fn scrubbed(&self, text: &str, token: &Token) -> String {
        let mut secrets = vec![token.secret()];
        if let Some(secret) = &self.client_secret {
            secrets.push(secret.secret());
        }
        let clean = scrub(text, &secrets);
        clean.chars().take(MAX_REASON).collect()
    }
}

/// Reads a getAppState answer.
pub fn classify(status: StatusCode, body: &[u8]) -> Answer {
    if status == StatusCode::UNAUTHORIZED {
        return Answer::TokenRejected;
    }
    if status == StatusCode::OK && is_cloudbeds_auth_failure(body) {
        return Answer::TokenRejected;
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |pointer: &str| {
        json.as_ref()
            .and_then(|j| j.pointer(pointer))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let success = json
        .as_ref()
        .and_then(|j| j.get("success"))
        .and_then(Value::as_bool);
    match (status.is_success(), success, field("/data/app_state")) {
        (true, Some(true), Some(state)) if state.eq_ignore_ascii_case("disabled") => {
            Answer::Disabled
        }
        (true, Some(true), Some(state)) => {
            Answer::NotConfirmed(format!("getAppState says the app is {state}"))
        }
        _ => Answer::NotConfirmed(match field("/message") {
            Some(message) => format!("getAppState answered HTTP {}: {message}", status.as_u16()),
            None => format!("getAppState answered HTTP {}", status.as_u16()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_disabled_or_a_rejected_token_confirms() {
        let ok = StatusCode::OK;
        let disabled = br#"{"success":true,"data":{"app_state":"disabled"}}"#;
        assert_eq!(classify(ok, disabled), Answer::Disabled);
        let dead = br#"{"success":false,"message":"User who approved this connection is not active anymore"}"#;
        assert_eq!(classify(ok, dead), Answer::TokenRejected);
        let denied = br#"{"error":"access_denied","message":"The resource owner or authorization server denied the request."}"#;
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, denied),
            Answer::TokenRejected
        );
        for (status, body) in [
            (ok, &br#"{"success":true,"data":{"app_state":"enabled"}}"#[..]),
            (ok, br#"{"success":false,"message":"None of the included property id's match the access_token user's property id"}"#),
            (ok, br#"{"success":false,"data":{"app_state":"disabled"}}"#),
            (ok, b"<html>"),
            (StatusCode::FORBIDDEN, br#"{"success":true,"data":{"app_state":"disabled"}}"#),
            (StatusCode::INTERNAL_SERVER_ERROR, b""),
        ] {
            assert!(
                matches!(classify(status, body), Answer::NotConfirmed(_)),
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
