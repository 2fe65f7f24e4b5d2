//! Secrets in the config: a literal, `{ env = "NAME" }` or `{ file = "PATH" }`.
//!
//! A secret's value never appears in an error message: parse errors describe the expected
//! shape, and resolution errors name the variable or file, not what it holds.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::secret::SecretString;

/// Where a secret comes from, as written in the config file.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Literal(SecretString),
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(<redacted>)"),
            Self::Env(name) => write!(f, "Env({name})"),
            Self::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl SecretSource {
    /// Reads the secret now. The error says where it looked, never what it found.
    pub fn resolve(&self) -> Result<SecretString, String> {
        match self {
            Self::Literal(value) => Ok(value.clone()),
            Self::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(SecretString::new(value)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            Self::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let value = text.strip_suffix('\n').unwrap_or(&text);
                    let value = value.strip_suffix('\r').unwrap_or(value);
                    if value.is_empty() {
                        Err(format!("file {} is empty", path.display()))
                    } else {
                        Ok(SecretString::new(value.to_owned()))
                    }
                }
                Err(e) => Err(format!("cannot read file {}: {e}", path.display())),
            },
        }
    }
}

const EXPECTED: &str = "a string, { env = \"NAME\" } or { file = \"PATH\" }";

impl<'de> serde::Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl SecretVisitor {
    fn wrong<E: de::Error>(&self) -> E {
        E::custom(format!("expected {EXPECTED}"))
    }
}

// Every visit_* for a wrong type is overridden so serde's default message, which quotes the
// value it saw, is never produced for a secret.
impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretSource, E> {
        Ok(SecretSource::Literal(SecretString::new(value.to_owned())))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretSource, E> {
        Err(self.wrong())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretSource, E> {
        Err(self.wrong())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretSource, E> {
        Err(self.wrong())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretSource, E> {
        Err(self.wrong())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SecretSource, A::Error> {
        Err(self.wrong())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_some() {
                return Err(de::Error::custom(format!(
                    "expected exactly one of `env` or `file`, found another key `{key}`"
                )));
            }
            let value: String = map
                .next_value()
                .map_err(|_| de::Error::custom(format!("`{key}` must be a string")))?;
            found = Some(match key.as_str() {
                "env" => SecretSource::Env(value),
                "file" => SecretSource::File(PathBuf::from(value)),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}`, expected {EXPECTED}"
                    )));
                }
            });
        }
        found.ok_or_else(|| self.wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Holder {
        s: SecretSource,
    }

    fn parse(text: &str) -> Result<SecretSource, String> {
        toml::from_str::<Holder>(text)
            .map(|h| h.s)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn shapes() {
        assert!(matches!(parse("s = \"x\""), Ok(SecretSource::Literal(_))));
        assert_eq!(
            parse("s = { env = \"A\" }"),
            Ok(SecretSource::Env("A".into()))
        );
        assert_eq!(
            parse("s = { file = \"/p\" }"),
            Ok(SecretSource::File("/p".into()))
        );
    }

    #[test]
    fn wrong_shapes_never_echo_the_value() {
        let err = parse("s = 918273645").unwrap_err();
        assert!(!err.contains("918273645"), "{err}");
        assert!(parse("s = { env = \"A\", file = \"B\" }").is_err());
        assert!(parse("s = { vault = \"A\" }").is_err());
        assert!(parse("s = {}").is_err());
    }

    #[test]
    fn file_secret_trims_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("bearerd-secret-{}", std::process::id()));
        std::fs::write(&dir, "hunter2\n").unwrap();
        let got = SecretSource::File(dir.clone()).resolve().unwrap();
        assert_eq!(got.secret(), "hunter2");
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn missing_env_names_the_variable() {
        let err = SecretSource::Env("BEARERD_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(err.contains("BEARERD_SURELY_UNSET_VAR"));
    }
}
