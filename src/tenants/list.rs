//! Listing an app's tenants for the admin API and the tenant page (SPEC section 9):
//! filtered by state and a search text, in pages of at most [`MAX_PAGE`], with a cursor;
//! one tenant's public status (with an API key's last use, SPEC section 10).

use serde_json::{Value, json};

use super::Tenants;
use crate::token::Connection;

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Most tenants in one page of the list.
pub const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;

/// `?state=&q=&limit=&cursor=` of a tenant list.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub state: Option<String>,
    pub q: Option<String>,
    pub limit: usize,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Self {
        let mut list = ListQuery {
            limit: DEFAULT_PAGE,
            ..Default::default()
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.trim().to_owned();
            match key.as_ref() {
                "state" if !value.is_empty() => list.state = Some(value),
                "q" if !value.is_empty() => list.q = Some(value),
                "limit" => {
                    list.limit = value.parse().unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
                }
                "cursor" if !value.is_empty() => list.cursor = Some(value),
                _ => {}
            }
        }
        list
    }
}

/// One page of tenants, ordered by id (so a cursor stays valid while states change; filter
/// by `state` to see the problems), and the cursor of the next page.
pub fn page(tenants: &Tenants, query: &ListQuery) -> (Vec<Value>, Option<String>) {
    let mut out = Vec::new();
    let mut next = None;
    for (id, connection, covers) in tenants.list() {
        if query.cursor.as_deref().is_some_and(|c| id.as_str() <= c) {
            continue;
        }
        if let Some(q) = &query.q
            && !id.contains(q.as_str())
            && !covers.iter().any(|c| c.contains(q.as_str()))
        {
            continue;
        }
        let shown = tenants.describe(&id, &connection, &covers);
        if let Some(state) = &query.state
            && shown["state"] != state.as_str()
        {
            continue;
        }
        if out.len() == query.limit {
            next = out
                .last()
                .and_then(|v: &Value| v["id"].as_str())
                .map(str::to_owned);
            break;
        }
        out.push(shown);
    }
    (out, next)
}

impl Tenants {
    /// A tenant's public status: never a token.
    pub fn describe(&self, id: &str, connection: &Connection, covers: &[String]) -> Value {
        describe(id, connection, covers, self.delivers_keys())
    }
}

/// A tenant's public status; `keys`: its app's installs deliver API keys. An API key's last
/// use is shown (SPEC section 10: Cloudbeds deletes keys unused for 30 days).
fn describe(id: &str, connection: &Connection, covers: &[String], keys: bool) -> Value {
    let s = connection.snapshot();
    let is_key = s.is_key();
    let covers = if covers.is_empty() {
        vec![id.to_owned()]
    } else {
        covers.to_vec()
    };
    json!({
        "id": id,
        "covers": covers,
        "state": s.state.as_str(),
        "app_state": s.state.app_state(),
        "generation": s.generation,
        "access_expires_at": s.expires_at_wall.map(rfc3339),
        "last_refresh_at": s.last_refresh.map(rfc3339),
        "last_error": s.last_error,
        "credential": if is_key || keys { "api_key" } else { "token" },
        "last_used_at": is_key.then(|| connection.last_used()).flatten().map(rfc3339),
    })
}
