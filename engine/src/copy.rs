//! The copy engine (R§4): every copy makes a *new inode* at the destination through
//! [`crate::durable::replace_with`]. First FICLONE; on a "not possible here" errno a
//! hole-preserving copy: SEEK_DATA/SEEK_HOLE ranges copied with copy_file_range,
//! falling back to pread/pwrite when copy_file_range is refused — never a copy that
//! fills holes. Byte copies report progress to the operation's [`ProgressSink`] and
//! poll its cancel token between chunks; a cancelled or failed copy leaves nothing.
//!
//! [`ProgressSink`]: crate::context::ProgressSink

use std::fs::File;
use std::path::Path;

use crate::context::OpCtx;
use crate::error::Result;

/// How a copy moved the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// FICLONE: shared extents, instant.
    Reflink,
    /// Data ranges moved with copy_file_range (holes kept).
    CopyFileRange,
    /// Data ranges moved with pread/pwrite (holes kept).
    ReadWrite,
    /// `dst_size` was 0: nothing to move.
    Nothing,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Truncate or extend (with a hole) the copy to this size; 0 = an empty file, no
    /// data moved.
    pub dst_size: Option<u64>,
    /// Give the copy the source's mtime (and atime), to the nanosecond.
    pub copy_mtime: bool,
}

/// Copy the open `src` to a new inode atomically placed at `dst`.
pub fn copy_file(src: &File, dst: &Path, opts: CopyOptions, ctx: &OpCtx) -> Result<CopyMethod> {
    let _ = (src, dst, opts, ctx);
    unimplemented!("copy::copy_file")
}

/// [`copy_file`] from a path (opened read-only, no symlink follow).
pub fn copy_path(src: &Path, dst: &Path, opts: CopyOptions, ctx: &OpCtx) -> Result<CopyMethod> {
    let _ = (src, dst, opts, ctx);
    unimplemented!("copy::copy_path")
}

/// The reflink probe (R§4.4, deliberate fix 4): write real data (and fsync it) into an
/// anonymous O_TMPFILE in `dir`, FICLONE it into a second one. Fallback errnos → false;
/// other errors (EACCES, EPERM, …) propagate. Leaves no name behind.
pub fn probe_reflink(dir: &Path) -> Result<bool> {
    let _ = dir;
    unimplemented!("copy::probe_reflink")
}
