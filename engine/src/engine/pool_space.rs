//! Measuring a whole pool's space on demand ([`crate::space::account`]): every regular
//! file of every VM directory of the pool — the registered volumes' files and
//! anything else there (volumes of an existing Qubes pool not adopted yet) — is mapped
//! once per inode, so each volume's exclusive bytes are what its Remove gives back and
//! its shared bytes what it references along with other files.
//!
//! Read like the live views (through [`Dir`], beneath the pool directory, no symlink
//! followed): it is a picture of a pool that may be changing, taken one file at a
//! time; a file gone meanwhile is left out. The running image of a snapshot or volatile
//! volume is opened only under that volume's lock held shared, for as long as it is
//! mapped: a Start asks whether anybody holds such an image open (a loop device) and
//! would take our descriptor for a running VM's, keeping that image instead of
//! starting afresh. Other files are read without any lock, so that a long operation
//! on one volume (a copy) does not hold up the measurement of the pool, nor the
//! measurement that operation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use super::measurements::{map_file, MEASURE_ANNOUNCE_FROM};
use super::Engine;
use crate::context::OpCtx;
use crate::dir::{Dir, Entry};
use crate::error::Result;
use crate::layout::{match_revision_name, VolumePaths};
use crate::meter::Meter;
use crate::model::{PoolConfig, VolumeConfig};
use crate::names::{PoolName, VmClass};
use crate::pool;
use crate::space::{account, Holding, VolumeSpace};
use crate::VolumeRef;

/// One inode found in the pool, before its extents are read.
struct Found {
    /// The VM directory (`appvms/<vm>`) and name it is first found under.
    vm_dir: String,
    name: String,
    entry: Entry,
    /// Names of it found in the pool.
    names: u64,
    /// The volume whose lock is held while it is mapped: the owner of `name` when
    /// that is the running image of a snapshot or volatile volume.
    owner: Option<usize>,
    holding: Holding,
}

/// The volumes of one VM directory: their index and paths.
type VmVolumes = HashMap<String, Vec<(usize, VolumePaths)>>;

impl Engine {
    /// Each volume's exclusive bytes (what its Remove gives back) and shared bytes, in
    /// vid order.
    pub fn measure_pool(&self, pool: &PoolName, ctx: &OpCtx) -> Result<Vec<VolumeSpace>> {
        let _span = tracing::info_span!("pool", op = ctx.operation(), pool = %pool).entered();
        // As for one volume: the work left for after earlier replies is done first.
        self.settle_pool(pool);
        let (config, volumes) = {
            let live = self.pool(pool)?;
            let state = live.read();
            let volumes: Vec<VolumeConfig> = state.volumes().cloned().collect();
            (state.config().clone(), volumes)
        };
        let root = pool::open_root(&config.dir_path).map_err(|e| e.on(format!("pool {pool}")))?;
        let mut found = gather(&root, &by_vm_dir(&config, &volumes))?;
        for inode in &mut found {
            inode.owner = inode.owner.filter(|&index| {
                let volume = &volumes[index];
                !volume.save_on_stop
                    && inode.name == VolumePaths::new(&config.dir_path, &volume.vid).dirty_name()
            });
        }
        let lock_of = |index: usize| {
            self.locks.get(&VolumeRef {
                pool: pool.clone(),
                vid: volumes[index].vid.clone(),
            })
        };
        map_all(&root, &mut found, &lock_of, ctx)?;
        let holdings: Vec<Holding> = found.into_iter().map(|f| f.holding).collect();
        let totals = account(&holdings, volumes.len());
        info!(pool = %pool, files = holdings.len(), volumes = volumes.len(), "pool space measured");
        Ok(volumes
            .into_iter()
            .zip(totals)
            .map(|(config, space)| VolumeSpace {
                vid: config.vid,
                space,
            })
            .collect())
    }
}

fn by_vm_dir(pool: &PoolConfig, volumes: &[VolumeConfig]) -> VmVolumes {
    let mut map: VmVolumes = HashMap::new();
    for (index, config) in volumes.iter().enumerate() {
        let paths = VolumePaths::new(&pool.dir_path, &config.vid);
        map.entry(config.vid.vm_dir())
            .or_default()
            .push((index, paths));
    }
    map
}

/// The volume whose file `name` is, among those of its VM directory.
fn owner(volumes: Option<&Vec<(usize, VolumePaths)>>, name: &str) -> Option<usize> {
    volumes?.iter().find_map(|(index, paths)| {
        let own = name == paths.clean_name()
            || name == paths.dirty_name()
            || name == paths.precache_name()
            || name == paths.import_name()
            || matches!(match_revision_name(paths.name(), name), Some(Ok(_)))
            || paths.is_own_temp(name);
        own.then_some(*index)
    })
}

/// Every regular file of every VM directory, one [`Found`] per inode with its owners.
fn gather(root: &Dir, volumes: &VmVolumes) -> Result<Vec<Found>> {
    let mut found: Vec<Found> = Vec::new();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    for class in VmClass::ALL {
        let Some(class_dir) = root.open_subdir(class.dir_name())? else {
            continue;
        };
        for vm in class_dir.names()? {
            let vm_dir = format!("{}/{vm}", class.dir_name());
            let dir = match class_dir.open_subdir(&vm) {
                Ok(Some(dir)) => dir,
                Ok(None) => continue,
                Err(err) => {
                    warn!(dir = %root.join(&vm_dir).display(), error = %err, "not measured");
                    continue;
                }
            };
            for name in dir.names()? {
                let Some(entry) = dir.entry(&name)?.filter(Entry::is_file) else {
                    continue;
                };
                let key = (entry.stat.st_dev, entry.stat.st_ino);
                let owned_by = owner(volumes.get(&vm_dir), &name);
                let index = *inodes.entry(key).or_insert_with(|| {
                    found.push(Found {
                        vm_dir: vm_dir.clone(),
                        name: name.clone(),
                        entry,
                        names: 0,
                        owner: owned_by,
                        holding: Holding::default(),
                    });
                    found.len() - 1
                });
                let inode = &mut found[index];
                inode.names += 1;
                match owned_by {
                    Some(volume) => inode.holding.owners.push(volume),
                    None => inode.holding.others = true,
                }
            }
        }
    }
    Ok(found)
}

/// The extents of every inode found, a disposable running image under its volume's
/// lock held shared (`lock_of`); an inode with links outside the pool is held by others
/// too.
fn map_all(
    root: &Dir,
    found: &mut [Found],
    lock_of: &dyn Fn(usize) -> Arc<RwLock<()>>,
    ctx: &OpCtx,
) -> Result<()> {
    let total = found.iter().map(|f| f.entry.size()).sum();
    let mut meter = Meter::start(ctx, total, MEASURE_ANNOUNCE_FROM);
    let mut open: Option<(String, Dir)> = None;
    for inode in found.iter_mut() {
        if open.as_ref().is_none_or(|(rel, _)| *rel != inode.vm_dir) {
            let Some(dir) = root.open_subdir(&inode.vm_dir)? else {
                continue;
            };
            open = Some((inode.vm_dir.clone(), dir));
        }
        let Some((_, dir)) = open.as_ref() else {
            continue;
        };
        let lock = inode.owner.map(lock_of);
        let _shared = lock
            .as_ref()
            .map(|lock| lock.read().unwrap_or_else(|e| e.into_inner()));
        let extents = map_file(dir, &inode.name, &inode.entry, &mut meter)?;
        inode.holding.extents = extents.unwrap_or_default();
        inode.holding.others |= inode.entry.links() > inode.names;
    }
    meter.finish(true);
    Ok(())
}
