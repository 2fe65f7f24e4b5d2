//! `tenants`, `tenant_claim` and `token_concurrency` (SPEC section 9): which request field
//! names the tenant, and how the install flow learns a grant's tenant ids.

use http::HeaderName;

use super::{GrantKind, Provider};
use crate::proxy::is_hop_by_hop;

/// How an app's requests name their tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRouting {
    /// The value of this request header (forwarded unchanged).
    Header(HeaderName),
    /// The first path segment (removed before forwarding).
    Path,
}

/// An app's tenant settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsConfig {
    pub routing: TenantRouting,
    /// oauth2: JSON pointer into the token response or the id_token's claims.
    pub claim: Option<String>,
    /// Token requests in flight at once for this app's tenants.
    pub token_concurrency: u32,
}

pub const DEFAULT_TOKEN_CONCURRENCY: u32 = 4;

/// Parses `tenants = "header:H" | "path"`. Headers bearerd sets or drops cannot name a
/// tenant.
pub fn routing(value: &str) -> Result<TenantRouting, String> {
    if value == "path" {
        return Ok(TenantRouting::Path);
    }
    let Some(name) = value.strip_prefix("header:") else {
        return Err(format!(
            "`{value}` is not \"header:NAME\" (e.g. \"header:X-Property-ID\") or \"path\""
        ));
    };
    let header = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let reserved = ["host", "authorization", "content-length", "cookie"];
    if reserved.contains(&header.as_str()) || is_hop_by_hop(header.as_str().as_bytes()) {
        return Err(format!(
            "`{name}` is a header bearerd sets or drops; name the app's own tenant header"
        ));
    }
    Ok(TenantRouting::Header(header))
}

/// Which combinations an app may use; `Err` names the problem for `tenants`.
pub fn check_grant(
    grant: GrantKind,
    provider: Provider,
    claim: Option<&str>,
) -> Result<(), String> {
    if grant == GrantKind::ClientCredentials {
        return Err(
            "tenants need grant = \"authorization_code\": each tenant is a hotel's own grant"
                .into(),
        );
    }
    if grant == GrantKind::ApiKey && provider != Provider::Cloudbeds {
        return Err(
            "tenants with grant = \"api_key\" need provider = \"cloudbeds\" (its install \
             flow delivers a key per property)"
                .into(),
        );
    }
    if claim.is_some() && provider != Provider::OAuth2 {
        return Err("tenant_claim is for provider = \"oauth2\"; the presets know their ids".into());
    }
    Ok(())
}

/// `tenant_claim`: a JSON pointer (RFC 6901).
pub fn claim(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not a JSON pointer (e.g. \"/account_code\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_values() {
        assert_eq!(routing("path"), Ok(TenantRouting::Path));
        assert_eq!(
            routing("header:X-Property-ID"),
            Ok(TenantRouting::Header(HeaderName::from_static(
                "x-property-id"
            )))
        );
        for bad in [
            "header:",
            "header:bad name",
            "query",
            "header:Authorization",
            "header:Connection",
            "header:TE",
        ] {
            assert!(routing(bad).is_err(), "{bad}");
        }
    }
}
