//! A running image that somebody still writes is not committed. A stop makes the
//! running image the committed image by a rename, and the committed image is shared
//! by hard links — the revision the next commit keeps, a clone in the same filesystem
//! (docs/durability.md rule 3) — on the promise that it is never written again. A
//! loop device still attached read-write to the running image (the VM not yet gone,
//! or its block device not yet detached) would go on writing into that inode after
//! the stop: into the committed image, and through its links into revisions and other
//! volumes. So a stop that commits first asks whether anybody has the running image
//! open for writing (a read lease is granted only while nobody has:
//! [`sys::written_elsewhere`]); while somebody has, it waits for them to close it —
//! woken by inotify's close-after-write, for at most [`GRACE`], the time a VM's block
//! device may take to be detached after the VM ended — and then refuses with `Busy`.
//! Readers (a backup, an exported descriptor, the session's own witness) do not count.
//! Where leases cannot tell (leases disabled), the stop goes on as before.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use rustix::fs::inotify;
use tracing::{info, warn};

use crate::dir::{Access, Dir};
use crate::error::{EngineError, IoContext, Result};
use crate::sys;

/// How long a stop waits for the last writer of its running image to close it.
pub const GRACE: Duration = Duration::from_secs(2);

/// Ok once nobody but readers has the running image `name` of `dir` open; `Busy` if
/// somebody still writes it after `grace`.
pub fn wait_until_unwritten(dir: &Dir, name: &str, grace: Duration) -> Result<()> {
    let path = dir.join(name);
    let file = dir.open_file(name, Access::Read)?;
    if !written(&file, &path)? {
        return Ok(());
    }
    let deadline = Instant::now() + grace;
    // Watched before it is asked again, so that a close between the two is not missed.
    let watch = CloseWatch::new(&file).io_ctx(|| {
        format!(
            "cannot watch {} for its writers to close it",
            path.display()
        )
    })?;
    info!(path = %path.display(), "the running image is still open for writing; waiting for its writers to close it");
    while written(&file, &path)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !watch
                .wait(left)
                .io_ctx(|| format!("cannot wait for the writers of {}", path.display()))?
        {
            return Err(EngineError::busy(format!(
                "its running image {} is still open for writing (a loop device still attached, or a process: is the VM still running?); \
                 committing it now would let those writes change the committed image and its revisions — detach it, then stop again",
                path.display()
            )));
        }
    }
    info!(path = %path.display(), "the running image's last writer closed it");
    Ok(())
}

/// Whether anybody has `file` open for writing; what leases cannot tell counts as no.
fn written(file: &File, path: &std::path::Path) -> Result<bool> {
    match sys::written_elsewhere(file) {
        Ok(Some(written)) => Ok(written),
        Ok(None) => Ok(false),
        Err(err) => {
            warn!(path = %path.display(), error = %err, "cannot tell whether anybody writes the running image");
            Ok(false)
        }
    }
}

/// An inotify watch for the close of a file that was open for writing.
struct CloseWatch {
    inotify: std::os::fd::OwnedFd,
}

impl CloseWatch {
    fn new(file: &File) -> std::io::Result<CloseWatch> {
        let inotify =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        // The open file itself, whatever its name is by then.
        let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
        inotify::add_watch(&inotify, by_fd.as_str(), inotify::WatchFlags::CLOSE_WRITE)?;
        Ok(CloseWatch { inotify })
    }

    /// Waits for a close-after-write (and takes the events that came); `Ok(false)`
    /// when `timeout` passed first.
    fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        if !sys::wait_readable(self.inotify.as_fd(), timeout)? {
            return Ok(false);
        }
        let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut events = inotify::Reader::new(&self.inotify, &mut buffer);
        loop {
            match events.next() {
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => return Ok(true),
                Err(err) => return Err(err.into()),
            }
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
