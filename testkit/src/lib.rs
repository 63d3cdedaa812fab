//! The machinery that qubes-storaged's bus tests (`tests/`), the CLI's tests
//! (`cli/tests/`) and the bus bench (`benches/bus.rs`) share, so that each writes only
//! what it tests: a private dbus-daemon ([`bus`]), polkitd with the project's actions
//! and test rules ([`polkit`]), the daemon under test ([`daemon`]), unprivileged test
//! users ([`users`]), guards that stop and reap every child ([`process`]), `flock`
//! leases on machine-wide fixtures ([`lease`]), a terminal to type into and close
//! ([`terminal`], tmux) and where the workspace's files and binaries are
//! ([`workspace`]); for the Cockpit page's browser tests, Cockpit's web server with a
//! session on the test bus ([`cockpit`]) and headless Chromium driven over the
//! DevTools protocol ([`browser`]).
//!
//! Everything here runs real things as root: no mock bus, no mock filesystem. Every
//! process started is a child kept in a guard that stops it by PID and reaps it; no
//! wait is a sleep standing in for synchronization — waits poll a condition with a
//! deadline. Machine-wide files (polkit actions and rules, users) are shared between
//! concurrent test binaries through [`lease`].
//!
//! The loop-mounted filesystems of the engine's tests (`engine/tests/common_fs`) are
//! included as [`common_fs`], so bus-level users mount pools the same way.

#[path = "../../engine/tests/common_fs/mod.rs"]
pub mod common_fs;

pub mod browser;
pub mod bus;
pub mod cockpit;
pub mod daemon;
pub mod lease;
pub mod polkit;
pub mod process;
pub mod terminal;
pub mod users;
pub mod workspace;

pub use common_fs::{FsType, LoopFs, MIB};
