//! Crash-point tests (issue 2): for every durable step k of an operation, the operation
//! runs in a child process (`qsd-crash-runner`) that aborts right after step k
//! (`QSD_CRASH_AFTER_STEP=k`, see `src/failpoint.rs`). Then the volume is recovered the
//! way the daemon does it (a fresh `Engine::open` on the same state directory,
//! `finish_interrupted_removals`, then `stop` of every volume, R§5.4) and checked:
//!
//! * right after the crash, every image is exactly the old or exactly the new state
//!   (whole-file comparison with a model of each state), the revisions are one of the
//!   allowed sets for "before" / "in between" / "after", a started session's dirty
//!   image is intact, no temp file exists, and the engine's started/dirty/size view
//!   matches the files;
//! * after recovery the same holds, nothing is started any more, and no committed
//!   data was lost (the old image is the clean image or a revision);
//! * the interrupted operation can be completed (retried) and a further full operation
//!   (start, write, stop) works and leaves no temp or import file.
//!
//! Operations: start, stop (commit), revert, resize (halted), import (import_data +
//! import_data_end) and import_volume of an origin volume; start and stop of an origin
//! with snapshots disabled; start of a snapshot volume; create and remove. Each runs on
//! btrfs (reflinks) and on ext4 with `setup_check = false` (the byte-copy fallback).
//!
//! Each state of a volume is an 8 MiB image that is zero except for a 64 KiB pattern at
//! offsets 0 and 5 MiB, one pattern per state ("E" = empty, "A", "B", …), so a file is
//! identified by its content alone.
//!
//! The driver (the runner, the recovery, the checks after every step) and the content
//! model are in `crash_support`; this file holds the cases of an origin volume.
//!
//! Needs root (loop mounts) and the `failpoints` feature (`cargo test --all-features`).

#![cfg(feature = "failpoints")]

mod common_fs;
mod crash_support;

use std::os::unix::fs::MetadataExt;

use common_fs::FsType;
use crash_support::{
    assert_revisions_one_of, build_origin_history, crash_after_every_step, create_origin,
    create_pool, ctx, model, nothing, session, some, state_name, state_of, vref, write_state, Case,
    World, IMAGE_SIZE, POOL, RESIZED, REVISIONS_TO_KEEP,
};
use qubes_storage_engine::{Engine, ErrorKind, RevisionsToKeep, Vid, VolumeSpec};

const VID: &str = "appvms/vm1/private";
const SOURCE_VID: &str = "appvms/vm2/private";
/// A snapshot (snap_on_start) volume of [`VID`].
const SNAPSHOT_VID: &str = "appvms/vm3/root";

// ---- the committed history every run starts from ----

/// Revisions 1 = E (empty), 2 = A, 3 = B; clean = C; precache = C; stopped.
fn build_history(w: &World, engine: &Engine) {
    build_origin_history(w, engine, VID);
}

// ---- assertions ----

#[track_caller]
fn assert_clean_one_of(w: &World, allowed: &[&str], when: &str) -> String {
    let clean = w
        .clean(VID)
        .unwrap_or_else(|| panic!("{when}: the clean image is missing"));
    assert!(
        allowed.contains(&clean.as_str()),
        "{when}: clean image holds {clean}, expected one of {allowed:?}"
    );
    clean
}

// ---- the operations under test ----

fn start_case() -> Case {
    Case {
        name: "start",
        vid: VID,
        history: build_history,
        args: |_| vec!["start".into()],
        check_crashed: |w| {
            assert_clean_one_of(w, &["C"], "after crash");
            assert_eq!(w.revisions(VID), ["1E", "2A", "3B"], "after crash");
            let images = (w.dirty(VID), w.precache(VID));
            assert!(
                images == (None, some("C")) || images == (some("C"), None),
                "after crash: (dirty, precache) = {images:?}"
            );
        },
        check_recovered: |w| {
            assert_clean_one_of(w, &["C"], "after recovery");
            // A started volume is committed by the recovery: a duplicate of C (R§5.5).
            assert_revisions_one_of(
                w,
                VID,
                &[&["1E", "2A", "3B"], &["2A", "3B", "4C"]],
                "after recovery",
            );
        },
        complete: nothing,
        further: further_session_works,
    }
}

fn stop_case() -> Case {
    Case {
        name: "stop",
        vid: VID,
        history: |w, engine| {
            build_history(w, engine);
            let dirty = engine.start(&vref(VID), &ctx()).expect("start");
            write_state(&dirty, 'D');
            assert_eq!(w.dirty(VID), some("D"));
        },
        args: |_| vec!["stop".into()],
        check_crashed: |w| match assert_clean_one_of(w, &["C", "D"], "after crash").as_str() {
            "C" => {
                assert_eq!(
                    w.dirty(VID),
                    some("D"),
                    "after crash before the rename: the session is intact"
                );
                assert_eq!(w.precache(VID), None, "after crash");
                let allowed: &[&[&str]] = &[
                    &["1E", "2A", "3B"],
                    &["1E", "2A", "3B", "4C"],
                    &["2A", "3B", "4C"],
                ];
                assert_revisions_one_of(w, VID, allowed, "after crash before the rename");
            }
            _ => {
                assert_eq!(w.dirty(VID), None, "after crash after the rename");
                assert!(
                    [None, some("D")].contains(&w.precache(VID)),
                    "precache {:?}",
                    w.precache(VID)
                );
                assert_eq!(
                    w.revisions(VID),
                    ["2A", "3B", "4C"],
                    "after crash after the rename"
                );
            }
        },
        check_recovered: |w| {
            assert_clean_one_of(w, &["D"], "after recovery (the daemon commits the session)");
            // A crash between add-revision and rename leaves 4C, the clean image's own
            // inode: the recovery's commit keeps it and adds no duplicate of C, so A is
            // not pruned for one (the reference's re-commit did, R§5.5).
            assert_eq!(
                w.revisions(VID),
                ["2A", "3B", "4C"],
                "after recovery: the revisions a stop without a crash keeps"
            );
        },
        complete: nothing,
        further: further_session_works,
    }
}

fn revert_case() -> Case {
    Case {
        name: "revert",
        vid: VID,
        history: build_history,
        args: |_| vec!["revert".into(), "2".into()],
        check_crashed: check_revert_state,
        check_recovered: check_revert_state,
        complete: |w, engine| {
            if w.clean(VID) == some("C") {
                engine
                    .revert(&vref(VID), Some(2), &ctx())
                    .expect("retry revert");
            }
            assert_eq!(w.clean(VID), some("A"), "after the retried revert");
            assert_eq!(
                w.revisions(VID),
                ["1E", "3B", "4C"],
                "2 consumed, C kept once, nothing else pruned for a duplicate of it"
            );
        },
        further: further_session_works,
    }
}

fn check_revert_state(w: &World) {
    match assert_clean_one_of(w, &["C", "A"], "after revert crash").as_str() {
        "C" => {
            assert_revisions_one_of(
                w,
                VID,
                &[&["1E", "2A", "3B"], &["1E", "2A", "3B", "4C"]],
                "before the rename",
            );
            assert!(
                [None, some("C")].contains(&w.precache(VID)),
                "precache {:?}",
                w.precache(VID)
            );
        }
        _ => {
            assert_eq!(
                w.revisions(VID),
                ["1E", "3B", "4C"],
                "after the rename: 2 consumed, C kept"
            );
            assert!(
                [None, some("A")].contains(&w.precache(VID)),
                "precache {:?}",
                w.precache(VID)
            );
        }
    }
    assert_eq!(w.dirty(VID), None);
}

fn resize_case() -> Case {
    Case {
        name: "resize",
        vid: VID,
        history: build_history,
        args: |_| vec!["resize".into(), RESIZED.to_string()],
        check_crashed: check_resize_state,
        check_recovered: check_resize_state,
        complete: |w, engine| {
            engine
                .resize(&vref(VID), RESIZED, false, &ctx())
                .expect("retry resize");
            assert_eq!(w.clean(VID), some("C@12M"));
            let info = w.engine().volume_info(&vref(VID)).expect("volume_info");
            assert_eq!(
                (info.size, info.config.size),
                (RESIZED, RESIZED),
                "size and persisted nominal size"
            );
        },
        further: further_session_works,
    }
}

fn check_resize_state(w: &World) {
    let clean = assert_clean_one_of(w, &["C", "C@12M"], "resize");
    assert_eq!(
        w.revisions(VID),
        ["1E", "2A", "3B"],
        "resize never touches revisions"
    );
    // The precache is replaced after the new image exists: between the two it is the
    // old image, whose size and mtime no longer match, so the next start discards it.
    let precache = w.precache(VID);
    let stale_but_detectable = precache == some("C") && clean == "C@12M";
    assert!(
        precache.is_none() || precache == Some(clean.clone()) || stale_but_detectable,
        "precache {precache:?} vs clean {clean}"
    );
    assert_eq!(w.dirty(VID), None);
}

/// Import of state G (import_data + write + import_data_end(true)).
fn import_case() -> Case {
    Case {
        name: "import",
        vid: VID,
        history: |w, engine| {
            build_history(w, engine);
            std::fs::write(w.run_dir.join("g.img"), model('G', IMAGE_SIZE).as_slice()).unwrap()
        },
        args: |w| {
            vec![
                "import".into(),
                w.run_dir.join("g.img").display().to_string(),
            ]
        },
        check_crashed: |w| check_import_state(w, "G"),
        check_recovered: |w| check_import_state(w, "G"),
        complete: |w, engine| {
            if w.clean(VID) == some("C") {
                let mut file = engine
                    .import_data(&vref(VID), IMAGE_SIZE, false, &ctx())
                    .expect("import_data");
                std::io::Write::write_all(&mut file, &model('G', IMAGE_SIZE)).unwrap();
                drop(file);
                engine
                    .import_data_end(&vref(VID), true, &ctx())
                    .expect("import_data_end");
            }
            assert_eq!(w.clean(VID), some("G"));
            assert_eq!(
                w.revisions(VID),
                ["2A", "3B", "4C"],
                "C kept once, whether the first attempt linked it or the retry did"
            );
        },
        further: further_session_works,
    }
}

/// Import (clone) of the source volume, whose clean image holds H.
fn import_volume_case() -> Case {
    Case {
        name: "import-volume",
        vid: VID,
        history: |w, engine| {
            build_history(w, engine);
            create_origin(engine, SOURCE_VID);
            session(engine, SOURCE_VID, 'H');
        },
        args: |_| vec!["import-volume".into(), POOL.into(), SOURCE_VID.into()],
        check_crashed: |w| check_import_state(w, "H"),
        check_recovered: |w| check_import_state(w, "H"),
        complete: |w, engine| {
            if w.clean(VID) == some("C") {
                engine
                    .import_volume(&vref(VID), &vref(SOURCE_VID), &ctx())
                    .expect("retry import_volume");
            }
            assert_eq!(w.clean(VID), some("H"));
            assert_eq!(
                w.revisions(VID),
                ["2A", "3B", "4C"],
                "C kept once, whether the first attempt linked it or the retry did"
            );
            assert_eq!(
                state_of(&w.paths(SOURCE_VID).clean()),
                some("H"),
                "the source is untouched"
            );
        },
        further: further_session_works,
    }
}

fn check_import_state(w: &World, new: &str) {
    match assert_clean_one_of(w, &["C", new], "import").as_str() {
        "C" => {
            let allowed: &[&[&str]] = &[
                &["1E", "2A", "3B"],
                &["1E", "2A", "3B", "4C"],
                &["2A", "3B", "4C"],
            ];
            assert_revisions_one_of(w, VID, allowed, "import before the rename");
            assert!(
                [None, some("C")].contains(&w.precache(VID)),
                "precache {:?}",
                w.precache(VID)
            );
        }
        _ => {
            assert_eq!(
                w.revisions(VID),
                ["2A", "3B", "4C"],
                "import after the rename"
            );
            assert!(
                !w.import_exists(VID),
                "the import file became the clean image"
            );
            assert!(
                [None, Some(new.to_owned())].contains(&w.precache(VID)),
                "precache {:?}",
                w.precache(VID)
            );
        }
    }
    assert_eq!(w.dirty(VID), None);
    if w.paths(SOURCE_VID).clean().exists() {
        assert_eq!(
            state_of(&w.paths(SOURCE_VID).clean()),
            some("H"),
            "the source is untouched"
        );
        assert_eq!(
            w.revisions(SOURCE_VID),
            ["1E"],
            "the source's revisions are untouched"
        );
    }
}

// ---- other volume kinds ----

fn origin_spec(revisions_to_keep: Option<RevisionsToKeep>) -> VolumeSpec {
    VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        save_on_stop: true,
        revisions_to_keep,
        ..Default::default()
    }
}

/// Snapshots disabled (revisions_to_keep −1): clean = A, no revision, no precache.
fn build_snapshots_disabled_history(w: &World, engine: &Engine) {
    create_pool(w, engine);
    let spec = origin_spec(Some(RevisionsToKeep::DISABLED));
    engine
        .create_volume(&vref(VID), spec, &ctx())
        .expect("create volume");
    session(engine, VID, 'A');
    assert_eq!((w.clean(VID), w.precache(VID)), (some("A"), None));
    assert!(w.revisions(VID).is_empty());
}

/// [`build_history`] plus a snapshot volume of it, halted.
fn build_snapshot_history(w: &World, engine: &Engine) {
    build_history(w, engine);
    let spec = VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        snap_on_start: true,
        source: Some(Vid::parse(VID).unwrap()),
        ..Default::default()
    };
    let snapshot = vref(SNAPSHOT_VID);
    engine
        .create_volume(&snapshot, spec, &ctx())
        .expect("create snapshot volume");
}

/// (clean, dirty) of the volume with snapshots disabled is one of `allowed`.
#[track_caller]
fn assert_images_one_of(w: &World, allowed: &[(Option<&str>, Option<&str>)], when: &str) {
    let images = (w.clean(VID), w.dirty(VID));
    let found = allowed
        .iter()
        .any(|(c, d)| images == (c.map(str::to_owned), d.map(str::to_owned)));
    assert!(
        found,
        "{when}: (clean, dirty) = {images:?}, expected one of {allowed:?}"
    );
    assert!(
        w.revisions(VID).is_empty() && w.precache(VID).is_none(),
        "{when}: no revision, no precache"
    );
}

fn snapshots_disabled_start_case() -> Case {
    Case {
        name: "start-snapshots-disabled",
        vid: VID,
        history: build_snapshots_disabled_history,
        args: |_| vec!["start".into()],
        check_crashed: |w| {
            assert_images_one_of(w, &[(Some("A"), None), (None, Some("A"))], "crash")
        },
        check_recovered: |w| assert_images_one_of(w, &[(Some("A"), None)], "recovery"),
        complete: nothing,
        further: further_session_without_revisions,
    }
}

fn snapshots_disabled_stop_case() -> Case {
    Case {
        name: "stop-snapshots-disabled",
        vid: VID,
        history: |w, engine| {
            build_snapshots_disabled_history(w, engine);
            let dirty = engine.start(&vref(VID), &ctx()).expect("start");
            write_state(&dirty, 'D');
            assert_eq!((w.clean(VID), w.dirty(VID)), (None, some("D")));
        },
        args: |_| vec!["stop".into()],
        check_crashed: |w| {
            assert_images_one_of(w, &[(None, Some("D")), (Some("D"), None)], "crash")
        },
        check_recovered: |w| assert_images_one_of(w, &[(Some("D"), None)], "recovery"),
        complete: nothing,
        further: further_session_without_revisions,
    }
}

/// Start, write F, stop on a volume with snapshots disabled: F is committed in place.
fn further_session_without_revisions(w: &World, engine: &Engine) {
    let before = w
        .clean(VID)
        .expect("clean image before the further session");
    let dirty = engine.start(&vref(VID), &ctx()).expect("further start");
    assert_eq!(
        w.dirty(VID),
        Some(before),
        "the VM writes into the committed image"
    );
    write_state(&dirty, 'F');
    engine.stop(&vref(VID), &ctx()).expect("further stop");
    assert_images_one_of(w, &[(Some("F"), None)], "further session");
}

fn snapshot_start_case() -> Case {
    Case {
        name: "start-snapshot",
        vid: SNAPSHOT_VID,
        history: build_snapshot_history,
        args: |_| vec!["start".into()],
        check_crashed: |w| {
            let paths = w.paths(SNAPSHOT_VID);
            let dirty = state_of(&paths.dirty());
            assert!(
                [None, some("C")].contains(&dirty),
                "snapshot dirty {dirty:?}"
            );
            if let Ok(own) = paths.clean().metadata() {
                let source = w.paths(VID).clean().metadata().unwrap();
                assert_eq!(
                    (own.dev(), own.ino()),
                    (source.dev(), source.ino()),
                    "the hardlink"
                );
            }
            assert_source_untouched(w);
        },
        check_recovered: |w| {
            let paths = w.paths(SNAPSHOT_VID);
            assert!(
                !paths.dirty().exists() && !paths.clean().exists(),
                "the recovery stop clears the snapshot"
            );
            assert_source_untouched(w);
        },
        complete: nothing,
        further: |w, engine| {
            let snapshot = vref(SNAPSHOT_VID);
            let dirty = engine
                .start(&snapshot, &ctx())
                .expect("further start of the snapshot");
            assert_eq!(
                state_of(&dirty),
                some("C"),
                "the snapshot starts from the source"
            );
            write_state(&dirty, 'F');
            engine
                .stop(&snapshot, &ctx())
                .expect("further stop of the snapshot");
            assert!(!dirty.exists() && !w.paths(SNAPSHOT_VID).clean().exists());
            assert_source_untouched(w);
        },
    }
}

/// The snapshot's source keeps its committed state.
#[track_caller]
fn assert_source_untouched(w: &World) {
    assert_eq!(
        (w.clean(VID), w.dirty(VID)),
        (some("C"), None),
        "the source's images"
    );
    assert_eq!(
        w.revisions(VID),
        ["1E", "2A", "3B"],
        "the source's revisions"
    );
}

fn is_registered(w: &World) -> bool {
    match w.engine().volume_info(&vref(VID)) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("volume_info: {e}"),
    }
}

fn create_case() -> Case {
    Case {
        name: "create",
        vid: VID,
        history: create_pool,
        args: |_| vec!["create".into(), IMAGE_SIZE.to_string()],
        check_crashed: check_create_state,
        check_recovered: check_create_state,
        complete: |w, engine| {
            if !is_registered(w) {
                create_after_a_crash(w, engine);
            }
            assert_eq!(w.clean(VID), some("E"), "a created volume is empty");
        },
        further: further_session_works,
    }
}

fn check_create_state(w: &World) {
    let (clean, precache) = (w.clean(VID), w.precache(VID));
    if is_registered(w) {
        // The precache is a cache, made after the reply on a pool with reflinks.
        assert_eq!(clean, some("E"), "a registered volume is complete");
        assert!(
            [None, some("E")].contains(&precache),
            "precache {precache:?}"
        );
    } else {
        assert!([None, some("E")].contains(&clean), "clean {clean:?}");
        assert!(
            [None, some("E")].contains(&precache),
            "precache {precache:?}"
        );
    }
    assert!(w.revisions(VID).is_empty());
}

/// A retried create succeeds: what an interrupted create leaves holds no data (empty
/// images, no revision), so it is cleared rather than in the way.
fn create_after_a_crash(w: &World, engine: &Engine) {
    if let Err(e) = engine.create_volume(&vref(VID), origin_spec(None), &ctx()) {
        panic!(
            "create after a crash (leftovers {:?}/{:?}): {e}",
            w.clean(VID),
            w.precache(VID)
        );
    }
    assert_eq!(w.clean(VID), some("E"));
}

fn remove_case() -> Case {
    Case {
        name: "remove",
        vid: VID,
        history: build_history,
        args: |_| vec!["remove".into()],
        check_crashed: check_remove_crashed,
        check_recovered: |w| {
            if !is_registered(w) {
                assert_no_files_left(w, "the recovery finishes an interrupted removal");
            } else {
                check_remove_crashed(w);
            }
        },
        complete: |w, engine| {
            if is_registered(w) {
                engine
                    .remove_volume(&vref(VID), &ctx())
                    .expect("retry remove");
            }
            assert!(!w.paths(VID).dir().exists(), "the VM directory is gone");
        },
        further: |w, engine| {
            create_origin(engine, VID);
            assert_eq!(w.clean(VID), some("E"), "a re-created volume is empty");
            further_session_works(w, engine);
            assert_eq!(
                w.revisions(VID),
                ["1E"],
                "no revision of the removed volume leaks"
            );
        },
    }
}

/// The registration goes first (contract fix 12): a registered volume has every file;
/// an unregistered one may have lost some (oldest revisions first, then clean,
/// precache).
fn check_remove_crashed(w: &World) {
    let (clean, precache) = (w.clean(VID), w.precache(VID));
    if is_registered(w) {
        assert_eq!(
            (clean, precache),
            (some("C"), some("C")),
            "a registered volume keeps every file"
        );
        assert_eq!(w.revisions(VID), ["1E", "2A", "3B"], "and every revision");
    } else {
        assert!([None, some("C")].contains(&clean), "clean {clean:?}");
        assert!(
            [None, some("C")].contains(&precache),
            "precache {precache:?}"
        );
        let allowed: &[&[&str]] = &[&["1E", "2A", "3B"], &["2A", "3B"], &["3B"], &[]];
        assert_revisions_one_of(w, VID, allowed, "remove removes the oldest revision first");
        if !w.revisions(VID).is_empty() {
            assert_eq!(clean, some("C"), "clean goes after every revision");
        }
    }
}

#[track_caller]
fn assert_no_files_left(w: &World, when: &str) {
    assert_eq!((w.clean(VID), w.precache(VID)), (None, None), "{when}");
    assert!(w.revisions(VID).is_empty(), "{when}");
    assert!(
        !w.paths(VID).dir().exists(),
        "{when}: the VM directory is gone"
    );
}

/// A further session works: start (which removes leftover import files), write F, stop
/// (the previous clean image becomes the newest revision).
fn further_session_works(w: &World, engine: &Engine) {
    let before = w
        .clean(VID)
        .expect("clean image before the further session");
    let size = w.paths(VID).clean().metadata().unwrap().len();
    let dirty = engine.start(&vref(VID), &ctx()).expect("further start");
    assert!(
        !w.import_exists(VID),
        "start removes a leftover import file"
    );
    assert_eq!(
        w.dirty(VID),
        Some(before.clone()),
        "the session starts from the committed image"
    );
    write_state(&dirty, 'F');
    engine.stop(&vref(VID), &ctx()).expect("further stop");
    assert_eq!(w.clean(VID), Some(state_name('F', size)));
    let revisions = w.revisions(VID);
    let newest = revisions.last().expect("a revision after a commit");
    assert!(
        newest.ends_with(&before),
        "newest revision {newest} holds the previous image {before}"
    );
    assert!(
        revisions.len() <= REVISIONS_TO_KEEP as usize,
        "pruned to revisions_to_keep: {revisions:?}"
    );
    engine.settle();
    assert!(w.temps().is_empty(), "temp files left: {:?}", w.temps());
    assert_eq!((w.dirty(VID), w.import_exists(VID)), (None, false));
}

#[test]
fn btrfs_start_crash_leaves_clean_intact() {
    crash_after_every_step(FsType::Btrfs, start_case());
}

#[test]
fn btrfs_stop_crash_commits_old_or_new_never_a_mix() {
    crash_after_every_step(FsType::Btrfs, stop_case());
}

#[test]
fn btrfs_revert_crash_leaves_old_or_reverted_image() {
    crash_after_every_step(FsType::Btrfs, revert_case());
}

#[test]
fn btrfs_resize_crash_leaves_old_or_resized_image() {
    crash_after_every_step(FsType::Btrfs, resize_case());
}

#[test]
fn btrfs_import_crash_leaves_old_or_imported_image() {
    crash_after_every_step(FsType::Btrfs, import_case());
}

#[test]
fn btrfs_import_volume_crash_leaves_old_or_cloned_image() {
    crash_after_every_step(FsType::Btrfs, import_volume_case());
}

#[test]
fn ext4_start_crash_leaves_clean_intact() {
    crash_after_every_step(FsType::Ext4, start_case());
}

#[test]
fn ext4_stop_crash_commits_old_or_new_never_a_mix() {
    crash_after_every_step(FsType::Ext4, stop_case());
}

#[test]
fn ext4_revert_crash_leaves_old_or_reverted_image() {
    crash_after_every_step(FsType::Ext4, revert_case());
}

#[test]
fn ext4_resize_crash_leaves_old_or_resized_image() {
    crash_after_every_step(FsType::Ext4, resize_case());
}

#[test]
fn ext4_import_crash_leaves_old_or_imported_image() {
    crash_after_every_step(FsType::Ext4, import_case());
}

#[test]
fn ext4_import_volume_crash_leaves_old_or_cloned_image() {
    crash_after_every_step(FsType::Ext4, import_volume_case());
}

#[test]
fn btrfs_start_snapshots_disabled_crash_leaves_one_image() {
    crash_after_every_step(FsType::Btrfs, snapshots_disabled_start_case());
}

#[test]
fn btrfs_stop_snapshots_disabled_crash_leaves_one_image() {
    crash_after_every_step(FsType::Btrfs, snapshots_disabled_stop_case());
}

#[test]
fn btrfs_start_snapshot_crash_leaves_the_source_intact() {
    crash_after_every_step(FsType::Btrfs, snapshot_start_case());
}

#[test]
fn btrfs_create_crash_leaves_nothing_or_an_empty_volume() {
    crash_after_every_step(FsType::Btrfs, create_case());
}

#[test]
fn btrfs_remove_crash_leaves_no_mixed_files() {
    crash_after_every_step(FsType::Btrfs, remove_case());
}

#[test]
fn ext4_start_snapshots_disabled_crash_leaves_one_image() {
    crash_after_every_step(FsType::Ext4, snapshots_disabled_start_case());
}

#[test]
fn ext4_stop_snapshots_disabled_crash_leaves_one_image() {
    crash_after_every_step(FsType::Ext4, snapshots_disabled_stop_case());
}

#[test]
fn ext4_start_snapshot_crash_leaves_the_source_intact() {
    crash_after_every_step(FsType::Ext4, snapshot_start_case());
}

#[test]
fn ext4_create_crash_leaves_nothing_or_an_empty_volume() {
    crash_after_every_step(FsType::Ext4, create_case());
}

#[test]
fn ext4_remove_crash_leaves_no_mixed_files() {
    crash_after_every_step(FsType::Ext4, remove_case());
}
