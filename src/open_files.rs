//! How many files the daemon may hold open. Every method call that arrives carrying
//! file descriptors brings them into this process (the kernel installs them as the
//! message is read), and they stay open until the message is dropped. With the soft
//! limit systemd and most shells give (1024), a local user who sent a burst of calls
//! with 16 descriptors each made the kernel drop descriptors of a message, and zbus
//! takes a message whose descriptors are missing for a broken connection: the service
//! fell off the bus. The dispatcher refuses such calls at once (`bus/dispatch.rs`),
//! but up to [`crate::bus::dispatch::QUEUED_CALLS`] of them may wait in its queue, so
//! the daemon also raises its limit (the unit sets it) and says so when it is still
//! below what a full queue may hold.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tracing::{info, warn};

use crate::bus::dispatch::QUEUED_CALLS;

/// What dbus-daemon lets one message carry on the system bus (`max_message_unix_fds`).
const FDS_PER_MESSAGE: u64 = 16;
/// Descriptors besides those of queued calls: the engine's operations (a few each, at
/// most `ENGINE_PLACES` of them), the bus, the state journals, the loop devices.
const OWN_USE: u64 = 8192;

/// The open files a full queue of calls carrying descriptors needs beside the engine's.
pub const NEEDED: u64 = QUEUED_CALLS as u64 * FDS_PER_MESSAGE + OWN_USE;

/// The limit the daemon asks for: room for [`NEEDED`] with a margin.
const WANTED: u64 = 65536;

/// Raises the limit of open files to [`WANTED`] — both limits where the daemon may
/// raise the hard one (root with CAP_SYS_RESOURCE; the unit sets both and drops that
/// capability), else the soft limit to the hard one; call once at start-up.
pub fn raise_limit() {
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return; // unlimited
    };
    let hard_value = hard.unwrap_or(u64::MAX);
    if soft < WANTED {
        let both = Rlimit {
            current: Some(WANTED),
            maximum: Some(hard_value.max(WANTED)),
        };
        let soft_only = Rlimit {
            current: Some(hard_value.min(WANTED)),
            maximum: hard,
        };
        if setrlimit(Resource::Nofile, both).is_err() {
            if let Err(err) = setrlimit(Resource::Nofile, soft_only) {
                warn!(error = %err, soft, "cannot raise the limit of open files");
            }
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    match now {
        Some(now) if now < NEEDED => warn!(
            limit = now,
            needed = NEEDED,
            "the limit of open files is low: calls carrying file descriptors may fill it, and the bus connection would be lost (raise LimitNOFILE)"
        ),
        _ => info!(limit = ?now, "open files"),
    }
}
