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
//! `replace` the temp file is removed and the destination is untouched (the only
//! exception is a failing fsync of the directory *after* the rename: the new file is
//! then in place but its name may not be durable yet, and the error is returned).
//! Paths handed in are never followed through a final symlink (O_NOFOLLOW), and
//! directories are refused when they are symlinks.
//!
//! Temp files are `<final name>~<8 chars of [a-z0-9_]>` ([`temp_path`]), created with
//! O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, in the destination's directory; a panic inside
//! `fill` removes the temp as well (a guard's `Drop`).
//!
//! Log lines carry `op` = create|replace|rename|remove|mkdir|rmdir|hardlink|truncate
//! and the path(s).
//!
//! With the `failpoints` feature each primitive call, once it has fully completed
//! (fsyncs included), calls [`crate::failpoint::step`] exactly once with its name
//! (`replace`, `rename`, `remove`, `mkdir`, `rmdir`, `hardlink`, `truncate`) — also
//! when it had nothing to do (a missing file in `remove`, an existing directory in
//! `ensure_dir`) — so the crash tests can stop the process after step k. Opening and
//! fsyncing ([`open_read`], [`open_write`], [`fsync_file`]) are not steps.
//!
//! Every fsync names its site for [`crate::fsync_fault`]: with the test-only feature
//! `durability-faults` one chosen site can be skipped, to prove that the power-loss
//! replay notices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use rustix::fs::OFlags;
use tracing::{debug, info};

use crate::error::{EngineError, IoContext, Result};
use crate::failpoint;
use crate::fsync_fault;
use crate::layout::TEMP_RANDOM_LEN;
use crate::sys;

/// The alphabet of the random part of temp names (Python `tempfile`'s).
const TEMP_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
/// How many random names `replace_with` tries before giving up on EEXIST.
const TEMP_ATTEMPTS: usize = 16;
/// The mode of every image file.
const FILE_MODE: u32 = 0o600;

/// A fresh temp name next to `final_path`: `<final name>~<8 random chars of [a-z0-9_]>`.
pub fn temp_path(final_path: &Path) -> PathBuf {
    let mut rng = rand::rng();
    let random: String = (0..TEMP_RANDOM_LEN)
        .map(|_| TEMP_ALPHABET[rng.random_range(0..TEMP_ALPHABET.len())] as char)
        .collect();
    let mut name = final_path.as_os_str().to_owned();
    name.push("~");
    name.push(random);
    PathBuf::from(name)
}

/// The directory holding `path` ("." for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A temp file that is unlinked when dropped unless [`TempFile::disarm`]ed.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Create a fresh temp next to `dst` (O_EXCL, mode 0600, no symlink follow).
    fn create_next_to(dst: &Path) -> Result<(TempFile, File)> {
        let mut last_err = None;
        for _ in 0..TEMP_ATTEMPTS {
            let path = temp_path(dst);
            match create_exclusive(&path) {
                Ok(file) => return Ok((TempFile { path, armed: true }, file)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
                Err(err) => {
                    let what = format!("cannot create temp file {}", path.display());
                    return Err(EngineError::io(what, err));
                }
            }
        }
        let err = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(EngineError::io(
            format!("cannot create a temp file next to {}", dst.display()),
            err,
        ))
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            match std::fs::remove_file(&self.path) {
                Ok(()) => debug!(op = "remove", path = %self.path.display(), "removed temp file"),
                Err(err) => tracing::warn!(
                    op = "remove", path = %self.path.display(), error = %err,
                    "cannot remove temp file"
                ),
            }
        }
    }
}

fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

/// Atomically create or replace `dst`: `fill` writes the content of the fresh temp
/// file (opened read-write) next to it; then fchmod 0600, fsync, rename over `dst`,
/// fsync of the directory. The directory must exist.
pub fn replace_with<T>(dst: &Path, fill: impl FnOnce(&File) -> Result<T>) -> Result<T> {
    let (mut temp, file) = TempFile::create_next_to(dst)?;
    let value = fill(&file)?;
    let bytes = seal(&file, &temp.path)?;
    drop(file);
    let existed = dst.symlink_metadata().is_ok();
    std::fs::rename(&temp.path, dst)
        .io_ctx(|| format!("cannot rename {} to {}", temp.path.display(), dst.display()))?;
    temp.disarm();
    fsync_dir_ctx(parent_of(dst), "replace-dir")?;
    let op = if existed { "replace" } else { "create" };
    info!(op, path = %dst.display(), bytes, "file written and renamed into place");
    failpoint::step("replace");
    Ok(value)
}

/// fchmod 0600 and fsync a finished temp file; returns its size (for the log).
fn seal(file: &File, path: &Path) -> Result<u64> {
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .io_ctx(|| format!("cannot chmod {}", path.display()))?;
    sync_file(file, "replace-file", path)?;
    Ok(file
        .metadata()
        .io_ctx(|| format!("cannot stat {}", path.display()))?
        .len())
}

/// fsync `dir`; `site` names the call for [`fsync_fault`].
fn fsync_dir_ctx(dir: &Path, site: &str) -> Result<()> {
    if fsync_fault::skipped(site, dir) {
        return Ok(());
    }
    sys::fsync_dir(dir).io_ctx(|| format!("cannot fsync directory {}", dir.display()))
}

/// fsync an open file; `site` names the call for [`fsync_fault`].
fn sync_file(file: &File, site: &str, path: &Path) -> Result<()> {
    if fsync_fault::skipped(site, path) {
        return Ok(());
    }
    file.sync_all()
        .io_ctx(|| format!("cannot fsync {}", path.display()))
}

/// `replace_with` an empty sparse file of `size` bytes (0 blocks allocated).
pub fn create_sparse(path: &Path, size: u64) -> Result<()> {
    replace_with(path, |file| {
        file.set_len(size)
            .io_ctx(|| format!("cannot truncate {} to {size} bytes", path.display()))
    })
}

/// Durable rename within or across directories of one filesystem.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .io_ctx(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    let (from_dir, to_dir) = (parent_of(from), parent_of(to));
    fsync_dir_ctx(to_dir, "rename-dir")?;
    if from_dir != to_dir {
        fsync_dir_ctx(from_dir, "rename-source-dir")?;
    }
    info!(op = "rename", from = %from.display(), to = %to.display(), "renamed");
    failpoint::step("rename");
    Ok(())
}

/// Durable unlink; a missing file is not an error. Returns whether a file was removed.
pub fn remove(path: &Path) -> Result<bool> {
    let removed = match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => {
            return Err(EngineError::io(
                format!("cannot remove {}", path.display()),
                err,
            ))
        }
    };
    // Nothing unlinked, nothing to make durable: the directory fsync (milliseconds on
    // XFS right after a sync) is only paid for a real removal.
    if removed {
        fsync_dir_ctx(parent_of(path), "remove-dir")?;
        info!(op = "remove", path = %path.display(), "removed");
    } else {
        tracing::debug!(op = "remove", path = %path.display(), "already absent");
    }
    failpoint::step("remove");
    Ok(removed)
}

/// Single `mkdir` (never recursive) + fsync of the parent; fine if `dir` already is a
/// directory; an error if it is a symlink or anything else. Returns whether it was
/// created now.
pub fn ensure_dir(dir: &Path) -> Result<bool> {
    let created = match check_is_dir(dir)? {
        true => false,
        false => make_dir(dir)?,
    };
    info!(op = "mkdir", path = %dir.display(), created, "directory ensured");
    failpoint::step("mkdir");
    Ok(created)
}

/// lstat `dir`: Ok(true) if it is a real directory, Ok(false) if it does not exist,
/// InvalidArgument for a symlink or anything that is not a directory.
fn check_is_dir(dir: &Path) -> Result<bool> {
    match dir.symlink_metadata() {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(meta) if meta.file_type().is_symlink() => Err(EngineError::invalid(format!(
            "{} is not a directory (it is a symbolic link, which is never followed)",
            dir.display()
        ))),
        Ok(_) => Err(EngineError::invalid(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(EngineError::io(
            format!("cannot stat {}", dir.display()),
            err,
        )),
    }
}

/// mkdir (mode 0777 minus umask) + fsync(parent); losing a race to another mkdir is
/// fine as long as the winner made a directory.
fn make_dir(dir: &Path) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            fsync_dir_ctx(parent_of(dir), "mkdir-parent")?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && check_is_dir(dir)? => Ok(false),
        Err(err) => Err(EngineError::io(
            format!("cannot create directory {}", dir.display()),
            err,
        )),
    }
}

/// rmdir + fsync of the parent; ENOENT and ENOTEMPTY are not errors.
pub fn remove_dir_if_empty(dir: &Path) -> Result<()> {
    let removed = match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(err) if is_missing_or_not_empty(&err) => false,
        Err(err) => {
            return Err(EngineError::io(
                format!("cannot remove directory {}", dir.display()),
                err,
            ))
        }
    };
    if removed {
        fsync_dir_ctx(parent_of(dir), "rmdir-parent")?;
    }
    info!(op = "rmdir", path = %dir.display(), removed, "directory removed if empty");
    failpoint::step("rmdir");
    Ok(())
}

fn is_missing_or_not_empty(err: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(err),
        Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST)
    )
}

/// Durable hard link `dst` → inode of `src` (dst must not exist).
pub fn hardlink(src: &Path, dst: &Path) -> Result<()> {
    std::fs::hard_link(src, dst)
        .io_ctx(|| format!("cannot link {} to {}", dst.display(), src.display()))?;
    fsync_dir_ctx(parent_of(dst), "hardlink-dir")?;
    info!(op = "hardlink", from = %src.display(), to = %dst.display(), "hard link created");
    failpoint::step("hardlink");
    Ok(())
}

/// Open an existing file read-write (no symlink follow), ftruncate to `size`, fsync.
/// Used only for the dirty image of a started volume (R§3.15). ENOENT is reported as
/// an error of kind NotFound.
pub fn truncate_in_place(path: &Path, size: u64) -> Result<()> {
    let file = open_regular(path, OpenOptions::new().read(true).write(true))?;
    file.set_len(size)
        .io_ctx(|| format!("cannot truncate {} to {size} bytes", path.display()))?;
    sync_file(&file, "truncate-file", path)?;
    info!(op = "truncate", path = %path.display(), bytes = size, "truncated in place");
    failpoint::step("truncate");
    Ok(())
}

/// fsync an existing file's data (belt and braces before a commit).
pub fn fsync_file(path: &Path) -> Result<()> {
    let file = open_read(path)?;
    sync_file(&file, "commit-file", path)?;
    debug!(path = %path.display(), "fsynced");
    Ok(())
}

/// Open an existing regular file read-only without following a final symlink.
pub fn open_read(path: &Path) -> Result<File> {
    open_regular(path, OpenOptions::new().read(true))
}

/// Open an existing regular file write-only without following a final symlink.
pub fn open_write(path: &Path) -> Result<File> {
    open_regular(path, OpenOptions::new().write(true))
}

/// Open with O_NOFOLLOW|O_CLOEXEC and refuse anything but a regular file. O_NONBLOCK
/// keeps a FIFO from blocking the open; it is cleared again on the regular file.
fn open_regular(path: &Path, options: &mut OpenOptions) -> Result<File> {
    let flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let file = match options.custom_flags(flags.bits() as i32).open(path) {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(EngineError::invalid(format!(
                "{} is a symbolic link, which is never followed",
                path.display()
            )))
        }
        Err(err) => {
            return Err(refusal_of_non_regular(path).unwrap_or_else(|| {
                EngineError::io(format!("cannot open {}", path.display()), err)
            }))
        }
    };
    let file_type = file
        .metadata()
        .io_ctx(|| format!("cannot stat {}", path.display()))?
        .file_type();
    if !file_type.is_file() {
        return Err(not_regular(path, file_type));
    }
    clear_nonblock(&file).io_ctx(|| format!("cannot set the flags of {}", path.display()))?;
    Ok(file)
}

/// After a failed open (EISDIR for a directory opened for writing, ENXIO for a FIFO
/// without reader, …): the clear refusal if `path` is something other than a regular
/// file.
fn refusal_of_non_regular(path: &Path) -> Option<EngineError> {
    let file_type = path.symlink_metadata().ok()?.file_type();
    (!file_type.is_file() && !file_type.is_symlink()).then(|| not_regular(path, file_type))
}

fn not_regular(path: &Path, file_type: std::fs::FileType) -> EngineError {
    EngineError::invalid(format!(
        "{} is not a regular file (it is {})",
        path.display(),
        describe_file_type(file_type)
    ))
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::NONBLOCK)?;
    Ok(())
}

fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::io::{Read, Write};

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temp_path_is_final_name_tilde_and_eight_chars_of_the_alphabet() {
        let final_path = Path::new("/pool/appvms/work/private.img");
        for _ in 0..200 {
            let temp = temp_path(final_path);
            let name = temp.file_name().unwrap().to_str().unwrap();
            let (base, random) = name.rsplit_once('~').unwrap();
            assert_eq!(base, "private.img");
            assert_eq!(random.len(), TEMP_RANDOM_LEN);
            assert!(random.bytes().all(|b| TEMP_ALPHABET.contains(&b)), "{name}");
            assert_eq!(temp.parent(), final_path.parent());
        }
    }

    #[test]
    fn temp_names_are_recognised_by_the_layout() {
        let vid = crate::names::Vid::parse("appvms/work/private").unwrap();
        let paths = crate::layout::VolumePaths::new(Path::new("/pool"), &vid);
        let temp = temp_path(&paths.dirty());
        assert!(paths.is_own_temp(temp.file_name().unwrap().to_str().unwrap()));
    }

    #[test]
    fn temp_names_differ() {
        let a = temp_path(Path::new("x.img"));
        let b = temp_path(Path::new("x.img"));
        assert_ne!(a, b);
    }

    #[test]
    fn replace_with_writes_mode_0600_and_leaves_no_temp() {
        let d = dir();
        let dst = d.path().join("a.img");
        replace_with(&dst, |mut f| {
            f.write_all(b"hello").io_ctx(|| "write".into())
        })
        .unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"hello");
        assert_eq!(dst.metadata().unwrap().permissions().mode() & 0o7777, 0o600);
        assert_eq!(names_in(d.path()), ["a.img"]);
    }

    #[test]
    fn replace_with_error_removes_temp_and_keeps_dst() {
        let d = dir();
        let dst = d.path().join("a.img");
        std::fs::write(&dst, b"old").unwrap();
        let err = replace_with(&dst, |mut f| -> Result<()> {
            f.write_all(b"partial").unwrap();
            Err(EngineError::io(
                "cannot fill",
                io::Error::from_raw_os_error(28),
            ))
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSpace);
        assert_eq!(std::fs::read(&dst).unwrap(), b"old");
        assert_eq!(names_in(d.path()), ["a.img"]);
    }

    #[test]
    fn replace_with_panic_in_fill_removes_temp() {
        let d = dir();
        let dst = d.path().join("a.img");
        let result = std::panic::catch_unwind(|| {
            let _ = replace_with(&dst, |_| -> Result<()> { panic!("fill panicked") });
        });
        assert!(result.is_err());
        assert!(names_in(d.path()).is_empty());
    }

    #[test]
    fn replace_with_gives_a_new_inode() {
        use std::os::unix::fs::MetadataExt;
        let d = dir();
        let dst = d.path().join("a.img");
        std::fs::write(&dst, b"old").unwrap();
        let before = dst.metadata().unwrap().ino();
        let mut held = File::open(&dst).unwrap();
        replace_with(&dst, |mut f| f.write_all(b"new").io_ctx(|| "write".into())).unwrap();
        assert_ne!(dst.metadata().unwrap().ino(), before);
        let mut old = String::new();
        held.read_to_string(&mut old).unwrap();
        assert_eq!(old, "old");
    }

    #[test]
    fn create_sparse_allocates_nothing() {
        use std::os::unix::fs::MetadataExt;
        let d = dir();
        let path = d.path().join("s.img");
        create_sparse(&path, 111 << 20).unwrap();
        let meta = path.metadata().unwrap();
        assert_eq!(meta.len(), 111 << 20);
        assert_eq!(meta.blocks(), 0);
    }

    #[test]
    fn remove_reports_whether_a_file_was_there() {
        let d = dir();
        let path = d.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn ensure_dir_creates_once_and_refuses_symlinks_and_files() {
        let d = dir();
        let sub = d.path().join("sub");
        assert!(ensure_dir(&sub).unwrap());
        assert!(!ensure_dir(&sub).unwrap());
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&sub, &link).unwrap();
        let err = ensure_dir(&link).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let file = d.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(
            ensure_dir(&file).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn ensure_dir_is_not_recursive() {
        let d = dir();
        let err = ensure_dir(&d.path().join("a/b")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn remove_dir_if_empty_ignores_missing_and_non_empty() {
        let d = dir();
        let sub = d.path().join("sub");
        remove_dir_if_empty(&sub).unwrap();
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), b"").unwrap();
        remove_dir_if_empty(&sub).unwrap();
        assert!(sub.is_dir());
        std::fs::remove_file(sub.join("f")).unwrap();
        remove_dir_if_empty(&sub).unwrap();
        assert!(!sub.exists());
    }

    #[test]
    fn hardlink_shares_the_inode_and_refuses_an_existing_dst() {
        use std::os::unix::fs::MetadataExt;
        let d = dir();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        hardlink(&a, &b).unwrap();
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
        assert_eq!(hardlink(&a, &b).unwrap_err().kind(), ErrorKind::Failed);
    }

    #[test]
    fn rename_across_directories_moves_the_file() {
        let d = dir();
        std::fs::create_dir(d.path().join("x")).unwrap();
        let (from, to) = (d.path().join("a"), d.path().join("x/b"));
        std::fs::write(&from, b"x").unwrap();
        rename(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"x");
    }

    #[test]
    fn truncate_in_place_keeps_the_inode_and_reports_missing_as_not_found() {
        use std::os::unix::fs::MetadataExt;
        let d = dir();
        let path = d.path().join("dirty.img");
        std::fs::write(&path, b"abc").unwrap();
        let ino = path.metadata().unwrap().ino();
        truncate_in_place(&path, 1 << 20).unwrap();
        let meta = path.metadata().unwrap();
        assert_eq!((meta.len(), meta.ino()), (1 << 20, ino));
        let err = truncate_in_place(&d.path().join("missing"), 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn opens_refuse_symlinks_directories_and_fifos() {
        let d = dir();
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for path in [&link, &fifo, &d.path().to_path_buf()] {
            let err = open_read(path).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidArgument,
                "{}: {err}",
                path.display()
            );
        }
        assert_eq!(
            open_write(&link).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            open_write(&fifo).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let f = open_read(&file).unwrap();
        let flags = rustix::fs::fcntl_getfl(&f).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
    }
}
