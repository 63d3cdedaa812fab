//! A running image that somebody still writes is not committed. A stop makes the
//! running image the committed image by a rename, and the committed image is shared
//! by hard links — the revision the next commit keeps, a clone in the same filesystem
//! (docs/durability.md rule 3) — on the promise that it is never written again. A
//! loop device still attached read-write to the running image (the VM not yet gone,
//! or its block device not yet detached) would go on writing into that inode after
//! the stop: into the committed image, and through its links into revisions and other
//! volumes. So a stop that commits first asks whether anybody has the running image
//! open for writing (a read lease is granted only while nobody has:
//! [`sys::written_elsewhere`]); while somebody has, it asks again every [`RECHECK`]
//! for at most [`GRACE`] — the time a VM's block device may take to be detached after
//! the VM ended — and then refuses with `Busy`. It asks before the session's witness
//! is asked for lost writes (`engine/sessions.rs`), so that nothing written during the
//! wait escapes it. Readers (a backup, an exported descriptor, the witness itself) do
//! not count. Where leases cannot tell (leases disabled), the stop goes on as before,
//! logged.
//!
//! Asked again on a timer, not woken by inotify: the close of the last writer is
//! announced (IN_CLOSE_WRITE) before the kernel counts the writer gone, so a probe right
//! after the event still finds it (measured: 93 of 100 times for a detached loop
//! device), and nothing wakes the wait again.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::dir::{Access, Dir};
use crate::error::{EngineError, Result};
use crate::sys;

/// How long a stop waits for the last writer of its running image to close it.
pub const GRACE: Duration = Duration::from_secs(2);
/// How often a waiting stop asks again.
pub const RECHECK: Duration = Duration::from_millis(5);

/// Ok once nobody but readers has the running image `name` of `dir` open; `Busy` if
/// somebody still writes it after `grace`.
pub fn wait_until_unwritten(dir: &Dir, name: &str, grace: Duration) -> Result<()> {
    let path = dir.join(name);
    let file = dir.open_file(name, Access::Read)?;
    if !written(&file, &path) {
        return Ok(());
    }
    let deadline = Instant::now() + grace;
    info!(path = %path.display(), "the running image is still open for writing; waiting for its writers to close it");
    while written(&file, &path) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EngineError::busy(format!(
                "its running image {} is still open for writing (a loop device still attached, or a process: is the VM still running?); \
                 committing it now would let those writes change the committed image and its revisions — detach it, then stop again",
                path.display()
            )));
        }
        std::thread::sleep(left.min(RECHECK));
    }
    info!(path = %path.display(), "the running image's last writer closed it");
    Ok(())
}

/// Whether anybody has `file` open for writing; what leases cannot tell counts as no.
fn written(file: &File, path: &Path) -> bool {
    match sys::written_elsewhere(file) {
        Ok(Some(written)) => written,
        Ok(None) => {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn!(path = %path.display(), "leases are not available here: a stop cannot tell whether a loop device still writes the running image (said once)");
            }
            false
        }
        Err(err) => {
            warn!(path = %path.display(), error = %err, "cannot tell whether anybody writes the running image");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::sync::mpsc;

    fn dir_with_image() -> (tempfile::TempDir, Dir) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("private-dirty.img"), b"session").expect("image");
        let dir = Dir::open_path(d.path()).expect("open the dir");
        (d, dir)
    }

    #[test]
    fn readers_do_not_hold_a_stop_up() {
        let (d, dir) = dir_with_image();
        let _reader = File::open(d.path().join("private-dirty.img")).unwrap();
        wait_until_unwritten(&dir, "private-dirty.img", Duration::ZERO).expect("no writer");
    }

    #[test]
    fn a_writer_that_stays_makes_it_busy() {
        let (d, dir) = dir_with_image();
        let _writer = File::options()
            .write(true)
            .open(d.path().join("private-dirty.img"))
            .unwrap();
        let err = wait_until_unwritten(&dir, "private-dirty.img", Duration::from_millis(20))
            .expect_err("a writer holds it");
        assert_eq!(err.kind(), ErrorKind::Busy);
        assert!(err.to_string().contains("still open for writing"), "{err}");
    }

    /// The wait ends when the writer closes — woken, not at the end of its grace.
    #[test]
    fn the_wait_ends_when_the_last_writer_closes() {
        let (d, dir) = dir_with_image();
        let writer = File::options()
            .write(true)
            .open(d.path().join("private-dirty.img"))
            .unwrap();
        let (done, finished) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let waited = wait_until_unwritten(&dir, "private-dirty.img", Duration::from_secs(600));
            done.send(waited.map_err(|e| e.to_string())).unwrap();
        });
        assert!(
            finished.recv_timeout(Duration::from_millis(200)).is_err(),
            "it went on while the file was open for writing"
        );
        drop(writer);
        let waited = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("the close did not end the wait");
        waited.expect("no writer left");
        waiter.join().unwrap();
    }
}
