//! Encryption at rest (`store.key`): the token fields of a record are sealed with
//! AES-256-GCM under a random 96-bit nonce per write, and stored as
//! `enc:v1:` + base64(nonce || ciphertext || tag). The associated data binds a value to its
//! connection and field, so a sealed token cannot be moved to another row or field.
//!
//! A value without the prefix is plaintext (a record written before the key was set): it is
//! read as is and re-sealed on the next write. A sealed value that does not open under the
//! configured key is an error, never an empty field, so nothing is overwritten by mistake.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use crate::config::SecretSource;
use crate::secret::SecretString;

const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

/// Why a `store.key` is unusable (the caller names the key). Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Unreadable(String),
    #[error("not valid base64 (expected 32 random bytes, base64-encoded)")]
    NotBase64,
    #[error("decodes to {0} bytes; AES-256 needs exactly 32 (try `openssl rand -base64 32`)")]
    WrongLength(usize),
}

/// Why a stored value could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed, but not under this key (or tampered with).
    WrongKey,
    /// Sealed, and no `store.key` is configured.
    NoKey,
    /// Has the prefix but is not a well-formed sealed value.
    Malformed,
}

/// Checks the text of a `store.key` (config validation uses this too).
pub fn parse_key(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| KeyError::NotBase64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::WrongLength(len))
}

/// The cipher for one `store.key`.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Reads and checks `store.key` from its source.
    pub fn from_source(source: &SecretSource) -> Result<Self, KeyError> {
        let text = source.resolve().map_err(KeyError::Unreadable)?;
        Ok(Self::new(&parse_key(text.secret())?))
    }

    /// Seals `plain` as field `field` of `connection`'s record.
    pub fn seal(&self, connection: &str, field: &str, plain: &str) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = associated_data(connection, field);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: aad.as_bytes(),
        };
        // Encryption fails only for inputs past GCM's size limit (64 GiB): not a token.
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    fn open_sealed(&self, connection: &str, field: &str, body: &str) -> Result<String, OpenError> {
        let bytes = STANDARD.decode(body).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let aad = associated_data(connection, field);
        let payload = Payload {
            msg: sealed,
            aad: aad.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(&Nonce::from(nonce), payload)
            .map_err(|_| OpenError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| OpenError::Malformed)
    }
}

fn associated_data(connection: &str, field: &str) -> String {
    format!("bearerd:{connection}:{field}")
}

/// Is `stored` a sealed value (as opposed to plaintext)?
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// A stored field as written: sealed when a key is given, plaintext otherwise.
pub fn seal_field(
    sealer: Option<&Sealer>,
    connection: &str,
    field: &str,
    value: Option<&SecretString>,
) -> Option<String> {
    let value = value?.secret();
    Some(match sealer {
        Some(sealer) => sealer.seal(connection, field, value),
        None => value.to_owned(),
    })
}

/// A stored field as read: opened if sealed, taken as is if plaintext.
pub fn open_field(
    sealer: Option<&Sealer>,
    connection: &str,
    field: &str,
    stored: Option<&str>,
) -> Result<Option<SecretString>, OpenError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let Some(body) = stored.strip_prefix(PREFIX) else {
        return Ok(Some(SecretString::new(stored.to_owned())));
    };
    let sealer = sealer.ok_or(OpenError::NoKey)?;
    sealer
        .open_sealed(connection, field, body)
        .map(|plain| Some(SecretString::new(plain)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // "0123456789abcdef" x2

    fn sealer(text: &str) -> Sealer {
        Sealer::new(&parse_key(text).unwrap())
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(parse_key(KEY).is_ok());
        assert!(parse_key(&format!("{KEY}\n")).is_ok());
        assert_eq!(parse_key("not base64!"), Err(KeyError::NotBase64));
        assert_eq!(parse_key("c2hvcnQ="), Err(KeyError::WrongLength(5)));
        let message = parse_key("c2hvcnQ=").unwrap_err().to_string();
        assert!(!message.contains("c2hvcnQ"), "{message}");
    }

    #[test]
    fn round_trip_with_a_fresh_nonce_per_write() {
        let s = sealer(KEY);
        let token = SecretString::new("rt_secret_value");
        let a = seal_field(Some(&s), "hotel", "refresh_token", Some(&token)).unwrap();
        let b = seal_field(Some(&s), "hotel", "refresh_token", Some(&token)).unwrap();
        assert!(is_sealed(&a) && a != b && !a.contains("rt_secret_value"));
        let opened = open_field(Some(&s), "hotel", "refresh_token", Some(&a)).unwrap();
        assert_eq!(opened.unwrap().secret(), "rt_secret_value");
    }

    #[test]
    fn wrong_key_other_row_or_field_do_not_open() {
        let s = sealer(KEY);
        let other = sealer("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=");
        let sealed = s.seal("hotel", "refresh_token", "rt");
        let open = |s: &Sealer, c: &str, f: &str| open_field(Some(s), c, f, Some(&sealed));
        assert_eq!(
            open(&other, "hotel", "refresh_token"),
            Err(OpenError::WrongKey)
        );
        assert_eq!(open(&s, "motel", "refresh_token"), Err(OpenError::WrongKey));
        assert_eq!(open(&s, "hotel", "access_token"), Err(OpenError::WrongKey));
        let none = open_field(None, "hotel", "refresh_token", Some(&sealed));
        assert_eq!(none, Err(OpenError::NoKey));
        let bad = open_field(Some(&s), "hotel", "refresh_token", Some("enc:v1:%%%"));
        assert_eq!(bad, Err(OpenError::Malformed));
    }

    #[test]
    fn plaintext_is_read_as_is() {
        let s = sealer(KEY);
        let opened = open_field(Some(&s), "hotel", "access_token", Some("at_plain")).unwrap();
        assert_eq!(opened.unwrap().secret(), "at_plain");
        assert_eq!(
            open_field(Some(&s), "hotel", "access_token", None),
            Ok(None)
        );
    }
}
