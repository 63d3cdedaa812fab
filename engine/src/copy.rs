//! The copy engine (R§4): every copy makes a *new inode* at the destination through
//! [`crate::durable::replace_with`]. First FICLONE; on a "not possible here" errno a
//! hole-preserving copy: SEEK_DATA/SEEK_HOLE ranges copied with copy_file_range,
//! falling back to pread/pwrite when copy_file_range is refused — never a copy that
//! fills holes. Byte copies report progress to the operation's [`ProgressSink`] and
//! poll its cancel token between chunks; a cancelled or failed copy leaves nothing.
//!
//! The sequence of [`copy_file`] (R§4.1 with our improvements):
//! 1. [`durable::ensure_dir`] of the destination's directory (a single mkdir, as the
//!    reference does), then a fresh temp next to `dst`.
//! 2. `dst_size == Some(0)`: nothing is moved ([`CopyMethod::Nothing`]).
//! 3. FICLONE into the fresh temp. On EBADF/EINVAL/EOPNOTSUPP/EXDEV: the data ranges
//!    of the source (up to `min(source size, dst_size)`) are copied in chunks of at most
//!    [`CHUNK`] with copy_file_range, or pread/pwrite once copy_file_range refused
//!    (EXDEV/EINVAL/EOPNOTSUPP/ENOSYS); then the temp is truncated to the source size
//!    (holes at the end). Then the `dst_size` truncate (extend with a hole or cut).
//! 4. `copy_mtime`: atime and mtime of the temp := the source's mtime (ns).
//! 5. fchmod 0600, fsync, rename over `dst`, fsync(dir) (in `replace_with`).
//!
//! A copy is therefore two durable steps (`mkdir`, `replace`) for the crash tests.
//! Progress: `copy_started(total data bytes)` before a byte copy that moves data, `copy_advanced(done)`
//! at most once per [`PROGRESS_STEP`] and at the end, `copy_finished(success)` once
//! the replace is over (success or not). A reflink or an empty copy is silent. The
//! cancel token is polled before every chunk and once more before the commit.
//!
//! Every copy logs one info line with src, dst, method (reflink / copy_file_range /
//! read-write / nothing), bytes and, when it was not a reflink, why (the errno FICLONE
//! returned, and copy_file_range's when it was refused).
//!
//! [`ProgressSink`]: crate::context::ProgressSink

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags, Timespec, Timestamps};
use tracing::info;

use crate::context::OpCtx;
use crate::durable;
use crate::error::{EngineError, IoContext, Result};
use crate::sys::{self, CloneOutcome};

/// The largest piece of data moved between two polls of the cancel token.
pub const CHUNK: u64 = 16 << 20;
/// `copy_advanced` is reported at most once per this many bytes (and at the end).
pub const PROGRESS_STEP: u64 = 16 << 20;
/// The buffer of the pread/pwrite fallback.
const RW_BUFFER: usize = 1 << 20;
/// What the reflink probe writes before cloning (several blocks of non-zero data).
const PROBE_BYTES: usize = 16 << 10;

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

impl CopyMethod {
    /// The `method` field of log lines and jobs: `reflink`, `copy_file_range`,
    /// `read-write` or `nothing`.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::CopyFileRange => "copy_file_range",
            CopyMethod::ReadWrite => "read-write",
            CopyMethod::Nothing => "nothing",
        }
    }
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
    copy_labelled(src, &describe_open_file(src), dst, opts, ctx)
}

/// [`copy_file`] from a path (opened read-only, no symlink follow).
pub fn copy_path(src: &Path, dst: &Path, opts: CopyOptions, ctx: &OpCtx) -> Result<CopyMethod> {
    let file = durable::open_read(src)?;
    copy_labelled(&file, &src.display().to_string(), dst, opts, ctx)
}

/// The path of an open file for log lines (from /proc/self/fd), or its fd number.
fn describe_open_file(file: &File) -> String {
    let fd = file.as_raw_fd();
    match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(path) => path.display().to_string(),
        Err(_) => format!("fd {fd}"),
    }
}

/// One copy in progress: its inputs and whether progress reporting has begun.
struct CopyJob<'a> {
    src: &'a File,
    src_label: &'a str,
    src_len: u64,
    src_mtime: Timespec,
    dst: &'a Path,
    opts: CopyOptions,
    ctx: &'a OpCtx,
    progress_started: Cell<bool>,
}

/// What a finished fill did, for the log line.
struct CopyReport {
    method: CopyMethod,
    bytes: u64,
    /// Why the copy is not a reflink (FICLONE's errno, copy_file_range's refusal).
    why: Option<String>,
}

fn copy_labelled(
    src: &File,
    src_label: &str,
    dst: &Path,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<CopyMethod> {
    let meta = src
        .metadata()
        .io_ctx(|| format!("cannot stat {src_label}"))?;
    if !meta.is_file() {
        return Err(EngineError::invalid(format!(
            "{src_label} is not a regular file"
        )));
    }
    if let Some(dir) = dst.parent().filter(|d| !d.as_os_str().is_empty()) {
        durable::ensure_dir(dir)?;
    }
    let job = CopyJob {
        src,
        src_label,
        src_len: meta.len(),
        src_mtime: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
        dst,
        opts,
        ctx,
        progress_started: Cell::new(false),
    };
    let result = durable::replace_with(dst, |temp| job.fill(temp));
    if job.progress_started.get() {
        ctx.progress().copy_finished(result.is_ok());
    }
    let report = result?;
    job.log(&report);
    Ok(report.method)
}

impl CopyJob<'_> {
    /// Steps 2–4 of the module doc, on the fresh temp.
    fn fill(&self, temp: &File) -> Result<CopyReport> {
        let report = match self.opts.dst_size {
            Some(0) => CopyReport {
                method: CopyMethod::Nothing,
                bytes: 0,
                why: None,
            },
            _ => self.transfer(temp)?,
        };
        if self.opts.copy_mtime {
            let times = Timestamps {
                last_access: self.src_mtime,
                last_modification: self.src_mtime,
            };
            rustix::fs::futimens(temp, &times)
                .map_err(io::Error::from)
                .io_ctx(|| format!("cannot set the times of the copy of {}", self.src_label))?;
        }
        if self.ctx.is_cancelled() {
            return Err(EngineError::cancelled());
        }
        Ok(report)
    }

    /// FICLONE, or the hole-preserving byte copy; then the final size.
    fn transfer(&self, temp: &File) -> Result<CopyReport> {
        let clone = sys::ficlone(temp, self.src)
            .io_ctx(|| format!("cannot clone {} to {}", self.src_label, self.dst.display()))?;
        let report = match clone {
            CloneOutcome::Cloned => CopyReport {
                method: CopyMethod::Reflink,
                bytes: self.src_len,
                why: None,
            },
            CloneOutcome::Unsupported(errno) => {
                let mut report = self.byte_copy(temp)?;
                let ficlone_why = format!("FICLONE failed with {}", sys::errno_name(errno));
                report.why = Some(match report.why {
                    Some(more) => format!("{ficlone_why}; {more}"),
                    None => ficlone_why,
                });
                self.set_len(temp, self.copy_limit())?;
                report
            }
        };
        if let Some(size) = self.opts.dst_size {
            self.set_len(temp, size)?;
        }
        Ok(report)
    }

    /// How much of the source matters: all of it, or `dst_size` bytes if smaller.
    fn copy_limit(&self) -> u64 {
        self.opts
            .dst_size
            .map_or(self.src_len, |size| size.min(self.src_len))
    }

    fn set_len(&self, temp: &File, size: u64) -> Result<()> {
        temp.set_len(size).io_ctx(|| {
            format!(
                "cannot truncate the copy {} to {size} bytes",
                self.dst.display()
            )
        })
    }

    /// Copy the data ranges of the source with progress and cancellation.
    fn byte_copy(&self, temp: &File) -> Result<CopyReport> {
        let limit = self.copy_limit();
        let ranges = sys::data_ranges(self.src, limit)
            .io_ctx(|| format!("cannot find the data ranges of {}", self.src_label))?;
        let total: u64 = ranges.iter().map(|&(_, len)| len).sum();
        // A copy with no data (an empty image) is instant: nothing to report.
        if total > 0 {
            self.ctx
                .progress()
                .copy_started(self.ctx.operation(), total);
            self.progress_started.set(true);
        }
        let mut mover = RangeMover::new(self.src, temp);
        let mut reported = 0;
        'ranges: for (offset, len) in ranges {
            for (chunk_offset, chunk_len) in chunks(offset, len) {
                if self.ctx.is_cancelled() {
                    return Err(EngineError::cancelled());
                }
                let moved = mover.move_chunk(chunk_offset, chunk_len).io_ctx(|| {
                    format!("cannot copy {} to {}", self.src_label, self.dst.display())
                })?;
                if mover.done - reported >= PROGRESS_STEP {
                    reported = mover.done;
                    self.ctx.progress().copy_advanced(reported);
                }
                if moved < chunk_len {
                    break 'ranges; // the source shrank under us: its end is reached
                }
            }
        }
        if mover.done != reported {
            self.ctx.progress().copy_advanced(mover.done);
        }
        Ok(mover.into_report())
    }

    fn log(&self, report: &CopyReport) {
        let (src, dst) = (self.src_label, self.dst.display());
        let (method, bytes) = (report.method.as_str(), report.bytes);
        match &report.why {
            Some(why) => info!(op = "copy", src, %dst, method, bytes, why, "copied"),
            None => info!(op = "copy", src, %dst, method, bytes, "copied"),
        }
    }
}

/// `(offset, len)` split into pieces of at most [`CHUNK`] bytes.
fn chunks(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..len.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        (offset + start, CHUNK.min(len - start))
    })
}

/// Moves chunks with copy_file_range until the kernel refuses it for this pair of
/// files, then with pread/pwrite.
struct RangeMover<'a> {
    src: &'a File,
    dst: &'a File,
    method: CopyMethod,
    refusal: Option<String>,
    buffer: Vec<u8>,
    done: u64,
}

impl<'a> RangeMover<'a> {
    fn new(src: &'a File, dst: &'a File) -> Self {
        RangeMover {
            src,
            dst,
            method: CopyMethod::CopyFileRange,
            refusal: None,
            buffer: Vec::new(),
            done: 0,
        }
    }

    /// Returns the bytes moved (fewer than `len` only at the source's end).
    fn move_chunk(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        let moved = match self.method {
            CopyMethod::CopyFileRange => {
                match sys::copy_file_range_all(self.src, self.dst, offset, len) {
                    Ok(moved) => moved,
                    Err(err) if sys::is_copy_range_fallback(&err) => {
                        self.switch_to_read_write(&err);
                        self.read_write(offset, len)?
                    }
                    Err(err) => return Err(err),
                }
            }
            _ => self.read_write(offset, len)?,
        };
        self.done += moved;
        Ok(moved)
    }

    fn switch_to_read_write(&mut self, err: &io::Error) {
        let errno = rustix::io::Errno::from_io_error(err).map(sys::errno_name);
        let errno = errno.unwrap_or_else(|| err.to_string());
        self.refusal = Some(format!("copy_file_range failed with {errno}"));
        self.method = CopyMethod::ReadWrite;
        self.buffer = vec![0; RW_BUFFER];
    }

    /// pread/pwrite `len` bytes at `offset` (the same offset in both files).
    fn read_write(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < len {
            let want = (len - done).min(self.buffer.len() as u64) as usize;
            let got = match self.src.read_at(&mut self.buffer[..want], offset + done) {
                Ok(0) => break,
                Ok(got) => got,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.dst.write_all_at(&self.buffer[..got], offset + done)?;
            done += got as u64;
        }
        Ok(done)
    }

    fn into_report(self) -> CopyReport {
        CopyReport {
            method: self.method,
            bytes: self.done,
            why: self.refusal,
        }
    }
}

/// Copy the open `src` into a new file without a name in `dir` (O_TMPFILE), returned
/// open read-write and rewound: a private, consistent snapshot of an image that someone
/// may write in place later (the export of a snapshots-disabled volume). A reflink
/// where possible, else the hole-preserving copy with progress and cancellation.
pub fn copy_to_anonymous(src: &File, dir: &Path, ctx: &OpCtx) -> Result<File> {
    let src_label = describe_open_file(src);
    let meta = src
        .metadata()
        .io_ctx(|| format!("cannot stat {src_label}"))?;
    let temp = anonymous_file(dir)?;
    let job = CopyJob {
        src,
        src_label: &src_label,
        src_len: meta.len(),
        src_mtime: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
        dst: dir,
        opts: CopyOptions::default(),
        ctx,
        progress_started: Cell::new(false),
    };
    let result = job.fill(&temp);
    if job.progress_started.get() {
        ctx.progress().copy_finished(result.is_ok());
    }
    job.log(&result?);
    Ok(temp)
}

/// The reflink probe (R§4.4, deliberate fix 4): write real data (and fsync it) into an
/// anonymous O_TMPFILE in `dir`, FICLONE it into a second one. Fallback errnos → false;
/// other errors (EACCES, EPERM, …) propagate. Leaves no name behind.
///
/// Where O_TMPFILE is not supported (EOPNOTSUPP, or EISDIR from old kernels) a named
/// temp `.reflink-probe~XXXXXXXX` is created and unlinked at once.
pub fn probe_reflink(dir: &Path) -> Result<bool> {
    let src = anonymous_file(dir)?;
    src.write_all_at(&[0x5a; PROBE_BYTES], 0)
        .and_then(|()| src.sync_all())
        .io_ctx(|| format!("cannot write the reflink probe in {}", dir.display()))?;
    let dst = anonymous_file(dir)?;
    let outcome = sys::ficlone(&dst, &src)
        .io_ctx(|| format!("cannot probe reflink support in {}", dir.display()))?;
    let path = dir.display();
    match outcome {
        CloneOutcome::Cloned => info!(op = "probe", %path, reflink = true, "reflink probe"),
        CloneOutcome::Unsupported(errno) => {
            let why = format!("FICLONE failed with {}", sys::errno_name(errno));
            info!(op = "probe", %path, reflink = false, why, "reflink probe");
        }
    }
    Ok(outcome == CloneOutcome::Cloned)
}

/// A read-write file in `dir` without a name: O_TMPFILE, or a named temp unlinked at
/// once where O_TMPFILE is not supported.
fn anonymous_file(dir: &Path) -> Result<File> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::open(dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => named_unlinked_file(dir),
        Err(errno) => Err(EngineError::io(
            format!("cannot create a temporary file in {}", dir.display()),
            errno.into(),
        )),
    }
}

fn named_unlinked_file(dir: &Path) -> Result<File> {
    let path = durable::temp_path(&dir.join(".reflink-probe"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .io_ctx(|| format!("cannot create {}", path.display()))?;
    std::fs::remove_file(&path).io_ctx(|| format!("cannot remove {}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_a_range_exactly_in_pieces_of_at_most_chunk() {
        let pieces: Vec<_> = chunks(100, 2 * CHUNK + 5).collect();
        assert_eq!(
            pieces,
            [(100, CHUNK), (100 + CHUNK, CHUNK), (100 + 2 * CHUNK, 5)]
        );
        assert_eq!(chunks(7, CHUNK).collect::<Vec<_>>(), [(7, CHUNK)]);
        assert_eq!(chunks(7, 0).count(), 0);
    }

    #[test]
    fn method_names_match_the_log_vocabulary() {
        assert_eq!(CopyMethod::Reflink.as_str(), "reflink");
        assert_eq!(CopyMethod::CopyFileRange.as_str(), "copy_file_range");
        assert_eq!(CopyMethod::ReadWrite.as_str(), "read-write");
    }
}
