//! `bearerd import NAME`: store a refresh token read from standard input for a connection,
//! for integrations that already hold one. A running daemon adopts it on its next store
//! poll (every 2 s with the file store) or, with postgres, at once (`NOTIFY`).

use std::io::Read;
use std::process::ExitCode;

use bearerd::config::{Config, GrantKind};
use bearerd::store::{Reach, import};
use bearerd::token::SecretString;

pub fn run(config: &Config, name: &str, force: bool) -> ExitCode {
    let Some(connection) = config.connections.iter().find(|c| c.name == name) else {
        eprintln!("bearerd: no connection named {name} in the config");
        return ExitCode::from(2);
    };
    if connection.grant != GrantKind::AuthorizationCode {
        eprintln!(
            "bearerd: connection {name} uses client_credentials: it has no refresh token to import"
        );
        return ExitCode::from(2);
    }
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("bearerd: cannot read standard input: {error}");
        return ExitCode::from(1);
    }
    let token = input.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        eprintln!("bearerd: expected one refresh token on standard input");
        return ExitCode::from(1);
    }
    let token = SecretString::new(token.to_owned());
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
        let names = [name.to_owned()];
        let store = bearerd::store::open(&config.store, &names, None, Reach::Required).await?;
        import(store.as_ref(), name, token, force).await
    });
    match result {
        Ok(generation) => {
            println!(
                "stored a refresh token for {name} (generation {generation}); a running bearerd adopts it within seconds"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bearerd: {error}");
            ExitCode::from(1)
        }
    }
}
