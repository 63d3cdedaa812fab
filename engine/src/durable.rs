//! The durability primitives of R§5.1; every mutation of a pool directory goes through
//! one of them, and each logs what it did at info level so `journalctl -u` tells the
//! story of a volume:
//!
//! | primitive        | sequence                                                          |
//! |------------------|-------------------------------------------------------------------|
//! | replace          | temp `<dst>~XXXXXXXX` → fill → fchmod 0600 → fsync → rename → fsync(dir) |
//! | rename           | rename → fsync(dst dir) → fsync(src dir) if different             |
//! | remove           | unlink (ENOENT ok) → fsync(dir)                                   |
//! | mkdir            | mkdir → fsync(parent)                                             |
//! | rmdir            | rmdir → fsync(parent)                                             |
//! | hardlink         | link → fsync(dir)                                                 |
//! | in-place truncate| ftruncate → fsync(file)                                           |
//!
//! Invariant: a file under a final name is always complete. On any error inside
//! `replace` the temp file is removed and the destination is untouched. Paths handed
//! in are never followed through a final symlink (O_NOFOLLOW), and directories are
//! refused when they are symlinks.
//!
//! With the `failpoints` feature each completed step calls [`crate::failpoint::step`],
//! so the crash tests can stop the process after step k.

use std::fs::File;
use std::path::Path;

use crate::error::Result;

/// Atomically create or replace `dst`: `fill` writes the content of the fresh temp
/// file (opened read-write) next to it; then fchmod 0600, fsync, rename over `dst`,
/// fsync of the directory. The directory must exist.
pub fn replace_with<T>(dst: &Path, fill: impl FnOnce(&File) -> Result<T>) -> Result<T> {
    let _ = (dst, fill);
    unimplemented!("durable::replace_with")
}

/// `replace_with` an empty sparse file of `size` bytes (0 blocks allocated).
pub fn create_sparse(path: &Path, size: u64) -> Result<()> {
    let _ = (path, size);
    unimplemented!("durable::create_sparse")
}

/// Durable rename within or across directories of one filesystem.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    let _ = (from, to);
    unimplemented!("durable::rename")
}

/// Durable unlink; a missing file is not an error. Returns whether a file was removed.
pub fn remove(path: &Path) -> Result<bool> {
    let _ = path;
    unimplemented!("durable::remove")
}

/// Single `mkdir` (never recursive) + fsync of the parent; fine if `dir` already is a
/// directory; an error if it is a symlink or anything else. Returns whether it was
/// created now.
pub fn ensure_dir(dir: &Path) -> Result<bool> {
    let _ = dir;
    unimplemented!("durable::ensure_dir")
}

/// rmdir + fsync of the parent; ENOENT and ENOTEMPTY are not errors.
pub fn remove_dir_if_empty(dir: &Path) -> Result<()> {
    let _ = dir;
    unimplemented!("durable::remove_dir_if_empty")
}

/// Durable hard link `dst` → inode of `src` (dst must not exist).
pub fn hardlink(src: &Path, dst: &Path) -> Result<()> {
    let _ = (src, dst);
    unimplemented!("durable::hardlink")
}

/// Open an existing file read-write (no symlink follow), ftruncate to `size`, fsync.
/// Used only for the dirty image of a started volume (R§3.15). ENOENT is reported as
/// an error of kind NotFound.
pub fn truncate_in_place(path: &Path, size: u64) -> Result<()> {
    let _ = (path, size);
    unimplemented!("durable::truncate_in_place")
}

/// fsync an existing file's data (belt and braces before a commit).
pub fn fsync_file(path: &Path) -> Result<()> {
    let _ = path;
    unimplemented!("durable::fsync_file")
}

/// Open an existing regular file read-only without following a final symlink.
pub fn open_read(path: &Path) -> Result<File> {
    let _ = path;
    unimplemented!("durable::open_read")
}

/// Open an existing regular file write-only without following a final symlink.
pub fn open_write(path: &Path) -> Result<File> {
    let _ = path;
    unimplemented!("durable::open_write")
}
