//! What operations cost in space (issue 14): a clone across filesystems takes on the
//! destination the space of its data and no more — no speculative preallocation left
//! in the holes of the copy, no second copy for the revision, and on a reflink
//! filesystem none for the precache (without reflinks the precache is a copy by
//! design) — and a commit writes no data (its revision is a hard link).
//!
//! Space is the destination filesystem's own count (statvfs, what `df` shows), taken
//! after the engine's work after its reply is done and the filesystem synced.
//!
//! Needs root (loop mounts).

mod common_fs;

use std::path::Path;

use common_fs::{allocated_bytes, write_sparse_file, FsType, LoopFs, MIB};
use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};

/// A 512 MiB image with 195 MiB of data in 500 ranges of 400 KiB, one per 1 MiB slot
/// at a varying offset in it (the engine bench's layout, a quarter of its size).
const IMAGE: u64 = 512 * MIB;
const RANGES: u64 = 500;
const RANGE: u64 = 400 << 10;
const DATA: u64 = RANGES * RANGE;
/// Metadata a copy may add (extent trees, directory blocks, the state journal).
const SLACK: u64 = 4 * MIB;
const VID: &str = "appvms/work/private";

fn ctx() -> OpCtx {
    OpCtx::quiet("space")
}

/// Pool `name` on `fs` (setup_check where it reflinks), with an engine of its own.
fn pool(fs: &LoopFs, engine: &Engine, name: &str) -> PoolName {
    let pool = PoolName::parse(name).unwrap();
    let spec = PoolSpec {
        name: pool.clone(),
        dir_path: fs.path().join(name),
        setup_check: fs.fs_type().has_reflink(),
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    };
    engine.create_pool(spec).expect("create pool");
    pool
}

fn vref(pool: &PoolName) -> VolumeRef {
    VolumeRef {
        pool: pool.clone(),
        vid: Vid::parse(VID).unwrap(),
    }
}

fn origin() -> VolumeSpec {
    VolumeSpec {
        size: IMAGE,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    }
}

/// The scattered data, written into a started volume and committed.
fn fill(engine: &Engine, vol: &VolumeRef) {
    let dirty = engine.start(vol, &ctx()).expect("start");
    let ranges: Vec<(u64, u64)> = (0..RANGES)
        .map(|i| (i * MIB + (i * 37 % 150) * 4096, RANGE))
        .collect();
    write_sparse_file(&dirty, IMAGE, &ranges, 7);
    engine.stop(vol, &ctx()).expect("stop");
}

fn used(fs: &LoopFs) -> u64 {
    rustix::fs::sync();
    let st = rustix::fs::statvfs(fs.path()).expect("statvfs");
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

#[track_caller]
fn assert_at_most(what: &str, bytes: u64, limit: u64) {
    assert!(
        bytes <= limit,
        "{what}: {} MiB, expected at most {} MiB",
        bytes / MIB,
        limit / MIB
    );
}

fn clone_across(source_fs: FsType, destination_fs: FsType) {
    common_fs::require_root();
    let (src_fs, dst_fs) = (
        LoopFs::new(source_fs, 2048 * MIB),
        LoopFs::new(destination_fs, 2048 * MIB),
    );
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let (src, dst) = (pool(&src_fs, &engine, "src"), pool(&dst_fs, &engine, "dst"));
    engine.create_volume(&vref(&src), origin(), &ctx()).unwrap();
    fill(&engine, &vref(&src));
    engine.create_volume(&vref(&dst), origin(), &ctx()).unwrap();
    engine.settle();
    let before = used(&dst_fs);
    engine
        .import_volume(&vref(&dst), &vref(&src), &ctx())
        .expect("clone");
    engine.settle();
    let grown = used(&dst_fs).saturating_sub(before);
    let clean = Path::new(&dst_fs.path().join("dst")).join("appvms/work/private.img");
    assert_at_most("the clone's image", allocated_bytes(&clean), DATA + SLACK);
    // Without reflinks the precache is a second copy (README: pools without reflinks
    // copy twice); with them it shares the image's extents.
    let copies = if destination_fs.has_reflink() { 1 } else { 2 };
    assert_at_most("the destination's growth", grown, copies * DATA + SLACK);
    drop(engine);
}

#[test]
fn a_clone_from_btrfs_into_xfs_takes_the_space_of_its_data() {
    clone_across(FsType::Btrfs, FsType::Xfs);
}

#[test]
fn a_clone_from_btrfs_into_ext4_takes_the_space_of_its_data() {
    clone_across(FsType::Btrfs, FsType::Ext4);
}

#[test]
fn a_clone_from_xfs_into_btrfs_takes_the_space_of_its_data() {
    clone_across(FsType::Xfs, FsType::Btrfs);
}

/// A stop commits without writing data: on a reflink filesystem the pool grows by the
/// session's own writes only (the revision is a hard link, the precache a reflink).
#[test]
fn a_commit_on_btrfs_takes_no_space_beyond_the_session() {
    common_fs::require_root();
    let fs = LoopFs::new(FsType::Btrfs, 2048 * MIB);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let p = pool(&fs, &engine, "p");
    engine.create_volume(&vref(&p), origin(), &ctx()).unwrap();
    fill(&engine, &vref(&p));
    engine.settle();
    let before = used(&fs);
    engine.start(&vref(&p), &ctx()).unwrap();
    engine.stop(&vref(&p), &ctx()).unwrap();
    engine.settle();
    assert_at_most(
        "a session without writes",
        used(&fs).saturating_sub(before),
        SLACK,
    );
}
