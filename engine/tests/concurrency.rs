//! Who waits for whom (issue 8): snapshot starts of one template hold the template
//! shared and copy at the same time; a change of the template holds it exclusively and
//! waits for them; getters take no volume lock and answer while a copy runs. On ext4,
//! where a snapshot start is a byte copy that reports progress, so a test can hold a
//! copy open at `copy_started` (every wait has a deadline: a test fails, never hangs).
//! A pool whose filesystem is frozen holds up no other pool's measurement.
//!
//! Needs root (loop mounts).

mod common_fs;
mod scenario_support;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common_fs::{FsType, LoopFs, MIB};
use qubes_storage_engine::{
    CancelToken, ErrorKind, OpCtx, PoolName, ProgressSink, RevisionsToKeep, Vid, VolumeRef,
    VolumeSpec,
};
use scenario_support::{origin_spec, pool_spec, write_at, Fixture};

const TEMPLATE: &str = "vm-templates/t/root";
const DEADLINE: Duration = Duration::from_secs(20);

/// Copies that stop at `copy_started`: the test sees how many arrived and lets them go.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Wait (with the deadline) until `cond(arrived, open)`; whether it came true.
    fn wait_until(&self, cond: impl Fn(usize, bool) -> bool) -> bool {
        let deadline = Instant::now() + DEADLINE;
        let mut state = self.state.lock().unwrap();
        while !cond(state.0, state.1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        true
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// Each copy that starts arrives at the gate and waits until it is open.
struct Held(Arc<Gate>);

impl ProgressSink for Held {
    fn copy_started(&self, _operation: &str, _total: u64) {
        self.0.state.lock().unwrap().0 += 1;
        self.0.changed.notify_all();
        self.0.wait_until(|_, open| open);
    }
}

/// Each copy that starts arrives and waits until `expected` copies are in at once.
struct Together(Arc<Gate>, usize, Arc<Mutex<Vec<bool>>>);

impl ProgressSink for Together {
    fn copy_started(&self, _operation: &str, _total: u64) {
        self.0.state.lock().unwrap().0 += 1;
        self.0.changed.notify_all();
        let met = self.0.wait_until(|arrived, _| arrived >= self.1);
        self.2.lock().unwrap().push(met);
    }
}

fn ctx_with(sink: impl ProgressSink + 'static) -> OpCtx {
    OpCtx::new("Start", Arc::new(sink), CancelToken::new())
}

/// A template with data and `n` snapshot volumes of it.
fn template_with_snapshots(f: &Fixture, n: usize) -> (VolumeRef, Vec<VolumeRef>) {
    let template = f.origin(TEMPLATE, 8 * MIB, 1);
    let dirty = f.start(&template);
    write_at(&dirty, MIB, &[7; 4096]);
    f.stop(&template);
    let snapshots = (0..n)
        .map(|i| {
            f.create(
                &format!("appvms/vm{i}/root"),
                VolumeSpec {
                    snap_on_start: true,
                    source: Some(template.vid.clone()),
                    ..Default::default()
                },
            )
        })
        .collect();
    (template, snapshots)
}

#[test]
fn ext4_snapshot_starts_of_one_template_copy_at_the_same_time() {
    let f = Arc::new(Fixture::new(FsType::Ext4));
    let (_, snapshots) = template_with_snapshots(&f, 2);
    let (gate, met) = (Arc::new(Gate::default()), Arc::new(Mutex::new(Vec::new())));
    let starts: Vec<_> = snapshots
        .into_iter()
        .map(|snap| {
            let (f, sink) = (f.clone(), Together(gate.clone(), 2, met.clone()));
            thread::spawn(move || f.engine.start(&snap, &ctx_with(sink)).map(|_| ()))
        })
        .collect();
    for start in starts {
        start.join().unwrap().expect("snapshot start");
    }
    assert_eq!(
        *met.lock().unwrap(),
        [true, true],
        "both copies ran at once (neither waited for the other's template lock)"
    );
}

#[test]
fn ext4_a_template_change_waits_for_a_running_snapshot_start() {
    let f = Arc::new(Fixture::new(FsType::Ext4));
    let (template, snapshots) = template_with_snapshots(&f, 1);
    let gate = Arc::new(Gate::default());
    let start = {
        let (f, snap, sink) = (f.clone(), snapshots[0].clone(), Held(gate.clone()));
        thread::spawn(move || f.engine.start(&snap, &ctx_with(sink)))
    };
    assert!(gate.wait_until(|arrived, _| arrived == 1), "the copy began");
    let (tx, rx) = mpsc::channel();
    {
        let (f, template) = (f.clone(), template.clone());
        thread::spawn(move || {
            let changed = f
                .engine
                .set_revisions_to_keep(&template, RevisionsToKeep::DISABLED);
            let _ = tx.send(changed);
        });
    }
    // While the start holds the template, the change cannot finish.
    let early = rx.recv_timeout(Duration::from_millis(500));
    assert!(early.is_err(), "the change did not wait: {early:?}");
    gate.open();
    start.join().unwrap().expect("snapshot start");
    let err = rx
        .recv_timeout(DEADLINE)
        .expect("the change ends once the start is done")
        .expect_err("then a snapshot of the template runs: switching snapshots off is Busy");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
}

#[test]
fn ext4_getters_answer_while_a_snapshot_start_copies() {
    let f = Arc::new(Fixture::new(FsType::Ext4));
    let (template, snapshots) = template_with_snapshots(&f, 1);
    let snap = snapshots[0].clone();
    let gate = Arc::new(Gate::default());
    let start = {
        let (f, snap, sink) = (f.clone(), snap.clone(), Held(gate.clone()));
        thread::spawn(move || f.engine.start(&snap, &ctx_with(sink)))
    };
    assert!(gate.wait_until(|arrived, _| arrived == 1), "the copy began");
    let (tx, rx) = mpsc::channel();
    {
        let f = f.clone();
        thread::spawn(move || {
            let e = &f.engine;
            let answered = e.volume_info(&snap).is_ok()
                && e.volume_info(&template).is_ok()
                && e.verify(&snap).is_ok()
                && e.volume_infos(&f.pool).is_ok_and(|v| v.len() == 2)
                && e.pool_info(&f.pool).is_ok()
                && e.volume_vids(&f.pool).is_ok()
                && !e.pool_names().is_empty();
            let _ = tx.send(answered);
        });
    }
    let answered = rx.recv_timeout(DEADLINE);
    gate.open();
    start.join().unwrap().expect("snapshot start");
    assert_eq!(answered, Ok(true), "every getter answered during the copy");
}

/// A pool `pool` of `f`'s engine on a filesystem of its own of `kind` (reflinks where
/// it has them), and the reference of its volume `vid` (not created): the filesystem is
/// returned with it, to be kept while the test runs.
fn volume_on_another_filesystem(
    f: &Fixture,
    kind: FsType,
    pool: &str,
    vid: &str,
) -> (LoopFs, VolumeRef) {
    let fs = LoopFs::new(kind, 512 * MIB);
    let pool = PoolName::parse(pool).unwrap();
    f.engine
        .create_pool(pool_spec(
            &pool,
            &fs.path().join("pool"),
            kind.has_reflink(),
        ))
        .unwrap();
    let vol = VolumeRef {
        pool,
        vid: Vid::parse(vid).unwrap(),
    };
    (fs, vol)
}

/// A pool whose filesystem is frozen while a discarded file of it waits to be deleted
/// (the unlink blocks in the kernel until the thaw — a hung disk looks the same) holds
/// up neither the after-reply work nor the measurements of a pool on another
/// filesystem: each filesystem has its own queue. Before, one queue served every pool,
/// and measuring any pool waited for the frozen pool's unlink.
#[test]
fn a_frozen_pool_holds_up_no_measurement_of_another_pool() {
    let f = Fixture::new(FsType::Xfs);
    let (_other_fs, elsewhere) =
        volume_on_another_filesystem(&f, FsType::Xfs, "q", "appvms/b/private");
    let other = elsewhere.pool.clone();
    f.create_in(&elsewhere, origin_spec(MIB, 1));
    f.session(&elsewhere, 0, b"elsewhere");
    let here = f.origin("appvms/a/private", MIB, 1);
    f.session(&here, 0, b"first");
    let vm_dir = f.dir.join("appvms/a");
    let discarded = || {
        std::fs::read_dir(&vm_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("~reap-")
            })
            .count()
    };
    // A stop discards the pruned revision and the precache; their deletion waits for
    // the pool to be quiet, so the filesystem is usually frozen before it begins (else
    // the files are gone and the test thaws and tries again).
    let mut attempts = 0;
    let frozen = loop {
        attempts += 1;
        assert!(
            attempts <= 20,
            "the discarded files were always deleted before the freeze"
        );
        let dirty = f.start(&here);
        write_at(&dirty, 0, b"again");
        f.engine.stop(&here, &OpCtx::quiet("Stop")).unwrap();
        let frozen = common_fs::Frozen::new(f.fs.path());
        if discarded() > 0 {
            break frozen;
        }
        drop(frozen);
    };
    let (tx, rx) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(|| {
            let _ = tx.send(f.engine.measure_pool(&other, &OpCtx::quiet("MeasureSpace")));
        });
        let measured = rx.recv_timeout(DEADLINE);
        let still_discarded = discarded();
        drop(frozen);
        let measured = measured
            .expect("the other pool's measurement waited for the frozen pool")
            .expect("the other pool is measured");
        assert_eq!(measured.len(), 1);
        assert!(
            still_discarded > 0,
            "the frozen pool's discarded files were deleted while it was frozen"
        );
    });
    f.engine.settle();
    assert_eq!(discarded(), 0, "deleted after the thaw");
}

/// A precache queued for a volume that a long copy then holds (a clone into it right
/// after its CreateVolume) gives up waiting for the volume's lock: a measurement of the
/// pool, which waits for the pool's after-reply work, is answered while the copy is
/// still held (it waited for the whole copy before).
#[test]
fn a_precache_waiting_for_a_held_volume_holds_up_no_measurement_of_its_pool() {
    let f = Fixture::new(FsType::Btrfs);
    let (_ext4, source) =
        volume_on_another_filesystem(&f, FsType::Ext4, "slow", "vm-templates/big/root");
    f.create_in(&source, origin_spec(8 * MIB, 1));
    f.session(&source, 0, b"the template");
    let other = f.origin("appvms/other/private", MIB, 1);
    // CreateVolume on a reflink pool queues the precache for after its reply.
    let clone = f.vref("appvms/clone/root");
    f.engine
        .create_volume(
            &clone,
            origin_spec(8 * MIB, 1),
            &OpCtx::quiet("CreateVolume"),
        )
        .unwrap();
    let gate = Arc::new(Gate::default());
    let (tx, rx) = mpsc::channel();
    thread::scope(|scope| {
        let copy = scope.spawn(|| {
            f.engine
                .import_volume(&clone, &source, &ctx_with(Held(gate.clone())))
        });
        assert!(
            gate.wait_until(|arrived, _| arrived == 1),
            "the clone's copy never started"
        );
        scope.spawn(|| {
            let _ = tx.send(
                f.engine
                    .measure_volume(&other, &OpCtx::quiet("MeasureSpace")),
            );
        });
        let measured = rx.recv_timeout(DEADLINE);
        let copy_was_held = !copy.is_finished();
        gate.open();
        copy.join().unwrap().expect("the clone");
        measured
            .expect("the measurement waited for the held copy")
            .expect("the measurement");
        assert!(copy_was_held, "the copy ended before the measurement");
    });
}
