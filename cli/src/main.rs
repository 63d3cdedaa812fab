//! `qubes-storage`: the command-line client of the org.qubes.Storage D-Bus service,
//! a pure client of `docs/dbus-api.md`. This file only parses the command line, runs
//! the command on a single-threaded tokio runtime, and turns an error into
//! `qubes-storage: <message>` on stderr and its exit status (see `error::exit`).

mod args;
mod client;
mod commands;
mod completion;
mod error;
mod interrupt;
mod job_watch;
mod model;
mod output;
mod paths;
mod polkit_agent;
mod progress;
mod props;
mod proxies;
mod signals;
mod size;
mod sparse_copy;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::error::{exit, CliError};

fn main() -> ExitCode {
    completion::answer_if_asked();
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return command_line_refused(&error),
    };
    init_logging(cli.verbose);
    // With image data on stdout, a --json error document goes nowhere near it.
    let json = cli.json && !cli.writes_data_to_stdout();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return report(&CliError::io("cannot start the async runtime", error), json),
    };
    let result = runtime.block_on(commands::run(cli));
    // A copy abandoned on Ctrl-C may still block on stdin: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => report(&error, json),
    }
}

/// A command line clap refuses: its message and usage on stderr, as clap prints them,
/// and with `--json` the error document on stdout too, as for every other error — unless
/// an argument is `-` (stdout may be meant for an exported image). `--help` and
/// `--version` print as usual.
fn command_line_refused(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let _ = error.print();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = args.iter().take_while(|arg| *arg != "--");
    let json = options.clone().any(|arg| arg == "--json") && !args.iter().any(|arg| arg == "-");
    if json {
        let rendered = error.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        let message = first.strip_prefix("error: ").unwrap_or(first);
        print_error_document(error::CLI_USAGE, message, exit::USAGE);
    }
    ExitCode::from(exit::USAGE)
}

/// Logs go to stderr, quiet unless `-v` (info) or `-vv` (debug); `RUST_LOG` wins.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "qubes_storage=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A log line that cannot be written (the terminal closed) is dropped: the
    // subscriber's own report of it would panic (it uses eprintln!).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .log_internal_errors(false)
        .init();
}

/// Prints the error for people (stderr) and, with `--json`, for scripts (stdout) —
/// unless stdout carries an exported image.
fn report(error: &CliError, json: bool) -> ExitCode {
    output::say(format_args!("qubes-storage: {error}"));
    if json {
        print_error_document(error.error_name(), &error.to_string(), error.exit_code());
    }
    ExitCode::from(error.exit_code())
}

/// The `--json` error document on stdout (`exit::REPORTING` says its form).
fn print_error_document(name: &str, message: &str, exit_status: u8) {
    let document = serde_json::json!({
        "error": name,
        "message": message,
        "exit_status": exit_status,
    });
    let _ = output::print_text(&format!("{document}\n"));
}
