//! Live views of volumes (R§3.14, §3.20, §3.21): read from the pool directory on every
//! call, never cached, with the fewest system calls the view needs — one listing of the
//! VM directory (which images exist, the revisions) and one `fstatat`, relative to the
//! open directory, of the current image (a started snapshot volume adds its own clean
//! image and its source's; a halted one reads its source's size), plus one of each
//! revision file (the sub-second part of its timestamp). [`Engine::volume_infos`]
//! reads a whole pool's views, listing each VM directory once and each source's image
//! once: that is what the daemon does for every volume at start-up.
//!
//! Everything goes through [`Dir`] like every other file access: the pool directory is
//! opened by its configured path, its class and VM directories beneath it with openat2
//! and no symlink anywhere, and entries are stat'ed without following a symlink. A pool
//! directory that does not exist shows no files; a class or VM directory that cannot be
//! opened (a symlink, unreadable) fails only the views of its own volumes. Getters take
//! no vid lock: they never wait behind an operation (a long copy), and see each file
//! either before or after its atomic replacement.

use std::collections::{HashMap, HashSet};

use super::Engine;
use crate::dir::{Dir, Entry};
use crate::error::{EngineError, ErrorKind, Result};
use crate::layout::VolumePaths;
use crate::model::{
    PoolConfig, Revision, RevisionDetails, VolumeConfig, VolumeInfo, VolumeRef, VolumeSettings,
};
use crate::names::{PoolName, Vid, VmClass};
use crate::pool;
use crate::revision;
use crate::volume::Volume;

/// One VM directory: its names, and the open directory to stat them in.
struct VmDir {
    dir: Option<Dir>,
    names: HashSet<String>,
}

impl VmDir {
    /// The directory `opened` (a missing one is empty).
    fn read(opened: Result<Option<Dir>>) -> Result<VmDir> {
        let Some(dir) = opened? else {
            return Ok(VmDir {
                dir: None,
                names: HashSet::new(),
            });
        };
        let names = dir.names()?.into_iter().collect();
        Ok(VmDir {
            dir: Some(dir),
            names,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The entry of a listed file (gone since the listing: `None`).
    fn entry(&self, name: &str) -> Option<Entry> {
        let dir = self.dir.as_ref().filter(|_| self.has(name))?;
        dir.entry(name).ok().flatten()
    }
}

/// One volume's view from its VM directory; `source_clean` gives its source's clean
/// image when the view needs it.
fn view(
    pool: &PoolConfig,
    config: VolumeConfig,
    dir: &VmDir,
    source_clean: impl FnOnce() -> Option<Entry>,
) -> VolumeInfo {
    let paths = VolumePaths::new(&pool.dir_path, &config.vid);
    let (clean, dirty) = (paths.clean_name(), paths.dirty_name());
    let started = dir.has(&dirty);
    let image = if started { dir.entry(&dirty) } else { None }.or_else(|| dir.entry(&clean));
    let own_clean = match (config.snap_on_start, started) {
        (false, _) => None,
        (true, true) => dir.entry(&clean),
        (true, false) => image,
    };
    let needs_source = config.snap_on_start && (image.is_none() || own_clean.is_some());
    let source = needs_source.then(source_clean).flatten();
    let size = match (image, source) {
        (Some(image), _) => image.size(),
        // A halted snapshot volume reports what its next start produces.
        (None, Some(source)) => source.size(),
        (None, None) => config.size,
    };
    let is_outdated =
        matches!((own_clean, source), (Some(own), Some(theirs)) if !own.same_inode(&theirs));
    let revisions = revision::from_names(paths.name(), dir.names.iter().map(String::as_str));
    let revision_details = details(&paths, &config, dir, &revisions);
    VolumeInfo {
        pool: pool.name.clone(),
        size,
        usage: image.map_or(0, |e| e.allocated()),
        ephemeral: config.ephemeral_effective(pool.ephemeral_volatile),
        snapshots_disabled: config.snapshots_disabled(),
        is_dirty: config.save_on_stop && started,
        is_outdated,
        started,
        revisions,
        revision_details,
        block_device_path: paths.dirty(),
        config,
    }
}

/// The revisions with their notes and the nanoseconds of their timestamps: one
/// `fstatat` of each revision file, whose mtime is its image's to the nanosecond when
/// its seconds are the name's (see [`RevisionDetails::nanos`]). Exclusive bytes come
/// from the last measurement ([`Engine::volume_info`]).
fn details(
    paths: &VolumePaths,
    config: &VolumeConfig,
    dir: &VmDir,
    revisions: &[Revision],
) -> Vec<RevisionDetails> {
    revisions
        .iter()
        .map(|r| {
            let mtime = dir
                .entry(&paths.revision_name(r.id, r.timestamp))
                .map(|e| e.mtime());
            let nanos = match mtime {
                Some((seconds, nanos)) if seconds == r.timestamp => nanos as u32,
                _ => 0,
            };
            RevisionDetails {
                revision: *r,
                nanos,
                description: config.revision_notes.description(r).to_owned(),
                pinned: config.revision_notes.is_pinned(r),
                exclusive: None,
            }
        })
        .collect()
}

/// An error of one directory, for each volume in it (errors are not `Clone`).
fn again(err: &EngineError) -> EngineError {
    EngineError::new(err.kind(), err.to_string())
}

/// The pool directory and its class directories, open. A pool directory that does not
/// exist has no class directories; any other failure is kept for the volumes below it.
struct ClassDirs {
    dirs: Vec<(VmClass, Result<Option<Dir>>)>,
    /// The pool directory does not exist.
    root_missing: bool,
}

impl ClassDirs {
    fn open(pool_dir: &std::path::Path) -> ClassDirs {
        let root = match pool::open_root(pool_dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            other => other.map(Some),
        };
        let dirs = VmClass::ALL
            .into_iter()
            .map(|class| {
                let dir = match &root {
                    Ok(Some(root)) => root.open_subdir(class.dir_name()),
                    Ok(None) => Ok(None),
                    Err(e) => Err(again(e)),
                };
                (class, dir)
            })
            .collect();
        ClassDirs {
            dirs,
            root_missing: matches!(root, Ok(None)),
        }
    }

    /// The pool directory exists but not the class directory `class`.
    fn class_missing(&self, class: VmClass) -> bool {
        self.dirs
            .iter()
            .any(|(c, dir)| *c == class && matches!(dir, Ok(None)))
            && !self.root_missing
    }

    /// The VM directory of `vid`, opened beneath its class directory.
    fn open_vm(&self, vid: &Vid) -> Result<Option<Dir>> {
        let (_, class) = self
            .dirs
            .iter()
            .find(|(c, _)| *c == vid.class())
            .expect("every class is opened");
        match class {
            Ok(Some(class)) => class.open_subdir(vid.vm()),
            Ok(None) => Ok(None),
            Err(e) => Err(again(e)),
        }
    }

    /// The clean image of `vid` (for a source: one lookup of its own).
    fn clean_of(&self, pool_dir: &std::path::Path, vid: &Vid) -> Option<Entry> {
        let dir = self.open_vm(vid).ok().flatten()?;
        let name = VolumePaths::new(pool_dir, vid).clean_name();
        dir.entry(&name).ok().flatten()
    }
}

impl Engine {
    /// A volume's live view. Not while its pool directory is missing, nor its class
    /// directory (which pool setup makes and nothing removes: without it the pool
    /// directory is most likely the mount point of a filesystem not mounted): a volume
    /// seen there would look as if it had no files — stopped, empty — which it may not
    /// be once the directory is back (moved away and back, a filesystem mounted again).
    /// (The listing of a pool at start-up, [`Self::volume_infos`], still serves such
    /// volumes, so that they can be removed.)
    pub fn volume_info(&self, vol: &VolumeRef) -> Result<VolumeInfo> {
        let (pool, config, source) = self.lookup(vol)?;
        let classes = ClassDirs::open(&pool.dir_path);
        if classes.root_missing {
            return Err(EngineError::new(
                ErrorKind::Failed,
                format!(
                    "the pool directory {} does not exist: the volume's files cannot be read",
                    pool.dir_path.display()
                ),
            )
            .on(vol));
        }
        if classes.class_missing(config.vid.class()) {
            return Err(EngineError::new(
                ErrorKind::Failed,
                format!(
                    "the pool directory {} has no {}/ (is the pool's filesystem mounted?): the volume's files cannot be read",
                    pool.dir_path.display(),
                    config.vid.class().dir_name()
                ),
            )
            .on(vol));
        }
        let dir = VmDir::read(classes.open_vm(&config.vid)).map_err(|e| e.on(vol))?;
        let source_clean = || source.and_then(|s| classes.clean_of(&pool.dir_path, &s.vid));
        let mut info = view(&pool, config, &dir, source_clean);
        self.add_measurements(vol, &mut info);
        Ok(info)
    }

    /// What `vol`'s configuration and its pool's defaults say of it, without reading its
    /// files ([`VolumeSettings`]): announced after a property write also while
    /// [`Self::volume_info`] cannot read the volume.
    pub fn volume_settings(&self, vol: &VolumeRef) -> Result<VolumeSettings> {
        let (pool, config, _) = self.lookup(vol)?;
        Ok(VolumeSettings {
            ephemeral: config.ephemeral_effective(pool.ephemeral_volatile),
            snapshots_disabled: config.snapshots_disabled(),
            config,
        })
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
        let mut sources: HashMap<Vid, Option<Entry>> = HashMap::new();
        let mut views = Vec::with_capacity(volumes.len());
        let mut current: Option<(String, Result<VmDir>)> = None;
        for volume in volumes {
            let vm_dir = volume.vid.vm_dir();
            if current.as_ref().is_none_or(|(dir, _)| *dir != vm_dir) {
                current = Some((vm_dir, VmDir::read(classes.open_vm(&volume.vid))));
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
                        *sources
                            .entry(source)
                            .or_insert_with_key(|s| classes.clean_of(&config.dir_path, s))
                    };
                    Ok(view(&config, volume, dir, source_clean))
                }
                Err(e) => Err(again(e).on(&vol)),
            });
        }
        Ok(views)
    }

    /// The allocated bytes of a volume's current image (R§3.21), without the rest of
    /// its live view: what a property read of `Usage` needs, one stat.
    pub fn volume_usage(&self, vol: &VolumeRef) -> Result<u64> {
        let (pool, config, _) = self.lookup(vol)?;
        let root = Self::open_root_to_read(&pool);
        Ok(Volume::at(&pool.dir_path, root.as_ref(), config).usage())
    }
}
