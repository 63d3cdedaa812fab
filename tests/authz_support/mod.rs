//! Fixtures of the authorization tests against the real daemon (`tests/bus_authz.rs`)
//! and of the real installation test (`tests/install_real.rs`):
//!
//! - `client`: a python3-dbus client that makes a list of calls as any user and reports
//!   each result or D-Bus error name as JSON;
//! - `accounts`: the unprivileged test users, their group and the polkit rule for it
//!   (kept alive while any test of any binary relies on them by testkit's leases);
//! - `snapshot`: directory-tree snapshots, to prove a refused call changed nothing.
//!
//! Use from a test crate with `mod authz_support;`.

#![allow(dead_code)]

pub mod accounts;
pub mod client;
pub mod snapshot;

pub const INTERACTION_REQUIRED: &str =
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired";
pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
