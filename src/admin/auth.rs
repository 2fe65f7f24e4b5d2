//! Who may use the admin listener. With `admin.auth_token`, POSTs, the status page and the
//! connect redirect need it as `Authorization: Bearer <token>` (tools) or as the password of
//! HTTP Basic auth (browsers prompt for it). Browser POSTs must also be same-origin and
//! carry the page's CSRF token. The OAuth callback is protected by its `state` instead, and
//! provider webhooks by the connection's client id.

use base64::Engine;
use http::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::respond::{AdminResponse, problem};
use crate::token::SecretString;

pub struct Guard {
    pub auth_token: Option<SecretString>,
    /// Random per process, embedded in the status page's forms.
    pub csrf: String,
    /// `scheme://host[:port]` of `admin.public_url`.
    pub public_origin: String,
}

impl Guard {
    /// True if the request carries the admin token (or none is configured).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.auth_token else {
            return true;
        };
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let presented = if let Some(token) = value.strip_prefix("Bearer ") {
            token.trim().to_owned()
        } else if let Some(encoded) = value.strip_prefix("Basic ") {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| {
                    pair.split_once(':')
                        .map(|(_, password)| password.to_owned())
                })
                .unwrap_or_default()
        } else {
            return false;
        };
        constant_time_eq(presented.as_bytes(), expected.secret().as_bytes())
    }

    /// Refuses cross-site browser requests and form posts without the page's CSRF token.
    /// Requests from tools (no `Origin`, no `Sec-Fetch-Site`, no form body) pass.
    pub fn same_origin(&self, headers: &HeaderMap, form: &[(String, String)]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(site) = header("sec-fetch-site")
            && site != "same-origin"
            && site != "none"
        {
            return false;
        }
        if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok())
            && origin != self.public_origin
        {
            return false;
        }
        if is_form(headers) {
            let csrf = form
                .iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.as_str());
            return csrf.is_some_and(|c| constant_time_eq(c.as_bytes(), self.csrf.as_bytes()));
        }
        true
    }

    /// 401 that makes a browser ask for the token (as a Basic password).
    pub fn challenge(&self) -> AdminResponse {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "this admin endpoint needs admin.auth_token: Authorization: Bearer <token>, or any user name with the token as password",
        );
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"bearerd admin\", charset=\"UTF-8\""),
        );
        response
    }
}

pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>) -> Guard {
        Guard {
            auth_token: token.map(|t| SecretString::new(t.to_owned())),
            csrf: "csrf-1".into(),
            public_origin: "http://127.0.0.1:9901".into(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_basic() {
        let g = guard(Some("s3cret"));
        assert!(g.authorized(&headers(&[("authorization", "Bearer s3cret")])));
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
        assert!(g.authorized(&headers(&[("authorization", &format!("Basic {basic}"))])));
        assert!(!g.authorized(&headers(&[("authorization", "Bearer nope")])));
        assert!(!g.authorized(&HeaderMap::new()));
        assert!(guard(None).authorized(&HeaderMap::new()));
    }

    #[test]
    fn cross_site_and_csrf() {
        let g = guard(None);
        let form = |c: &str| vec![("csrf".to_string(), c.to_string())];
        let same = headers(&[
            ("origin", "http://127.0.0.1:9901"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert!(g.same_origin(&same, &form("csrf-1")));
        assert!(!g.same_origin(&same, &form("forged")));
        assert!(!g.same_origin(&same, &[]));
        let foreign = headers(&[("origin", "https://evil.example")]);
        assert!(!g.same_origin(&foreign, &[]));
        assert!(!g.same_origin(&headers(&[("sec-fetch-site", "cross-site")]), &[]));
        // A tool: no Origin, no form.
        assert!(g.same_origin(&HeaderMap::new(), &[]));
    }
}
