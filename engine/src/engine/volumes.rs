//! The volume registry of the facade: creation (defaults, validation, leftovers and
//! adoption), removal (unregistered durably before any file is deleted, its files then
//! deleted — also, after a crash, by [`Engine::finish_interrupted_removals`]) and the
//! writable volume properties.

use std::time::Duration;

use tracing::{info, warn};

use super::Engine;
use crate::context::OpCtx;
use crate::dir::Dir;
use crate::error::{EngineError, ErrorKind, Result};
use crate::model::{PoolConfig, VolumeConfig, VolumeInfo, VolumeRef, VolumeSpec};
use crate::names::{ImageSize, PoolName, RevisionsToKeep, Vid};
use crate::registry::{check_volume, validate_ephemeral, Pool, PoolState};
use crate::store::Change;
use crate::volume::Volume;

/// How long a property change (rw, revisions_to_keep, ephemeral) waits for another
/// operation on the volume — a snapshot's start copying it, a long import — before it
/// is `Busy`: a quick change never queues behind a copy of unknown length.
pub const PROPERTY_PATIENCE: Duration = Duration::from_secs(1);

impl Engine {
    pub fn volume_vids(&self, pool: &PoolName) -> Result<Vec<Vid>> {
        let pool = self.pool(pool)?;
        let state = pool.read();
        Ok(state.volumes().map(|c| c.vid.clone()).collect())
    }

    pub(super) fn effective_config(
        &self,
        vol: &VolumeRef,
        spec: &VolumeSpec,
        pool: &PoolState,
    ) -> Result<VolumeConfig> {
        let config = VolumeConfig {
            vid: vol.vid.clone(),
            size: ImageSize::new(spec.size)?.get(),
            rw: spec.rw,
            snap_on_start: spec.snap_on_start,
            save_on_stop: spec.save_on_stop,
            source: spec.source.clone(),
            revisions_to_keep: spec
                .revisions_to_keep
                .unwrap_or(pool.config().revisions_to_keep),
            ephemeral: spec.ephemeral,
            committed_image_shared: false,
            revision_notes: Default::default(),
        };
        check_volume(&config)?;
        if let Some(source) = config.source.as_ref() {
            let Some(of_source) = pool.get(source) else {
                return Err(EngineError::not_found(format!(
                    "there is no volume {source} in pool {} to be its source",
                    vol.pool
                )));
            };
            // A start snapshots the source's committed image: one that does not save
            // on stop (a volatile volume, another snapshot) has none, and the volume
            // could never start.
            if !of_source.save_on_stop {
                return Err(EngineError::invalid(format!(
                    "source volume {source} does not save on stop, so it has no committed image to snapshot; \
                     a snap_on_start volume needs a source that saves on stop"
                )));
            }
        }
        Ok(config)
    }

    /// Registers the volume and creates its files (R§3.3 + R§3.4) as one step; on
    /// failure nothing stays registered. Existing files of the same vid are never
    /// deleted: without `adopt` they make this `AlreadyExists` (the files of a volume
    /// whose removal was interrupted are deleted first: they were removed).
    pub fn create_volume(
        &self,
        vol: &VolumeRef,
        spec: VolumeSpec,
        ctx: &OpCtx,
    ) -> Result<VolumeInfo> {
        let _span = Self::span(vol, ctx).entered();
        let source = spec.source.clone();
        self.with_source_held(vol, source.as_ref(), || {
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
        let guard = lock.write().unwrap_or_else(|e| e.into_inner());
        ctx.set_subject(vol);
        let pool = self.pool(&vol.pool)?;
        let (pool_config, config, removing) = {
            let state = pool.read();
            if state.contains(&vol.vid) {
                return Err(EngineError::already_exists("the volume exists").on(vol));
            }
            let config = self
                .effective_config(vol, &spec, &state)
                .map_err(|e| e.on(vol))?;
            (state.config().clone(), config, state.is_removing(&vol.vid))
        };
        let root = Self::open_root(&pool_config, vol)?;
        let busy = self.busy(&root);
        let v = self.volume(&root, &pool_config, config.clone(), busy.background());
        v.check_dirs().map_err(|e| e.on(vol))?;
        if removing {
            self.delete_removed_files(vol, &v).map_err(|e| e.on(vol))?;
        }
        if spec.adopt {
            Self::check_adoptable(&v).map_err(|e| e.on(vol))?;
        } else {
            Self::clear_leftovers(vol, &v)?;
            v.create(ctx).map_err(|e| e.on(vol))?;
        }
        if let Err(err) = pool.change(Change::Put(config)) {
            if !spec.adopt {
                let _ = v.remove();
            }
            return Err(err.on(vol));
        }
        info!(pool = %vol.pool, vid = %vol.vid, adopt = spec.adopt, "volume created");
        drop(guard);
        self.after_reply(vol, &v, busy.background());
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
    pub(super) fn clear_leftovers(vol: &VolumeRef, v: &Volume<'_>) -> Result<()> {
        if let Some(import) = v.import_holding_data() {
            // Another driver's import in progress (the reference's, in an existing
            // Qubes pool): data the service does not own, which its create would
            // discard as garbage.
            return Err(EngineError::already_exists(format!(
                "an import file of this volume holds data ({}); remove it, or finish that import first",
                import.display()
            ))
            .on(vol));
        }
        let leftovers = v.existing_images().map_err(|e| e.on(vol))?;
        let Some(first) = leftovers.first() else {
            return Ok(());
        };
        if v.holds_no_data(&leftovers) {
            info!(pool = %vol.pool, vid = %vol.vid, "removing data-free leftovers of an unregistered volume");
            return v.remove_all_images().map_err(|e| e.on(vol));
        }
        Err(EngineError::already_exists(format!(
            "files of this volume already exist ({}); pass adopt=true to register them, or remove them",
            first.display()
        ))
        .on(vol))
    }

    /// `Busy` while started, importing or snapshotted by another volume (R§3.6). The
    /// volume is unregistered durably before any of its files is deleted (contract fix
    /// 12): a failure up to there changes nothing, a crash after it leaves an
    /// unregistered volume whose files the next [`Self::finish_interrupted_removals`]
    /// (or a CreateVolume of the vid) deletes. Once unregistered the removal has
    /// happened: a file that cannot be deleted is a warning, not a failed Remove.
    pub fn remove_volume(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        let _span = Self::span(vol, ctx).entered();
        let lock = self.locks.get(vol);
        let _guard = lock.write().unwrap_or_else(|e| e.into_inner());
        ctx.set_subject(vol);
        let (pool_config, config, _) = self.lookup(vol)?;
        let root = match Self::open_root(&pool_config, vol) {
            Err(err) if err.kind() == ErrorKind::NotFound => {
                return self.remove_without_directory(vol, &pool_config, err);
            }
            other => other?,
        };
        let _busy = self.busy(&root);
        let v = Volume::new(&root, config);
        v.check_dirs().map_err(|e| e.on(vol))?;
        if v.is_started() {
            return Err(EngineError::busy("cannot remove a started volume; stop it first").on(vol));
        }
        self.unregister_for_removal(vol)?;
        info!(pool = %vol.pool, vid = %vol.vid, "volume unregistered; deleting its files");
        if let Err(err) = self.delete_removed_files(vol, &v) {
            warn!(pool = %vol.pool, vid = %vol.vid, error = %err,
                "the volume is removed but some of its files are left; they are deleted at the next start of the service or CreateVolume of this vid");
        }
        Ok(())
    }

    /// Remove of a volume whose pool directory does not exist (a disk gone, a directory
    /// moved away): nothing of it can be started or read, so it is unregistered as any
    /// removed volume, and its files, if the directory comes back, are deleted then —
    /// at the service's next start, or when its pool is removed (which forgets them).
    /// Without this a pool whose disk is gone could never be removed: RemovePool
    /// refuses a pool that holds volumes. A volume this run of the service started and
    /// has not stopped is refused, as when its files can be read: its VM may still run
    /// on them (the directory moved away, a filesystem detached lazily).
    fn remove_without_directory(
        &self,
        vol: &VolumeRef,
        pool_config: &PoolConfig,
        missing: EngineError,
    ) -> Result<()> {
        if self.has_session(vol) {
            return Err(EngineError::busy(format!(
                "cannot remove a started volume; stop it first (its pool directory {} does not exist now)",
                pool_config.dir_path.display()
            ))
            .on(vol));
        }
        self.unregister_for_removal(vol)?;
        warn!(pool = %vol.pool, vid = %vol.vid, dir = %pool_config.dir_path.display(), error = %missing,
            "volume unregistered while its pool directory does not exist; its files, if the directory comes back, are deleted at the next start of the service");
        Ok(())
    }

    /// The part of a Remove before the files: refused while an import is open or
    /// another volume snapshots it; then unregistered, durably, and its session and
    /// measurements forgotten.
    fn unregister_for_removal(&self, vol: &VolumeRef) -> Result<()> {
        self.refuse_while_importing(vol, "remove the volume")
            .map_err(|e| e.on(vol))?;
        let pool = self.pool(&vol.pool)?;
        if let Some(user) = pool.read().consumers(&vol.vid).next() {
            return Err(EngineError::busy(format!("volume {user} uses it as its source")).on(vol));
        }
        pool.change(Change::Unregister(vol.vid.clone()))
            .map_err(|e| e.on(vol))?;
        self.end_session(vol);
        self.measurements().forget(vol);
        Ok(())
    }

    /// Delete every file of an unregistered volume, then forget it (durably).
    fn delete_removed_files(&self, vol: &VolumeRef, v: &Volume<'_>) -> Result<()> {
        v.remove()?;
        self.pool(&vol.pool)?
            .change(Change::Forget(vol.vid.clone()))?;
        info!(pool = %vol.pool, vid = %vol.vid, "volume removed");
        Ok(())
    }

    /// Finish the removals a crash interrupted (volumes unregistered whose files were
    /// not all deleted); the daemon calls this at start-up. Returns how many were
    /// finished; the first failure is returned after trying every one.
    pub fn finish_interrupted_removals(&self) -> Result<usize> {
        let pools: Vec<_> = self.pool_map().values().cloned().collect();
        let (mut done, mut first_err) = (0, None);
        for pool in pools {
            match self.finish_removals_of(&pool) {
                Ok(n) => done += n,
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(done), Err)
    }

    pub(super) fn finish_removals_of(&self, pool: &Pool) -> Result<usize> {
        let (config, vids): (_, Vec<Vid>) = {
            let state = pool.read();
            (state.config().clone(), state.removing().cloned().collect())
        };
        let (mut done, mut first_err) = (0, None);
        for vid in vids {
            let vol = VolumeRef {
                pool: config.name.clone(),
                vid,
            };
            match self.finish_removal(&vol, &config) {
                Ok(finished) => done += usize::from(finished),
                Err(err) => {
                    warn!(error = %err, "cannot finish an interrupted removal");
                    first_err.get_or_insert(err);
                }
            }
        }
        first_err.map_or(Ok(done), Err)
    }

    /// Forget the volumes of `pool` still being removed, without deleting their files
    /// (the pool's directory is gone and the pool is being removed). Each under its
    /// vid's lock and only if it is still being removed, as [`Self::finish_removal`].
    pub(super) fn forget_removals_of(&self, pool: &Pool) -> Result<()> {
        let (name, vids): (_, Vec<Vid>) = {
            let state = pool.read();
            (
                state.config().name.clone(),
                state.removing().cloned().collect(),
            )
        };
        for vid in vids {
            let vol = VolumeRef {
                pool: name.clone(),
                vid,
            };
            let lock = self.locks.get(&vol);
            let _guard = lock.write().unwrap_or_else(|e| e.into_inner());
            if !pool.read().is_removing(&vol.vid) {
                continue;
            }
            warn!(pool = %vol.pool, vid = %vol.vid, "a removed volume's files are left: its pool directory does not exist");
            pool.change(Change::Forget(vol.vid.clone()))?;
        }
        Ok(())
    }

    /// Under the vid's lock: delete the files of `vol` if it is still being removed.
    fn finish_removal(&self, vol: &VolumeRef, pool: &PoolConfig) -> Result<bool> {
        let ctx = OpCtx::quiet("FinishRemoval");
        let _span = Self::span(vol, &ctx).entered();
        let lock = self.locks.get(vol);
        let _guard = lock.write().unwrap_or_else(|e| e.into_inner());
        if !self.pool(&vol.pool)?.read().is_removing(&vol.vid) {
            return Ok(false);
        }
        let placeholder = VolumeConfig {
            vid: vol.vid.clone(),
            size: 0,
            rw: false,
            snap_on_start: false,
            save_on_stop: false,
            source: None,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral: None,
            committed_image_shared: false,
            revision_notes: Default::default(),
        };
        let root = Self::open_root(pool, vol)?;
        let v = Volume::new(&root, placeholder);
        v.check_dirs().map_err(|e| e.on(vol))?;
        self.delete_removed_files(vol, &v).map_err(|e| e.on(vol))?;
        Ok(true)
    }

    /// `Busy` while started.
    pub fn set_rw(&self, vol: &VolumeRef, rw: bool) -> Result<()> {
        self.with_volume(
            vol,
            &OpCtx::quiet("SetRw").with_patience(PROPERTY_PATIENCE),
            |v, _| {
                if v.is_started() && v.config.rw != rw {
                    return Err(EngineError::busy(
                        "cannot change rw while the volume is started",
                    ));
                }
                let changed = VolumeConfig {
                    rw,
                    ..v.config.clone()
                };
                validate_ephemeral(&changed, changed.ephemeral)?;
                self.update_volume(vol, v, changed)
            },
        )
    }

    /// Switching to or from −1 is `Busy` while started.
    pub fn set_revisions_to_keep(&self, vol: &VolumeRef, value: RevisionsToKeep) -> Result<()> {
        self.with_volume(vol, &OpCtx::quiet("SetRevisionsToKeep").with_patience(PROPERTY_PATIENCE), |v, _| {
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
            // Exports made until now read the committed inode, which the next start
            // with snapshots disabled would hand to the VM: that start copies it instead.
            let shared = switching && value.is_disabled();
            let changed = VolumeConfig {
                revisions_to_keep: value,
                committed_image_shared: v.config.committed_image_shared || shared,
                ..v.config.clone()
            };
            self.update_volume(vol, v, changed)
        })
    }

    /// A started volume of the pool whose source is `vol`.
    pub(super) fn started_consumer(&self, vol: &VolumeRef, root: Option<&Dir>) -> Option<Vid> {
        let pool = self.pool(&vol.pool).ok()?;
        let state = pool.read();
        let pool_dir = &state.config().dir_path;
        let started = state
            .consumers(&vol.vid)
            .filter_map(|vid| state.get(vid))
            .find(|c| Volume::at(pool_dir, root, (*c).clone()).is_started())
            .map(|c| c.vid.clone());
        started
    }

    /// `true` is `InvalidArgument` for snap_on_start, save_on_stop or read-only volumes.
    pub fn set_ephemeral(&self, vol: &VolumeRef, value: bool) -> Result<()> {
        self.with_volume(
            vol,
            &OpCtx::quiet("SetEphemeral").with_patience(PROPERTY_PATIENCE),
            |v, _| {
                let ephemeral = validate_ephemeral(&v.config, Some(value))?;
                let changed = VolumeConfig {
                    ephemeral,
                    ..v.config.clone()
                };
                self.update_volume(vol, v, changed)
            },
        )
    }
}
