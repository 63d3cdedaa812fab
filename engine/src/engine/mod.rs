//! The engine's facade: the registry of pools and volumes, the per-vid locks and the
//! persistence of their configuration. Every method is blocking (file work); the bus
//! layer runs them off its executor. Volume operations hold the volume's lock (one per
//! vid, shared by every caller) exclusively for their whole duration, and a snapshot
//! volume's start or creation also holds its source's lock shared, so different volumes
//! — and the snapshots of one template — work in parallel while one volume's changes
//! are serialised. Getters take no vid lock: they never wait for an operation.
//!
//! Work an operation leaves for after its reply — deleting discarded files, making a
//! precache on a pool with reflinks — is done by the [`Background`] worker of its
//! pool's filesystem ([`PerFilesystem`]); [`Engine::settle`] waits for every one, a
//! measurement for its pool's.
//!
//! Order of every change: what can fail without changing anything first; the state
//! directory is written before the files when a failure of the file work can be undone
//! there (Remove unregisters first, Resize records the new size first), after them when
//! the files are the undoable part (CreateVolume), so a failure or a crash leaves the
//! old state or the new one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod deltas;
mod imports;
mod lifecycle;
mod live;
mod measurements;
mod notes;
mod pool_space;
mod pools;
mod sessions;
mod sweep;
mod volumes;

use crate::background::{Activity, Background, PerFilesystem};
use crate::context::OpCtx;
use crate::dir::Dir;
use crate::error::{EngineError, Result};
use crate::lock::VidLocks;
use crate::model::{PoolConfig, VolumeConfig, VolumeRef};
use crate::names::{PoolName, Vid};
use crate::pool;
use crate::registry::Pool;
use crate::store::{Change, Store};
use crate::volume::{SourceView, Volume};

pub use crate::model::PoolSpec;
pub use deltas::ExportedDelta;
pub use imports::Import;
use measurements::Measurements;

pub struct Engine {
    /// Held for the engine's life when opened with [`Engine::open_exclusive`].
    _instance: Option<crate::instance::InstanceLock>,
    state_dir: PathBuf,
    store: Store,
    pools: RwLock<BTreeMap<PoolName, Arc<Pool>>>,
    /// Held for the whole of a CreatePool (checks, setup, registration) and a
    /// RemovePool, so that two never both succeed on one directory and none sees
    /// another's pending setup.
    pool_admin: Mutex<()>,
    locks: Arc<VidLocks>,
    /// Volumes between ImportData and ImportDataEnd: who opened the import, its
    /// declared size, a failed commit. Every other change is refused meanwhile.
    importing: Mutex<HashMap<VolumeRef, Import>>,
    /// Deletes discarded files and makes precaches after the replies, one queue and
    /// worker per filesystem; dropped (their queues finished) with the engine.
    background: PerFilesystem,
    /// Writes the files of imports in progress behind their importers.
    write_behind: crate::writeback::WriteBehind,
    /// The witnesses of the running sessions of volumes that commit at stop.
    sessions: sessions::Sessions,
    /// The bytes exclusive to each revision as last measured (not persisted: after a
    /// restart they are unknown until measured again).
    measured: Mutex<Measurements>,
}

/// An operation running on a pool ([`Engine::busy`]): holds the after-reply work of
/// its filesystem back until it ends, and is where its own is queued.
pub(super) struct Busy {
    background: Arc<Background>,
    _activity: Activity,
}

impl Busy {
    fn new(background: Arc<Background>) -> Busy {
        let _activity = background.activity();
        Busy {
            background,
            _activity,
        }
    }

    pub(super) fn background(&self) -> &Background {
        &self.background
    }
}

pub(super) fn pool_not_found(pool: &PoolName) -> EngineError {
    EngineError::not_found(format!("pool {pool} does not exist"))
}

impl Engine {
    /// Load the pools and volumes persisted in `state_dir` (created if missing, with
    /// an fsync of each new directory's parent). Nothing in the pools is changed: a
    /// volume found started stays started.
    pub fn open(state_dir: &Path) -> Result<Engine> {
        let store = Store::open(state_dir)?;
        let pools = store
            .load()?
            .into_iter()
            .map(|(state, files)| {
                (
                    state.config().name.clone(),
                    Arc::new(Pool::new(state, files)),
                )
            })
            .collect();
        Ok(Engine {
            _instance: None,
            state_dir: state_dir.to_owned(),
            store,
            pools: RwLock::new(pools),
            pool_admin: Mutex::new(()),
            locks: Arc::new(VidLocks::default()),
            importing: Mutex::new(HashMap::new()),
            background: PerFilesystem::default(),
            write_behind: Default::default(),
            sessions: Default::default(),
            measured: Mutex::new(Measurements::default()),
        })
    }

    /// [`Engine::open`] for the one engine that serves `state_dir` (the daemon): first
    /// takes the state directory's instance lock, held until the engine is dropped, so a
    /// second one fails with `Busy` naming the first's pid.
    pub fn open_exclusive(state_dir: &Path) -> Result<Engine> {
        crate::store::make_dirs(state_dir)?;
        let instance = crate::instance::InstanceLock::acquire(state_dir)?;
        let mut engine = Engine::open(state_dir)?;
        engine._instance = Some(instance);
        Ok(engine)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Wait until the work left for after the replies so far is done (discarded files
    /// deleted, precaches made) in every pool: for tests and benchmarks that look at
    /// the files.
    pub fn settle(&self) {
        self.background.settle_all();
    }

    /// [`Self::settle`] of the filesystem `pool` is on: what a measurement of it waits
    /// for. Nothing to wait for when its directory cannot be opened (the measurement
    /// then fails itself).
    pub(super) fn settle_pool(&self, pool: &PoolName) {
        let Ok(config) = self.pool_config(pool) else {
            return;
        };
        if let Ok(root) = pool::open_root(&config.dir_path) {
            self.background.settle(&root);
        }
    }

    /// An operation on the pool whose directory is `root` is running: work left for
    /// after earlier replies on its filesystem waits until it is quiet again (see
    /// [`crate::background`]). The guard holds the filesystem's queue.
    pub(super) fn busy(&self, root: &Dir) -> Busy {
        Busy::new(self.background.of(root))
    }

    pub(super) fn pool_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<PoolName, Arc<Pool>>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The live pool `name` (the map's lock is released at once).
    pub(super) fn pool(&self, name: &PoolName) -> Result<Arc<Pool>> {
        self.pool_map()
            .get(name)
            .cloned()
            .ok_or_else(|| pool_not_found(name))
    }

    /// Record a volume's new configuration durably, then apply it.
    pub(super) fn save_volume(&self, vol: &VolumeRef, config: VolumeConfig) -> Result<()> {
        self.pool(&vol.pool)?
            .change(Change::Put(config))
            .map_err(|e| e.on(vol))
    }

    /// [`Self::save_volume`] of `new` unless it is what `v` holds; then `v` holds it.
    pub(super) fn update_volume(
        &self,
        vol: &VolumeRef,
        v: &mut Volume<'_>,
        new: VolumeConfig,
    ) -> Result<()> {
        if v.config != new {
            self.save_volume(vol, new.clone())?;
            v.config = new;
        }
        Ok(())
    }

    /// Pool config, the volume's config and its source's.
    pub(super) fn lookup(
        &self,
        vol: &VolumeRef,
    ) -> Result<(PoolConfig, VolumeConfig, Option<VolumeConfig>)> {
        let pool = self.pool(&vol.pool)?;
        let state = pool.read();
        let config = state
            .get(&vol.vid)
            .cloned()
            .ok_or_else(|| EngineError::not_found("no such volume").on(vol))?;
        let source = config.source.as_ref().and_then(|s| state.get(s).cloned());
        Ok((state.config().clone(), config, source))
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

    /// Run `op` on a volume holding its lock exclusively. `op` records any change of
    /// the volume's configuration itself ([`Self::save_volume`]), in the order the
    /// operation needs.
    pub(super) fn with_volume<T>(
        &self,
        vol: &VolumeRef,
        ctx: &OpCtx,
        op: impl FnOnce(&mut Volume<'_>, Option<&SourceView>) -> Result<T>,
    ) -> Result<T> {
        let _span = Self::span(vol, ctx).entered();
        let lock = self.locks.get(vol);
        let _guard = crate::lock::write_within(&lock, ctx.patience()).ok_or_else(|| {
            EngineError::busy(
                "another operation on this volume is running (a copy of it, for example); \
                 try again when it has finished",
            )
            .on(vol)
        })?;
        ctx.set_subject(vol);
        let (pool, config, source) = self.lookup(vol)?;
        let source = Self::source_view(&pool.dir_path, source);
        let root = Self::open_root(&pool, vol)?;
        let busy = self.busy(&root);
        let mut v = self.volume(&root, &pool, config, busy.background());
        v.check_dirs().map_err(|e| e.on(vol))?;
        let out = op(&mut v, source.as_ref()).map_err(|e| e.on(vol));
        self.forget_vanished_notes(vol, &v);
        let out = out?;
        self.after_reply(vol, &v, busy.background());
        Ok(out)
    }

    /// The view of a volume that operations change: its discarded files go to the
    /// background worker of its filesystem (`background`), which also makes its
    /// precache on a pool with reflinks (one whose setup check passed).
    pub(super) fn volume<'a>(
        &'a self,
        root: &'a Dir,
        pool: &PoolConfig,
        config: VolumeConfig,
        background: &'a Background,
    ) -> Volume<'a> {
        Volume::new(root, config).with_background(background, pool.setup_check)
    }

    /// Queue what `v`'s operation left for after its reply, its precache, on
    /// `background` (its filesystem's).
    pub(super) fn after_reply(&self, vol: &VolumeRef, v: &Volume<'_>, background: &Background) {
        if !v.precache_due() {
            return;
        }
        let Ok(pool) = self.pool(&vol.pool) else {
            return;
        };
        let (locks, vol) = (self.locks.clone(), vol.clone());
        background.spawn(format!("precache of {vol}"), move || {
            refresh_precache(&pool, &locks, &vol)
        });
    }

    /// [`Self::with_volume`] for an operation that only reads the volume's files
    /// (measuring, comparing): its lock is held shared, so snapshots of it still start
    /// while the volume cannot change.
    pub(super) fn with_volume_read<T>(
        &self,
        vol: &VolumeRef,
        ctx: &OpCtx,
        op: impl FnOnce(&Volume<'_>) -> Result<T>,
    ) -> Result<T> {
        let _span = Self::span(vol, ctx).entered();
        let lock = self.locks.get(vol);
        let _guard = lock.read().unwrap_or_else(|e| e.into_inner());
        ctx.set_subject(vol);
        let (pool, config, _) = self.lookup(vol)?;
        let root = Self::open_root(&pool, vol)?;
        let v = Volume::new(&root, config);
        v.check_dirs().map_err(|e| e.on(vol))?;
        op(&v).map_err(|e| e.on(vol))
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

    /// Run `f` holding the lock of a snapshot volume's source shared, so the source
    /// cannot start, commit, switch snapshots off or be removed between the snapshot's
    /// checks and its hardlink, while other snapshots of it proceed. Lock order:
    /// source, then consumer (a source never locks its consumers).
    pub(super) fn with_source_held<T>(
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
            .map(|l| l.read().unwrap_or_else(|e| e.into_inner()));
        f()
    }
}

/// How long the precache task waits for its volume's lock before it leaves the
/// precache to the next start.
const PRECACHE_PATIENCE: Duration = Duration::from_millis(200);

/// The background task that makes `vol`'s precache, under the volume's lock, if the
/// volume is still registered, halted and an origin (see [`crate::precache`]). It never
/// waits long for the lock: its pool's worker runs the pool's jobs in turn, and a
/// measurement of the pool waits for them all (`settle_pool`) — a precache waiting for
/// a volume that a copy holds for minutes (a clone into it) held up every measurement,
/// and the calls queued behind a measurement on its volume, until the copy ended; and
/// on the operation's own thread (no worker could be started) it would wait for a lock
/// that thread holds. A precache not made costs the next start a reflink of its own
/// (and whoever holds the volume for long is usually about to change its committed
/// image and queue a new one).
fn refresh_precache(pool: &Pool, locks: &VidLocks, vol: &VolumeRef) {
    let lock = locks.get(vol);
    let Some(_guard) = crate::lock::write_within(&lock, Some(PRECACHE_PATIENCE)) else {
        tracing::info!(pool = %vol.pool, vid = %vol.vid,
            "the volume is busy: its precache is not made now; the next start makes its image itself");
        return;
    };
    let (pool_config, config) = {
        let state = pool.read();
        (state.config().clone(), state.get(&vol.vid).cloned())
    };
    let Some(config) = config else {
        return; // removed meanwhile
    };
    let made = pool::open_root(&pool_config.dir_path).and_then(|root| {
        let v = Volume::new(&root, config);
        v.check_dirs()?;
        v.refresh_precache()
    });
    if let Err(err) = made {
        tracing::warn!(pool = %vol.pool, vid = %vol.vid, error = %err,
            "could not prepare the precache; the next start will copy instead");
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
