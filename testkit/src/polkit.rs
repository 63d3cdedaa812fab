//! polkitd on a private bus, the project's polkit actions where polkitd reads them,
//! and test rules.
//!
//! Facts relied on: polkitd runs only as root (it drops to the `polkitd` user), finds
//! the "system bus" through `DBUS_SYSTEM_BUS_ADDRESS`, reads actions only from
//! `/usr/share/polkit-1/actions/` and rules from `/etc/polkit-1/rules.d/`, and watches
//! both directories live — so every file is installed atomically (staged, chmod 0644,
//! renamed into place).
//!
//! Sharing across concurrently running test binaries:
//! - the actions file is installed when missing or different and then left in place
//!   (one test removing it would break another's polkitd). [`Polkitd::start`] holds
//!   the lock [`ACTIONS_LOCK`] *shared* while polkitd runs, because
//!   `tests/install_real.rs` holds it *exclusive* while `make install` / `make
//!   uninstall` replace that file for a moment;
//! - a rule file ([`RuleFile`]) is a [`Lease`]: installed by the first holder, removed
//!   by the last.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zbus::Connection;

use crate::bus::{wait_for_name, Bus};
use crate::lease::{self, Lease};
use crate::process::Guard;
use crate::workspace;

/// polkit's name on the bus.
pub const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
/// Where polkitd reads the project's actions.
pub const ACTIONS_INSTALLED: &str = "/usr/share/polkit-1/actions/org.qubes.storage.policy";
/// The lease name (`/run/lock/<name>.lock`) that keeps a real installation's test
/// (exclusive) apart from every running polkitd that reads the installed actions
/// (shared).
pub const ACTIONS_LOCK: &str = "qubes-storaged-install-test";
const POLKITD: &str = "/usr/lib/polkit-1/polkitd";

/// The project's actions file in the workspace.
pub fn actions_source() -> PathBuf {
    workspace::path("polkit/org.qubes.storage.policy")
}

/// polkitd attached to a private bus; stopped before the actions lock is released.
pub struct Polkitd {
    child: Guard,
    _actions: Option<Lease>,
}

impl Polkitd {
    /// Installs the project's actions (if missing or different) and starts polkitd,
    /// holding [`ACTIONS_LOCK`] shared while it runs; returns once it owns its name.
    pub async fn start(bus: &Bus, conn: &Connection) -> Polkitd {
        let actions = lease::shared(ACTIONS_LOCK);
        install_actions();
        Polkitd::spawn(bus, conn, Some(actions)).await
    }

    /// Starts polkitd with whatever actions are installed, taking no lock: for a test
    /// that installed them itself and holds [`ACTIONS_LOCK`] exclusively.
    pub async fn start_with_installed_actions(bus: &Bus, conn: &Connection) -> Polkitd {
        Polkitd::spawn(bus, conn, None).await
    }

    async fn spawn(bus: &Bus, conn: &Connection, actions: Option<Lease>) -> Polkitd {
        let child = Command::new(POLKITD)
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start polkitd");
        let mut child = Guard::new("polkitd", child);
        wait_for_name(conn, POLKIT_NAME, &mut child, None).await;
        Polkitd {
            child,
            _actions: actions,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends `signal` (SIGSTOP and SIGCONT make a polkitd that does not answer).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.child.signal(signal).expect("signal polkitd");
    }
}

/// Installs the project's actions where polkitd reads them, if missing or different,
/// and leaves them there.
pub fn install_actions() {
    let wanted = fs::read(actions_source()).expect("read polkit/org.qubes.storage.policy");
    install_if_different(Path::new(ACTIONS_INSTALLED), &wanted);
}

/// Puts `wanted` at `path` atomically (mode 0644) unless it holds exactly that.
pub fn install_if_different(path: &Path, wanted: &[u8]) {
    if fs::read(path).ok().as_deref() == Some(wanted) {
        return;
    }
    // Tests of one process install at the same time: each stages its own file.
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staged = path.with_extension(format!("staged.{}.{n}", std::process::id()));
    fs::write(&staged, wanted).expect("stage a polkit file");
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&staged, path).expect("install a polkit file");
    tracing::info!(op = "install", path = %path.display(), bytes = wanted.len(), "polkit file");
}

/// A polkit rule file, in place as long as any holder (of any process) lives. Take it
/// before polkitd starts, so that it reads the rule at once (it also rereads the
/// directory when it changes).
pub struct RuleFile {
    _lease: Lease,
}

impl RuleFile {
    /// Holds the rule `text` at `path` under the lease `lock_name`.
    pub fn hold(lock_name: &str, path: &str, text: String) -> RuleFile {
        let path = PathBuf::from(path);
        let removed = path.clone();
        let lease = Lease::take(
            lock_name,
            || fs::read_to_string(&path).is_ok_and(|now| now == text),
            || install_if_different(&path, text.as_bytes()),
            move || remove_rule(&removed),
        );
        RuleFile { _lease: lease }
    }
}

fn remove_rule(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::info!(op = "remove", path = %path.display(), "polkit rule"),
        Err(err) => eprintln!("cannot remove the polkit rule {}: {err}", path.display()),
    }
}
