//! Live views of volumes (R§3.14, §3.20, §3.21): read from the pool directory on every
//! call, never cached, with the fewest system calls the view needs — one listing of the
//! VM directory (which images exist, the revisions) and one lstat, relative to the open
//! directory, of the current image (a started snapshot volume adds its own clean image
//! and its source's; a halted one reads its source's size). [`Engine::volume_infos`]
//! reads a whole pool's views, listing each VM directory once and each source's image
//! once: that is what the daemon does for every volume at start-up.
//!
//! A VM or class directory is opened without following a symlink; one that cannot be
//! read fails only the views of its own volumes. Getters take no vid lock: they never
//! wait behind an operation (a long copy), and see each file either before or after
//! its atomic replacement.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{PoolConfig, VolumeConfig, VolumeInfo, VolumeRef};
use crate::names::{PoolName, Vid, VmClass};
use crate::revision;
use crate::sys::{self, FileStat, ListedDir};

/// One VM directory: its names, and the open directory to stat them in.
struct VmDir {
    dir: Option<ListedDir>,
    names: HashSet<String>,
}

impl VmDir {
    /// The directory `opened` (a missing one is empty); `path` names it in errors.
    fn read(opened: io::Result<OwnedFd>, path: &Path) -> Result<VmDir> {
        let listed = match opened {
            Ok(fd) => sys::list_dir(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(VmDir {
                    dir: None,
                    names: HashSet::new(),
                })
            }
            Err(e) => Err(e),
        };
        let (dir, names) =
            listed.map_err(|e| EngineError::io(format!("cannot list {}", path.display()), e))?;
        Ok(VmDir {
            dir: Some(dir),
            names: names.into_iter().collect(),
        })
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// lstat of a listed file (gone since the listing: `None`).
    fn lstat(&self, name: &str) -> Option<FileStat> {
        let dir = self.dir.as_ref().filter(|_| self.has(name))?;
        dir.lstat(name).ok()
    }
}

/// One volume's view from its VM directory; `source_clean` gives its source's clean
/// image when the view needs it.
fn view(
    pool: &PoolConfig,
    config: VolumeConfig,
    dir: &VmDir,
    source_clean: impl FnOnce() -> Option<FileStat>,
) -> VolumeInfo {
    let name = config.vid.name();
    let (clean, dirty) = (format!("{name}.img"), format!("{name}-dirty.img"));
    let started = dir.has(&dirty);
    let image = if started { dir.lstat(&dirty) } else { None }.or_else(|| dir.lstat(&clean));
    let own_clean = match (config.snap_on_start, started) {
        (false, _) => None,
        (true, true) => dir.lstat(&clean),
        (true, false) => image,
    };
    let needs_source = config.snap_on_start && (image.is_none() || own_clean.is_some());
    let source = needs_source.then(source_clean).flatten();
    let size = match (image, source) {
        (Some(image), _) => image.size,
        // A halted snapshot volume reports what its next start produces.
        (None, Some(source)) => source.size,
        (None, None) => config.size,
    };
    let is_outdated =
        matches!((own_clean, source), (Some(own), Some(theirs)) if !own.same_file(&theirs));
    VolumeInfo {
        pool: pool.name.clone(),
        size,
        usage: image.map_or(0, |m| m.allocated),
        ephemeral: config.ephemeral_effective(pool.ephemeral_volatile),
        snapshots_disabled: config.snapshots_disabled(),
        is_dirty: config.save_on_stop && started,
        is_outdated,
        started,
        revisions: revision::from_names(name, dir.names.iter().map(String::as_str)),
        block_device_path: pool.dir_path.join(config.vid.vm_dir()).join(dirty),
        config,
    }
}

/// The clean image of `vid` in the pool directory.
fn clean_path(pool_dir: &Path, vid: &Vid) -> std::path::PathBuf {
    pool_dir
        .join(vid.vm_dir())
        .join(format!("{}.img", vid.name()))
}

/// The class directories of a pool, open (missing or unreadable: `None`).
struct ClassDirs {
    dirs: Vec<(VmClass, io::Result<OwnedFd>)>,
}

impl ClassDirs {
    fn open(pool_dir: &Path) -> ClassDirs {
        let dirs = VmClass::ALL
            .into_iter()
            .map(|class| (class, sys::open_dir(&pool_dir.join(class.dir_name()))))
            .collect();
        ClassDirs { dirs }
    }

    /// The VM directory of `vid`, opened relative to its class directory.
    fn open_vm(&self, vid: &Vid) -> io::Result<OwnedFd> {
        let (_, class) = self
            .dirs
            .iter()
            .find(|(c, _)| *c == vid.class())
            .expect("every class is opened");
        match class {
            Ok(fd) => sys::open_dir_at(fd.as_fd(), vid.vm()),
            Err(e) => Err(io::Error::from(e.kind())),
        }
    }
}

impl Engine {
    /// A volume's live view.
    pub fn volume_info(&self, vol: &VolumeRef) -> Result<VolumeInfo> {
        let (pool, config, source) = self.lookup(vol)?;
        let path = pool.dir_path.join(config.vid.vm_dir());
        let dir = VmDir::read(sys::open_dir(&path), &path).map_err(|e| e.on(vol))?;
        let source_clean =
            || source.and_then(|s| sys::lstat(&clean_path(&pool.dir_path, &s.vid)).ok());
        Ok(view(&pool, config, &dir, source_clean))
    }

    /// The live view of every volume of `pool`, in vid order, each VM directory listed
    /// once. A directory that cannot be listed fails only its own volumes' views.
    pub fn volume_infos(&self, pool: &PoolName) -> Result<Vec<Result<VolumeInfo>>> {
        let live = self.pool(pool)?;
        let (config, volumes) = {
            let state = live.read();
            let volumes: Vec<VolumeConfig> = state.volumes().cloned().collect();
            (state.config().clone(), volumes)
        };
        let classes = ClassDirs::open(&config.dir_path);
        let mut sources: HashMap<Vid, Option<FileStat>> = HashMap::new();
        let mut views = Vec::with_capacity(volumes.len());
        let mut current: Option<(String, Result<VmDir>)> = None;
        for volume in volumes {
            let vm_dir = volume.vid.vm_dir();
            if current.as_ref().is_none_or(|(dir, _)| *dir != vm_dir) {
                let path = config.dir_path.join(&vm_dir);
                let read = VmDir::read(classes.open_vm(&volume.vid), &path);
                current = Some((vm_dir, read));
            }
            let vol = VolumeRef {
                pool: pool.clone(),
                vid: volume.vid.clone(),
            };
            let Some((_, dir)) = current.as_ref() else {
                unreachable!("a VM directory was just read")
            };
            views.push(match dir {
                Ok(dir) => {
                    let source = volume.source.clone();
                    let source_clean = || {
                        let source = source?;
                        *sources.entry(source).or_insert_with_key(|s| {
                            sys::lstat(&clean_path(&config.dir_path, s)).ok()
                        })
                    };
                    Ok(view(&config, volume, dir, source_clean))
                }
                Err(e) => Err(EngineError::new(e.kind(), e.to_string()).on(&vol)),
            });
        }
        Ok(views)
    }
}
