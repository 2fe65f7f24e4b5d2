//! `bearerd migrate NAME[/TENANT]` (SPEC section 10): asks a running daemon to exchange the
//! connection's (or an app's tenant's) refresh token for an API key (`POST
//! /connections/NAME/migrate`, `POST /connections/NAME/tenants/TENANT/migrate`), as
//! `disconnect` does, and prints what came of it. Exit 1 with the daemon's reason when it
//! did not migrate (no refresh token, already a key, the provider refused); exit 2 for a
//! name that is not NAME or NAME/TENANT.

use std::process::ExitCode;

use http::Method;

use crate::cli_admin::{call_any, checked_path, runtime};

pub fn migrate(admin: &str, name: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let path = match checked_path(name) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let url = format!("{}{path}/migrate", admin.trim_end_matches('/'));
    match runtime.block_on(call_any(Method::POST, &url)) {
        Ok((status, answer)) if status.is_success() => {
            let generation = answer["generation"].as_u64().unwrap_or(0);
            let state = answer["state"].as_str().unwrap_or("-");
            println!("{name}: migrated to an API key (generation {generation}, {state})");
            println!("  the refresh token is no longer used; the key is never refreshed");
            ExitCode::SUCCESS
        }
        Ok((status, answer)) => {
            let detail = answer["detail"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_owned);
            eprintln!("bearerd: {name} was not migrated: {detail}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("bearerd: cannot reach the daemon at {url}: {error}");
            ExitCode::from(1)
        }
    }
}
