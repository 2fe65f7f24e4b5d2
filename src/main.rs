//! The `bearerd` command line (SPEC section 1): `run`, `check`, `status`, `import`,
//! `disconnect`, `migrate` (section 10).

mod cli_admin;
mod cli_import;
mod cli_migrate;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use bearerd::app::App;
use bearerd::config::Config;
use bearerd::logging;
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
        /// The config file.
        #[arg(long, env = "BEARERD_CONFIG", default_value = "./bearerd.toml")]
        config: PathBuf,
    },
    /// Validate the config and print one line per connection.
    Check {
        /// The config file.
        #[arg(long, env = "BEARERD_CONFIG", default_value = "./bearerd.toml")]
        config: PathBuf,
    },
    /// Redeem a refresh token read from standard input for connection NAME (or tenant
    /// NAME/TENANT of an app) and store the tokens the provider returns (nothing is stored
    /// if it rejects the token).
    Import {
        /// The connection's name, as in the config, or NAME/TENANT.
        name: String,
        /// The config file (its store is written).
        #[arg(long, env = "BEARERD_CONFIG", default_value = "./bearerd.toml")]
        config: PathBuf,
        /// Also when a usable grant is stored: it is replaced only if the provider accepts
        /// the given token.
        #[arg(long)]
        force: bool,
    },
    /// Disconnect NAME (or NAME/TENANT, an app's tenant) on a running daemon (tells the
    /// provider, deletes the tokens).
    Disconnect {
        /// The connection's name, as in the config, or NAME/TENANT.
        name: String,
        /// The running daemon's admin listener.
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Exchange NAME's (or NAME/TENANT's) refresh token for an API key on a running daemon
    /// (Cloudbeds migration); from then on the key is used and never refreshed.
    Migrate {
        /// The connection's name, as in the config, or NAME/TENANT.
        name: String,
        /// The running daemon's admin listener.
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Refresh NAME's (or NAME/TENANT's) token now on a running daemon (joins a refresh in
    /// flight).
    Refresh {
        /// The connection's name, as in the config, or NAME/TENANT.
        name: String,
        /// The running daemon's admin listener.
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Print the URL that connects NAME (authorization code), reconnects NAME/TENANT, or
    /// installs a tenant of app NAME, in a browser.
    Connect {
        /// The connection's name, as in the config, or NAME/TENANT.
        name: String,
        /// The running daemon's admin listener.
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
    /// Try bearerd in ten seconds: the real bearerd in front of a simulated provider, on
    /// 127.0.0.1, with no config file and no credentials.
    Demo {
        /// Access token lifetime at the demo provider (at least 2s).
        #[arg(long, default_value = "30s")]
        token_ttl: String,
        /// The proxy listener of the single-hotel connection: the app's base URL.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The proxy listener of the demo app (one base URL, the hotel id as the first path
        /// segment).
        #[arg(long, default_value = "127.0.0.1:8081")]
        app_listen: std::net::SocketAddr,
        /// The admin listener: status page, connect flow, metrics.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Keep the data directory (the token store) on exit.
        #[arg(long)]
        keep: bool,
    },
    /// Show the connections of a running daemon (apps with their tenant counts), or with
    /// NAME the tenants of app NAME.
    Status {
        /// An app whose tenants to list.
        name: Option<String>,
        /// With NAME: only tenants in this state (e.g. needs_authorization).
        #[arg(long, requires = "name")]
        state: Option<String>,
        /// The running daemon's admin listener.
        #[arg(long, env = "BEARERD_ADMIN", default_value = "http://127.0.0.1:9901")]
        admin: String,
    },
}

/// Threads for blocking store I/O (see `run`).
const MAX_BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config, cli.log_format),
        Command::Check { config } => check(&config),
        Command::Status {
            name: None, admin, ..
        } => cli_admin::status(&admin),
        Command::Status {
            name: Some(name),
            state,
            admin,
        } => cli_admin::tenants(&admin, &name, state.as_deref()),
        Command::Demo {
            token_ttl,
            listen,
            app_listen,
            admin,
            keep,
        } => demo(
            &token_ttl,
            bearerd::demo::Listeners {
                listen,
                app_listen,
                admin,
            },
            keep,
            cli.log_format,
        ),
        Command::Disconnect { name, admin } => cli_admin::disconnect(&admin, &name),
        Command::Refresh { name, admin } => cli_admin::refresh(&admin, &name),
        Command::Migrate { name, admin } => cli_migrate::migrate(&admin, &name),
        Command::Connect { name, admin } => cli_admin::connect(&admin, &name),
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
    if !path.exists() {
        eprintln!(
            "bearerd: no config file at {}: give one with --config FILE or BEARERD_CONFIG \
             (config.example.toml documents every key), or try `bearerd demo`",
            path.display()
        );
        return Err(ExitCode::from(2));
    }
    let config = Config::load(path).map_err(|error| {
        eprintln!("bearerd: invalid config {}:\n{error}", path.display());
        ExitCode::from(2)
    })?;
    if config.connections.is_empty() {
        eprintln!(
            "bearerd: invalid config {}:\nconnection: no [[connection]] is configured; \
             bearerd has nothing to proxy",
            path.display()
        );
        return Err(ExitCode::from(2));
    }
    Ok(config)
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
        let key_from_config = bearerd::token::keys::from_config(c);
        match (&c.keys.configured, &c.credentials) {
            (Some(Err(reason)), _) if key_from_config => {
                println!("  warning: api_key unavailable ({reason}); it will start misconfigured");
            }
            (_, Err(reason)) if !key_from_config => {
                println!(
                    "  warning: credentials unavailable ({reason}); it will start misconfigured"
                );
            }
            _ => {}
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
        // File-store reads and writes run on blocking threads; an app loading thousands of
        // tenants at start would otherwise start hundreds of them (tokio's default is 512).
        .max_blocking_threads(MAX_BLOCKING_THREADS)
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
        // Listening before the listeners are up: a SIGTERM during start is not lost.
        let stop = Stop::listen();
        let app = match App::start_on(config, Some(&workers)).await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                return ExitCode::from(1);
            }
        };
        if let Err(error) = shutdown_signal(stop).await {
            tracing::error!(%error, "cannot listen for signals");
            return ExitCode::from(1);
        }
        tracing::info!("shutting down");
        app.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn demo(
    token_ttl: &str,
    listeners: bearerd::demo::Listeners,
    keep: bool,
    format: LogFormat,
) -> ExitCode {
    let token_ttl = match bearerd::config::parse_duration(token_ttl) {
        Ok(ttl) if ttl >= std::time::Duration::from_secs(2) => ttl,
        Ok(_) => {
            eprintln!("bearerd demo: --token-ttl must be at least 2s");
            return ExitCode::from(2);
        }
        Err(message) => {
            eprintln!("bearerd demo: --token-ttl: {message}");
            return ExitCode::from(2);
        }
    };
    init_logging(format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bearerd demo: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let options = bearerd::demo::Options {
        token_ttl,
        listeners,
        keep,
    };
    runtime.block_on(async {
        let demo = match bearerd::demo::Demo::start(&options).await {
            Ok(demo) => demo,
            Err(error) => {
                eprintln!("bearerd demo: {error}");
                return ExitCode::from(1);
            }
        };
        let stop = Stop::listen();
        println!("{}", demo.instructions(token_ttl));
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let signal = shutdown_signal(stop).await;
        tracing::info!("shutting down");
        demo.shutdown().await;
        match signal {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bearerd demo: cannot listen for signals: {error}");
                ExitCode::from(1)
            }
        }
    })
}

/// SIGINT and SIGTERM, listened for from the moment this is created: a signal that comes
/// before [`Stop::wait`] (right after the banner, say) is not lost.
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn listen() -> std::io::Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

async fn shutdown_signal(stop: std::io::Result<Stop>) -> std::io::Result<()> {
    stop?.wait().await;
    Ok(())
}

fn init_logging(format: LogFormat) {
    let spec = std::env::var("BEARERD_LOG").ok();
    let filter = logging::operator_filter(spec.as_deref()).and(logging::dependency_cap());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Json => layer.json().with_filter(filter).boxed(),
        LogFormat::Human => layer
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
    tracing::trace!(
        cap = %logging::DEPENDENCY_CAP,
        "log filter: BEARERD_LOG for bearerd's own events, other crates at most at the cap"
    );
}
