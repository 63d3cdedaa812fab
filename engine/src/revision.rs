//! Revisions of a volume (R§3.10–3.12): old committed images named
//! `<name>.img.<id>@<timestamp>Z`, listed from the directory by exact name match,
//! ordered by numeric id (deliberate fix 2), with ids that only ever grow while one
//! revision survives. The timestamp is the clean image's mtime when the revision was
//! taken (the time the data was last written), whole seconds UTC.

use std::os::unix::fs::MetadataExt;

use tracing::warn;

use crate::context::OpCtx;
use crate::copy::{self, CopyOptions};
use crate::durable;
use crate::error::{EngineError, IoContext, Result};
use crate::event::EventKind;
use crate::layout::{match_revision_name, VolumePaths};
use crate::model::Revision;

/// The revisions present on disk, ordered by id ascending. A stray file that has the
/// shape of a revision name but does not parse is ignored with a warning (fix 6).
pub fn list(paths: &VolumePaths) -> Result<Vec<Revision>> {
    let entries = match std::fs::read_dir(paths.dir()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(EngineError::io(
                format!("cannot list {}", paths.dir().display()),
                e,
            ))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.io_ctx(|| format!("cannot list {}", paths.dir().display()))?;
        names.push(entry.file_name());
    }
    Ok(from_names(
        paths.name(),
        names.iter().filter_map(|n| n.to_str()),
    ))
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

/// The revision with `id`, or the highest one for `None`.
pub fn find(paths: &VolumePaths, id: Option<u64>) -> Result<Revision> {
    let revisions = list(paths)?;
    let found = match id {
        None => revisions.last().copied(),
        Some(id) => revisions.iter().find(|r| r.id == id).copied(),
    };
    found.ok_or_else(|| match id {
        None => EngineError::not_found("has no revisions"),
        Some(id) => EngineError::not_found(format!("has no revision {id}")),
    })
}

/// Add a revision from the current clean image (R§3.10), unless `keep` is 0.
/// Revisions are made even of an empty image: that is what "revert to empty" reverts to.
pub fn add(paths: &VolumePaths, keep: usize, ctx: &OpCtx) -> Result<Option<Revision>> {
    if keep == 0 {
        return Ok(None);
    }
    let clean = paths.clean();
    let meta = std::fs::symlink_metadata(&clean)
        .io_ctx(|| format!("cannot take a revision of {}", clean.display()))?;
    let timestamp = meta.mtime();
    let id = match list(paths)?.last() {
        None => 1,
        Some(last) => last.id.checked_add(1).ok_or_else(|| {
            EngineError::new(
                crate::error::ErrorKind::Failed,
                format!("revision ids are exhausted (a revision {} exists)", last.id),
            )
        })?,
    };
    let revision = Revision { id, timestamp };
    copy::copy_path(
        &clean,
        &paths.revision(id, timestamp),
        CopyOptions::default(),
        ctx,
    )?;
    ctx.emit_volume(EventKind::RevisionAdded { id, timestamp });
    Ok(Some(revision))
}

/// Delete all but the newest `keep` revisions (R§3.11).
pub fn prune(paths: &VolumePaths, keep: usize, ctx: &OpCtx) -> Result<Vec<Revision>> {
    let revisions = list(paths)?;
    let excess = revisions.len().saturating_sub(keep);
    let pruned: Vec<Revision> = revisions.into_iter().take(excess).collect();
    for r in &pruned {
        durable::remove(&paths.revision(r.id, r.timestamp))?;
        ctx.emit_volume(EventKind::RevisionPruned {
            id: r.id,
            timestamp: r.timestamp,
        });
    }
    Ok(pruned)
}
