//! The one module that owns raw syscalls: the directory-relative file operations every
//! pool change goes through (openat2 beneath a directory, renameat, unlinkat, linkat,
//! mkdirat, fstatat without following symlinks, reading a directory), FICLONE,
//! copy_file_range, SEEK_DATA / SEEK_HOLE, fsync, fdatasync, syncfs, sync_file_range,
//! futimens, O_TMPFILE,
//! statvfs, FS_IOC_FIEMAP, LOOP_SET_CAPACITY and the write-lease probe, plus the classification of FICLONE and
//! copy_file_range errnos into "fall back" and "fail".
//!
//! rustix is used (not nix) because it has safe wrappers for FICLONE
//! (`rustix::fs::ioctl_ficlone`), `copy_file_range`, `SEEK_DATA`/`SEEK_HOLE`, `openat2`
//! and `statvfs`; the ioctl number comes from the platform's headers through rustix/libc
//! (deliberate fix 5), never from a per-architecture table. The only `unsafe` blocks are
//! two ioctls without a wrapper anywhere, their opcodes computed by rustix from the
//! platform's encoding: LOOP_SET_CAPACITY (`rustix::ioctl::opcode::none(b'L', 7)`,
//! `_IO('L', 7)` = 0x4C07 on every architecture) and FS_IOC_FIEMAP
//! (`_IOWR('f', 11, struct fiemap)`, from the size of the `#[repr(C)]` header below),
//! the two `fcntl`s of [`only_opener`] (F_SETSIG, F_SETLEASE) and `sync_file_range`
//! ([`write_back_and_wait`]), which neither rustix nor nix wraps (libc).
//!
//! Kernel facts relied on (see docs/copy-engine.md):
//! * `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`
//!   (Linux ≥ 5.6) refuses a path that would leave the directory (EXDEV) or that has a
//!   symlink in any component (ELOOP), atomically with the lookup. Where the syscall is
//!   missing (ENOSYS) [`open_beneath`] walks the components with
//!   `openat(O_NOFOLLOW)`, refusing `..`, which is as safe for the plain names the
//!   engine uses.
//! * `renameat`, `unlinkat`, `linkat` (without AT_SYMLINK_FOLLOW) and `fstatat` with
//!   AT_SYMLINK_NOFOLLOW act on the last component itself, never on a symlink's target.
//! * FICLONE fails with EOPNOTSUPP on ext4/tmpfs/XFS-without-reflink, EXDEV across
//!   filesystems, EINVAL for btrfs datacow↔nodatacow or a non-regular source, EBADF for
//!   unsuitable open modes. Those four mean "not possible here, copy instead"; every
//!   other errno (EIO, ENOSPC, EDQUOT, EPERM, …) is a real error and propagates.
//! * FICLONE into a non-empty file keeps the larger size: always clone into a fresh
//!   file.
//! * `copy_file_range` moves at most ~2 GiB per call; loop on short counts. It returns
//!   EXDEV across filesystems on kernels ≥ 5.19 and must not be used over holes on ext4
//!   (it writes zeros): only call it on data ranges found with SEEK_DATA/SEEK_HOLE.
//!   EXDEV, EINVAL, EOPNOTSUPP and ENOSYS from it mean "use pread/pwrite instead"
//!   ([`is_copy_range_fallback`]).
//! * `lseek(SEEK_DATA)` past the last data byte fails with ENXIO; a filesystem without
//!   SEEK_DATA support fails with EINVAL, and then the whole file counts as data.
//!   SEEK_DATA/SEEK_HOLE move the file offset: [`data_ranges`] restores it.
//! * FS_IOC_FIEMAP (`<linux/fiemap.h>`) fills at most `fm_extent_count` extents from
//!   `fm_start` on and sets FIEMAP_EXTENT_LAST on the file's last one; FIEMAP_FLAG_SYNC
//!   writes dirty pages first (without it, delayed allocations show as holes or as
//!   extents without an address — GNU cp's old corruption). btrfs, XFS and ext4 support
//!   it; tmpfs and others fail with EOPNOTSUPP ([`fiemap`] returns `None`).
//!   FIEMAP_EXTENT_SHARED is set on btrfs and XFS for an extent another file (or
//!   another offset) also references; ext4 never shares.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, ResolveFlags, SeekFrom, Timespec, Timestamps};
use rustix::io::Errno;

pub use rustix::fs::{FileType, OFlags, Stat};

/// What a FICLONE attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneOutcome {
    Cloned,
    /// Not possible here (EBADF, EINVAL, EOPNOTSUPP, EXDEV): the caller copies instead.
    /// Carries the errno so logs can say why the copy was not a reflink.
    Unsupported(rustix::io::Errno),
}

/// One `copy_file_range` call never asks for more than this (the kernel caps a call at
/// about 2 GiB anyway).
const COPY_RANGE_MAX_CALL: u64 = 1 << 30;

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another
/// open file description holds it (EWOULDBLOCK).
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(errno) => Err(errno.into()),
    }
}

/// FICLONE `src` into `dst` (which must be a fresh, empty file opened for writing).
pub fn ficlone(dst: &File, src: &File) -> io::Result<CloneOutcome> {
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => Ok(CloneOutcome::Cloned),
        Err(errno) if is_clone_fallback(errno) => Ok(CloneOutcome::Unsupported(errno)),
        Err(errno) => Err(errno.into()),
    }
}

/// Does this FICLONE errno mean "not possible here, copy the bytes instead" (R§4.2)?
/// Only EBADF, EINVAL, EOPNOTSUPP and EXDEV do; anything else is a real error.
pub fn is_clone_fallback(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::BADF | Errno::INVAL | Errno::OPNOTSUPP | Errno::XDEV
    )
}

/// The symbolic name of an errno for log lines ("EOPNOTSUPP"), `errno N` for the ones
/// the copy engine does not expect.
pub fn errno_name(errno: Errno) -> String {
    let name = match errno {
        Errno::BADF => "EBADF",
        Errno::INVAL => "EINVAL",
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::XDEV => "EXDEV",
        Errno::NOSYS => "ENOSYS",
        Errno::IO => "EIO",
        Errno::NOSPC => "ENOSPC",
        Errno::DQUOT => "EDQUOT",
        Errno::PERM => "EPERM",
        Errno::ACCESS => "EACCES",
        Errno::ISDIR => "EISDIR",
        Errno::TXTBSY => "ETXTBSY",
        Errno::NOMEM => "ENOMEM",
        _ => return format!("errno {}", errno.raw_os_error()),
    };
    name.to_owned()
}

/// Does this copy_file_range error mean "this pair of files cannot do it, use
/// pread/pwrite" (EXDEV, EINVAL, EOPNOTSUPP, ENOSYS)? Anything else is a real error.
pub fn is_copy_range_fallback(err: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(err),
        Some(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS)
    )
}

/// The data ranges `(offset, length)` of `file` up to `len`, found with SEEK_DATA /
/// SEEK_HOLE (never FIEMAP). A filesystem without SEEK_DATA support yields one range.
/// The file offset is restored afterwards.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let saved_offset = rustix::fs::tell(file)?;
    let ranges = scan_data_ranges(file, len);
    rustix::fs::seek(file, SeekFrom::Start(saved_offset))?;
    ranges
}

fn scan_data_ranges(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) if pos == 0 => return Ok(vec![(0, len)]),
            Err(errno) => return Err(errno.into()),
        };
        if start >= len {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(hole) => hole.min(len),
            // The file shrank under us: take the rest as data, a short read ends it.
            Err(Errno::NXIO) => len,
            Err(errno) => return Err(errno.into()),
        };
        ranges.push((start, end - start));
        pos = end;
    }
    Ok(ranges)
}

/// Copy `len` bytes at `offset` from `src` to the same offset of `dst` with
/// copy_file_range, looping on short counts. Returns the bytes copied, which may be
/// less than `len` only at end of file.
pub fn copy_file_range_all(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<u64> {
    let mut done = 0;
    while done < len {
        let mut off_in = offset + done;
        let mut off_out = offset + done;
        let want = (len - done).min(COPY_RANGE_MAX_CALL) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(done)
}

/// Open a directory by its path, following symlinks in it (the state directory and its
/// parents: the administrator's choice). A pool directory is walked instead
/// (`pool::open_root`); every path below it goes through [`open_beneath`].
pub fn open_dir_path(dir: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

/// An `O_PATH` descriptor of the root directory `/`: where a walk of an absolute path
/// begins ([`open_path_at`]).
pub fn open_path_root() -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open("/", flags, Mode::empty())?)
}

/// An `O_PATH` descriptor of the entry `name` of `dir` itself (`O_NOFOLLOW`: a symlink
/// is not followed, its descriptor names the link), for a walk that looks at every
/// component before it goes on (`fstat`, [`read_link_fd`]).
pub fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// The target of the symlink an `O_PATH | O_NOFOLLOW` descriptor names
/// (`readlinkat(fd, "")`).
pub fn read_link_fd(link: BorrowedFd<'_>) -> io::Result<PathBuf> {
    let target = rustix::fs::readlinkat(link, "", Vec::new())?;
    Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
}

/// A readable descriptor of the directory an `O_PATH` descriptor names.
pub fn open_dir_fd(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, ".", flags, Mode::empty())?)
}

/// Open `rel` (plain names joined by `/`) beneath the directory `dir`: no component,
/// the last included, may be a symlink and the lookup cannot leave `dir`
/// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS). O_CLOEXEC is always
/// added. A symlink anywhere fails with ELOOP, an escape with EXDEV. (O_NOFOLLOW is
/// not added: with O_DIRECTORY it would turn a final symlink's ELOOP into ENOTDIR.)
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
    mode: u32,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let mode = Mode::from_raw_mode(mode);
    match rustix::fs::openat2(dir, rel, flags, mode, resolve) {
        Err(Errno::NOSYS) => open_walking(dir, rel, flags | OFlags::NOFOLLOW, mode),
        other => Ok(other?),
    }
}

/// [`open_beneath`] without openat2: one `openat(O_NOFOLLOW)` per component, refusing
/// `..`, absolute paths and empty components (EXDEV, as openat2 would).
fn open_walking(dir: BorrowedFd<'_>, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "..") {
        return Err(Errno::XDEV.into());
    }
    let (last, dirs) = parts.split_last().ok_or(Errno::XDEV)?;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut current: Option<OwnedFd> = None;
    for part in dirs {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        current = Some(rustix::fs::openat(at, *part, dir_flags, Mode::empty())?);
    }
    let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
    Ok(rustix::fs::openat(at, *last, flags, mode)?)
}

/// O_TMPFILE in `dir`: a read-write regular file without a name, mode 0600.
pub fn open_unnamed(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(
        dir,
        ".",
        flags,
        Mode::from_raw_mode(0o600),
    )?)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, never a symlink's target.
pub fn stat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// `fstat` of an open file.
pub fn stat_fd(fd: impl AsFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// `renameat`: replaces `to` if it exists (and is not a directory).
pub fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> io::Result<()> {
    Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
}

/// `renameat2(RENAME_NOREPLACE)`: EEXIST instead of replacing an existing `to`.
pub fn rename_noreplace_at(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        from_dir,
        from,
        to_dir,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )?)
}

/// `renameat2(RENAME_EXCHANGE)`: `a` and `b` (both in `dir`, both existing) swap names.
pub fn exchange_at(dir: BorrowedFd<'_>, a: &str, b: &str) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(
        dir,
        a,
        dir,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )?)
}

/// `unlinkat` of a non-directory entry (a symlink itself is removed, not its target).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// `unlinkat(AT_REMOVEDIR)`: removes an empty directory.
pub fn rmdir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// `linkat` without AT_SYMLINK_FOLLOW: links the entry itself.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        from_dir,
        from,
        to_dir,
        to,
        AtFlags::empty(),
    )?)
}

/// `mkdirat` (the umask still applies).
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// The names in the directory `dir` (without `.` and `..`), read through a fresh open
/// file description of it.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// fsync an open file or directory (for a directory: makes a rename, link, unlink or
/// mkdir in it durable).
pub fn fsync(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// fdatasync an open file: its data, and the metadata needed to read it (its size).
pub fn fdatasync(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fdatasync(fd)?)
}

/// syncfs(2): write back and commit everything of the filesystem holding `fd` — a
/// barrier for every file and directory on it. Since Linux 5.8 it reports writeback
/// errors of the filesystem that happened since `fd` was opened.
pub fn syncfs(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::syncfs(fd)?)
}

/// Write back every dirty page of `file` and wait until the writes have completed
/// (`sync_file_range` over the whole file with WAIT_BEFORE | WRITE | WAIT_AFTER). No
/// cache flush and no journal commit: the caller makes the data durable with a later
/// barrier that commits the journal ([`crate::durable`], XFS). On XFS a page's
/// writeback ends only after its I/O completion's metadata transaction (an unwritten
/// extent converted, a copy-on-write remapped, the size moved) is committed in memory,
/// so once this returns every change the data needs is in the log. Reports the
/// writeback errors of the file since it was opened.
pub fn write_back_and_wait(file: &File) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on a borrowed, open descriptor; no memory is passed.
    match unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Start writing back the dirty pages of `file` without waiting, and drop its pages
/// that are already clean (`posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file).
pub fn start_writeback(file: &File) -> io::Result<()> {
    Ok(rustix::fs::fadvise(
        file,
        0,
        None,
        rustix::fs::Advice::DontNeed,
    )?)
}

/// The value of the extended attribute `name` of an open file; `None` when it has
/// none or the filesystem keeps none.
pub fn get_xattr(file: impl AsFd, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 64];
    match rustix::fs::fgetxattr(file, name, &mut value) {
        Ok(len) => {
            value.truncate(len);
            Ok(Some(value))
        }
        Err(Errno::NODATA | Errno::NOTSUP | Errno::RANGE) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, a random UUID the kernel makes
/// at each boot), read once.
pub fn boot_id() -> io::Result<&'static str> {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(id);
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    Ok(ID.get_or_init(|| id.trim().to_owned()))
}

/// Set the extended attribute `name` of an open file to `value`.
pub fn set_xattr(file: impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(
        file,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

/// Remove the extended attribute `name` of an open file (none there: nothing to do).
pub fn remove_xattr(file: impl AsFd, name: &str) -> io::Result<()> {
    match rustix::fs::fremovexattr(file, name) {
        Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// XFS's superblock magic (`XFS_SUPER_MAGIC`, "XFSB").
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
/// btrfs's superblock magic (`BTRFS_SUPER_MAGIC`).
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): a mount id that is never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The kind of filesystem a file is on, as far as durability and reflinks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Btrfs,
    /// `log_inside`: its log is inside the data device and it has no realtime device
    /// (no `logdev=` or `rtdev=` mount option), as `mkfs.xfs` makes it.
    Xfs {
        log_inside: bool,
    },
    Other,
}

/// The [`FsKind`] of the filesystem holding `fd` (`Other` when it cannot tell).
///
/// Asked once per mount: the answer is kept under the mount's unique id (statx
/// `STATX_MNT_ID_UNIQUE`, never reused, Linux ≥ 6.8), so the hot paths pay one statx
/// and not an `fstatfs` — which on XFS first waits for every pending inode inactivation
/// of the filesystem (`xfs_inodegc_flush`: the files just deleted after an earlier
/// reply, milliseconds for a large reflinked image), measured here at up to 6 ms. On a
/// kernel without unique mount ids nothing is kept and each call asks `fstatfs`.
pub fn fs_kind(fd: impl AsFd) -> FsKind {
    use rustix::fs::{AtFlags, StatxFlags};
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u64, FsKind>>> =
        std::sync::OnceLock::new();
    let fd = fd.as_fd();
    let unique = StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE);
    let mount = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, unique)
        .ok()
        .filter(|st| st.stx_mask & STATX_MNT_ID_UNIQUE != 0);
    let known = KNOWN.get_or_init(Default::default);
    if let Some(kind) = mount.as_ref().and_then(|st| {
        let known = known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&st.stx_mnt_id).copied()
    }) {
        return kind;
    }
    let kind = fs_kind_of(fd);
    if let Some(st) = mount {
        known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(st.stx_mnt_id, kind);
    }
    kind
}

/// [`FsKind`] asked of the kernel: `fstatfs`, and for XFS the mount options of its
/// device in `/proc/self/mountinfo`.
// `f_type` is an i64 on x86_64 but 32 bits wide on other platforms.
#[allow(clippy::unnecessary_cast)]
fn fs_kind_of(fd: BorrowedFd<'_>) -> FsKind {
    match rustix::fs::fstatfs(fd).map(|st| st.f_type as i64) {
        Ok(BTRFS_SUPER_MAGIC) => FsKind::Btrfs,
        Ok(XFS_SUPER_MAGIC) => {
            let log_inside = stat_fd(fd).ok().and_then(|st| {
                let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
                let dev = st.st_dev;
                xfs_log_inside(&info, rustix::fs::major(dev), rustix::fs::minor(dev))
            });
            FsKind::Xfs {
                log_inside: log_inside.unwrap_or(false),
            }
        }
        _ => FsKind::Other,
    }
}

/// Is `fd` on XFS ([`fs_kind`])? XFS journals every metadata change in one ordered
/// log, so forcing the log for one change forces every change made before it (see
/// [`crate::durable`]).
pub fn is_xfs(fd: impl AsFd) -> bool {
    matches!(fs_kind(fd), FsKind::Xfs { .. })
}

/// Is `fd` on btrfs or XFS ([`fs_kind`])? Both write a block shared by a reflink
/// elsewhere (copy on write) and make the new block part of the file only by a
/// metadata change, which they keep in order with every metadata change made before it
/// (btrfs transactions and its fsync log, XFS's one log).
pub fn is_btrfs_or_xfs(fd: impl AsFd) -> bool {
    matches!(fs_kind(fd), FsKind::Btrfs | FsKind::Xfs { .. })
}

/// Does a commit of the journal of the filesystem holding `fd` also make durable every
/// data write to it that completed before? True on XFS with its log inside the data
/// device and no realtime device ([`FsKind::Xfs`]): a log force writes the
/// checkpoint's first log block with a cache flush of that device before it
/// (REQ_PREFLUSH), and data reaches no other device. False elsewhere, and when it
/// cannot tell.
pub fn journal_covers_data(fd: impl AsFd) -> bool {
    fs_kind(fd) == FsKind::Xfs { log_inside: true }
}

/// From the text of a mountinfo file: is the XFS filesystem of device `major:minor`
/// mounted with its log inside its data device and no realtime device? `None` when no
/// XFS mount of it is listed.
fn xfs_log_inside(mountinfo: &str, major: u32, minor: u32) -> Option<bool> {
    let device = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if mount.split(' ').nth(2)? != device {
            return None;
        }
        let mut fs = fs.split(' ');
        if fs.next()? != "xfs" {
            return None;
        }
        let options = fs.nth(1).unwrap_or("");
        Some(
            !options
                .split(',')
                .any(|o| o.starts_with("logdev=") || o.starts_with("rtdev=")),
        )
    })
}

/// What tells one inode from any copy of it: its number and its birth time (statx
/// `stx_btime`, which no one can set — a restored or copied file is born anew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub ino: u64,
    pub born: (i64, u32),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}.{:09}", self.ino, self.born.0, self.born.1)
    }
}

/// The [`Identity`] of `name` in `dir` (not following a symlink), or of `fd` itself
/// when `name` is empty; `None` where the filesystem keeps no birth time.
pub fn identity(fd: impl AsFd, name: &str) -> io::Result<Option<Identity>> {
    use rustix::fs::{AtFlags, StatxFlags};
    let flags = match name.is_empty() {
        true => AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        false => AtFlags::SYMLINK_NOFOLLOW,
    };
    let st = rustix::fs::statx(fd, name, flags, StatxFlags::INO | StatxFlags::BTIME)?;
    if st.stx_mask & StatxFlags::BTIME.bits() == 0 {
        return Ok(None);
    }
    Ok(Some(Identity {
        ino: st.stx_ino,
        born: (st.stx_btime.tv_sec, st.stx_btime.tv_nsec),
    }))
}

/// Does the file write its blocks in place (btrfs `FS_NOCOW_FL`, chattr +C)? True when
/// it cannot tell.
pub fn is_nocow(fd: impl AsFd) -> bool {
    match rustix::fs::ioctl_getflags(fd) {
        Ok(flags) => flags.contains(rustix::fs::IFlags::NOCOW),
        Err(Errno::NOTTY | Errno::NOTSUP | Errno::INVAL) => false,
        Err(_) => true,
    }
}

/// Set atime and mtime of an open file to `(seconds, nanoseconds)`.
pub fn set_times(file: &File, mtime: (i64, i64)) -> io::Result<()> {
    let time = Timespec {
        tv_sec: mtime.0,
        tv_nsec: mtime.1 as _,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    Ok(rustix::fs::futimens(file, &times)?)
}

/// Clear O_NONBLOCK on an open file (set to keep a FIFO from blocking an open).
pub fn clear_nonblock(file: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
    Ok(())
}

/// Switch core dumps off for this process (the crash runner aborts hundreds of times).
pub fn disable_core_dumps() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let maximum = getrlimit(Resource::Core).maximum;
    let _ = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum,
        },
    );
}

/// The effective uid of this process: the owner the pool directories must have.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// (total bytes, used bytes) of the filesystem holding `dir`, from statvfs:
/// `f_frsize × f_blocks` and `f_frsize × (f_blocks − f_bfree)` (R§3.22).
pub fn statvfs_usage(dir: &Path) -> io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)?;
    let total = st.f_frsize.saturating_mul(st.f_blocks);
    let used = st
        .f_frsize
        .saturating_mul(st.f_blocks.saturating_sub(st.f_bfree));
    Ok((total, used))
}

/// One extent as FS_IOC_FIEMAP reports it (`struct fiemap_extent`, 56 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FiemapExtent {
    /// Byte offset of the extent in the file.
    pub fe_logical: u64,
    /// Byte offset of the extent on the device (btrfs: in its logical address space).
    pub fe_physical: u64,
    pub fe_length: u64,
    fe_reserved64: [u64; 2],
    /// `FIEMAP_EXTENT_*`.
    pub fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// `struct fiemap` without its flexible array of extents (32 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// How many extents one FIEMAP call asks for.
pub const FIEMAP_BATCH: usize = 256;

/// The header followed by room for [`FIEMAP_BATCH`] extents: what the kernel fills.
#[repr(C)]
struct FiemapRequest {
    header: FiemapHeader,
    extents: [FiemapExtent; FIEMAP_BATCH],
}

/// `FIEMAP_FLAG_SYNC`: write the file's dirty pages before mapping it.
const FIEMAP_FLAG_SYNC: u32 = 0x0000_0001;
/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)` from `<linux/fs.h>`.
const FS_IOC_FIEMAP: rustix::ioctl::Opcode =
    rustix::ioctl::opcode::read_write::<FiemapHeader>(b'f', 11);

/// The extents of `file` that end after byte `start`, at most [`FIEMAP_BATCH`] of
/// them, after writing the file's dirty pages (`FIEMAP_FLAG_SYNC`). `None` when the filesystem has no FIEMAP (EOPNOTSUPP,
/// ENOTTY). An empty result means no extent from `start` on.
pub fn fiemap(file: &File, start: u64) -> io::Result<Option<Vec<FiemapExtent>>> {
    let mut request = Box::new(FiemapRequest {
        header: FiemapHeader {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_extent_count: FIEMAP_BATCH as u32,
            ..FiemapHeader::default()
        },
        extents: [FiemapExtent::default(); FIEMAP_BATCH],
    });
    // SAFETY: FS_IOC_FIEMAP reads a `struct fiemap` and writes up to `fm_extent_count`
    // `struct fiemap_extent`s right after it. `FiemapRequest` is `#[repr(C)]`: the
    // 32-byte header laid out exactly as `struct fiemap`, followed by room for
    // FIEMAP_BATCH (= fm_extent_count) 56-byte extents, so the kernel never writes past
    // the boxed value, which outlives the call. The opcode encodes the header's size, as
    // `_IOWR('f', 11, struct fiemap)` does.
    let ioctl =
        unsafe { rustix::ioctl::Updater::<FS_IOC_FIEMAP, FiemapRequest>::new(&mut request) };
    // SAFETY: `ioctl` is a valid updater for this opcode (above) and `file` is an open
    // file descriptor borrowed for the duration of the call.
    match unsafe { rustix::ioctl::ioctl(file, ioctl) } {
        Ok(()) => {}
        Err(Errno::OPNOTSUPP | Errno::NOTTY) => return Ok(None),
        Err(errno) => return Err(errno.into()),
    }
    let mapped = (request.header.fm_mapped_extents as usize).min(FIEMAP_BATCH);
    Ok(Some(request.extents[..mapped].to_vec()))
}

/// `LOOP_SET_CAPACITY` = `_IO('L', 0x07)` from `<linux/loop.h>`.
const LOOP_SET_CAPACITY: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(b'L', 0x07);

/// LOOP_SET_CAPACITY on an open loop device: the kernel re-reads its backing file size.
pub fn loop_set_capacity(dev: &File) -> io::Result<()> {
    // SAFETY: LOOP_SET_CAPACITY takes no argument and neither reads nor writes user
    // memory; the kernel only re-reads the size of the device's backing file. On an fd
    // that is not a loop device the call fails with ENOTTY/EINVAL and has no effect.
    let request = unsafe { rustix::ioctl::NoArg::<LOOP_SET_CAPACITY>::new() };
    // SAFETY: `request` is a no-argument ioctl with a valid opcode (see above) and `dev`
    // is an open file descriptor borrowed for the duration of the call.
    unsafe { rustix::ioctl::ioctl(dev, request) }?;
    Ok(())
}

/// The signal a lease break would send the daemon (the default, SIGIO, terminates a
/// process): SIGWINCH, ignored by default.
const LEASE_BREAK_SIGNAL: libc::c_int = libc::SIGWINCH;
/// `F_SETSIG` from `<fcntl.h>` (`__F_SETSIG`, 10 on every Linux architecture); the
/// libc crate defines it for musl only.
const F_SETSIG: libc::c_int = 10;

/// Takes a lease of `kind` (`F_RDLCK`, `F_WRLCK`) on `file` and releases it at once:
/// `Ok(None)` when it was granted, `Ok(Some(errno))` when it was refused. Its break
/// would send SIGWINCH ([`LEASE_BREAK_SIGNAL`]), not the default SIGIO.
fn probe_lease(file: &File, kind: libc::c_int) -> io::Result<Option<i32>> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_SETSIG / F_SETLEASE takes an int argument and touches no
    // user memory; `fd` is open for the duration of the call (borrowed from `file`).
    // F_SETSIG only changes which signal this fd's lease breaks send.
    if unsafe { libc::fcntl(fd, F_SETSIG, LEASE_BREAK_SIGNAL) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, kind) } == -1 {
        let err = io::Error::last_os_error();
        return err.raw_os_error().map(Some).ok_or(err);
    }
    // SAFETY: as above; releasing a lease this fd holds.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(None)
}

/// Errnos of a lease that cannot be taken here at all (leases disabled, a filesystem
/// or a file that has none, not the file's owner).
fn leases_impossible(errno: i32) -> bool {
    matches!(
        errno,
        libc::EINVAL | libc::EPERM | libc::ENOLCK | libc::EACCES
    )
}

/// Is `file` the only open file description of its inode, in any process? A write lease
/// (`F_SETLEASE F_WRLCK`) is granted only then (`fcntl(2)`: no other open file
/// descriptor for the file, readers included — an exported fd, a loop device); it is
/// released at once: this is a probe, not a lock. `file` must be open read-write and
/// owned by the caller (or the caller has CAP_LEASE). `Ok(false)` when the lease is
/// refused (EAGAIN) or leases are not possible here (EINVAL, EPERM, ENOLCK, EACCES).
pub fn only_opener(file: &File) -> io::Result<bool> {
    match probe_lease(file, libc::F_WRLCK)? {
        None => Ok(true),
        Some(errno) if errno == libc::EAGAIN || leases_impossible(errno) => Ok(false),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Is `file`'s inode open for writing anywhere — a loop device attached read-write, a
/// process? A read lease (`F_SETLEASE F_RDLCK`) is granted only while nobody has the
/// file open for writing (`fcntl(2)`; readers do not count); it is released at once:
/// a probe, not a lock. `file` must be open read-only and owned by the caller (or the
/// caller has CAP_LEASE). `Ok(None)` when leases are not possible here (EINVAL,
/// EPERM, ENOLCK, EACCES: leases disabled, another kind of filesystem).
pub fn written_elsewhere(file: &File) -> io::Result<Option<bool>> {
    match probe_lease(file, libc::F_RDLCK)? {
        None => Ok(Some(false)),
        Some(libc::EAGAIN) => Ok(Some(true)),
        Some(errno) if leases_impossible(errno) => Ok(None),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Same file: equal device and inode numbers.
pub fn same_inode(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xfs_log_is_inside_unless_a_log_or_realtime_device_is_mounted() {
        let info = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 7:3 / /mnt/a rw,relatime shared:9 - xfs /dev/loop3 rw,attr2,inode64,logbufs=8,noquota
41 22 7:4 / /mnt/b rw,relatime shared:10 - xfs /dev/loop4 rw,attr2,logdev=/dev/loop9,noquota
42 22 7:5 / /mnt/c rw,relatime shared:11 - xfs /dev/loop5 rw,rtdev=/dev/loop8
43 22 7:6 / /mnt/d rw,relatime shared:12 - btrfs /dev/loop6 rw,ssd
";
        assert_eq!(xfs_log_inside(info, 7, 3), Some(true));
        assert_eq!(xfs_log_inside(info, 7, 4), Some(false));
        assert_eq!(xfs_log_inside(info, 7, 5), Some(false));
        assert_eq!(xfs_log_inside(info, 7, 6), None, "btrfs is not XFS");
        assert_eq!(xfs_log_inside(info, 254, 1), None, "ext4 is not XFS");
        assert_eq!(xfs_log_inside(info, 7, 30), None, "7:30 is not 7:3");
    }

    #[test]
    fn only_the_four_reference_errnos_make_ficlone_fall_back() {
        for errno in [Errno::BADF, Errno::INVAL, Errno::OPNOTSUPP, Errno::XDEV] {
            assert!(is_clone_fallback(errno), "{errno:?}");
        }
        for errno in [
            Errno::IO,
            Errno::NOSPC,
            Errno::DQUOT,
            Errno::PERM,
            Errno::ACCESS,
            Errno::TXTBSY,
            Errno::ISDIR,
            Errno::NOMEM,
            Errno::NOSYS,
        ] {
            assert!(!is_clone_fallback(errno), "{errno:?}");
        }
    }

    #[test]
    fn enotsup_is_the_same_errno_as_eopnotsupp_on_linux() {
        assert!(is_clone_fallback(Errno::NOTSUP));
    }

    #[test]
    fn copy_range_falls_back_only_for_pair_refusals() {
        for errno in [Errno::XDEV, Errno::INVAL, Errno::OPNOTSUPP, Errno::NOSYS] {
            assert!(is_copy_range_fallback(&errno.into()), "{errno:?}");
        }
        for errno in [Errno::IO, Errno::NOSPC, Errno::DQUOT, Errno::BADF] {
            assert!(!is_copy_range_fallback(&errno.into()), "{errno:?}");
        }
        assert!(!is_copy_range_fallback(&io::Error::other(
            "not an os error"
        )));
    }

    #[test]
    fn errno_names_are_symbolic() {
        assert_eq!(errno_name(Errno::OPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(Errno::XDEV), "EXDEV");
        assert_eq!(errno_name(Errno::from_raw_os_error(133)), "errno 133");
    }

    #[test]
    fn the_walk_without_openat2_refuses_symlinks_dotdot_and_absolute_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("link")).unwrap();
        let dir = open_dir_path(d.path()).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        assert!(open_walking(dir.as_fd(), "a/b", flags, Mode::empty()).is_ok());
        for bad in ["link/b", "link", "a/../a", "..", "", "/a", "a//b"] {
            assert!(
                open_walking(dir.as_fd(), bad, flags, Mode::empty()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn open_beneath_refuses_symlinks_anywhere_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("link")).unwrap();
        let dir = open_dir_path(&d.path().join("a")).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        assert!(open_beneath(dir.as_fd(), "b", flags, 0).is_ok());
        let root = open_dir_path(d.path()).unwrap();
        let err = open_beneath(root.as_fd(), "link/b", flags, 0).unwrap_err();
        assert_eq!(Errno::from_io_error(&err), Some(Errno::LOOP));
        let err = open_beneath(dir.as_fd(), "../a", flags, 0).unwrap_err();
        assert_eq!(Errno::from_io_error(&err), Some(Errno::XDEV));
    }

    #[test]
    fn fiemap_structs_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<FiemapHeader>(), 32);
        assert_eq!(std::mem::size_of::<FiemapExtent>(), 56);
        assert_eq!(std::mem::size_of::<FiemapRequest>(), 32 + 56 * FIEMAP_BATCH);
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn fs_ioc_fiemap_opcode_is_0xc020660b() {
        assert_eq!(FS_IOC_FIEMAP as u64, 0xC020_660B);
    }

    #[test]
    fn loop_set_capacity_opcode_is_0x4c07() {
        assert_eq!(LOOP_SET_CAPACITY as u64, 0x4C07);
    }
}
