//! A power-loss simulator for qubes-storaged's tests, in the manner of dm-log-writes
//! and CrashMonkey: record every block write and flush that a file system sends to its
//! disk while the service performs one operation, then build each disk image a power
//! cut could have left, for the test to mount (the file system's own journal recovery),
//! start the service on and check.
//!
//! * [`recorder`]: a loop device over a file of a small FUSE file system
//!   ([`fuse_disk`]) that logs every request into a [`write_log::WriteLog`], plus
//!   marks the test inserts ("begin", "ack");
//! * [`crash_state`]: the states a power cut can leave (every flush boundary, and
//!   seeded subsets of the writes after it) and which phase of the operation each
//!   belongs to (only the old state is acceptable before it began, only the new one
//!   once it was acknowledged);
//! * [`crash_image`]: each state's image, built by reflink on a scratch file system;
//! * [`mount`]: loop devices and mounts, always undone.
//!
//! Dev-only (never shipped): it needs root, `/dev/fuse` and loop devices. The
//! durability rules it checks live in the tests that use it (`tests/power_loss*.rs`).

pub mod crash_image;
pub mod crash_state;
pub mod fuse_disk;
pub mod mount;
pub mod recorder;
pub mod write_log;

pub use crash_image::CrashImages;
pub use crash_state::{crash_states, CrashState, Marks, Phase, Plan};
pub use mount::ImageMount;
pub use recorder::Recorder;
pub use write_log::{Entry, WriteLog};

/// What went wrong in the simulator (a command, a mount, a reflink), in one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(what: impl Into<String>) -> Error {
        Error(what.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
