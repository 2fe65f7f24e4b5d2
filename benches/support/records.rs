//! Token records as another process writes them to a store (an install on another replica,
//! an import): what the tenant benches start from.

use std::sync::Arc;
use std::time::SystemTime;

use bearerd::secret::SecretString;
use bearerd::store::{Credential, Record, TokenStore};

/// A connected record for `name` (`app/TENANT` for a tenant) at generation 1.
pub fn connected(name: String, access: String, refresh: String, expires_at: SystemTime) -> Record {
    Record {
        connection: name,
        generation: 1,
        access_token: Some(SecretString::new(access)),
        expires_at: Some(expires_at),
        refresh_token: Some(SecretString::new(refresh)),
        scope: None,
        state: "connected".into(),
        updated_at: SystemTime::now(),
        covers: Vec::new(),
        credential: Credential::Token,
        last_used_at: None,
    }
}

/// Saves every record, 32 at a time (a postgres store's pool is smaller than thousands).
pub async fn save_all(store: &Arc<dyn TokenStore>, records: Vec<Record>) {
    let records = Arc::new(records);
    let writers = 32;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, records) = (Arc::clone(store), Arc::clone(&records));
            tokio::spawn(async move {
                for record in records.iter().skip(w).step_by(writers) {
                    store.save(record).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
