//! Live views of volumes (R§3.14, §3.20, §3.21): read from the pool directory on every
//! call, never cached, with the fewest system calls the view needs — one listing of the
//! VM directory (which images exist, the revisions) and one lstat of the current image
//! (a started snapshot volume adds one of its source's image, a halted one reads its
//! source's size). [`Engine::volume_infos`] reads a whole pool's views, listing each VM
//! directory once: that is what the daemon does for every volume at start-up.
//!
//! Getters take no vid lock: they never wait behind an operation (a long copy), and
//! see each file either before or after its atomic replacement.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Engine;
use crate::error::{EngineError, IoContext, Result};
use crate::layout::VolumePaths;
use crate::model::{PoolConfig, VolumeConfig, VolumeInfo, VolumeRef};
use crate::names::PoolName;
use crate::revision;
use crate::sys;

/// The file names of one VM directory (none when it does not exist).
struct Listing {
    names: HashSet<String>,
}

impl Listing {
    fn read(dir: &Path) -> Result<Listing> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Listing {
                    names: HashSet::new(),
                })
            }
            Err(e) => return Err(EngineError::io(format!("cannot list {}", dir.display()), e)),
        };
        let mut names = HashSet::new();
        for entry in entries {
            let entry = entry.io_ctx(|| format!("cannot list {}", dir.display()))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.insert(name);
            }
        }
        Ok(Listing { names })
    }

    fn has(&self, path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| self.names.contains(n))
    }
}

/// One volume's view from its directory's listing.
fn view(
    pool: &PoolConfig,
    config: VolumeConfig,
    source: Option<&VolumeConfig>,
    listing: &Listing,
) -> VolumeInfo {
    let paths = VolumePaths::new(&pool.dir_path, &config.vid);
    let started = listing.has(&paths.dirty());
    let image = current_image(&paths, started, listing);
    let source_clean = source.map(|s| VolumePaths::new(&pool.dir_path, &s.vid).clean());
    let size = match (&image, &source_clean) {
        (Some(meta), _) => meta.size(),
        // A halted snapshot volume reports what its next start produces.
        (None, Some(clean)) if config.snap_on_start => {
            lstat(clean).map_or(config.size, |m| m.size())
        }
        (None, _) => config.size,
    };
    let own_clean = (config.snap_on_start && listing.has(&paths.clean()))
        .then(|| lstat(&paths.clean()))
        .flatten();
    let is_outdated = match (own_clean, source_clean.as_deref().and_then(lstat)) {
        (Some(own), Some(theirs)) => !sys::same_inode(&own, &theirs),
        _ => false,
    };
    let names = listing.names.iter().map(String::as_str);
    VolumeInfo {
        pool: pool.name.clone(),
        size,
        usage: image.map_or(0, |m| m.blocks() * 512),
        ephemeral: config.ephemeral_effective(pool.ephemeral_volatile),
        snapshots_disabled: config.snapshots_disabled(),
        is_dirty: config.save_on_stop && started,
        is_outdated,
        started,
        revisions: revision::from_names(paths.name(), names),
        block_device_path: paths.dirty(),
        config,
    }
}

fn lstat(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(path).ok()
}

/// The dirty image if the volume is started, else the clean one (R§3.21).
fn current_image(
    paths: &VolumePaths,
    started: bool,
    listing: &Listing,
) -> Option<std::fs::Metadata> {
    let dirty = started.then(|| lstat(&paths.dirty())).flatten();
    dirty.or_else(|| {
        listing
            .has(&paths.clean())
            .then(|| lstat(&paths.clean()))
            .flatten()
    })
}

impl Engine {
    /// A volume's live view.
    pub fn volume_info(&self, vol: &VolumeRef) -> Result<VolumeInfo> {
        let (pool, config, source) = self.lookup(vol)?;
        let dir = VolumePaths::new(&pool.dir_path, &config.vid);
        let listing = Listing::read(dir.dir()).map_err(|e| e.on(vol))?;
        Ok(view(&pool, config, source.as_ref(), &listing))
    }

    /// The live view of every volume of `pool`, in vid order, each VM directory listed
    /// once. A directory that cannot be listed fails only its own volumes' views.
    pub fn volume_infos(&self, pool: &PoolName) -> Result<Vec<Result<VolumeInfo>>> {
        let live = self.pool(pool)?;
        let (config, volumes) = {
            let state = live.read();
            let volumes: Vec<_> = state
                .volumes()
                .map(|c| {
                    (
                        c.clone(),
                        c.source.as_ref().and_then(|s| state.get(s)).cloned(),
                    )
                })
                .collect();
            (state.config().clone(), volumes)
        };
        let mut views = Vec::with_capacity(volumes.len());
        let mut listing: Option<(String, Result<Listing>)> = None;
        for (volume, source) in volumes {
            let vm_dir = volume.vid.vm_dir();
            if listing.as_ref().is_none_or(|(dir, _)| *dir != vm_dir) {
                let read = Listing::read(&config.dir_path.join(&vm_dir));
                listing = Some((vm_dir, read));
            }
            let vol = VolumeRef {
                pool: pool.clone(),
                vid: volume.vid.clone(),
            };
            views.push(match listing.as_ref().map(|(_, l)| l) {
                Some(Ok(l)) => Ok(view(&config, volume, source.as_ref(), l)),
                Some(Err(e)) => Err(EngineError::new(e.kind(), e.reason()).on(&vol)),
                None => unreachable!("a listing was just read"),
            });
        }
        Ok(views)
    }
}
