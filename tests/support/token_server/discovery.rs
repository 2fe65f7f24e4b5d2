//! RFC 8414 and OpenID Connect discovery documents (PROVIDERS.md section 4 rule 17). The
//! issuer is the server's own base URL as the client reached it, unless a test overrides it
//! to check that a mismatching issuer is refused.

use hyper::StatusCode;
use serde_json::json;

use super::wire::json_resp;
use super::{Inner, Resp, TokenServer};

pub(super) fn document(inner: &Inner, host: &str) -> Resp {
    let base = format!("http://{host}");
    let issuer = inner
        .state
        .lock()
        .map(|st| st.discovery_issuer.clone())
        .ok()
        .flatten()
        .unwrap_or_else(|| base.clone());
    json_resp(
        StatusCode::OK,
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "revocation_endpoint": format!("{base}/revoke"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
        }),
    )
}

impl TokenServer {
    /// Serve `issuer` in the discovery documents instead of the server's own URL.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.discovery_issuer = Some(issuer.to_owned());
        }
    }
}
