//! The service under test: the real `qubes-storaged` binary, given by path (a test of
//! the root package passes `env!("CARGO_BIN_EXE_qubes-storaged")`, the CLI's tests the
//! binary they built, the bench its release build), with a state directory and a log
//! file (its stderr, appended to, so a restart continues the same log), serving on a
//! private [`Bus`]. It is ready when its name appears on the bus. Dropping it sends
//! SIGTERM and waits (SIGKILL after the deadline).

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use nix::sys::signal::Signal;
use zbus::Connection;

use crate::bus::{try_wait_for_name, Bus};
use crate::process::Guard;

/// The service's name on the bus.
pub const SERVICE: &str = "org.qubes.Storage";

/// How the service finds the test bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusArg {
    /// `--bus-address ADDRESS`.
    Flag,
    /// `DBUS_SYSTEM_BUS_ADDRESS` in the environment, no flag: the system-bus default.
    SystemBusEnv,
}

/// How to start the service.
#[derive(Debug, Clone, Copy)]
pub struct DaemonSpec<'a> {
    pub binary: &'a Path,
    pub state_dir: &'a Path,
    /// Its stderr, appended to.
    pub log: &'a Path,
    pub bus_arg: BusArg,
    /// `RUST_LOG` for it; `None` leaves the environment's (the daemon's default is
    /// `info`).
    pub log_filter: Option<&'a str>,
    /// More arguments (e.g. `--max-message-size`).
    pub extra_args: &'a [&'a str],
    /// More environment variables for it (e.g. a test-only fault switch).
    pub env: &'a [(&'a str, &'a str)],
    /// Its soft limit of open files, as systemd and most shells give one (1024);
    /// `None` leaves this process's. Set with `prlimit` (util-linux), which then execs
    /// it: the same process.
    pub soft_open_files: Option<u64>,
}

impl<'a> DaemonSpec<'a> {
    /// `binary` with `--bus-address` and the environment's log filter.
    pub fn new(binary: &'a Path, state_dir: &'a Path, log: &'a Path) -> DaemonSpec<'a> {
        DaemonSpec {
            binary,
            state_dir,
            log,
            bus_arg: BusArg::Flag,
            log_filter: None,
            extra_args: &[],
            env: &[],
            soft_open_files: None,
        }
    }
}

/// The running service.
pub struct Daemon {
    child: Guard,
}

impl Daemon {
    /// Starts the service on `bus` and waits (watching through `conn`) until it owns
    /// its name; a failure message carries its log.
    pub async fn start(spec: &DaemonSpec<'_>, bus: &Bus, conn: &Connection) -> Daemon {
        match Daemon::try_start(spec, bus, conn).await {
            Ok(daemon) => daemon,
            Err(why) => panic!("{why}"),
        }
    }

    /// [`Daemon::start`] that reports a service that exits or never owns its name
    /// (with its log) instead of panicking.
    pub async fn try_start(
        spec: &DaemonSpec<'_>,
        bus: &Bus,
        conn: &Connection,
    ) -> Result<Daemon, String> {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(spec.log)
            .expect("daemon log");
        let mut command = match spec.soft_open_files {
            None => Command::new(spec.binary),
            Some(soft) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--nofile={soft}:")).arg(spec.binary);
                prlimit
            }
        };
        command.arg("--state-dir").arg(spec.state_dir);
        match spec.bus_arg {
            BusArg::Flag => command.arg("--bus-address").arg(bus.address()),
            BusArg::SystemBusEnv => command.env("DBUS_SYSTEM_BUS_ADDRESS", bus.address()),
        };
        command.args(spec.extra_args);
        if let Some(filter) = spec.log_filter {
            command.env("RUST_LOG", filter);
        }
        for (key, value) in spec.env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", spec.binary.display()));
        let mut child = Guard::new("qubes-storaged", child);
        try_wait_for_name(conn, SERVICE, &mut child, Some(spec.log)).await?;
        Ok(Daemon { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.exited().is_none()
    }

    /// SIGTERM and wait; the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.child.terminate()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.child.kill();
    }

    /// Sends SIGTERM without waiting (the caller watches what happens meanwhile).
    pub fn send_sigterm(&self) {
        self.child.signal(Signal::SIGTERM).expect("kill");
    }

    /// Waits for the exit that a signal sent earlier causes; panics after the deadline.
    pub fn wait_exit(mut self) -> ExitStatus {
        self.child
            .wait()
            .expect("qubes-storaged did not exit in time")
    }
}

/// Whether the daemon writing `log` has finished the work it queued after its replies
/// (the engine logs "after-reply work queued" before an operation replies and "after-reply
/// work done" when that work ran). Only the last daemon of the log counts: its job
/// numbers start again, and a killed one may have left work that never ran.
pub fn after_reply_work_done(log: &str) -> bool {
    let current = log
        .rfind("state directory locked")
        .map_or(log, |start| &log[start..]);
    current.matches("after-reply work queued").count()
        == current.matches("after-reply work done").count()
}
