//! The one module that owns raw syscalls: FICLONE, copy_file_range, SEEK_DATA /
//! SEEK_HOLE, fsync of directories, statvfs, LOOP_SET_CAPACITY and the directory-fd
//! reads of the live views (open a directory without following a symlink, list it,
//! lstat relative to it), plus the classification of FICLONE and copy_file_range
//! errnos into "fall back" and "fail".
//!
//! rustix is used (not nix) because it has safe wrappers for FICLONE
//! (`rustix::fs::ioctl_ficlone`), `copy_file_range`, `SEEK_DATA`/`SEEK_HOLE` and
//! `statvfs`; the ioctl number comes from the platform's headers through rustix/libc
//! (deliberate fix 5), never from a per-architecture table. The only `unsafe` is the
//! LOOP_SET_CAPACITY ioctl, which has no wrapper anywhere; its opcode is computed with
//! `rustix::ioctl::opcode::none(b'L', 7)` (`_IO('L', 7)` = 0x4C07 on every
//! architecture).
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
//!   EXDEV, EINVAL, EOPNOTSUPP and ENOSYS from it mean "use pread/pwrite instead"
//!   ([`is_copy_range_fallback`]).
//! * `lseek(SEEK_DATA)` past the last data byte fails with ENXIO; a filesystem without
//!   SEEK_DATA support fails with EINVAL, and then the whole file counts as data.
//!   SEEK_DATA/SEEK_HOLE move the file offset: [`data_ranges`] restores it.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;

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

/// fsync a directory (makes a rename, link, unlink or mkdir in it durable).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty())?;
    rustix::fs::fsync(&fd)?;
    Ok(())
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

/// What the live views need of a file: its size, its allocated bytes, its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    /// `st_blocks × 512`.
    pub allocated: u64,
    pub dev: u64,
    pub ino: u64,
}

impl FileStat {
    pub fn same_file(&self, other: &FileStat) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

fn file_stat(st: &rustix::fs::Stat) -> FileStat {
    FileStat {
        size: st.st_size as u64,
        allocated: st.st_blocks as u64 * 512,
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

/// A directory opened for reading and `*at` calls, never through a symlink (the last
/// component; ELOOP/ENOTDIR otherwise).
pub fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

/// [`open_dir`] of `name` inside the open directory `dir`.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// An open directory whose names were read; files in it are stat'ed relative to it.
pub struct ListedDir(rustix::fs::Dir);

impl ListedDir {
    /// lstat of `name` in this directory.
    pub fn lstat(&self, name: &str) -> io::Result<FileStat> {
        lstat_at(self.0.fd()?, name)
    }
}

/// The names in an open directory (without `.` and `..`; names that are not UTF-8 are
/// left out: no file of a volume has one).
pub fn list_dir(dir: OwnedFd) -> io::Result<(ListedDir, Vec<String>)> {
    let mut list = rustix::fs::Dir::new(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = list.read() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    Ok((ListedDir(list), names))
}

/// lstat of `path`, without following a final symlink.
pub fn lstat(path: &Path) -> io::Result<FileStat> {
    Ok(file_stat(&rustix::fs::lstat(path)?))
}

/// lstat of `name` (a path relative to `dir`), without following a final symlink.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<FileStat> {
    let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(file_stat(&st))
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
    fn loop_set_capacity_opcode_is_0x4c07() {
        assert_eq!(LOOP_SET_CAPACITY as u64, 0x4C07);
    }
}
