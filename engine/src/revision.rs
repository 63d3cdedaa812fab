//! Revisions of a volume (R§3.10–3.12): old committed images named
//! `<name>.img.<id>@<timestamp>Z`, listed from the directory by exact name match,
//! ordered by numeric id (deliberate fix 2), with ids that only ever grow while one
//! revision survives. The timestamp is the clean image's mtime when the revision was
//! taken (the time the data was last written), whole seconds UTC; the revision keeps
//! that mtime to the nanosecond (the reference left the time of its copy), which is
//! where the sub-second part of its timestamp comes from. Pinned revisions
//! ([`crate::note`]) are never pruned and do not count against `keep`.
//!
//! A revision is a **hard link** to the committed image it keeps: a committed image is
//! never written (it is replaced by the rename of a new inode; a resize grows it in
//! place only while it has a single name, so never a revision's inode), so the old
//! inode itself is the revision — no copy, no data written, on every filesystem
//! (the reference made a reflink, a byte copy on ext4), and its mtime is the image's.
//! Adding and pruning are changes of the operation's batch ([`DirChanges`]), made
//! durable with its other renames by one fsync of the directory; a pruned revision is
//! discarded (deleted after the reply).

use tracing::{info, warn};

use crate::context::OpCtx;
use crate::dir::{Dir, Entry};
use crate::durable::DirChanges;
use crate::error::{EngineError, ErrorKind, Result};
use crate::event::EventKind;
use crate::layout::{match_revision_name, VolumePaths};
use crate::model::Revision;
use crate::note::RevisionNotes;

/// The revisions present in the VM directory `dir`, ordered by id ascending. A stray
/// file that has the shape of a revision name but does not parse is ignored with a
/// warning (fix 6).
pub fn list_in(dir: &Dir, paths: &VolumePaths) -> Result<Vec<Revision>> {
    let names = dir.names()?;
    Ok(from_names(paths.name(), names.iter().map(String::as_str)))
}

/// The revisions of volume `name` among the file names of its VM directory, ordered by
/// id ascending (strays ignored with a warning, fix 6).
pub fn from_names<'a>(name: &str, files: impl Iterator<Item = &'a str>) -> Vec<Revision> {
    let mut revisions = Vec::new();
    for file in files {
        match match_revision_name(name, file) {
            Some(Ok((id, timestamp))) => revisions.push(Revision { id, timestamp }),
            Some(Err(())) => warn!(
                file,
                "ignoring a file that looks like a revision but does not parse"
            ),
            None => {}
        }
    }
    revisions.sort();
    revisions
}

/// [`list_in`] by path, for callers outside the engine (tests, tools): the pool
/// directory is opened by its path and the VM directory beneath it without following a
/// symlink. A missing pool or VM directory has no revisions.
pub fn list(paths: &VolumePaths) -> Result<Vec<Revision>> {
    let root = match Dir::open_path(paths.pool_dir()) {
        Ok(root) => root,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    match root.open_subdir(paths.vm_dir_rel())? {
        Some(dir) => list_in(&dir, paths),
        None => Ok(Vec::new()),
    }
}

/// The revision with `id`, or the highest one for `None`.
pub fn find(dir: &Dir, paths: &VolumePaths, id: Option<u64>) -> Result<Revision> {
    find_in(&list_in(dir, paths)?, id)
}

/// [`find`] among listed `revisions`.
pub fn find_in(revisions: &[Revision], id: Option<u64>) -> Result<Revision> {
    let found = match id {
        None => revisions.last().copied(),
        Some(id) => revisions.iter().find(|r| r.id == id).copied(),
    };
    found.ok_or_else(|| match id {
        None => EngineError::not_found("has no revisions"),
        Some(id) => EngineError::not_found(format!("has no revision {id}")),
    })
}

/// The revision that keeps the current clean image once [`add`] has run: the newest
/// revision when it already is that image, else the next id with the image's mtime.
pub fn next(dir: &Dir, paths: &VolumePaths) -> Result<Revision> {
    let revisions = list_in(dir, paths)?;
    let clean = dir.regular_entry(&paths.clean_name())?;
    match kept_already(dir, paths, &revisions, &clean)? {
        Some(kept) => Ok(kept),
        None => next_after(&clean, &revisions),
    }
}

/// The newest of `revisions` when it is the committed image itself ([`kept_already`]);
/// `None` also without a committed image.
pub fn current_in(
    dir: &Dir,
    paths: &VolumePaths,
    revisions: &[Revision],
) -> Result<Option<Revision>> {
    match dir.entry(&paths.clean_name())? {
        Some(clean) if clean.is_file() => kept_already(dir, paths, revisions, &clean),
        _ => Ok(None),
    }
}

/// The newest of `revisions` when it is the clean image itself (the same inode): an
/// earlier commit or revert linked it and then failed, or was cut short by a crash,
/// before it put the new image in place. It already keeps the clean image; another
/// link would only be a duplicate, and pruning would make room for it by dropping the
/// oldest real revision — each failed attempt one more (the reference's re-commit
/// does that, R§5.5; ARCHITECTURE.md, "Deliberate differences").
fn kept_already(
    dir: &Dir,
    paths: &VolumePaths,
    revisions: &[Revision],
    clean: &Entry,
) -> Result<Option<Revision>> {
    let Some(newest) = revisions.last() else {
        return Ok(None);
    };
    let name = paths.revision_name(newest.id, newest.timestamp);
    Ok(dir
        .entry(&name)?
        .filter(|entry| entry.is_file() && entry.same_inode(clean))
        .map(|_| *newest))
}

/// The next revision of the clean image `clean`, after `revisions` (the directory's
/// listing).
fn next_after(clean: &Entry, revisions: &[Revision]) -> Result<Revision> {
    let timestamp = clean.mtime().0;
    let id = match revisions.last() {
        None => 1,
        Some(last) => last.id.checked_add(1).ok_or_else(|| {
            EngineError::new(
                ErrorKind::Failed,
                format!("revision ids are exhausted (a revision {} exists)", last.id),
            )
        })?,
    };
    Ok(Revision { id, timestamp })
}

/// Add a revision of the current clean image (R§3.10) to `changes` — a hard link
/// named with the next id and the image's mtime — unless `keep` is 0, or the newest
/// revision already is the clean image ([`kept_already`]: that one is returned, no
/// link is made and no event). `revisions` is the directory's listing, kept up to
/// date. Revisions are made even of an empty image: that is what "revert to empty"
/// reverts to.
pub fn add(
    changes: &mut DirChanges<'_>,
    paths: &VolumePaths,
    keep: usize,
    revisions: &mut Vec<Revision>,
    ctx: &OpCtx,
) -> Result<Option<Revision>> {
    if keep == 0 {
        return Ok(None);
    }
    let dir = changes.dir();
    let clean = dir.regular_entry(&paths.clean_name())?;
    if let Some(kept) = kept_already(dir, paths, revisions, &clean)? {
        info!(
            path = %dir.join(&paths.clean_name()).display(),
            revision = kept.id,
            "the committed image is already kept as the newest revision (an earlier attempt linked it); no other is added"
        );
        return Ok(Some(kept));
    }
    let revision = next_after(&clean, revisions)?;
    let Revision { id, timestamp } = revision;
    changes.link(
        dir,
        &paths.clean_name(),
        &paths.revision_name(id, timestamp),
    )?;
    revisions.push(revision);
    ctx.emit_volume(EventKind::RevisionAdded { id, timestamp });
    Ok(Some(revision))
}

/// Discard all but the newest `keep` of `revisions` that are not pinned (R§3.11) in
/// `changes`; pinned ones stay and are not counted. `revisions` is kept up to date.
pub fn prune(
    changes: &mut DirChanges<'_>,
    paths: &VolumePaths,
    keep: usize,
    revisions: &mut Vec<Revision>,
    pins: &RevisionNotes,
    ctx: &OpCtx,
) -> Result<Vec<Revision>> {
    let unpinned = revisions.iter().filter(|r| !pins.is_pinned(r)).count();
    let mut excess = unpinned.saturating_sub(keep);
    let mut pruned = Vec::with_capacity(excess);
    revisions.retain(|r| {
        if excess > 0 && !pins.is_pinned(r) {
            excess -= 1;
            pruned.push(*r);
            return false;
        }
        true
    });
    for r in &pruned {
        changes.discard(&paths.revision_name(r.id, r.timestamp))?;
        ctx.emit_volume(EventKind::RevisionPruned {
            id: r.id,
            timestamp: r.timestamp,
        });
    }
    Ok(pruned)
}

/// Unlink every revision at once (a removal, whose directory must end up empty). No
/// RevisionPruned: they go with the volume (whose removal the bus announces), not
/// because of RevisionsToKeep.
pub fn delete_all(changes: &mut DirChanges<'_>, paths: &VolumePaths) -> Result<()> {
    for r in list_in(changes.dir(), paths)? {
        changes.unlink(&paths.revision_name(r.id, r.timestamp))?;
    }
    Ok(())
}
