//! The command line: `monoize [serve [--listen ADDR]]`, `monoize plugin check …` and
//! `monoize user create …`. `main.rs` parses it and calls [`run`];
//! everything a command does lives in the library, so tests drive the same code.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;

use crate::app::{self, AppState, StartupError};
use crate::config::{Config, ConfigError};
use crate::conformance;
use crate::dashboard::bootstrap::{self, BootstrapError};
use crate::db::users::Role;
use crate::db::{self, Database, DbError};
use crate::plugins::{EngineSettings, PluginEngine, PluginError};
use crate::server;

const ENVIRONMENT_HELP: &str = "\
Environment:
  MONOIZE_DATABASE_DSN       the database; default sqlite://./data/monoize.db
                             forms: sqlite://relative/path.db, sqlite:///absolute/path.db,
                             sqlite::memory: (missing directories and the file are created)
  DATABASE_URL               used when MONOIZE_DATABASE_DSN is unset or empty
  MONOIZE_LISTEN             address to listen on; default 0.0.0.0:8080
  MONOIZE_LOG_FORMAT         text (default) or json; RUST_LOG sets the level (default info)
  MONOIZE_ROUTING_PLUGIN     a router component (.wasm) to use instead of the built-in one
  MONOIZE_BILLING_PLUGIN     a billing component (.wasm) to use instead of the built-in one
  MONOIZE_DASHBOARD_PLUGIN   a dashboard component (.wasm) to use instead of the built-in one
  MONOIZE_PLUGIN_TIMEOUT_MS  time bound of one plugin call in ms; default 50
  MONOIZE_PLUGIN_MEMORY_MB   memory cap of one plugin instance in MiB; default 64
  MONOIZE_PLUGIN_CACHE_DIR   where compiled plugins are cached; default plugin-cache/ beside
                             the database file (`off`: no cache)
  MONOIZE_METRICS_TOKEN      a token (16+ characters) that GET /metrics then asks for as
                             `Authorization: Bearer <token>`; unset: /metrics is open
  MONOIZE_USER_PASSWORD      the password of `monoize user create` (else one line on stdin)
  (the README lists every variable)

Examples:
  monoize                                   serve on 0.0.0.0:8080 with ./data/monoize.db
  monoize serve --listen 127.0.0.1:3000     serve on another address
  curl http://127.0.0.1:8080/healthz        check that it is up
  monoize plugin check router my.wasm       run the conformance suite on a router
  echo \"$PW\" | monoize user create --username root --role super_admin
                                            create the first administrator headlessly";

/// Monoize: an LLM API gateway whose policy runs as sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "monoize", version, after_help = ENVIRONMENT_HELP)]
pub struct Cli {
    /// What to do; without one, `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: open (or create) the database and serve HTTP until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage dashboard users without the dashboard (headless deployments).
    #[command(subcommand)]
    User(UserCommand),
}

/// `monoize user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print their id. The password is read from MONOIZE_USER_PASSWORD, else
    /// as one line from stdin; it is never an argument, so it stays out of shell history and
    /// the process list.
    Create(UserCreateArgs),
}

/// Options of `monoize user create`.
#[derive(Debug, Args)]
pub struct UserCreateArgs {
    /// The login name: 3 to 22 characters of A-Z, a-z, 0-9 and _.
    #[arg(long)]
    pub username: String,
    /// What they may do.
    #[arg(long, value_enum)]
    pub role: UserRole,
}

/// A dashboard role, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserRole {
    /// Owner of the installation.
    #[value(name = "super_admin")]
    SuperAdmin,
    /// Manages users, providers and models.
    Admin,
    /// Manages only their own API keys.
    User,
}

impl From<UserRole> for Role {
    fn from(role: UserRole) -> Role {
        match role {
            UserRole::SuperAdmin => Role::SuperAdmin,
            UserRole::Admin => Role::Admin,
            UserRole::User => Role::User,
        }
    }
}

/// `monoize plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a world's conformance suite on a component, loaded exactly as the gateway loads it
    /// (same linker, same limits from the environment), against fixtures in an in-memory
    /// database. Prints one line per check and `N passed, M failed`; exits 0 only if all pass.
    Check(CheckArgs),
}

/// Options of `monoize plugin check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The world the component implements.
    #[arg(value_enum)]
    pub world: World,
    /// The component file (`.wasm`, built for wasm32-wasip2).
    pub file: PathBuf,
    /// Also check the semantics the default plugin of the world promises.
    #[arg(long)]
    pub reference: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A plugin world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum World {
    /// Routing plugins: `route(request) -> plan`.
    Router,
    /// Billing plugins: `authorize` and `settle`.
    Billing,
    /// Dashboard plugins: `handle(request) -> response`.
    Dashboard,
}

/// Options of `monoize serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on, as host:port (overrides MONOIZE_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Why a command failed; `main` prints it as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The environment holds an unusable setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address as configured.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A plugin or the plugin engine could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot start: {0}")]
    Startup(std::io::Error),
    /// A component file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadComponent {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A user could not be created.
    #[error(transparent)]
    User(#[from] BootstrapError),
    /// No password was given.
    #[error("no password: set MONOIZE_USER_PASSWORD or write it as one line on stdin")]
    NoPassword,
    /// Some conformance checks failed (the report is on stdout).
    #[error("{failed} of {total} checks did not pass")]
    ChecksFailed {
        /// Checks that failed or were skipped.
        failed: usize,
        /// All checks.
        total: usize,
    },
}

impl From<StartupError> for CliError {
    fn from(error: StartupError) -> Self {
        match error {
            StartupError::Database(error) => CliError::Database(error),
            StartupError::Plugin(error) => CliError::Plugin(error),
            StartupError::Upstream(error) => CliError::Startup(std::io::Error::other(error)),
        }
    }
}

/// Runs the command `cli` names (`serve` when none) with `config`.
pub fn run(cli: Cli, config: Config) -> Result<(), CliError> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args, config),
        Command::Plugin(PluginCommand::Check(args)) => check_plugin(&args, &config),
        Command::User(UserCommand::Create(args)) => create_user(&args, &config),
    }
}

/// The variable `monoize user create` reads the password from.
pub const USER_PASSWORD_VARIABLE: &str = "MONOIZE_USER_PASSWORD";

/// `monoize user create`: validates, hashes the password (argon2id), inserts the user and
/// prints their id.
fn create_user(args: &UserCreateArgs, config: &Config) -> Result<(), CliError> {
    let password = match std::env::var(USER_PASSWORD_VARIABLE) {
        Ok(password) if !password.is_empty() => password,
        _ => read_password_line()?,
    };
    let database = db::open(&config.dsn)?;
    let user = runtime()?.block_on(bootstrap::create_user(
        &database,
        &args.username,
        &password,
        args.role.into(),
    ))?;
    writeln!(std::io::stdout().lock(), "{}", user.id).map_err(CliError::Startup)
}

/// One line of stdin without its line ending; empty input is no password.
fn read_password_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(CliError::Startup)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(CliError::NoPassword);
    }
    Ok(password)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Startup)
}

/// `monoize plugin check`: the world's suite on the file, the report on stdout.
fn check_plugin(args: &CheckArgs, config: &Config) -> Result<(), CliError> {
    let bytes = std::fs::read(&args.file).map_err(|source| CliError::ReadComponent {
        path: args.file.clone(),
        source,
    })?;
    let name = args.file.display().to_string();
    // The gateway's limits, without the on-disk cache: a check leaves no files behind.
    let settings = EngineSettings {
        cache_dir: None,
        ..app::engine_settings(config)
    };
    let report = runtime()?.block_on(async {
        let engine = PluginEngine::new(&settings)?;
        let report = match args.world {
            World::Router => {
                conformance::router::check(&engine, &name, &bytes, args.reference).await
            }
            World::Billing => {
                conformance::billing::check(&engine, &name, &bytes, args.reference).await
            }
            World::Dashboard => conformance::dashboard::check(&engine, &name, &bytes).await,
        };
        Ok::<_, CliError>(report)
    })?;
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.to_text()
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(CliError::Startup)?;
    if report.all_passed() {
        Ok(())
    } else {
        Err(CliError::ChecksFailed {
            failed: report.checks.len() - report.passed(),
            total: report.checks.len(),
        })
    }
}

/// `monoize serve`: opens the database first, so a bad DSN or path fails before anything
/// listens, then serves until a shutdown signal.
fn serve(args: ServeArgs, mut config: Config) -> Result<(), CliError> {
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let database = db::open(&config.dsn)?;
    runtime()?.block_on(serve_until_signal(database, config))
}

async fn serve_until_signal(database: Database, config: Config) -> Result<(), CliError> {
    let shutdown = server::shutdown_signal().map_err(CliError::Startup)?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| CliError::Listen {
            address: config.listen.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(CliError::Startup)?;
    let schema_version = database.schema_version()?;
    let state = AppState::start(database, config).await?;
    let router = state.routing.plugin().name().to_owned();
    tracing::info!(%address, database = %state.config.dsn, schema_version, %router, "monoize is listening");
    if state.config.metrics_token.is_none() && !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "GET /metrics answers anyone who reaches this address; set MONOIZE_METRICS_TOKEN to require a bearer token"
        );
    }
    server::serve(listener, state, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["monoize"]).unwrap();
        assert!(cli.command.is_none());
    }

    #[test]
    fn serve_takes_a_listen_address() {
        let cli = Cli::try_parse_from(["monoize", "serve", "--listen", "127.0.0.1:1"]).unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.listen.as_deref(), Some("127.0.0.1:1"));
    }

    #[test]
    fn user_create_takes_a_username_and_a_role_but_no_password() {
        let cli = Cli::try_parse_from([
            "monoize",
            "user",
            "create",
            "--username",
            "root",
            "--role",
            "super_admin",
        ])
        .unwrap();
        let Some(Command::User(UserCommand::Create(args))) = cli.command else {
            panic!("expected user create")
        };
        assert_eq!(args.username, "root");
        assert_eq!(Role::from(args.role), Role::SuperAdmin);
        assert!(
            Cli::try_parse_from([
                "monoize",
                "user",
                "create",
                "--username",
                "r",
                "--role",
                "user",
                "--password",
                "x",
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "monoize",
                "user",
                "create",
                "--username",
                "r",
                "--role",
                "root"
            ])
            .is_err()
        );
    }

    #[test]
    fn help_names_the_environment_variables() {
        let help = Cli::command().render_long_help().to_string();
        for variable in [
            "MONOIZE_DATABASE_DSN",
            "DATABASE_URL",
            "MONOIZE_LISTEN",
            "MONOIZE_LOG_FORMAT",
        ] {
            assert!(help.contains(variable), "{variable} missing from --help");
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn config_errors_print_as_their_own_one_line() {
        let error = CliError::from(ConfigError::UnsupportedScheme {
            scheme: "postgres".to_owned(),
        });
        assert!(
            error
                .to_string()
                .starts_with("unsupported database scheme `postgres`")
        );
    }
}
