//! The start-up sweep: what an interrupted operation left behind and no running
//! operation owns (issue 9 item 9). The daemon calls [`Engine::sweep_leftovers`] after
//! loading its state and before it serves, when nothing runs yet:
//!
//! * temp files of any volume — `<final name>~XXXXXXXX`
//!   ([`layout::is_volume_temp`]) — in the VM directories of every registered pool,
//!   whether or not their volume is registered (a killed CreateVolume leaves them for a
//!   vid that never got registered); such a name only ever holds an incomplete write;
//! * the named fallback of the reflink probe, `.reflink-probe~XXXXXXXX`, in a pool
//!   directory;
//! * the import file (`<name>-import.img`) of every registered volume without an
//!   import in progress: after a restart no import is, and a stale one must never be
//!   committed.
//!
//! Nothing else is touched: a pool directory can be an existing Qubes pool whose
//! volumes are not (yet) registered, and their files — images, revisions, even an
//! import of the reference driver — may hold a user's data that the service does not
//! own. Only regular files are removed, found without following symlinks; every
//! removal is logged at info. A pool whose directory cannot be read is skipped with a
//! warning: the sweep never keeps the service from starting.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::Engine;
use crate::durable;
use crate::layout::{self, VolumePaths};
use crate::model::VolumeRef;
use crate::names::VmClass;
use crate::store::PoolRecord;

/// The temp name of the reflink probe's fallback (see `copy::probe_reflink`).
const PROBE_TEMP_PREFIX: &str = ".reflink-probe~";

impl Engine {
    /// Removes the leftovers described in the module comment from every registered
    /// pool; returns how many files it removed. Call it before serving: it assumes no
    /// operation runs.
    pub fn sweep_leftovers(&self) -> usize {
        let pools: Vec<PoolRecord> = self.read().values().cloned().collect();
        pools.iter().map(|record| self.sweep_pool(record)).sum()
    }

    fn sweep_pool(&self, record: &PoolRecord) -> usize {
        let dir = &record.pool.dir_path;
        let mut garbage = probe_temps(dir);
        for class in VmClass::ALL {
            for vm_dir in real_dirs_in(&dir.join(class.dir_name())) {
                garbage.extend(volume_temps(&vm_dir));
            }
        }
        garbage.extend(self.stale_imports(record));
        let pool = &record.pool.name;
        garbage
            .iter()
            .filter(|path| {
                info!(%pool, path = %path.display(), "removing a leftover of an interrupted operation");
                durable::remove(path)
                    .inspect_err(|err| warn!(%pool, error = %err, "cannot remove a leftover"))
                    .is_ok_and(|removed| removed)
            })
            .count()
    }

    /// The import files of registered volumes that no import in progress owns.
    fn stale_imports(&self, record: &PoolRecord) -> Vec<PathBuf> {
        let importing = self.importing_set();
        record
            .volumes
            .keys()
            .filter(|vid| {
                let vol = VolumeRef {
                    pool: record.pool.name.clone(),
                    vid: (*vid).clone(),
                };
                !importing.contains_key(&vol)
            })
            .map(|vid| VolumePaths::new(&record.pool.dir_path, vid).import())
            .filter(|path| is_regular_file(path))
            .collect()
    }
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// The entries of `dir` (not following symlinks) for which `keep` holds; nothing when
/// `dir` is missing or unreadable (warned).
fn entries_where(dir: &Path, keep: impl Fn(&std::fs::DirEntry) -> bool) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            warn!(dir = %dir.display(), error = %err, "cannot list a directory to sweep");
            return Vec::new();
        }
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| keep(entry))
        .map(|entry| entry.path())
        .collect()
}

/// Real directories (not symlinks) in `dir`.
fn real_dirs_in(dir: &Path) -> Vec<PathBuf> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Vec::new();
    }
    entries_where(dir, |e| e.file_type().is_ok_and(|t| t.is_dir()))
}

fn regular_named(entry: &std::fs::DirEntry, name_matches: impl Fn(&str) -> bool) -> bool {
    entry.file_type().is_ok_and(|t| t.is_file())
        && entry.file_name().to_str().is_some_and(name_matches)
}

/// Temp files of any volume in one VM directory.
fn volume_temps(vm_dir: &Path) -> Vec<PathBuf> {
    entries_where(vm_dir, |e| regular_named(e, layout::is_volume_temp))
}

/// The reflink probe's named temps in a pool directory.
fn probe_temps(pool_dir: &Path) -> Vec<PathBuf> {
    let is_probe = |name: &str| {
        name.strip_prefix(PROBE_TEMP_PREFIX)
            .is_some_and(|random| random.len() == layout::TEMP_RANDOM_LEN)
    };
    entries_where(pool_dir, |e| regular_named(e, is_probe))
}
