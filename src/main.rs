//! The `bearerd` command line (SPEC section 1): `run`, `check`, `status`, `import`,
//! `disconnect`.

mod cli_admin;
mod cli_import;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use bearerd::app::App;
use bearerd::config::Config;
use bearerd::serve::Workers;

#[derive(Parser)]
#[command(
    name = "bearerd",
    version,
    about = "Token-refreshing authenticating reverse proxy"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "BEARERD_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy listeners and the admin listener.
    Run {
        #[arg(long, env = "BEARERD_CONFIG", default_value = "./bearerd.toml")]
        config: PathBuf,
    },
    /// Validate the config and print one line per connection.
    Check {
        #[arg(long, env = "BEARERD_CONFIG", default_value = "./bearerd.toml")]
        config: PathBuf,
    },
    /// Redeem a refresh token read from standard input for connection NAME and store the
    /// tokens the provider returns (nothing is stored if it rejects the token).
    Import {
        name: String,
        #[arg(long, env = "BEARERD_CONFIG", default_value = "./bearerd.toml")]
        config: PathBuf,
        /// Also when a usable grant is stored: it is replaced only if the provider accepts
        /// the given token.
        #[arg(long)]
        force: bool,
    },
    /// Disconnect NAME on a running daemon (tells the provider, deletes the tokens).
    Disconnect {
        name: String,
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Show the connections of a running daemon.
    Status {
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config, cli.log_format),
        Command::Check { config } => check(&config),
        Command::Status { admin } => cli_admin::status(&admin),
        Command::Disconnect { name, admin } => cli_admin::disconnect(&admin, &name),
        Command::Import {
            name,
            config,
            force,
        } => match load(&config) {
            Ok(config) => cli_import::run(&config, &name, force),
            Err(code) => code,
        },
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("bearerd: invalid config {}:\n{error}", path.display());
        ExitCode::from(2)
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    println!("config {} is valid", path.display());
    for c in &config.connections {
        println!(
            "{}  provider={} listen={} upstream={} grant={} store={}",
            c.name,
            c.provider.as_str(),
            c.listen,
            c.upstream,
            c.grant.as_str(),
            config.store.kind.as_str(),
        );
        if let Err(reason) = &c.credentials {
            println!("  warning: credentials unavailable ({reason}); it will start misconfigured");
        }
    }
    ExitCode::SUCCESS
}

fn run(path: &std::path::Path, format: LogFormat) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(format);
    // Admin, refreshers and signals: light work, one thread. The proxies run on workers, one
    // current-thread runtime per core (see `bearerd::serve::workers`).
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
    let threads = config.runtime.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let workers = match Workers::start(threads) {
        Ok(workers) => workers,
        Err(error) => {
            eprintln!("bearerd: cannot start {threads} worker threads: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let app = match App::start_on(config, Some(&workers)).await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::from(1);
            }
        };
        if let Err(error) = shutdown_signal().await {
            tracing::error!(%error, "cannot listen for signals");
            return ExitCode::from(1);
        }
        tracing::info!("shutting down");
        app.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BEARERD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
