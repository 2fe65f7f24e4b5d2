//! Who may use the admin listener. With `admin.auth_token`, POSTs, the status page and the
//! connect redirect need it as `Authorization: Bearer <token>` (tools) or as the password of
//! HTTP Basic auth (browsers prompt for it). Browser POSTs must also be same-origin and
//! carry the page's CSRF token. The OAuth callback is protected by its `state` instead, and
//! provider webhooks by confirming them with the provider.

use base64::Engine;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, REFERER};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::respond::{AdminResponse, problem};
use crate::secret::SecretString;

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
        match presented_token(headers) {
            Some(presented) => same_secret(presented.as_bytes(), expected.secret().as_bytes()),
            // Credentials that do not decode are no credentials: never compared, never equal
            // to anything (an empty password once matched an empty token).
            None => false,
        }
    }

    /// Refuses cross-site browser requests and browser form posts without the page's CSRF
    /// token. Only a request with no browser trait at all (no `Origin`, `Referer` or
    /// `Sec-Fetch-Site`, and a body type a cross-site page cannot send without a CORS
    /// preflight) passes without the token: that is a tool such as `bearerd disconnect`.
    pub fn same_origin(&self, headers: &HeaderMap, form: &[(String, String)]) -> bool {
        if !self.not_cross_site(headers) {
            return false;
        }
        let browser_like = ["sec-fetch-site", "origin", "referer"]
            .iter()
            .any(|name| headers.contains_key(*name))
            || content_type(headers).is_some_and(|t| {
                // What an HTML form or a no-cors `fetch` can send cross-site.
                [
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "text/plain",
                ]
                .iter()
                .any(|simple| t.eq_ignore_ascii_case(simple))
            });
        if !browser_like {
            return true;
        }
        is_form(headers) && self.csrf_matches(form)
    }

    /// False when a browser says the request comes from another origin: `Sec-Fetch-Site`
    /// other than `same-origin`/`none`, or an `Origin`/`Referer` that is neither
    /// `public_url`'s nor this request's own (`http://` + its `Host`, which the listener has
    /// already checked: an operator on `localhost:PORT` is same-origin with that page).
    /// Absent headers say nothing (tools and old browsers send none).
    pub fn not_cross_site(&self, headers: &HeaderMap) -> bool {
        let header = |name| headers.get(name).map(|v| v.to_str().unwrap_or(""));
        let own = header(HOST).map(|host| format!("http://{}", host.trim().to_ascii_lowercase()));
        let ours = |origin: &str| origin == self.public_origin || own.as_deref() == Some(origin);
        if let Some(site) = header(http::HeaderName::from_static("sec-fetch-site"))
            && !site.eq_ignore_ascii_case("same-origin")
            && !site.eq_ignore_ascii_case("none")
        {
            return false;
        }
        if let Some(origin) = header(ORIGIN)
            && !ours(origin)
        {
            return false;
        }
        if let Some(referer) = header(REFERER) {
            let origin = url::Url::parse(referer).map(|u| u.origin().ascii_serialization());
            if !origin.is_ok_and(|origin| ours(&origin)) {
                return false;
            }
        }
        true
    }

    pub fn csrf_matches(&self, form: &[(String, String)]) -> bool {
        form.iter()
            .find(|(k, _)| k == "csrf")
            .is_some_and(|(_, v)| same_secret(v.as_bytes(), self.csrf.as_bytes()))
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

/// The token in `Authorization: Bearer <token>` or the password of `Basic`, schemes
/// matched case-insensitively (RFC 9110 section 11.1). `None` when there is no such header
/// or its credentials do not decode.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once([' ', '\t'])?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!credentials.is_empty()).then(|| credentials.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let pair = String::from_utf8(raw).ok()?;
        let (_, password) = pair.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_owned());
    }
    None
}

/// The media type of `Content-Type` without parameters (`text/html; charset=x` -> `text/html`).
fn content_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim())
}

/// `application/x-www-form-urlencoded`, in any case and with any parameters.
pub fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers)
        .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Compares digests, so neither the content nor the length of the secret leaks through timing.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
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

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn bearer_and_basic() {
        let g = guard(Some("s3cret-admin-token"));
        assert!(g.authorized(&headers(&[("authorization", "Bearer s3cret-admin-token")])));
        assert!(g.authorized(&headers(&[(
            "authorization",
            &basic("admin:s3cret-admin-token")
        )])));
        assert!(!g.authorized(&headers(&[("authorization", "Bearer nope")])));
        assert!(!g.authorized(&HeaderMap::new()));
        assert!(guard(None).authorized(&HeaderMap::new()));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let g = guard(Some("s3cret-admin-token"));
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let value = format!("{scheme} s3cret-admin-token");
            assert!(
                g.authorized(&headers(&[("authorization", &value)])),
                "{value}"
            );
        }
        let value = basic("admin:s3cret-admin-token").replacen("Basic", "basic", 1);
        assert!(g.authorized(&headers(&[("authorization", &value)])));
    }

    #[test]
    fn credentials_that_do_not_decode_are_unauthorized() {
        // Even against an empty token (refused by config validation, checked here as well).
        for token in ["", "s3cret-admin-token"] {
            let g = guard(Some(token));
            for value in [
                "Basic !!!not-base64!!!",
                "Basic ",
                "Basic bm9jb2xvbg==", // "nocolon"
                "Bearer",
                "Bearer ",
                "Digest x",
                "s3cret-admin-token",
            ] {
                assert!(
                    !g.authorized(&headers(&[("authorization", value)])),
                    "{value:?} against {token:?}"
                );
            }
        }
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
        assert!(!g.same_origin(&headers(&[("sec-fetch-site", "same-site")]), &[]));
        let referer = headers(&[("referer", "https://evil.example/page")]);
        assert!(!g.same_origin(&referer, &[]));
        // A tool: no Origin, no form.
        assert!(g.same_origin(&HeaderMap::new(), &[]));
        // The page as reached at this request's own (already checked) Host.
        let own = headers(&[
            ("host", "localhost:9901"),
            ("origin", "http://localhost:9901"),
        ]);
        assert!(g.not_cross_site(&own));
        let other = headers(&[
            ("host", "localhost:9901"),
            ("origin", "http://localhost:9902"),
        ]);
        assert!(!g.not_cross_site(&other));
        assert!(g.same_origin(&headers(&[("content-type", "application/json")]), &[]));
    }

    #[test]
    fn the_form_type_is_matched_in_any_case_with_parameters() {
        let g = guard(None);
        let ct = headers(&[(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        )]);
        assert!(is_form(&ct));
        assert!(!g.same_origin(&ct, &[("csrf".into(), "forged".into())]));
        assert!(g.same_origin(&ct, &[("csrf".into(), "csrf-1".into())]));
    }

    #[test]
    fn a_post_a_browser_can_send_cross_site_needs_the_csrf_token() {
        let g = guard(None);
        for ct in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "TEXT/PLAIN;charset=utf-8",
        ] {
            assert!(
                !g.same_origin(&headers(&[("content-type", ct)]), &[]),
                "{ct}"
            );
        }
        // Same-origin page, but not a form: no token can be read from it.
        let page = headers(&[
            ("origin", "http://127.0.0.1:9901"),
            ("content-type", "text/plain"),
        ]);
        assert!(!g.same_origin(&page, &[]));
    }
}
