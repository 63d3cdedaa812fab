//! The Volume interface on a real dbus-daemon and a loop-mounted btrfs pool: every
//! method, property and signal of the contract, the error name of each documented
//! failure, data through passed fds, and the ordering rule (signals before the reply).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use common::{assert_error, call_traced, opts, opts_of, FsType, Harness, VolumeProxy, MIB};
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

const VOLUME: &str = "org.qubes.Storage.Volume";
const PRIVATE: &str = "appvms/work/private";

async fn with_pool() -> (Harness, OwnedObjectPath) {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 512 * MIB).await;
    (h, pool)
}

async fn with_origin() -> (Harness, OwnedObjectPath, OwnedObjectPath) {
    let (h, pool) = with_pool().await;
    let volume = h.origin_volume(&pool, PRIVATE, 8 * MIB).await;
    (h, pool, volume)
}

/// Everything an Export fd reads.
async fn exported(volume: &VolumeProxy<'_>) -> Vec<u8> {
    let fd = volume.export(opts()).await.expect("Export");
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    let mut data = Vec::new();
    file.read_to_end(&mut data).expect("read the exported fd");
    data
}

/// ImportData of `data` through the fd, then ImportDataEnd(true).
async fn import(volume: &VolumeProxy<'_>, data: &[u8]) {
    let fd = volume
        .import_data(data.len() as u64, common::shrink_ok())
        .await
        .expect("ImportData");
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    file.write_all(data).expect("write through the import fd");
    drop(file);
    volume
        .import_data_end(true, opts())
        .await
        .expect("ImportDataEnd");
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The traced Stop succeeded and sent one VolumeStopped, which says it committed.
fn assert_stop_committed(trace: &common::CallTrace) {
    assert!(!trace.is_error(), "{:?}", trace.reply);
    let stopped = trace.before("VolumeStopped");
    assert_eq!(stopped.len(), 1);
    assert!(
        stopped[0].body().deserialize::<(bool,)>().unwrap().0,
        "committed"
    );
}

fn as_bool(v: &OwnedVariant) -> bool {
    bool::try_from(v).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn created_volume_is_at_its_encoded_path_with_its_configuration() {
    let (h, pool, path) = with_origin().await;
    assert_eq!(
        path.as_str(),
        "/org/qubes/Storage/pools/p/volumes/appvms_2fwork_2fprivate"
    );
    let v = h.volume(&path).await;
    assert_eq!(v.vid().await.unwrap(), PRIVATE);
    assert_eq!(v.name().await.unwrap(), "private");
    assert_eq!(v.pool().await.unwrap(), pool);
    assert_eq!(v.size().await.unwrap(), 8 * MIB);
    assert!(v.rw().await.unwrap());
    assert!(v.save_on_stop().await.unwrap());
    assert!(!v.snap_on_start().await.unwrap());
    assert_eq!(v.source().await.unwrap().as_str(), "/");
    assert_eq!(v.revisions_to_keep().await.unwrap(), 1);
    assert!(!v.ephemeral().await.unwrap());
    assert!(!v.snapshots_disabled().await.unwrap());
    assert!(!v.is_dirty().await.unwrap());
    assert!(!v.is_outdated().await.unwrap());
    assert!(!v.started().await.unwrap());
    assert!(v.revisions().await.unwrap().is_empty());
    assert!(v
        .block_device_path()
        .await
        .unwrap()
        .ends_with("/appvms/work/private-dirty.img"));
    let pool = h.pool(&pool).await;
    assert_eq!(pool.get_volume(PRIVATE, opts()).await.unwrap(), path);
    assert_eq!(pool.list_volumes(opts()).await.unwrap(), vec![path]);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_volume_announces_the_object_before_the_reply() {
    let (h, pool) = with_pool().await;
    let config: std::collections::HashMap<&str, Variant> = opts_of([
        ("size", Variant::from(MIB)),
        ("save_on_stop", Variant::from(true)),
    ]);
    let trace = call_traced(
        &h.conn,
        pool.as_str(),
        "org.qubes.Storage.Pool",
        "CreateVolume",
        &(PRIVATE, config, opts()),
    )
    .await;
    assert!(!trace.is_error());
    let added = trace.before("InterfacesAdded");
    assert_eq!(added.len(), 1, "one InterfacesAdded before the reply");
    let (path, ifaces): (
        OwnedObjectPath,
        std::collections::HashMap<String, std::collections::HashMap<String, OwnedVariant>>,
    ) = added[0].body().deserialize().unwrap();
    assert_eq!(
        path.as_str(),
        "/org/qubes/Storage/pools/p/volumes/appvms_2fwork_2fprivate"
    );
    assert_eq!(
        ifaces[VOLUME]["Vid"],
        OwnedVariant::from(zbus::Str::from(PRIVATE))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_volume_refuses_malformed_input_with_invalid_argument() {
    let (h, pool) = with_pool().await;
    let p = h.pool(&pool).await;
    for vid in [
        "appvms/../x",
        "other/work/private",
        "appvms/work",
        "appvms/work/private-dirty",
    ] {
        assert_error(
            p.create_volume(vid, opts(), opts()).await,
            "InvalidArgument",
        );
    }
    let typo = opts_of([("sise", Variant::from(MIB))]);
    assert!(assert_error(
        p.create_volume(PRIVATE, typo, opts()).await,
        "InvalidArgument"
    )
    .contains("sise"));
    let snap_without_source = opts_of([("snap_on_start", Variant::from(true))]);
    assert_error(
        p.create_volume(PRIVATE, snap_without_source, opts()).await,
        "InvalidArgument",
    );
    let escaping_source = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("../../etc/passwd")),
    ]);
    let message = assert_error(
        p.create_volume(PRIVATE, escaping_source, opts()).await,
        "InvalidArgument",
    );
    assert!(
        message
            .contains("the configuration key \"source\": invalid volume id \"../../etc/passwd\""),
        "{message}"
    );
    let bad_rtk = opts_of([("revisions_to_keep", Variant::from(-5i32))]);
    assert_error(
        p.create_volume(PRIVATE, bad_rtk, opts()).await,
        "InvalidArgument",
    );
    assert!(
        p.list_volumes(opts()).await.unwrap().is_empty(),
        "a refused volume stayed registered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_volume_twice_already_exists() {
    let (h, pool, _) = with_origin().await;
    let again = h
        .pool(&pool)
        .await
        .create_volume(PRIVATE, opts(), opts())
        .await;
    assert_error(again, "AlreadyExists");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_volume_with_an_absent_source_is_not_found() {
    let (h, pool) = with_pool().await;
    let config = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("vm-templates/fedora/root")),
    ]);
    assert_error(
        h.pool(&pool)
            .await
            .create_volume("appvms/work/root", config, opts())
            .await,
        "NotFound",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_volume_of_an_absent_vid_is_not_found() {
    let (h, pool) = with_pool().await;
    assert_error(
        h.pool(&pool).await.get_volume(PRIVATE, opts()).await,
        "NotFound",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_returns_the_block_device_and_announces_it_before_the_reply() {
    let (h, _, path) = with_origin().await;
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Start", &(opts(),)).await;
    assert!(!trace.is_error());
    let (device,): (String,) = trace.reply.body().deserialize().unwrap();
    assert!(device.ends_with("private-dirty.img") && std::path::Path::new(&device).is_file());
    let started = trace.before("VolumeStarted");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].header().path().unwrap().as_str(), path.as_str());
    assert_eq!(
        started[0].body().deserialize::<(String,)>().unwrap().0,
        device
    );
    let changed = trace.changed_properties(path.as_str());
    assert!(
        as_bool(&changed["Started"]) && as_bool(&changed["IsDirty"]),
        "{changed:?}"
    );
    assert!(
        !changed.contains_key("Usage"),
        "Usage must never be announced"
    );
    assert!(h.volume(&path).await.started().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_commits_a_revision_and_announces_it_before_the_reply() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Stop", &(opts(),)).await;
    assert_stop_committed(&trace);
    let added = trace.before("RevisionAdded");
    assert_eq!(added.len(), 1);
    let (id, timestamp): (String, i64) = added[0].body().deserialize().unwrap();
    assert_eq!(id, "1");
    let changed = trace.changed_properties(path.as_str());
    assert!(!as_bool(&changed["Started"]));
    let revisions =
        Vec::<(String, i64)>::try_from(changed["Revisions"].try_clone().unwrap()).unwrap();
    assert_eq!(revisions, vec![(id, timestamp)]);
    assert_eq!(v.revisions().await.unwrap(), revisions);
}

/// A stop that fails because the pool directory is gone (moved away, say) announces
/// nothing: the volume was not read as stopped and empty, which its files say it is not
/// once the directory is back — and the next stop commits and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_that_cannot_reach_the_pool_directory_announces_no_change() {
    let (h, pool, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    let dir = std::path::PathBuf::from(h.pool(&pool).await.dir_path().await.unwrap());
    let away = dir.with_extension("away");
    std::fs::rename(&dir, &away).unwrap();
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Stop", &(opts(),)).await;
    std::fs::rename(&away, &dir).unwrap();
    assert!(trace.is_error());
    let changed = trace.changed_properties(path.as_str());
    assert!(changed.is_empty(), "announced {:?}", changed.keys());
    assert!(v.started().await.unwrap(), "still started");
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Stop", &(opts(),)).await;
    assert_stop_committed(&trace);
    assert!(!as_bool(
        &trace.changed_properties(path.as_str())["Started"]
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_is_idempotent() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.stop(opts()).await.unwrap();
    v.start(opts()).await.unwrap();
    v.stop(opts()).await.unwrap();
    v.stop(opts()).await.unwrap();
    assert_eq!(v.revisions().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pruned_revisions_are_announced() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    for _ in 0..2 {
        v.start(opts()).await.unwrap();
        v.stop(opts()).await.unwrap();
    }
    v.start(opts()).await.unwrap();
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Stop", &(opts(),)).await;
    let pruned = trace.before("RevisionPruned");
    assert_eq!(pruned.len(), 1, "rtk 1: the older revision goes");
    assert_eq!(
        pruned[0].body().deserialize::<(String, i64)>().unwrap().0,
        "2"
    );
    let ids: Vec<String> = v
        .revisions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, vec!["3".to_owned()]);
}

/// A volume's removal is announced by InterfacesRemoved alone: its revisions go with
/// it and are not "pruned" (RevisionPruned followed the InterfacesRemoved of the
/// volume, from an object that no longer existed).
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_volumes_revisions_are_not_announced_as_pruned() {
    let (h, pool, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    v.stop(opts()).await.unwrap();
    assert_eq!(v.revisions().await.unwrap().len(), 1);
    let removal = call_traced(&h.conn, path.as_str(), VOLUME, "Remove", &(opts(),)).await;
    assert!(
        removal.reply.header().message_type() == zbus::message::Type::MethodReturn,
        "Remove failed: {:?}",
        removal.reply
    );
    // A later call's reply comes after every signal the removal sent (the service
    // keeps one order for its messages).
    let after = call_traced(
        &h.conn,
        pool.as_str(),
        "org.freedesktop.DBus.Properties",
        "GetAll",
        &("org.qubes.Storage.Pool",),
    )
    .await;
    let pruned: Vec<_> = removal
        .before("RevisionPruned")
        .into_iter()
        .chain(after.before("RevisionPruned"))
        .collect();
    assert!(
        pruned.is_empty(),
        "{} RevisionPruned for a removal",
        pruned.len()
    );
    assert_eq!(removal.before("InterfacesRemoved").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_of_a_started_volume_is_busy() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    assert_error(v.remove(opts()).await, "Busy");
    assert!(v.started().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_volume_disappears_before_the_reply() {
    let (h, pool, path) = with_origin().await;
    let dir = h.pool(&pool).await.dir_path().await.unwrap();
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Remove", &(opts(),)).await;
    assert!(!trace.is_error());
    let removed = trace.before("InterfacesRemoved");
    assert_eq!(removed.len(), 1);
    let (gone, ifaces): (OwnedObjectPath, Vec<String>) = removed[0].body().deserialize().unwrap();
    assert_eq!((gone, ifaces), (path.clone(), vec![VOLUME.to_owned()]));
    assert_error(
        h.pool(&pool).await.get_volume(PRIVATE, opts()).await,
        "NotFound",
    );
    assert!(!std::path::Path::new(&dir)
        .join("appvms/work/private.img")
        .exists());
    let gone = h.volume(&path).await.started().await;
    assert!(gone.is_err(), "the object still answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_without_revisions_is_not_found() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    assert_error(v.revert("", opts()).await, "NotFound");
    assert_error(v.revert("7", opts()).await, "NotFound");
    // Anything that is not an id as Revisions lists it names no revision (fix 7).
    for malformed in ["seven", "+7", "07"] {
        assert_error(v.revert(malformed, opts()).await, "NotFound");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_of_a_started_volume_is_busy() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    v.stop(opts()).await.unwrap();
    v.start(opts()).await.unwrap();
    assert_error(v.revert("", opts()).await, "Busy");
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_brings_back_the_previous_data_and_announces_it() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let first = data(1, MIB as usize);
    let second = data(2, MIB as usize);
    import(&v, &first).await;
    import(&v, &second).await;
    assert_eq!(exported(&v).await, second);
    let trace = call_traced(&h.conn, path.as_str(), VOLUME, "Revert", &("", opts())).await;
    assert!(!trace.is_error());
    let reverted = trace.before("VolumeReverted");
    assert_eq!(reverted.len(), 1);
    assert_eq!(exported(&v).await, first);
    assert!(trace
        .changed_properties(path.as_str())
        .contains_key("Revisions"));
}

#[tokio::test(flavor = "multi_thread")]
async fn resize_grows_and_announces_the_new_size() {
    let (h, _, path) = with_origin().await;
    let trace = call_traced(
        &h.conn,
        path.as_str(),
        VOLUME,
        "Resize",
        &(16 * MIB, opts()),
    )
    .await;
    assert!(!trace.is_error());
    let resized = trace.before("VolumeResized");
    assert_eq!(
        resized[0].body().deserialize::<(u64, u64)>().unwrap(),
        (8 * MIB, 16 * MIB)
    );
    assert_eq!(
        trace.changed_properties(path.as_str())["Size"],
        OwnedVariant::from(16 * MIB)
    );
    assert_eq!(h.volume(&path).await.size().await.unwrap(), 16 * MIB);
}

#[tokio::test(flavor = "multi_thread")]
async fn shrinking_needs_allow_shrink() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    assert!(
        assert_error(v.resize(4 * MIB, opts()).await, "InvalidArgument").contains("allow_shrink")
    );
    assert_eq!(v.size().await.unwrap(), 8 * MIB);
    v.resize(4 * MIB, opts_of([("allow_shrink", Variant::from(true))]))
        .await
        .unwrap();
    assert_eq!(v.size().await.unwrap(), 4 * MIB);
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_data_comes_back_through_export() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let payload = data(7, 3 * MIB as usize);
    let fd = v
        .import_data(payload.len() as u64, common::shrink_ok())
        .await
        .unwrap();
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    file.write_all_at(&payload, 0).unwrap();
    drop(file);
    let trace = call_traced(
        &h.conn,
        path.as_str(),
        VOLUME,
        "ImportDataEnd",
        &(true, opts()),
    )
    .await;
    assert!(!trace.is_error());
    let imported = trace.before("VolumeImported");
    assert!(imported[0].body().deserialize::<(bool,)>().unwrap().0);
    assert_eq!(exported(&v).await, payload);
    assert_eq!(v.size().await.unwrap(), payload.len() as u64);
    assert_eq!(
        v.revisions().await.unwrap().len(),
        1,
        "the empty image became revision 1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_fd_is_read_only() {
    let (h, _, path) = with_origin().await;
    let fd = h.volume(&path).await.export(opts()).await.unwrap();
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    assert!(
        file.write_all_at(b"x", 0).is_err(),
        "an exported fd accepted a write"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_keeps_the_old_image_while_a_commit_replaces_it() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let old = data(3, MIB as usize);
    import(&v, &old).await;
    let fd = v.export(opts()).await.unwrap();
    import(&v, &data(4, MIB as usize)).await;
    let mut reader = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).unwrap();
    assert_eq!(seen, old);
}

#[tokio::test(flavor = "multi_thread")]
async fn export_of_a_volume_that_is_not_save_on_stop_is_not_supported() {
    let (h, pool) = with_pool().await;
    let volatile = h
        .create_volume(
            &pool,
            "appvms/work/volatile",
            opts_of([("size", Variant::from(MIB))]),
        )
        .await;
    assert_error(
        h.volume(&volatile).await.export(opts()).await,
        "NotSupported",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_data_end_false_discards_the_import() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let fd = v.import_data(MIB, common::shrink_ok()).await.unwrap();
    drop(fd);
    v.import_data_end(false, opts()).await.unwrap();
    assert!(v.revisions().await.unwrap().is_empty());
    assert_eq!(exported(&v).await, vec![0u8; 8 * MIB as usize]);
}

#[tokio::test(flavor = "multi_thread")]
async fn import_data_end_without_an_import_fails_and_adds_no_revision() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    assert_error(v.import_data_end(true, opts()).await, "NotFound");
    assert!(v.revisions().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn import_into_a_started_volume_is_busy() {
    let (h, pool, path) = with_origin().await;
    let other = h.origin_volume(&pool, "appvms/other/private", MIB).await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    assert_error(v.import_data(MIB, opts()).await, "Busy");
    assert_error(v.import_volume(&other.as_ref(), opts()).await, "Busy");
}

#[tokio::test(flavor = "multi_thread")]
async fn import_volume_clones_a_volume_of_another_pool() {
    let (mut h, pool, path) = with_origin().await;
    let payload = data(9, 2 * MIB as usize);
    import(&h.volume(&path).await, &payload).await;
    let other_pool = h.pool_on("q", FsType::Btrfs, 256 * MIB).await;
    let copy = h
        .origin_volume(&other_pool, "appvms/clone/private", MIB)
        .await;
    let trace = call_traced(
        &h.conn,
        copy.as_str(),
        VOLUME,
        "ImportVolume",
        &(path.clone(), opts()),
    )
    .await;
    assert!(!trace.is_error());
    assert!(
        trace.before("VolumeImported")[0]
            .body()
            .deserialize::<(bool,)>()
            .unwrap()
            .0
    );
    assert_eq!(exported(&h.volume(&copy).await).await, payload);
    assert_eq!(
        trace.changed_properties(copy.as_str())["Size"],
        OwnedVariant::from(payload.len() as u64)
    );
    let _ = pool;
}

#[tokio::test(flavor = "multi_thread")]
async fn import_volume_from_a_path_that_is_no_volume_is_not_found() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let nowhere =
        zbus::ObjectPath::try_from("/org/qubes/Storage/pools/p/volumes/appvms_2fx_2fy").unwrap();
    assert_error(v.import_volume(&nowhere, opts()).await, "NotFound");
    let junk = zbus::ObjectPath::try_from("/elsewhere").unwrap();
    assert_error(v.import_volume(&junk, opts()).await, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn rw_cannot_change_while_started() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    v.start(opts()).await.unwrap();
    assert_error(v.set_rw(false).await, "Busy");
    assert!(v.rw().await.unwrap());
    v.stop(opts()).await.unwrap();
    v.set_rw(false).await.unwrap();
    assert!(!v.rw().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn property_write_announces_the_new_value_before_the_reply() {
    let (h, _, path) = with_origin().await;
    let body = (VOLUME, "RevisionsToKeep", Variant::from(4i32));
    let trace = call_traced(
        &h.conn,
        path.as_str(),
        "org.freedesktop.DBus.Properties",
        "Set",
        &body,
    )
    .await;
    assert!(!trace.is_error());
    assert_eq!(
        trace.changed_properties(path.as_str())["RevisionsToKeep"],
        OwnedVariant::from(4i32)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_snapshots_off_while_started_is_busy() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    assert_error(v.set_revisions_to_keep(-2).await, "InvalidArgument");
    v.start(opts()).await.unwrap();
    assert_error(v.set_revisions_to_keep(-1).await, "Busy");
    v.set_revisions_to_keep(3).await.unwrap();
    v.stop(opts()).await.unwrap();
    v.set_revisions_to_keep(-1).await.unwrap();
    assert!(v.snapshots_disabled().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_is_refused_for_save_on_stop_and_allowed_for_rw_volatile() {
    let (h, pool, path) = with_origin().await;
    assert_error(
        h.volume(&path).await.set_ephemeral(true).await,
        "InvalidArgument",
    );
    let config = opts_of([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
    let volatile = h
        .volume(&h.create_volume(&pool, "appvms/work/volatile", config).await)
        .await;
    volatile.set_ephemeral(true).await.unwrap();
    assert!(volatile.ephemeral().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_ephemeral_volatile_is_announced_on_its_volatile_volumes() {
    let (h, pool) = with_pool().await;
    let config = opts_of([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
    let volatile = h.create_volume(&pool, "appvms/work/volatile", config).await;
    let body = (
        "org.qubes.Storage.Pool",
        "EphemeralVolatile",
        Variant::from(true),
    );
    let trace = call_traced(
        &h.conn,
        pool.as_str(),
        "org.freedesktop.DBus.Properties",
        "Set",
        &body,
    )
    .await;
    assert!(!trace.is_error());
    assert!(as_bool(
        &trace.changed_properties(pool.as_str())["EphemeralVolatile"]
    ));
    assert!(as_bool(
        &trace.changed_properties(volatile.as_str())["Ephemeral"]
    ));
}

/// A pool property write while the pool directory is missing (moved away, its
/// filesystem not mounted) is announced on the volumes that follow it: their files
/// cannot be read, but `Ephemeral` is in their configuration. Before, their refresh
/// failed and `Ephemeral` stayed as announced until the volume's next change. A volume's
/// own `Rw`, which needs to know whether it is started, is refused naming the directory.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_property_write_is_announced_while_the_pool_directory_is_missing() {
    let (h, pool) = with_pool().await;
    let config = opts_of([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
    let volatile = h.create_volume(&pool, "appvms/work/volatile", config).await;
    let dir = std::path::PathBuf::from(h.pool(&pool).await.dir_path().await.unwrap());
    let away = dir.with_extension("away");
    std::fs::rename(&dir, &away).unwrap();
    let set = |path: &OwnedObjectPath, iface: &'static str, name: &'static str, on: bool| {
        let body = (iface, name, Variant::from(on));
        let path = path.clone();
        let conn = h.conn.clone();
        async move {
            call_traced(
                &conn,
                path.as_str(),
                "org.freedesktop.DBus.Properties",
                "Set",
                &body,
            )
            .await
        }
    };
    let pool_write = set(&pool, "org.qubes.Storage.Pool", "EphemeralVolatile", true).await;
    let volume_write = set(&volatile, VOLUME, "Rw", false).await;
    std::fs::rename(&away, &dir).unwrap();
    assert!(!pool_write.is_error());
    let changed = pool_write.changed_properties(volatile.as_str());
    assert!(as_bool(&changed["Ephemeral"]), "{:?}", changed.keys());
    assert_eq!(changed.len(), 1, "only Ephemeral: {:?}", changed.keys());
    assert!(volume_write.is_error());
    let message: String = volume_write.reply.body().deserialize().unwrap();
    assert!(
        message.contains("appvms/work/volatile") && message.contains("cannot open the directory"),
        "{message}"
    );
    assert!(volume_write
        .changed_properties(volatile.as_str())
        .is_empty());
    let v = h.volume(&volatile).await;
    assert!(v.rw().await.unwrap());
    assert!(v.ephemeral().await.unwrap());
    assert_eq!(v.size().await.unwrap(), MIB, "the files' values stay");
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_names_its_source_and_goes_outdated_when_the_source_commits() {
    let (h, pool) = with_pool().await;
    let template = h
        .origin_volume(&pool, "vm-templates/fedora/root", 4 * MIB)
        .await;
    let config = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("vm-templates/fedora/root")),
    ]);
    let root = h.create_volume(&pool, "appvms/work/root", config).await;
    let snapshot = h.volume(&root).await;
    assert_eq!(snapshot.source().await.unwrap(), template);
    snapshot.start(opts()).await.unwrap();
    assert!(!snapshot.is_outdated().await.unwrap());
    let source = h.volume(&template).await;
    source.start(opts()).await.unwrap();
    let trace = call_traced(&h.conn, template.as_str(), VOLUME, "Stop", &(opts(),)).await;
    assert!(!trace.is_error());
    assert!(as_bool(
        &trace.changed_properties(root.as_str())["IsOutdated"]
    ));
    assert!(snapshot.is_outdated().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_is_true_with_the_image_and_not_found_without() {
    let (h, pool, path) = with_origin().await;
    let v = h.volume(&path).await;
    assert!(v.verify(opts()).await.unwrap());
    let dir = h.pool(&pool).await.dir_path().await.unwrap();
    std::fs::remove_file(format!("{dir}/appvms/work/private.img")).unwrap();
    assert_error(v.verify(opts()).await, "NotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_volumes_of_a_vm_start_in_parallel() {
    let (h, pool) = with_pool().await;
    h.origin_volume(&pool, "vm-templates/fedora/root", 16 * MIB)
        .await;
    let root_config = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("vm-templates/fedora/root")),
        ("size", Variant::from(16 * MIB)),
    ]);
    let root = h
        .create_volume(&pool, "appvms/work/root", root_config)
        .await;
    let private = h.origin_volume(&pool, PRIVATE, 16 * MIB).await;
    let volatile_config = opts_of([
        ("size", Variant::from(16 * MIB)),
        ("rw", Variant::from(true)),
    ]);
    let volatile = h
        .create_volume(&pool, "appvms/work/volatile", volatile_config)
        .await;
    let mut proxies = Vec::new();
    for path in [&root, &private, &volatile] {
        proxies.push(h.volume(path).await);
    }
    let starts = proxies.iter().map(|v| v.start(opts()));
    let devices = futures_util::future::join_all(starts).await;
    for (device, v) in devices.into_iter().zip(&proxies) {
        let device = device.expect("parallel Start");
        assert_eq!(device, v.block_device_path().await.unwrap());
        assert!(v.started().await.unwrap());
    }
    let stops = proxies.iter().map(|v| v.stop(opts()));
    for stopped in futures_util::future::join_all(stops).await {
        stopped.expect("parallel Stop");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_read_live_and_never_announced() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let device = v.start(opts()).await.unwrap();
    let before = v.usage().await.unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&device)
        .unwrap();
    file.write_all_at(&data(5, 2 * MIB as usize), 0).unwrap();
    file.sync_all().unwrap();
    let after = v.usage().await.unwrap();
    assert!(after >= before + 2 * MIB, "{before} → {after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_method_option_is_invalid_argument_naming_the_key() {
    let (h, _, path) = with_origin().await;
    let v = h.volume(&path).await;
    let message = assert_error(
        v.start(opts_of([("forse", Variant::from(true))])).await,
        "InvalidArgument",
    );
    assert!(message.contains("forse"), "{message}");
    assert!(
        !v.started().await.unwrap(),
        "a refused call changed something"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_volume_into_a_full_pool_is_no_space_and_changes_nothing() {
    let (mut h, _, path) = with_origin().await;
    let big = h.volume(&path).await;
    import(&big, &data(6, 24 * MIB as usize)).await;
    let tiny = h.pool_on("tiny", FsType::Ext4, 16 * MIB).await;
    let full = h.origin_volume(&tiny, "appvms/full/private", MIB).await;
    let v = h.volume(&full).await;
    let before = (v.revisions().await.unwrap(), exported(&v).await);
    assert_error(v.import_volume(&path.as_ref(), opts()).await, "NoSpace");
    assert_eq!((v.revisions().await.unwrap(), exported(&v).await), before);
}
