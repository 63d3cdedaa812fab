//! Revisions of a volume (R§3.10–3.12): old committed images named
//! `<name>.img.<id>@<timestamp>Z`, listed from the directory by exact name match,
//! ordered by numeric id (deliberate fix 2), with ids that only ever grow while one
//! revision survives. The timestamp is the clean image's mtime when the revision was
//! taken (the time the data was last written), whole seconds UTC; the revision file
//! keeps that mtime to the nanosecond (the reference left the time of the copy), which
//! is where the sub-second part of its timestamp comes from. Pinned revisions
//! ([`crate::note`]) are never pruned and do not count against `keep`.

use tracing::warn;

use crate::context::OpCtx;
use crate::copy::{self, CopyOptions};
use crate::dir::Dir;
use crate::durable;
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
    let revisions = list_in(dir, paths)?;
    let found = match id {
        None => revisions.last().copied(),
        Some(id) => revisions.iter().find(|r| r.id == id).copied(),
    };
    found.ok_or_else(|| match id {
        None => EngineError::not_found("has no revisions"),
        Some(id) => EngineError::not_found(format!("has no revision {id}")),
    })
}

/// The revision [`add`] would make of the current clean image now: the next id and
/// the clean image's mtime.
pub fn next(dir: &Dir, paths: &VolumePaths) -> Result<Revision> {
    let clean = dir.regular_entry(&paths.clean_name())?;
    let timestamp = clean.mtime().0;
    let id = match list_in(dir, paths)?.last() {
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

/// Add a revision from the current clean image (R§3.10), unless `keep` is 0.
/// Revisions are made even of an empty image: that is what "revert to empty" reverts to.
pub fn add(dir: &Dir, paths: &VolumePaths, keep: usize, ctx: &OpCtx) -> Result<Option<Revision>> {
    if keep == 0 {
        return Ok(None);
    }
    let revision = next(dir, paths)?;
    let Revision { id, timestamp } = revision;
    let opts = CopyOptions {
        dst_size: None,
        copy_mtime: true,
    };
    copy::copy_at(
        dir,
        &paths.clean_name(),
        dir,
        &paths.revision_name(id, timestamp),
        opts,
        ctx,
    )?;
    ctx.emit_volume(EventKind::RevisionAdded { id, timestamp });
    Ok(Some(revision))
}

/// Delete all but the newest `keep` revisions that are not pinned (R§3.11); pinned
/// ones stay and are not counted.
pub fn prune(
    dir: &Dir,
    paths: &VolumePaths,
    keep: usize,
    pins: &RevisionNotes,
    ctx: &OpCtx,
) -> Result<Vec<Revision>> {
    let unpinned: Vec<Revision> = list_in(dir, paths)?
        .into_iter()
        .filter(|r| !pins.is_pinned(r))
        .collect();
    let excess = unpinned.len().saturating_sub(keep);
    delete(dir, paths, unpinned.into_iter().take(excess).collect(), ctx)
}

/// Delete every revision, pinned or not (the volume is being removed).
pub fn remove_all(dir: &Dir, paths: &VolumePaths, ctx: &OpCtx) -> Result<Vec<Revision>> {
    let revisions = list_in(dir, paths)?;
    delete(dir, paths, revisions, ctx)
}

fn delete(
    dir: &Dir,
    paths: &VolumePaths,
    pruned: Vec<Revision>,
    ctx: &OpCtx,
) -> Result<Vec<Revision>> {
    for r in &pruned {
        durable::remove_at(dir, &paths.revision_name(r.id, r.timestamp))?;
        ctx.emit_volume(EventKind::RevisionPruned {
            id: r.id,
            timestamp: r.timestamp,
        });
    }
    Ok(pruned)
}
