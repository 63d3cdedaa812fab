//! The service stays responsive whatever one call waits for. Each test makes one call
//! wait — for a long copy, for a stopped polkitd, behind a busy volume while a thousand
//! callers leave the bus — and meanwhile probes the service with an unrelated
//! `ListPools` and a property `Get` on another volume, which must be answered within
//! [`PROBE_LIMIT`] every time. Before the bus layer had its own dispatcher each of these
//! froze the whole service (zbus's object-server lock held by a call that waited): the
//! probes then hung for as long as the wait lasted (seconds, or for ever).
//!
//! And a call that waited for one of the engine's places while its caller left is not
//! run: callers that flood and leave would otherwise keep every place busy.
//!
//! [`PROBE_LIMIT`] is a liveness bound, not a speed figure: the probes cross
//! dbus-daemon, which these tests keep busy, on a small machine doing gigabytes of
//! copies. Each test prints its slowest probe; `cargo bench --bench bus` measures the
//! latency of unrelated calls during a long copy on a quiet machine.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::common_fs::Frozen;
use common::{
    fill_scattered, gdbus_as_nobody_at, make_caller_leave, measure_pool_as_nobody, opts, opts_of,
    FsType, Harness, HeldClone, VolumeProxy, MIB,
};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use qubes_storaged::bus::engine_places::ENGINE_PLACES;
use std::collections::HashMap;

use zbus::{Connection, Message, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

/// How fast an unrelated call must be answered while another call waits.
const PROBE_LIMIT: Duration = Duration::from_millis(500);
/// A probe that takes this long has hung: the test fails instead of waiting for it.
const HUNG: Duration = Duration::from_secs(5);
/// How long a killed caller may take to leave the bus.
const HUNG_CALLER: Duration = Duration::from_secs(20);
const JOBS: &str = "/org/qubes/Storage/jobs/";

/// What the probes measured.
#[derive(Debug, Default)]
struct Probes {
    count: usize,
    slowest: Duration,
}

/// One `ListPools` and one `Get` of `Size` of `other`; the time each took.
async fn probe_once(h: &Harness, other: &VolumeProxy<'_>) -> [Duration; 2] {
    let manager = h.manager().await;
    let started = Instant::now();
    tokio::time::timeout(HUNG, manager.list_pools(opts()))
        .await
        .expect("ListPools hung")
        .expect("ListPools");
    let list = started.elapsed();
    let started = Instant::now();
    tokio::time::timeout(HUNG, other.size())
        .await
        .expect("Get hung")
        .expect("Get Size");
    [list, started.elapsed()]
}

/// Probes the service again and again until `until` is done.
async fn probe_while<F: std::future::Future>(
    h: &Harness,
    other: &OwnedObjectPath,
    until: F,
) -> (Probes, F::Output) {
    let other = h.volume(other).await;
    let mut probes = Probes::default();
    tokio::pin!(until);
    loop {
        tokio::select! {
            out = &mut until => return (probes, out),
            times = probe_once(h, &other) => {
                probes.count += 1;
                probes.slowest = probes.slowest.max(times[0]).max(times[1]);
            }
        }
    }
}

/// `count` probes of the service, with `other` the volume whose property they read,
/// each answered within [`PROBE_LIMIT`] while `what`.
async fn probe_responsive(h: &Harness, other: &OwnedObjectPath, count: usize, what: &str) {
    let other_proxy = h.volume(other).await;
    let mut probes = Probes::default();
    for _ in 0..count {
        let times = probe_once(h, &other_proxy).await;
        probes.count += 1;
        probes.slowest = probes.slowest.max(times[0]).max(times[1]);
    }
    assert_responsive(&probes, what);
}

fn assert_responsive(probes: &Probes, what: &str) {
    assert!(probes.count > 0, "no probe completed while {what}");
    assert!(
        probes.slowest < PROBE_LIMIT,
        "while {what}, a probe took {:?} ({} probes)",
        probes.slowest,
        probes.count
    );
    eprintln!(
        "while {what}: {} probes, slowest {:?}",
        probes.count, probes.slowest
    );
}

fn is_job_signal(msg: &Message) -> bool {
    msg.header()
        .path()
        .is_some_and(|p| p.as_str().starts_with(JOBS))
}

/// Waits for the first signal of a Job (a copy is running).
async fn first_job_signal(stream: &mut MessageStream) -> OwnedObjectPath {
    loop {
        let msg = stream.next().await.expect("stream").expect("message");
        if is_job_signal(&msg) {
            return OwnedObjectPath::from(msg.header().path().unwrap().to_owned());
        }
        let header = msg.header();
        if header.member().is_some_and(|m| m == "InterfacesAdded") {
            type Interfaces = HashMap<String, HashMap<String, OwnedVariant>>;
            let (path, _): (OwnedObjectPath, Interfaces) = msg.body().deserialize().unwrap();
            if path.as_str().starts_with(JOBS) {
                return path;
            }
        }
    }
}

/// A template image of `size` bytes (half of them data) on an ext4 pool of
/// `pool_size` bytes (no reflinks, so snapshots and precaches are byte copies with a
/// Job), and another volume to probe.
async fn ext4_template(
    h: &mut Harness,
    size: u64,
    pool_size: u64,
) -> (OwnedObjectPath, OwnedObjectPath) {
    let pool = h.pool_on("plain", FsType::Ext4, pool_size).await;
    let template = h.origin_volume(&pool, "vm-templates/t/root", MIB).await;
    fill_scattered(&h.volume(&template).await, size, 7).await;
    let other = h.origin_volume(&pool, "appvms/other/private", MIB).await;
    (pool, other)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_property_write_or_a_users_measurement_meeting_a_copy_is_busy_and_never_freezes_the_service(
) {
    let mut h = Harness::start().await;
    let (pool, other) = ext4_template(&mut h, 1024 * MIB, 2048 * MIB).await;
    let template = h
        .pool(&pool)
        .await
        .get_volume("vm-templates/t/root", opts())
        .await
        .unwrap();
    let snapshot = h
        .create_volume(
            &pool,
            "appvms/disp/root",
            opts_of([
                ("snap_on_start", Variant::from(true)),
                ("source", Variant::from("vm-templates/t/root")),
                ("rw", Variant::from(true)),
            ]),
        )
        .await;
    let mut stream = MessageStream::from(&h.conn);
    let snapshot_proxy = h.volume(&snapshot).await;
    let start = tokio::spawn(async move { snapshot_proxy.start(opts()).await });
    first_job_signal(&mut stream).await;
    // A stream nobody reads would stop this connection (zbus waits for room in it).
    drop(stream);
    // From here the copy is held where it is, so the write meets it running: it is
    // refused as Busy within its second instead of queueing behind the copy.
    let pool_dir = h.pool(&pool).await.dir_path().await.unwrap();
    let frozen = Frozen::new(std::path::Path::new(&pool_dir));
    let refused = tokio::time::timeout(HUNG, h.volume(&template).await.set_rw(false))
        .await
        .expect("the write to the template hung behind the copy");
    let message = common::assert_error(refused, "Busy");
    assert!(message.contains("vm-templates/t/root"), "{message}");
    // Nor does a user's measurement of the volume being started wait behind the copy:
    // it would keep one of the few places of all users' measurements.
    let measure = [
        "--object-path",
        snapshot.as_str(),
        "--method",
        "org.qubes.Storage.Volume.MeasureSpace",
        "@a{sv} {}",
    ];
    let measured = tokio::time::timeout(HUNG, gdbus_as_nobody_at(h.bus.address(), &measure))
        .await
        .expect("a user's measurement hung behind the copy");
    let err = measured.expect_err("measured a volume a copy holds");
    assert!(err.contains("org.qubes.Storage.Error.Busy"), "{err}");
    probe_responsive(
        &h,
        &other,
        20,
        "a snapshot copied its template and the template was written",
    )
    .await;
    frozen.thaw();
    start.await.unwrap().expect("the snapshot's Start");
    assert!(
        h.volume(&template).await.rw().await.unwrap(),
        "the refused write changed rw"
    );
    h.volume(&template)
        .await
        .set_rw(false)
        .await
        .expect("the write once the copy is done");
    assert!(!h.volume(&template).await.rw().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_polkitd_holds_up_only_the_unprivileged_write_waiting_for_it() {
    let mut h = Harness::with_polkit().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let written = h.origin_volume(&pool, "appvms/a/private", MIB).await;
    let other = h.origin_volume(&pool, "appvms/b/private", MIB).await;
    let mut checks = h.monitor_polkit_checks().await;
    h.polkitd().signal(Signal::SIGSTOP);
    let bus = h.bus.address().to_owned();
    let path = written.to_string();
    let refused = tokio::spawn(async move {
        let args = [
            "--object-path",
            path.as_str(),
            "--method",
            "org.freedesktop.DBus.Properties.Set",
            "org.qubes.Storage.Volume",
            "Rw",
            "<false>",
        ];
        gdbus_as_nobody_at(&bus, &args).await
    });
    // The write now waits for polkit's answer.
    checks.next().await.expect("monitor").expect("message");
    // Root writes another volume and adds objects meanwhile (adding an object needed
    // the lock the waiting write held when the service used zbus's object server).
    let root_work = async {
        let other_proxy = h.volume(&other).await;
        for n in 0..10 {
            other_proxy.set_rw(n % 2 == 0).await.expect("root's write");
            h.origin_volume(&pool, &format!("appvms/new{n}/private"), MIB)
                .await;
        }
    };
    let (probes, ()) = probe_while(&h, &other, root_work).await;
    assert_responsive(&probes, "polkitd was stopped during an unprivileged write");
    h.polkitd().signal(Signal::SIGCONT);
    let err = refused.await.unwrap().expect_err("nobody may not write");
    assert!(
        err.contains("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"),
        "{err}"
    );
    assert!(h.volume(&written).await.rw().await.unwrap());
}

/// Connects and disconnects `count` clients, `batch` at a time.
async fn depart(h: &Harness, count: usize, done: &AtomicUsize) {
    const BATCH: usize = 20;
    for _ in 0..count / BATCH {
        let clients = futures_util::future::join_all((0..BATCH).map(|_| h.bus.connect())).await;
        for client in clients {
            client.close().await.expect("close");
        }
        done.fetch_add(BATCH, Ordering::SeqCst);
    }
}

/// ImportDataEnd(true) of `size` bytes on `volume` from a client that leaves the bus
/// as soon as the commit's precache copy (a Job) runs: the departure handler must
/// discard its import — and so wait for the volume — while the copy holds it.
async fn leave_during_a_commit(h: &Harness, volume: &OwnedObjectPath, size: u64) -> Connection {
    let client = h.bus.connect().await;
    let proxy = VolumeProxy::builder(&client)
        .path(volume.clone())
        .build()
        .await
        .unwrap();
    let fd = proxy.import_data(size, opts()).await.unwrap();
    common::write_scattered(
        &std::fs::File::from(std::os::fd::OwnedFd::from(fd)),
        size,
        5,
    );
    let end = Message::method_call(volume.as_str(), "ImportDataEnd")
        .destination(common::SERVICE)
        .interface("org.qubes.Storage.Volume")
        .build(&(true, opts()))
        .unwrap();
    client.send(&end).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_departures_while_a_volume_is_busy_hold_up_nothing() {
    let mut h = Harness::start().await;
    let (pool, other) = ext4_template(&mut h, 64 * MIB, 3072 * MIB).await;
    let busy = h.origin_volume(&pool, "appvms/busy/private", MIB).await;
    let late = h.origin_volume(&pool, "appvms/late/private", MIB).await;
    // Signals are read on a connection of their own: a stream not read while the
    // probes run would stop the probes' connection.
    let watcher = h.bus.connect().await;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(common::SERVICE)
        .build()
        .unwrap();
    let mut stream = MessageStream::for_match_rule(rule, &watcher, None)
        .await
        .unwrap();
    let importer = leave_during_a_commit(&h, &busy, 2048 * MIB).await;
    let job = first_job_signal(&mut stream).await;
    importer.close().await.unwrap();
    let departed = Arc::new(AtomicUsize::new(0));
    let (probes, ()) = probe_while(&h, &other, depart(&h, 1000, &departed)).await;
    let objects = common::oracle::managed_objects(&h.conn).await;
    assert!(
        objects.contains_key(job.as_str()),
        "the busy volume's copy ended before the departures: the test proves nothing on this machine"
    );
    assert_eq!(departed.load(Ordering::SeqCst), 1000);
    assert_responsive(&probes, "1000 callers left and a volume was busy");
    // A departure behind all of those is handled while the copy still runs.
    let client = h.bus.connect().await;
    let proxy = VolumeProxy::builder(&client)
        .path(late.clone())
        .build()
        .await
        .unwrap();
    drop(proxy.import_data(MIB, opts()).await.unwrap());
    client.close().await.unwrap();
    let discarded = loop {
        let msg = stream.next().await.expect("stream").expect("message");
        let header = msg.header();
        if header.path().is_some_and(|p| p.as_str() == late.as_str())
            && header.member().is_some_and(|m| m == "VolumeImported")
        {
            break msg.body().deserialize::<bool>().unwrap();
        }
    };
    assert!(!discarded, "the late importer's import was committed");
    let objects = common::oracle::managed_objects(&h.conn).await;
    assert!(
        objects.contains_key(job.as_str()),
        "the copy ended before the late departure was handled: the test proves nothing"
    );
    let again = h.volume(&late).await.import_data(MIB, opts()).await;
    assert!(
        again.is_ok(),
        "the late import was not discarded: {again:?}"
    );
}

/// Root's calls are not admitted a few at a time (`admission.rs` spares it), and an
/// engine operation that waits — here snapshot starts behind a held copy of their
/// source — keeps a thread while it waits. More of them than the runtime had blocking threads (tokio's 512) froze the
/// whole service: each runtime worker hands its place to a new thread before it runs an
/// operation, and with none left to take it, nothing read the bus any more. Now the
/// operations beyond the service's bound wait as tasks, and everything that needs no
/// engine thread is answered meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn more_waiting_operations_than_the_service_has_threads_never_freeze_it() {
    // More than the service's places, and than tokio's default of blocking threads.
    const WAITING: usize = ENGINE_PLACES + 76;
    let mut h = Harness::start().await;
    let (held, snapshots) = HeldClone::start_with_snapshots(&mut h, 64 * MIB, WAITING).await;
    let other = h
        .origin_volume(&held.source_pool, "appvms/other/private", MIB)
        .await;
    let starts = starts_behind(&h, &snapshots).await;
    let what = format!("{WAITING} snapshot starts waited behind a held copy");
    probe_responsive(&h, &other, 10, &what).await;
    assert!(
        starts.iter().all(|s| !s.is_finished()),
        "a snapshot started while the copy held its source"
    );
    assert!(
        h.log().contains("every engine place is taken"),
        "the starts never filled the engine's places"
    );
    held.finish().await;
    for start in starts {
        let device = start.await.unwrap().expect("a snapshot's Start");
        assert!(device.ends_with("-dirty.img"), "{device}");
    }
}

/// A call that waited for an engine place is not run when its caller has left the bus
/// meanwhile: callers that flood the service and leave would otherwise keep every
/// place busy, for everyone, with work nobody waits for.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_caller_left_while_it_waited_for_an_engine_place_is_not_run() {
    let mut h = Harness::start().await;
    let waiting = ENGINE_PLACES + 8;
    let (held, snapshots) = HeldClone::start_with_snapshots(&mut h, 16 * MIB, waiting).await;
    let starts = starts_behind(&h, &snapshots).await;
    h.wait_for_log_where("every engine place taken", |log| {
        log.contains("every engine place is taken")
    })
    .await;
    // A user's measurement: admitted at once (the user has nothing running), it waits
    // for an engine place, which the held starts keep until the copy ends.
    let taken = |log: &str| log.matches("method=\"MeasureSpace\"").count();
    let theirs = measure_pool_as_nobody(&h, &held.source_pool);
    h.wait_for_log_where("the user's measurement", |log| taken(log) == 1)
        .await;
    // Its caller leaves (the gdbus process is killed), and the bus has seen it go
    // before a place is free.
    make_caller_leave(&h, theirs, 0, HUNG_CALLER).await;
    held.finish().await;
    for start in starts {
        start.await.unwrap().expect("a snapshot's Start");
    }
    let refused = "waited for an engine place and its caller has left the bus: not run";
    let measured = |log: &str| log.matches("pool space measured").count();
    h.wait_for_log_where("the end of the user's measurement", |log| {
        log.contains(refused) || measured(log) > 0
    })
    .await;
    assert!(
        h.log().contains(refused),
        "the measurement of a caller that left while it waited for a place was run"
    );
    assert_eq!(measured(&h.log()), 0);
}

/// Root's Starts of `snapshots` (whose source a held clone holds), from connections
/// of 100 calls each (dbus-daemon lets one connection wait for 128 replies at most),
/// once every one of them is taken off the bus. Each waits in the engine, holding an
/// engine place, for its source's lock.
async fn starts_behind(
    h: &Harness,
    snapshots: &[OwnedObjectPath],
) -> Vec<tokio::task::JoinHandle<zbus::Result<String>>> {
    const PER_CONNECTION: usize = 100;
    let mut connections = Vec::new();
    for _ in 0..snapshots.len().div_ceil(PER_CONNECTION) {
        connections.push(h.bus.connect().await);
    }
    let starts = snapshots
        .iter()
        .enumerate()
        .map(|(n, snapshot)| {
            let conn = connections[n / PER_CONNECTION].clone();
            let path = snapshot.clone();
            tokio::spawn(async move {
                let reply = conn
                    .call_method(
                        Some(common::SERVICE),
                        path.as_str(),
                        Some("org.qubes.Storage.Volume"),
                        "Start",
                        &(opts(),),
                    )
                    .await?;
                reply.body().deserialize::<String>()
            })
        })
        .collect();
    // Every one of them is taken off the bus (the handler logs it before it waits).
    let count = snapshots.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let taken = h
            .log()
            .matches("call method=Start pool=fast vid=appvms/s")
            .count();
        if taken >= count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service stopped taking calls after {taken} of {count} waiting starts (frozen)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    starts
}

/// A measurement waits for the work left after earlier replies in its pool (`settle`).
/// A precache queued for a volume that a long copy then holds (a clone into it, right
/// after its CreateVolume) once held up every measurement, of any pool (one worker did
/// every pool's work in turn), and everything queued behind a measurement on its
/// volume: a user's MeasureSpace of a VM's volume held up root's Start of that volume.
/// Now each filesystem has its own queue, so a measurement of a pool on another one does
/// not wait for it at all (and on the same one the precache gives up quickly: engine test
/// `a_precache_waiting_for_a_held_volume_holds_up_no_measurement_of_its_pool`).
#[tokio::test(flavor = "multi_thread")]
async fn a_precache_waiting_for_a_held_volume_holds_up_no_measurement_and_no_start() {
    let mut h = Harness::start().await;
    let held = HeldClone::start(&mut h, 256 * MIB).await;
    let queued = "what=precache of volume appvms/clone/root in pool fast";
    assert!(
        h.log().contains(queued),
        "no precache was queued for the clone's target"
    );
    let vm = h
        .origin_volume(&held.source_pool, "appvms/vm/private", MIB)
        .await;
    let path = vm.to_string();
    let theirs = tokio::spawn({
        let bus = h.bus.address().to_owned();
        async move {
            let args = [
                "--object-path",
                path.as_str(),
                "--method",
                "org.qubes.Storage.Volume.MeasureSpace",
                "@a{sv} {}",
            ];
            gdbus_as_nobody_at(&bus, &args).await
        }
    });
    h.wait_for_log_where("the user's measurement", |log| {
        log.contains("call method=MeasureSpace")
    })
    .await;
    assert!(
        !h.log().contains("clone/root-precache.img"),
        "the precache was made before the clone held its volume"
    );
    let start = tokio::time::timeout(HUNG, h.volume(&vm).await.start(opts())).await;
    let measured = tokio::time::timeout(HUNG, theirs).await;
    let copy_was_held = !held.copy.is_finished();
    held.finish().await;
    assert!(copy_was_held, "the clone ended before the checks");
    let device = start.expect("root's Start waited for the user's measurement");
    device.expect("root's Start");
    let measured = measured.expect("the measurement waited for the held copy");
    measured.unwrap().expect("the user's measurement");
}
