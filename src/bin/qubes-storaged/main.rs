//! The qubes-storaged daemon: parses its arguments (`args.rs`), sets up logging for
//! journald (no colours or timestamps unless stderr is a terminal; `RUST_LOG` honoured,
//! default `info`) and runs the service until SIGTERM or SIGINT.

mod args;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use qubes_storaged::bus::daemon::{self, DaemonConfig};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.with_ansi(false).without_time().init();
    }
}

fn print_man_page() -> ExitCode {
    let written = args::man_page().and_then(|page| std::io::stdout().lock().write_all(&page));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("qubes-storaged: cannot write the manual page: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    qubes_storaged::memory::tune();
    let args = args::Args::parse();
    if args.man {
        return print_man_page();
    }
    let config = DaemonConfig {
        state_dir: args.state_dir(),
        bus_address: args.bus_address.clone(),
        max_message_size: args.max_message_size,
        polkit_timeout: std::time::Duration::from_secs(args.polkit_timeout),
    };
    init_logging();
    qubes_storaged::open_files::raise_limit();
    // The engine operations that may run at once, a margin for the rest
    // (`bus::engine_places`), and one hand-off thread per runtime worker (each worker
    // that runs an operation in place hands its other tasks to a blocking thread).
    use qubes_storaged::bus::engine_places::{ENGINE_PLACES, OTHER_BLOCKING_THREADS};
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(ENGINE_PLACES + OTHER_BLOCKING_THREADS + workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("qubes-storaged: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}
