//! Cockpit for the browser tests: `cockpit-ws` serving plain HTTP on a free loopback
//! port without a login, and the `cockpit-bridge` of its one session, which the test
//! starts itself (`--local-session=-`: ws speaks to the bridge over its own stdin and
//! stdout), so both are children of the test, stopped by PID and reaped.
//!
//! The bridge is what the page's D-Bus and process channels run in, so its environment
//! is the session's: `DBUS_SYSTEM_BUS_ADDRESS` is the test's private bus (the page's
//! "system" bus), `XDG_DATA_DIRS` starts with the staged installation (where it finds
//! the page's package next to Cockpit's own in /usr/share/cockpit), `PATH` with the
//! staged binaries (the CLI the page spawns for import and export), and it runs as the
//! given user — root for an administrator's session, a test user for an unprivileged
//! one (through `setpriv`). cockpit-ws reads no /etc/cockpit (`XDG_CONFIG_DIRS` is an
//! empty temp dir).
//!
//! A local session serves one browser connection: when the page's WebSocket closes,
//! the bridge ends. Start one per test.
//!
//! The bridge starts helpers of its own unless their addresses are set: a session bus
//! (`DBUS_SESSION_BUS_ADDRESS`) and an ssh-agent (`SSH_AUTH_SOCK`). Both are set to
//! nowhere, so the bridge is the only process of the session (a helper would outlive a
//! killed bridge, and nothing here would reap it). It works in `XDG_RUNTIME_DIR`, a
//! directory of the session's user in the temp dir.
//!
//! The port: one the kernel just handed out for 127.0.0.1:0, then released and given
//! to cockpit-ws; if ws cannot bind it (taken meanwhile), another is tried.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use tempfile::TempDir;

use crate::process::{Guard, DEADLINE, POLL};
use crate::users::{Account, Groups};

pub const COCKPIT_WS: &str = "/usr/lib/cockpit/cockpit-ws";
pub const COCKPIT_BRIDGE: &str = "/usr/bin/cockpit-bridge";
/// Where Debian's Cockpit packages are, after the staged ones (not /usr/local/share:
/// what a real installation put there must not stand in for the staged page).
const SYSTEM_DATA_DIRS: &str = "/usr/share";
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The session to start.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The page's system bus.
    pub bus_address: String,
    /// Prepended to `XDG_DATA_DIRS` (each holding `cockpit/<package>`).
    pub data_dirs: Vec<PathBuf>,
    /// Prepended to `PATH`.
    pub bin_dirs: Vec<PathBuf>,
    /// The session's user; `None` is root.
    pub user: Option<Account>,
}

/// cockpit-ws and its session's bridge, both writing their messages to one log file.
/// Drop stops ws first (the bridge then sees the end of its input), then the bridge.
pub struct Cockpit {
    ws: Guard,
    bridge: Guard,
    port: u16,
    _config: TempDir,
}

fn joined(dirs: &[PathBuf], system: &str) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    parts.push(system.to_owned());
    parts.join(":")
}

impl Cockpit {
    /// Starts a session as `spec` says; returns once cockpit-ws accepts connections.
    pub fn start(spec: &SessionSpec) -> Cockpit {
        let config = tempfile::Builder::new()
            .prefix("qsd-cockpit-")
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the cockpit config dir");
        for _attempt in 0..5 {
            let port = free_port();
            let mut bridge = start_bridge(spec, &config);
            let mut ws = start_ws(port, &mut bridge, &config);
            if wait_until_listening(&mut ws, port) {
                return Cockpit {
                    ws,
                    bridge,
                    port,
                    _config: config,
                };
            }
            // ws exited: the port was taken meanwhile. Both guards stop here; next port.
        }
        panic!("cockpit-ws did not start on any of five free ports");
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What cockpit-ws and the bridge wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self._config)).unwrap_or_default()
    }

    pub fn ws_pid(&self) -> u32 {
        self.ws.pid()
    }

    pub fn bridge_pid(&self) -> u32 {
        self.bridge.pid()
    }
}

/// Polls a TCP connect until it succeeds; false if ws exited meanwhile.
fn wait_until_listening(ws: &mut Guard, port: u16) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        if ws.exited().is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "cockpit-ws does not listen on port {port}"
        );
        std::thread::sleep(POLL);
    }
}

fn log_path(config: &TempDir) -> PathBuf {
    config.path().join("cockpit.log")
}

/// The shared log, opened for appending (one handle per process).
fn log_file(config: &TempDir) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(log_path(config))
        .expect("the cockpit log")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// The session user's own runtime directory (mode 0700), made once.
fn runtime_dir(spec: &SessionSpec, config: &TempDir) -> PathBuf {
    let dir = config.path().join("runtime");
    if !dir.exists() {
        std::fs::create_dir(&dir).expect("the runtime directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod the runtime directory");
        if let Some(user) = spec.user {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
                .expect("chown the runtime directory");
        }
        tracing::info!(op = "mkdir", path = %dir.display(), "the session's runtime directory");
    }
    dir
}

fn start_bridge(spec: &SessionSpec, config: &TempDir) -> Guard {
    let mut command = match spec.user {
        Some(user) => {
            let mut command = user.setpriv(Groups::Login);
            command.arg(COCKPIT_BRIDGE);
            command
        }
        None => Command::new(COCKPIT_BRIDGE),
    };
    command
        .env_clear()
        .env("DBUS_SYSTEM_BUS_ADDRESS", &spec.bus_address)
        // No session bus and no ssh-agent: addresses where none listens.
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
        .env("SSH_AUTH_SOCK", "/nonexistent")
        .env("XDG_RUNTIME_DIR", runtime_dir(spec, config))
        .env("XDG_DATA_DIRS", joined(&spec.data_dirs, SYSTEM_DATA_DIRS))
        .env("PATH", joined(&spec.bin_dirs, SYSTEM_PATH))
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(config));
    Guard::new(
        "cockpit-bridge",
        command.spawn().expect("cannot start cockpit-bridge"),
    )
}

fn start_ws(port: u16, bridge: &mut Guard, config: &TempDir) -> Guard {
    let child = bridge.child_mut();
    let to_bridge = child.stdin.take().expect("bridge stdin");
    let from_bridge = child.stdout.take().expect("bridge stdout");
    let ws = Command::new(COCKPIT_WS)
        .args(["--no-tls", "--address", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--local-session=-")
        .env_clear()
        .env("XDG_CONFIG_DIRS", config.path())
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::from(from_bridge))
        .stdout(Stdio::from(to_bridge))
        .stderr(log_file(config))
        .spawn()
        .expect("cannot start cockpit-ws");
    Guard::new("cockpit-ws", ws)
}
