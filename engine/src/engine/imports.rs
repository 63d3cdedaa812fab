//! Imports: ImportData / ImportDataEnd with their in-progress bookkeeping (an import
//! belongs to the caller that opened it, has the size it declared, and blocks every
//! other change to the volume until it ends), abandoning a departed caller's import,
//! and ImportVolume.
//!
//! Only an import recorded here can be committed: an `-import.img` left from before a
//! restart, or put there by anyone else, is never committed. Only its owner (the
//! caller that opened it) or a privileged caller ([`OpCtx::is_privileged`]) may end
//! it. A commit that fails (a full disk) keeps it in progress, remembering why, so
//! that every refused change says how to end it. While it is in progress its file is
//! written behind ([`crate::writeback`]), so that the commit finds its data written.
//!
//! Data written through the importer's descriptor that the kernel could not write to
//! the disk (a thin pool or a loop device's backing store full, a media error) is
//! lost: its pages are marked clean, and only the first to ask on each open file
//! description is told. So the import keeps a descriptor of its own from the start
//! (its *witness*), asked before the commit: when the write-back failed, the import's
//! data is lost, the commit is refused for good and only ImportDataEnd(false) ends it
//! (before, a retry — or a first commit after the importer had been told and carried
//! on — committed zeros where the data should be).

use std::collections::HashMap;
use std::fs::File;

use tracing::info;

use super::Engine;
use crate::context::OpCtx;
use crate::error::{EngineError, Result};
use crate::layout::Revision;
use crate::model::VolumeRef;
use crate::names::ImageSize;
use crate::volume::Volume;
use crate::writeback::Watch;

/// An import between ImportData and ImportDataEnd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The caller that opened it (the bus layer's unique name), when known.
    pub owner: Option<String>,
    /// The size ImportData declared: the committed image has exactly this size.
    pub size: u64,
    /// Why its last commit failed, if it did (the import then stays in progress).
    pub failed_commit: Option<String>,
    /// Its file's write-behind, if one could be started.
    pub write_behind: Option<Watch>,
    /// A descriptor of the import file of its own, asked for write-back errors before
    /// the commit (and closed then: the commit of the file itself needs it to be the
    /// only one open). `None` once asked, or when it could not be opened.
    pub witness: Option<Witness>,
    /// The import's data did not reach the disk (why): it can only be discarded.
    pub data_lost: Option<String>,
    /// What a failed commit had already done — its directory fsync failed after the
    /// rename. While its image is still the committed one, a retry makes it durable
    /// instead of committing the import again (which found no import file, or kept a
    /// copy of the import as a revision and pruned the image from before the import),
    /// and ImportDataEnd(false) reverts to the image from before the import.
    pub placed: Option<Placed>,
}

/// The image a failed commit of an import put in place, and the revision it kept of the
/// image before it (none with `revisions_to_keep` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub image: (u64, u64),
    pub kept: Option<Revision>,
}

impl Placed {
    /// Is this still what `v` has committed?
    fn is_committed(&self, v: &Volume<'_>) -> Result<bool> {
        Ok(v.committed_identity()? == Some(self.image))
    }
}

/// The witness of an import: a read-only descriptor of its file.
#[derive(Debug, Clone)]
pub struct Witness(std::sync::Arc<File>);

impl PartialEq for Witness {
    fn eq(&self, other: &Witness) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Witness {}

impl Import {
    /// Refuse `ctx`'s caller unless it opened the import or is privileged.
    fn check_owner(&self, ctx: &OpCtx) -> Result<()> {
        match &self.owner {
            Some(owner) if ctx.caller() != Some(owner.as_str()) && !ctx.is_privileged() => {
                Err(EngineError::busy(format!(
                    "the import in progress belongs to another caller ({owner}); only that caller or root may end it"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Why `what` is refused while this import is in progress, and how to end it.
    fn refusal(&self, what: &str) -> EngineError {
        if let Some(why) = &self.data_lost {
            return EngineError::busy(format!(
                "cannot {what}: an import into it is pending whose data did not reach the disk ({why}); \
                 end it with ImportDataEnd(false) and import again"
            ));
        }
        EngineError::busy(match &self.failed_commit {
            None => {
                format!("cannot {what} while an import is in progress (end it with ImportDataEnd)")
            }
            Some(why) => format!(
                "cannot {what}: an import into it is pending because its commit failed ({why}); \
                 end it with ImportDataEnd(true) to commit it again once that is fixed, \
                 or with ImportDataEnd(false) to discard it"
            ),
        })
    }
}

impl Engine {
    /// R§3.17: a fresh sparse import file of `size` bytes (whole sectors below 2^63;
    /// below the current size only with `allow_shrink`); returns it opened write-only.
    pub fn import_data(
        &self,
        vol: &VolumeRef,
        size: u64,
        allow_shrink: bool,
        ctx: &OpCtx,
    ) -> Result<File> {
        let size = ImageSize::new(size).map_err(|e| e.on(vol))?;
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "start another import")?;
            let file = v
                .import_data(size, allow_shrink)
                .map_err(EngineError::size_given_too_large)?;
            let witness = v
                .import_witness()
                .inspect_err(|err| tracing::warn!(error = %err, "cannot keep a witness of the import file; a failed write-back of its data may go unnoticed"))
                .ok()
                .map(|file| Witness(std::sync::Arc::new(file)));
            let write_behind = file
                .try_clone()
                .ok()
                .map(|dup| self.write_behind.start(dup));
            let import = Import {
                owner: ctx.caller().map(str::to_owned),
                size: size.get(),
                failed_commit: None,
                write_behind,
                witness,
                data_lost: None,
                placed: None,
            };
            if let Some(old) = self.importing_set().insert(vol.clone(), import) {
                self.stop_write_behind(&old);
            }
            Ok(file)
        })
    }

    /// R§3.18. Ends the import in progress, for its owner or a privileged caller:
    /// `true` commits it (`NotFound` when none is in progress), `false` discards it (or
    /// a stale import file).
    pub fn import_data_end(&self, vol: &VolumeRef, success: bool, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            // Without its witness: that one stays in the set (the commit takes it).
            let import = self.importing_set().get(vol).map(|import| Import {
                witness: None,
                ..import.clone()
            });
            if let Some(import) = &import {
                import.check_owner(ctx)?;
            }
            match (success, import) {
                (
                    false,
                    Some(Import {
                        placed: Some(placed),
                        ..
                    }),
                ) if placed.is_committed(v)? => {
                    v.undo_placed_import(placed.kept, ctx)?;
                    let out = v.discard_import(ctx);
                    self.end_import(vol);
                    out
                }
                (false, _) => {
                    let out = v.discard_import(ctx);
                    self.end_import(vol);
                    out
                }
                (true, None) => Err(EngineError::not_found(
                    "no import is in progress (start one with ImportData)",
                )),
                (true, Some(import)) => self.commit_import(vol, v, &import, ctx),
            }
        })
    }

    /// A commit that failed (a full disk) keeps the written import file: the import
    /// stays in progress, so nothing deletes it before a retry or ImportDataEnd(false).
    fn commit_import(
        &self,
        vol: &VolumeRef,
        v: &Volume<'_>,
        import: &Import,
        ctx: &OpCtx,
    ) -> Result<()> {
        if let Some(why) = &import.data_lost {
            return Err(EngineError::new(
                crate::error::ErrorKind::Failed,
                format!(
                    "the import's data did not reach the disk ({why}); it cannot be committed: end it with ImportDataEnd(false) and import again"
                ),
            ));
        }
        if let Some(placed) = import.placed {
            if placed.is_committed(v)? {
                v.finish_import_commit(placed.kept, ctx)?;
                self.end_import(vol);
                return Ok(());
            }
        }
        // What is committed before this attempt (read before anything is changed: an
        // error here leaves the import as it was).
        let before = (v.committed_identity()?, v.newest_revision()?);
        // The write-behind's fd (a dup of the importer's) would keep the import file
        // open: the commit commits the file itself only when nobody has it open.
        self.stop_write_behind(import);
        // The witness is asked (writing back what is still dirty) and closed.
        let witness = self
            .importing_set()
            .get_mut(vol)
            .and_then(|pending| pending.witness.take());
        if let Some(Witness(file)) = witness {
            if let Err(err) = crate::sys::write_back_and_wait(&file) {
                let why = err.to_string();
                let path = v.paths.import();
                tracing::error!(path = %path.display(), error = %err,
                    "data written into the import file did not reach the disk: the import cannot be committed");
                if let Some(pending) = self.importing_set().get_mut(vol) {
                    pending.data_lost = Some(why.clone());
                }
                return Err(EngineError::io(
                    format!(
                        "data written into {} did not reach the disk; the import cannot be committed (end it with ImportDataEnd(false) and import again)",
                        path.display()
                    ),
                    err,
                ));
            }
        }
        let out = v.commit_import(import.size, ctx);
        match &out {
            Ok(()) => self.end_import(vol),
            Err(err) => {
                // Did it fail after putting the import's image in place?
                let after = v.committed_identity().ok().flatten();
                let placed = after.filter(|_| after != before.0).map(|image| Placed {
                    image,
                    kept: v
                        .newest_revision()
                        .ok()
                        .flatten()
                        .filter(|newest| Some(newest.id) > before.1.map(|r| r.id)),
                });
                if placed.is_some() {
                    tracing::warn!(path = %v.paths.clean().display(), error = %err,
                        "the import's image is in place but not known to be durable: a retry makes it so");
                }
                // A retry asks a witness again: one opened now hears of what fails
                // from here on (what failed before was asked above).
                let witness = v
                    .import_witness()
                    .ok()
                    .map(|file| Witness(std::sync::Arc::new(file)));
                if let Some(pending) = self.importing_set().get_mut(vol) {
                    pending.failed_commit = Some(err.cause());
                    pending.witness = witness;
                    pending.placed = placed;
                }
            }
        }
        out
    }

    pub(super) fn importing_set(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeRef, Import>> {
        self.importing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The import of `vol` ended: forget it, and its write-behind.
    fn end_import(&self, vol: &VolumeRef) {
        let ended = self.importing_set().remove(vol);
        if let Some(import) = ended {
            self.stop_write_behind(&import);
        }
    }

    fn stop_write_behind(&self, import: &Import) {
        if let Some(watch) = import.write_behind {
            self.write_behind.stop(watch);
        }
    }

    /// The volumes whose import `caller` opened and has not ended.
    pub fn imports_of(&self, caller: &str) -> Vec<VolumeRef> {
        let importing = self.importing_set();
        importing
            .iter()
            .filter(|(_, import)| import.owner.as_deref() == Some(caller))
            .map(|(vol, _)| vol.clone())
            .collect()
    }

    /// The caller that opened `vol`'s import went away without ending it: discard the
    /// import as ImportDataEnd(false) would. Returns whether there was one to discard
    /// (an import ended meanwhile, or opened by someone else, is left alone).
    pub fn abandon_import(&self, vol: &VolumeRef, caller: &str, ctx: &OpCtx) -> Result<bool> {
        self.with_volume(vol, ctx, |v, _| {
            let owner = self.importing_set().get(vol).and_then(|i| i.owner.clone());
            if owner.as_deref() != Some(caller) {
                return Ok(false);
            }
            info!(pool = %vol.pool, vid = %vol.vid, caller, "the importer went away: discarding its import");
            let out = v.discard_import(ctx);
            self.end_import(vol);
            out.map(|_| true)
        })
    }

    /// Between ImportData and ImportDataEnd the import file is the importer's: nothing
    /// else may replace, commit or delete it. Called under the volume's lock.
    pub(super) fn refuse_while_importing(&self, vol: &VolumeRef, what: &str) -> Result<()> {
        match self.importing_set().get(vol) {
            Some(import) => Err(import.refusal(what)),
            None => Ok(()),
        }
    }

    /// R§3.19: clone `source` (any pool) into `vol`, in three steps that never hold
    /// two volume locks at once — so a clone cannot deadlock with a clone the other way
    /// round, or with a snapshot's start, which holds its source and then itself:
    /// (after a check that the source is registered) the target's checks (a target
    /// that takes no clone never touches the source), under its lock held shared; the source's
    /// committed image exported under the source's lock held shared, so that a source
    /// with snapshots disabled cannot start in place — hand that very inode to its VM —
    /// while its private copy is made; then, under the target's lock, the checks again
    /// and the clone of the exported image, which no later change of the source alters.
    pub fn import_volume(&self, vol: &VolumeRef, source: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        if vol == source {
            return Err(EngineError::invalid("cannot import a volume into itself").on(vol));
        }
        let (src_pool, _, _) = self.lookup(source)?;
        let wanted = self.with_volume_read(vol, ctx, |v| {
            self.refuse_while_importing(vol, "import another volume")?;
            v.takes_a_clone()
        })?;
        if !wanted {
            return Ok(());
        }
        let (src_config, image) = self.with_volume_read(source, ctx, |src| {
            let image = src
                .export(ctx)
                .map_err(|e| e.on(format!("source {source}")))?;
            Ok((src.config.clone(), image))
        })?;
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "import another volume")?;
            let src_root = Self::open_root(&src_pool, source)?;
            let src = Volume::new(&src_root, src_config);
            // Its directories are checked again before a link is made in them.
            src.check_dirs()?;
            v.import_volume(&src, &image, ctx)
        })
    }
}
