//! The engine's facade: the registry of pools and volumes, the per-vid locks and the
//! persistence of their configuration. Every method is blocking (file work); the bus
//! layer runs them off its executor. Volume operations take the volume's lock (one per
//! vid, shared by every caller) for their whole duration, so different volumes work in
//! parallel and one volume's operations are serialised.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

mod imports;
mod lifecycle;
mod pools;
mod sweep;
mod volumes;

use crate::context::OpCtx;
use crate::dir::Dir;
use crate::error::{EngineError, IoContext, Result};
use crate::lock::VidLocks;
use crate::model::{PoolConfig, VolumeConfig, VolumeRef};
use crate::names::{PoolName, RevisionsToKeep, Vid};
use crate::pool;
use crate::store::{PoolRecord, Store};
use crate::volume::{SourceView, Volume};

pub use imports::Import;

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
    /// Held for the engine's life when opened with [`Engine::open_exclusive`].
    _instance: Option<crate::instance::InstanceLock>,
    state_dir: PathBuf,
    store: Store,
    pools: RwLock<BTreeMap<PoolName, PoolRecord>>,
    locks: VidLocks,
    /// Volumes between ImportData and ImportDataEnd: who opened the import, its
    /// declared size, a failed commit. Every other change is refused meanwhile.
    importing: Mutex<HashMap<VolumeRef, Import>>,
    /// Held for the whole of a CreatePool (checks, setup, registration), so that two
    /// never both succeed on one directory and none sees another's pending setup.
    creating_pool: Mutex<()>,
}

pub(super) fn pool_not_found(pool: &PoolName) -> EngineError {
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
            _instance: None,
            state_dir: state_dir.to_owned(),
            store,
            pools: RwLock::new(pools),
            locks: VidLocks::default(),
            importing: Mutex::new(HashMap::new()),
            creating_pool: Mutex::new(()),
        })
    }

    /// [`Engine::open`] for the one engine that serves `state_dir` (the daemon): first
    /// takes the state directory's instance lock, held until the engine is dropped, so a
    /// second one fails with `Busy` naming the first's pid.
    pub fn open_exclusive(state_dir: &Path) -> Result<Engine> {
        std::fs::create_dir_all(state_dir)
            .io_ctx(|| format!("cannot create the state directory {}", state_dir.display()))?;
        let instance = crate::instance::InstanceLock::acquire(state_dir)?;
        let mut engine = Engine::open(state_dir)?;
        engine._instance = Some(instance);
        Ok(engine)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<PoolName, PoolRecord>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<PoolName, PoolRecord>> {
        self.pools.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Change a pool record under the write lock and persist it; on a persistence
    /// failure the in-memory record is restored.
    pub(super) fn update_pool<T>(
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

    /// Pool directory, pool config and the volume's config (+ its source's).
    pub(super) fn lookup(
        &self,
        vol: &VolumeRef,
    ) -> Result<(PoolConfig, VolumeConfig, Option<VolumeConfig>)> {
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

    pub(super) fn source_view(pool_dir: &Path, source: Option<VolumeConfig>) -> Option<SourceView> {
        source.map(|config| SourceView {
            paths: crate::layout::VolumePaths::new(pool_dir, &config.vid),
            config,
        })
    }

    /// The span every log line of a volume operation carries: op, pool and vid.
    pub(super) fn span(vol: &VolumeRef, ctx: &OpCtx) -> tracing::Span {
        tracing::info_span!("volume", op = ctx.operation(), pool = %vol.pool, vid = %vol.vid)
    }

    /// Run `op` on a volume under its lock; persist its configuration if `op` changed it
    /// (also when `op` failed after changing it).
    pub(super) fn with_volume<T>(
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
        let root = Self::open_root(&pool, vol)?;
        let mut v = Volume::new(&root, config.clone());
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

    /// The pool directory for an operation on `vol` (every file below is reached
    /// through this fd).
    pub(super) fn open_root(pool: &PoolConfig, vol: &VolumeRef) -> Result<Dir> {
        pool::open_root(&pool.dir_path).map_err(|e| e.on(vol))
    }

    /// The pool directory for a getter, `None` when it cannot be opened (a getter then
    /// sees no files).
    pub(super) fn open_root_to_read(pool: &PoolConfig) -> Option<Dir> {
        pool::open_root(&pool.dir_path).ok()
    }

    /// Run `f` holding the lock of a snapshot volume's source, so the source cannot
    /// start, commit, switch snapshots off or be removed between the snapshot's checks
    /// and its hardlink. Lock order: source, then consumer (a source never locks its
    /// consumers).
    pub(super) fn with_source_locked<T>(
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
}

/// The same directory, however it is named: equal paths, or the same inode
/// (symlinks, `..`, bind mounts). Two pools on one directory would have two sets of
/// locks over the same files.
pub(super) fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => crate::sys::same_inode(&a, &b),
        _ => false,
    }
}
