//! One engine per state directory (contract rev 2): two daemons working on the same
//! pools would each have their own per-volume locks over the same files. The daemon's
//! engine (`Engine::open_exclusive`) takes an exclusive `flock` on `<state dir>/lock`
//! when it opens and holds it for its whole life (the kernel releases it when the process ends, however it ends, so a
//! crash never leaves a stale lock). The file records the holder's pid, so the second
//! instance can say which one runs.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use tracing::info;

use crate::error::{EngineError, IoContext, Result};
use crate::sys;

/// The held lock of a state directory; released when dropped.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock of `state_dir` or fails with `Busy` naming the holder's pid.
    pub fn acquire(state_dir: &Path) -> Result<InstanceLock> {
        let path = state_dir.join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .io_ctx(|| format!("cannot open {}", path.display()))?;
        let held =
            sys::try_lock_exclusive(&file).io_ctx(|| format!("cannot lock {}", path.display()))?;
        if !held {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(EngineError::busy(format!(
                "state directory {} is in use by another qubes-storaged{holder}; stop it first",
                state_dir.display()
            )));
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .io_ctx(|| format!("cannot write {}", path.display()))?;
        info!(path = %path.display(), pid = std::process::id(), "state directory locked");
        Ok(InstanceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_directory_is_busy_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = InstanceLock::acquire(dir.path()).unwrap();
        let err = InstanceLock::acquire(dir.path())
            .err()
            .expect("second lock");
        assert_eq!(err.kind(), crate::error::ErrorKind::Busy);
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn the_lock_is_released_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        drop(InstanceLock::acquire(dir.path()).unwrap());
        assert!(InstanceLock::acquire(dir.path()).is_ok());
    }
}
