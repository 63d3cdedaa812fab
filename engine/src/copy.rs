//! The copy engine (R§4): every copy makes a *new inode* at the destination. The
//! engine's operations stage theirs ([`stage_at`], [`stage_file`], [`stage_reflink_at`],
//! through [`crate::durable::stage_content_at`]) and put them in place with their other
//! changes; [`copy_file`], [`copy_at`] and [`copy_path`] (tools, tests, benchmarks)
//! replace `dst` at once through [`crate::durable::replace_at`]; [`private_copy`] never
//! keeps a name ([`crate::durable::unnamed_at`]). First FICLONE; on a "not possible
//! here" errno a hole-preserving copy: SEEK_DATA/SEEK_HOLE ranges copied with
//! copy_file_range, falling back to pread/pwrite when copy_file_range is refused —
//! never a copy that fills holes. Byte copies report progress to the operation's
//! [`ProgressSink`] and poll its cancel token between chunks; a cancelled or failed
//! copy leaves nothing.
//!
//! Destinations are a file name in an open [`Dir`] (the engine's VM directories, opened
//! beneath the pool's fd), so a copy never writes through a symlink; sources are open
//! files or a name in a `Dir`, checked to be regular files.
//!
//! The sequence of a copy (R§4.1 with our improvements):
//! 1. A fresh temp next to `dst` (the caller made sure the directory exists; only
//!    [`copy_path`], for tools and tests, makes it with a single mkdir).
//! 2. `dst_size == Some(0)`: nothing is moved ([`CopyMethod::Nothing`]).
//! 3. FICLONE into the fresh temp. On EBADF/EINVAL/EOPNOTSUPP/EXDEV: the data ranges
//!    of the source (up to `min(source size, dst_size)`) are copied in chunks of at most
//!    [`CHUNK`] with copy_file_range, or pread/pwrite once copy_file_range refused
//!    (EXDEV/EINVAL/EOPNOTSUPP/ENOSYS), into a temp that already has its final length
//!    (so that no write extends it: XFS would otherwise keep speculative preallocations
//!    in the holes: 840 MiB allocated for 781 MiB of data in 2000 ranges); then the temp is
//!    truncated to the source size again (the source may have shrunk). Then the
//!    `dst_size` truncate (extend with a hole or cut).
//! 4. `copy_mtime`: atime and mtime of the temp := the source's mtime (ns).
//! 5. A copy that gets a name: fchmod 0600 and fsync (on XFS a wait for its writeback
//!    instead; nothing for a staged reflink or empty copy on XFS, nor for a disposable
//!    copy, [`CopyOptions::disposable`]). Then [`copy_file`] renames it over `dst` and
//!    fsyncs the directory ([`crate::durable::replace_at`]); a staged copy gets its name
//!    when the caller places it ([`crate::durable::DirChanges::place`]). A private copy
//!    is neither fsynced nor named: it is unlinked once it is open read-only.
//!
//! A copy is therefore one durable step (`replace`) for the crash tests: when
//! [`copy_file`] has replaced `dst`, or when a staged copy is placed.
//! Progress: `copy_started(total data bytes)` before a byte copy that moves data, `copy_advanced(done)`
//! at most once per [`PROGRESS_STEP`] and at the end, `copy_finished(success)` once
//! the copy is in place or staged (success or not). A reflink or an empty copy is
//! silent. The cancel token is polled before every chunk and once more before the
//! commit.
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
use std::path::{Path, PathBuf};

use tracing::info;

use crate::context::OpCtx;
use crate::dir::{Access, Dir};
use crate::durable::{self, Staged};
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
    /// What the copy's content is made of: shared extents or nothing are metadata,
    /// copied bytes are data.
    pub fn content(self) -> durable::Content {
        match self {
            CopyMethod::Reflink | CopyMethod::Nothing => durable::Content::Metadata,
            CopyMethod::CopyFileRange | CopyMethod::ReadWrite => durable::Content::Data,
        }
    }

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
    /// The copy need not survive a power cut (a snapshot's running image: no start
    /// after a crash uses it): staged without an fsync ([`durable::Content::Disposable`]).
    pub disposable: bool,
    /// A copy of the volume's own image (the precache of a pool without reflinks):
    /// announced with [`crate::ProgressSink::own_copy_started`], as the volume's alone.
    pub own_image: bool,
}

/// Copy the open `src` to a new inode atomically placed at `dst` in `dst_dir`.
pub fn copy_file(
    src: &File,
    dst_dir: &Dir,
    dst: &str,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<CopyMethod> {
    copy_labelled(src, &describe_open_file(src), dst_dir, dst, opts, ctx)
}

/// [`copy_file`] from the regular file `src` in `src_dir` (opened read-only, no
/// symlink follow).
pub fn copy_at(
    src_dir: &Dir,
    src: &str,
    dst_dir: &Dir,
    dst: &str,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<CopyMethod> {
    let file = src_dir.open_file(src, Access::Read)?;
    let label = src_dir.join(src).display().to_string();
    copy_labelled(&file, &label, dst_dir, dst, opts, ctx)
}

/// [`copy_at`] by paths, for tools, tests and benchmarks: the source is opened without
/// following a final symlink, the destination's directory is made with a single mkdir
/// if missing.
pub fn copy_path(src: &Path, dst: &Path, opts: CopyOptions, ctx: &OpCtx) -> Result<CopyMethod> {
    let (src_dir, src_name) = Dir::open_parent_of(src)?;
    let dst_name = dst
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| EngineError::invalid(format!("{} has no file name", dst.display())))?;
    let dst_dir = match dst.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            let (grand, name) = Dir::open_parent_of(parent)?;
            durable::ensure_dir_at(&grand, &name)?.0
        }
        None => Dir::open_path(Path::new("."))?,
    };
    copy_at(&src_dir, &src_name, &dst_dir, dst_name, opts, ctx)
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
    src_mtime: (i64, i64),
    dst: PathBuf,
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
    dst_dir: &Dir,
    dst: &str,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<CopyMethod> {
    let job = CopyJob::new(src, src_label, dst_dir.join(dst), opts, ctx)?;
    let result = durable::replace_at(dst_dir, dst, |temp| job.fill(temp));
    job.finish(result.as_ref());
    result.map(|report| report.method)
}

/// [`copy_file`] up to the point where the copy is complete and durable under a temp
/// name next to `dst` ([`Staged`]); the caller places it with its other changes
/// ([`durable::DirChanges::place`]).
pub fn stage_file<'a>(
    src: &File,
    dst_dir: &'a Dir,
    dst: &str,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<(Staged<'a>, CopyMethod)> {
    stage_labelled(src, &describe_open_file(src), dst_dir, dst, opts, ctx)
}

/// [`stage_file`] from the regular file `src` in `src_dir`.
pub fn stage_at<'a>(
    src_dir: &Dir,
    src: &str,
    dst_dir: &'a Dir,
    dst: &str,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<(Staged<'a>, CopyMethod)> {
    let file = src_dir.open_file(src, Access::Read)?;
    let label = src_dir.join(src).display().to_string();
    stage_labelled(&file, &label, dst_dir, dst, opts, ctx)
}

fn stage_labelled<'a>(
    src: &File,
    src_label: &str,
    dst_dir: &'a Dir,
    dst: &str,
    opts: CopyOptions,
    ctx: &OpCtx,
) -> Result<(Staged<'a>, CopyMethod)> {
    let job = CopyJob::new(src, src_label, dst_dir.join(dst), opts, ctx)?;
    let result = durable::stage_content_at(dst_dir, dst, |temp| {
        let report = job.fill(temp)?;
        let content = match opts.disposable {
            true => durable::Content::Disposable,
            false => report.method.content(),
        };
        Ok((report, content))
    });
    job.finish(result.as_ref().map(|(_, report)| report));
    result.map(|(staged, report)| (staged, report.method))
}

/// A reflink of `src` staged next to `dst` (with the source's mtime when
/// `copy_mtime`), or `None` where FICLONE is not possible — never a byte copy: for
/// work done after a reply, where a long copy without a Job has no place. `mark`
/// is given the clone and the source before the clone is sealed (the precache marks
/// what it is a reflink of).
pub fn stage_reflink_at<'a>(
    src_dir: &Dir,
    src: &str,
    dst_dir: &'a Dir,
    dst: &str,
    copy_mtime: bool,
    mark: impl FnOnce(&File, &File) -> Result<()>,
) -> Result<Option<Staged<'a>>> {
    let file = src_dir.open_file(src, Access::Read)?;
    let label = src_dir.join(src).display().to_string();
    let opts = CopyOptions {
        dst_size: None,
        copy_mtime,
        disposable: false,
        own_image: false,
    };
    let ctx = OpCtx::quiet("precache");
    let job = CopyJob::new(&file, &label, dst_dir.join(dst), opts, &ctx)?;
    let staged = durable::stage_content_at(dst_dir, dst, |temp| {
        let report = job.fill_reflink(temp)?;
        if report.is_some() {
            mark(temp, &file)?;
        }
        Ok((report, durable::Content::Metadata))
    });
    match staged {
        Ok((staged, Some(report))) => {
            job.log(&report);
            Ok(Some(staged))
        }
        Ok((_, None)) => Ok(None), // dropping the stage removes its temp
        Err(err) => Err(err),
    }
}

impl<'a> CopyJob<'a> {
    /// A copy of the regular file `src` to `dst` (the path for log lines).
    fn new(
        src: &'a File,
        src_label: &'a str,
        dst: PathBuf,
        opts: CopyOptions,
        ctx: &'a OpCtx,
    ) -> Result<CopyJob<'a>> {
        let meta = src
            .metadata()
            .io_ctx(|| format!("cannot stat {src_label}"))?;
        if !meta.is_file() {
            return Err(EngineError::invalid(format!(
                "{src_label} is not a regular file"
            )));
        }
        Ok(CopyJob {
            src,
            src_label,
            src_len: meta.len(),
            src_mtime: (meta.mtime(), meta.mtime_nsec()),
            dst,
            opts,
            ctx,
            progress_started: Cell::new(false),
        })
    }

    /// Report the end of the copy: progress (with why a copy failed), and the log line
    /// of a copy that was made.
    fn finish(&self, made: std::result::Result<&CopyReport, &EngineError>) {
        if self.progress_started.get() {
            if let Err(err) = made {
                self.ctx.progress().copy_failed(&err.to_string());
            }
            self.ctx.progress().copy_finished(made.is_ok());
        }
        if let Ok(report) = made {
            self.log(report);
        }
    }
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
            sys::set_times(temp, self.src_mtime)
                .io_ctx(|| format!("cannot set the times of the copy of {}", self.src_label))?;
        }
        if self.ctx.is_cancelled() {
            return Err(EngineError::cancelled());
        }
        Ok(report)
    }

    /// FICLONE only (and the source's times when asked); `None` where it is not
    /// possible.
    fn fill_reflink(&self, temp: &File) -> Result<Option<CopyReport>> {
        let clone = sys::ficlone(temp, self.src)
            .io_ctx(|| format!("cannot clone {} to {}", self.src_label, self.dst.display()))?;
        if let CloneOutcome::Unsupported(errno) = clone {
            tracing::debug!(src = self.src_label, errno = %sys::errno_name(errno), "no reflink here");
            return Ok(None);
        }
        if self.opts.copy_mtime {
            sys::set_times(temp, self.src_mtime)
                .io_ctx(|| format!("cannot set the times of the copy of {}", self.src_label))?;
        }
        Ok(Some(CopyReport {
            method: CopyMethod::Reflink,
            bytes: self.src_len,
            why: None,
        }))
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
                // The final size first: no write of the copy extends the file, so XFS
                // makes no speculative preallocation past its end that would stay
                // allocated in the holes the copy skips.
                self.set_len(temp, self.copy_limit())?;
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
            let progress = self.ctx.progress();
            match self.opts.own_image {
                true => progress.own_copy_started(self.ctx.operation(), total),
                false => progress.copy_started(self.ctx.operation(), total),
            }
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

/// A private, consistent copy of the open `src` that nobody else can reach, returned
/// open **read-only**: the export of an image that someone may write in place later (a
/// snapshots-disabled volume). A reflink where possible, else the hole-preserving copy
/// with progress and cancellation. The copy is made under a temp name next to `base`
/// in `dir` ([`durable::unnamed_at`]) and unlinked before it is returned, so the only
/// reference to it is the read-only fd: its holder can neither write it nor grow it.
pub fn private_copy(src: &File, dir: &Dir, base: &str, ctx: &OpCtx) -> Result<File> {
    let src_label = describe_open_file(src);
    let label = dir.join(&format!("{base} (a private copy)"));
    let job = CopyJob::new(src, &src_label, label, CopyOptions::default(), ctx)?;
    let result = durable::unnamed_at(dir, base, |temp| job.fill(temp));
    job.finish(result.as_ref().map(|(_, report)| report));
    result.map(|(file, _)| file)
}

/// The reflink probe (R§4.4, deliberate fix 4): write real data (and fsync it) into an
/// anonymous O_TMPFILE in `dir`, FICLONE it into a second one. Fallback errnos → false;
/// other errors (EACCES, EPERM, …) propagate. Leaves no name behind.
///
/// Where O_TMPFILE is not supported (EOPNOTSUPP, or EISDIR from old kernels) a named
/// temp `.reflink-probe~XXXXXXXX` is created and unlinked at once.
pub fn probe_reflink_in(dir: &Dir) -> Result<bool> {
    let src = anonymous_file(dir)?;
    src.write_all_at(&[0x5a; PROBE_BYTES], 0)
        .and_then(|()| src.sync_all())
        .io_ctx(|| format!("cannot write the reflink probe in {}", dir.path().display()))?;
    let dst = anonymous_file(dir)?;
    let outcome = sys::ficlone(&dst, &src)
        .io_ctx(|| format!("cannot probe reflink support in {}", dir.path().display()))?;
    let path = dir.path().display();
    match outcome {
        CloneOutcome::Cloned => info!(op = "probe", %path, reflink = true, "reflink probe"),
        CloneOutcome::Unsupported(errno) => {
            let why = format!("FICLONE failed with {}", sys::errno_name(errno));
            info!(op = "probe", %path, reflink = false, why, "reflink probe");
        }
    }
    Ok(outcome == CloneOutcome::Cloned)
}

/// [`probe_reflink_in`] the directory at `dir`.
pub fn probe_reflink(dir: &Path) -> Result<bool> {
    probe_reflink_in(&Dir::open_path(dir)?)
}

/// A read-write file in `dir` without a name: O_TMPFILE, or a named temp unlinked at
/// once where O_TMPFILE is not supported.
fn anonymous_file(dir: &Dir) -> Result<File> {
    use rustix::io::Errno;
    match sys::open_unnamed(dir.fd()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(err)
            if matches!(
                Errno::from_io_error(&err),
                Some(Errno::OPNOTSUPP | Errno::ISDIR)
            ) =>
        {
            durable::scratch_at(dir, ".reflink-probe")
        }
        Err(err) => Err(EngineError::io(
            format!("cannot create a temporary file in {}", dir.path().display()),
            err,
        )),
    }
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
