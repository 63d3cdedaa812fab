//! The recorder: a disk whose every block write and flush lands in a [`WriteLog`].
//!
//! There is no device-mapper, nbd or ublk on these machines, but FUSE and loop
//! devices work: [`Recorder::start`] serves the test's backing file as the one file of
//! a FUSE file system ([`crate::fuse_disk`]) and attaches a loop device to that file.
//! A file system made or mounted on the loop device then sends its block requests
//! through the loop driver to the FUSE file, where they are logged.
//!
//! **Direct I/O, checked.** The loop device runs with `--direct-io=on` (verified in
//! sysfs). Measured on this kernel (6.18) with both settings:
//! * with direct I/O each block request reaches FUSE as exactly one WRITE of the
//!   request's offset and length (up to 512 KiB), and REQ_OP_FLUSH as one FSYNC;
//! * with buffered loop I/O the same requests pass through the FUSE file's page cache
//!   first and a request is split at page boundaries into several WRITEs (a 512 KiB
//!   ext4 write that began 3 KiB into a page arrived as 1 024 + 523 264 bytes), so a
//!   crash image could hold half of one request where the disk saw one.
//!
//! Either way the flush semantics are right: the loop device advertises a volatile
//! write cache and no FUA, so the block layer turns a FUA write into write + flush and
//! every flush into an FSYNC of the backing file; fuser's FUSE file has no writeback
//! cache, so a write is answered only after this process logged it. Direct I/O is
//! chosen because it records the requests as the file system issued them.
//!
//! Teardown order (also on drop): unmount the file system, detach the loop device and
//! wait until it released the FUSE file, unmount the FUSE file system, join its thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

use crate::fuse_disk::{FuseDisk, DISK_NAME};
use crate::mount;
use crate::write_log::WriteLog;
use crate::{Error, Result};

/// A recorded disk: the FUSE session, its loop device and, once mounted, the file
/// system on it.
pub struct Recorder {
    log: Arc<Mutex<WriteLog>>,
    fuse_dir: PathBuf,
    session: Option<BackgroundSession>,
    device: Option<PathBuf>,
    mount_point: Option<PathBuf>,
}

impl Recorder {
    /// Serves `backing` as `<fuse_dir>/disk` (fuse_dir must be an empty directory) and
    /// attaches a loop device with direct I/O to it. Every write to the device also
    /// changes `backing`.
    pub fn start(backing: &Path, fuse_dir: &Path) -> Result<Recorder> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(backing)
            .map_err(|e| Error::new(format!("cannot open {}: {e}", backing.display())))?;
        let size = file
            .metadata()
            .map_err(|e| Error::new(format!("cannot stat {}: {e}", backing.display())))?
            .len();
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("qsd-powercut".into())];
        let session = fuser::spawn_mount(FuseDisk::new(file, size, log.clone()), fuse_dir, &config)
            .map_err(|e| Error::new(format!("cannot mount FUSE at {}: {e}", fuse_dir.display())))?;
        let mut recorder = Recorder {
            log,
            fuse_dir: fuse_dir.to_owned(),
            session: Some(session),
            device: None,
            mount_point: None,
        };
        recorder.device = Some(mount::attach_loop(&fuse_dir.join(DISK_NAME), true)?);
        tracing::info!(op = "create", device = %recorder.device().display(), backing = %backing.display(), "recorded disk attached");
        Ok(recorder)
    }

    /// The loop device (`/dev/loopN`) whose requests are recorded.
    pub fn device(&self) -> &Path {
        self.device.as_deref().unwrap_or(Path::new(""))
    }

    /// Mounts the file system on the device at `mount_point`.
    pub fn mount(&mut self, mount_point: &Path) -> Result<()> {
        mount::mount_device(self.device(), mount_point)?;
        self.mount_point = Some(mount_point.to_owned());
        Ok(())
    }

    /// Unmounts the file system mounted with [`Self::mount`] (its last writes and
    /// flushes are recorded).
    pub fn unmount(&mut self) -> Result<()> {
        match self.mount_point.take() {
            Some(mount_point) => mount::unmount(&mount_point),
            None => Ok(()),
        }
    }

    /// Appends a mark named `name`: every request answered so far is before it.
    pub fn mark(&self, name: &str) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_mark(name);
    }

    /// A copy of the log so far.
    pub fn log(&self) -> WriteLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Tears everything down (see the module comment) and returns the whole log.
    pub fn finish(mut self) -> Result<WriteLog> {
        self.teardown()?;
        Ok(self.log())
    }

    fn teardown(&mut self) -> Result<()> {
        self.unmount()?;
        if let Some(device) = self.device.take() {
            mount::detach_loop(&device)?;
        }
        if let Some(session) = self.session.take() {
            mount::unmount(&self.fuse_dir)?;
            session
                .join()
                .map_err(|e| Error::new(format!("the FUSE session ended with {e}")))?;
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("Recorder: {err}");
        }
    }
}
