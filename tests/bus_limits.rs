//! No reply larger than the bus carries (contract rev 2). dbus-daemon disconnects a
//! sender whose message exceeds `max_message_size`: once that took the whole service
//! off the bus, with every call in flight, for a read any local user may make. Here the
//! test bus and the service are configured with a small limit, so a modest number of
//! volumes makes GetManagedObjects too large: it is refused with `LimitsExceeded`, and
//! the service keeps serving.

mod common;

use common::{opts, opts_of, FsType, Harness, MIB};
use zbus::Variant;

const LIMIT: usize = 128 * 1024;
/// Enough volumes (about 800 bytes each in GetManagedObjects) to pass [`LIMIT`].
const VOLUMES: usize = 250;

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_reply_is_refused_and_the_service_stays_on_the_bus() {
    let mut h = Harness::start_with_message_limit(LIMIT).await;
    let pool = h.pool_on("p", FsType::Btrfs, 512 * MIB).await;
    let proxy = h.pool(&pool).await;
    for n in 0..VOLUMES {
        let config = opts_of([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
        proxy
            .create_volume(&format!("appvms/vm{n:03}/volatile"), config, opts())
            .await
            .expect("CreateVolume");
    }
    let objects = zbus::fdo::ObjectManagerProxy::builder(&h.conn)
        .destination(common::SERVICE)
        .path("/org/qubes/Storage")
        .build()
        .await
        .unwrap();
    let Err(err) = objects.get_managed_objects().await else {
        panic!("GetManagedObjects of {VOLUMES} volumes fit in {LIMIT} bytes");
    };
    assert!(
        matches!(err, zbus::fdo::Error::LimitsExceeded(_)),
        "not LimitsExceeded: {err}"
    );
    assert!(err.to_string().contains("GetManagedObjects"), "{err}");
    // Still on the bus, still serving, and smaller replies still go out.
    let volumes = proxy.list_volumes(opts()).await.expect("ListVolumes");
    assert_eq!(volumes.len(), VOLUMES);
    assert!(h.daemon_mut().is_running(), "the service left");
}
