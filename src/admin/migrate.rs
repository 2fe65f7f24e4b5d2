//! `POST /connections/NAME/migrate` (SPEC section 10): the refresher exchanges the stored
//! refresh token for an API key, stores it before use and holds it from then on. Also the
//! key fields of a connection's status (`credential`, `last_used_at`).

use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::json;
use tokio::sync::oneshot;

use super::respond::{AdminResponse, json_response, problem, redirect};
use super::{Admin, AdminConnection, describe};
use crate::config::GrantKind;
use crate::scrub::scrub;
use crate::token::refresher::MigrateError;
use crate::token::{Command, TokenState};

/// Longest the admin answer waits for the exchange and the save of the key. A save that is
/// still being retried after this goes on in the refresher (the key stays pending, unused).
const MIGRATE_WAIT: Duration = Duration::from_secs(60);

impl Admin {
    pub(super) async fn migrate(&self, c: &AdminConnection, from_page: bool) -> AdminResponse {
        if c.tenants.is_some() {
            return problem(
                StatusCode::CONFLICT,
                "this connection is an app of many tenants: migrating tenants to API keys is                  not supported yet",
            );
        }
        let (reply, answer) = oneshot::channel();
        let sent = c.connection.command(Command::Migrate { reply }).await;
        let result = match tokio::time::timeout(MIGRATE_WAIT, answer).await {
            Ok(Ok(result)) if sent => Some(result),
            _ => None,
        };
        if from_page {
            return redirect(StatusCode::SEE_OTHER, "/");
        }
        let secret = c.client_secret.as_ref().map(|s| s.secret());
        let clean = |text: &str| scrub(text, &secret.into_iter().collect::<Vec<_>>());
        let (status, detail) = match result {
            Some(Ok(generation)) => {
                tracing::info!(connection = %c.connection.name, generation, "migrated to an API key from the admin listener");
                let mut body = describe(c);
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
