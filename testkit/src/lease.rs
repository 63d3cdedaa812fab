//! Machine-wide fixtures that concurrent tests share — system users, a polkit rule file,
//! the installed polkit actions — held through `flock(2)` leases, so that one test's
//! cleanup never pulls a fixture from under another test (of this binary or of another
//! one running at the same time).
//!
//! A fixture has two lock files in `/run/lock`:
//! - `<name>.lock`: every user holds it *shared* for as long as it relies on the
//!   fixture; whoever leaves and then gets it *exclusive* without waiting is the last
//!   user and tears the fixture down. Set-up happens only under a shared hold, so it
//!   never races a tear-down.
//! - `<name>.setup.lock`: held exclusive for the few milliseconds of a set-up, so two
//!   users that both find the fixture missing do not both create it.
//!
//! No lock is ever converted between shared and exclusive (flock conversions are not
//! atomic). Locks belong to the open file description, so two threads of one process
//! holding leases through their own `File`s exclude each other like two processes.
//!
//! Users: the polkit actions and rule files ([`crate::polkit`]) and the test users
//! ([`crate::users`]).

use std::fs::File;

use rustix::fs::{flock, FlockOperation};

/// A shared hold on a fixture; the last holder to drop tears it down.
pub struct Lease {
    lock: File,
    tear_down: Box<dyn Fn() + Send + Sync>,
}

impl Lease {
    /// Holds the fixture `name`, setting it up with `set_up` when `present` says it
    /// is missing; `tear_down` runs when the last holder drops its lease.
    pub fn take(
        name: &str,
        present: impl Fn() -> bool,
        set_up: impl Fn(),
        tear_down: impl Fn() + Send + Sync + 'static,
    ) -> Lease {
        let lock = open_lock(&format!("/run/lock/{name}.lock"));
        lock_or_panic(&lock, FlockOperation::LockShared);
        if !present() {
            let setup_lock = open_lock(&format!("/run/lock/{name}.setup.lock"));
            lock_or_panic(&setup_lock, FlockOperation::LockExclusive);
            if !present() {
                set_up();
            }
            assert!(present(), "the fixture {name} is not in place after set-up");
        }
        Lease {
            lock,
            tear_down: Box::new(tear_down),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = flock(&self.lock, FlockOperation::Unlock);
        if flock(&self.lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
            (self.tear_down)();
            let _ = flock(&self.lock, FlockOperation::Unlock);
        }
    }
}

/// An exclusive hold on `/run/lock/<name>.lock`: no [`Lease`] on `name` exists while it
/// lives (it waits for the current holders to finish).
pub struct Exclusive {
    _lock: File,
}

impl Exclusive {
    pub fn take(name: &str) -> Exclusive {
        let lock = open_lock(&format!("/run/lock/{name}.lock"));
        lock_or_panic(&lock, FlockOperation::LockExclusive);
        Exclusive { _lock: lock }
    }
}

/// A shared hold on `/run/lock/<name>.lock` with nothing to set up or tear down: it
/// only keeps an [`Exclusive`] holder away.
pub fn shared(name: &str) -> Lease {
    Lease::take(name, || true, || {}, || {})
}

/// Opens (creating it if needed) the lock file at `path`.
pub fn open_lock(path: &str) -> File {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|err| panic!("cannot open the lock file {path}: {err}"))
}

/// `flock(lock, operation)`, blocking; panics on an error.
pub fn lock_or_panic(lock: &File, operation: FlockOperation) {
    flock(lock, operation).unwrap_or_else(|err| panic!("flock {operation:?}: {err}"));
}
