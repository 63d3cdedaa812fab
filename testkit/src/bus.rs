//! A private dbus-daemon per test, started from its own configuration file in a temp
//! directory of its own (mode 0755, so that unprivileged callers started with
//! `setpriv` reach the socket): `<type>system</type>`, EXTERNAL authentication, a unix
//! socket in that directory, no activation. Two policies:
//!
//! - [`Bus::permissive`]: everyone may own any name and call anything — for tests of
//!   the service's behaviour, where the bus policy is not the subject;
//! - [`Bus::system_like`]: the system bus's default policy, in short, from
//!   `/usr/share/dbus-1/system.conf` (deny owning and method calls, allow the bus
//!   driver), then the given `<include>`s and `<includedir>`s — for tests of the
//!   project's own bus policy file and of a real installation.
//!
//! dbus-daemon prints its address once it listens (`--print-address`): that line is the
//! readiness signal. [`wait_for_name`] waits for a name to get an owner by following
//! `NameOwnerChanged` and re-checking `NameHasOwner`, with [`DEADLINE`].

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tempfile::TempDir;
use zbus::names::BusName;
use zbus::Connection;

use crate::process::{Guard, DEADLINE};

/// A policy file or directory the system-like bus reads after its default policy.
#[derive(Debug, Clone)]
pub enum Include {
    /// `<include>FILE</include>`.
    File(PathBuf),
    /// `<includedir>DIR</includedir>`.
    Dir(PathBuf),
}

impl Include {
    fn element(&self) -> String {
        match self {
            Include::File(path) => format!("  <include>{}</include>\n", path.display()),
            Include::Dir(path) => format!("  <includedir>{}</includedir>\n", path.display()),
        }
    }
}

/// A private dbus-daemon; stopped (SIGTERM) before its directory is removed.
pub struct Bus {
    daemon: Guard,
    address: String,
    _dir: TempDir,
}

impl Bus {
    /// A bus whose policy allows everything.
    pub fn permissive() -> Bus {
        Bus::start(|socket| config(socket, &permissive_policy(), &[]))
    }

    /// A permissive bus whose largest message is `bytes` (`max_message_size`).
    pub fn permissive_with_message_limit(bytes: usize) -> Bus {
        let limit = format!("  <limit name=\"max_message_size\">{bytes}</limit>\n");
        Bus::start(|socket| config(socket, &(permissive_policy() + &limit), &[]))
    }

    /// A bus with the system bus's default policy, then `includes`.
    pub fn system_like(includes: &[Include]) -> Bus {
        Bus::start(|socket| config(socket, &system_policy(), includes))
    }

    fn start(config_for: impl FnOnce(&Path) -> String) -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("qsd-bus-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the bus directory");
        let config = dir.path().join("bus.conf");
        let text = config_for(&dir.path().join("bus.sock"));
        fs::write(&config, &text).expect("write bus.conf");
        tracing::info!(op = "write", path = %config.display(), bytes = text.len(), "bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            // It complains that a container forbids raising its fd limit; nothing else.
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dbus-daemon");
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        let daemon = Guard::new("dbus-daemon", child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        Bus {
            daemon,
            address,
            _dir: dir,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("cannot connect to the test bus")
    }
}

/// Runs an async bus helper from a synchronous test (the CLI's), on a runtime of its own
/// that ends with it.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Signals and replies flow, and anything may be received: the same on both buses.
const SIGNALS_AND_REPLIES: &str = r#"    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
"#;

const PERMISSIVE_CALLS: &str = r#"    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
"#;

/// The default policy of `/usr/share/dbus-1/system.conf`: no names, no calls, but to
/// the bus driver.
const SYSTEM_CALLS: &str = r#"    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
"#;

const SYSTEM_BUS_DRIVER: &str = r#"    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
"#;

fn permissive_policy() -> String {
    format!("  <policy context=\"default\">\n{PERMISSIVE_CALLS}{SIGNALS_AND_REPLIES}  </policy>\n")
}

fn system_policy() -> String {
    format!(
        "  <policy context=\"default\">\n{SYSTEM_CALLS}{SIGNALS_AND_REPLIES}{SYSTEM_BUS_DRIVER}  </policy>\n"
    )
}

fn config(socket: &Path, policy: &str, includes: &[Include]) -> String {
    let includes: String = includes.iter().map(Include::element).collect();
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
{policy}{includes}</busconfig>
"#,
        socket = socket.display(),
    )
}

/// Waits until `name` has an owner on the bus `conn` is connected to; fails early if
/// `child` (the process that is to own it) exits, and after [`DEADLINE`]. A failure
/// message ends with the text of `log`, if given.
pub async fn wait_for_name(conn: &Connection, name: &str, child: &mut Guard, log: Option<&Path>) {
    if let Err(why) = try_wait_for_name(conn, name, child, log).await {
        panic!("{why}");
    }
}

/// [`wait_for_name`] that reports a failure (the child exited first, or the deadline
/// passed) instead of panicking, for tests that count failures.
pub async fn try_wait_for_name(
    conn: &Connection,
    name: &str,
    child: &mut Guard,
    log: Option<&Path>,
) -> Result<(), String> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.expect("DBus proxy");
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, name)])
        .await
        .expect("follow NameOwnerChanged");
    let bus_name = BusName::try_from(name).expect("bus name");
    let deadline = Instant::now() + DEADLINE;
    while !dbus
        .name_has_owner(bus_name.clone())
        .await
        .expect("NameHasOwner")
    {
        if let Some(status) = child.exited() {
            return Err(format!(
                "{} exited ({status}) before {name} appeared on the bus{}",
                child.name(),
                log_tail(log)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("{name} did not appear on the bus{}", log_tail(log)));
        }
        // Wakes on the owner change; the timeout is for noticing an early exit.
        let _ = tokio::time::timeout(Duration::from_millis(200), owners.next()).await;
    }
    Ok(())
}

/// `"; its log:\n<text>"` for a failure message, or nothing without a log.
pub fn log_tail(log: Option<&Path>) -> String {
    log.and_then(|p| fs::read_to_string(p).ok())
        .map(|text| format!("; its log:\n{text}"))
        .unwrap_or_default()
}
