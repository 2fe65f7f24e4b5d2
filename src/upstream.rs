//! The pooled upstream client: hyper-util's legacy client over rustls (system roots plus an
//! optional `ca_file`, HTTP/2 when the server offers it by ALPN), with connect timeouts and
//! keep-alive. One client per connection, shared by the proxy and the token endpoint.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use http_body_util::{Either, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use crate::serve::ClientBody;

/// A request body going upstream: buffered (replayable) or streamed with a size limit.
pub type UpstreamBody = Either<Full<Bytes>, Limited<ClientBody>>;
pub type HttpClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("upstream URL {0} cannot be used as a base")]
    BadUpstream(String),
}

/// Builds the client for one connection.
pub fn client(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpClient, UpstreamError> {
    Ok(Clients::new(ca_file, connect_timeout)?.client())
}

/// Makes clients for one connection: the trusted roots are read once, and each proxy worker
/// gets a client (and so a connection pool) of its own.
#[derive(Clone)]
pub struct Clients {
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
}

impl Clients {
    pub fn new(ca_file: Option<&Path>, connect_timeout: Duration) -> Result<Self, UpstreamError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A malformed system certificate is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let ca_error = |reason: String| UpstreamError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_error(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no certificates in file".to_owned()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "no TLS root certificates found: https upstreams will fail verification"
            );
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls,
            connect_timeout,
        })
    }

    /// A client with a pool of its own.
    pub fn client(&self) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https)
    }
}

/// The upstream base URL, split once so each request's URI is assembled without parsing.
#[derive(Debug, Clone)]
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    /// Path prefix without a trailing slash ("" for a bare host).
    base_path: String,
    /// The `Host` header the client would build for every request (a `format!` each time).
    host: Option<HeaderValue>,
}

impl Target {
    pub fn new(url: &Url) -> Result<Self, UpstreamError> {
        let bad = || UpstreamError::BadUpstream(url.to_string());
        let uri: Uri = url.as_str().parse().map_err(|_| bad())?;
        let host = host_header(&uri);
        let parts = uri.into_parts();
        Ok(Self {
            scheme: parts.scheme.ok_or_else(bad)?,
            authority: parts.authority.ok_or_else(bad)?,
            base_path: url.path().trim_end_matches('/').to_owned(),
            host,
        })
    }

    /// The `Host` header for every request to this upstream.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// The path prefix every request target is joined to ("" for a bare host).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a request's origin-form target.
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let builder = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        let tail = path_and_query.map_or("/", PathAndQuery::as_str);
        if self.base_path.is_empty() {
            match path_and_query {
                Some(pq) => builder.path_and_query(pq.clone()),
                None => builder.path_and_query("/"),
            }
            .build()
        } else {
            builder
                .path_and_query(format!("{}{}", self.base_path, tail))
                .build()
        }
    }
}

/// `Host` as hyper-util's client sets it: the host, and the port unless it is the scheme's
/// default.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let value = match uri.port_u16() {
        Some(443) if secure => host.to_owned(),
        Some(80) if !secure => host.to_owned(),
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    HeaderValue::try_from(value).ok()
}

/// An error and its causes on one line ("client error (Connect): tcp connect error: ...").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_joins_base_path_and_query() {
        let t = Target::new(&Url::parse("https://api.example.com").unwrap()).unwrap();
        let pq = PathAndQuery::from_static("/v1/x?a=1");
        assert_eq!(
            t.uri(Some(&pq)).unwrap().to_string(),
            "https://api.example.com/v1/x?a=1"
        );
        let t = Target::new(&Url::parse("http://h:8080/api/").unwrap()).unwrap();
        assert_eq!(
            t.uri(Some(&pq)).unwrap().to_string(),
            "http://h:8080/api/v1/x?a=1"
        );
        assert_eq!(t.uri(None).unwrap().to_string(), "http://h:8080/api/");
    }

    #[test]
    fn host_header_omits_default_ports() {
        let host = |url: &str| {
            let t = Target::new(&Url::parse(url).unwrap()).unwrap();
            t.host().unwrap().to_str().unwrap().to_owned()
        };
        assert_eq!(host("https://api.example.com/v1"), "api.example.com");
        assert_eq!(host("http://h:8080/api/"), "h:8080");
        assert_eq!(host("https://h:8443"), "h:8443");
        assert_eq!(host("http://[::1]:9000"), "[::1]:9000");
    }

    #[test]
    fn bad_ca_file_is_a_clear_error() {
        let err = client(
            Some(Path::new("/nonexistent/ca.pem")),
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
