//! An open directory through which every file operation on a pool goes, so that names
//! from callers cannot leave the pool and no symlink is ever followed, by construction
//! rather than by a check before each use (which a writer of the directory could race):
//!
//! * the pool directory is opened once per operation by its configured path, walked
//!   from `/` through descriptors, every directory on it root's or the service's
//!   (`pool::open_root`), and must be private to the service ([`Dir::check_private`]);
//! * everything below it is reached with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!   relative to that fd ([`Dir::open_subdir`], [`Dir::open_file`]): a class or VM
//!   directory that is a symlink is refused (ELOOP), whatever happens to it later;
//! * files are then named by a single component relative to their directory's fd, and
//!   every syscall on them is an `*at` call that acts on the entry itself
//!   (`fstatat(AT_SYMLINK_NOFOLLOW)`, `renameat`, `unlinkat`, `linkat`), see
//!   [`crate::durable`];
//! * a file that is read, written, renamed or handed out must be a regular file: opens
//!   check it on the fd they return ([`Dir::open_file`]), renames and links check the
//!   entry first.
//!
//! The path a `Dir` carries is for log lines and messages only; it is never used to
//! reach a file.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::error::{EngineError, IoContext, Result};
use crate::sys::{self, FileType, OFlags, Stat};

/// The mode of directories the engine creates (the umask may remove more).
pub const DIR_MODE: u32 = 0o755;

/// An open directory and the path it was reached by (for messages).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// How [`Dir::open_file`] opens a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    fn flags(self) -> OFlags {
        match self {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::WRONLY,
            Access::ReadWrite => OFlags::RDWR,
        }
    }
}

/// What a directory entry is, from `fstatat(AT_SYMLINK_NOFOLLOW)`.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub stat: Stat,
}

impl Entry {
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
    pub fn size(&self) -> u64 {
        self.stat.st_size as u64
    }
    /// Allocated bytes (`st_blocks × 512`).
    pub fn allocated(&self) -> u64 {
        self.stat.st_blocks as u64 * 512
    }
    /// `(seconds, nanoseconds)` of the last modification.
    pub fn mtime(&self) -> (i64, i64) {
        (self.stat.st_mtime, self.stat.st_mtime_nsec as i64)
    }
    /// How many names the inode has (hard links).
    #[allow(clippy::useless_conversion)] // nlink_t is u32 on some architectures
    pub fn links(&self) -> u64 {
        u64::from(self.stat.st_nlink)
    }
    /// The same inode as `other`.
    pub fn same_inode(&self, other: &Entry) -> bool {
        (self.stat.st_dev, self.stat.st_ino) == (other.stat.st_dev, other.stat.st_ino)
    }
}

/// "a FIFO", "a directory", … for messages.
pub fn describe(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "not a regular file",
    }
}

/// Is a directory with this owner and mode private to a service running as `euid`:
/// owned by it and writable by neither group nor others?
pub fn is_private(owner: u32, mode: u32, euid: u32) -> bool {
    owner == euid && mode & 0o022 == 0
}

impl Dir {
    /// Open the directory a configured absolute path names (following symlinks in it).
    pub fn open_path(path: &Path) -> Result<Dir> {
        let fd = sys::open_dir_path(path).map_err(|err| Dir::open_error(path, err))?;
        Ok(Dir::from_fd(fd, path))
    }

    /// The directory `fd`, opened at `path`.
    pub fn from_fd(fd: OwnedFd, path: &Path) -> Dir {
        Dir {
            fd,
            path: path.to_owned(),
        }
    }

    /// Why the directory `path` could not be opened.
    pub fn open_error(path: &Path, err: io::Error) -> EngineError {
        match Errno::from_io_error(&err) {
            Some(Errno::NOTDIR) => {
                EngineError::invalid(format!("{} is not a directory", path.display()))
            }
            _ => EngineError::io(format!("cannot open the directory {}", path.display()), err),
        }
    }

    /// The directory holding `path` and `path`'s last component, which must be a plain
    /// name (for the state directory's files).
    pub fn open_parent_of(path: &Path) -> Result<(Dir, String)> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| EngineError::invalid(format!("{} has no file name", path.display())))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok((Dir::open_path(parent)?, name.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of entry `name`, for messages and log lines.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Open the directory `rel` (`vm` or `appvms/vm`) beneath this one without following
    /// any symlink; `None` if it does not exist. A symlink or a non-directory anywhere in
    /// `rel` is `InvalidArgument`.
    pub fn open_subdir(&self, rel: &str) -> Result<Option<Dir>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        let path = self.path.join(rel);
        match sys::open_beneath(self.fd(), rel, flags, 0) {
            Ok(fd) => Ok(Some(Dir { fd, path })),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(refusal(&path, "a directory", err)),
        }
    }

    /// Refuse a directory that is not owned by the service's euid or that its group or
    /// others may write: whoever can write it could swap the entries the service uses.
    pub fn check_private(&self) -> Result<()> {
        let stat =
            sys::stat_fd(&self.fd).io_ctx(|| format!("cannot stat {}", self.path.display()))?;
        let euid = sys::effective_uid();
        if is_private(stat.st_uid, stat.st_mode, euid) {
            return Ok(());
        }
        Err(EngineError::invalid(format!(
            "{} must be owned by uid {euid} (the service) and not writable by group or others (it is owned by uid {} with mode {:o})",
            self.path.display(),
            stat.st_uid,
            stat.st_mode & 0o7777
        )))
    }

    /// The entry `name` itself (a symlink is not followed); `None` if it does not exist.
    pub fn entry(&self, name: &str) -> Result<Option<Entry>> {
        match sys::stat_at(self.fd(), name) {
            Ok(stat) => Ok(Some(Entry { stat })),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(EngineError::io(
                format!("cannot stat {}", self.join(name).display()),
                err,
            )),
        }
    }

    /// Does the entry `name` exist (whatever it is)?
    pub fn exists(&self, name: &str) -> bool {
        matches!(self.entry(name), Ok(Some(_)))
    }

    /// The entry `name`, which must be a regular file: `NotFound` if missing,
    /// `InvalidArgument` naming what it is otherwise.
    pub fn regular_entry(&self, name: &str) -> Result<Entry> {
        match self.entry(name)? {
            Some(entry) if entry.is_file() => Ok(entry),
            Some(entry) => Err(not_regular(&self.join(name), entry.file_type())),
            None => Err(EngineError::not_found(format!(
                "{} does not exist",
                self.join(name).display()
            ))),
        }
    }

    /// Open the regular file `name` without following a symlink. O_NONBLOCK keeps a
    /// FIFO from blocking the open; the fd is then checked to be a regular file and the
    /// flag cleared. A missing file is `NotFound`, anything but a regular file
    /// `InvalidArgument`.
    pub fn open_file(&self, name: &str, access: Access) -> Result<File> {
        let path = self.join(name);
        let flags = access.flags() | OFlags::NONBLOCK;
        let fd =
            sys::open_beneath(self.fd(), name, flags, 0).map_err(|err| match self.entry(name) {
                Ok(Some(entry)) if !entry.is_file() => not_regular(&path, entry.file_type()),
                _ => refusal(&path, "a regular file", err),
            })?;
        let file = File::from(fd);
        let stat = sys::stat_fd(&file).io_ctx(|| format!("cannot stat {}", path.display()))?;
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if file_type != FileType::RegularFile {
            return Err(not_regular(&path, file_type));
        }
        sys::clear_nonblock(&file)
            .io_ctx(|| format!("cannot set the flags of {}", path.display()))?;
        Ok(file)
    }

    /// The names in this directory.
    pub fn names(&self) -> Result<Vec<String>> {
        let names = sys::read_dir_names(self.fd())
            .io_ctx(|| format!("cannot list {}", self.path.display()))?;
        Ok(names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect())
    }

    /// fsync the directory (makes a rename, link, unlink or mkdir in it durable); a
    /// [`barrier`](crate::barrier), shared with others on a crowded filesystem.
    pub fn sync(&self) -> Result<()> {
        crate::barrier::sync(self.fd(), crate::barrier::Kind::Dir)
            .io_ctx(|| format!("cannot fsync directory {}", self.path.display()))
    }

    /// Another handle on the same open directory (a dup of its fd), for work done
    /// after the operation that opened it (reaping a discarded file).
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .io_ctx(|| format!("cannot duplicate the handle of {}", self.path.display()))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }
}

/// The message for an entry that is not a regular file.
pub fn not_regular(path: &Path, file_type: FileType) -> EngineError {
    EngineError::invalid(format!(
        "{} is not a regular file (it is {}); refusing to use it",
        path.display(),
        describe(file_type)
    ))
}

/// A failed lookup beneath a directory: a symlink (ELOOP) or an escape (EXDEV) is
/// `InvalidArgument`, so is something else where `expected` should be (ENOTDIR); other
/// errors keep their kind.
fn refusal(path: &Path, expected: &str, err: io::Error) -> EngineError {
    match Errno::from_io_error(&err) {
        Some(Errno::LOOP) => EngineError::invalid(format!(
            "{} is or passes through a symbolic link, which is never followed; refusing to use it",
            path.display()
        )),
        Some(Errno::XDEV) => {
            EngineError::invalid(format!("{} is outside its pool directory", path.display()))
        }
        Some(Errno::NOTDIR) | Some(Errno::ISDIR) | Some(Errno::NXIO) => EngineError::invalid(
            format!("{} is not {expected}; refusing to use it", path.display()),
        ),
        _ => EngineError::io(format!("cannot open {}", path.display()), err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn temp() -> (tempfile::TempDir, Dir) {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::open_path(d.path()).unwrap();
        (d, dir)
    }

    #[test]
    fn private_means_owned_by_the_service_and_not_group_or_other_writable() {
        assert!(is_private(0, 0o40755, 0));
        assert!(is_private(1000, 0o40700, 1000));
        assert!(!is_private(1000, 0o40755, 0), "owned by someone else");
        assert!(!is_private(0, 0o40775, 0), "group-writable");
        assert!(!is_private(0, 0o40757, 0), "world-writable");
        assert!(!is_private(0, 0o41777, 0), "sticky does not help");
    }

    #[test]
    fn subdirectories_through_a_symlink_are_refused() {
        let (d, dir) = temp();
        std::fs::create_dir_all(d.path().join("real/vm")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        assert!(dir.open_subdir("real/vm").unwrap().is_some());
        assert!(dir.open_subdir("real/missing").unwrap().is_none());
        for rel in ["link", "link/vm"] {
            let err = dir.open_subdir(rel).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{rel}: {err}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
    }

    #[test]
    fn lookups_cannot_leave_the_directory() {
        let (d, _) = temp();
        std::fs::create_dir(d.path().join("inner")).unwrap();
        let inner = Dir::open_path(&d.path().join("inner")).unwrap();
        let err = inner.open_subdir("..").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }

    #[test]
    fn open_file_refuses_symlinks_fifos_and_directories() {
        let (d, dir) = temp();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("f"), d.path().join("link")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let fifo = std::ffi::CString::new(d.path().join("fifo").to_str().unwrap()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo.as_c_str(),
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for (name, access) in [
            ("link", Access::Read),
            ("fifo", Access::Read),
            ("fifo", Access::Write),
            ("sub", Access::Read),
            ("sub", Access::Write),
        ] {
            let err = dir.open_file(name, access).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
        }
        assert_eq!(
            dir.open_file("missing", Access::Read).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let f = dir.open_file("f", Access::Read).unwrap();
        let mode = rustix::fs::fcntl_getfl(&f).unwrap() & OFlags::RWMODE;
        assert_eq!(mode, OFlags::RDONLY);
        assert!(!rustix::fs::fcntl_getfl(&f)
            .unwrap()
            .contains(OFlags::NONBLOCK));
    }

    #[test]
    fn entries_are_the_names_themselves() {
        let (d, dir) = temp();
        std::os::unix::fs::symlink("/", d.path().join("link")).unwrap();
        let entry = dir.entry("link").unwrap().unwrap();
        assert_eq!(entry.file_type(), FileType::Symlink);
        assert!(dir.entry("missing").unwrap().is_none());
        let err = dir.regular_entry("link").unwrap_err();
        assert!(err.to_string().contains("a symbolic link"), "{err}");
    }
}
