//! The API-key keys of a connection (SPEC section 10): `grant = "api_key"`, `api_key`,
//! `api_key_header` and `keepalive`, checked together so that a combination that cannot
//! work is a config error naming the key, never a surprise at run time.

use super::preset::Preset;
use super::secret::SecretSource;
use super::{GrantKind, KeepaliveCall, KeyConfig, Provider, parse_duration};

/// What the key checks read from one `[[connection]]`.
pub(super) struct RawKeys<'a> {
    pub provider: Provider,
    pub grant: GrantKind,
    pub api_key: Option<&'a SecretSource>,
    pub api_key_header: Option<&'a str>,
    pub keepalive: Option<&'a str>,
    pub probe: Option<&'a str>,
    pub has_client_id: bool,
}

/// Validates the key settings; every problem is `(field, message)` for the caller to name
/// under `connection[i]`.
pub(super) fn keys(raw: &RawKeys<'_>, preset: &Preset) -> Result<KeyConfig, Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut problem = |field: &str, message: String| problems.push((field.to_owned(), message));
    let api_key_grant = raw.grant == GrantKind::ApiKey;
    if raw.api_key.is_some() && !api_key_grant {
        problem(
            "api_key",
            "only used with grant = \"api_key\" (a connection that holds a key)".into(),
        );
    }
    if raw.grant == GrantKind::ClientCredentials {
        if raw.api_key_header.is_some() {
            problem(
                "api_key_header",
                "not used with grant = \"client_credentials\" (it never holds a key)".into(),
            );
        }
        if raw.keepalive.is_some() {
            problem(
                "keepalive",
                "not used with grant = \"client_credentials\" (it never holds a key)".into(),
            );
        }
    }
    if api_key_grant && raw.api_key.is_none() && !raw.has_client_id {
        problem(
            "api_key",
            "grant = \"api_key\" needs api_key (a key from the config) or client_id and \
             client_secret (keys delivered by the connect flow)"
                .into(),
        );
    }
    let header_text = raw.api_key_header.or(preset.api_key_header);
    let header = match header_text {
        Some(text) => match http::HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) if is_forbidden(&name) => {
                problem(
                    "api_key_header",
                    format!("`{text}` is a header bearerd or HTTP itself sets; name another"),
                );
                None
            }
            Ok(name) => Some(name),
            Err(_) => {
                problem(
                    "api_key_header",
                    format!("`{text}` is not a header name like \"x-api-key\""),
                );
                None
            }
        },
        None if api_key_grant => {
            problem(
                "api_key_header",
                format!(
                    "required with grant = \"api_key\" for provider = \"{}\" (the header the \
                     key is sent in, e.g. \"x-api-key\")",
                    raw.provider.as_str()
                ),
            );
            None
        }
        None => None,
    };
    let call = match (raw.provider, raw.probe) {
        (Provider::Cloudbeds, _) => Some(KeepaliveCall::CloudbedsTokenCheck),
        (_, Some(probe)) => Some(KeepaliveCall::Probe(probe.to_owned())),
        (_, None) => None,
    };
    let idle = match raw.keepalive {
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                problem("keepalive", "must be more than 0s".into());
                None
            }
            Ok(d) => Some(d),
            Err(message) => {
                problem("keepalive", message);
                None
            }
        },
        None => preset.keepalive,
    };
    if raw.keepalive.is_some() && call.is_none() {
        problem(
            "keepalive",
            "needs probe (the path to call when a key has been idle) for this provider".into(),
        );
    }
    let configured = raw
        .api_key
        .map(|source| source.resolve().map_err(|e| format!("api_key: {e}")));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(KeyConfig {
        header,
        configured,
        keepalive: idle.zip(call),
    })
}

/// Headers a key must not replace: they frame, route or authenticate the request.
fn is_forbidden(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
    [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(name)
        || crate::proxy::is_hop_by_hop(name.as_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::preset::preset;

    fn raw(grant: GrantKind) -> RawKeys<'static> {
        RawKeys {
            provider: Provider::Cloudbeds,
            grant,
            api_key: None,
            api_key_header: None,
            keepalive: None,
            probe: None,
            has_client_id: true,
        }
    }

    #[test]
    fn cloudbeds_keys_default_to_x_api_key_and_a_weekly_check() {
        let keys = keys(&raw(GrantKind::ApiKey), &preset(Provider::Cloudbeds)).unwrap();
        assert_eq!(keys.header.unwrap().as_str(), "x-api-key");
        assert_eq!(
            keys.keepalive,
            Some((
                Duration::from_secs(7 * 24 * 3600),
                KeepaliveCall::CloudbedsTokenCheck
            ))
        );
    }

    #[test]
    fn oauth2_keys_need_a_header() {
        let mut r = raw(GrantKind::ApiKey);
        r.provider = Provider::OAuth2;
        let problems = keys(&r, &preset(Provider::OAuth2)).unwrap_err();
        assert!(
            problems.iter().any(|(k, _)| k == "api_key_header"),
            "{problems:?}"
        );
        r.api_key_header = Some("Host");
        let problems = keys(&r, &preset(Provider::OAuth2)).unwrap_err();
        assert!(
            problems.iter().any(|(k, _)| k == "api_key_header"),
            "{problems:?}"
        );
    }
}
