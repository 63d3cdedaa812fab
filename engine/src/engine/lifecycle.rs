//! Volume lifecycle operations of the facade: start, stop, verify, revert, resize and
//! export, each under the volume's lock (and a snapshot's source lock).

use std::fs::File;
use std::path::PathBuf;

use super::Engine;
use crate::context::OpCtx;
use crate::error::Result;
use crate::model::{VolumeKind, VolumeRef};
use crate::volume::Volume;

impl Engine {
    /// R§3.7; returns the block device path (the dirty image).
    pub fn start(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<PathBuf> {
        let (_, config, _) = self.lookup(vol)?;
        self.with_source_locked(vol, config.source.as_ref(), || {
            self.with_volume(vol, ctx, |v, source| {
                self.refuse_while_importing(vol, "start the volume")?;
                v.start(source, ctx)
            })
        })
    }

    /// R§3.8, idempotent.
    pub fn stop(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            self.persist_volatile_size(vol, v)?;
            v.stop(ctx).map(|_| ())
        })
    }

    /// A started volatile volume's image size becomes its nominal size at stop (so a
    /// manual resize survives): saved before the image is deleted, so a crash between
    /// the two cannot forget it.
    pub(super) fn persist_volatile_size(&self, vol: &VolumeRef, v: &mut Volume<'_>) -> Result<()> {
        if v.config.kind() != VolumeKind::Volatile || !v.is_started() || v.size() == v.config.size {
            return Ok(());
        }
        v.config.size = v.size();
        let config = v.config.clone();
        self.update_pool(&vol.pool, |r| {
            r.volumes.insert(vol.vid.clone(), config);
            Ok(())
        })
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
    pub fn revert(&self, vol: &VolumeRef, revision: Option<u64>, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "revert the volume")?;
            v.revert(revision, ctx).map(|_| ())
        })
    }

    /// R§3.15; shrinking is `InvalidArgument` unless `allow_shrink`.
    pub fn resize(
        &self,
        vol: &VolumeRef,
        size: u64,
        allow_shrink: bool,
        ctx: &OpCtx,
    ) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "resize the volume")?;
            v.resize(size, allow_shrink, ctx)
        })
    }

    /// A read-only open file of the committed image; stays consistent while later
    /// commits replace the file (they rename a new inode over it).
    pub fn export(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<File> {
        self.with_volume(vol, ctx, |v, _| v.export(ctx))
    }
}
