//! Descriptions and pins of revisions in the facade ([`crate::note`] has the rules):
//! setting them on an existing revision, a stop that describes or pins the revision it
//! keeps, and dropping the notes of revisions that are gone after every volume
//! operation. Each change is one record of the volume's configuration, under the
//! volume's lock, and emits `RevisionDetailsSet` when it changed something.

use tracing::{info, warn};

use super::Engine;
use crate::context::OpCtx;
use crate::dir::Dir;
use crate::error::{EngineError, ErrorKind, Result};
use crate::event::EventKind;
use crate::model::{Revision, VolumeConfig, VolumeKind, VolumeRef};
use crate::note::{Description, NoteChange};
use crate::revision;
use crate::volume::Volume;

impl Engine {
    /// Change the description and/or the pin of a revision (`None`: the highest).
    /// `NotFound` without such a revision; `InvalidArgument` for an empty change.
    pub fn set_revision_details(
        &self,
        vol: &VolumeRef,
        revision: Option<u64>,
        change: &NoteChange,
        ctx: &OpCtx,
    ) -> Result<Revision> {
        if change.is_empty() {
            return Err(EngineError::invalid("give a description, a pin or both").on(vol));
        }
        self.with_volume(vol, ctx, |v, _| {
            let dir = v.vm_dir()?.ok_or_else(|| no_revision(revision))?;
            let existing = revision::list_in(&dir, &v.paths)?;
            let target = match revision {
                None => existing.last().copied(),
                Some(id) => existing.iter().find(|r| r.id == id).copied(),
            }
            .ok_or_else(|| no_revision(revision))?;
            self.note(vol, v, target, &existing, change, ctx)?;
            Ok(target)
        })
    }

    /// Record `change` in `target`'s note (the notes of revisions not in `existing`
    /// dropped on the way) and announce it if it changed anything.
    fn note(
        &self,
        vol: &VolumeRef,
        v: &mut Volume<'_>,
        target: Revision,
        existing: &[Revision],
        change: &NoteChange,
        ctx: &OpCtx,
    ) -> Result<()> {
        let before = details_of(&v.config, &target);
        let notes = v
            .config
            .revision_notes
            .retain_existing(existing)
            .with(target, change);
        let config = VolumeConfig {
            revision_notes: notes,
            ..v.config.clone()
        };
        self.update_volume(vol, v, config)?;
        if details_of(&v.config, &target) != before {
            announce_details(v, target, "revision details changed", ctx);
        }
        Ok(())
    }

    /// R§3.8 for a stop that keeps a revision and describes or pins it: the note is
    /// recorded first, under the name the commit will give the revision (the next id
    /// and the committed image's mtime, [`revision::next`]), so a failure to record it
    /// changes nothing; then the volume stops. If the stop keeps no revision after all
    /// (it failed before), the note is dropped with the other notes of missing
    /// revisions. `InvalidArgument` when this stop keeps no revision: the volume is not
    /// started, does not save on stop, has snapshots disabled or keeps none.
    pub fn stop_keeping(&self, vol: &VolumeRef, change: &NoteChange, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            let dir = kept_at_stop(v)?;
            v.wait_for_writers()?;
            match self.session_lost_writes(vol, v) {
                Some(why) => self.stop_after_lost_writes(vol, v, &why, Some(change), ctx)?,
                None => self.stop_noting(vol, v, &dir, change, ctx)?,
            }
            self.end_session(vol);
            Ok(())
        })
    }

    /// A stop of a session whose writes did not all reach the disk (`why`,
    /// [`crate::engine::sessions`]): it commits only if it keeps a revision of the
    /// image before the session, which it pins and describes (the caller's `change`
    /// describes it, if it gives a description). Otherwise it refuses and changes
    /// nothing: the session stays in its running image.
    pub(super) fn stop_after_lost_writes(
        &self,
        vol: &VolumeRef,
        v: &mut Volume<'_>,
        why: &str,
        change: Option<&NoteChange>,
        ctx: &OpCtx,
    ) -> Result<()> {
        if v.config.kind() == VolumeKind::OriginSnapshotsDisabled {
            // Its session is written into the committed image itself (there is no
            // image from before it to keep): the stop commits what there is.
            warn!(path = %v.paths.dirty().display(), why,
                "a session whose writes did not all reach the disk is committed: with snapshots disabled there is no image from before it");
            v.stop(ctx)?;
            self.unmark_lost_writes(v);
            return Ok(());
        }
        let dir = kept_at_stop(v).map_err(|refused| {
            EngineError::new(
                ErrorKind::Failed,
                format!(
                    "writes of the running session did not reach the disk ({why}), and it is not committed: {refused}, and committing it would replace the image from before the session. The session stays in {}; let the volume keep revisions (revisions_to_keep 1 or more) and stop it again to commit it keeping that image as a pinned revision",
                    v.paths.dirty().display()
                ),
            )
        })?;
        let ours = Description::parse(&lost_writes_note(why))?;
        // The caller's description, if it gives one; else why the revision is kept.
        let theirs = change
            .and_then(|c| c.description.clone())
            .filter(|d| !d.as_str().is_empty());
        let note = NoteChange {
            description: Some(theirs.unwrap_or(ours)),
            pinned: Some(true),
        };
        self.stop_noting(vol, v, &dir, &note, ctx)?;
        self.unmark_lost_writes(v);
        warn!(
            path = %v.paths.clean().display(),
            "a session whose writes did not all reach the disk was committed; the image from before it is kept as a pinned revision"
        );
        Ok(())
    }

    /// R§3.8 keeping a revision noted with `change`: the note is recorded first, under
    /// the name the commit will give the revision (the next id and the committed
    /// image's mtime, [`revision::next`]), so a failure to record it changes nothing;
    /// then the volume stops.
    fn stop_noting(
        &self,
        vol: &VolumeRef,
        v: &mut Volume<'_>,
        dir: &Dir,
        change: &NoteChange,
        ctx: &OpCtx,
    ) -> Result<()> {
        let kept = revision::next(dir, &v.paths)?;
        let existing = revision::list_in(dir, &v.paths)?;
        let notes = v
            .config
            .revision_notes
            .retain_existing(&existing)
            .with(kept, change);
        let config = VolumeConfig {
            revision_notes: notes,
            ..v.config.clone()
        };
        self.update_volume(vol, v, config)?;
        v.stop(ctx)?;
        if revision::list_in(dir, &v.paths)?.contains(&kept) {
            announce_details(v, kept, "the stop kept a described revision", ctx);
        }
        Ok(())
    }

    /// After an operation on `vol` (under its lock): the notes and measurements of
    /// revisions that no longer exist are dropped (pruned, consumed by a revert,
    /// deleted by hand) — one listing of the VM directory, only for a volume that has
    /// any. Nothing is dropped when the VM directory cannot be listed or is missing
    /// (a pool whose disk is not mounted yet looks like that: its revisions come back
    /// with it, and so must their pins). A failure only leaves notes that every reader
    /// ignores.
    pub(super) fn forget_vanished_notes(&self, vol: &VolumeRef, v: &Volume<'_>) {
        let Ok((_, config, _)) = self.lookup(vol) else {
            self.measurements().forget(vol);
            return;
        };
        // Nothing to drop: no listing (most volumes, most operations).
        if config.revision_notes.is_empty() && !self.measurements().holds(vol) {
            return;
        }
        let Ok(Some(dir)) = v.vm_dir() else {
            return;
        };
        let Ok(existing) = revision::list_in(&dir, &v.paths) else {
            return;
        };
        self.measurements().retain(vol, &existing);
        let kept = config.revision_notes.retain_existing(&existing);
        if kept == config.revision_notes {
            return;
        }
        let config = VolumeConfig {
            revision_notes: kept,
            ..config
        };
        if let Err(err) = self.save_volume(vol, config) {
            warn!(error = %err, "cannot drop the notes of revisions that are gone; they are ignored");
        }
    }
}

/// The description and pin of `revision` in `config`.
fn details_of(config: &VolumeConfig, revision: &Revision) -> (String, bool) {
    let notes = &config.revision_notes;
    (
        notes.description(revision).to_owned(),
        notes.is_pinned(revision),
    )
}

fn no_revision(id: Option<u64>) -> EngineError {
    match id {
        None => EngineError::not_found("has no revisions"),
        Some(id) => EngineError::not_found(format!("has no revision {id}")),
    }
}

/// The VM directory of a volume whose stop now keeps a revision; `InvalidArgument`
/// saying why not otherwise.
fn kept_at_stop(v: &Volume<'_>) -> Result<Dir> {
    let refuse = |why: &str| {
        Err(EngineError::invalid(format!(
            "{why}, so this stop keeps no revision to describe or pin"
        )))
    };
    match v.config.kind() {
        VolumeKind::Origin | VolumeKind::OriginSnapshot => {}
        VolumeKind::OriginSnapshotsDisabled => return refuse("it has snapshots disabled"),
        VolumeKind::Snapshot | VolumeKind::Volatile => return refuse("it does not save on stop"),
    }
    if v.config.revisions_to_keep.keep() == 0 {
        return refuse("it keeps no revisions (revisions_to_keep 0)");
    }
    if !v.is_started() {
        return refuse("it is not started");
    }
    match v.vm_dir()? {
        Some(dir) if dir.exists(&v.paths.clean_name()) => Ok(dir),
        _ => refuse("it has no committed image yet"),
    }
}

/// The description of the revision a stop keeps of the image before a session that lost
/// writes (within the length a description may have).
fn lost_writes_note(why: &str) -> String {
    let why: String = why.chars().filter(|c| !c.is_control()).take(120).collect();
    format!("kept by the service: the session committed after it lost writes that did not reach the disk ({why})")
}

/// Logs `what` with `target`'s description and pin, and announces them
/// (`RevisionDetailsSet`).
fn announce_details(v: &Volume<'_>, target: Revision, what: &str, ctx: &OpCtx) {
    let (description, pinned) = details_of(&v.config, &target);
    info!(revision = target.id, description, pinned, "{what}");
    ctx.emit_volume(EventKind::RevisionDetailsSet {
        id: target.id,
        description,
        pinned,
    });
}
