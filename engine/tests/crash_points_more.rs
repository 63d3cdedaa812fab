//! More crash-point tests (beside `crash_points.rs`, same mechanism, driven by
//! `crash_support`): the operation runs in `qsd-crash-runner`, which aborts after each
//! durable step k in turn; then the disk is checked, recovered as the daemon does
//! (reopen, finish interrupted removals, stop every volume) and used again. Operations covered here:
//!
//! * stop of a volatile volume whose running image was resized by hand (R§3.8 keeps
//!   that size as the nominal size): the nominal size is the old or the new one, and
//!   the next start makes an empty image of exactly that size;
//! * resize of a running volatile volume: the new nominal size is recorded first, then
//!   the image truncated in place; after the recovery stop the nominal size is the size
//!   the image had at the crash (old or new, never a mix of the two);
//! * stop of a snapshot (snap_on_start) volume: the source is never touched, and a
//!   leftover hardlink is the source's inode and gone after the recovery;
//! * resize of a running origin volume: the session's data is intact at either size,
//!   the recovery commits it at the size it had at the crash, and the sizes reported
//!   match the files.
//!
//! Each runs on btrfs (reflinks) and ext4 with `setup_check = false` (byte copies).
//! Needs root (loop mounts) and the `failpoints` feature (`cargo test --all-features`).

#![cfg(feature = "failpoints")]

mod common_fs;
mod crash_support;

use std::os::unix::fs::MetadataExt;

use common_fs::FsType;
use crash_support::{
    assert_revisions_one_of, build_origin_history, crash_after_every_step, create_pool,
    create_volume, ctx, nothing, some, state_name, state_of, vref, write_state, Case, World,
    IMAGE_SIZE, RESIZED, REVISIONS_TO_KEEP,
};
use qubes_storage_engine::{Engine, Vid, VolumeSpec};

const ORIGIN_VID: &str = "appvms/vm1/private";
const VOLATILE_VID: &str = "appvms/vm1/volatile";
const SNAPSHOT_VID: &str = "appvms/vm3/root";

fn resize_args(_: &World) -> Vec<String> {
    vec!["resize".into(), RESIZED.to_string()]
}

/// What a running image held at the crash ("D" or "D@12M"), kept for the checks after
/// the recovery (which deletes or commits the image).
fn remember_dirty(w: &World, state: &str) {
    std::fs::write(w.run_dir.join("dirty-at-crash"), state).unwrap();
}

fn dirty_at_crash(w: &World) -> String {
    std::fs::read_to_string(w.run_dir.join("dirty-at-crash")).unwrap()
}

fn stop_args(_: &World) -> Vec<String> {
    vec!["stop".into()]
}

// ---- volatile ----

/// A started volatile volume (nominal size 8 MiB) whose image holds D.
fn started_volatile(w: &World, engine: &Engine) {
    create_pool(w, engine);
    let spec = VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        ..Default::default()
    };
    create_volume(engine, VOLATILE_VID, spec);
    let dirty = engine.start(&vref(VOLATILE_VID), &ctx()).expect("start");
    write_state(&dirty, 'D');
}

/// [`started_volatile`] whose image was then grown by hand to 12 MiB.
fn started_volatile_resized_by_hand(w: &World, engine: &Engine) {
    started_volatile(w, engine);
    let dirty = w.paths(VOLATILE_VID).dirty();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&dirty)
        .unwrap();
    file.set_len(RESIZED).unwrap();
    file.sync_all().unwrap();
    assert_eq!(state_of(&dirty), some("D@12M"));
}

#[track_caller]
fn assert_nominal_size_old_or_new(w: &World, when: &str) {
    let nominal = w.info(VOLATILE_VID).config.size;
    assert!(
        [IMAGE_SIZE, RESIZED].contains(&nominal),
        "{when}: nominal size {nominal}"
    );
}

/// The next start makes an empty image of exactly the nominal size, and its stop keeps
/// that size.
fn volatile_starts_empty_at_its_nominal_size(w: &World, engine: &Engine) {
    let vol = vref(VOLATILE_VID);
    let nominal = w.info(VOLATILE_VID).config.size;
    let dirty = engine.start(&vol, &ctx()).expect("further start");
    assert_eq!(
        state_of(&dirty),
        Some(state_name('E', nominal)),
        "an empty image of the nominal size"
    );
    engine.stop(&vol, &ctx()).expect("further stop");
    assert_eq!(w.info(VOLATILE_VID).config.size, nominal);
    assert!(!dirty.exists());
}

fn volatile_stop_case() -> Case {
    Case {
        name: "stop-volatile",
        vid: VOLATILE_VID,
        history: started_volatile_resized_by_hand,
        args: stop_args,
        check_crashed: |w| {
            let dirty = w.dirty(VOLATILE_VID);
            assert!(
                [None, some("D@12M")].contains(&dirty),
                "after crash: dirty {dirty:?}"
            );
            assert_eq!(w.clean(VOLATILE_VID), None);
            assert_nominal_size_old_or_new(w, "after crash");
            // The new size is saved before the image goes: once it is gone, the
            // manual resize must already be the nominal size.
            if dirty.is_none() {
                assert_eq!(w.info(VOLATILE_VID).config.size, RESIZED, "after crash");
            }
        },
        check_recovered: |w| {
            assert_eq!(w.clean(VOLATILE_VID), None);
            assert_eq!(w.info(VOLATILE_VID).config.size, RESIZED, "after recovery");
        },
        complete: nothing,
        further: volatile_starts_empty_at_its_nominal_size,
    }
}

fn volatile_running_resize_case() -> Case {
    Case {
        name: "resize-running-volatile",
        vid: VOLATILE_VID,
        history: started_volatile,
        args: resize_args,
        check_crashed: |w| {
            let dirty = w.dirty(VOLATILE_VID);
            assert!(
                [some("D"), some("D@12M")].contains(&dirty),
                "after crash: the session's image {dirty:?}"
            );
            assert_nominal_size_old_or_new(w, "after crash");
            remember_dirty(w, &dirty.unwrap());
        },
        check_recovered: |w| {
            let size = if dirty_at_crash(w) == "D" {
                IMAGE_SIZE
            } else {
                RESIZED
            };
            assert_eq!(
                w.info(VOLATILE_VID).config.size,
                size,
                "the stop keeps the size the image had"
            );
        },
        complete: nothing,
        further: volatile_starts_empty_at_its_nominal_size,
    }
}

// ---- snapshot ----

/// The origin history plus a started snapshot of it whose image holds G.
fn started_snapshot(w: &World, engine: &Engine) {
    build_origin_history(w, engine, ORIGIN_VID);
    let spec = VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        snap_on_start: true,
        source: Some(Vid::parse(ORIGIN_VID).unwrap()),
        ..Default::default()
    };
    create_volume(engine, SNAPSHOT_VID, spec);
    let dirty = engine.start(&vref(SNAPSHOT_VID), &ctx()).expect("start");
    write_state(&dirty, 'G');
}

/// The snapshot's source keeps its committed state.
#[track_caller]
fn assert_source_untouched(w: &World, when: &str) {
    assert_eq!(
        (
            w.clean(ORIGIN_VID),
            w.dirty(ORIGIN_VID),
            w.precache(ORIGIN_VID)
        ),
        (some("C"), None, some("C")),
        "{when}: the source's images"
    );
    assert_eq!(w.revisions(ORIGIN_VID), ["1E", "2A", "3B"], "{when}");
}

fn snapshot_stop_case() -> Case {
    Case {
        name: "stop-snapshot",
        vid: SNAPSHOT_VID,
        history: started_snapshot,
        args: stop_args,
        check_crashed: |w| {
            let dirty = w.dirty(SNAPSHOT_VID);
            assert!(
                [None, some("G")].contains(&dirty),
                "snapshot dirty {dirty:?}"
            );
            if let Ok(own) = w.paths(SNAPSHOT_VID).clean().metadata() {
                let source = w.paths(ORIGIN_VID).clean().metadata().unwrap();
                assert_eq!((own.dev(), own.ino()), (source.dev(), source.ino()));
            }
            assert_source_untouched(w, "after crash");
        },
        check_recovered: |w| {
            let paths = w.paths(SNAPSHOT_VID);
            assert!(!paths.clean().exists(), "the recovery removes the hardlink");
            assert!(w.revisions(SNAPSHOT_VID).is_empty());
            assert_source_untouched(w, "after recovery");
        },
        complete: nothing,
        further: |w, engine| {
            let snapshot = vref(SNAPSHOT_VID);
            let dirty = engine.start(&snapshot, &ctx()).expect("further start");
            assert_eq!(state_of(&dirty), some("C"), "a fresh copy of the source");
            engine.stop(&snapshot, &ctx()).expect("further stop");
            assert!(!dirty.exists() && !w.paths(SNAPSHOT_VID).clean().exists());
            assert_source_untouched(w, "after a further session");
        },
    }
}

// ---- origin ----

/// The origin history, started, its session's image holding D.
fn started_origin(w: &World, engine: &Engine) {
    build_origin_history(w, engine, ORIGIN_VID);
    let dirty = engine.start(&vref(ORIGIN_VID), &ctx()).expect("start");
    write_state(&dirty, 'D');
}

/// Start, write F, stop: F is committed at the current size and the previous image
/// becomes the newest revision.
fn further_origin_session_works(w: &World, engine: &Engine) {
    let vol = vref(ORIGIN_VID);
    let before = w.clean(ORIGIN_VID).expect("a clean image");
    let size = w.paths(ORIGIN_VID).clean().metadata().unwrap().len();
    let dirty = engine.start(&vol, &ctx()).expect("further start");
    assert_eq!(w.dirty(ORIGIN_VID), Some(before.clone()));
    write_state(&dirty, 'F');
    engine.stop(&vol, &ctx()).expect("further stop");
    assert_eq!(w.clean(ORIGIN_VID), Some(state_name('F', size)));
    let revisions = w.revisions(ORIGIN_VID);
    let newest = revisions.last().expect("a revision");
    assert!(newest.ends_with(&before), "newest revision {newest}");
    assert!(revisions.len() <= REVISIONS_TO_KEEP as usize);
}

fn origin_running_resize_case() -> Case {
    Case {
        name: "resize-running-origin",
        vid: ORIGIN_VID,
        history: started_origin,
        args: resize_args,
        check_crashed: |w| {
            assert_eq!(w.clean(ORIGIN_VID), some("C"), "the committed image");
            assert_eq!(w.revisions(ORIGIN_VID), ["1E", "2A", "3B"]);
            let dirty = w.dirty(ORIGIN_VID);
            assert!(
                [some("D"), some("D@12M")].contains(&dirty),
                "the session's image {dirty:?}"
            );
            assert_eq!(w.precache(ORIGIN_VID), None, "consumed by the start");
            remember_dirty(w, &dirty.unwrap());
        },
        check_recovered: |w| {
            let session = dirty_at_crash(w);
            assert_eq!(
                w.clean(ORIGIN_VID),
                Some(session.clone()),
                "the recovery commits the session as it was"
            );
            assert_revisions_one_of(w, ORIGIN_VID, &[&["2A", "3B", "4C"]], "after recovery");
            let size = if session == "D" { IMAGE_SIZE } else { RESIZED };
            assert_eq!(w.info(ORIGIN_VID).size, size);
        },
        complete: nothing,
        further: further_origin_session_works,
    }
}

#[test]
fn btrfs_volatile_stop_crash_keeps_the_manual_resize() {
    crash_after_every_step(FsType::Btrfs, volatile_stop_case());
}

#[test]
fn ext4_volatile_stop_crash_keeps_the_manual_resize() {
    crash_after_every_step(FsType::Ext4, volatile_stop_case());
}

#[test]
fn btrfs_running_volatile_resize_crash_ends_at_the_size_of_its_image() {
    crash_after_every_step(FsType::Btrfs, volatile_running_resize_case());
}

#[test]
fn ext4_running_volatile_resize_crash_ends_at_the_size_of_its_image() {
    crash_after_every_step(FsType::Ext4, volatile_running_resize_case());
}

#[test]
fn btrfs_snapshot_stop_crash_never_touches_the_source() {
    crash_after_every_step(FsType::Btrfs, snapshot_stop_case());
}

#[test]
fn ext4_snapshot_stop_crash_never_touches_the_source() {
    crash_after_every_step(FsType::Ext4, snapshot_stop_case());
}

#[test]
fn btrfs_running_origin_resize_crash_commits_the_session_at_its_size() {
    crash_after_every_step(FsType::Btrfs, origin_running_resize_case());
}

#[test]
fn ext4_running_origin_resize_crash_commits_the_session_at_its_size() {
    crash_after_every_step(FsType::Ext4, origin_running_resize_case());
}
