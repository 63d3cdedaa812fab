//! Building the disk image of a [`CrashState`]: the base image (the disk as it was
//! when the recording began) plus the logged content changes up to the state's
//! boundary, plus its extra writes.
//!
//! Replays are many and images are hundreds of MiB, so every image is a `FICLONE`
//! (reflink) on a scratch file system that supports it (btrfs or XFS): a cursor image
//! advances through the log as the states are built in order (each change applied
//! once), and each crash image is a clone of the cursor plus the state's extra writes
//! — a few milliseconds and a few blocks each. Mounting the crash image replays the
//! file system's journal into that clone only; the cursor is never mounted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::FallocateFlags;

use crate::crash_state::CrashState;
use crate::write_log::{Entry, WriteLog};
use crate::{Error, Result};

/// Builds crash images of one recording in `dir` (on a reflink-capable file system).
pub struct CrashImages<'a> {
    log: &'a WriteLog,
    base: PathBuf,
    cursor: PathBuf,
    /// Every change before this log position is in the cursor.
    cursor_at: usize,
}

impl<'a> CrashImages<'a> {
    /// `base` is the disk before the first logged request; `dir` must be on the same
    /// reflink-capable file system.
    pub fn new(log: &'a WriteLog, base: &Path, dir: &Path) -> Result<CrashImages<'a>> {
        let cursor = dir.join("cursor.img");
        clone_file(base, &cursor)?;
        Ok(CrashImages {
            log,
            base: base.to_owned(),
            cursor,
            cursor_at: 0,
        })
    }

    /// Writes the image of `state` to `dst` (replacing it).
    pub fn build(&mut self, state: &CrashState, dst: &Path) -> Result<()> {
        if state.boundary < self.cursor_at {
            clone_file(&self.base, &self.cursor)?;
            self.cursor_at = 0;
        }
        let cursor = open_rw(&self.cursor)?;
        let pending = self.log.changes_between(self.cursor_at, state.boundary);
        self.apply(&cursor, &pending, &self.cursor)?;
        self.cursor_at = state.boundary;
        drop(cursor);
        clone_file(&self.cursor, dst)?;
        let image = open_rw(dst)?;
        self.apply(&image, &state.extra, dst)
    }

    fn apply(&self, image: &File, positions: &[usize], path: &Path) -> Result<()> {
        for &i in positions {
            let entry = &self.log.entries()[i];
            let done = match *entry {
                Entry::Write { offset, .. } => image.write_all_at(self.log.bytes_of(entry), offset),
                Entry::Zero { offset, len } => punch(image, offset, len),
                Entry::Flush | Entry::Mark(_) => Ok(()),
            };
            done.map_err(|e| {
                Error::new(format!(
                    "cannot apply log entry {i} to {}: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }
}

fn open_rw(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::new(format!("cannot open {}: {e}", path.display())))
}

fn punch(image: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(image, flags, offset, len).map_err(Into::into)
}

/// `dst` := a reflink of `src` (a new inode; an existing `dst` is replaced).
pub fn clone_file(src: &Path, dst: &Path) -> Result<()> {
    let from =
        File::open(src).map_err(|e| Error::new(format!("cannot open {}: {e}", src.display())))?;
    let _ = std::fs::remove_file(dst);
    let to = File::create_new(dst)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", dst.display())))?;
    rustix::fs::ioctl_ficlone(&to, &from).map_err(|e| {
        Error::new(format!(
            "cannot reflink {} to {} ({e}): crash images need a scratch file system with reflinks (btrfs or XFS)",
            src.display(),
            dst.display()
        ))
    })
}
