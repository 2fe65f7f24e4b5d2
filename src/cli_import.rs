//! `bearerd import NAME`: read a refresh token from standard input, redeem it at the
//! connection's token endpoint, and store the pair the provider returns
//! ([`bearerd::token::import`]). Nothing is stored unless the provider accepts the token. A
//! running daemon adopts the new record on its next store poll (every 2 s with the file
//! store) or, with postgres, at once (`NOTIFY`).

use std::io::Read;
use std::process::ExitCode;

use bearerd::config::{Config, ConnectionConfig, GrantKind};
use bearerd::secret::SecretString;
use bearerd::store::Reach;
use bearerd::token::import::import;
use bearerd::token::oauth::TokenEndpoint;
use bearerd::{discovery, upstream};

pub fn run(config: &Config, name: &str, force: bool) -> ExitCode {
    // `NAME/TENANT`: a tenant of app NAME, stored as its own record.
    let (app, tenant) = match name.split_once('/') {
        Some((app, tenant)) => (app, Some(tenant)),
        None => (name, None),
    };
    let Some(connection) = config.connections.iter().find(|c| c.name == app) else {
        eprintln!("bearerd: no connection named {app} in the config");
        return ExitCode::from(2);
    };
    match (tenant, &connection.tenants) {
        (Some(tenant), Some(_)) if !bearerd::tenants::valid_id(tenant) => {
            eprintln!("bearerd: `{tenant}` is not a tenant id ([A-Za-z0-9._-], 1 to 64)");
            return ExitCode::from(2);
        }
        (Some(_), None) => {
            eprintln!("bearerd: {app} has no tenants: import it as {app}");
            return ExitCode::from(2);
        }
        (None, Some(_)) => {
            eprintln!("bearerd: {app} is an app: import a tenant's grant as {app}/TENANT");
            return ExitCode::from(2);
        }
        _ => {}
    }
    if connection.grant != GrantKind::AuthorizationCode {
        eprintln!(
            "bearerd: connection {name} uses client_credentials: it has no refresh token to import"
        );
        return ExitCode::from(2);
    }
    let token = match read_token() {
        Ok(token) => token,
        Err(message) => {
            eprintln!("bearerd: {message}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bearerd: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let endpoint = token_endpoint(connection).await?;
        let names = [name.to_owned()];
        let store = bearerd::store::open(&config.store, &names, None, Reach::Required)
            .await
            .map_err(|e| e.to_string())?;
        import(store.as_ref(), &endpoint, name, token, force)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(generation) => {
            println!(
                "the provider accepted the refresh token; stored the new tokens for {name} (generation {generation}); a running bearerd adopts them within seconds"
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bearerd: import {name}: {message}");
            ExitCode::from(1)
        }
    }
}

/// One refresh token, trimmed, from standard input.
fn read_token() -> Result<SecretString, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|error| format!("cannot read standard input: {error}"))?;
    let token = input.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("expected one refresh token on standard input".into());
    }
    Ok(SecretString::new(token.to_owned()))
}

/// The connection's token endpoint as the daemon builds it: its credentials, client
/// authentication, `token_timeout`, and a `token_url` from the issuer's metadata if needed.
async fn token_endpoint(c: &ConnectionConfig) -> Result<TokenEndpoint, String> {
    let credentials = c
        .credentials
        .clone()
        .map_err(|reason| format!("credentials unavailable: {reason}"))?;
    let client = upstream::Clients::new(c.ca_file.as_deref(), c.connect_timeout)
        .map_err(|e| e.to_string())?
        .client();
    let token_url = match (&c.token_url, &c.issuer) {
        (Some(url), _) => url.clone(),
        (None, Some(issuer)) => {
            let metadata = discovery::discover(&client, issuer, c.connect_timeout + c.timeout)
                .await
                .map_err(|e| format!("connection[{}].issuer: {e}", c.name))?;
            metadata
                .token_endpoint
                .and_then(|u| url::Url::parse(&u).ok())
                .ok_or_else(|| format!("the issuer {issuer} names no token endpoint"))?
        }
        (None, None) => return Err("no token endpoint is known".into()),
    };
    Ok(TokenEndpoint::new(
        token_url,
        credentials,
        c.client_auth,
        &c.scopes,
        client,
        c.token_timeout,
    ))
}
