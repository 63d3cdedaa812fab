//! The engine's facade: the registry of pools and volumes, the per-vid locks and the
//! persistence of their configuration. Every method is blocking (file work); the bus
//! layer runs them off its executor. Volume operations take the volume's lock (one per
//! vid, shared by every caller) for their whole duration, so different volumes work in
//! parallel and one volume's operations are serialised.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use tracing::info;

use crate::context::OpCtx;
use crate::error::{EngineError, IoContext, Result};
use crate::lock::VidLocks;
use crate::model::{
    PoolConfig, PoolInfo, VolumeConfig, VolumeInfo, VolumeKind, VolumeRef, VolumeSpec,
};
use crate::names::{PoolName, RevisionsToKeep, Vid};
use crate::pool;
use crate::revision;
use crate::store::{PoolRecord, Store};
use crate::volume::{SourceView, Volume};

/// What `CreatePool` asks for.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: PoolName,
    /// Must be absolute.
    pub dir_path: PathBuf,
    pub setup_check: bool,
    pub revisions_to_keep: RevisionsToKeep,
    pub ephemeral_volatile: bool,
}

pub struct Engine {
    state_dir: PathBuf,
    store: Store,
    pools: RwLock<BTreeMap<PoolName, PoolRecord>>,
    locks: VidLocks,
    /// Volumes between ImportData and ImportDataEnd, with the caller that opened the
    /// import: every other change is refused meanwhile.
    importing: Mutex<HashMap<VolumeRef, Option<String>>>,
}

fn pool_not_found(pool: &PoolName) -> EngineError {
    EngineError::not_found("no such pool").on(format!("pool {pool}"))
}

impl Engine {
    /// Load the pools and volumes persisted in `state_dir` (created if missing).
    /// Nothing on disk is changed: a volume found started stays started.
    pub fn open(state_dir: &Path) -> Result<Engine> {
        std::fs::create_dir_all(state_dir)
            .io_ctx(|| format!("cannot create the state directory {}", state_dir.display()))?;
        let store = Store::open(state_dir)?;
        let pools = store
            .load()?
            .into_iter()
            .map(|r| (r.pool.name.clone(), r))
            .collect();
        Ok(Engine {
            state_dir: state_dir.to_owned(),
            store,
            pools: RwLock::new(pools),
            locks: VidLocks::default(),
            importing: Mutex::new(HashMap::new()),
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<PoolName, PoolRecord>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<PoolName, PoolRecord>> {
        self.pools.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Change a pool record under the write lock and persist it; on a persistence
    /// failure the in-memory record is restored.
    fn update_pool<T>(
        &self,
        pool: &PoolName,
        f: impl FnOnce(&mut PoolRecord) -> Result<T>,
    ) -> Result<T> {
        let mut pools = self.write();
        let record = pools.get_mut(pool).ok_or_else(|| pool_not_found(pool))?;
        let before = record.clone();
        let out = f(record)?;
        if let Err(err) = self.store.save(record) {
            *record = before;
            return Err(err.on(format!("pool {pool}")));
        }
        Ok(out)
    }

    // ---- pools ----

    pub fn pool_names(&self) -> Vec<PoolName> {
        self.read().keys().cloned().collect()
    }

    pub fn pool_config(&self, pool: &PoolName) -> Result<PoolConfig> {
        self.read()
            .get(pool)
            .map(|r| r.pool.clone())
            .ok_or_else(|| pool_not_found(pool))
    }

    pub fn pool_info(&self, pool: &PoolName) -> Result<PoolInfo> {
        let pools = self.read();
        let config = pools
            .get(pool)
            .ok_or_else(|| pool_not_found(pool))?
            .pool
            .clone();
        let included_in = pool::included_in(&config, pools.values().map(|r| &r.pool));
        drop(pools);
        Ok(PoolInfo {
            usage: pool::usage(&config.dir_path),
            included_in,
            config,
        })
    }

    /// Pool setup (R§3.1) then registration; a refused pool leaves no directory behind.
    pub fn create_pool(&self, spec: PoolSpec) -> Result<PoolConfig> {
        let object = format!("pool {}", spec.name);
        {
            let pools = self.read();
            if pools.contains_key(&spec.name) {
                return Err(EngineError::already_exists("a pool of that name exists").on(object));
            }
            if let Some(other) = pools
                .values()
                .find(|r| same_dir(&r.pool.dir_path, &spec.dir_path))
            {
                return Err(EngineError::already_exists(format!(
                    "pool {} already uses {}",
                    other.pool.name,
                    spec.dir_path.display()
                ))
                .on(object));
            }
        }
        pool::setup(&spec).map_err(|e| e.on(&object))?;
        if let Some(other) = self
            .read()
            .values()
            .find(|r| same_dir(&r.pool.dir_path, &spec.dir_path))
        {
            // Only reachable through a path that names the directory differently
            // (a symlink, `..`, a bind mount) and was created just now by a race.
            return Err(EngineError::already_exists(format!(
                "pool {} already uses {}",
                other.pool.name,
                spec.dir_path.display()
            ))
            .on(object));
        }
        let record = PoolRecord {
            pool: PoolConfig {
                name: spec.name.clone(),
                dir_path: spec.dir_path,
                setup_check: spec.setup_check,
                revisions_to_keep: spec.revisions_to_keep,
                ephemeral_volatile: spec.ephemeral_volatile,
            },
            volumes: BTreeMap::new(),
        };
        let mut pools = self.write();
        if pools.contains_key(&spec.name) {
            return Err(EngineError::already_exists("a pool of that name exists").on(object));
        }
        self.store.save(&record).map_err(|e| e.on(&object))?;
        info!(pool = %spec.name, dir = %record.pool.dir_path.display(), "pool created");
        let config = record.pool.clone();
        pools.insert(spec.name, record);
        Ok(config)
    }

    /// `Busy` while the pool holds volumes. Never deletes files.
    pub fn remove_pool(&self, pool: &PoolName) -> Result<()> {
        let mut pools = self.write();
        let record = pools.get(pool).ok_or_else(|| pool_not_found(pool))?;
        if !record.volumes.is_empty() {
            return Err(EngineError::busy(format!(
                "the pool still holds {} volume(s)",
                record.volumes.len()
            ))
            .on(format!("pool {pool}")));
        }
        self.store
            .delete(pool)
            .map_err(|e| e.on(format!("pool {pool}")))?;
        pools.remove(pool);
        info!(pool = %pool, "pool removed (its directory is left as it is)");
        Ok(())
    }

    pub fn set_pool_revisions_to_keep(
        &self,
        pool: &PoolName,
        value: RevisionsToKeep,
    ) -> Result<()> {
        self.update_pool(pool, |r| {
            r.pool.revisions_to_keep = value;
            Ok(())
        })
    }

    pub fn set_pool_ephemeral_volatile(&self, pool: &PoolName, value: bool) -> Result<()> {
        self.update_pool(pool, |r| {
            r.pool.ephemeral_volatile = value;
            Ok(())
        })
    }

    // ---- volumes: registry and properties ----

    pub fn volume_vids(&self, pool: &PoolName) -> Result<Vec<Vid>> {
        let pools = self.read();
        let record = pools.get(pool).ok_or_else(|| pool_not_found(pool))?;
        Ok(record.volumes.keys().cloned().collect())
    }

    /// Pool directory, pool config and the volume's config (+ its source's).
    fn lookup(&self, vol: &VolumeRef) -> Result<(PoolConfig, VolumeConfig, Option<VolumeConfig>)> {
        let pools = self.read();
        let record = pools
            .get(&vol.pool)
            .ok_or_else(|| pool_not_found(&vol.pool))?;
        let config = record
            .volumes
            .get(&vol.vid)
            .cloned()
            .ok_or_else(|| EngineError::not_found("no such volume").on(vol))?;
        let source = config
            .source
            .as_ref()
            .and_then(|s| record.volumes.get(s).cloned());
        Ok((record.pool.clone(), config, source))
    }

    fn source_view(pool_dir: &Path, source: Option<VolumeConfig>) -> Option<SourceView> {
        source.map(|config| SourceView {
            paths: crate::layout::VolumePaths::new(pool_dir, &config.vid),
            config,
        })
    }

    pub fn volume_info(&self, vol: &VolumeRef) -> Result<VolumeInfo> {
        let (pool, config, source) = self.lookup(vol)?;
        let source = Self::source_view(&pool.dir_path, source);
        let v = Volume::new(&pool.dir_path, config.clone());
        Ok(VolumeInfo {
            pool: vol.pool.clone(),
            size: v.visible_size(source.as_ref()),
            usage: v.usage(),
            ephemeral: config.ephemeral_effective(pool.ephemeral_volatile),
            snapshots_disabled: config.snapshots_disabled(),
            is_dirty: v.is_dirty(),
            is_outdated: v.is_outdated(source.as_ref()),
            started: v.is_started(),
            revisions: revision::list(&v.paths).map_err(|e| e.on(vol))?,
            block_device_path: v.paths.dirty(),
            config,
        })
    }

    /// The span every log line of a volume operation carries: op, pool and vid.
    fn span(vol: &VolumeRef, ctx: &OpCtx) -> tracing::Span {
        tracing::info_span!("volume", op = ctx.operation(), pool = %vol.pool, vid = %vol.vid)
    }

    /// Run `op` on a volume under its lock; persist its configuration if `op` changed it
    /// (also when `op` failed after changing it).
    fn with_volume<T>(
        &self,
        vol: &VolumeRef,
        ctx: &OpCtx,
        op: impl FnOnce(&mut Volume<'_>, Option<&SourceView>) -> Result<T>,
    ) -> Result<T> {
        let _span = Self::span(vol, ctx).entered();
        let lock = self.locks.get(vol);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        ctx.set_subject(vol);
        let (pool, config, source) = self.lookup(vol)?;
        let source = Self::source_view(&pool.dir_path, source);
        let mut v = Volume::new(&pool.dir_path, config.clone());
        v.check_dirs().map_err(|e| e.on(vol))?;
        let out = op(&mut v, source.as_ref());
        if v.config != config {
            let new = v.config.clone();
            self.update_pool(&vol.pool, |r| {
                r.volumes.insert(vol.vid.clone(), new);
                Ok(())
            })
            .map_err(|e| e.on(vol))?;
        }
        out.map_err(|e| e.on(vol))
    }

    fn effective_config(
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

    fn create_volume_locked(
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
        let v = Volume::new(&pool_config.dir_path, config.clone());
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
    fn check_adoptable(v: &Volume<'_>) -> Result<()> {
        let committed = v.paths.clean().exists() || !revision::list(&v.paths)?.is_empty();
        if committed && !v.config.save_on_stop {
            return Err(EngineError::invalid(
                "cannot adopt committed data as a volume that is not save_on_stop (its next start or stop would delete it)",
            ));
        }
        Ok(())
    }

    /// Files of an unregistered vid: data-free ones (what a create interrupted by a
    /// crash leaves) are removed; anything holding data makes this `AlreadyExists` —
    /// CreateVolume never deletes what a user wrote.
    fn clear_leftovers(vol: &VolumeRef, v: &Volume<'_>, ctx: &OpCtx) -> Result<()> {
        let leftovers = v.existing_images().map_err(|e| e.on(vol))?;
        let Some(first) = leftovers.first() else {
            return Ok(());
        };
        if holds_no_data(&leftovers, v) {
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
        let v = Volume::new(&pool.dir_path, config);
        v.check_dirs().map_err(|e| e.on(vol))?;
        if v.is_started() {
            return Err(EngineError::busy("cannot remove a started volume").on(vol));
        }
        self.refuse_while_importing(vol, "remove the volume")
            .map_err(|e| e.on(vol))?;
        // Files first, then the registration: a crash in between leaves a registered
        // volume with some files gone, and Remove can simply be called again.
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
        v.remove(ctx).map_err(|e| e.on(vol))?;
        self.update_pool(&vol.pool, |r| {
            r.volumes.remove(&vol.vid);
            Ok(())
        })
        .map_err(|e| e.on(vol))?;
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
            if let Some(consumer) = switching.then(|| self.started_consumer(vol, v.pool_dir)).flatten() {
                return Err(EngineError::busy(format!(
                    "cannot enable or disable snapshots (revisions_to_keep -1) while volume {consumer}, which snapshots it, is started"
                )));
            }
            v.config.revisions_to_keep = value;
            Ok(())
        })
    }

    /// A started volume of the pool whose source is `vol`.
    fn started_consumer(&self, vol: &VolumeRef, pool_dir: &Path) -> Option<Vid> {
        let pools = self.read();
        let record = pools.get(&vol.pool)?;
        record
            .volumes
            .values()
            .filter(|c| c.source.as_ref() == Some(&vol.vid))
            .find(|c| Volume::new(pool_dir, (*c).clone()).is_started())
            .map(|c| c.vid.clone())
    }

    /// `true` is `InvalidArgument` for snap_on_start, save_on_stop or read-only volumes.
    pub fn set_ephemeral(&self, vol: &VolumeRef, value: bool) -> Result<()> {
        self.with_volume(vol, &OpCtx::quiet("SetEphemeral"), |v, _| {
            v.config.ephemeral = validate_ephemeral(&v.config, Some(value))?;
            Ok(())
        })
    }

    // ---- volumes: lifecycle ----

    /// R§3.7; returns the block device path (the dirty image).
    pub fn start(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<PathBuf> {
        let (_, config, _) = self.lookup(vol)?;
        self.with_source_locked(vol, config.source.as_ref(), || {
            self.with_volume(vol, ctx, |v, source| {
                self.refuse_while_importing(vol, "start")?;
                v.start(source, ctx)
            })
        })
    }

    /// Run `f` holding the lock of a snapshot volume's source, so the source cannot
    /// start, commit, switch snapshots off or be removed between the snapshot's checks
    /// and its hardlink. Lock order: source, then consumer (a source never locks its
    /// consumers).
    fn with_source_locked<T>(
        &self,
        vol: &VolumeRef,
        source: Option<&Vid>,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        // A volume is never its own source (refused by validation); don't lock twice.
        let source = source.filter(|vid| **vid != vol.vid);
        let lock = source.map(|vid| {
            self.locks.get(&VolumeRef {
                pool: vol.pool.clone(),
                vid: vid.clone(),
            })
        });
        let _guard = lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
        f()
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
    fn persist_volatile_size(&self, vol: &VolumeRef, v: &mut Volume<'_>) -> Result<()> {
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
        Volume::new(&pool.dir_path, config)
            .verify(source.as_ref())
            .map_err(|e| e.on(vol))
    }

    /// R§3.13; `None` = highest id. `NotFound` without revisions or for an unknown id.
    pub fn revert(&self, vol: &VolumeRef, revision: Option<u64>, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "revert")?;
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
            self.refuse_while_importing(vol, "resize")?;
            v.resize(size, allow_shrink, ctx)
        })
    }

    /// A read-only open file of the committed image; stays consistent while later
    /// commits replace the file (they rename a new inode over it).
    pub fn export(&self, vol: &VolumeRef, ctx: &OpCtx) -> Result<File> {
        self.with_volume(vol, ctx, |v, _| v.export(ctx))
    }

    /// R§3.17: a fresh sparse import file of `size` bytes; returns it opened write-only.
    pub fn import_data(&self, vol: &VolumeRef, size: u64, ctx: &OpCtx) -> Result<File> {
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "start another import")?;
            let file = v.import_data(size)?;
            let owner = ctx.caller().map(str::to_owned);
            self.importing_set().insert(vol.clone(), owner);
            Ok(file)
        })
    }

    /// R§3.18. Ends the import in progress (also one left by a client that went away:
    /// `false` discards it).
    pub fn import_data_end(&self, vol: &VolumeRef, success: bool, ctx: &OpCtx) -> Result<()> {
        self.with_volume(vol, ctx, |v, _| {
            let out = v.import_data_end(success, ctx);
            // A commit that failed (a full disk) keeps the written import file: the
            // import stays in progress, so nothing deletes it before a retry or
            // ImportDataEnd(false).
            if out.is_ok() || !success {
                self.importing_set().remove(vol);
            }
            out
        })
    }

    fn importing_set(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeRef, Option<String>>> {
        self.importing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The volumes whose import `caller` opened and has not ended.
    pub fn imports_of(&self, caller: &str) -> Vec<VolumeRef> {
        let importing = self.importing_set();
        importing
            .iter()
            .filter(|(_, owner)| owner.as_deref() == Some(caller))
            .map(|(vol, _)| vol.clone())
            .collect()
    }

    /// The caller that opened `vol`'s import went away without ending it: discard the
    /// import as ImportDataEnd(false) would. Returns whether there was one to discard
    /// (an import ended meanwhile, or opened by someone else, is left alone).
    pub fn abandon_import(&self, vol: &VolumeRef, caller: &str, ctx: &OpCtx) -> Result<bool> {
        self.with_volume(vol, ctx, |v, _| {
            if self.importing_set().get(vol).and_then(Option::as_deref) != Some(caller) {
                return Ok(false);
            }
            info!(pool = %vol.pool, vid = %vol.vid, caller, "the importer went away: discarding its import");
            let out = v.import_data_end(false, ctx);
            self.importing_set().remove(vol);
            out.map(|_| true)
        })
    }

    /// Between ImportData and ImportDataEnd the import file is the importer's: nothing
    /// else may replace, commit or delete it. Called under the volume's lock.
    fn refuse_while_importing(&self, vol: &VolumeRef, what: &str) -> Result<()> {
        if self.importing_set().contains_key(vol) {
            return Err(EngineError::busy(format!(
                "cannot {what} while an import is in progress (end it with ImportDataEnd)"
            )));
        }
        Ok(())
    }

    /// R§3.19: clone `source` (any pool) into `vol`.
    pub fn import_volume(&self, vol: &VolumeRef, source: &VolumeRef, ctx: &OpCtx) -> Result<()> {
        if vol == source {
            return Err(EngineError::invalid("cannot import a volume into itself").on(vol));
        }
        let (src_pool, src_config, _) = self.lookup(source)?;
        self.with_volume(vol, ctx, |v, _| {
            self.refuse_while_importing(vol, "import another volume")?;
            let src = Volume::new(&src_pool.dir_path, src_config);
            src.check_dirs()?;
            v.import_volume(&src, ctx)
        })
    }
}

/// The same directory, however it is named: equal paths, or the same inode
/// (symlinks, `..`, bind mounts). Two pools on one directory would have two sets of
/// locks over the same files.
fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => crate::sys::same_inode(&a, &b),
        _ => false,
    }
}

/// Leftover images hold nothing a user wrote: no revision among them, and none has an
/// allocated block (a freshly created image is all hole).
fn holds_no_data(leftovers: &[PathBuf], v: &Volume<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let images = [v.paths.clean(), v.paths.dirty(), v.paths.precache()];
    leftovers
        .iter()
        .all(|p| images.contains(p) && std::fs::symlink_metadata(p).is_ok_and(|m| m.blocks() == 0))
}

/// R§1.3: `ephemeral = true` only for volatile-type volumes (not snap_on_start, not
/// save_on_stop, rw).
fn validate_ephemeral(config: &VolumeConfig, value: Option<bool>) -> Result<Option<bool>> {
    if value == Some(true) && (config.snap_on_start || config.save_on_stop || !config.rw) {
        return Err(EngineError::invalid(
            "ephemeral can only be true for a read-write volume that is neither snap_on_start nor save_on_stop",
        ));
    }
    Ok(value)
}
