//! The qubes-storaged daemon: parses its few arguments, sets up logging for journald
//! (no colours or timestamps unless stderr is a terminal; `RUST_LOG` honoured, default
//! `info`) and runs the service until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use qubes_storaged::bus::daemon::{self, DaemonConfig};

const DEFAULT_STATE_DIR: &str = "/var/lib/qubes-storaged";

const USAGE: &str = "\
Usage: qubes-storaged [--state-dir DIR] [--bus-address ADDRESS] [--max-message-size BYTES]

Serves org.qubes.Storage on the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured).

Options:
  --state-dir DIR         where pool and volume configuration is kept (default: the
                          first entry of $STATE_DIRECTORY, which systemd's
                          StateDirectory= sets, else /var/lib/qubes-storaged)
  --bus-address ADDRESS   serve on this bus instead of the system bus
  --max-message-size BYTES
                          the bus's largest message (dbus-daemon's max_message_size,
                          default 33554432); larger replies are refused with
                          org.freedesktop.DBus.Error.LimitsExceeded
  -h, --help              print this help
  -V, --version           print the version";

enum Command {
    Run(DaemonConfig),
    Help,
    Version,
}

/// systemd passes StateDirectory= as `$STATE_DIRECTORY` (colon-separated when several),
/// so the unit and the daemon can never disagree on it.
fn default_state_dir(from_systemd: Option<String>) -> PathBuf {
    from_systemd
        .as_deref()
        .and_then(|dirs| dirs.split(':').next())
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from)
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = DaemonConfig {
        state_dir: default_state_dir(std::env::var("STATE_DIRECTORY").ok()),
        bus_address: None,
        max_message_size: qubes_storaged::bus::reply::BUS_MESSAGE_LIMIT,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--state-dir" => config.state_dir = PathBuf::from(value("--state-dir")?),
            "--bus-address" => config.bus_address = Some(value("--bus-address")?),
            "--max-message-size" => {
                let text = value("--max-message-size")?;
                config.max_message_size = text.parse().map_err(|_| {
                    format!("--max-message-size needs a number of bytes, not {text:?}")
                })?;
            }
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Run(config))
}

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

fn main() -> ExitCode {
    qubes_storaged::memory::tune();
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("qubes-storaged {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("qubes-storaged: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_comes_from_systemd_when_it_sets_one() {
        assert_eq!(default_state_dir(None), PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(
            default_state_dir(Some(String::new())),
            PathBuf::from(DEFAULT_STATE_DIR)
        );
        assert_eq!(
            default_state_dir(Some("/var/lib/qubes-storaged:/var/lib/other".into())),
            PathBuf::from("/var/lib/qubes-storaged")
        );
    }
}
