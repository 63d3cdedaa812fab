//! Jobs: a cross-filesystem ImportVolume (an ext4 pool into a btrfs pool) cannot
//! reflink, so it copies bytes and publishes a Job object with progress; `Cancel` — and
//! SIGTERM of the service — stop it, the method fails with `Cancelled`, and the
//! destination is exactly as before.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::common_fs::Frozen;
use common::{
    assert_error, call_traced, fill_scattered, opts, start_held_import, CallTrace, FsType, Harness,
    MIB,
};
use zbus::{Message, OwnedObjectPath, OwnedVariant};

/// The source image: 1 GiB, half of it data, so a copy outlasts the test's reaction.
const IMAGE: u64 = 1024 * MIB;
const JOBS: &str = "/org/qubes/Storage/jobs/";

struct CopySetup {
    h: Harness,
    source: OwnedObjectPath,
    destination: OwnedObjectPath,
    destination_dir: PathBuf,
}

/// A 1 GiB source image on ext4 with 1 MiB of data in every 2 MiB, and an empty
/// destination volume on btrfs.
async fn copy_setup() -> CopySetup {
    let mut h = Harness::start().await;
    let ext4 = h.pool_on("slow", FsType::Ext4, 4096 * MIB).await;
    let btrfs = h.pool_on("fast", FsType::Btrfs, 3072 * MIB).await;
    let source = h.origin_volume(&ext4, "vm-templates/big/root", MIB).await;
    fill_scattered(&h.volume(&source).await, IMAGE, 11).await;
    let destination = h.origin_volume(&btrfs, "appvms/clone/root", MIB).await;
    let pool_dir = h.pool(&btrfs).await.dir_path().await.unwrap();
    let destination_dir = PathBuf::from(pool_dir).join("appvms/clone");
    CopySetup {
        h,
        source,
        destination,
        destination_dir,
    }
}

/// ImportVolume started, held the moment its Job appears ([`start_held_import`]).
async fn start_held_copy(s: &CopySetup) -> (OwnedObjectPath, Running, Frozen) {
    let hold = s.destination_dir.parent().expect("the pool directory");
    start_held_import(&s.h, &s.destination, &s.source, hold).await
}

type Running = tokio::task::JoinHandle<zbus::Result<()>>;

/// State of the destination that a cancelled import must not change.
async fn destination_state(s: &CopySetup) -> (Vec<String>, Vec<(String, i64)>, u64) {
    let v = s.h.volume(&s.destination).await;
    (
        s.h.settled_names(&s.destination_dir).await,
        v.revisions().await.unwrap(),
        v.size().await.unwrap(),
    )
}

type Added = (
    OwnedObjectPath,
    HashMap<String, HashMap<String, OwnedVariant>>,
);

/// ImportVolume of the source into the destination, traced to its reply (which must be
/// a success), and the Job it published with its properties when it appeared.
async fn traced_import(s: &CopySetup) -> (CallTrace, Added) {
    let trace = call_traced(
        &s.h.conn,
        s.destination.as_str(),
        "org.qubes.Storage.Volume",
        "ImportVolume",
        &(s.source.clone(), opts()),
    )
    .await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let job = trace
        .before("InterfacesAdded")
        .iter()
        .map(|m| m.body().deserialize::<Added>().unwrap())
        .find(|(p, _)| p.as_str().starts_with(JOBS))
        .expect("a Job object appeared");
    (trace, job)
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_filesystem_import_publishes_a_job_with_progress() {
    let s = copy_setup().await;
    let (trace, (job, ifaces)) = traced_import(&s).await;
    let props = &ifaces["org.qubes.Storage.Job"];
    assert_eq!(
        props["Operation"],
        OwnedVariant::from(zbus::Str::from("ImportVolume"))
    );
    let objects = Vec::<OwnedObjectPath>::try_from(props["Objects"].try_clone().unwrap()).unwrap();
    assert_eq!(objects, vec![s.destination.clone(), s.source.clone()]);
    assert_eq!(u64::try_from(&props["BytesTotal"]).unwrap(), IMAGE / 2);
    assert!(bool::try_from(&props["Cancelable"]).unwrap());
    assert_eq!(u32::try_from(&props["StartedByUID"]).unwrap(), 0);
    let start_us = u64::try_from(&props["StartTime"]).unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        start_us <= now_us && now_us - start_us < 600_000_000,
        "StartTime {start_us}"
    );
    let done: Vec<u64> = trace
        .signals_before
        .iter()
        .filter(|m| {
            m.header()
                .path()
                .is_some_and(|p| p.as_str() == job.as_str())
                && common::member_of(m) == "PropertiesChanged"
        })
        .filter_map(|m| {
            let (_, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                m.body().deserialize().unwrap();
            changed.get("BytesDone").map(|v| u64::try_from(v).unwrap())
        })
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "BytesDone went backwards: {done:?}"
    );
    assert_eq!(
        done.last(),
        Some(&(IMAGE / 2)),
        "the final progress is announced"
    );
    let completed = trace.before("Completed");
    assert_eq!(completed.len(), 1);
    assert_eq!(
        completed[0].body().deserialize::<(bool, String)>().unwrap(),
        (true, String::new())
    );
    let removed = trace.before("InterfacesRemoved");
    assert!(removed.iter().any(|m| m
        .body()
        .deserialize::<(OwnedObjectPath, Vec<String>)>()
        .unwrap()
        .0
        == job));
    let v = s.h.volume(&s.destination).await;
    assert_eq!(v.size().await.unwrap(), IMAGE);
}

/// The `Cancelable` value a PropertiesChanged of `job` carries, if it is one.
fn cancelable_in(msg: &Message, job: &str) -> Option<bool> {
    let on_job = msg.header().path().is_some_and(|p| p.as_str() == job);
    if !on_job || common::member_of(msg) != "PropertiesChanged" {
        return None;
    }
    let (_, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
        msg.body().deserialize().unwrap();
    changed
        .get("Cancelable")
        .map(|v| bool::try_from(v).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_stops_being_cancelable_at_its_point_of_no_return() {
    let s = copy_setup().await;
    let (trace, (job, _)) = traced_import(&s).await;
    let signals = &trace.signals_before;
    let changes: Vec<(usize, bool)> = signals
        .iter()
        .enumerate()
        .filter_map(|(i, m)| cancelable_in(m, job.as_str()).map(|c| (i, c)))
        .collect();
    let completed = signals
        .iter()
        .position(|m| common::member_of(m) == "Completed")
        .expect("Completed");
    assert_eq!(changes.len(), 1, "one change of Cancelable: {changes:?}");
    let (at, value) = changes[0];
    assert!(!value, "Cancelable turned false");
    assert!(at < completed, "Cancelable turned false before Completed");
}

/// A copy an operation makes after its point of no return — a commit's precache on a
/// pool without reflinks — is announced not cancelable from its first InterfacesAdded:
/// a Cancel could not stop it (a client told it could would think it had).
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_after_the_point_of_no_return_is_announced_not_cancelable() {
    let mut h = Harness::start().await;
    let ext4 = h.pool_on("slow", FsType::Ext4, 2048 * MIB).await;
    let path = h.origin_volume(&ext4, "appvms/work/private", MIB).await;
    let volume = h.volume(&path).await;
    fill_scattered(&volume, 512 * MIB, 5).await;
    volume.start(opts()).await.unwrap();
    let trace = call_traced(
        &h.conn,
        path.as_str(),
        "org.qubes.Storage.Volume",
        "Stop",
        &(opts(),),
    )
    .await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let jobs: Vec<Added> = trace
        .before("InterfacesAdded")
        .iter()
        .map(|m| m.body().deserialize::<Added>().unwrap())
        .filter(|(p, _)| p.as_str().starts_with(JOBS))
        .collect();
    assert!(!jobs.is_empty(), "the stop's precache copy is a Job");
    for (job, ifaces) in &jobs {
        let cancelable = bool::try_from(&ifaces["org.qubes.Storage.Job"]["Cancelable"]).unwrap();
        assert!(!cancelable, "{job} was announced cancelable: {ifaces:?}");
    }
}

/// A volume with 70 MiB of data on btrfs cloned (ImportVolume) into a new volume of an
/// ext4 pool of `ext4_size`: the harness, the clone's path and the call's trace.
async fn clone_into_a_small_ext4_pool(ext4_size: u64) -> (Harness, OwnedObjectPath, CallTrace) {
    let mut h = Harness::start().await;
    let btrfs = h.pool_on("fast", FsType::Btrfs, 512 * MIB).await;
    let ext4 = h.pool_on("slow", FsType::Ext4, ext4_size).await;
    let source = h.origin_volume(&btrfs, "vm-templates/t/root", MIB).await;
    fill_scattered(&h.volume(&source).await, 140 * MIB, 3).await;
    let clone = h.origin_volume(&ext4, "appvms/work/root", MIB).await;
    let trace = call_traced(
        &h.conn,
        clone.as_str(),
        "org.qubes.Storage.Volume",
        "ImportVolume",
        &(&source, opts()),
    )
    .await;
    (h, clone, trace)
}

/// A copy whose failure the call survives — a clone's precache on an ext4 pool with room
/// for the clone but not for a second copy of it — says in its `Completed` that it did
/// not finish, and why; the clone's reply is a success and the volume holds the source's
/// data (before, that Job completed "successfully" after writing a part of the copy).
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_that_fails_while_its_call_succeeds_completes_unsuccessfully() {
    let (h, clone, trace) = clone_into_a_small_ext4_pool(128 * MIB).await;
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let completed: Vec<(String, bool, String)> = trace
        .before("Completed")
        .iter()
        .map(|m| {
            let (success, message): (bool, String) = m.body().deserialize().unwrap();
            let path = m.header().path().unwrap().to_string();
            (path, success, message)
        })
        .collect();
    assert_eq!(
        completed.len(),
        2,
        "the clone's copy and its precache: {completed:?}"
    );
    assert!(completed[0].1, "the clone's copy finished: {completed:?}");
    let (_, success, message) = &completed[1];
    assert!(
        !success,
        "the precache's copy did not finish: {completed:?}"
    );
    assert!(
        message.contains("no space left on device")
            && message.contains(
                "the call succeeded without it: the volume's next start copies its image instead"
            ),
        "{message}"
    );
    assert_eq!(h.volume(&clone).await.size().await.unwrap(), 140 * MIB);
}

/// A clone whose copy fails (an ext4 pool too small for it) announces
/// `VolumeImported(false)` as its contract says ("an import or a clone into the volume
/// ended … false: discarded"), before its error reply, and nothing of the changes it
/// gave back. Before, every event of a failed call was dropped, that one too.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_clone_announces_volume_imported_false() {
    let (_h, clone, trace) = clone_into_a_small_ext4_pool(64 * MIB).await;
    assert!(trace.is_error(), "the copy does not fit");
    let imported: Vec<bool> = trace
        .before("VolumeImported")
        .iter()
        .filter(|m| {
            m.header()
                .path()
                .is_some_and(|p| p.as_str() == clone.as_str())
        })
        .map(|m| m.body().deserialize::<(bool,)>().unwrap().0)
        .collect();
    assert_eq!(imported, vec![false]);
    assert!(trace.before("RevisionAdded").is_empty());
    assert!(trace.changed_properties(clone.as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_copy_and_leaves_no_partial_state() {
    let s = copy_setup().await;
    let before = destination_state(&s).await;
    let (job, import, frozen) = start_held_copy(&s).await;
    s.h.job(&job).await.cancel(opts()).await.expect("Cancel");
    frozen.thaw();
    assert_error(import.await.unwrap(), "Cancelled");
    assert_eq!(
        destination_state(&s).await,
        before,
        "a cancelled import changed the destination"
    );
    let objects = common::oracle::managed_objects(&s.h.conn).await;
    assert!(
        !objects.keys().any(|p| p.starts_with(JOBS)),
        "the job object stayed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_copy_cancels_it_and_exits_cleanly() {
    let mut s = copy_setup().await;
    let before = destination_state(&s).await;
    let (_job, import, frozen) = start_held_copy(&s).await;
    let daemon = s.h.take_daemon();
    daemon.send_sigterm();
    s.h.wait_for_log("shutting down: cancelled the running operations")
        .await;
    frozen.thaw();
    assert_error(import.await.unwrap(), "Cancelled");
    let status = tokio::task::spawn_blocking(move || daemon.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    s.h.start_daemon().await;
    assert_eq!(destination_state(&s).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_copy_reads_answer_and_a_property_write_is_busy_instead_of_waiting() {
    let s = copy_setup().await;
    let (job, import, frozen) = start_held_copy(&s).await;
    let objects = common::oracle::managed_objects(&s.h.conn).await;
    assert!(
        objects.contains_key(job.as_str()),
        "GetManagedObjects during the copy lists the job"
    );
    assert_error(s.h.volume(&s.destination).await.set_rw(false).await, "Busy");
    s.h.job(&job).await.cancel(opts()).await.expect("Cancel");
    frozen.thaw();
    assert_error(import.await.unwrap(), "Cancelled");
    assert!(s.h.volume(&s.destination).await.rw().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_starter_or_root_may_cancel_a_job() {
    let s = copy_setup().await;
    let (job, import, frozen) = start_held_copy(&s).await;
    let args = [
        "--object-path",
        job.as_str(),
        "--method",
        "org.qubes.Storage.Job.Cancel",
        "@a{sv} {}",
    ];
    let refused = common::gdbus_as_nobody(&s.h.bus, &args).await;
    s.h.job(&job)
        .await
        .cancel(opts())
        .await
        .expect("root may cancel");
    frozen.thaw();
    let err = refused.expect_err("nobody cancelled root's job");
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{err}"
    );
    assert_error(import.await.unwrap(), "Cancelled");
}
