//! `POST /connections/NAME/migrate` and `POST /connections/NAME/tenants/ID/migrate` (SPEC
//! section 10): the refresher exchanges the stored refresh token for an API key, stores it
//! before use and holds it from then on. Also the key fields of a connection's status
//! (`credential`, `last_used_at`).

use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::respond::{AdminResponse, json_response, not_found, problem, redirect};
use super::{Admin, AdminConnection, describe};
use crate::config::GrantKind;
use crate::scrub::scrub;
use crate::token::refresher::MigrateError;
use crate::token::{Command, Connection, TokenState};

/// Longest the admin answer waits for the exchange and the save of the key. A save that is
/// still being retried after this goes on in the refresher (the key stays pending, unused).
const MIGRATE_WAIT: Duration = Duration::from_secs(60);

impl Admin {
    pub(super) async fn migrate(&self, c: &AdminConnection, from_page: bool) -> AdminResponse {
        if c.tenants.is_some() {
            return problem(
                StatusCode::CONFLICT,
                &format!(
                    "this connection is an app of many tenants: migrate each tenant (POST \
                     /connections/{name}/tenants/ID/migrate, or bearerd migrate {name}/TENANT)",
                    name = c.connection.name
                ),
            );
        }
        let result = ask(&c.connection).await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, "/");
        }
        answer(c, &c.connection.name, result, || describe(c))
    }

    /// `POST /connections/NAME/tenants/ID/migrate`: as a connection's migrate, for one
    /// tenant of an app (an OAuth app's tenant whose refresh token becomes a key).
    pub(super) async fn migrate_tenant(
        &self,
        c: &AdminConnection,
        id: &str,
        from_page: bool,
    ) -> AdminResponse {
        let Some((tenants, connection, covers)) = super::tenants::find(c, id) else {
            return not_found();
        };
        let result = ask(&connection).await;
        if from_page {
            return redirect(StatusCode::SEE_OTHER, &super::tenants::tenants_page(c));
        }
        answer(c, &connection.name, result, || {
            tenants.describe(id, &connection, &covers)
        })
    }
}

/// Asks the refresher of `connection` to migrate; `None` if it did not answer in time.
async fn ask(connection: &Connection) -> Option<Result<u64, MigrateError>> {
    let (reply, answer) = oneshot::channel();
    let sent = connection.command(Command::Migrate { reply }).await;
    match tokio::time::timeout(MIGRATE_WAIT, answer).await {
        Ok(Ok(result)) if sent => Some(result),
        _ => None,
    }
}

/// The answer to a migrate: the status `shown` (with `"migrated": true`) on success, else a
/// problem saying why (scrubbed of the client secret).
fn answer(
    c: &AdminConnection,
    name: &str,
    result: Option<Result<u64, MigrateError>>,
    shown: impl FnOnce() -> Value,
) -> AdminResponse {
    let secret = c.client_secret.as_ref().map(|s| s.secret());
    let clean = |text: &str| scrub(text, &secret.into_iter().collect::<Vec<_>>());
    let (status, detail) = match result {
        Some(Ok(generation)) => {
            tracing::info!(connection = %name, generation, "migrated to an API key from the admin listener");
            let mut body = shown();
            body["migrated"] = json!(true);
            return json_response(StatusCode::OK, &body);
        }
        Some(Err(MigrateError::Conflict(why))) => (StatusCode::CONFLICT, clean(&why)),
        Some(Err(MigrateError::Failed(why))) => (StatusCode::BAD_GATEWAY, clean(&why)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "bearerd is shutting down, or the migration is still saving the key (it is \
             kept pending and retried; see GET /connections)"
                .to_owned(),
        ),
    };
    problem(status, &detail)
}

/// `"api_key"` or `"token"`: what the connection holds (or, without a credential now, what
/// its grant gives).
pub(super) fn credential(c: &AdminConnection, s: &TokenState) -> &'static str {
    if s.is_key() || c.grant == GrantKind::ApiKey {
        "api_key"
    } else {
        "token"
    }
}

/// An API key's last use; `None` for tokens.
pub(super) fn last_used_at(c: &AdminConnection, s: &TokenState) -> Option<SystemTime> {
    s.is_key().then(|| c.connection.last_used()).flatten()
}
