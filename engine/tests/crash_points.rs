//! Crash-point tests (issue 2): for every durable step k of an operation, the operation
//! runs in a child process (`qsd-crash-runner`) that aborts right after step k
//! (`QSD_CRASH_AFTER_STEP=k`, see `src/failpoint.rs`). Then the volume is recovered the
//! way the daemon does it (a fresh `Engine::open` on the same state directory, then
//! `stop` of every volume, R§5.4) and checked:
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
//! Needs root (loop mounts) and the `failpoints` feature (`cargo test --all-features`).

#![cfg(feature = "failpoints")]

mod common_fs;

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use common_fs::{FsType, LoopFs};
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    revision, Engine, ErrorKind, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef,
    VolumeSpec,
};

const MIB: u64 = 1 << 20;
const IMAGE_SIZE: u64 = 8 * MIB;
const RESIZED: u64 = 12 * MIB;
const PATTERN_LEN: usize = 64 * 1024;
const PATTERN_OFFSETS: [u64; 2] = [0, 5 * MIB];
const POOL: &str = "p";
const VID: &str = "appvms/vm1/private";
const SOURCE_VID: &str = "appvms/vm2/private";
/// A snapshot (snap_on_start) volume of [`VID`].
const SNAPSHOT_VID: &str = "appvms/vm3/root";
const REVISIONS_TO_KEEP: i64 = 3;
const SIGABRT: i32 = 6;

// ---- content model: one label per committed state ----

/// The 64 KiB pattern of state `label` ('E' has none: the empty image).
fn pattern(label: char) -> Vec<u8> {
    let seed = label as u8;
    let byte = |i: usize| seed ^ ((i * 7 + i / 251) % 256) as u8;
    (0..PATTERN_LEN)
        .map(|i| if byte(i) == 0 { seed } else { byte(i) })
        .collect()
}

/// Images by (label, size), built once each.
type ModelCache = Mutex<HashMap<(char, u64), Arc<Vec<u8>>>>;

/// The whole image of state `label` at `size` bytes (cached: built once per key).
fn model(label: char, size: u64) -> Arc<Vec<u8>> {
    static CACHE: OnceLock<ModelCache> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry((label, size))
        .or_insert_with(|| {
            let mut image = vec![0u8; size as usize];
            if label != 'E' {
                for offset in PATTERN_OFFSETS {
                    let at = offset as usize;
                    image[at..at + PATTERN_LEN].copy_from_slice(&pattern(label));
                }
            }
            Arc::new(image)
        })
        .clone()
}

/// The name of a state at a size: "C" at the default size, "C@12M" otherwise.
fn state_name(label: char, size: u64) -> String {
    if size == IMAGE_SIZE {
        label.to_string()
    } else {
        format!("{label}@{}M", size / MIB)
    }
}

/// Which state a file holds ("C", "C@12M"), `MIXED(…)` when it matches none, `None`
/// when it does not exist.
fn state_of(path: &Path) -> Option<String> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    let size = data.len() as u64;
    let big_enough = size >= PATTERN_OFFSETS[1] + PATTERN_LEN as u64;
    let mut candidates = "EABCDFGH".chars().filter(|_| big_enough);
    let found = candidates.find(|&l| model(l, size).as_slice() == data.as_slice());
    Some(match found {
        Some(label) => state_name(label, size),
        None => format!(
            "MIXED(size {size}, first bytes {:02x?})",
            &data[..data.len().min(4)]
        ),
    })
}

/// Write state `label` into an image that holds another state of the same model.
fn write_state(path: &Path, label: char) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image for writing");
    for offset in PATTERN_OFFSETS {
        file.write_all_at(&pattern(label), offset)
            .expect("write pattern");
    }
    file.sync_all().expect("fsync image");
}

// ---- one fresh pool + state directory per run ----

struct World {
    run_dir: PathBuf,
    state_dir: PathBuf,
    pool_dir: PathBuf,
    fs_type: FsType,
}

fn vref(vid: &str) -> VolumeRef {
    VolumeRef {
        pool: PoolName::parse(POOL).unwrap(),
        vid: Vid::parse(vid).unwrap(),
    }
}

fn ctx() -> OpCtx {
    OpCtx::quiet("crash-test")
}

impl World {
    fn new(fs: &LoopFs, tag: &str) -> World {
        let run_dir = fs.path().join(tag);
        std::fs::create_dir(&run_dir).expect("create run dir");
        World {
            state_dir: run_dir.join("state"),
            pool_dir: run_dir.join("pool"),
            run_dir,
            fs_type: fs.fs_type(),
        }
    }

    fn engine(&self) -> Engine {
        Engine::open(&self.state_dir).expect("Engine::open on the state directory")
    }

    fn paths(&self, vid: &str) -> VolumePaths {
        VolumePaths::new(&self.pool_dir, &Vid::parse(vid).unwrap())
    }

    fn clean(&self) -> Option<String> {
        state_of(&self.paths(VID).clean())
    }
    fn dirty(&self) -> Option<String> {
        state_of(&self.paths(VID).dirty())
    }
    fn precache(&self) -> Option<String> {
        state_of(&self.paths(VID).precache())
    }
    fn import_exists(&self) -> bool {
        self.paths(VID).import().symlink_metadata().is_ok()
    }

    /// `"<id><state>"` per revision, ordered by id: e.g. `["1E", "2A", "3B"]`.
    fn revisions_of(&self, vid: &str) -> Vec<String> {
        let paths = self.paths(vid);
        let list = revision::list(&paths).expect("list revisions");
        list.iter()
            .map(|r| {
                let state =
                    state_of(&paths.revision(r.id, r.timestamp)).expect("listed revision exists");
                format!("{}{state}", r.id)
            })
            .collect()
    }
    fn revisions(&self) -> Vec<String> {
        self.revisions_of(VID)
    }

    /// Temp files (`<final name>~XXXXXXXX`) of either volume.
    fn temps(&self) -> Vec<String> {
        let mut temps = Vec::new();
        for vid in [VID, SOURCE_VID, SNAPSHOT_VID] {
            let paths = self.paths(vid);
            let Ok(entries) = std::fs::read_dir(paths.dir()) else {
                continue;
            };
            for entry in entries {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if paths.is_own_temp(&name) {
                    temps.push(name);
                }
            }
        }
        temps
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

// ---- the committed history every run starts from ----

fn create_pool(w: &World, engine: &Engine) {
    engine
        .create_pool(PoolSpec {
            name: PoolName::parse(POOL).unwrap(),
            dir_path: w.pool_dir.clone(),
            setup_check: w.fs_type == FsType::Btrfs,
            revisions_to_keep: RevisionsToKeep::new(REVISIONS_TO_KEEP).unwrap(),
            ephemeral_volatile: false,
        })
        .expect("create pool");
}

fn create_origin(engine: &Engine, vid: &str) {
    let spec = VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    };
    engine
        .create_volume(&vref(vid), spec, &ctx())
        .expect("create origin volume");
}

/// One VM session: start, write state `label`, stop (commit).
fn session(engine: &Engine, vid: &str, label: char) {
    let dirty = engine.start(&vref(vid), &ctx()).expect("start");
    write_state(&dirty, label);
    engine.stop(&vref(vid), &ctx()).expect("stop");
}

/// Revisions 1 = E (empty), 2 = A, 3 = B; clean = C; precache = C; stopped.
fn build_history(w: &World, engine: &Engine) {
    create_pool(w, engine);
    create_origin(engine, VID);
    for label in ['A', 'B', 'C'] {
        session(engine, VID, label);
    }
    assert_eq!(w.revisions(), ["1E", "2A", "3B"]);
    assert_eq!(
        (w.clean(), w.precache()),
        (Some("C".into()), Some("C".into()))
    );
}

// ---- assertions ----

fn some(state: &str) -> Option<String> {
    Some(state.to_owned())
}

#[track_caller]
fn assert_revisions_one_of(w: &World, allowed: &[&[&str]], when: &str) {
    let actual = w.revisions();
    assert!(
        allowed.iter().any(|set| *set == actual.as_slice()),
        "{when}: revisions {actual:?}, expected one of {allowed:?}"
    );
}

#[track_caller]
fn assert_clean_one_of(w: &World, allowed: &[&str], when: &str) -> String {
    let clean = w
        .clean()
        .unwrap_or_else(|| panic!("{when}: the clean image is missing"));
    assert!(
        allowed.contains(&clean.as_str()),
        "{when}: clean image holds {clean}, expected one of {allowed:?}"
    );
    clean
}

/// The engine's view (started, dirty, size) of `vid` agrees with the files, and no
/// temp file is left (a crash happens between durable steps, never inside one).
#[track_caller]
fn assert_engine_view_matches_files(w: &World, engine: &Engine, vid: &str, when: &str) {
    assert!(
        w.temps().is_empty(),
        "{when}: temp files left: {:?}",
        w.temps()
    );
    let info = match engine.volume_info(&vref(vid)) {
        Ok(info) => info,
        Err(e) if e.kind() == ErrorKind::NotFound => return, // create/remove: not registered
        Err(e) => panic!("{when}: volume_info: {e}"),
    };
    let paths = w.paths(vid);
    let dirty = paths.dirty().symlink_metadata().ok();
    assert_eq!(
        info.started,
        dirty.is_some(),
        "{when}: started flag vs dirty image"
    );
    assert_eq!(
        info.is_dirty,
        dirty.is_some() && info.config.save_on_stop,
        "{when}: is_dirty vs dirty image"
    );
    let image = dirty.or_else(|| paths.clean().symlink_metadata().ok());
    let size = image.map_or(info.config.size, |m| m.len());
    assert_eq!(info.size, size, "{when}: size vs image file");
}

// ---- the operations under test ----

/// One operation: the history it starts from and how to prepare it, the runner's
/// arguments, what the disk may hold right after a crash, what it must hold after the
/// daemon-like recovery, how a user completes the operation afterwards and which
/// further operation must then work.
struct Case {
    name: &'static str,
    /// The volume the operation works on.
    vid: &'static str,
    /// The committed state before the operation.
    history: fn(&World, &Engine),
    prepare: fn(&World, &Engine),
    args: fn(&World) -> Vec<String>,
    check_crashed: fn(&World),
    check_recovered: fn(&World),
    complete: fn(&World, &Engine),
    /// A further full operation after the completion.
    further: fn(&World, &Engine),
}

fn nothing(_: &World, _: &Engine) {}

fn start_case() -> Case {
    Case {
        name: "start",
        vid: VID,
        history: build_history,
        prepare: nothing,
        args: |_| vec!["start".into()],
        check_crashed: |w| {
            assert_clean_one_of(w, &["C"], "after crash");
            assert_eq!(w.revisions(), ["1E", "2A", "3B"], "after crash");
            let images = (w.dirty(), w.precache());
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
        history: build_history,
        prepare: |w, engine| {
            let dirty = engine.start(&vref(VID), &ctx()).expect("start");
            write_state(&dirty, 'D');
            assert_eq!(w.dirty(), some("D"));
        },
        args: |_| vec!["stop".into()],
        check_crashed: |w| match assert_clean_one_of(w, &["C", "D"], "after crash").as_str() {
            "C" => {
                assert_eq!(
                    w.dirty(),
                    some("D"),
                    "after crash before the rename: the session is intact"
                );
                assert_eq!(w.precache(), None, "after crash");
                let allowed: &[&[&str]] = &[
                    &["1E", "2A", "3B"],
                    &["1E", "2A", "3B", "4C"],
                    &["2A", "3B", "4C"],
                ];
                assert_revisions_one_of(w, allowed, "after crash before the rename");
            }
            _ => {
                assert_eq!(w.dirty(), None, "after crash after the rename");
                assert!(
                    [None, some("D")].contains(&w.precache()),
                    "precache {:?}",
                    w.precache()
                );
                assert_eq!(
                    w.revisions(),
                    ["2A", "3B", "4C"],
                    "after crash after the rename"
                );
            }
        },
        check_recovered: |w| {
            assert_clean_one_of(w, &["D"], "after recovery (the daemon commits the session)");
            // A crash between add-revision and rename makes the recovery add a duplicate
            // of C, and pruning then drops A (R§5.5 "re-commit adds another revision").
            assert_revisions_one_of(
                w,
                &[&["2A", "3B", "4C"], &["3B", "4C", "5C"]],
                "after recovery",
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
        prepare: nothing,
        args: |_| vec!["revert".into(), "2".into()],
        check_crashed: check_revert_state,
        check_recovered: check_revert_state,
        complete: |w, engine| {
            if w.clean() == some("C") {
                engine
                    .revert(&vref(VID), Some(2), &ctx())
                    .expect("retry revert");
            }
            assert_eq!(w.clean(), some("A"), "after the retried revert");
            let revisions = w.revisions();
            assert!(
                !revisions.iter().any(|r| r.starts_with('2')),
                "revision 2 is consumed: {revisions:?}"
            );
            assert!(
                revisions.iter().any(|r| r.ends_with('C')),
                "the pre-revert state is kept: {revisions:?}"
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
                &[&["1E", "2A", "3B"], &["1E", "2A", "3B", "4C"]],
                "before the rename",
            );
            assert!(
                [None, some("C")].contains(&w.precache()),
                "precache {:?}",
                w.precache()
            );
        }
        _ => {
            assert_eq!(
                w.revisions(),
                ["1E", "3B", "4C"],
                "after the rename: 2 consumed, C kept"
            );
            assert!(
                [None, some("A")].contains(&w.precache()),
                "precache {:?}",
                w.precache()
            );
        }
    }
    assert_eq!(w.dirty(), None);
}

fn resize_case() -> Case {
    Case {
        name: "resize",
        vid: VID,
        history: build_history,
        prepare: nothing,
        args: |_| vec!["resize".into(), RESIZED.to_string()],
        check_crashed: check_resize_state,
        check_recovered: check_resize_state,
        complete: |w, engine| {
            engine
                .resize(&vref(VID), RESIZED, false, &ctx())
                .expect("retry resize");
            assert_eq!(w.clean(), some("C@12M"));
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
        w.revisions(),
        ["1E", "2A", "3B"],
        "resize never touches revisions"
    );
    // The precache is replaced after the new image exists: between the two it is the
    // old image, whose size and mtime no longer match, so the next start discards it.
    let precache = w.precache();
    let stale_but_detectable = precache == some("C") && clean == "C@12M";
    assert!(
        precache.is_none() || precache == Some(clean.clone()) || stale_but_detectable,
        "precache {precache:?} vs clean {clean}"
    );
    assert_eq!(w.dirty(), None);
}

/// Import of state G (import_data + write + import_data_end(true)).
fn import_case() -> Case {
    Case {
        name: "import",
        vid: VID,
        history: build_history,
        prepare: |w, _| {
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
            if w.clean() == some("C") {
                let mut file = engine
                    .import_data(&vref(VID), IMAGE_SIZE, &ctx())
                    .expect("import_data");
                std::io::Write::write_all(&mut file, &model('G', IMAGE_SIZE)).unwrap();
                drop(file);
                engine
                    .import_data_end(&vref(VID), true, &ctx())
                    .expect("import_data_end");
            }
            assert_eq!(w.clean(), some("G"));
        },
        further: further_session_works,
    }
}

/// Import (clone) of the source volume, whose clean image holds H.
fn import_volume_case() -> Case {
    Case {
        name: "import-volume",
        vid: VID,
        history: build_history,
        prepare: |_, engine| {
            create_origin(engine, SOURCE_VID);
            session(engine, SOURCE_VID, 'H');
        },
        args: |_| vec!["import-volume".into(), POOL.into(), SOURCE_VID.into()],
        check_crashed: |w| check_import_state(w, "H"),
        check_recovered: |w| check_import_state(w, "H"),
        complete: |w, engine| {
            if w.clean() == some("C") {
                engine
                    .import_volume(&vref(VID), &vref(SOURCE_VID), &ctx())
                    .expect("retry import_volume");
            }
            assert_eq!(w.clean(), some("H"));
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
            assert_revisions_one_of(w, allowed, "import before the rename");
            assert!(
                [None, some("C")].contains(&w.precache()),
                "precache {:?}",
                w.precache()
            );
        }
        _ => {
            assert_eq!(w.revisions(), ["2A", "3B", "4C"], "import after the rename");
            assert!(!w.import_exists(), "the import file became the clean image");
            assert!(
                [None, Some(new.to_owned())].contains(&w.precache()),
                "precache {:?}",
                w.precache()
            );
        }
    }
    assert_eq!(w.dirty(), None);
    if w.paths(SOURCE_VID).clean().exists() {
        assert_eq!(
            state_of(&w.paths(SOURCE_VID).clean()),
            some("H"),
            "the source is untouched"
        );
        assert_eq!(
            w.revisions_of(SOURCE_VID),
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
    assert_eq!((w.clean(), w.precache()), (some("A"), None));
    assert!(w.revisions().is_empty());
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
    let images = (w.clean(), w.dirty());
    let found = allowed
        .iter()
        .any(|(c, d)| images == (c.map(str::to_owned), d.map(str::to_owned)));
    assert!(
        found,
        "{when}: (clean, dirty) = {images:?}, expected one of {allowed:?}"
    );
    assert!(
        w.revisions().is_empty() && w.precache().is_none(),
        "{when}: no revision, no precache"
    );
}

fn snapshots_disabled_start_case() -> Case {
    Case {
        name: "start-snapshots-disabled",
        vid: VID,
        history: build_snapshots_disabled_history,
        prepare: nothing,
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
        history: build_snapshots_disabled_history,
        prepare: |w, engine| {
            let dirty = engine.start(&vref(VID), &ctx()).expect("start");
            write_state(&dirty, 'D');
            assert_eq!((w.clean(), w.dirty()), (None, some("D")));
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
    let before = w.clean().expect("clean image before the further session");
    let dirty = engine.start(&vref(VID), &ctx()).expect("further start");
    assert_eq!(
        w.dirty(),
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
        prepare: nothing,
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
        (w.clean(), w.dirty()),
        (some("C"), None),
        "the source's images"
    );
    assert_eq!(w.revisions(), ["1E", "2A", "3B"], "the source's revisions");
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
        prepare: nothing,
        args: |_| vec!["create".into(), IMAGE_SIZE.to_string()],
        check_crashed: check_create_state,
        check_recovered: check_create_state,
        complete: |w, engine| {
            if !is_registered(w) {
                create_after_a_crash(w, engine);
            }
            assert_eq!(w.clean(), some("E"), "a created volume is empty");
        },
        further: further_session_works,
    }
}

fn check_create_state(w: &World) {
    let (clean, precache) = (w.clean(), w.precache());
    if is_registered(w) {
        assert_eq!(
            (clean, precache),
            (some("E"), some("E")),
            "a registered volume is complete"
        );
    } else {
        assert!([None, some("E")].contains(&clean), "clean {clean:?}");
        assert!(
            [None, some("E")].contains(&precache),
            "precache {precache:?}"
        );
    }
    assert!(w.revisions().is_empty());
}

/// A retried create succeeds: what an interrupted create leaves holds no data (empty
/// images, no revision), so it is cleared rather than in the way.
fn create_after_a_crash(w: &World, engine: &Engine) {
    if let Err(e) = engine.create_volume(&vref(VID), origin_spec(None), &ctx()) {
        panic!(
            "create after a crash (leftovers {:?}/{:?}): {e}",
            w.clean(),
            w.precache()
        );
    }
    assert_eq!(w.clean(), some("E"));
}

fn remove_case() -> Case {
    Case {
        name: "remove",
        vid: VID,
        history: build_history,
        prepare: nothing,
        args: |_| vec!["remove".into()],
        check_crashed: check_remove_state,
        check_recovered: check_remove_state,
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
            assert_eq!(w.clean(), some("E"), "a re-created volume is empty");
            further_session_works(w, engine);
            assert_eq!(
                w.revisions(),
                ["1E"],
                "no revision of the removed volume leaks"
            );
        },
    }
}

/// Files go first, the registration last: a registered volume may have lost some files
/// (oldest revisions first, then clean, precache), an unregistered one has none left.
fn check_remove_state(w: &World) {
    let (clean, precache) = (w.clean(), w.precache());
    if is_registered(w) {
        assert!([None, some("C")].contains(&clean), "clean {clean:?}");
        assert!(
            [None, some("C")].contains(&precache),
            "precache {precache:?}"
        );
        let allowed: &[&[&str]] = &[&["1E", "2A", "3B"], &["2A", "3B"], &["3B"], &[]];
        assert_revisions_one_of(w, allowed, "remove removes the oldest revision first");
        if !w.revisions().is_empty() {
            assert_eq!(clean, some("C"), "clean goes after every revision");
        }
    } else {
        assert_eq!(
            (clean, precache),
            (None, None),
            "an unregistered volume has no files"
        );
        assert!(w.revisions().is_empty());
        assert!(!w.paths(VID).dir().exists(), "the VM directory is gone");
    }
}

// ---- the driver ----

fn run_runner(w: &World, vid: &str, args: &[String], crash_after: Option<u64>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qsd-crash-runner"));
    command
        .arg(&w.state_dir)
        .arg(POOL)
        .arg(vid)
        .args(args)
        .env_remove("QSD_CRASH_AFTER_STEP");
    if let Some(k) = crash_after {
        command.env("QSD_CRASH_AFTER_STEP", k.to_string());
    }
    command.output().expect("run qsd-crash-runner")
}

fn steps_reported(output: &Output) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("steps="));
    line.and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no steps= line in {stdout:?}"))
}

/// The daemon's restart (R§5.4): load the state, stop every volume of the pool.
fn recover_like_the_daemon(engine: &Engine) {
    let pool = PoolName::parse(POOL).unwrap();
    for vid in engine.volume_vids(&pool).expect("list volumes") {
        let vol = VolumeRef {
            pool: pool.clone(),
            vid,
        };
        engine
            .stop(&vol, &ctx())
            .unwrap_or_else(|e| panic!("recovery stop of {vol}: {e}"));
    }
}

/// A further session works: start (which removes leftover import files), write F, stop
/// (the previous clean image becomes the newest revision).
fn further_session_works(w: &World, engine: &Engine) {
    let before = w.clean().expect("clean image before the further session");
    let size = w.paths(VID).clean().metadata().unwrap().len();
    let dirty = engine.start(&vref(VID), &ctx()).expect("further start");
    assert!(!w.import_exists(), "start removes a leftover import file");
    assert_eq!(
        w.dirty(),
        Some(before.clone()),
        "the session starts from the committed image"
    );
    write_state(&dirty, 'F');
    engine.stop(&vref(VID), &ctx()).expect("further stop");
    assert_eq!(w.clean(), Some(state_name('F', size)));
    let revisions = w.revisions();
    let newest = revisions.last().expect("a revision after a commit");
    assert!(
        newest.ends_with(&before),
        "newest revision {newest} holds the previous image {before}"
    );
    assert!(
        revisions.len() <= REVISIONS_TO_KEEP as usize,
        "pruned to revisions_to_keep: {revisions:?}"
    );
    assert!(w.temps().is_empty(), "temp files left: {:?}", w.temps());
    assert_eq!((w.dirty(), w.import_exists()), (None, false));
}

/// Prepare a fresh world for one run of `case`.
fn prepared_world(fs: &LoopFs, case: &Case, tag: &str) -> World {
    let w = World::new(fs, &format!("{}-{tag}", case.name));
    let engine = w.engine();
    (case.history)(&w, &engine);
    (case.prepare)(&w, &engine);
    w
}

/// Checks after the runner ended (crashed or not), then recovery and completion.
fn check_and_recover(w: &World, case: &Case, when: &str) {
    let engine = w.engine();
    assert_engine_view_matches_files(w, &engine, case.vid, when);
    (case.check_crashed)(w);
    recover_like_the_daemon(&engine);
    assert_engine_view_matches_files(w, &engine, case.vid, when);
    let dirty = w.paths(case.vid).dirty();
    assert!(
        !dirty.exists(),
        "{when}: nothing is started after the recovery"
    );
    (case.check_recovered)(w);
    (case.complete)(w, &engine);
    (case.further)(w, &engine);
    assert!(
        w.temps().is_empty(),
        "{when}: temp files left: {:?}",
        w.temps()
    );
}

/// Run `case` once without a crash to count its steps, then crash it after each step.
fn crash_after_every_step(fs_type: FsType, case: Case) {
    let fs = LoopFs::new(fs_type, 512 * MIB);
    let w = prepared_world(&fs, &case, "full");
    let output = run_runner(&w, case.vid, &(case.args)(&w), None);
    assert!(
        output.status.success(),
        "{} without crash failed: {}",
        case.name,
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = steps_reported(&output);
    assert!(steps > 0, "{} reported no durable steps", case.name);
    eprintln!("{fs_type:?} {}: {steps} durable steps", case.name);
    check_and_recover(&w, &case, &format!("{} without crash", case.name));
    drop(w);
    let mut step_names = Vec::new();
    for k in 1..=steps {
        let w = prepared_world(&fs, &case, &k.to_string());
        let output = run_runner(&w, case.vid, &(case.args)(&w), Some(k));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.signal(),
            Some(SIGABRT),
            "{} k={k}: expected an abort, got {:?}: {stderr}",
            case.name,
            output.status
        );
        step_names.push(
            step_name(&stderr, k)
                .unwrap_or_else(|| panic!("{} k={k}: no abort line in {stderr}", case.name)),
        );
        check_and_recover(&w, &case, &format!("{} crashed after step {k}", case.name));
    }
    eprintln!("{fs_type:?} {}: steps {}", case.name, step_names.join(", "));
}

/// The step name in the failpoint's line "failpoint: aborting after step k (name)".
fn step_name(stderr: &str, k: u64) -> Option<String> {
    let rest = stderr.split(&format!("aborting after step {k} (")).nth(1)?;
    Some(rest.split(')').next()?.to_owned())
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
