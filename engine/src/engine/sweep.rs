//! The start-up sweep: what an interrupted operation left behind and no running
//! operation owns (issue 9 item 9). The daemon calls [`Engine::sweep_leftovers`] after
//! loading its state (and finishing interrupted removals) and before it serves, when
//! nothing runs yet:
//!
//! * temp files of any volume — `<final name>~XXXXXXXX`
//!   ([`layout::is_volume_temp`]) — in the VM directories of every registered pool,
//!   whether or not their volume is registered (a killed CreateVolume leaves them for a
//!   vid that never got registered); such a name only ever holds an incomplete write,
//!   or a clone's hard link of another volume's committed image (unlinking that name
//!   leaves the image to its volume);
//! * discarded files of any volume — `<final name>~reap-XXXXXXXX`
//!   ([`layout::is_volume_discard`]): files an operation took out of the committed
//!   state and whose deletion after its reply a crash or a shutdown cut short;
//! * the named fallback of the reflink probe, `.reflink-probe~XXXXXXXX`, in a pool
//!   directory;
//! * the import file (`<name>-import.img`) of every registered volume without an
//!   import in progress: after a restart no import is, and a stale one must never be
//!   committed;
//! * the running image of every registered snapshot or volatile volume that was made
//!   in an earlier boot ([`running::Made::EarlierBoot`]), with a snapshot's link of its
//!   source: no VM runs on it any more after the reboot and the next start would make
//!   it afresh (docs/durability.md, rule 9), so the volume is stopped, as its Stop
//!   would — otherwise a power cut left the volumes of every VM that ran looking
//!   started (a Remove refused, a template's snapshots in use) until each was started
//!   and stopped again. It is also what lets their Stop wait for no barrier: a power
//!   cut that undoes a stop leaves the same images. A restarted service in the same
//!   boot keeps them (their VMs may run), and so does it an unmarked image (made by
//!   the reference driver, or where user xattrs are not kept). A snapshot's link left
//!   without its running image (an interrupted stop) goes too.
//!
//! Nothing else is touched: a pool directory can be an existing Qubes pool whose
//! volumes are not (yet) registered, and their files — images, revisions, even an
//! import of the reference driver — may hold a user's data that the service does not
//! own. Like every other file operation the sweep goes through [`Dir`]: the pool
//! directory (which must be private to the service, as for any volume operation), its
//! class and VM directories opened beneath it without following a symlink, and only
//! regular files, removed by name relative to their directory; every removal is logged
//! at info. A pool or directory that cannot be read is skipped with a warning: the
//! sweep never keeps the service from starting.

use tracing::{info, warn};

use super::Engine;
use crate::dir::Dir;
use crate::durable;
use crate::error::Result;
use crate::layout::{self, VolumePaths};
use crate::model::{PoolConfig, VolumeConfig, VolumeKind, VolumeRef};
use crate::names::{Vid, VmClass};
use crate::pool;
use crate::running::{self, Made};

/// The temp name of the reflink probe's fallback (see `copy::probe_reflink`).
const PROBE_TEMP_PREFIX: &str = ".reflink-probe~";

impl Engine {
    /// Removes the leftovers described in the module comment from every registered
    /// pool; returns how many files it removed. Call it before serving: it assumes no
    /// operation runs.
    pub fn sweep_leftovers(&self) -> usize {
        let pools: Vec<(PoolConfig, Vec<VolumeConfig>)> = self
            .pool_map()
            .values()
            .map(|pool| {
                let state = pool.read();
                (state.config().clone(), state.volumes().cloned().collect())
            })
            .collect();
        pools
            .iter()
            .map(|(config, volumes)| match self.sweep_pool(config, volumes) {
                Ok(removed) => removed,
                Err(err) => {
                    warn!(pool = %config.name, error = %err, "cannot sweep the pool directory");
                    0
                }
            })
            .sum()
    }

    fn sweep_pool(&self, config: &PoolConfig, volumes: &[VolumeConfig]) -> Result<usize> {
        let root = pool::open_root(&config.dir_path)?;
        root.check_private()?;
        let mut removed = remove_where(config, &root, is_probe_temp);
        for class in VmClass::ALL {
            removed += sweep_class(config, &root, class);
        }
        let vids: Vec<Vid> = volumes.iter().map(|v| v.vid.clone()).collect();
        for vid in self.stale_imports(config, &vids) {
            if let Some((dir, paths)) = vm_dir_of(config, &root, &vid) {
                removed += usize::from(remove_leftover(config, &dir, &paths.import_name()));
            }
        }
        for volume in volumes {
            let snapshot = match volume.kind() {
                VolumeKind::Snapshot => true,
                VolumeKind::Volatile => false,
                _ => continue,
            };
            if let Some((dir, paths)) = vm_dir_of(config, &root, &volume.vid) {
                removed += stop_after_reboot(config, &dir, &paths, snapshot);
            }
        }
        Ok(removed)
    }

    /// The registered volumes that no import in progress owns.
    fn stale_imports(&self, config: &PoolConfig, vids: &[Vid]) -> Vec<Vid> {
        let importing = self.importing_set();
        vids.iter()
            .filter(|vid| {
                let vol = VolumeRef {
                    pool: config.name.clone(),
                    vid: (*vid).clone(),
                };
                !importing.contains_key(&vol)
            })
            .cloned()
            .collect()
    }
}

/// The VM directory of the registered volume `vid` and its paths; `None` when it is
/// missing, or in a class directory that is not private to the service (as every
/// volume operation refuses it; warned).
fn vm_dir_of(config: &PoolConfig, root: &Dir, vid: &Vid) -> Option<(Dir, VolumePaths)> {
    let paths = VolumePaths::new(&config.dir_path, vid);
    if let Err(err) = pool::check_private(root, &paths) {
        warn!(pool = %config.name, error = %err, "not sweeping a class directory");
        return None;
    }
    subdir(config, root, paths.vm_dir_rel()).map(|dir| (dir, paths))
}

/// A snapshot's or volatile volume's running image made in an earlier boot is removed,
/// and a snapshot's link of its source when no running image is left: the volume is
/// stopped. Returns how many files went.
fn stop_after_reboot(config: &PoolConfig, dir: &Dir, paths: &VolumePaths, snapshot: bool) -> usize {
    let pool = &config.name;
    let dirty = paths.dirty_name();
    let mut removed = 0;
    if dir
        .entry(&dirty)
        .is_ok_and(|e| e.is_some_and(|e| e.is_file()))
        && running::made_at(dir, &dirty) == Made::EarlierBoot
    {
        info!(%pool, path = %dir.join(&dirty).display(),
            "a running image made before the last reboot, which no VM runs on any more: the volume is stopped");
        removed += usize::from(remove_file(config, dir, &dirty));
    }
    if snapshot && !dir.exists(&dirty) {
        let link = paths.clean_name();
        if dir
            .entry(&link)
            .is_ok_and(|e| e.is_some_and(|e| e.is_file()))
        {
            info!(%pool, path = %dir.join(&link).display(),
                "a stopped snapshot's link of its source, left by a stop a power cut undid in part");
            removed += usize::from(remove_file(config, dir, &link));
        }
    }
    removed
}

/// Temps of any volume in every VM directory of one class directory.
fn sweep_class(config: &PoolConfig, root: &Dir, class: VmClass) -> usize {
    let Some(class_dir) = subdir(config, root, class.dir_name()) else {
        return 0;
    };
    if let Err(err) = class_dir.check_private() {
        warn!(pool = %config.name, error = %err, "not sweeping a class directory");
        return 0;
    }
    names(config, &class_dir)
        .iter()
        .filter(|name| {
            class_dir
                .entry(name)
                .is_ok_and(|e| e.is_some_and(|e| e.is_dir()))
        })
        .filter_map(|vm| subdir(config, &class_dir, vm))
        .map(|vm_dir| remove_where(config, &vm_dir, is_leftover))
        .sum()
}

/// The directory `rel` beneath `dir` (never through a symlink); `None` when missing or
/// refused (warned).
fn subdir(config: &PoolConfig, dir: &Dir, rel: &str) -> Option<Dir> {
    dir.open_subdir(rel)
        .inspect_err(|err| warn!(pool = %config.name, error = %err, "not sweeping a directory"))
        .ok()
        .flatten()
}

/// The names in `dir`; none when it cannot be listed (warned).
fn names(config: &PoolConfig, dir: &Dir) -> Vec<String> {
    dir.names()
        .inspect_err(
            |err| warn!(pool = %config.name, error = %err, "cannot list a directory to sweep"),
        )
        .unwrap_or_default()
}

/// Remove the regular files of `dir` whose name matches; returns how many.
fn remove_where(config: &PoolConfig, dir: &Dir, matches: impl Fn(&str) -> bool) -> usize {
    names(config, dir)
        .iter()
        .filter(|name| matches(name))
        .filter(|name| remove_leftover(config, dir, name))
        .count()
}

/// Remove `name` from `dir` if it is a regular file; returns whether it was removed.
fn remove_leftover(config: &PoolConfig, dir: &Dir, name: &str) -> bool {
    if !dir
        .entry(name)
        .is_ok_and(|e| e.is_some_and(|e| e.is_file()))
    {
        return false;
    }
    info!(pool = %config.name, path = %dir.join(name).display(), "removing a leftover of an interrupted operation");
    remove_file(config, dir, name)
}

/// Remove `name` of `dir` (logged by [`durable::remove_at`]); whether it went.
fn remove_file(config: &PoolConfig, dir: &Dir, name: &str) -> bool {
    durable::remove_at(dir, name)
        .inspect_err(|err| warn!(pool = %config.name, error = %err, "cannot remove a leftover"))
        .is_ok_and(|removed| removed)
}

/// A temp or discarded file of some volume.
fn is_leftover(name: &str) -> bool {
    layout::is_volume_temp(name) || layout::is_volume_discard(name)
}

/// The reflink probe's named temps in a pool directory.
fn is_probe_temp(name: &str) -> bool {
    name.strip_prefix(PROBE_TEMP_PREFIX)
        .is_some_and(|random| random.len() == layout::TEMP_RANDOM_LEN)
}
