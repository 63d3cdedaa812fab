//! Restarts: after SIGTERM (clean exit 0) and after SIGKILL, every pool and volume is
//! back at the same path with the same properties, a started volume still started. The
//! first GetManagedObjects after the name reappears already holds every object (the
//! name is requested only after all objects are exported).

mod common;

use common::oracle::managed_objects;
use common::{opts, opts_of, FsType, Harness, MIB};
use zbus::Variant;

/// Two pools (btrfs, ext4) with an origin holding revisions, a started volume, a
/// snapshot volume and a volatile one.
async fn populate(h: &mut Harness) {
    let btrfs = h.pool_on("fast", FsType::Btrfs, 256 * MIB).await;
    let ext4 = h.pool_on("slow", FsType::Ext4, 256 * MIB).await;
    let template = h
        .origin_volume(&btrfs, "vm-templates/fedora/root", 8 * MIB)
        .await;
    let t = h.volume(&template).await;
    t.start(opts()).await.unwrap();
    t.stop(opts()).await.unwrap();
    let snapshot = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("vm-templates/fedora/root")),
    ]);
    let root = h.create_volume(&btrfs, "appvms/work/root", snapshot).await;
    h.volume(&root).await.start(opts()).await.unwrap();
    let private = h.origin_volume(&ext4, "appvms/work/private", 4 * MIB).await;
    let p = h.volume(&private).await;
    p.set_revisions_to_keep(2).await.unwrap();
    p.start(opts()).await.unwrap();
    let volatile = opts_of([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
    h.create_volume(&ext4, "appvms/work/volatile", volatile)
        .await;
    h.pool(&ext4)
        .await
        .set_ephemeral_volatile(true)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_is_back_after_sigterm() {
    let mut h = Harness::start().await;
    populate(&mut h).await;
    let before = managed_objects(&h.conn).await;
    h.restart().await;
    let after = managed_objects(&h.conn).await;
    assert_eq!(before, after);
    assert!(after.len() >= 6, "{:?}", after.keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_is_back_after_sigkill() {
    let mut h = Harness::start().await;
    populate(&mut h).await;
    let before = managed_objects(&h.conn).await;
    h.kill_and_restart().await;
    let after = managed_objects(&h.conn).await;
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_started_before_a_restart_stops_with_a_commit_after_it() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let path = h.origin_volume(&pool, "appvms/work/private", 4 * MIB).await;
    h.volume(&path).await.start(opts()).await.unwrap();
    h.kill_and_restart().await;
    let v = h.volume(&path).await;
    assert!(v.started().await.unwrap());
    v.stop(opts()).await.unwrap();
    assert!(!v.started().await.unwrap());
    assert_eq!(v.revisions().await.unwrap().len(), 1);
}

/// A snapshot volume's session that was never stopped is not picked up after a kill
/// (R§3.7: it starts afresh), unless its image is still held open (a VM may still run
/// on it): then Start returns it as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_started_before_a_kill_starts_afresh_after_it_unless_held() {
    use std::os::unix::fs::FileExt;
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    h.origin_volume(&pool, "vm-templates/t/root", 4 * MIB).await;
    let snapshot = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("vm-templates/t/root")),
    ]);
    let root = h.create_volume(&pool, "appvms/work/root", snapshot).await;
    let image = h.volume(&root).await.start(opts()).await.unwrap();
    let session = |path: &str| {
        let file = std::fs::File::open(path).unwrap();
        let mut buf = [0u8; 7];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    };
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    held.write_all_at(b"session", 0).unwrap();
    h.kill_and_restart().await;
    let v = h.volume(&root).await;
    assert!(v.started().await.unwrap());
    assert_eq!(v.start(opts()).await.unwrap(), image);
    assert_eq!(&session(&image), b"session", "held: kept");
    drop(held);
    assert_eq!(v.start(opts()).await.unwrap(), image);
    assert_eq!(
        session(&image),
        [0u8; 7],
        "nobody holds it: a fresh snapshot"
    );
    v.stop(opts()).await.unwrap();
    assert!(!v.started().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_releases_the_name() {
    let mut h = Harness::start().await;
    h.stop_daemon();
    let dbus = zbus::fdo::DBusProxy::new(&h.conn).await.unwrap();
    let name = zbus::names::BusName::try_from(common::SERVICE).unwrap();
    assert!(!dbus.name_has_owner(name).await.unwrap());
    assert!(h.log().contains("stopped"), "{}", h.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_bus_flag_the_system_bus_address_from_the_environment_is_served() {
    let bus = common::TestBus::permissive();
    let conn = bus.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = common::start_daemon(
        &bus,
        &conn,
        &dir.path().join("state"),
        &log,
        common::BusArg::SystemBusEnv,
    )
    .await;
    let manager = common::ManagerProxy::new(&conn).await.unwrap();
    assert!(manager.list_pools(opts()).await.unwrap().is_empty());
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_announces_nothing_its_objects_are_served_before_the_name() {
    let mut h = Harness::start().await;
    populate(&mut h).await;
    let before = managed_objects(&h.conn).await;
    h.stop_daemon();
    // Every InterfacesAdded on the bus, from anyone.
    let watcher = h.bus.connect().await;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .member("InterfacesAdded")
        .build()
        .unwrap();
    let mut added = zbus::MessageStream::for_match_rule(rule, &watcher, None)
        .await
        .unwrap();
    h.start_daemon().await;
    // The reply to this call comes after any signal the service sent before it.
    assert_eq!(managed_objects(&watcher).await, before);
    let early = futures_util::FutureExt::now_or_never(futures_util::StreamExt::next(&mut added));
    assert!(
        early.is_none(),
        "the restarted service announced objects: {early:?}"
    );
}
