//! The driver of crash-point tests, for test crates that add cases of their own
//! (`mod crash_support;`): for every durable step k of an operation, the operation runs
//! in a child process (`qsd-crash-runner`) that aborts right after step k
//! (`QSD_CRASH_AFTER_STEP=k`, see `src/failpoint.rs`); then the disk is checked, the
//! volume is recovered the way the daemon does it (a fresh `Engine::open` on the same
//! state directory, `finish_interrupted_removals`, then `stop` of every volume, R§5.4),
//! checked again, the operation completed by a user and a further full operation run.
//!
//! Each committed state is an 8 MiB image (or [`RESIZED`]) that is zero except for a
//! 64 KiB pattern at offsets 0 and 5 MiB, one pattern per state ("E" = empty, "A", "B",
//! …), so a file is identified by its content alone ([`state_of`]).
//!
//! Shared by `crash_points.rs` and `crash_points_more.rs`; each case names the volume
//! under test. Support modules are compiled into each test binary that declares them,
//! and no binary uses every item, hence `#![allow(dead_code)]` (shared test support).

#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use crate::common_fs::{FsType, LoopFs, MIB};
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    revision, Engine, ErrorKind, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeInfo,
    VolumeRef, VolumeSpec,
};

pub const IMAGE_SIZE: u64 = 8 * MIB;
pub const RESIZED: u64 = 12 * MIB;
const PATTERN_LEN: usize = 64 * 1024;
const PATTERN_OFFSETS: [u64; 2] = [0, 5 * MIB];
pub const POOL: &str = "p";
pub const REVISIONS_TO_KEEP: i64 = 3;
const SIGABRT: i32 = 6;

// ---- content model: one label per state ----

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

/// The whole image of state `label` at `size` bytes.
pub fn model(label: char, size: u64) -> Arc<Vec<u8>> {
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

/// The name of a state at a size: "C" at [`IMAGE_SIZE`], "C@12M" otherwise.
pub fn state_name(label: char, size: u64) -> String {
    if size == IMAGE_SIZE {
        label.to_string()
    } else {
        format!("{label}@{}M", size / MIB)
    }
}

/// Which state a file holds ("C", "C@12M"), `MIXED(…)` when it matches none, `None`
/// when it does not exist.
pub fn state_of(path: &Path) -> Option<String> {
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
pub fn write_state(path: &Path, label: char) {
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

pub fn some(state: &str) -> Option<String> {
    Some(state.to_owned())
}

// ---- one fresh pool + state directory per run ----

pub struct World {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub pool_dir: PathBuf,
    pub fs_type: FsType,
}

pub fn vref(vid: &str) -> VolumeRef {
    VolumeRef {
        pool: PoolName::parse(POOL).unwrap(),
        vid: Vid::parse(vid).unwrap(),
    }
}

pub fn ctx() -> OpCtx {
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

    pub fn engine(&self) -> Engine {
        Engine::open(&self.state_dir).expect("Engine::open on the state directory")
    }

    pub fn paths(&self, vid: &str) -> VolumePaths {
        VolumePaths::new(&self.pool_dir, &Vid::parse(vid).unwrap())
    }

    pub fn clean(&self, vid: &str) -> Option<String> {
        state_of(&self.paths(vid).clean())
    }
    pub fn dirty(&self, vid: &str) -> Option<String> {
        state_of(&self.paths(vid).dirty())
    }
    pub fn precache(&self, vid: &str) -> Option<String> {
        state_of(&self.paths(vid).precache())
    }
    pub fn import_exists(&self, vid: &str) -> bool {
        self.paths(vid).import().symlink_metadata().is_ok()
    }

    /// `"<id><state>"` per revision, ordered by id: e.g. `["1E", "2A", "3B"]`.
    pub fn revisions(&self, vid: &str) -> Vec<String> {
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

    /// The engine's view of `vid`, from a freshly opened engine (the persisted state).
    pub fn info(&self, vid: &str) -> VolumeInfo {
        self.engine().volume_info(&vref(vid)).expect("volume_info")
    }

    /// Temp files (`<name>~XXXXXXXX`) and discarded files (`<name>~reap-XXXXXXXX`)
    /// anywhere in the pool's VM directories.
    pub fn temps(&self) -> Vec<String> {
        let mut temps = Vec::new();
        for class in ["appvms", "vm-templates"] {
            let Ok(vms) = std::fs::read_dir(self.pool_dir.join(class)) else {
                continue;
            };
            for vm in vms {
                let Ok(files) = std::fs::read_dir(vm.unwrap().path()) else {
                    continue;
                };
                let names = files.map(|f| f.unwrap().file_name().to_string_lossy().into_owned());
                temps.extend(names.filter(|n| is_temp_name(n)));
            }
        }
        temps
    }
}

/// `<final name>~` or `<final name>~reap-`, and 8 characters of `[a-z0-9_]`.
fn is_temp_name(name: &str) -> bool {
    let name = name.replace("~reap-", "~");
    name.rsplit_once('~').is_some_and(|(_, random)| {
        random.len() == 8
            && random
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

// ---- building histories ----

/// The pool (setup_check on btrfs, off on ext4), default revisions_to_keep 3.
pub fn create_pool(w: &World, engine: &Engine) {
    engine
        .create_pool(PoolSpec {
            name: PoolName::parse(POOL).unwrap(),
            dir_path: w.pool_dir.clone(),
            setup_check: w.fs_type.has_reflink(),
            revisions_to_keep: RevisionsToKeep::new(REVISIONS_TO_KEEP).unwrap(),
            ephemeral_volatile: false,
        })
        .expect("create pool");
}

pub fn create_volume(engine: &Engine, vid: &str, spec: VolumeSpec) {
    engine
        .create_volume(&vref(vid), spec, &ctx())
        .unwrap_or_else(|e| panic!("create {vid}: {e}"));
}

pub fn create_origin(engine: &Engine, vid: &str) {
    let spec = VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    };
    create_volume(engine, vid, spec);
}

/// One VM session: start, write state `label`, stop (commit).
pub fn session(engine: &Engine, vid: &str, label: char) {
    let dirty = engine.start(&vref(vid), &ctx()).expect("start");
    write_state(&dirty, label);
    engine.stop(&vref(vid), &ctx()).expect("stop");
    engine.settle(); // the precache is made after the reply
}

/// Origin `vid`: revisions 1 = E, 2 = A, 3 = B; clean = C; precache = C; stopped.
pub fn build_origin_history(w: &World, engine: &Engine, vid: &str) {
    create_pool(w, engine);
    create_origin(engine, vid);
    for label in ['A', 'B', 'C'] {
        session(engine, vid, label);
    }
    assert_eq!(w.revisions(vid), ["1E", "2A", "3B"]);
    assert_eq!((w.clean(vid), w.precache(vid)), (some("C"), some("C")));
}

// ---- assertions ----

#[track_caller]
pub fn assert_revisions_one_of(w: &World, vid: &str, allowed: &[&[&str]], when: &str) {
    let actual = w.revisions(vid);
    assert!(
        allowed.iter().any(|set| *set == actual.as_slice()),
        "{when}: revisions {actual:?}, expected one of {allowed:?}"
    );
}

/// The engine's view (started, dirty, size) of `vid` agrees with the files. (Right
/// after a crash a staged copy or a discarded file may be left under its temp or
/// discarded name; the daemon's start-up sweep removes them, see
/// [`recover_like_the_daemon`].)
#[track_caller]
pub fn assert_engine_view_matches_files(w: &World, engine: &Engine, vid: &str, when: &str) {
    let info = match engine.volume_info(&vref(vid)) {
        Ok(info) => info,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => panic!("{when}: volume_info: {e}"),
    };
    let paths = w.paths(vid);
    let dirty = paths.dirty().symlink_metadata().ok();
    assert_eq!(
        info.started,
        dirty.is_some(),
        "{when}: started vs dirty image"
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

// ---- the driver ----

/// One operation: the history it starts from, the runner's arguments, what the disk
/// may hold right after a crash, what it must hold after the daemon-like recovery,
/// how a user completes the operation afterwards and which further operation must
/// then work.
pub struct Case {
    pub name: &'static str,
    /// The volume the operation works on.
    pub vid: &'static str,
    /// The committed state and the preparation (e.g. a started session).
    pub history: fn(&World, &Engine),
    pub args: fn(&World) -> Vec<String>,
    pub check_crashed: fn(&World),
    pub check_recovered: fn(&World),
    pub complete: fn(&World, &Engine),
    pub further: fn(&World, &Engine),
}

pub fn nothing(_: &World, _: &Engine) {}

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

/// The daemon's restart (R§5.4): load the state, finish the removals a crash
/// interrupted, stop every volume of the pool.
pub fn recover_like_the_daemon(engine: &Engine) {
    engine
        .finish_interrupted_removals()
        .expect("finish interrupted removals");
    engine.sweep_leftovers();
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
    engine.settle();
}

fn prepared_world(fs: &LoopFs, case: &Case, tag: &str) -> World {
    let w = World::new(fs, &format!("{}-{tag}", case.name));
    let engine = w.engine();
    (case.history)(&w, &engine);
    w
}

/// Checks after the runner ended (crashed or not), then recovery and completion.
fn check_and_recover(w: &World, case: &Case, when: &str) {
    let engine = w.engine();
    assert_engine_view_matches_files(w, &engine, case.vid, when);
    (case.check_crashed)(w);
    recover_like_the_daemon(&engine);
    assert!(
        w.temps().is_empty(),
        "{when}: temp or discarded files left after the start-up sweep: {:?}",
        w.temps()
    );
    assert_engine_view_matches_files(w, &engine, case.vid, when);
    assert!(
        !w.paths(case.vid).dirty().exists(),
        "{when}: nothing is started after the recovery"
    );
    (case.check_recovered)(w);
    (case.complete)(w, &engine);
    (case.further)(w, &engine);
    engine.settle();
    assert!(
        w.temps().is_empty(),
        "{when}: temp files left: {:?}",
        w.temps()
    );
}

/// Run `case` once without a crash to count its steps, then crash it after each step.
pub fn crash_after_every_step(fs_type: FsType, case: Case) {
    let fs = LoopFs::new(fs_type, 256 * MIB);
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
