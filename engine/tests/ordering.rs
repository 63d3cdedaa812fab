//! Every operation is ordered so that a failure leaves the old state (issue 9 item 7,
//! contract fix 12): with a state directory that cannot be written (a read-only bind
//! mount over it) each operation that records something fails before it changed any
//! file, and nothing changes in memory either; Remove unregisters before it deletes a
//! file, and a Remove whose file deletion fails has still removed the volume, whose
//! files are deleted later (`finish_interrupted_removals`, or a CreateVolume of the vid).
//! On loop-mounted btrfs, XFS and ext4 (the copy fallback).

mod common_fs;
mod scenario_support;

use common_fs::{FsType, Immutable, ReadOnlyBind, MIB};
use qubes_storage_engine::{ErrorKind, OpCtx, RevisionsToKeep, VolumeRef, VolumeSpec};
use scenario_support::{exists, files_in, on_every_fs, read_at, write_at, Fixture};

const VID: &str = "appvms/work/private";

fn ctx(op: &str) -> OpCtx {
    OpCtx::quiet(op)
}

/// An origin with one committed session ("v1") and a revision of the empty image.
fn committed_origin(f: &Fixture) -> VolumeRef {
    let v = f.origin(VID, 4 * MIB, 2);
    f.session(&v, 0, b"v1");
    v
}

/// The state directory cannot be written while the guard lives.
fn read_only_state(f: &Fixture) -> ReadOnlyBind {
    ReadOnlyBind::new(f.engine.state_dir())
}

#[track_caller]
fn assert_state_write_failed<T: std::fmt::Debug>(
    result: qubes_storage_engine::Result<T>,
    vol: &str,
) {
    let err = result.expect_err("a state directory that cannot be written fails the call");
    assert_ne!(err.kind(), ErrorKind::Cancelled, "{err}");
    let message = err.to_string();
    assert!(message.contains(vol), "names the object: {message}");
    assert!(message.contains("state journal"), "says why: {message}");
}

fn remove_with_a_read_only_state_directory_fails_and_keeps_every_file(t: FsType) {
    let f = Fixture::new(t);
    let v = committed_origin(&f);
    let dir = f.paths(VID).dir().to_owned();
    let before = files_in(&dir);
    {
        let _ro = read_only_state(&f);
        assert_state_write_failed(f.engine.remove_volume(&v, &ctx("Remove")), VID);
        assert_eq!(files_in(&dir), before, "no file was deleted");
        assert!(f.engine.volume_info(&v).is_ok(), "still registered");
    }
    let reopened = qubes_storage_engine::Engine::open(f.engine.state_dir()).unwrap();
    assert!(
        reopened.volume_info(&v).is_ok(),
        "still registered after a restart"
    );
    f.engine.remove_volume(&v, &ctx("Remove")).unwrap();
    assert!(!exists(&dir), "a later Remove deletes everything");
}

fn resize_with_a_read_only_state_directory_fails_and_keeps_the_image(t: FsType) {
    let f = Fixture::new(t);
    let v = committed_origin(&f);
    let clean = f.paths(VID).clean();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&clean).unwrap());
    {
        let _ro = read_only_state(&f);
        assert_state_write_failed(f.engine.resize(&v, 8 * MIB, false, &ctx("Resize")), VID);
    }
    let meta = std::fs::metadata(&clean).unwrap();
    assert_eq!(meta.len(), 4 * MIB, "the image keeps its size");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&meta),
        ino,
        "and its inode"
    );
    let info = f.engine.volume_info(&v).unwrap();
    assert_eq!((info.size, info.config.size), (4 * MIB, 4 * MIB));
    assert_eq!(read_at(&clean, 0, 2), b"v1");
}

fn create_with_a_read_only_state_directory_registers_nothing_and_leaves_no_file(t: FsType) {
    let f = Fixture::new(t);
    let v = f.vref(VID);
    let spec = scenario_support::origin_spec(4 * MIB, 1);
    {
        let _ro = read_only_state(&f);
        assert_state_write_failed(
            f.engine.create_volume(&v, spec.clone(), &ctx("Create")),
            VID,
        );
    }
    assert!(
        !exists(f.paths(VID).dir()),
        "no file and no VM directory left"
    );
    assert_eq!(
        f.engine.volume_info(&v).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    f.engine.create_volume(&v, spec, &ctx("Create")).unwrap();
}

fn property_writes_with_a_read_only_state_directory_change_nothing(t: FsType) {
    let f = Fixture::new(t);
    let v = committed_origin(&f);
    let rtk = RevisionsToKeep::new(5).unwrap();
    {
        let _ro = read_only_state(&f);
        assert_state_write_failed(f.engine.set_revisions_to_keep(&v, rtk), VID);
        assert_state_write_failed(f.engine.set_rw(&v, false), VID);
        let pool = f.pool.to_string();
        assert_state_write_failed(f.engine.set_pool_revisions_to_keep(&f.pool, rtk), &pool);
    }
    let info = f.engine.volume_info(&v).unwrap();
    assert_eq!(
        (info.config.revisions_to_keep.get(), info.config.rw),
        (2, true)
    );
    let pool = f.engine.pool_config(&f.pool).unwrap();
    assert_eq!(pool.revisions_to_keep, RevisionsToKeep::DEFAULT);
}

fn volatile_stop_with_a_read_only_state_directory_keeps_the_session(t: FsType) {
    let f = Fixture::new(t);
    let v = f.create(
        "appvms/work/volatile",
        VolumeSpec {
            size: 4 * MIB,
            rw: true,
            ..Default::default()
        },
    );
    let dirty = f.start(&v);
    // Grown by hand (the VM's tooling): the stop must record the new nominal size.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dirty)
        .and_then(|file| file.set_len(8 * MIB))
        .unwrap();
    write_at(&dirty, 0, b"session");
    {
        let _ro = read_only_state(&f);
        assert_state_write_failed(f.engine.stop(&v, &ctx("Stop")), "appvms/work/volatile");
    }
    assert_eq!(
        read_at(&dirty, 0, 7),
        b"session",
        "still started, data intact"
    );
    f.stop(&v);
    assert_eq!(f.engine.volume_info(&v).unwrap().config.size, 8 * MIB);
}

/// A file that cannot be deleted (its VM directory is immutable): the volume is removed
/// all the same, the files stay until the removal is finished.
fn remove_whose_files_cannot_be_deleted_yet_is_finished_later(t: FsType) {
    let f = Fixture::new(t);
    let v = committed_origin(&f);
    let dir = f.paths(VID).dir().to_owned();
    let before = files_in(&dir);
    {
        let _frozen = Immutable::new(&dir);
        f.engine.remove_volume(&v, &ctx("Remove")).unwrap();
        assert_eq!(files_in(&dir), before, "nothing could be deleted");
        assert_eq!(
            f.engine.volume_info(&v).unwrap_err().kind(),
            ErrorKind::NotFound,
            "the volume is removed"
        );
        assert!(f.engine.finish_interrupted_removals().is_err());
    }
    let reopened = qubes_storage_engine::Engine::open(f.engine.state_dir()).unwrap();
    assert_eq!(
        reopened.volume_info(&v).unwrap_err().kind(),
        ErrorKind::NotFound,
        "removed after a restart too"
    );
    assert_eq!(reopened.finish_interrupted_removals().unwrap(), 1);
    assert!(!exists(&dir), "every file is deleted");
    assert_eq!(reopened.finish_interrupted_removals().unwrap(), 0);
}

/// CreateVolume of a vid whose removal was not finished deletes the removed files
/// first: they are not a user's leftovers.
fn create_of_a_vid_whose_removal_was_interrupted_starts_empty(t: FsType) {
    let f = Fixture::new(t);
    let v = committed_origin(&f);
    let dir = f.paths(VID).dir().to_owned();
    {
        let _frozen = Immutable::new(&dir);
        f.engine.remove_volume(&v, &ctx("Remove")).unwrap();
    }
    let spec = scenario_support::origin_spec(4 * MIB, 2);
    f.engine.create_volume(&v, spec, &ctx("Create")).unwrap();
    let info = f.engine.volume_info(&v).unwrap();
    assert!(
        info.revisions.is_empty(),
        "no revision of the removed volume"
    );
    assert_eq!(read_at(&f.paths(VID).clean(), 0, 2), [0, 0]);
    assert_eq!(f.engine.finish_interrupted_removals().unwrap(), 0);
}

on_every_fs!(
    remove_with_a_read_only_state_directory_fails_and_keeps_every_file,
    resize_with_a_read_only_state_directory_fails_and_keeps_the_image,
    create_with_a_read_only_state_directory_registers_nothing_and_leaves_no_file,
    property_writes_with_a_read_only_state_directory_change_nothing,
    volatile_stop_with_a_read_only_state_directory_keeps_the_session,
    remove_whose_files_cannot_be_deleted_yet_is_finished_later,
    create_of_a_vid_whose_removal_was_interrupted_starts_empty,
);
