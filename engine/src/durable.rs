//! The durability primitives of R§5.1; every mutation of a pool directory goes through
//! one of them, and each logs what it did at info level so `journalctl -u` tells the
//! story of a volume:
//!
//! | primitive        | sequence                                                          |
//! |------------------|-------------------------------------------------------------------|
//! | replace          | temp `<dst>~XXXXXXXX` → fill → fchmod 0600 → fsync¹ → rename → fsync(dir) |
//! | stage            | temp → fill → fchmod 0600 → fsync¹; placed later by a [`DirChanges`] |
//! | rename           | check regular → rename → fsync(dst dir) → fsync(src dir) if different |
//! | remove           | unlink (ENOENT ok) → fsync(dir)                                   |
//! | mkdir            | mkdir (mode 0755 minus the umask) → fsync(parent)                 |
//! | rmdir            | rmdir → fsync(parent)                                             |
//! | hardlink         | check regular → link → fsync(dir)                                 |
//! | in-place truncate| ftruncate → fsync(file)                                           |
//! | [`DirChanges`]   | links, renames, placed stages, discards, unlinks in one directory → **one** fsync(dir) |
//!
//! ¹ On XFS a written-back wait instead, and nothing for a reflink's or a size's
//! staging: the log force that makes the name durable commits the content with it
//! ([`Content`], docs/durability.md rule 1).
//!
//! Invariant: a file under a final name is always complete — except the running image
//! of a snapshot or volatile volume, staged as [`Content::Disposable`] without an
//! fsync: a power cut may leave it missing, torn or whole, and nothing uses it after
//! one (docs/durability.md rule 9). On any error inside
//! `replace` the temp file is removed and the destination is untouched (the only
//! exception is a failing fsync of the directory *after* the rename: the new file is
//! then in place but its name may not be durable yet, and the error is returned).
//!
//! **One directory fsync per operation.** An operation's name changes in one VM
//! directory — a revision linked to the committed image, pruned revisions and an old
//! precache discarded, the new image renamed into place — are made in the order a
//! crash may cut them at any point (every prefix is a state the volume may be in: see
//! `docs/durability.md`) and made durable together by one fsync of the directory
//! ([`DirChanges::commit`], fsync site `changes-dir`). A file's *content* is made
//! durable before any name points to it can be: by the staged temp's fsync, or the
//! commit's fsync of the running image — on btrfs and ext4 never by the directory's
//! fsync; on XFS by the same log force as the name, once its writes completed.
//!
//! **Discarded, not deleted.** A file taken out of the committed state (a pruned
//! revision, a precache that no longer matches, a stopped snapshot's image) is renamed
//! to `<name>~reap-XXXXXXXX` in the same batch ([`DirChanges::discard`]); the unlink —
//! hundreds of milliseconds for a large cached image — is left to the engine's
//! [`Background`] worker, and to the start-up sweep after a crash.
//!
//! Every primitive works on a file name relative to an open [`Dir`] (the `*_at`
//! functions): names never travel through a symlink, and renames and links refuse a
//! source that is not a regular file (Start with snapshots disabled must never make a
//! FIFO or a directory the VM's image). [`replace_with`], [`remove`],
//! [`sync_dir_path`] and [`sync_data`] (the journal's fdatasync) are for the state
//! directory only.
//!
//! Temp files are `<final name>~<8 chars of [a-z0-9_]>` ([`temp_name`]), created with
//! O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, in the destination's directory; a panic inside
//! `fill` removes the temp as well (a guard's `Drop`).
//!
//! Log lines carry `op` = create|replace|rename|remove|mkdir|rmdir|hardlink|truncate|
//! discard and the path(s).
//!
//! With the `failpoints` feature each primitive call, once it has fully completed
//! (fsyncs included), calls [`crate::failpoint::step`] exactly once with its name
//! (`replace`, `rename`, `remove`, `mkdir`, `rmdir`, `hardlink`, `truncate`) — also
//! when it had nothing to do (a missing file in `remove`, an existing directory in
//! `ensure_dir_at`) — so the crash tests can stop the process after step k. Each change
//! of a [`DirChanges`] is a step of its own once made (`hardlink`, `rename`, `replace`,
//! `discard`, `remove`); its commit is not. Opening and fsyncing ([`prepare_commit_at`]) are not
//! steps.
//!
//! Every fsync names its site for [`crate::fsync_fault`] (a state file's replace names
//! its own, [`ReplaceSites`]): with the test-only feature `durability-faults` one
//! chosen site can be skipped, to prove that the power-loss replay notices. Every
//! fsync is a [`crate::barrier`]: counted, and shared with others on a crowded
//! filesystem.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::Rng;
use rustix::io::Errno;
use tracing::{debug, info};

use crate::background::{self, Background};
use crate::barrier::{self, Kind};
use crate::dir::{Access, Dir, DIR_MODE};
use crate::error::{EngineError, IoContext, Result};
use crate::failpoint;
use crate::fsync_fault;
use crate::layout::{REAP_MARK, TEMP_RANDOM_LEN};
use crate::sys::{self, OFlags};

/// The alphabet of the random part of temp names (Python `tempfile`'s).
const TEMP_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
/// How many random names `replace_at` tries before giving up on EEXIST.
const TEMP_ATTEMPTS: usize = 16;
/// The mode of every image file.
const FILE_MODE: u32 = 0o600;

/// A fresh temp name for `final_name`: `<final name>~<8 random chars of [a-z0-9_]>`.
pub fn temp_name(final_name: &str) -> String {
    format!("{final_name}~{}", random_part())
}

/// A fresh discarded name for `name`: `<final name>~reap-<8 random chars>`, where the
/// final name of a temp (`<final name>~<8 chars>`) is the one it was made for — a name
/// the start-up sweep recognises should the deletion not happen.
pub fn discard_name(name: &str) -> String {
    let final_name = temp_base(name).unwrap_or(name);
    format!("{final_name}{REAP_MARK}{}", random_part())
}

/// The final name a temp name (`<final name>~<8 chars>`) was made for.
fn temp_base(name: &str) -> Option<&str> {
    match name.rsplit_once('~') {
        Some((base, random))
            if random.len() == TEMP_RANDOM_LEN
                && random.bytes().all(|b| TEMP_ALPHABET.contains(&b)) =>
        {
            Some(base)
        }
        _ => None,
    }
}

/// A discarded file a failed batch never gives back: a cache (the precache: another
/// one is made, and one given back while a VM writes the committed image in place could
/// be taken for it, durability rule 8) or garbage (an import file, a temp).
fn is_cache_or_garbage(name: &str) -> bool {
    name.ends_with("-precache.img") || name.ends_with("-import.img") || temp_base(name).is_some()
}

fn random_part() -> String {
    let mut rng = rand::rng();
    (0..TEMP_RANDOM_LEN)
        .map(|_| TEMP_ALPHABET[rng.random_range(0..TEMP_ALPHABET.len())] as char)
        .collect()
}

/// A temp file that is unlinked when dropped unless [`TempFile::disarm`]ed.
struct TempFile<'a> {
    dir: &'a Dir,
    name: String,
    armed: bool,
}

impl<'a> TempFile<'a> {
    /// Create a fresh temp next to `dst` (O_EXCL, mode 0600, no symlink follow).
    fn create_next_to(dir: &'a Dir, dst: &str) -> Result<(TempFile<'a>, File)> {
        let mut last_err = None;
        for _ in 0..TEMP_ATTEMPTS {
            let name = temp_name(dst);
            match create_exclusive(dir, &name) {
                Ok(file) => {
                    return Ok((
                        TempFile {
                            dir,
                            name,
                            armed: true,
                        },
                        file,
                    ))
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
                Err(err) => {
                    let what = format!("cannot create temp file {}", dir.join(&name).display());
                    return Err(EngineError::io(what, err));
                }
            }
        }
        let err = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(EngineError::io(
            format!(
                "cannot create a temp file next to {}",
                dir.join(dst).display()
            ),
            err,
        ))
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            let path = self.dir.join(&self.name);
            match sys::unlink_at(self.dir.fd(), &self.name) {
                Ok(()) => debug!(op = "remove", path = %path.display(), "removed temp file"),
                Err(err) => tracing::warn!(
                    op = "remove", path = %path.display(), error = %err,
                    "cannot remove temp file"
                ),
            }
        }
    }
}

fn create_exclusive(dir: &Dir, name: &str) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
    sys::open_beneath(dir.fd(), name, flags, FILE_MODE).map(File::from)
}

/// The [`fsync_fault`] sites of one replace: the fsync of the filled temp file, then
/// that of its directory after the rename.
#[derive(Debug, Clone, Copy)]
pub struct ReplaceSites {
    pub file: &'static str,
    pub dir: &'static str,
}

/// The sites of a pool file's replace ([`replace_at`]).
pub const POOL_FILE: ReplaceSites = ReplaceSites {
    file: "replace-file",
    dir: "replace-dir",
};

/// Atomically create or replace `dir/dst`: `fill` writes the content of the fresh temp
/// file (opened read-write) next to it; then fchmod 0600, fsync, rename over `dst`,
/// fsync of the directory.
pub fn replace_at<T>(dir: &Dir, dst: &str, fill: impl FnOnce(&File) -> Result<T>) -> Result<T> {
    replace_in(dir, dst, POOL_FILE, |file| Ok((fill(file)?, Content::Data)))
}

fn replace_in<T>(
    dir: &Dir,
    dst: &str,
    sites: ReplaceSites,
    fill: impl FnOnce(&File) -> Result<(T, Content)>,
) -> Result<T> {
    let (staged, value) = stage_in(dir, dst, sites.file, fill)?;
    let existed = dir.exists(dst);
    let bytes = staged.bytes;
    staged.rename_into_place()?;
    sync_dir(dir, sites.dir)?;
    let op = if existed { "replace" } else { "create" };
    info!(op, path = %dir.join(dst).display(), bytes, "file written and renamed into place");
    failpoint::step("replace");
    Ok(value)
}

/// A temp file next to its final name whose content is complete and durable (filled,
/// fchmod 0600, fsynced — on XFS written back, durable with any log force that makes a
/// name of it durable) but that has no final name yet: [`DirChanges::place`] renames
/// it into place with the operation's other changes. Dropped unplaced, it is removed.
pub struct Staged<'a> {
    temp: TempFile<'a>,
    dst: String,
    bytes: u64,
}

impl Staged<'_> {
    /// The final name it is meant for.
    pub fn dst(&self) -> &str {
        &self.dst
    }

    /// The temp name it has now.
    pub fn temp_name(&self) -> &str {
        &self.temp.name
    }

    /// Rename over `dst` for good, with no fsync of the directory: for a cache (the
    /// precache), whose content is durable but whose name need not survive a crash.
    /// Not a failpoint step (it is also done after replies).
    pub fn place_unsynced(self) -> Result<()> {
        let path = self.temp.dir.join(&self.dst);
        let bytes = self.bytes;
        self.rename_into_place()?;
        info!(op = "create", path = %path.display(), bytes, "cache file written and renamed into place");
        Ok(())
    }

    /// Rename over `dst` (not yet durable: the caller fsyncs the directory).
    fn rename_into_place(mut self) -> Result<()> {
        let dir = self.temp.dir;
        sys::rename_at(dir.fd(), &self.temp.name, dir.fd(), &self.dst).io_ctx(|| {
            format!(
                "cannot rename {} to {}",
                dir.join(&self.temp.name).display(),
                dir.join(&self.dst).display()
            )
        })?;
        self.temp.disarm();
        Ok(())
    }
}

/// What a staged file's content is made of, which decides what makes it durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Bytes written into the file: its own fsync makes them durable (on XFS, its
    /// writeback waited for, then the log force of its name).
    Data,
    /// Metadata only — extents shared by a reflink, a size: on XFS, whose journal is
    /// one ordered log, the directory's fsync after the rename makes them durable
    /// together with the name, so the temp needs no fsync of its own. (Not on btrfs,
    /// whose directory fsync logs a new name's inode without its extents, nor on
    /// ext2/3/4, which share one magic number with ext2's lack of a journal.)
    Metadata,
    /// Nothing that must survive a power cut: a running image that no start after a
    /// crash uses (a snapshot's or a volatile volume's, R§3.7 B). No fsync; marked with
    /// the boot that made it ([`crate::running::MADE_IN_BOOT`]).
    Disposable,
}

/// Fill a fresh temp next to `dst` in `dir` and make its content durable, without
/// giving it its final name (see [`Staged`]); fsync site `replace-file`.
pub fn stage_at<'a, T>(
    dir: &'a Dir,
    dst: &str,
    fill: impl FnOnce(&File) -> Result<T>,
) -> Result<(Staged<'a>, T)> {
    stage_content_at(dir, dst, |file| Ok((fill(file)?, Content::Data)))
}

/// [`stage_at`] where `fill` says what the content is made of ([`Content`]).
pub fn stage_content_at<'a, T>(
    dir: &'a Dir,
    dst: &str,
    fill: impl FnOnce(&File) -> Result<(T, Content)>,
) -> Result<(Staged<'a>, T)> {
    stage_in(dir, dst, POOL_FILE.file, fill)
}

fn stage_in<'a, T>(
    dir: &'a Dir,
    dst: &str,
    site: &'static str,
    fill: impl FnOnce(&File) -> Result<(T, Content)>,
) -> Result<(Staged<'a>, T)> {
    let (temp, file) = TempFile::create_next_to(dir, dst)?;
    let (value, content) = fill(&file)?;
    let path = dir.join(&temp.name);
    let bytes = match content {
        Content::Metadata if sys::is_xfs(dir.fd()) => {
            debug!(path = %path.display(), "metadata only, on XFS: durable with the directory's fsync");
            chmod_and_size(&file, &path)?
        }
        Content::Disposable => {
            crate::running::mark_this_boot(&file, &path);
            chmod_and_size(&file, &path)?
        }
        Content::Data | Content::Metadata => seal(&file, &path, site)?,
    };
    let staged = Staged {
        temp,
        dst: dst.to_owned(),
        bytes,
    };
    Ok((staged, value))
}

/// Stage a new name of the committed image `src` of `src_dir` next to `dst` in `dir`:
/// a hard link, for a clone of an image that is never written in place
/// (docs/durability.md rule 3: its content is already durable, and the link becomes
/// durable with the directory's fsync of the batch that places it). `None` — and
/// nothing left behind — when no link can be made here (another filesystem or btrfs
/// subvolume, a link limit, no permission) or when `src` is no longer the inode
/// `expected` (the file the caller opened): the caller then copies from its descriptor.
pub fn stage_link_at<'a>(
    src_dir: &Dir,
    src: &str,
    dir: &'a Dir,
    dst: &str,
    expected: &std::fs::Metadata,
) -> Result<Option<Staged<'a>>> {
    use std::os::unix::fs::MetadataExt;
    let src_path = src_dir.join(src);
    let mut attempt = 0;
    let (name, path, linked) = loop {
        let name = temp_name(dst);
        let path = dir.join(&name);
        match sys::link_at(src_dir.fd(), src, dir.fd(), &name) {
            Err(err)
                if err.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_ATTEMPTS =>
            {
                attempt += 1;
            }
            linked => break (name, path, linked),
        }
    };
    match linked {
        Ok(()) => {}
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EXDEV | libc::EPERM | libc::EMLINK | libc::EACCES | libc::ENOENT)
            ) =>
        {
            debug!(src = %src_path.display(), error = %err, "no hard link here; the clone is copied");
            return Ok(None);
        }
        Err(err) => {
            return Err(EngineError::io(
                format!("cannot link {} to {}", path.display(), src_path.display()),
                err,
            ))
        }
    }
    let temp = TempFile {
        dir,
        name,
        armed: true,
    };
    let linked = dir.regular_entry(&temp.name)?;
    if (linked.stat.st_dev, linked.stat.st_ino) != (expected.dev(), expected.ino()) {
        debug!(src = %src_path.display(), "replaced while it was linked; the clone is copied");
        return Ok(None);
    }
    let bytes = linked.size();
    info!(op = "hardlink", from = %src_path.display(), to = %path.display(), bytes, "committed image linked for a clone");
    failpoint::step("hardlink");
    Ok(Some(Staged {
        temp,
        dst: dst.to_owned(),
        bytes,
    }))
}

/// Stage a new name of the regular file `src` of `src_dir` (a source's committed
/// image) next to `dst` in `dir` — a hard link under a temp name, checked to be the
/// inode that was looked at — so that the operation can read from it before it changes
/// anything of its own; it gets its final name with [`DirChanges::place`] (durable with
/// the batch's fsync: the content is already durable, docs/durability.md rule 3).
/// Unlike [`stage_link_at`] a link that cannot be made is an error.
pub fn stage_link<'a>(src_dir: &Dir, src: &str, dir: &'a Dir, dst: &str) -> Result<Staged<'a>> {
    // A random temp name (a clash fails the operation, which changed nothing).
    let name = temp_name(dst);
    link_checked(src_dir, src, dir, &name)?;
    let temp = TempFile {
        dir,
        name,
        armed: true,
    };
    let bytes = dir.regular_entry(&temp.name)?.size();
    info!(op = "hardlink", from = %src_dir.join(src).display(), to = %dir.join(&temp.name).display(), bytes, "committed image linked");
    failpoint::step("hardlink");
    Ok(Staged {
        temp,
        dst: dst.to_owned(),
        bytes,
    })
}

/// [`replace_at`] by path, for the state directory (whose path the administrator
/// chose; pool files always go through a [`Dir`]), with the fsync sites of that state
/// file.
pub fn replace_with<T>(
    dst: &Path,
    sites: ReplaceSites,
    fill: impl FnOnce(&File) -> Result<T>,
) -> Result<T> {
    let (dir, name) = Dir::open_parent_of(dst)?;
    replace_in(&dir, &name, sites, |file| Ok((fill(file)?, Content::Data)))
}

/// fchmod 0600 a finished temp file and make its content durable before any name
/// points to it ([`content_before_name`]); returns its size (for the log).
fn seal(file: &File, path: &Path, site: &str) -> Result<u64> {
    let bytes = chmod_and_size(file, path)?;
    content_before_name(file, site, path)?;
    Ok(bytes)
}

/// Make the content of a file that is to get a name by a rename (a staged temp, a
/// running image or an import file to commit) durable before that name can be; `site`
/// names the call for [`fsync_fault`] (skipping it skips both ways below).
///
/// On XFS whose log commit flushes the data device ([`sys::journal_covers_data`]) the
/// file's dirty pages are written back and waited for, without a barrier of their own:
/// the log force that makes the name durable (the directory's fsync, or any later one)
/// commits every transaction before the rename — those of the data's writeback among
/// them — and its first log write flushes the device's cache after the data's writes
/// completed (docs/durability.md, rule 1). Elsewhere the file is fsynced: btrfs logs a
/// new name's inode without its extents, and ext4 may run without a journal.
fn content_before_name(file: &File, site: &str, path: &Path) -> Result<()> {
    if sys::journal_covers_data(file) {
        if fsync_fault::skipped(site, path) {
            return Ok(());
        }
        sys::write_back_and_wait(file)
            .io_ctx(|| format!("cannot write back {}", path.display()))?;
        debug!(path = %path.display(), "written back: durable with the log force of its name");
        return Ok(());
    }
    sync_file(file, site, path)
}

/// fchmod 0600 a finished temp file; returns its size (for the log).
fn chmod_and_size(file: &File, path: &Path) -> Result<u64> {
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .io_ctx(|| format!("cannot chmod {}", path.display()))?;
    Ok(file
        .metadata()
        .io_ctx(|| format!("cannot stat {}", path.display()))?
        .len())
}

/// fsync a directory; `site` names the call for [`fsync_fault`].
fn sync_dir(dir: &Dir, site: &str) -> Result<()> {
    if fsync_fault::skipped(site, dir.path()) {
        return Ok(());
    }
    dir.sync()
}

/// fsync an open file; `site` names the call for [`fsync_fault`].
fn sync_file(file: &File, site: &str, path: &Path) -> Result<()> {
    if fsync_fault::skipped(site, path) {
        return Ok(());
    }
    barrier::sync(file.as_fd(), Kind::File).io_ctx(|| format!("cannot fsync {}", path.display()))
}

/// fdatasync an open file (`path` names it in messages): its data, and its size when
/// that changed; `site` names the call for [`fsync_fault`]. For appends to the state
/// journal.
pub fn sync_data(file: &File, site: &str, path: &Path) -> Result<()> {
    if fsync_fault::skipped(site, path) {
        return Ok(());
    }
    barrier::sync(file.as_fd(), Kind::Data)
        .io_ctx(|| format!("cannot fdatasync {}", path.display()))
}

/// fsync the directory at `path` (the parent of a new state directory); `site` names
/// the call for [`fsync_fault`].
pub fn sync_dir_path(path: &Path, site: &str) -> Result<()> {
    sync_dir(&Dir::open_path(path)?, site)
}

/// A file that never gets a final name: a temp next to `base` is filled by `fill`
/// (opened read-write), opened again **read-only** by name (a regular file, the same
/// inode), and unlinked; the read-only fd is all that is left of it. Not a durable
/// step: nothing of it is meant to survive (a crash leaves a temp of `base`, which the
/// volume's cleanup removes).
pub fn unnamed_at<T>(
    dir: &Dir,
    base: &str,
    fill: impl FnOnce(&File) -> Result<T>,
) -> Result<(File, T)> {
    let (temp, file) = TempFile::create_next_to(dir, base)?;
    let value = fill(&file)?;
    let read_only = dir.open_file(&temp.name, Access::Read)?;
    let (written, reopened) = (sys::stat_fd(&file), sys::stat_fd(&read_only));
    match (written, reopened) {
        (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) => {}
        _ => {
            return Err(EngineError::invalid(format!(
                "{} changed while it was being written; refusing to use it",
                dir.join(&temp.name).display()
            )))
        }
    }
    let path = dir.join(&temp.name);
    drop(temp); // unlinks the name
    info!(op = "create", path = %path.display(), "private file created and unlinked (only a read-only fd is left)");
    Ok((read_only, value))
}

/// A read-write file in `dir` that has no name: a temp next to `base`, unlinked at once
/// (where O_TMPFILE is not supported).
pub fn scratch_at(dir: &Dir, base: &str) -> Result<File> {
    let (temp, file) = TempFile::create_next_to(dir, base)?;
    drop(temp);
    Ok(file)
}

/// `replace_at` an empty sparse file of `size` bytes (0 blocks allocated; its content
/// is metadata, [`Content`]).
pub fn create_sparse_at(dir: &Dir, name: &str, size: u64) -> Result<()> {
    replace_in(dir, name, POOL_FILE, |file| {
        file.set_len(size).io_ctx(|| {
            format!(
                "cannot truncate {} to {size} bytes",
                dir.join(name).display()
            )
        })?;
        Ok(((), Content::Metadata))
    })
}

/// Durable rename of the regular file `from` within or across directories of one
/// filesystem; anything but a regular file is refused (`InvalidArgument`) and stays.
pub fn rename_at(from_dir: &Dir, from: &str, to_dir: &Dir, to: &str) -> Result<()> {
    let (from_path, to_path) = (from_dir.join(from), to_dir.join(to));
    from_dir.regular_entry(from)?;
    sys::rename_at(from_dir.fd(), from, to_dir.fd(), to).io_ctx(|| {
        format!(
            "cannot rename {} to {}",
            from_path.display(),
            to_path.display()
        )
    })?;
    sync_dir(to_dir, "rename-dir")?;
    if from_dir.path() != to_dir.path() {
        sync_dir(from_dir, "rename-source-dir")?;
    }
    info!(op = "rename", from = %from_path.display(), to = %to_path.display(), "renamed");
    failpoint::step("rename");
    Ok(())
}

/// Durable unlink; a missing file is not an error. Returns whether a file was removed.
pub fn remove_at(dir: &Dir, name: &str) -> Result<bool> {
    let path = dir.join(name);
    let removed = match sys::unlink_at(dir.fd(), name) {
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
        sync_dir(dir, "remove-dir")?;
        info!(op = "remove", path = %path.display(), "removed");
    } else {
        tracing::debug!(op = "remove", path = %path.display(), "already absent");
    }
    failpoint::step("remove");
    Ok(removed)
}

/// [`remove_at`] by path, for the state directory.
pub fn remove(path: &Path) -> Result<bool> {
    let (dir, name) = Dir::open_parent_of(path)?;
    remove_at(&dir, &name)
}

/// Single `mkdir` of `parent/name` (never recursive, mode 0755 minus the umask) +
/// fsync of the parent; fine if it already is a directory; an error if it is a
/// symlink or anything else. Returns the directory and whether it was created now.
pub fn ensure_dir_at(parent: &Dir, name: &str) -> Result<(Dir, bool)> {
    let path = parent.join(name);
    let created = match parent.open_subdir(name)? {
        Some(_) => false,
        None => make_dir(parent, name)?,
    };
    let dir = parent.open_subdir(name)?.ok_or_else(|| {
        EngineError::not_found(format!(
            "{} vanished right after its creation",
            path.display()
        ))
    })?;
    info!(op = "mkdir", path = %path.display(), created, "directory ensured");
    failpoint::step("mkdir");
    Ok((dir, created))
}

/// mkdir + fsync(parent); losing a race to another mkdir is fine (the caller opens the
/// result as a directory, refusing anything else) — but the loser, too, returns only
/// after a barrier of the parent that began after the winner's mkdir: it must not
/// build on a directory whose name is not durable yet (shared with the winner's fsync
/// when they overlap, `barrier.rs`).
fn make_dir(parent: &Dir, name: &str) -> Result<bool> {
    match sys::mkdir_at(parent.fd(), name, DIR_MODE) {
        Ok(()) => {
            sync_dir(parent, "mkdir-parent")?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            sync_dir(parent, "mkdir-parent")?;
            Ok(false)
        }
        Err(err) => Err(EngineError::io(
            format!("cannot create directory {}", parent.join(name).display()),
            err,
        )),
    }
}

/// rmdir of `parent/name` + fsync of the parent; a missing or non-empty directory is
/// not an error.
pub fn remove_dir_at(parent: &Dir, name: &str) -> Result<()> {
    let path = parent.join(name);
    let removed = match sys::rmdir_at(parent.fd(), name) {
        Ok(()) => true,
        Err(err) if is_missing_or_not_empty(&err) => false,
        Err(err) => {
            return Err(EngineError::io(
                format!("cannot remove directory {}", path.display()),
                err,
            ))
        }
    };
    if removed {
        sync_dir(parent, "rmdir-parent")?;
    }
    info!(op = "rmdir", path = %path.display(), removed, "directory removed if empty");
    failpoint::step("rmdir");
    Ok(())
}

fn is_missing_or_not_empty(err: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(err),
        Some(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST)
    )
}

/// Durable hard link `dst` → inode of the regular file `src` (dst must not exist).
/// The new name is checked to be that inode afterwards; were it anything else (the
/// source swapped meanwhile), it is removed again and the link refused.
pub fn hardlink_at(src_dir: &Dir, src: &str, dst_dir: &Dir, dst: &str) -> Result<()> {
    let (src_path, dst_path) = (src_dir.join(src), dst_dir.join(dst));
    link_checked(src_dir, src, dst_dir, dst)?;
    sync_dir(dst_dir, "hardlink-dir")?;
    info!(op = "hardlink", from = %src_path.display(), to = %dst_path.display(), "hard link created");
    failpoint::step("hardlink");
    Ok(())
}

/// Open an existing regular file read-write (no symlink follow), ftruncate to `size`,
/// fsync. Used only for the dirty image of a started volume (R§3.15). A missing file is
/// `NotFound`.
pub fn truncate_at(dir: &Dir, name: &str, size: u64) -> Result<()> {
    let file = dir.open_file(name, Access::ReadWrite)?;
    truncate_open(&file, &dir.join(name), size)
}

/// [`truncate_at`] for a file already open read-write at `path`.
pub fn truncate_open(file: &File, path: &Path, size: u64) -> Result<()> {
    file.set_len(size)
        .io_ctx(|| format!("cannot truncate {} to {size} bytes", path.display()))?;
    sync_file(file, "truncate-file", path)?;
    info!(op = "truncate", path = %path.display(), bytes = size, "truncated in place");
    failpoint::step("truncate");
    Ok(())
}

/// Make the content of an existing regular file (a running image, an import file)
/// durable before the rename that commits it, which the caller makes durable with the
/// directory's fsync ([`DirChanges::commit`]): fsynced, or on XFS written back
/// ([`content_before_name`]); fsync site `commit-file`.
pub fn prepare_commit_at(dir: &Dir, name: &str) -> Result<()> {
    let file = dir.open_file(name, Access::Read)?;
    content_before_name(&file, "commit-file", &dir.join(name))
}

/// Name changes in one directory that become durable together: links, renames, staged
/// files placed, files discarded or unlinked, in the order the caller makes them, then
/// **one** fsync of the directory ([`DirChanges::commit`], site `changes-dir`). The
/// caller orders the changes so that a crash after any of them leaves a state the
/// volume may be in; until the commit returns, none of them is promised to survive a
/// power cut.
///
/// Discarded files are renamed to a discarded name at once and handed to the
/// [`Background`] worker when the batch ends ([`DirChanges::commit`],
/// [`DirChanges::end_without_barrier`]); without a worker they are unlinked right after
/// the commit. A batch that does not end that way — an error or a cancel returned
/// early — gives them their names back (where a name was not taken meanwhile) and
/// fsyncs the directory: an operation that fails changes as little as it can, and
/// what it took out of the committed state (revisions pruned for a revision it never
/// kept, a committed image it was replacing) is not deleted after its failure.
pub struct DirChanges<'a> {
    dir: &'a Dir,
    reaper: Option<&'a Background>,
    /// A change was made since the last fsync of the directory.
    changed: bool,
    /// The files discarded: their names before, and their discarded names.
    discarded: Vec<(String, String)>,
    /// The names this batch put a file at (renames, links, placed stages): a discarded
    /// file whose name one of them took gets it back by an exchange.
    filled: Vec<String>,
    /// The batch's barrier, announced to the other operations of the directory while
    /// the batch lasts (group commit, [`barrier::expect`]).
    _announced: Option<barrier::Expected>,
}

impl<'a> DirChanges<'a> {
    /// A batch of changes in `dir`, discarded files reaped by `reaper`; its directory
    /// fsync is announced to the other operations of the directory.
    pub fn new(dir: &'a Dir, reaper: Option<&'a Background>) -> DirChanges<'a> {
        let mut changes = DirChanges::unannounced(dir, reaper);
        changes._announced = barrier::expect(dir.fd());
        changes
    }

    /// A batch that will end without a barrier ([`Self::end_without_barrier`]): the
    /// others' directory fsyncs do not wait for it.
    pub fn unannounced(dir: &'a Dir, reaper: Option<&'a Background>) -> DirChanges<'a> {
        DirChanges {
            dir,
            reaper,
            changed: false,
            discarded: Vec::new(),
            filled: Vec::new(),
            _announced: None,
        }
    }

    pub fn dir(&self) -> &'a Dir {
        self.dir
    }

    /// Hard link `dst` (in this directory, must not exist) to the regular file `src`
    /// of `src_dir`; the new name is checked to be that inode afterwards (see
    /// [`hardlink_at`]).
    pub fn link(&mut self, src_dir: &Dir, src: &str, dst: &str) -> Result<()> {
        let (src_path, dst_path) = (src_dir.join(src), self.dir.join(dst));
        link_checked(src_dir, src, self.dir, dst)?;
        self.changed = true;
        self.filled.push(dst.to_owned());
        info!(op = "hardlink", from = %src_path.display(), to = %dst_path.display(), "hard link created");
        failpoint::step("hardlink");
        Ok(())
    }

    /// Rename the regular file `from` over `to`, both in this directory.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (from_path, to_path) = (self.dir.join(from), self.dir.join(to));
        self.dir.regular_entry(from)?;
        failpoint::refused("rename")
            .and_then(|()| sys::rename_at(self.dir.fd(), from, self.dir.fd(), to))
            .io_ctx(|| {
                format!(
                    "cannot rename {} to {}",
                    from_path.display(),
                    to_path.display()
                )
            })?;
        self.changed = true;
        self.filled.push(to.to_owned());
        info!(op = "rename", from = %from_path.display(), to = %to_path.display(), "renamed");
        failpoint::step("rename");
        Ok(())
    }

    /// Give a staged file (of this directory) its final name.
    pub fn place(&mut self, staged: Staged<'_>) -> Result<()> {
        let path = self.dir.join(&staged.dst);
        let (existed, bytes) = (self.dir.exists(&staged.dst), staged.bytes);
        failpoint::refused("place").io_ctx(|| format!("cannot put {} in place", path.display()))?;
        let dst = staged.dst.clone();
        staged.rename_into_place()?;
        self.changed = true;
        self.filled.push(dst);
        let op = if existed { "replace" } else { "create" };
        info!(op, path = %path.display(), bytes, "file written and renamed into place");
        failpoint::step("replace");
        Ok(())
    }

    /// Take `name` out of the directory's committed state: a regular file is renamed to
    /// a discarded name (deleted after the reply), anything else but a directory is
    /// unlinked. Returns whether there was something; a missing `name` is fine.
    pub fn discard(&mut self, name: &str) -> Result<bool> {
        match self.dir.entry(name)? {
            None => Ok(false),
            Some(entry) if entry.is_file() => {
                let discarded = self.rename_to_discarded(name)?;
                self.changed = true;
                info!(op = "discard", path = %self.dir.join(name).display(), to = %discarded,
                    "taken out of the committed state; deleted after the reply");
                self.discarded.push((name.to_owned(), discarded));
                failpoint::step("discard");
                Ok(true)
            }
            Some(_) => self.unlink(name),
        }
    }

    fn rename_to_discarded(&self, name: &str) -> Result<String> {
        let mut last_err = None;
        for _ in 0..TEMP_ATTEMPTS {
            let discarded = discard_name(name);
            let fd = self.dir.fd();
            match sys::rename_noreplace_at(fd, name, fd, &discarded) {
                Ok(()) => return Ok(discarded),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
                Err(err) => {
                    let what = format!("cannot discard {}", self.dir.join(name).display());
                    return Err(EngineError::io(what, err));
                }
            }
        }
        let err = last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        let what = format!("cannot discard {}", self.dir.join(name).display());
        Err(EngineError::io(what, err))
    }

    /// Unlink `name` now (a small file, or one whose inode lives on under another
    /// name); a missing file is fine. Returns whether a file was removed.
    pub fn unlink(&mut self, name: &str) -> Result<bool> {
        let path = self.dir.join(name);
        let removed = match sys::unlink_at(self.dir.fd(), name) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => false,
            Err(err) => {
                return Err(EngineError::io(
                    format!("cannot remove {}", path.display()),
                    err,
                ))
            }
        };
        if removed {
            self.changed = true;
            info!(op = "remove", path = %path.display(), "removed");
            failpoint::step("remove");
        }
        Ok(removed)
    }

    /// The batch's fsync is needed even if it changes nothing itself: it makes durable
    /// what an earlier attempt of its operation changed before its own fsync failed.
    pub fn require_barrier(&mut self) {
        self.changed = true;
    }

    /// Make every change so far durable with one fsync of the directory (none when
    /// nothing changed), then hand the discarded files to the reaper.
    pub fn commit(mut self) -> Result<()> {
        self.sync()?;
        self.release();
        Ok(())
    }

    /// End the batch without a barrier: only for changes a power cut may undo without
    /// harm — a stale precache discarded (a start uses a precache only if its mtime
    /// and size are the committed image's), the start of a snapshot or volatile volume
    /// (docs/durability.md rules 8 and 9). The discarded files go to the reaper.
    pub fn end_without_barrier(mut self) {
        self.release();
    }

    /// Make every change so far durable and go on with the batch.
    pub fn sync(&mut self) -> Result<()> {
        if self.changed {
            failpoint::refused("changes-sync")
                .io_ctx(|| format!("cannot fsync {}", self.dir.path().display()))?;
            sync_dir(self.dir, "changes-dir")?;
            self.changed = false;
        }
        Ok(())
    }

    /// The discarded files go to the reaper (or are unlinked now without one).
    fn release(&mut self) {
        for (_, name) in std::mem::take(&mut self.discarded) {
            self.reap(name);
        }
    }

    fn reap(&self, name: String) {
        match self.reaper {
            Some(reaper) => reaper.reap(self.dir, name),
            None => background::reap_now(self.dir, &name),
        }
    }

    /// A batch that did not end: each discarded file of the committed state (a
    /// committed image, a revision, a running image) gets its name back — by an
    /// exchange when this batch put a file at that name, which then goes — and caches
    /// and garbage are reaped ([`is_cache_or_garbage`]); the directory is
    /// fsynced, so that a power cut cannot leave the discarded names for the start-up
    /// sweep to delete. Best effort: a failure is logged (the sweep would then delete
    /// what is left under a discarded name).
    fn restore(&mut self) {
        let discarded = std::mem::take(&mut self.discarded);
        if discarded.is_empty() {
            return;
        }
        let fd = self.dir.fd();
        let mut renamed = false;
        for (name, discarded) in discarded {
            if is_cache_or_garbage(&name) {
                self.reap(discarded);
                continue;
            }
            renamed = true;
            let (path, from) = (self.dir.join(&name), self.dir.join(&discarded));
            match sys::rename_noreplace_at(fd, &discarded, fd, &name) {
                Ok(()) => {
                    info!(op = "rename", from = %from.display(), to = %path.display(),
                        "the operation failed: given its name back");
                }
                // The batch itself put a file at that name (an origin_snapshot's start
                // its source's image): the two swap, and the batch's file goes.
                Err(err)
                    if err.kind() == io::ErrorKind::AlreadyExists
                        && self.filled.contains(&name) =>
                {
                    match sys::exchange_at(fd, &discarded, &name) {
                        Ok(()) => {
                            info!(op = "rename", from = %from.display(), to = %path.display(),
                                "the operation failed: given its name back in exchange for the file it had put there");
                            self.reap(discarded);
                        }
                        Err(err) => {
                            tracing::warn!(op = "rename", from = %from.display(), to = %path.display(), error = %err,
                            "the operation failed and its discarded file cannot get its name back; the start-up sweep deletes it")
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => self.reap(discarded),
                Err(err) => {
                    tracing::warn!(op = "rename", from = %from.display(), to = %path.display(), error = %err,
                        "the operation failed and its discarded file cannot get its name back; the start-up sweep deletes it")
                }
            }
        }
        if !renamed {
            return;
        }
        if let Err(err) = sync_dir(self.dir, "changes-dir") {
            tracing::warn!(path = %self.dir.path().display(), error = %err,
                "cannot make the names given back durable");
        }
    }
}

impl Drop for DirChanges<'_> {
    /// A batch that ends early (an error, a cancel) gives its discarded files their
    /// names back.
    fn drop(&mut self) {
        self.restore();
    }
}

/// link `src_dir/src` → `dst_dir/dst`, refusing a source that is not a regular file
/// and removing the new name again should it not be that inode (the source swapped
/// meanwhile). Not durable by itself.
fn link_checked(src_dir: &Dir, src: &str, dst_dir: &Dir, dst: &str) -> Result<()> {
    let (src_path, dst_path) = (src_dir.join(src), dst_dir.join(dst));
    let checked = src_dir.regular_entry(src)?;
    sys::link_at(src_dir.fd(), src, dst_dir.fd(), dst).io_ctx(|| {
        format!(
            "cannot link {} to {}",
            dst_path.display(),
            src_path.display()
        )
    })?;
    match dst_dir.entry(dst)? {
        Some(linked) if linked.same_inode(&checked) => Ok(()),
        _ => {
            let _ = sys::unlink_at(dst_dir.fd(), dst);
            Err(EngineError::invalid(format!(
                "{} changed while it was being linked; refusing to use it",
                src_path.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::io::{Read, Write};

    fn dir() -> (tempfile::TempDir, Dir) {
        let d = tempfile::tempdir().expect("tempdir");
        let handle = Dir::open_path(d.path()).unwrap();
        (d, handle)
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
    fn temp_name_is_final_name_tilde_and_eight_chars_of_the_alphabet() {
        for _ in 0..200 {
            let name = temp_name("private.img");
            let (base, random) = name.rsplit_once('~').unwrap();
            assert_eq!(base, "private.img");
            assert_eq!(random.len(), TEMP_RANDOM_LEN);
            assert!(random.bytes().all(|b| TEMP_ALPHABET.contains(&b)), "{name}");
        }
    }

    #[test]
    fn temp_names_are_recognised_by_the_layout() {
        let vid = crate::names::Vid::parse("appvms/work/private").unwrap();
        let paths = crate::layout::VolumePaths::new(Path::new("/pool"), &vid);
        assert!(paths.is_own_temp(&temp_name(&paths.dirty_name())));
    }

    #[test]
    fn a_discarded_temp_gets_a_discarded_name_of_its_final_name() {
        let vid = crate::names::Vid::parse("appvms/work/private").unwrap();
        let paths = crate::layout::VolumePaths::new(Path::new("/pool"), &vid);
        for name in [paths.clean_name(), paths.dirty_name()] {
            let temp = temp_name(&name);
            let discarded = discard_name(&temp);
            assert!(
                discarded.starts_with(&format!("{name}{REAP_MARK}")),
                "{discarded}"
            );
            assert!(crate::layout::is_volume_discard(&discarded), "{discarded}");
        }
    }

    #[test]
    fn temp_names_differ() {
        assert_ne!(temp_name("x.img"), temp_name("x.img"));
    }

    #[test]
    fn replace_writes_mode_0600_and_leaves_no_temp() {
        let (d, dir) = dir();
        replace_at(&dir, "a.img", |mut f| {
            f.write_all(b"hello").io_ctx(|| "write".into())
        })
        .unwrap();
        let dst = d.path().join("a.img");
        assert_eq!(std::fs::read(&dst).unwrap(), b"hello");
        assert_eq!(dst.metadata().unwrap().permissions().mode() & 0o7777, 0o600);
        assert_eq!(names_in(d.path()), ["a.img"]);
    }

    #[test]
    fn replace_with_by_path_writes_the_file() {
        let (d, _) = dir();
        let dst = d.path().join("state.json");
        let sites = ReplaceSites {
            file: "test-file",
            dir: "test-dir",
        };
        replace_with(&dst, sites, |mut f| {
            f.write_all(b"{}").io_ctx(|| "write".into())
        })
        .unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"{}");
        assert!(remove(&dst).unwrap());
        assert!(names_in(d.path()).is_empty());
    }

    #[test]
    fn replace_error_removes_temp_and_keeps_dst() {
        let (d, dir) = dir();
        let dst = d.path().join("a.img");
        std::fs::write(&dst, b"old").unwrap();
        let err = replace_at(&dir, "a.img", |mut f| -> Result<()> {
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
    fn replace_panic_in_fill_removes_temp() {
        let (d, dir) = dir();
        let result = std::panic::catch_unwind(|| {
            let _ = replace_at(&dir, "a.img", |_| -> Result<()> { panic!("fill panicked") });
        });
        assert!(result.is_err());
        assert!(names_in(d.path()).is_empty());
    }

    #[test]
    fn replace_gives_a_new_inode() {
        use std::os::unix::fs::MetadataExt;
        let (d, dir) = dir();
        let dst = d.path().join("a.img");
        std::fs::write(&dst, b"old").unwrap();
        let before = dst.metadata().unwrap().ino();
        let mut held = File::open(&dst).unwrap();
        replace_at(&dir, "a.img", |mut f| {
            f.write_all(b"new").io_ctx(|| "write".into())
        })
        .unwrap();
        assert_ne!(dst.metadata().unwrap().ino(), before);
        let mut old = String::new();
        held.read_to_string(&mut old).unwrap();
        assert_eq!(old, "old");
    }

    #[test]
    fn replace_over_a_symlink_replaces_the_link_not_its_target() {
        let (d, dir) = dir();
        let target = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(target.path(), b"target").unwrap();
        std::os::unix::fs::symlink(target.path(), d.path().join("a.img")).unwrap();
        replace_at(&dir, "a.img", |mut f| {
            f.write_all(b"new").io_ctx(|| "write".into())
        })
        .unwrap();
        assert_eq!(std::fs::read(target.path()).unwrap(), b"target");
        assert!(d.path().join("a.img").symlink_metadata().unwrap().is_file());
    }

    #[test]
    fn create_sparse_allocates_nothing() {
        use std::os::unix::fs::MetadataExt;
        let (d, dir) = dir();
        create_sparse_at(&dir, "s.img", 111 << 20).unwrap();
        let meta = d.path().join("s.img").metadata().unwrap();
        assert_eq!(meta.len(), 111 << 20);
        assert_eq!(meta.blocks(), 0);
    }

    #[test]
    fn remove_reports_whether_a_file_was_there() {
        let (d, dir) = dir();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert!(remove_at(&dir, "f").unwrap());
        assert!(!remove_at(&dir, "f").unwrap());
    }

    #[test]
    fn ensure_dir_creates_once_and_refuses_symlinks_and_files() {
        let (d, dir) = dir();
        assert!(ensure_dir_at(&dir, "sub").unwrap().1);
        assert!(!ensure_dir_at(&dir, "sub").unwrap().1);
        std::os::unix::fs::symlink(d.path().join("sub"), d.path().join("link")).unwrap();
        let err = ensure_dir_at(&dir, "link").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::write(d.path().join("file"), b"").unwrap();
        assert_eq!(
            ensure_dir_at(&dir, "file").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn ensure_dir_makes_private_directories() {
        use std::os::unix::fs::MetadataExt;
        let (d, dir) = dir();
        ensure_dir_at(&dir, "sub").unwrap();
        assert_eq!(d.path().join("sub").metadata().unwrap().mode() & 0o022, 0);
    }

    #[test]
    fn remove_dir_ignores_missing_and_non_empty() {
        let (d, dir) = dir();
        let sub = d.path().join("sub");
        remove_dir_at(&dir, "sub").unwrap();
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), b"").unwrap();
        remove_dir_at(&dir, "sub").unwrap();
        assert!(sub.is_dir());
        std::fs::remove_file(sub.join("f")).unwrap();
        remove_dir_at(&dir, "sub").unwrap();
        assert!(!sub.exists());
    }

    #[test]
    fn hardlink_shares_the_inode_and_refuses_an_existing_dst() {
        use std::os::unix::fs::MetadataExt;
        let (d, dir) = dir();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"x").unwrap();
        hardlink_at(&dir, "a", &dir, "b").unwrap();
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
        assert_eq!(
            hardlink_at(&dir, "a", &dir, "b").unwrap_err().kind(),
            ErrorKind::Failed
        );
    }

    #[test]
    fn hardlink_and_rename_refuse_what_is_not_a_regular_file() {
        let (d, dir) = dir();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        for name in ["sub", "link"] {
            let err = rename_at(&dir, name, &dir, "dst").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
            let err = hardlink_at(&dir, name, &dir, "dst").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
        }
        assert_eq!(names_in(d.path()), ["link", "sub"]);
    }

    #[test]
    fn rename_across_directories_moves_the_file() {
        let (d, dir) = dir();
        let (x, _) = ensure_dir_at(&dir, "x").unwrap();
        std::fs::write(d.path().join("a"), b"x").unwrap();
        rename_at(&dir, "a", &x, "b").unwrap();
        assert!(!d.path().join("a").exists());
        assert_eq!(std::fs::read(d.path().join("x/b")).unwrap(), b"x");
    }

    #[test]
    fn truncate_keeps_the_inode_and_reports_missing_as_not_found() {
        use std::os::unix::fs::MetadataExt;
        let (d, dir) = dir();
        let path = d.path().join("dirty.img");
        std::fs::write(&path, b"abc").unwrap();
        let ino = path.metadata().unwrap().ino();
        truncate_at(&dir, "dirty.img", 1 << 20).unwrap();
        let meta = path.metadata().unwrap();
        assert_eq!((meta.len(), meta.ino()), (1 << 20, ino));
        let err = truncate_at(&dir, "missing", 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}
