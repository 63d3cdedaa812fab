//! Who waits for whom (issue 8): snapshot starts of one template hold the template
//! shared and copy at the same time; a change of the template holds it exclusively and
//! waits for them; getters take no volume lock and answer while a copy runs. On ext4,
//! where a snapshot start is a byte copy that reports progress, so a test can hold a
//! copy open at `copy_started` (every wait has a deadline: a test fails, never hangs).
//!
//! Needs root (loop mounts).

mod common_fs;
mod scenario_support;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common_fs::{FsType, MIB};
use qubes_storage_engine::{
    CancelToken, ErrorKind, OpCtx, ProgressSink, RevisionsToKeep, VolumeRef, VolumeSpec,
};
use scenario_support::{write_at, Fixture};

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
