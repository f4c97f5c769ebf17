//! The `monoize` binary: parses the command line, sets up logging and calls into the library.
//! A failure is one line on stderr (`monoize: <message>`) and a non-zero exit.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use monoize::cli::{self, Cli, CliError, Command};
use monoize::config::{Config, LogFormat};
use monoize::server::log_output::LogOutput;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `plugin check` reports on stdout, `user create` prints an id there; log lines would only
    // be noise.
    let quiet = matches!(cli.command, Some(Command::Plugin(_) | Command::User(_)));
    let outcome = Config::from_env()
        .map_err(CliError::from)
        .and_then(|config| {
            init_tracing(config.log_format, quiet);
            cli::run(cli, config)
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Nothing useful is left to do if stderr itself is gone.
            let _ = writeln!(std::io::stderr().lock(), "monoize: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stdout (stderr is kept for the one-line failure), filtered by `RUST_LOG`
/// (default `info`), as JSON lines when `MONOIZE_LOG_FORMAT=json`. A `quiet` command (one
/// whose stdout is its report) logs nothing unless `RUST_LOG` asks, and then to stderr.
fn init_tracing(format: LogFormat, quiet: bool) {
    let default = if quiet { "off" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours_wanted(quiet))
        .with_writer(
            LogOutput::stdout()
                .with_filter(move |_| !quiet)
                .or_else(std::io::stderr),
        );
    // A subscriber can only be missing here, never already set: ignore the impossible error.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether text log lines are coloured: only for a person at a terminal. A file, a pipe,
/// journald or `docker logs` would keep the escape codes as text in every line. `NO_COLOR`
/// (no-color.org) turns them off at a terminal too. A `quiet` command logs to stderr.
fn colours_wanted(quiet: bool) -> bool {
    let terminal = if quiet {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
