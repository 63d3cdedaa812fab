//! The signal oracle: every signal of the service during a long, varied session is
//! recorded and replayed onto the first GetManagedObjects; the result must equal the
//! last GetManagedObjects — and that must equal what a freshly restarted service (which
//! reads everything from disk again) reports, so the announced state is the real one
//! (but for the revisions' measured bytes, which a restart forgets). The domain signals
//! must also tell every revision's details (descriptions and pins).
//! Every snapshot lists objects with their interfaces only: no entry without one (a
//! bare parent node such as `/org/qubes/Storage/pools`) is allowed.

mod common;

use common::oracle::{
    assert_every_entry_has_an_interface, assert_replay_matches,
    assert_revision_details_follow_the_signals, managed_objects, revision_details,
    without_measurements, Recorder,
};
use common::{opts, opts_of, FsType, Harness, VolumeProxy, MIB};
use std::io::Write;
use zbus::{OwnedObjectPath, Variant};

async fn import(volume: &VolumeProxy<'_>, byte: u8, len: u64) {
    let fd = volume.import_data(len, common::shrink_ok()).await.unwrap();
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    file.write_all(&vec![byte; len as usize]).unwrap();
    drop(file);
    volume.import_data_end(true, opts()).await.unwrap();
}

/// A VM's volumes in `pool`: template root, snapshot root, private, volatile.
async fn vm(h: &Harness, pool: &OwnedObjectPath) -> [OwnedObjectPath; 4] {
    let template = h
        .origin_volume(pool, "vm-templates/fedora/root", 8 * MIB)
        .await;
    let snapshot = opts_of([
        ("snap_on_start", Variant::from(true)),
        ("source", Variant::from("vm-templates/fedora/root")),
    ]);
    let root = h.create_volume(pool, "appvms/work/root", snapshot).await;
    let private = h.origin_volume(pool, "appvms/work/private", 4 * MIB).await;
    let volatile = opts_of([
        ("size", Variant::from(2 * MIB)),
        ("rw", Variant::from(true)),
    ]);
    let volatile = h
        .create_volume(pool, "appvms/work/volatile", volatile)
        .await;
    [template, root, private, volatile]
}

/// Lifecycle: starts, commits, an outdated snapshot, a revert, resizes, prunes.
async fn lifecycle(h: &Harness, [template, root, private, volatile]: &[OwnedObjectPath; 4]) {
    let (t, r, p, v) = (
        h.volume(template).await,
        h.volume(root).await,
        h.volume(private).await,
        h.volume(volatile).await,
    );
    import(&t, 1, 8 * MIB).await;
    for volume in [&r, &p, &v] {
        volume.start(opts()).await.unwrap();
    }
    t.start(opts()).await.unwrap();
    t.stop(opts()).await.unwrap();
    p.resize(6 * MIB, opts()).await.unwrap();
    v.resize(3 * MIB, opts()).await.unwrap();
    assert!(p.remove(opts()).await.is_err(), "Busy while started");
    assert!(p.set_rw(false).await.is_err(), "Busy while started");
    for volume in [&r, &p, &v] {
        volume.stop(opts()).await.unwrap();
    }
    p.set_revisions_to_keep(2).await.unwrap();
    for byte in [2, 3, 4] {
        import(&p, byte, 4 * MIB).await;
    }
    p.revert("", opts()).await.unwrap();
    p.resize(2 * MIB, opts_of([("allow_shrink", Variant::from(true))]))
        .await
        .unwrap();
    let fd = p.import_data(MIB, common::shrink_ok()).await.unwrap();
    drop(fd);
    p.import_data_end(false, opts()).await.unwrap();
    v.set_ephemeral(true).await.unwrap();
    t.set_revisions_to_keep(-1).await.unwrap();
    t.start(opts()).await.unwrap();
    t.stop(opts()).await.unwrap();
}

/// Revisions described, pinned, measured, compared and reverted to (issue 13).
async fn revision_details_and_space(
    h: &Harness,
    pool: &OwnedObjectPath,
    [_, _, private, _]: &[OwnedObjectPath; 4],
) {
    let p = h.volume(private).await;
    let described = opts_of([
        ("description", Variant::from("known good")),
        ("pinned", Variant::from(true)),
    ]);
    p.set_revision_details("", described, opts()).await.unwrap();
    let pinned = p.revisions().await.unwrap().last().unwrap().0.clone();
    let dirty = p.start(opts()).await.unwrap();
    std::fs::write(&dirty, vec![9u8; 2 * MIB as usize]).unwrap();
    let keep = opts_of([("revision_description", Variant::from("before the session"))]);
    p.stop(keep).await.unwrap();
    p.measure_space(opts()).await.unwrap();
    h.pool(pool).await.measure_space(opts()).await.unwrap();
    let (fd, _, ranges) = p.export_delta("", opts()).await.unwrap();
    drop(fd);
    assert!(!ranges.is_empty());
    p.revert(&pinned, opts()).await.unwrap();
    let unpin = opts_of([("pinned", Variant::from(false))]);
    p.set_revision_details(&pinned, unpin, opts())
        .await
        .unwrap();
    let details = revision_details(
        &common::oracle::managed_objects(&h.conn).await,
        private.as_str(),
    )
    .unwrap();
    assert!(details.iter().any(|d| d.3 == "known good"), "{details:?}");
}

/// Leaves the snapshot root running while its source commits: IsOutdated of a volume
/// no call touched must still be announced.
async fn outdate_a_running_snapshot(h: &Harness, [template, root, ..]: &[OwnedObjectPath; 4]) {
    let (t, r) = (h.volume(template).await, h.volume(root).await);
    t.set_revisions_to_keep(1).await.unwrap();
    r.start(opts()).await.unwrap();
    t.start(opts()).await.unwrap();
    t.stop(opts()).await.unwrap();
    assert!(r.is_outdated().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_signals_match_the_final_state_and_the_state_on_disk() {
    let mut h = Harness::start().await;
    let fast = h.pool_on("fast", FsType::Btrfs, 512 * MIB).await;
    let slow_dir = h.mount(FsType::Ext4, 512 * MIB).join("slow");
    let mut recorder = Recorder::start(&h.conn).await;
    recorder.flush().await;
    let first = managed_objects(&h.conn).await;
    assert_every_entry_has_an_interface(&first);
    assert!(
        first.contains_key(fast.as_str()),
        "the first snapshot lists the pool"
    );

    let slow_options = opts_of([
        ("dir_path", Variant::from(slow_dir.to_str().unwrap())),
        ("setup_check", Variant::from(false)),
        ("ephemeral_volatile", Variant::from(true)),
    ]);
    let slow = h
        .manager()
        .await
        .create_pool("slow", "file-reflink", slow_options)
        .await
        .unwrap();
    let volumes = vm(&h, &fast).await;
    lifecycle(&h, &volumes).await;
    revision_details_and_space(&h, &fast, &volumes).await;
    let clone = h.origin_volume(&slow, "appvms/clone/private", MIB).await;
    h.volume(&clone)
        .await
        .import_volume(&volumes[0].as_ref(), opts())
        .await
        .unwrap();
    h.pool(&fast).await.set_revisions_to_keep(3).await.unwrap();
    h.pool(&slow)
        .await
        .set_ephemeral_volatile(false)
        .await
        .unwrap();
    h.volume(&volumes[3]).await.remove(opts()).await.unwrap();
    let nested = opts_of([(
        "dir_path",
        Variant::from(format!("{}/nested", slow_dir.display())),
    )]);
    let manager = h.manager().await;
    manager
        .create_pool(
            "nested",
            "file-reflink",
            opts_of(
                nested
                    .into_iter()
                    .chain([("setup_check", Variant::from(false))]),
            ),
        )
        .await
        .unwrap();
    manager.remove_pool("nested", opts()).await.unwrap();
    h.volume(&volumes[2]).await.start(opts()).await.unwrap();
    outdate_a_running_snapshot(&h, &volumes).await;

    recorder.flush().await;
    let last = managed_objects(&h.conn).await;
    assert_every_entry_has_an_interface(&last);
    let signals = recorder.signals();
    assert!(
        signals.len() > 50,
        "only {} signals recorded",
        signals.len()
    );
    assert!(
        signals.iter().any(|m| m
            .header()
            .path()
            .is_some_and(|p| p.as_str().starts_with("/org/qubes/Storage/jobs/"))),
        "the session copied bytes (ext4 pool) but no Job appeared"
    );
    assert_replay_matches(&first, &signals, &last);
    assert_revision_details_follow_the_signals(&first, &signals, &last);
    assert!(
        signals.iter().any(|m| m
            .header()
            .member()
            .is_some_and(|n| n.as_str() == "RevisionDetailsSet")),
        "the session described revisions"
    );

    drop(recorder);
    h.restart().await;
    let reread = managed_objects(&h.conn).await;
    assert_eq!(
        without_measurements(last),
        reread,
        "the announced state differs from what the service reads from disk"
    );
}
