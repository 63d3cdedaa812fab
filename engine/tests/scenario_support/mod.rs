//! The fixture of the engine scenario tests (`volumes.rs`, `reference_scenarios.rs`):
//! one engine with one pool `p` at `<mount>/pool` on a fresh loop-mounted filesystem,
//! the volume and file helpers both use, and [`on_every_fs!`], which runs each scenario
//! on btrfs, XFS and ext4 (ext4 pools use setup_check=false). Each test file adds its
//! own helpers in an `impl Fixture` block of its own.
//!
//! Support modules are compiled into each test binary that declares them, and no binary
//! uses every item, hence `#![allow(dead_code)]` (shared test support).

#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::common_fs::{FsType, LoopFs, MIB};
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};

/// One engine with one pool `p` at `<mount>/pool` on a fresh filesystem.
pub struct Fixture {
    // Field order: the engine goes before the mount it uses.
    pub engine: Engine,
    pub pool: PoolName,
    pub dir: PathBuf,
    _state: tempfile::TempDir,
    pub fs: LoopFs,
}

impl Fixture {
    pub fn new(fs_type: FsType) -> Fixture {
        let fs = LoopFs::new(fs_type, 512 * MIB);
        let state = tempfile::tempdir().unwrap();
        let engine = Engine::open(state.path()).unwrap();
        let pool = PoolName::parse("p").unwrap();
        let dir = fs.path().join("pool");
        engine
            .create_pool(pool_spec(&pool, &dir, fs_type.has_reflink()))
            .unwrap();
        Fixture {
            engine,
            pool,
            dir,
            _state: state,
            fs,
        }
    }

    pub fn vref(&self, vid: &str) -> VolumeRef {
        VolumeRef {
            pool: self.pool.clone(),
            vid: Vid::parse(vid).unwrap(),
        }
    }

    pub fn paths(&self, vid: &str) -> VolumePaths {
        VolumePaths::new(&self.dir, &Vid::parse(vid).unwrap())
    }

    /// CreateVolume, and the work it left for after its reply (the precache).
    pub fn create_in(&self, vol: &VolumeRef, spec: VolumeSpec) {
        self.engine
            .create_volume(vol, spec, &OpCtx::quiet("CreateVolume"))
            .unwrap();
        self.engine.settle();
    }

    /// Create `vid` in the fixture's pool.
    pub fn create(&self, vid: &str, spec: VolumeSpec) -> VolumeRef {
        let v = self.vref(vid);
        self.create_in(&v, spec);
        v
    }

    pub fn origin(&self, vid: &str, size: u64, rtk: i64) -> VolumeRef {
        self.create(vid, origin_spec(size, rtk))
    }

    pub fn start(&self, v: &VolumeRef) -> PathBuf {
        let dirty = self.engine.start(v, &OpCtx::quiet("Start")).unwrap();
        self.engine.settle();
        dirty
    }

    /// Stop, and the work it left for after its reply (discarded files deleted, the
    /// precache made), so that the files are what a later look expects.
    pub fn stop(&self, v: &VolumeRef) {
        self.engine.stop(v, &OpCtx::quiet("Stop")).unwrap();
        self.engine.settle();
    }

    /// The service restarts: the engine is closed (one engine per state directory),
    /// then a new one is opened on the same state directory.
    pub fn restart(&mut self) {
        let state_dir = self.engine.state_dir().to_owned();
        let elsewhere = tempfile::tempdir().unwrap();
        drop(std::mem::replace(
            &mut self.engine,
            Engine::open(elsewhere.path()).unwrap(),
        ));
        self.engine = Engine::open(&state_dir).unwrap();
    }

    /// One VM session: start, write `data` at `offset`, stop.
    pub fn session(&self, v: &VolumeRef, offset: u64, data: &[u8]) {
        let dirty = self.start(v);
        write_at(&dirty, offset, data);
        self.stop(v);
    }
}

pub fn pool_spec(name: &PoolName, dir: &Path, setup_check: bool) -> PoolSpec {
    PoolSpec {
        name: name.clone(),
        dir_path: dir.to_owned(),
        setup_check,
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    }
}

pub fn origin_spec(size: u64, rtk: i64) -> VolumeSpec {
    VolumeSpec {
        size,
        rw: true,
        save_on_stop: true,
        revisions_to_keep: Some(RevisionsToKeep::new(rtk).unwrap()),
        ..Default::default()
    }
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

pub fn is_all_zero(path: &Path) -> bool {
    fs::read(path).unwrap().iter().all(|&b| b == 0)
}

pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The names in `dir`, sorted (none when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Generates one test per filesystem for each scenario function (the test file imports
/// `FsType`). Not every test binary that shares this module uses it.
#[allow(unused_macros)]
macro_rules! on_every_fs {
    ($($name:ident),* $(,)?) => {
        mod btrfs { $( #[test] fn $name() { super::$name(super::FsType::Btrfs) } )* }
        mod xfs { $( #[test] fn $name() { super::$name(super::FsType::Xfs) } )* }
        mod ext4 { $( #[test] fn $name() { super::$name(super::FsType::Ext4) } )* }
    };
}
#[allow(unused_imports)]
pub(crate) use on_every_fs;
