//! Which grant a request's token comes from: the connection's own, or, for an app (SPEC
//! section 9), the tenant the request names. The one home of tenant routing for both
//! request paths: hyper's ([`Proxy::route_parts`]) and the fast path's ([`Proxy::route`]
//! with the key [`super::h1::request`] found), so both answer alike.

use std::sync::Arc;

use http::request::Parts;

use super::Proxy;
use super::problem::ProxyError;
use crate::config::TenantRouting;
use crate::tenants::{Miss, Tenants};
use crate::token::{Connection, Token, TokenError};

/// The grant a request is served with.
pub enum Granted<'a> {
    /// The connection's own grant.
    Own(&'a Connection),
    /// An app's tenant.
    Tenant {
        tenants: &'a Tenants,
        connection: Arc<Connection>,
    },
}

impl Granted<'_> {
    pub fn connection(&self) -> &Connection {
        match self {
            Self::Own(connection) => connection,
            Self::Tenant { connection, .. } => connection,
        }
    }

    /// A token for the request ([`Connection::token`]).
    pub async fn token(&self) -> Result<Token, ProxyError> {
        let result = self.connection().token().await;
        result.map_err(|e| self.error(e))
    }

    /// A token newer than `failed` ([`Connection::newer_than`]).
    pub async fn newer_than(&self, failed: u64, unauthorized: bool) -> Result<Token, ProxyError> {
        let result = self.connection().newer_than(failed, unauthorized).await;
        result.map_err(|e| self.error(e))
    }

    /// A tenant without a usable token is reconnected at its own URL.
    fn error(&self, error: TokenError) -> ProxyError {
        match (self, error) {
            (
                Self::Tenant {
                    tenants,
                    connection,
                },
                TokenError::NotConnected { state },
            ) => {
                let id = tenants.tenant_of(&connection.name).unwrap_or_default();
                ProxyError::TenantNotConnected {
                    tenant: id.to_owned(),
                    state,
                    connect_url: tenants.connect_url(id),
                }
            }
            (_, error) => error.into(),
        }
    }
}

impl Proxy {
    /// The grant for a request whose tenant key (header value or first path segment) is
    /// `key`; for a connection without tenants, its own.
    pub fn route(&self, key: Option<&[u8]>) -> Result<Granted<'_>, ProxyError> {
        let Some(tenants) = &self.tenants else {
            return Ok(Granted::Own(&self.connection));
        };
        let Some(key) = key else {
            return Err(no_tenant(tenants));
        };
        match tenants.route(key) {
            Ok(connection) => Ok(Granted::Tenant {
                tenants,
                connection,
            }),
            Err(Miss::NoTenant) => Err(no_tenant(tenants)),
            Err(Miss::Mixed) => Err(ProxyError::BadRequest(
                "the tenant ids in this request are served by different grants; send one",
            )),
            Err(Miss::Unknown(tenant)) => Err(ProxyError::UnknownTenant {
                tenant,
                install_url: tenants.install_url(),
            }),
        }
    }

    /// hyper's path: routes by the request's header or first path segment, and removes
    /// that segment from the target (`/12345/api/x?q` goes on as `/api/x?q`).
    pub fn route_parts(&self, parts: &mut Parts) -> Result<Granted<'_>, ProxyError> {
        let Some(tenants) = &self.tenants else {
            return Ok(Granted::Own(&self.connection));
        };
        match &tenants.routing {
            TenantRouting::Header(name) => {
                let mut values = parts.headers.get_all(name).iter();
                let (first, more) = (values.next(), values.next());
                if more.is_some() {
                    return Err(ProxyError::BadRequest(
                        "the tenant header appears more than once; send it once",
                    ));
                }
                self.route(first.map(|v| v.as_bytes()))
            }
            TenantRouting::Path => {
                let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let Some((tenant, rest)) = split_tenant(target) else {
                    return Err(no_tenant(tenants));
                };
                let granted = self.route(Some(tenant.as_bytes()))?;
                let mut forwarded = String::with_capacity(rest.len() + 1);
                if !rest.starts_with('/') {
                    forwarded.push('/');
                }
                forwarded.push_str(rest);
                parts.uri = forwarded
                    .parse()
                    .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
                Ok(granted)
            }
        }
    }
}

/// Splits an origin-form target into its first path segment and the rest (which may be
/// empty or start with `?`: the caller puts `/` before it). `None` without a first segment.
pub fn split_tenant(target: &str) -> Option<(&str, &str)> {
    let after = target.strip_prefix('/')?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (tenant, rest) = after.split_at(end);
    (!tenant.is_empty()).then_some((tenant, rest))
}

fn no_tenant(tenants: &Tenants) -> ProxyError {
    ProxyError::NoTenant(match &tenants.routing {
        TenantRouting::Header(name) => format!(
            "this app's requests name their tenant in the {} header",
            name.as_str()
        ),
        TenantRouting::Path => {
            "this app's requests name their tenant as the first path segment: /TENANT/path".into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_segment_is_the_tenant() {
        assert_eq!(
            split_tenant("/12345/api/v1.3/getHotels"),
            Some(("12345", "/api/v1.3/getHotels"))
        );
        assert_eq!(split_tenant("/12345"), Some(("12345", "")));
        assert_eq!(split_tenant("/12345?a=1"), Some(("12345", "?a=1")));
        assert_eq!(split_tenant("/12345/"), Some(("12345", "/")));
        assert_eq!(split_tenant("/"), None);
        assert_eq!(split_tenant("//x"), None);
        assert_eq!(split_tenant("/?a"), None);
    }
}
