//! The volume registry of the facade: live views, creation (defaults, validation,
//! leftovers and adoption), removal and the writable volume properties.

use tracing::info;

use super::{pool_not_found, Engine};
use crate::context::OpCtx;
use crate::dir::Dir;
use crate::error::{EngineError, Result};
use crate::model::{VolumeConfig, VolumeInfo, VolumeRef, VolumeSpec};
use crate::names::{PoolName, RevisionsToKeep, Vid};
use crate::revision;
use crate::store::PoolRecord;
use crate::volume::Volume;

impl Engine {
    pub fn volume_vids(&self, pool: &PoolName) -> Result<Vec<Vid>> {
        let pools = self.read();
        let record = pools.get(pool).ok_or_else(|| pool_not_found(pool))?;
        Ok(record.volumes.keys().cloned().collect())
    }

    pub fn volume_info(&self, vol: &VolumeRef) -> Result<VolumeInfo> {
        let (pool, config, source) = self.lookup(vol)?;
        let source = Self::source_view(&pool.dir_path, source);
        let root = Self::open_root_to_read(&pool);
        let v = Volume::at(&pool.dir_path, root.as_ref(), config.clone());
        let revisions = match v.vm_dir() {
            Ok(Some(dir)) => revision::list_in(&dir, &v.paths).map_err(|e| e.on(vol))?,
            Ok(None) | Err(_) => Vec::new(),
        };
        Ok(VolumeInfo {
            pool: vol.pool.clone(),
            size: v.visible_size(source.as_ref()),
            usage: v.usage(),
            ephemeral: config.ephemeral_effective(pool.ephemeral_volatile),
            snapshots_disabled: config.snapshots_disabled(),
            is_dirty: v.is_dirty(),
            is_outdated: v.is_outdated(source.as_ref()),
            started: v.is_started(),
            revisions,
            block_device_path: v.paths.dirty(),
            config,
        })
    }

    /// The allocated bytes of a volume's current image (R§3.21), without the rest of
    /// its live view: what a property read of `Usage` needs, one stat.
    pub fn volume_usage(&self, vol: &VolumeRef) -> Result<u64> {
        let (pool, config, _) = self.lookup(vol)?;
        let root = Self::open_root_to_read(&pool);
        Ok(Volume::at(&pool.dir_path, root.as_ref(), config).usage())
    }

    pub(super) fn effective_config(
        &self,
        vol: &VolumeRef,
        spec: &VolumeSpec,
        pool: &PoolRecord,
    ) -> Result<VolumeConfig> {
        if spec.snap_on_start != spec.source.is_some() {
            return Err(EngineError::invalid(
                "a source is required exactly when snap_on_start is true",
            ));
        }
        if let Some(source) = &spec.source {
            if *source == vol.vid {
                return Err(EngineError::invalid("a volume cannot be its own source"));
            }
            if !pool.volumes.contains_key(source) {
                return Err(EngineError::not_found(format!(
                    "source volume {source} is not in pool {}",
                    vol.pool
                )));
            }
        }
        let config = VolumeConfig {
            vid: vol.vid.clone(),
            size: spec.size,
            rw: spec.rw,
            snap_on_start: spec.snap_on_start,
            save_on_stop: spec.save_on_stop,
            source: spec.source.clone(),
            revisions_to_keep: spec
                .revisions_to_keep
                .unwrap_or(pool.pool.revisions_to_keep),
            ephemeral: None,
            committed_image_shared: false,
        };
        Ok(VolumeConfig {
            ephemeral: validate_ephemeral(&config, spec.ephemeral)?,
            ..config
        })
    }

    /// Registers the volume and creates its files (R§3.3 + R§3.4) as one step; on
    /// failure nothing stays registered. Existing files of the same vid are never
    /// deleted: without `adopt` they make this `AlreadyExists`.
    pub fn create_volume(
        &self,
        vol: &VolumeRef,
        spec: VolumeSpec,
        ctx: &OpCtx,
    ) -> Result<VolumeInfo> {
        let _span = Self::span(vol, ctx).entered();
        let source = spec.source.clone();
        self.with_source_locked(vol, source.as_ref(), || {
            self.create_volume_locked(vol, spec, ctx)
        })
    }

    pub(super) fn create_volume_locked(
        &self,
        vol: &VolumeRef,
        spec: VolumeSpec,
        ctx: &OpCtx,
    ) -> Result<VolumeInfo> {
        let lock = self.locks.get(vol);
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        ctx.set_subject(vol);
        let (pool_config, config) = {
            let pools = self.read();
            let record = pools
                .get(&vol.pool)
                .ok_or_else(|| pool_not_found(&vol.pool))?;
            if record.volumes.contains_key(&vol.vid) {
                return Err(EngineError::already_exists("the volume exists").on(vol));
            }
            (
                record.pool.clone(),
                self.effective_config(vol, &spec, record)
                    .map_err(|e| e.on(vol))?,
            )
        };
        let root = Self::open_root(&pool_config, vol)?;
        let v = Volume::new(&root, config.clone());
        v.check_dirs().map_err(|e| e.on(vol))?;
        if spec.adopt {
            Self::check_adoptable(&v).map_err(|e| e.on(vol))?;
        } else {
            Self::clear_leftovers(vol, &v, ctx)?;
            v.create(ctx).map_err(|e| e.on(vol))?;
        }
        let registered = self.update_pool(&vol.pool, |r| {
            if r.volumes.contains_key(&vol.vid) {
                return Err(EngineError::already_exists("the volume exists"));
            }
            r.volumes.insert(vol.vid.clone(), config);
            Ok(())
        });
        if let Err(err) = registered {
            if !spec.adopt {
                let _ = v.remove(ctx);
            }
            return Err(err.on(vol));
        }
        info!(pool = %vol.pool, vid = %vol.vid, adopt = spec.adopt, "volume created");
        drop(guard);
        self.volume_info(vol)
    }

    /// Committed data can only be adopted by a save_on_stop volume: the next start or
    /// stop of any other kind deletes its clean image.
    pub(super) fn check_adoptable(v: &Volume<'_>) -> Result<()> {
        if v.has_committed_data()? && !v.config.save_on_stop {
            return Err(EngineError::invalid(
                "cannot adopt committed data as a volume that is not save_on_stop (its next start or stop would delete it)",
            ));
        }
        Ok(())
    }

    /// Files of an unregistered vid: data-free ones (what a create interrupted by a
    /// crash leaves) are removed; anything holding data makes this `AlreadyExists` —
    /// CreateVolume never deletes what a user wrote.
    pub(super) fn clear_leftovers(vol: &VolumeRef, v: &Volume<'_>, ctx: &OpCtx) -> Result<()> {
        let leftovers = v.existing_images().map_err(|e| e.on(vol))?;
        let Some(first) = leftovers.first() else {
            return Ok(());
        };
        if v.holds_no_data(&leftovers) {
            info!(pool = %vol.pool, vid = %vol.vid, "removing data-free leftovers of an unregistered volume");
            return v.remove_all_images(ctx).map_err(|e| e.on(vol));
        }
        Err(EngineError::already_exists(format!(
            "files of this volume already exist ({}); pass adopt=true to register them, or remove them",
            first.display()
        ))
        .on(vol))
    }

    /// `Busy` while started or while another volume snapshots it (R§3.6).
    pub fn remove_volume(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        let _span = Self::span(vol, ctx).entered();
        let lock = self.locks.get(vol);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        ctx.set_subject(vol);
        let (pool, config, _) = self.lookup(vol)?;
        let root = Self::open_root(&pool, vol)?;
        let v = Volume::new(&root, config);
        v.check_dirs().map_err(|e| e.on(vol))?;
        if v.is_started() {
            return Err(EngineError::busy("cannot remove a started volume").on(vol));
        }
        self.refuse_while_importing(vol, "remove the volume")
            .map_err(|e| e.on(vol))?;
        // The registration first, then the files: a failure or a power cut in between
        // leaves no registered volume with files missing (the power-loss replay showed
        // one after every flush of the old order), only complete files of an
        // unregistered vid, which CreateVolume reports until they are removed.
        let pools = self.read();
        let record = pools
            .get(&vol.pool)
            .ok_or_else(|| pool_not_found(&vol.pool))?;
        if let Some(user) = record
            .volumes
            .values()
            .find(|c| c.source.as_ref() == Some(&vol.vid))
        {
            return Err(
                EngineError::busy(format!("volume {} uses it as its source", user.vid)).on(vol),
            );
        }
        drop(pools);
        self.update_pool(&vol.pool, |r| {
            r.volumes.remove(&vol.vid);
            Ok(())
        })
        .map_err(|e| e.on(vol))?;
        v.remove(ctx).map_err(|e| e.on(vol))?;
        info!(pool = %vol.pool, vid = %vol.vid, "volume removed");
        Ok(())
    }

    /// `Busy` while started.
    pub fn set_rw(&self, vol: &VolumeRef, rw: bool) -> Result<()> {
        self.with_volume(vol, &OpCtx::quiet("SetRw"), |v, _| {
            if v.is_started() && v.config.rw != rw {
                return Err(EngineError::busy(
                    "cannot change rw while the volume is started",
                ));
            }
            v.config.ephemeral = validate_ephemeral(
                &VolumeConfig {
                    rw,
                    ..v.config.clone()
                },
                v.config.ephemeral,
            )?;
            v.config.rw = rw;
            Ok(())
        })
    }

    /// Switching to or from −1 is `Busy` while started.
    pub fn set_revisions_to_keep(&self, vol: &VolumeRef, value: RevisionsToKeep) -> Result<()> {
        self.with_volume(vol, &OpCtx::quiet("SetRevisionsToKeep"), |v, _| {
            let switching = v.config.revisions_to_keep.is_disabled() != value.is_disabled();
            if switching && v.is_started() {
                return Err(EngineError::busy(
                    "cannot enable or disable snapshots (revisions_to_keep -1) while the volume is started",
                ));
            }
            if let Some(consumer) = switching.then(|| self.started_consumer(vol, v.root_dir())).flatten() {
                return Err(EngineError::busy(format!(
                    "cannot enable or disable snapshots (revisions_to_keep -1) while volume {consumer}, which snapshots it, is started"
                )));
            }
            if switching && value.is_disabled() {
                // Exports made until now read the committed inode, which the next
                // start would hand to the VM: that start copies it instead.
                v.config.committed_image_shared = true;
            }
            v.config.revisions_to_keep = value;
            Ok(())
        })
    }

    /// A started volume of the pool whose source is `vol`.
    pub(super) fn started_consumer(&self, vol: &VolumeRef, root: Option<&Dir>) -> Option<Vid> {
        let pools = self.read();
        let record = pools.get(&vol.pool)?;
        let pool_dir = &record.pool.dir_path;
        record
            .volumes
            .values()
            .filter(|c| c.source.as_ref() == Some(&vol.vid))
            .find(|c| Volume::at(pool_dir, root, (*c).clone()).is_started())
            .map(|c| c.vid.clone())
    }

    /// `true` is `InvalidArgument` for snap_on_start, save_on_stop or read-only volumes.
    pub fn set_ephemeral(&self, vol: &VolumeRef, value: bool) -> Result<()> {
        self.with_volume(vol, &OpCtx::quiet("SetEphemeral"), |v, _| {
            v.config.ephemeral = validate_ephemeral(&v.config, Some(value))?;
            Ok(())
        })
    }
}

/// R§1.3: `ephemeral = true` only for volatile-type volumes (not snap_on_start, not
/// save_on_stop, rw).
pub(super) fn validate_ephemeral(
    config: &VolumeConfig,
    value: Option<bool>,
) -> Result<Option<bool>> {
    if value == Some(true) && (config.snap_on_start || config.save_on_stop || !config.rw) {
        return Err(EngineError::invalid(
            "ephemeral can only be true for a read-write volume that is neither snap_on_start nor save_on_stop",
        ));
    }
    Ok(value)
}
