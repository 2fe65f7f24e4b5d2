//! A plain type every layer uses: [`SecretString`], a secret whose `Debug` is redacted, with
//! no `Display`, read only through [`SecretString::secret`] (as oauth2-rs does it). It lives
//! here, apart from the token engine, so that the store and the config can use it without
//! depending on the engine.

use std::fmt;
use std::sync::Arc;

/// A secret string (token, client secret): `Debug` is redacted, there is no `Display`, and
/// the value is read only through [`SecretString::secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Arc<str>);

impl SecretString {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}
