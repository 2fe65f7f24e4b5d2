//! Connect and install flows between redirect and callback, shared by the replicas of a
//! postgres store: the provider sends the browser back to whichever replica the load
//! balancer picks, which may not be the one that started the flow. Kept by a digest of the
//! `state` (the row does not hold the state itself), with the PKCE verifier sealed like a
//! token; taking a flow deletes it, so a callback is honoured once across all replicas.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::secret::SecretString;

/// A flow as the store keeps it.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    /// [`FlowRecord::key_of`] the flow's `state`.
    pub key: String,
    pub connection: String,
    /// An app's install: `Some(tenant named up front, if any)`.
    pub install: Option<Option<String>>,
    pub verifier: SecretString,
    pub redirect_uri: String,
    pub expires_at: SystemTime,
}

impl FlowRecord {
    /// The key of the flow whose `state` is `state`: its SHA-256, hex.
    pub fn key_of(state: &str) -> String {
        Sha256::digest(state.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
