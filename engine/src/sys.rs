//! The one module that owns raw syscalls: FICLONE, copy_file_range, SEEK_DATA /
//! SEEK_HOLE, fsync of directories, statvfs and LOOP_SET_CAPACITY, plus the
//! classification of FICLONE errnos into "fall back" and "fail".
//!
//! rustix is used (not nix) because it has safe wrappers for FICLONE
//! (`rustix::fs::ioctl_ficlone`), `copy_file_range`, `SEEK_DATA`/`SEEK_HOLE` and
//! `statvfs`; the ioctl number comes from the platform's headers through rustix/libc
//! (deliberate fix 5), never from a per-architecture table. The only `unsafe` is the
//! LOOP_SET_CAPACITY ioctl, which has no wrapper anywhere.
//!
//! Kernel facts relied on (see shared notes/copy-engine.md):
//! * FICLONE fails with EOPNOTSUPP on ext4/tmpfs/XFS-without-reflink, EXDEV across
//!   filesystems, EINVAL for btrfs datacow↔nodatacow or a non-regular source, EBADF for
//!   unsuitable open modes. Those four mean "not possible here, copy instead"; every
//!   other errno (EIO, ENOSPC, EDQUOT, EPERM, …) is a real error and propagates.
//! * FICLONE into a non-empty file keeps the larger size: always clone into a fresh
//!   file.
//! * `copy_file_range` moves at most ~2 GiB per call; loop on short counts. It returns
//!   EXDEV across filesystems on kernels ≥ 5.19 and must not be used over holes on ext4
//!   (it writes zeros): only call it on data ranges found with SEEK_DATA/SEEK_HOLE.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// What a FICLONE attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneOutcome {
    Cloned,
    /// Not possible here (EBADF, EINVAL, EOPNOTSUPP, EXDEV): the caller copies instead.
    /// Carries the errno so logs can say why the copy was not a reflink.
    Unsupported(rustix::io::Errno),
}

/// FICLONE `src` into `dst` (which must be a fresh, empty file opened for writing).
pub fn ficlone(dst: &File, src: &File) -> io::Result<CloneOutcome> {
    let _ = (dst, src);
    unimplemented!("sys::ficlone")
}

/// The data ranges `(offset, length)` of `file` up to `len`, found with SEEK_DATA /
/// SEEK_HOLE (never FIEMAP). A filesystem without SEEK_DATA support yields one range.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let _ = (file, len);
    unimplemented!("sys::data_ranges")
}

/// Copy `len` bytes at `offset` from `src` to the same offset of `dst` with
/// copy_file_range, looping on short counts. Returns the bytes copied, which may be
/// less than `len` only at end of file.
pub fn copy_file_range_all(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<u64> {
    let _ = (src, dst, offset, len);
    unimplemented!("sys::copy_file_range_all")
}

/// fsync a directory (makes a rename, link, unlink or mkdir in it durable).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let _ = dir;
    unimplemented!("sys::fsync_dir")
}

/// (total bytes, used bytes) of the filesystem holding `dir`, from statvfs:
/// `f_frsize × f_blocks` and `f_frsize × (f_blocks − f_bfree)` (R§3.22).
pub fn statvfs_usage(dir: &Path) -> io::Result<(u64, u64)> {
    let _ = dir;
    unimplemented!("sys::statvfs_usage")
}

/// LOOP_SET_CAPACITY on an open loop device: the kernel re-reads its backing file size.
pub fn loop_set_capacity(dev: &File) -> io::Result<()> {
    let _ = dev;
    unimplemented!("sys::loop_set_capacity")
}

/// Same file: equal device and inode numbers.
pub fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}
