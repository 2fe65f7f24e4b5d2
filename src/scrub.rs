//! Scrubbing provider text of the secrets bearerd knows.
//!
//! A provider's `error_description`, `message` or probe answer is hostile text: a misbehaving
//! endpoint can echo the request it got, client secret and refresh token included. Before such
//! text is stored in `last_error`, logged or shown, every secret the caller knows is replaced,
//! in the forms an echo takes: as sent, form-urlencoded, percent-encoded and JSON-escaped.

/// What stands where a secret was.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for: replacing a two-letter value everywhere
/// would garble the text and protect nothing (no real secret is that short).
const MIN_SECRET_LEN: usize = 6;

/// Returns `text` with every occurrence of each of `secrets` (and its encoded forms) replaced
/// by [`REDACTED`].
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        for form in forms(secret) {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), REDACTED);
            }
        }
    }
    out
}

/// The secret as sent, and as an echo may encode it. Longest first, so an encoded form is
/// replaced whole before a shorter form could match part of it.
fn forms(secret: &str) -> Vec<String> {
    let form_encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent_encoded = form_encoded.replace('+', "%20");
    let json_escaped = serde_json::to_string(secret)
        .map(|quoted| quoted.trim_matches('"').to_owned())
        .unwrap_or_else(|_| secret.to_owned());
    let json_slashes = json_escaped.replace('/', "\\/");
    let mut forms = vec![
        secret.to_owned(),
        form_encoded,
        percent_encoded,
        json_escaped,
        json_slashes,
    ];
    forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_secret_as_sent_and_in_its_encoded_forms() {
        let secret = "s3cr/et+value=&\"x";
        let echoed = format!(
            "got client_secret={}&raw={secret} json={}",
            form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            serde_json::to_string(secret).unwrap_or_default()
        );
        let clean = scrub(&echoed, &[secret]);
        assert!(!clean.contains("s3cr"), "{clean}");
        assert!(clean.contains("client_secret=[redacted]"), "{clean}");
    }

    #[test]
    fn leaves_other_text_and_short_values_alone() {
        assert_eq!(
            scrub("invalid_grant: bad token", &["ab", "not-there"]),
            "invalid_grant: bad token"
        );
    }

    #[test]
    fn replaces_every_secret_given() {
        let clean = scrub(
            "rt=refresh-123456 cs=secret-abcdef",
            &["refresh-123456", "secret-abcdef"],
        );
        assert_eq!(clean, "rt=[redacted] cs=[redacted]");
    }
}
