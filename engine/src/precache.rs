//! The precache (R§3.9 step 6, R§3.7 B): a copy of an origin volume's committed image,
//! `<name>-precache.img`, made after each change of the committed image so that the
//! next start is a rename instead of a copy. It is a cache: it counts only when its
//! mtime (ns) and size equal the committed image's ([`take_usable`]), it is discarded
//! in the batch that replaces the committed image, and its own name never needs to
//! survive a crash — only its content must be complete whenever it has its name, so it
//! is staged (filled and fsynced) before it is renamed, and the rename is not followed
//! by an fsync of the directory.
//!
//! On a pool with reflinks it is made after the operation's reply, under the volume's
//! lock, by a reflink only ([`reflink_if_stale`]); without reflinks it is a byte copy
//! made in the call, which reports its progress like any copy ([`make_now`]).
//!
//! A reflinked precache is marked with the identity (inode number and birth time) of
//! the committed image it was cloned from and its own (the extended attribute
//! [`REFLINK_OF`], set before it is sealed; a copy of either file, as a restored pool
//! has, is born anew and does not match). Such a precache shares every block with that
//! image, and the service never writes the image in place while it has a precache (a
//! growth in place changes its size, which makes the precache stale), so a start whose
//! precache carries the mark of itself and of the current committed image needs no
//! barrier ([`Usable::shares_every_block`], docs/durability.md rule 8).

use std::fs::File;

use rustix::fs::OFlags;
use tracing::{debug, info, warn};

use crate::context::OpCtx;
use crate::copy::{self, CopyOptions};
use crate::dir::{Dir, Entry};
use crate::durable::DirChanges;
use crate::error::Result;
use crate::layout::VolumePaths;
use crate::sys::{self, Identity};

/// Does the precache entry `pre` hold what the committed image `clean` holds?
fn matches(pre: &Entry, clean: &Entry) -> bool {
    pre.is_file() && (pre.mtime(), pre.size()) == (clean.mtime(), clean.size())
}

/// The extended attribute of a reflinked precache: the identity (inode number and
/// birth time) of the committed image it is a clone of, and its own.
pub const REFLINK_OF: &str = "user.qubes-storaged.reflink-of";

/// A precache that matches the committed image.
#[derive(Debug)]
pub struct Usable {
    pub name: String,
    /// It is a marked reflink of the committed image on btrfs or XFS: every block it
    /// has is shared with that image, so a write into it cannot land in place before a
    /// metadata change that follows its rename.
    pub shares_every_block: bool,
}

/// The precache if it matches the committed image `clean`; a stale one is discarded in
/// `changes` (R§7.1 test_110/111).
pub fn take_usable(
    changes: &mut DirChanges<'_>,
    paths: &VolumePaths,
    clean: &Entry,
) -> Result<Option<Usable>> {
    let name = paths.precache_name();
    match changes.dir().entry(&name)? {
        None => Ok(None),
        Some(pre) if matches(&pre, clean) => {
            let shares_every_block = shares_every_block(changes.dir(), &name, &paths.clean_name());
            Ok(Some(Usable {
                name,
                shares_every_block,
            }))
        }
        Some(_) => {
            warn!(file = %changes.dir().join(&name).display(), "discarding a stale precache that does not match the committed image");
            changes.discard(&name)?;
            Ok(None)
        }
    }
}

/// Make the precache now, by whatever copy the pool allows (a byte copy reports its
/// progress to `ctx`).
pub fn make_now(dir: &Dir, paths: &VolumePaths, ctx: &OpCtx) -> Result<()> {
    let opts = CopyOptions {
        dst_size: None,
        copy_mtime: true,
        disposable: false,
        own_image: true,
    };
    let (clean, precache) = (paths.clean_name(), paths.precache_name());
    let (staged, _) = copy::stage_at(dir, &clean, dir, &precache, opts, ctx)?;
    staged.place_unsynced()
}

/// Make the precache by reflink unless it already matches the committed image (a
/// stale one is deleted first); nothing where FICLONE is not possible or there is no
/// committed image. For the work after a reply: no durable step, no byte copy.
pub fn reflink_if_stale(dir: &Dir, paths: &VolumePaths) -> Result<()> {
    let (clean, precache) = (paths.clean_name(), paths.precache_name());
    let Some(clean_entry) = dir.entry(&clean)?.filter(Entry::is_file) else {
        return Ok(());
    };
    let stale = match dir.entry(&precache)? {
        Some(pre) if matches(&pre, &clean_entry) => return Ok(()),
        Some(_) => true,
        None => false,
    };
    if stale && sys::unlink_at(dir.fd(), &precache).is_ok() {
        info!(op = "remove", path = %dir.join(&precache).display(), "stale precache removed");
    }
    match copy::stage_reflink_at(dir, &clean, dir, &precache, true, mark)? {
        Some(staged) => staged.place_unsynced(),
        None => Ok(()),
    }
}

/// The mark of a precache `pre` that is a reflink of the committed image `clean`:
/// both identities, so that a copy of either (a restored pool) never matches.
fn mark_value(clean: Identity, pre: Identity) -> String {
    format!("{clean} {pre}")
}

/// Mark a fresh clone of `src` as its reflink. Where the mark cannot be set (no birth
/// times, no extended attributes) the precache is still good; its start just keeps its
/// barrier.
fn mark(clone: &File, src: &File) -> Result<()> {
    let marked = match (sys::identity(src, ""), sys::identity(clone, "")) {
        (Ok(Some(clean)), Ok(Some(pre))) => {
            sys::set_xattr(clone, REFLINK_OF, mark_value(clean, pre).as_bytes())
        }
        (Err(err), _) | (_, Err(err)) => Err(err),
        _ => Ok(()),
    };
    if let Err(err) = marked {
        debug!(error = %err, "cannot mark a precache as a reflink ({REFLINK_OF})");
    }
    Ok(())
}

/// Does the precache `name` share every block with the committed image `clean` (both
/// names in `dir`), on a filesystem that writes shared blocks elsewhere (btrfs, XFS)?
/// It must carry the mark of exactly these two inodes (a copy of either is another
/// inode, born later), and must not be a btrfs nodatacow file, whose blocks are
/// written in place once a defragmentation of the committed image unshared them.
/// Anything that cannot be read counts as no; elsewhere (ext4) nothing is read.
fn shares_every_block(dir: &Dir, name: &str, clean: &str) -> bool {
    if !sys::is_btrfs_or_xfs(dir.fd()) {
        return false;
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let Ok(fd) = sys::open_beneath(dir.fd(), name, flags, 0) else {
        return false;
    };
    let read = || -> std::io::Result<bool> {
        let (Some(value), Some(clean), Some(pre)) = (
            sys::get_xattr(&fd, REFLINK_OF)?,
            sys::identity(dir.fd(), clean)?,
            sys::identity(&fd, "")?,
        ) else {
            return Ok(false);
        };
        Ok(value == mark_value(clean, pre).as_bytes() && !sys::is_nocow(&fd))
    };
    read().unwrap_or_else(|err| {
        debug!(file = %dir.join(name).display(), error = %err, "cannot read the precache's mark");
        false
    })
}
