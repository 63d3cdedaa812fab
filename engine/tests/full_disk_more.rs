//! More full-disk tests (beside `full_disk.rs`): on a small ext4 filesystem (no
//! reflinks, so every copy needs space; the pool uses setup_check=false) filled to the
//! last block, these operations fail with [`ErrorKind::NoSpace`] naming the volume,
//! lose nothing committed, leave no temp file, and succeed once space is freed:
//!
//! * ImportDataEnd(true), whose revision of the old image is a byte copy (creating the
//!   sparse import file itself needs no space); the written import survives for the
//!   retry;
//! * Revert, whose revision of the current image is a byte copy;
//! * CreateVolume of a VM's first volume (its directory needs a block);
//! * Start of an origin volume without a precache (a byte copy of the clean image).
//!
//! Needs root (loop mounts).

mod common_fs;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use common_fs::{pattern, FsType, LoopFs, MIB};
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    revision, Engine, EngineError, ErrorKind, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid,
    VolumeRef, VolumeSpec,
};

const IMAGE_SIZE: u64 = 16 * MIB;
/// 8 ranges of 1 MiB, 2 MiB apart: 8 MiB of data in a 16 MiB image.
const DATA_RANGES: u64 = 8;
const VID: &str = "appvms/vm1/private";
const FS_SIZE: u64 = 96 * MIB;
/// After filling, less than this may stay free (a few blocks the filler cannot use).
const FILL_SLACK: u64 = 256 * 1024;

fn ctx() -> OpCtx {
    OpCtx::quiet("full-disk-test")
}

fn data_ranges() -> impl Iterator<Item = (u64, u64)> {
    (0..DATA_RANGES).map(|i| (i * 2 * MIB, MIB))
}

/// The image of content `seed`: zeros except the data ranges.
fn model(seed: u64) -> Vec<u8> {
    let mut image = vec![0u8; IMAGE_SIZE as usize];
    for (offset, len) in data_ranges() {
        let at = offset as usize;
        image[at..at + len as usize].copy_from_slice(&pattern(seed, offset, len as usize));
    }
    image
}

/// Write content `seed` into the data ranges of an image.
fn write_content(file: &File, seed: u64) {
    for (offset, len) in data_ranges() {
        file.write_all_at(&pattern(seed, offset, len as usize), offset)
            .expect("write data");
    }
    file.sync_all().expect("fsync image");
}

fn write_content_at(path: &Path, seed: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    write_content(&file, seed);
}

#[track_caller]
fn assert_content(path: &Path, seed: u64, what: &str) {
    let data = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", path.display()));
    assert!(
        data == model(seed),
        "{what}: {} does not hold content {seed}",
        path.display()
    );
}

/// An ext4 pool (setup_check=false) and its engine; the engine goes first on drop.
struct Pool {
    engine: Engine,
    name: PoolName,
    dir: PathBuf,
    fs: LoopFs,
}

impl Pool {
    fn new() -> Pool {
        let fs = LoopFs::new(FsType::Ext4, FS_SIZE);
        let dir = fs.path().join("pool");
        let engine = Engine::open(&fs.path().join("state")).expect("Engine::open");
        let name = PoolName::parse("p").unwrap();
        let spec = PoolSpec {
            name: name.clone(),
            dir_path: dir.clone(),
            setup_check: false,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        };
        engine.create_pool(spec).expect("create pool");
        Pool {
            engine,
            name,
            dir,
            fs,
        }
    }

    fn vol(&self, vid: &str) -> VolumeRef {
        VolumeRef {
            pool: self.name.clone(),
            vid: Vid::parse(vid).unwrap(),
        }
    }

    fn paths(&self, vid: &str) -> VolumePaths {
        VolumePaths::new(&self.dir, &Vid::parse(vid).unwrap())
    }

    fn create_origin(&self, vid: &str, revisions_to_keep: i64) -> Result<(), EngineError> {
        let spec = VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            save_on_stop: true,
            revisions_to_keep: Some(RevisionsToKeep::new(revisions_to_keep).unwrap()),
            ..Default::default()
        };
        self.engine
            .create_volume(&self.vol(vid), spec, &ctx())
            .map(|_| ())
    }

    /// One session writing content `seed`.
    fn session(&self, vid: &str, seed: u64) {
        let dirty = self.engine.start(&self.vol(vid), &ctx()).expect("start");
        write_content_at(&dirty, seed);
        self.engine.stop(&self.vol(vid), &ctx()).expect("stop");
    }

    /// `(id, inode)` of every revision: what must survive a failure.
    fn revisions(&self, vid: &str) -> Vec<(u64, u64)> {
        let paths = self.paths(vid);
        revision::list(&paths)
            .expect("list revisions")
            .iter()
            .map(|r| {
                let ino = paths.revision(r.id, r.timestamp).metadata().unwrap().ino();
                (r.id, ino)
            })
            .collect()
    }

    fn newest_revision(&self, vid: &str) -> PathBuf {
        let paths = self.paths(vid);
        let list = revision::list(&paths).expect("list revisions");
        let r = list.last().expect("a revision");
        paths.revision(r.id, r.timestamp)
    }

    /// Temp files of `vid`.
    fn temps(&self, vid: &str) -> Vec<String> {
        let paths = self.paths(vid);
        let Ok(entries) = std::fs::read_dir(paths.dir()) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| paths.is_own_temp(n))
            .collect()
    }
}

/// Fill the filesystem to the last block with one file; returns it.
fn fill_disk(fs: &LoopFs) -> PathBuf {
    let path = fs.path().join("filler");
    let file = File::create(&path).expect("create filler");
    let mut offset = 0;
    for chunk_size in [MIB as usize, 4096] {
        let chunk = vec![0xA5u8; chunk_size];
        loop {
            match file.write_at(&chunk, offset) {
                Ok(n) if n > 0 => offset += n as u64,
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                    break
                }
                Err(e) => panic!("cannot fill the disk: {e}"),
            }
        }
    }
    let _ = file.sync_all();
    assert!(
        fs.free_bytes() < FILL_SLACK,
        "the disk is not full: {} bytes free",
        fs.free_bytes()
    );
    path
}

fn free_disk(fs: &LoopFs, filler: &Path) {
    std::fs::remove_file(filler).expect("remove filler");
    let dir = File::open(fs.path()).expect("open mount point");
    rustix::fs::syncfs(&dir).expect("syncfs");
}

#[track_caller]
fn assert_no_space(result: Result<impl std::fmt::Debug, EngineError>, vol: &VolumeRef) {
    let err = result.expect_err("the operation must fail on a full disk");
    assert_eq!(err.kind(), ErrorKind::NoSpace, "kind of: {err}");
    let message = err.to_string();
    assert!(
        message.contains(&vol.to_string()),
        "the message names the volume: {message}"
    );
    assert!(
        message.contains("no space left on device"),
        "the message says why: {message}"
    );
}

#[test]
fn ext4_import_data_end_on_full_disk_is_no_space_and_the_retry_commits_the_import() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    pool.create_origin(VID, 1).unwrap();
    pool.session(VID, 1);
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let revisions = pool.revisions(VID);
    let import = pool
        .engine
        .import_data(&vol, IMAGE_SIZE, &ctx())
        .expect("import_data");
    write_content(&import, 2);
    drop(import);
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.engine.import_data_end(&vol, true, &ctx()), &vol);
    assert_content(&paths.clean(), 1, "clean after the failed commit");
    assert_eq!(paths.clean().metadata().unwrap().ino(), clean_ino);
    assert_eq!(pool.revisions(VID), revisions, "revisions unchanged");
    assert_eq!(pool.temps(VID), Vec::<String>::new());
    assert_content(&paths.import(), 2, "the written import is kept for a retry");
    let start = pool.engine.start(&vol, &ctx()).unwrap_err();
    assert_eq!(
        start.kind(),
        ErrorKind::Busy,
        "the import is still in progress: {start}"
    );
    assert_content(
        &paths.import(),
        2,
        "a refused start leaves the import alone",
    );

    free_disk(&pool.fs, &filler);
    pool.engine
        .import_data_end(&vol, true, &ctx())
        .expect("import_data_end after freeing space");
    assert_content(&paths.clean(), 2, "clean after the retried commit");
    assert_content(&pool.newest_revision(VID), 1, "the old image as revision");
    assert!(!paths.import().exists());
}

#[test]
fn ext4_revert_on_full_disk_is_no_space_and_keeps_image_and_revisions() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    pool.create_origin(VID, 2).unwrap();
    pool.session(VID, 1);
    pool.session(VID, 2);
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let revisions = pool.revisions(VID);
    assert_eq!(revisions.len(), 2);
    let target = revisions[1].0;
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.engine.revert(&vol, Some(target), &ctx()), &vol);
    assert_content(&paths.clean(), 2, "clean after the failed revert");
    assert_eq!(paths.clean().metadata().unwrap().ino(), clean_ino);
    assert_eq!(pool.revisions(VID), revisions, "the target is not consumed");
    assert_eq!(pool.temps(VID), Vec::<String>::new());

    free_disk(&pool.fs, &filler);
    pool.engine
        .revert(&vol, Some(target), &ctx())
        .expect("revert after freeing space");
    assert_content(&paths.clean(), 1, "clean after the retried revert");
    assert_content(&pool.newest_revision(VID), 2, "the pre-revert image");
}

#[test]
fn ext4_create_of_a_vms_first_volume_on_full_disk_is_no_space_and_registers_nothing() {
    let pool = Pool::new();
    let vol = pool.vol(VID);
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.create_origin(VID, 1), &vol);
    assert_eq!(
        pool.engine.volume_info(&vol).unwrap_err().kind(),
        ErrorKind::NotFound,
        "nothing registered"
    );
    assert!(!pool.paths(VID).dir().exists(), "no VM directory left");

    free_disk(&pool.fs, &filler);
    pool.create_origin(VID, 1)
        .expect("create after freeing space");
    let paths = pool.paths(VID);
    assert_eq!(paths.clean().metadata().unwrap().len(), IMAGE_SIZE);
    assert!(paths.precache().exists());
}

#[test]
fn ext4_origin_start_without_precache_on_full_disk_is_no_space_and_leaves_it_stopped() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    pool.create_origin(VID, 1).unwrap();
    pool.session(VID, 1);
    // As a crash between a commit's rename and its new precache leaves it.
    std::fs::remove_file(paths.precache()).unwrap();
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let revisions = pool.revisions(VID);
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.engine.start(&vol, &ctx()), &vol);
    assert!(
        !pool.engine.volume_info(&vol).unwrap().started,
        "not started"
    );
    assert!(!paths.dirty().exists());
    assert_content(&paths.clean(), 1, "clean after the failed start");
    assert_eq!(paths.clean().metadata().unwrap().ino(), clean_ino);
    assert_eq!(pool.revisions(VID), revisions);
    assert_eq!(pool.temps(VID), Vec::<String>::new());

    free_disk(&pool.fs, &filler);
    let dirty = pool
        .engine
        .start(&vol, &ctx())
        .expect("start after freeing space");
    assert_content(&dirty, 1, "the started image");
}
