//! Fixtures of the authorization tests against the real daemon (`tests/bus_authz.rs`)
//! and of the real installation test (`tests/install_real.rs`):
//!
//! - `client`: a python3-dbus client that makes a list of calls as any user and reports
//!   each result or D-Bus error name as JSON;
//! - `accounts`: the unprivileged test users, their group and the polkit rule for it;
//! - `snapshot`: directory-tree snapshots, to prove a refused call changed nothing;
//! - `lease`: `flock` leases that keep machine-wide fixtures alive while any test
//!   (of any binary) relies on them.
//!
//! Use from a test crate with `mod authz_support;`.

#![allow(dead_code)]

pub mod accounts;
pub mod client;
pub mod lease;
pub mod snapshot;

/// The lock that keeps `tests/install_real.rs` (which holds it exclusive while it
/// installs and uninstalls, replacing for a moment the polkit actions file every bus
/// test's polkitd reads) apart from the tests of `tests/bus_authz.rs` (which hold it
/// shared while their polkitd runs).
pub const POLKIT_ACTIONS_LOCK: &str = "qubes-storaged-install-test";

pub const INTERACTION_REQUIRED: &str =
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
