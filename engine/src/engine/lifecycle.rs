//! Volume lifecycle operations of the facade: start, stop, verify, revert, resize and
//! export, each holding the volume's lock exclusively (and a snapshot's source lock
//! shared).

use std::fs::File;
use std::path::PathBuf;

use tracing::{info, warn};

use super::Engine;
use crate::barrier;
use crate::context::OpCtx;
use crate::error::{EngineError, ErrorKind, Result};
use crate::model::{VolumeConfig, VolumeRef};
use crate::names::ImageSize;
use crate::store::Change;
use crate::volume::Volume;

impl Engine {
    /// R§3.7; returns the block device path (the dirty image).
    pub fn start(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<PathBuf> {
        let (_, config, _) = self.lookup(vol)?;
        self.with_source_held(vol, config.source.as_ref(), || {
            self.with_volume(vol, ctx, |v, source| {
                self.refuse_while_importing(vol, "start the volume")?;
                let before = v.config.clone();
                let path = v.start(source, ctx)?;
                self.record_after_start(vol, before, v);
                self.watch_session(vol, v);
                Ok(path)
            })
        })
    }

    /// A start with snapshots disabled that gave the VM a copy of the committed image
    /// (which an export may still read) clears `committed_image_shared`. Recorded after
    /// the files: a flag left set only costs the next start another copy.
    fn record_after_start(&self, vol: &VolumeRef, before: VolumeConfig, v: &Volume<'_>) {
        if v.config == before {
            return;
        }
        if let Err(err) = self.save_volume(vol, v.config.clone()) {
            warn!(error = %err, "cannot record that the committed image is no longer shared; the next start copies it again");
        }
    }

    /// R§3.8, idempotent.
    pub fn stop(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            v.wait_for_writers()?;
            self.persist_volatile_size(vol, v)?;
            match self.session_lost_writes(vol, v) {
                None => v.stop(ctx).map(|_| ())?,
                Some(why) => self.stop_after_lost_writes(vol, v, &why, None, ctx)?,
            }
            self.end_session(vol);
            Ok(())
        })
    }

    /// A started volatile volume's image size becomes its nominal size at stop (so a
    /// manual resize survives): saved before the image is deleted, so a crash between
    /// the two cannot forget it.
    pub(super) fn persist_volatile_size(&self, vol: &VolumeRef, v: &mut Volume<'_>) -> Result<()> {
        let Some(size) = v.volatile_size_to_keep() else {
            return Ok(());
        };
        let config = VolumeConfig {
            size,
            ..v.config.clone()
        };
        self.update_volume(vol, v, config)
    }

    /// R§3.5: Ok when the image the next start needs exists.
    pub fn verify(&self, vol: &VolumeRef) -> Result<()> {
        let (pool, config, source) = self.lookup(vol)?;
        let source = Self::source_view(&pool.dir_path, source);
        let root = Self::open_root_to_read(&pool);
        Volume::at(&pool.dir_path, root.as_ref(), config)
            .verify(source.as_ref())
            .map_err(|e| e.on(vol))
    }

    /// R§3.13; `None` = highest id. `NotFound` without revisions or for an unknown id.
    /// The log names the revision by its description too. A pinned revision stays.
    pub fn revert(&self, vol: &VolumeRef, revision: Option<u64>, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "revert the volume")?;
            let notes = v.config.revision_notes.clone();
            let target = v.revert(revision, ctx)?;
            info!(
                revision = target.id,
                description = notes.description(&target),
                kept = notes.is_pinned(&target),
                "reverted to a revision"
            );
            Ok(())
        })
    }

    /// R§3.15; shrinking is `InvalidArgument` unless `allow_shrink`; the size is a
    /// whole number of sectors below 2^63. The new nominal size is recorded before the
    /// image changes (its journal flush overlaps the copy of a halted image), and
    /// restored if the image cannot be changed, so a state directory that cannot be
    /// written fails the resize before anything changed.
    pub fn resize(
        &self,
        vol: &VolumeRef,
        size: u64,
        allow_shrink: bool,
        ctx: &OpCtx,
    ) -> Result<()> {
        let size = ImageSize::new(size).map_err(|e| e.on(vol))?.get();
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "resize the volume")?;
            v.check_resize(size, allow_shrink)?;
            let (old, image_before) = (v.config.clone(), v.size());
            if old.size == size {
                return v.resize(size, ctx);
            }
            let resized = self.resize_recorded(vol, v, VolumeConfig { size, ..old.clone() }, ctx);
            // Restored only if the image is unchanged (a loop device that could not be
            // told the new size fails the call after the image grew).
            if resized.is_err() && v.size() == image_before {
                if let Err(err) = self.save_volume(vol, old) {
                    warn!(error = %err, "cannot restore the nominal size after a failed resize (the image keeps its size, which is what counts)");
                }
            }
            resized.map_err(EngineError::size_given_too_large)
        })
    }

    /// Resize `v` to `new.size` while its new configuration is recorded: the journal
    /// line is written first, its flush runs on a thread of its own, and the image
    /// changes only once it is durable. Fails with the record's error if the record
    /// fails (the image unchanged).
    fn resize_recorded(
        &self,
        vol: &VolumeRef,
        v: &mut Volume<'_>,
        new: VolumeConfig,
        ctx: &OpCtx,
    ) -> Result<()> {
        let size = new.size;
        let pool = self.pool(&vol.pool)?;
        let recording = pool.begin(Change::Put(new)).map_err(|e| e.on(vol))?;
        std::thread::scope(|scope| {
            let mut flush = Some(scope.spawn(move || {
                let before = barrier::thread_counts();
                let out = recording.finish();
                (out, barrier::thread_counts().since(&before))
            }));
            let mut await_record = move || match flush.take().map(|h| h.join()) {
                Some(Ok((out, barriers))) => {
                    barrier::credit(barriers);
                    out
                }
                Some(Err(_)) => Err(EngineError::new(
                    ErrorKind::Failed,
                    "recording the new size panicked",
                )),
                None => Ok(()),
            };
            let resized = v.resize_with(size, ctx, &mut await_record);
            let recorded = await_record(); // when the resize failed before it asked
            recorded.and(resized)
        })
    }

    /// A read-only open file of the committed image; stays consistent while later
    /// commits replace the file (they rename a new inode over it).
    pub fn export(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<File> {
        self.with_volume(vol, ctx, |v, _| v.export(ctx))
    }
}
