//! `bearerd status`, `refresh`, `connect` and `disconnect`: talk to a running daemon's admin
//! listener.
//! With `BEARERD_ADMIN_TOKEN` set, requests carry it as a bearer token.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The admin path of `NAME` or `NAME/TENANT` (a tenant of an app), or why it is not one.
pub fn admin_path(name: &str) -> Result<String, String> {
    match name.split_once('/') {
        None => Ok(format!("/connections/{name}")),
        Some((app, tenant)) if bearerd::tenants::valid_id(tenant) && !app.is_empty() => {
            Ok(format!("/connections/{app}/tenants/{tenant}"))
        }
        Some(_) => Err(format!(
            "`{name}` is not NAME or NAME/TENANT (a tenant id is [A-Za-z0-9._-], 1 to 64)"
        )),
    }
}

/// [`admin_path`], or exit code 2 after saying why not.
pub fn checked_path(name: &str) -> Result<String, ExitCode> {
    admin_path(name).map_err(|error| {
        eprintln!("bearerd: {error}");
        ExitCode::from(2)
    })
}

/// `bearerd status NAME [--state S]`: an app's tenants, every page of them.
pub fn tenants(admin: &str, name: &str, state: Option<&str>) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let base = format!("{}/connections/{name}/tenants", admin.trim_end_matches('/'));
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", "200");
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        if let Some(cursor) = &cursor {
            query.append_pair("cursor", cursor);
        }
        let url = format!("{base}?{}", query.finish());
        match runtime.block_on(call_any(Method::GET, &url)) {
            Ok((status, answer)) if status.is_success() => {
                all.extend(answer["tenants"].as_array().cloned().unwrap_or_default());
                match answer["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            Ok((status, _)) if status == http::StatusCode::NOT_FOUND => {
                eprintln!(
                    "bearerd: the daemon has no app named {name} (a connection with tenants)"
                );
                return ExitCode::from(1);
            }
            Ok((status, _)) => {
                eprintln!("bearerd: {url} answered HTTP {status}");
                return ExitCode::from(1);
            }
            Err(error) => {
                eprintln!("bearerd: cannot reach the daemon at {url}: {error}");
                return ExitCode::from(1);
            }
        }
    }
    let rows: Vec<Value> = all
        .into_iter()
        .map(|mut t| {
            t["name"] = t["id"].clone();
            t
        })
        .collect();
    print!("{}", table(&rows, SystemTime::now()));
    ExitCode::SUCCESS
}

pub fn status(admin: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let url = format!("{}/connections", admin.trim_end_matches('/'));
    match runtime.block_on(call(Method::GET, &url)) {
        Ok(Value::Array(connections)) => {
            print!("{}", table(&connections, SystemTime::now()));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("bearerd: {url} did not answer with a list of connections");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("bearerd: cannot reach the daemon at {url}: {error}");
            ExitCode::from(1)
        }
    }
}

pub fn disconnect(admin: &str, name: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let path = match checked_path(name) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let url = format!("{}{path}/disconnect", admin.trim_end_matches('/'));
    match runtime.block_on(call(Method::POST, &url)) {
        Ok(answer) => {
            let report = &answer["report"];
            println!("{name}: disconnected");
            match report["provider_error"].as_str() {
                Some(error) => println!("  the provider was not told: {error}"),
                None if report["provider_notified"] == true => println!("  the provider was told"),
                None => {}
            }
            if let Some(error) = report["store_error"].as_str() {
                println!("  warning: the token store could not be updated: {error}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bearerd: cannot disconnect {name} at {url}: {error}");
            ExitCode::from(1)
        }
    }
}

/// Forces a refresh on the daemon (joining one in flight) and prints what came of it.
pub fn refresh(admin: &str, name: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let path = match checked_path(name) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let url = format!("{}{path}/refresh", admin.trim_end_matches('/'));
    match runtime.block_on(call_any(Method::POST, &url)) {
        Ok((status, answer)) if answer.get("state").is_some() => {
            let state = answer["state"].as_str().unwrap_or("-");
            let generation = answer["generation"].as_u64().unwrap_or(0);
            println!("{name}: {state} (generation {generation})");
            if let Some(error) = answer["last_error"].as_str() {
                println!("  last error: {error}");
            }
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok((status, _)) => {
            eprintln!("bearerd: cannot refresh {name} at {url}: HTTP {status}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("bearerd: cannot reach the daemon at {url}: {error}");
            ExitCode::from(1)
        }
    }
}

/// Prints the URL that connects NAME in a browser (after checking the daemon knows NAME).
pub fn connect(admin: &str, name: &str) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::from(1);
    };
    let base = admin.trim_end_matches('/');
    let path = match checked_path(name) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let url = format!("{base}{path}");
    match runtime.block_on(call_any(Method::GET, &url)) {
        Ok((status, answer)) if status.is_success() && answer.get("install_url").is_some() => {
            println!("{name} is an app: each hotel installs itself. Send hotel staff to:");
            println!("  {}", answer["install_url"].as_str().unwrap_or(""));
            println!("(the Marketplace's Install App URL; add ?tenant=ID to name the tenant)");
            ExitCode::SUCCESS
        }
        Ok((status, answer)) if status.is_success() => {
            if answer["grant"] == "client_credentials" {
                eprintln!(
                    "bearerd: {name} uses client_credentials: there is nothing to connect in a browser"
                );
                return ExitCode::from(1);
            }
            let state = answer["state"].as_str().unwrap_or("-");
            println!("{name} is {state}. To connect it, open this in a browser:");
            println!("  {base}{path}/connect");
            println!(
                "(from another machine, use admin.public_url in place of {base}; the provider \
                 sends the browser back there)"
            );
            ExitCode::SUCCESS
        }
        Ok((status, _)) if status == http::StatusCode::NOT_FOUND => {
            let what = if name.contains('/') {
                "tenant"
            } else {
                "connection"
            };
            eprintln!("bearerd: the daemon at {base} has no {what} named {name}");
            ExitCode::from(1)
        }
        Ok((status, _)) => {
            eprintln!("bearerd: {url} answered HTTP {status}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("bearerd: cannot reach the daemon at {url}: {error}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("bearerd: cannot start the runtime: {error}");
            None
        }
    }
}

/// A call whose answer must be a success.
async fn call(method: Method, url: &str) -> Result<Value, String> {
    match call_any(method, url).await? {
        (status, _) if !status.is_success() => Err(format!("HTTP {status}")),
        (_, value) => Ok(value),
    }
}

/// A call and its status; a body that is not JSON is `Null`.
pub(crate) async fn call_any(
    method: Method,
    url: &str,
) -> Result<(http::StatusCode, Value), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    if let Ok(token) = std::env::var("BEARERD_ADMIN_TOKEN") {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| format!("bad URL: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| bearerd::upstream::error_chain(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    match serde_json::from_slice(&body) {
        Ok(value) => Ok((status, value)),
        Err(_) if !status.is_success() => Ok((status, Value::Null)),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn table(connections: &[Value], now: SystemTime) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".to_owned(),
        "EXPIRES IN".to_owned(),
        "LAST REFRESH".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    let counts = |c: &Value| -> Option<String> {
        let tenants = c.get("tenants")?.as_object()?;
        let mut parts: Vec<String> = tenants
            .iter()
            .map(|(state, n)| format!("{} {}", n, state.replace('_', " ")))
            .collect();
        parts.sort_by_key(|p| !(p.contains("needs") || p.contains("misconfigured")));
        Some(format!("tenants: {}", parts.join(", ")))
    };
    for c in connections {
        let field = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let expires = c
            .get("access_expires_at")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|at| match at.duration_since(now) {
                Ok(left) => {
                    humantime::format_duration(Duration::from_secs(left.as_secs())).to_string()
                }
                Err(_) => "expired".to_owned(),
            })
            .unwrap_or_else(|| "-".to_owned());
        let last = field("last_refresh_at");
        rows.push([
            field("name"),
            field("state"),
            expires,
            if last.is_empty() { "-".into() } else { last },
            counts(c).unwrap_or_else(|| field("last_error")),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
