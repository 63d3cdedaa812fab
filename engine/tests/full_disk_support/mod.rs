//! What the full-disk tests (`full_disk.rs`, `full_disk_more.rs`) share: a pool on its
//! own small loop-mounted filesystem with its engine, filling that filesystem to the
//! last block and freeing it again, the `NoSpace` assertion, and the content model (an
//! image of `image_size` bytes holds 1 MiB of `pattern(seed, …)` every 2 MiB, zeros
//! elsewhere; a grown image keeps zeros beyond `image_size`). Each test file passes its
//! own sizes and adds its own `impl Pool` helpers.
//!
//! Support modules are compiled into each test binary that declares them, and no binary
//! uses every item, hence `#![allow(dead_code)]` (shared test support).

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::common_fs::{pattern, LoopFs, MIB};
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    Engine, EngineError, ErrorKind, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef,
};

/// After filling, less than this may stay free (a few blocks the filler cannot use).
pub const FILL_SLACK: u64 = 256 * 1024;

pub fn ctx() -> OpCtx {
    OpCtx::quiet("full-disk-test")
}

// ---- content model ----

/// `(offset, len)` of the data ranges of an image of `image_size` bytes: 1 MiB every
/// 2 MiB.
pub fn data_ranges(image_size: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..image_size / (2 * MIB)).map(|i| (i * 2 * MIB, MIB))
}

/// The image of content `seed` at `size` bytes: zeros except the data ranges of an
/// image of `image_size` bytes.
pub fn model(seed: u64, image_size: u64, size: u64) -> Vec<u8> {
    let mut image = vec![0u8; size as usize];
    for (offset, len) in data_ranges(image_size) {
        let at = offset as usize;
        image[at..at + len as usize].copy_from_slice(&pattern(seed, offset, len as usize));
    }
    image
}

/// Write content `seed` into the data ranges of an image of `image_size` bytes (no
/// new allocation when the ranges are already allocated).
pub fn write_content(file: &File, seed: u64, image_size: u64) {
    for (offset, len) in data_ranges(image_size) {
        file.write_all_at(&pattern(seed, offset, len as usize), offset)
            .expect("write data");
    }
    file.sync_all().expect("fsync image");
}

/// [`write_content`] into the file at `path`.
pub fn write_content_at(path: &Path, seed: u64, image_size: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    write_content(&file, seed, image_size);
}

/// `path` holds exactly `model(seed, image_size, size)`.
#[track_caller]
pub fn assert_content(path: &Path, seed: u64, image_size: u64, size: u64, what: &str) {
    let data = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", path.display()));
    assert_eq!(
        data.len() as u64,
        size,
        "{what}: size of {}",
        path.display()
    );
    assert!(
        data == model(seed, image_size, size),
        "{what}: {} does not hold content {seed}",
        path.display()
    );
}

// ---- the pool ----

/// A pool on its own filesystem plus its engine; the engine goes first on drop.
pub struct Pool {
    pub engine: Engine,
    pub name: PoolName,
    pub dir: PathBuf,
    pub fs: LoopFs,
}

impl Pool {
    /// Pool `name` at `<mount>/pool` of `fs` (setup_check where the filesystem has
    /// reflinks), its engine's state at `<mount>/state`.
    pub fn on_fs(fs: LoopFs, name: &str, revisions_to_keep: RevisionsToKeep) -> Pool {
        let dir = fs.path().join("pool");
        let engine = Engine::open(&fs.path().join("state")).expect("Engine::open");
        let name = PoolName::parse(name).unwrap();
        let spec = PoolSpec {
            name: name.clone(),
            dir_path: dir.clone(),
            setup_check: fs.fs_type().has_reflink(),
            revisions_to_keep,
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

    pub fn vol(&self, vid: &str) -> VolumeRef {
        VolumeRef {
            pool: self.name.clone(),
            vid: Vid::parse(vid).unwrap(),
        }
    }

    pub fn paths(&self, vid: &str) -> VolumePaths {
        VolumePaths::new(&self.dir, &Vid::parse(vid).unwrap())
    }
}

// ---- the full disk ----

/// Fill the filesystem to the last block with one file; returns it.
pub fn fill_disk(fs: &LoopFs) -> PathBuf {
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

pub fn free_disk(fs: &LoopFs, filler: &Path) {
    std::fs::remove_file(filler).expect("remove filler");
    let dir = File::open(fs.path()).expect("open mount point");
    rustix::fs::syncfs(&dir).expect("syncfs");
}

/// `result` is `NoSpace` with a message naming `vol` and the cause.
#[track_caller]
pub fn assert_no_space(result: Result<impl std::fmt::Debug, EngineError>, vol: &VolumeRef) {
    let err = result.expect_err("the operation must fail on a full disk");
    assert_eq!(err.kind(), ErrorKind::NoSpace, "kind of: {err}");
    let message = err.to_string();
    eprintln!("full disk: {message}");
    assert!(
        message.contains(&vol.to_string()),
        "the message names the volume: {message}"
    );
    assert!(
        message.contains("no space left on device"),
        "the message says why: {message}"
    );
}
