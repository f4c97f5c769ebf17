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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return refuse_arguments(&error),
    };
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

/// `--help` and `--version` print as clap writes them, and so does the help of a command given
/// without its subcommand (to stderr, exit code 2); any other command line that cannot be used
/// is one line on stderr, as every other failure is (with clap's suggestion when it has one),
/// and exit code 2.
fn refuse_arguments(error: &clap::Error) -> ExitCode {
    if !error.use_stderr() {
        // Nothing useful is left to do if stdout itself is gone.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // `monoize plugin` alone: the list of what it can do is the answer.
        let _ = error.print();
        return ExitCode::from(2);
    }
    // clap's text is paragraphs: the problem (with the missing arguments on lines of their
    // own), tips, the usage and a pointer to `--help`.
    let rendered = error.render().to_string();
    let mut paragraphs = rendered.split("\n\n").map(|paragraph| {
        paragraph
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let problem = paragraphs.next().unwrap_or_default();
    let problem = problem.strip_prefix("error: ").unwrap_or(&problem);
    let tip = paragraphs
        .find_map(|paragraph| {
            paragraph
                .strip_prefix("tip: ")
                .map(|tip| format!(" ({tip})"))
        })
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stderr().lock(),
        "monoize: {problem}{tip}; see `monoize --help`"
    );
    ExitCode::from(2)
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
