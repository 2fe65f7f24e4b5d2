//! Authorization-server discovery for `provider = "oauth2"` with `issuer = "..."`: RFC 8414
//! (`/.well-known/oauth-authorization-server` inserted before the issuer's path), then
//! OpenID Connect discovery (`/.well-known/openid-configuration` appended). The document's
//! `issuer` must be the configured one, or it is refused (mix-up protection).

use std::time::Duration;

use bytes::Bytes;
use http::header::ACCEPT;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use serde::Deserialize;
use url::Url;

use crate::upstream::HttpClient;

/// The endpoints a discovery document names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub token_endpoint: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the discovery document names issuer {found}, not the configured {expected}")]
    IssuerMismatch { expected: String, found: String },
    #[error("no discovery document for {issuer}: {reason}")]
    Unavailable { issuer: String, reason: String },
    #[error("the discovery document names no token_endpoint")]
    NoTokenEndpoint,
}

/// The two well-known URLs to try, in order.
pub fn well_known_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut urls = Vec::new();
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    urls.push(rfc8414);
    let mut openid = issuer.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    urls.push(openid);
    urls
}

/// Fetches and checks the issuer's metadata.
pub async fn discover(
    client: &HttpClient,
    issuer: &str,
    timeout: Duration,
) -> Result<Metadata, DiscoveryError> {
    let unavailable = |reason: String| DiscoveryError::Unavailable {
        issuer: issuer.to_owned(),
        reason,
    };
    let parsed = Url::parse(issuer).map_err(|e| unavailable(e.to_string()))?;
    let mut last = String::from("nothing tried");
    for url in well_known_urls(&parsed) {
        match fetch(client, &url, timeout).await {
            Ok(metadata) => return check(issuer, metadata),
            Err(reason) => last = format!("{url}: {reason}"),
        }
    }
    Err(unavailable(last))
}

fn check(issuer: &str, metadata: Metadata) -> Result<Metadata, DiscoveryError> {
    // RFC 8414 section 3.3: identical. A trailing slash is the only difference tolerated.
    if metadata.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(DiscoveryError::IssuerMismatch {
            expected: issuer.to_owned(),
            found: metadata.issuer,
        });
    }
    if metadata.token_endpoint.is_none() {
        return Err(DiscoveryError::NoTokenEndpoint);
    }
    Ok(metadata)
}

async fn fetch(client: &HttpClient, url: &Url, timeout: Duration) -> Result<Metadata, String> {
    let request = Request::get(url.as_str())
        .header(ACCEPT, "application/json")
        .body(Either::Left(Full::new(Bytes::new())))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| crate::upstream::error_chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 256 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        serde_json::from_slice::<Metadata>(&body)
            .map_err(|e| format!("not a metadata document: {e}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_placement() {
        let urls = well_known_urls(&Url::parse("https://idp.example/tenant/1").unwrap());
        assert_eq!(
            urls[0].as_str(),
            "https://idp.example/.well-known/oauth-authorization-server/tenant/1"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://idp.example/tenant/1/.well-known/openid-configuration"
        );
        let urls = well_known_urls(&Url::parse("https://idp.example").unwrap());
        assert_eq!(
            urls[0].as_str(),
            "https://idp.example/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://idp.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn issuer_must_match() {
        let metadata = |issuer: &str| Metadata {
            issuer: issuer.into(),
            token_endpoint: Some("https://idp.example/token".into()),
            authorization_endpoint: None,
            revocation_endpoint: None,
        };
        assert!(check("https://idp.example", metadata("https://idp.example/")).is_ok());
        assert!(matches!(
            check("https://idp.example", metadata("https://evil.example")),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        let mut no_token = metadata("https://idp.example");
        no_token.token_endpoint = None;
        assert_eq!(
            check("https://idp.example", no_token),
            Err(DiscoveryError::NoTokenEndpoint)
        );
    }
}
