//! A text authentication agent for the length of one command, the way `systemctl` and
//! `loginctl` do it: when interaction is allowed and the command needs authorization,
//! start `pkttyagent --notify-fd N --fallback` and wait until it has registered (it
//! closes fd N then), so polkit can ask for the password on this terminal. A desktop
//! agent, if one runs, keeps precedence (`--fallback`). The agent is stopped (SIGTERM)
//! and reaped when the command ends.
//!
//! Not started for root (polkit allows uid 0 without asking) or when `pkttyagent` is
//! missing (polkit then answers `InteractiveAuthorizationRequired`, exit status 9).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, pipe, Pid};

const PKTTYAGENT: &str = "/usr/bin/pkttyagent";

pub struct PolkitAgent {
    child: Child,
}

impl PolkitAgent {
    /// Starts the agent and waits for it to register; `None` when it cannot run.
    pub fn start() -> Option<PolkitAgent> {
        if geteuid().is_root() || !Path::new(PKTTYAGENT).exists() {
            return None;
        }
        let (ready_read, ready_write) = pipe().ok()?;
        // Only the write end goes to the agent; ours must not leak into it.
        fcntl(&ready_read, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
        let child = Command::new(PKTTYAGENT)
            .arg("--notify-fd")
            .arg(ready_write.as_raw_fd().to_string())
            .arg("--fallback")
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        drop(ready_write);
        wait_for_eof(File::from(ready_read));
        Some(PolkitAgent { child })
    }
}

/// Blocks until every writer closed the pipe: the agent registered, or died.
fn wait_for_eof(mut pipe: File) {
    let mut buf = [0u8; 64];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Drop for PolkitAgent {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
