//! The token endpoint client (RFC 6749 section 4.4 and 6) and the classification of its
//! answers into a [`TokenSet`] or a [`TokenFailure`]: rejected (the grant is dead),
//! misconfigured (the operator must fix something) or transient (retry with backoff).

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::Value;
use url::Url;

use super::{SecretString, TokenSet};
use crate::config::{ClientAuth, Credentials};
use crate::upstream::HttpClient;

/// Token responses are small; anything bigger is not a token response.
const MAX_RESPONSE: usize = 64 * 1024;
/// Provider error text kept in `last_error`, cut so a chatty server cannot flood the status.
const MAX_REASON: usize = 200;

/// Why a token request did not produce tokens. `reason` never contains a token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    #[error("{reason}")]
    Transient {
        retry_after: Option<Duration>,
        reason: String,
    },
    #[error("{reason}")]
    Rejected { reason: String },
    #[error("{reason}")]
    Misconfigured { reason: String },
}

/// Which grant to request.
pub enum GrantRequest<'a> {
    ClientCredentials,
    RefreshToken(&'a SecretString),
    /// The connect callback's code, its PKCE verifier and the exact `redirect_uri` sent.
    AuthorizationCode {
        code: &'a SecretString,
        verifier: &'a SecretString,
        redirect_uri: &'a str,
    },
}

/// A connection's token endpoint with its client authentication.
pub struct TokenEndpoint {
    url: Url,
    credentials: Credentials,
    auth: ClientAuth,
    scope: Option<String>,
    client: HttpClient,
    timeout: Duration,
}

impl TokenEndpoint {
    pub fn new(
        url: Url,
        credentials: Credentials,
        auth: ClientAuth,
        scopes: &[String],
        client: HttpClient,
        timeout: Duration,
    ) -> Self {
        let scope = (!scopes.is_empty()).then(|| scopes.join(" "));
        Self {
            url,
            credentials,
            auth,
            scope,
            client,
            timeout,
        }
    }

    /// Performs one token request. Never retries: backoff belongs to the refresher.
    pub async fn request(&self, grant: GrantRequest<'_>) -> Result<TokenSet, TokenFailure> {
        let request = self.build(grant).map_err(|e| TokenFailure::Misconfigured {
            reason: format!("cannot build token request: {e}"),
        })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                transient(format!(
                    "token endpoint unreachable: {}",
                    crate::proxy::error_chain(&e)
                ))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|_| transient("token endpoint response too large or cut off".into()))?
                .to_bytes();
            Ok::<_, TokenFailure>((parts.status, parts.headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                transient(format!("token endpoint timed out after {:?}", self.timeout))
            })??;
        classify(status, &headers, &body)
    }

    fn build(
        &self,
        grant: GrantRequest<'_>,
    ) -> Result<Request<crate::upstream::UpstreamBody>, http::Error> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        match grant {
            GrantRequest::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
                if let Some(scope) = &self.scope {
                    form.append_pair("scope", scope);
                }
            }
            GrantRequest::RefreshToken(token) => {
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", token.secret());
            }
            GrantRequest::AuthorizationCode {
                code,
                verifier,
                redirect_uri,
            } => {
                form.append_pair("grant_type", "authorization_code");
                form.append_pair("code", code.secret());
                form.append_pair("redirect_uri", redirect_uri);
                form.append_pair("code_verifier", verifier.secret());
            }
        }
        self.authenticated_post(self.url.as_str(), form)
    }

    /// RFC 7009: revoke `token` at `url` with the same client authentication. Providers
    /// answer 200 even for unknown tokens; anything else is reported.
    pub async fn revoke(&self, url: &Url, token: &SecretString, hint: &str) -> Result<(), String> {
        // Built in a block: the serializer is not `Send` and must not live across an await.
        let request = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token.secret());
            form.append_pair("token_type_hint", hint);
            self.authenticated_post(url.as_str(), form)
        }
        .map_err(|e| format!("cannot build revocation request: {e}"))?;
        self.send_expecting_success(request, "revocation endpoint")
            .await
    }

    /// Cloudbeds: `POST postAppState` with `app_state=disabled` and the current access token.
    pub async fn disable_app_state(
        &self,
        url: &Url,
        bearer: &http::HeaderValue,
    ) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, bearer.clone())
            .body(Either::Left(Full::new(Bytes::from_static(
                b"app_state=disabled",
            ))))
            .map_err(|e| format!("cannot build postAppState request: {e}"))?;
        self.send_expecting_success(request, "postAppState").await
    }

    async fn send_expecting_success(
        &self,
        request: Request<crate::upstream::UpstreamBody>,
        what: &str,
    ) -> Result<(), String> {
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| format!("{what} timed out"))?
            .map_err(|e| format!("{what} unreachable: {}", crate::proxy::error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // Cloudbeds answers failures with HTTP 200 {"success":false}.
        let refused = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("success").and_then(Value::as_bool))
            == Some(false);
        if status.is_success() && !refused {
            Ok(())
        } else {
            Err(format!("{what} answered HTTP {}", status.as_u16()))
        }
    }

    /// A form POST carrying the client's authentication (post or basic).
    fn authenticated_post(
        &self,
        url: &str,
        mut form: form_urlencoded::Serializer<'_, String>,
    ) -> Result<Request<crate::upstream::UpstreamBody>, http::Error> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        let id = self.credentials.client_id.secret();
        let secret = self
            .credentials
            .client_secret
            .as_ref()
            .map(SecretString::secret);
        match self.auth {
            ClientAuth::ClientSecretPost => {
                form.append_pair("client_id", id);
                if let Some(secret) = secret {
                    form.append_pair("client_secret", secret);
                }
            }
            ClientAuth::ClientSecretBasic => {
                let mut value = http::HeaderValue::try_from(basic_auth(id, secret.unwrap_or("")))?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
        }
        builder.body(Either::Left(Full::new(Bytes::from(form.finish()))))
    }
}

/// RFC 6749 section 2.3.1 and appendix B: id and secret are form-urlencoded before base64.
fn basic_auth(id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn transient(reason: String) -> TokenFailure {
    TokenFailure::Transient {
        retry_after: None,
        reason,
    }
}

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
        }),
    }
}

fn describe(status: StatusCode, code: &str, text: &str) -> String {
    let mut reason = format!("token endpoint answered HTTP {}", status.as_u16());
    if !code.is_empty() {
        reason.push_str(&format!(" {code}"));
    }
    if !text.is_empty() {
        let cut: String = text.chars().take(MAX_REASON).collect();
        reason.push_str(&format!(": {cut}"));
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

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
