//! Children that are always stopped and reaped. PID 1 on the test machines does not
//! reap orphans, and a test must never signal a process it did not start: every child
//! is kept in a guard and signalled by its own PID only.
//!
//! - [`Guard`]: a long-running helper (dbus-daemon, polkitd, the daemon under test).
//!   Dropping it sends SIGTERM, gives the child [`DEADLINE`] to exit, then SIGKILLs
//!   and reaps it.
//! - [`KilledOnDrop`]: a short-lived command a test drives (a CLI run); dropping it
//!   SIGKILLs and reaps it at once.
//!
//! Waiting for an exit polls `try_wait` with a deadline: there is no portable way to
//! wait for a child with a timeout, and the child is an external process.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a child gets to appear on the bus, or to exit after a signal.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How often an exit (or another external condition) is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Sends `signal` to our child by its PID; an error only if it is already gone.
pub fn signal_child(child: &Child, signal: Signal) -> nix::Result<()> {
    kill(Pid::from_raw(child.id() as i32), signal)
}

/// Waits up to [`DEADLINE`] for our child to exit.
pub fn wait_child(child: &mut Child) -> Option<ExitStatus> {
    wait_child_for(child, DEADLINE)
}

/// Waits up to `timeout` for our child to exit.
pub fn wait_child_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `signal` to our child, waits up to [`DEADLINE`], then SIGKILLs and reaps it;
/// its exit status.
pub fn stop_child(child: &mut Child, signal: Signal) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = signal_child(child, signal);
    wait_child(child).unwrap_or_else(|| kill_child(child))
}

/// SIGKILLs our child and reaps it.
pub fn kill_child(child: &mut Child) -> ExitStatus {
    let _ = child.kill();
    child.wait().expect("cannot reap a child")
}

/// A named long-running child: SIGTERM on drop, SIGKILL after [`DEADLINE`], reaped.
pub struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    pub fn new(name: &'static str, child: Child) -> Guard {
        Guard { name, child }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        signal_child(&self.child, signal)
    }

    /// Waits up to [`DEADLINE`] for an exit that something else caused.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        wait_child(&mut self.child)
    }

    /// Waits up to `timeout` for an exit that something else caused.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child_for(&mut self.child, timeout)
    }

    /// SIGTERM, up to [`DEADLINE`] to exit, then SIGKILL; the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let _ = self.signal(Signal::SIGTERM);
        self.wait().unwrap_or_else(|| {
            eprintln!("{} ignored SIGTERM; killing it", self.name);
            kill_child(&mut self.child)
        })
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        kill_child(&mut self.child)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A child that is SIGKILLed (by its PID) and reaped when dropped.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        stop_child(&mut self.0, Signal::SIGKILL);
    }
}
