//! The token endpoint client (RFC 6749 section 4.4 and 6) and the classification of its
//! answers into a [`TokenSet`] or a [`TokenFailure`]: rejected (the grant is dead),
//! misconfigured (the operator must fix something) or transient (retry with backoff).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::Value;
use url::Url;

use super::{Outcome, TokenSet};
use crate::config::{ClientAuth, Credentials};
use crate::scrub::scrub;
use crate::secret::SecretString;
use crate::upstream::HttpClient;

/// Token responses are small; anything bigger is not a token response.
const MAX_RESPONSE: usize = 64 * 1024;
/// A failure's reason is cut to this many characters (after scrubbing), so a chatty
/// provider cannot flood `last_error`, the log or the status page.
const MAX_REASON: usize = 300;

/// Why a token request did not produce tokens. `reason` never contains a secret the request
/// carried: provider text in it is scrubbed ([`crate::scrub`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    #[error("{reason}")]
    Transient {
        retry_after: Option<Duration>,
        reason: String,
        /// The request may have reached the provider but no answer came back (timeout, reset,
        /// connection closed, body cut off): the provider may have acted on it, e.g. rotated
        /// the refresh token it carried.
        answer_lost: bool,
    },
    #[error("{reason}")]
    Rejected { reason: String },
    #[error("{reason}")]
    Misconfigured { reason: String },
}

impl TokenFailure {
    /// What the refresher's state machine makes of this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Transient { .. } => Outcome::Transient,
            Self::Rejected { .. } => Outcome::Rejected,
            Self::Misconfigured { .. } => Outcome::Misconfigured,
        }
    }

    /// The same failure with every one of `secrets` removed from its reason, then the
    /// reason cut to [`MAX_REASON`] characters (in that order: a cut first could split a
    /// secret so that it no longer matches).
    pub fn scrubbed(self, secrets: &[&str]) -> Self {
        let clean = |reason: String| -> String {
            let scrubbed = scrub(&reason, secrets);
            if scrubbed.chars().count() <= MAX_REASON {
                return scrubbed;
            }
            let mut cut: String = scrubbed.chars().take(MAX_REASON).collect();
            cut.push_str("...");
            cut
        };
        match self {
            Self::Transient {
                retry_after,
                reason,
                answer_lost,
            } => Self::Transient {
                retry_after,
                reason: clean(reason),
                answer_lost,
            },
            Self::Rejected { reason } => Self::Rejected {
                reason: clean(reason),
            },
            Self::Misconfigured { reason } => Self::Misconfigured {
                reason: clean(reason),
            },
        }
    }
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
    /// The same code exchanged for an API key (automatic delivery, SPEC section 10).
    ApiKeyCode {
        code: &'a SecretString,
        verifier: &'a SecretString,
        redirect_uri: &'a str,
    },
    /// A refresh token exchanged for an API key (migration, SPEC section 10).
    RefreshTokenExchange(&'a SecretString),
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

impl GrantRequest<'_> {
    /// The secrets this request carries, so an echo of them can be scrubbed.
    fn secrets(&self) -> Vec<&str> {
        match self {
            Self::ClientCredentials => Vec::new(),
            Self::RefreshToken(token) | Self::RefreshTokenExchange(token) => vec![token.secret()],
            Self::AuthorizationCode { code, verifier, .. }
            | Self::ApiKeyCode { code, verifier, .. } => {
                vec![code.secret(), verifier.secret()]
            }
        }
    }
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

    /// Performs one token request, bounded by `token_timeout`. Never retries: backoff
    /// belongs to the refresher. A failure's reason is scrubbed of the client secret, of
    /// every secret the request carried, and of `also_secret` (tokens the caller holds): a
    /// provider may echo what it was sent, or what it issued.
    pub async fn request(
        &self,
        grant: GrantRequest<'_>,
        also_secret: &[&str],
    ) -> Result<TokenSet, TokenFailure> {
        let result = self.exchange(&grant).await;
        result.map_err(|failure| {
            let basic = self.basic_credentials();
            let mut secrets = grant.secrets();
            secrets.extend(self.credentials.client_secret.as_ref().map(|s| s.secret()));
            secrets.extend(basic.as_deref());
            secrets.extend_from_slice(also_secret);
            failure.scrubbed(&secrets)
        })
    }

    async fn exchange(&self, grant: &GrantRequest<'_>) -> Result<TokenSet, TokenFailure> {
        let request = self.build(grant).map_err(|e| TokenFailure::Misconfigured {
            reason: format!("cannot build token request: {e}"),
        })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let reason = format!(
                    "token endpoint unreachable: {}",
                    crate::upstream::error_chain(&e)
                );
                // A failed connect never sent the request; anything later may have.
                if e.is_connect() {
                    transient(reason)
                } else {
                    lost(reason)
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|_| lost("token endpoint response too large or cut off".into()))?
                .to_bytes();
            Ok::<_, TokenFailure>((parts.status, parts.headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                lost(format!(
                    "token endpoint timed out: no answer within token_timeout ({:?})",
                    self.timeout
                ))
            })??;
        classify(status, &headers, &body)
    }

    fn build(
        &self,
        grant: &GrantRequest<'_>,
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
            }
            | GrantRequest::ApiKeyCode {
                code,
                verifier,
                redirect_uri,
            } => {
                let grant_type = match grant {
                    GrantRequest::ApiKeyCode { .. } => super::keys::API_KEY_GRANT,
                    _ => "authorization_code",
                };
                form.append_pair("grant_type", grant_type);
                form.append_pair("code", code.secret());
                form.append_pair("redirect_uri", redirect_uri);
                form.append_pair("code_verifier", verifier.secret());
            }
            GrantRequest::RefreshTokenExchange(token) => {
                form.append_pair("grant_type", super::keys::REFRESH_TOKEN_EXCHANGE);
                form.append_pair("refresh_token", token.secret());
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

    /// Cloudbeds: `POST postAppState` with `app_state=disabled` and the current credential
    /// (access token or API key, in its own header).
    pub async fn disable_app_state(&self, url: &Url, token: &super::Token) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(token.name.clone(), token.header.clone())
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
            .map_err(|e| format!("{what} unreachable: {}", crate::upstream::error_chain(&e)))?;
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

    /// The base64 part of the `Authorization: Basic` value this client sends, if it uses
    /// client_secret_basic: an echo of the header carries the secret in that form.
    fn basic_credentials(&self) -> Option<String> {
        let secret = self.credentials.client_secret.as_ref()?;
        if self.auth != ClientAuth::ClientSecretBasic {
            return None;
        }
        let header = basic_auth(self.credentials.client_id.secret(), secret.secret());
        header.strip_prefix("Basic ").map(str::to_owned)
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

/// A transient failure the provider answered (or never saw).
fn transient(reason: String) -> TokenFailure {
    TokenFailure::Transient {
        retry_after: None,
        reason,
        answer_lost: false,
    }
}

/// A transient failure after the request may have reached the provider.
fn lost(reason: String) -> TokenFailure {
    TokenFailure::Transient {
        retry_after: None,
        reason,
        answer_lost: true,
    }
}

mod classify;
pub use classify::{classify, retry_after};

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
