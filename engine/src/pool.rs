//! Pool-level file work (R§3.1, §3.22, §3.23): setup with the reflink probe, usage from
//! statvfs, and which other pool's directory contains this one. Pools never delete
//! files: removing a pool only forgets its configuration.

use std::path::{Path, PathBuf};

use crate::copy;
use crate::durable;
use crate::engine::PoolSpec;
use crate::error::{EngineError, Result};
use crate::model::PoolConfig;
use crate::names::{PoolName, VmClass};
use crate::sys;

/// R§3.1: create the directory (single mkdir), probe reflinks when asked (removing a
/// directory created now if the probe refuses), then `appvms/` and `vm-templates/`.
pub fn setup(spec: &PoolSpec) -> Result<()> {
    let dir = &spec.dir_path;
    if !dir.is_absolute() {
        return Err(EngineError::invalid(format!(
            "dir_path {} is not absolute",
            dir.display()
        )));
    }
    let created = if dir.is_dir() {
        false
    } else {
        durable::ensure_dir(dir)?
    };
    let undo = |err: EngineError| {
        if created {
            let _ = durable::remove_dir_if_empty(dir);
        }
        err
    };
    if spec.setup_check && !copy::probe_reflink(dir).map_err(undo)? {
        return Err(undo(EngineError::not_supported(format!(
            "the filesystem at {} cannot reflink; if you accept slow VM start/stop and wasted space, pass setup_check=false",
            dir.display()
        ))));
    }
    for class in VmClass::ALL {
        durable::ensure_dir(&dir.join(class.dir_name())).map_err(undo)?;
    }
    Ok(())
}

/// `(data_size, data_usage)` of the filesystem holding the pool, or `None` when the
/// directory is missing (R§3.22).
pub fn usage(dir: &Path) -> Option<(u64, u64)> {
    if !dir.is_dir() {
        return None;
    }
    sys::statvfs_usage(dir).ok()
}

/// R§3.23 (directory search): the first other pool, in name order, whose directory's
/// realpath is a path prefix of this one's.
pub fn included_in<'a>(
    this: &PoolConfig,
    others: impl Iterator<Item = &'a PoolConfig>,
) -> Option<PoolName> {
    let mine: PathBuf = std::fs::canonicalize(&this.dir_path).ok()?;
    others
        .filter(|p| p.name != this.name)
        .find(|p| std::fs::canonicalize(&p.dir_path).is_ok_and(|theirs| mine.starts_with(theirs)))
        .map(|p| p.name.clone())
}
