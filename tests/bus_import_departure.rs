//! An import belongs to the caller that opened it. A client that disconnects between
//! ImportData and ImportDataEnd (a crashed `qubes-storage volume import`, a killed
//! script) must not leave the volume Busy until a restart: the service discards the
//! import as ImportDataEnd(false) would and announces it.

mod common;

use std::io::Write;

use common::{assert_error, opts, FsType, Harness, VolumeProxy, MIB};
use futures_util::StreamExt;

const PRIVATE: &str = "appvms/work/private";

/// Waits for `future`, failing the test (not hanging it) if the service never answers.
async fn within_deadline<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(30), future)
        .await
        .expect("the service did not announce the discarded import in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_whose_client_disconnects_is_discarded_and_announced() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let path = h.origin_volume(&pool, PRIVATE, 4 * MIB).await;
    let watcher = h.volume(&path).await;
    let mut imported = watcher.receive_volume_imported().await.unwrap();

    // Another client opens an import, writes into it, and goes away.
    let client = h.bus.connect().await;
    let theirs = VolumeProxy::builder(&client)
        .path(path.clone())
        .build()
        .await
        .unwrap();
    let fd = theirs
        .import_data(MIB, common::shrink_ok())
        .await
        .expect("ImportData");
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    file.write_all(&[9u8; 4096]).unwrap();
    assert_error(watcher.start(opts()).await, "Busy");
    drop(theirs);
    drop(client);

    let signal = within_deadline(imported.next())
        .await
        .expect("VolumeImported");
    assert!(
        !signal.args().unwrap().success,
        "the abandoned import is not committed"
    );
    watcher
        .start(opts())
        .await
        .expect("the volume is free again");
    let dir = h.pool(&pool).await.dir_path().await.unwrap();
    let import_file = std::path::Path::new(&dir).join("appvms/work/private-import.img");
    assert!(!import_file.exists(), "the import file is gone");
}

/// A client of its own that opens an import on `path`, then can leave.
async fn importing_client(h: &Harness, path: &zbus::OwnedObjectPath) -> zbus::Connection {
    let client = h.bus.connect().await;
    let proxy = VolumeProxy::builder(&client)
        .path(path.clone())
        .build()
        .await
        .unwrap();
    let fd = proxy
        .import_data(MIB, common::shrink_ok())
        .await
        .expect("ImportData");
    drop(fd);
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn another_client_leaving_does_not_touch_an_import() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let path = h.origin_volume(&pool, PRIVATE, 4 * MIB).await;
    let sentinel_path = h
        .origin_volume(&pool, "appvms/other/private", 4 * MIB)
        .await;
    let importer = h.volume(&path).await;
    let fd = importer
        .import_data(MIB, common::shrink_ok())
        .await
        .expect("ImportData");
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    file.write_all(&[5u8; 4096]).unwrap();
    drop(file);

    // A bystander (which opened nothing) leaves, then a sentinel that has an import of
    // its own. Departures are handled in order, so once the sentinel's import is
    // discarded, the bystander's departure has been handled too.
    let bystander = h.bus.connect().await;
    let sentinel = importing_client(&h, &sentinel_path).await;
    let mut sentinel_imported = h
        .volume(&sentinel_path)
        .await
        .receive_volume_imported()
        .await
        .unwrap();
    drop(bystander);
    drop(sentinel);
    let signal = within_deadline(sentinel_imported.next())
        .await
        .expect("VolumeImported");
    assert!(!signal.args().unwrap().success);

    importer
        .import_data_end(true, opts())
        .await
        .expect("the importer still owns its import");
    let exported = importer.export(opts()).await.unwrap();
    let mut head = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::from(std::os::fd::OwnedFd::from(exported)),
        &mut head,
        0,
    )
    .unwrap();
    assert_eq!(head, [5u8; 4], "the importer's data was committed");
}

/// Whether the volume is free of imports: a Start is not refused as Busy. (A started
/// volume is stopped again.)
async fn free_of_imports(volume: &VolumeProxy<'_>) -> bool {
    match volume.start(opts()).await {
        Ok(_) => {
            volume.stop(opts()).await.expect("Stop");
            true
        }
        Err(err) => {
            assert_eq!(
                common::error_name(&err),
                "org.qubes.Storage.Error.Busy",
                "{err}"
            );
            false
        }
    }
}

/// A client that sends ImportData and leaves at once may be gone before its import is
/// recorded — then no departure is left to discard it. Whatever the order, the volume
/// must never stay Busy: the service checks, once the import is recorded, that its
/// caller is still on the bus. Many rounds, each racing the departure against the
/// recording.
#[tokio::test(flavor = "multi_thread")]
async fn an_importer_that_leaves_while_its_import_is_recorded_leaves_nothing_busy() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let path = h.origin_volume(&pool, PRIVATE, MIB).await;
    let watcher = h.volume(&path).await;
    let mut imported = watcher.receive_volume_imported().await.unwrap();
    for round in 0..50 {
        let client = h.bus.connect().await;
        let call = zbus::Message::method_call(path.as_str(), "ImportData")
            .destination(common::SERVICE)
            .interface("org.qubes.Storage.Volume")
            .build(&(MIB, opts()))
            .unwrap();
        client.send(&call).await.unwrap();
        client.close().await.unwrap();
        // The import was refused (the caller had gone), or recorded and then discarded.
        if !free_of_imports(&watcher).await {
            let signal = within_deadline(imported.next())
                .await
                .expect("VolumeImported");
            assert!(!signal.args().unwrap().success, "round {round}");
            assert!(free_of_imports(&watcher).await, "round {round}: still Busy");
        }
    }
}
