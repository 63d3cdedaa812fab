//! Engine scenarios on real loop-mounted btrfs, XFS and ext4: every volume kind, the
//! reference's behaviour statements (R§7) restated for the engine, and each deliberate
//! fix of the contract. Every scenario runs on each filesystem (ext4 pools use
//! setup_check=false, so every snapshot there is the hole-preserving copy). The fixture
//! and the file helpers are shared with `reference_scenarios.rs` (`scenario_support`).

mod common_fs;
mod scenario_support;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common_fs::{FsType, LoopFs, MIB};
use qubes_storage_engine::{
    Engine, ErrorKind, EventKind, OpCtx, PoolName, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};
use scenario_support::{
    exists, files_in, is_all_zero, on_every_fs, pool_spec, read_at, write_at, Fixture,
};

/// The helpers of these scenarios beside the shared ones.
impl Fixture {
    /// A template `vm-templates/t/root` of `size` holding "template" (committed), and a
    /// VM `work`'s snapshot root of it and volatile volume, all halted.
    fn template_and_vm(&self, size: u64) -> (VolumeRef, VolumeRef, VolumeRef) {
        let template = self.origin("vm-templates/t/root", size, 1);
        self.session(&template, 0, b"template");
        let root = self.snapshot("appvms/work/root", &template);
        let volatile = self.volatile("appvms/work/volatile", size);
        (template, root, volatile)
    }

    /// A snap_on_start volume of `source`.
    fn snapshot(&self, vid: &str, source: &VolumeRef) -> VolumeRef {
        self.create(
            vid,
            VolumeSpec {
                snap_on_start: true,
                source: Some(source.vid.clone()),
                ..Default::default()
            },
        )
    }

    /// An origin_snapshot volume (snap_on_start and save_on_stop) of `source`.
    fn origin_snapshot(&self, vid: &str, source: &VolumeRef, rtk: i64) -> VolumeRef {
        self.create(
            vid,
            VolumeSpec {
                rw: true,
                snap_on_start: true,
                save_on_stop: true,
                source: Some(source.vid.clone()),
                revisions_to_keep: Some(RevisionsToKeep::new(rtk).unwrap()),
                ..Default::default()
            },
        )
    }

    /// A read-write volatile volume.
    fn volatile(&self, vid: &str, size: u64) -> VolumeRef {
        self.create(
            vid,
            VolumeSpec {
                size,
                rw: true,
                ..Default::default()
            },
        )
    }

    /// The content of a revision file, `len` bytes from 0.
    fn revision_content(
        &self,
        v: &VolumeRef,
        r: qubes_storage_engine::Revision,
        len: usize,
    ) -> Vec<u8> {
        read_at(&self.revision_path(v, r), 0, len)
    }

    /// The file of a revision.
    fn revision_path(&self, v: &VolumeRef, r: qubes_storage_engine::Revision) -> PathBuf {
        let name =
            qubes_storage_engine::layout::revision_file_name(v.vid.name(), r.id, r.timestamp);
        self.dir.join(v.vid.vm_dir()).join(name)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn revision_ids(&self, v: &VolumeRef) -> Vec<u64> {
        self.engine
            .volume_info(v)
            .unwrap()
            .revisions
            .iter()
            .map(|r| r.id)
            .collect()
    }
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

on_every_fs!(
    create_origin_makes_sparse_clean_and_precache_with_its_mtime,
    origin_session_commits_and_keeps_previous_state_as_revision,
    revisions_are_pruned_to_revisions_to_keep_by_numeric_id,
    revert_consumes_target_and_keeps_current_as_revision,
    revert_to_empty_restores_the_pristine_image,
    revert_is_refused_while_started_or_without_target,
    snapshots_disabled_volume_writes_into_the_committed_inode,
    snapshot_volume_starts_from_source_and_detects_outdated,
    volatile_volume_is_empty_each_start_and_keeps_a_manual_resize,
    a_snapshot_or_volatile_left_started_starts_afresh_unless_someone_holds_it,
    measuring_the_pool_never_holds_a_running_image_a_start_probes,
    origin_snapshot_commits_its_session_as_a_revision,
    a_snapshots_disabled_start_never_writes_into_another_volumes_revision,
    halted_resize_makes_a_new_inode_and_leaves_revisions,
    halted_resize_grows_in_place_what_nothing_else_holds,
    start_from_a_reflinked_precache_waits_for_no_barrier,
    snapshot_and_volatile_starts_wait_for_no_barrier,
    snapshot_and_volatile_stops_wait_for_a_barrier_only_without_a_boot_mark,
    resizing_a_template_while_its_snapshot_runs_makes_a_new_inode,
    shrinking_needs_allow_shrink_and_read_only_cannot_resize,
    export_stays_consistent_while_a_commit_replaces_the_image,
    import_data_commits_the_import_file_and_keeps_old_as_revision,
    import_data_end_without_import_changes_nothing,
    imports_are_refused_while_started_and_start_while_importing,
    import_volume_clones_and_takes_the_source_size,
    remove_deletes_every_file_and_is_refused_while_started,
    cleanup_of_temp_files_never_touches_a_sibling,
    stray_revision_name_is_ignored,
    state_survives_reopen_and_started_volume_stays_started,
    create_refuses_existing_files_and_adopt_registers_them,
    symlinked_vm_directory_is_refused,
    verify_checks_the_image_the_next_start_needs,
    stop_is_idempotent_and_never_started_volume_stops,
    volumes_of_one_vm_start_in_parallel,
    export_of_a_snapshots_disabled_volume_is_a_private_snapshot,
    origin_snapshot_keeps_its_last_session_when_it_starts_again,
    revert_with_snapshots_disabled_keeps_the_current_state,
    an_import_in_progress_keeps_every_other_change_out,
    adopting_committed_data_needs_save_on_stop,
    one_directory_cannot_be_two_pools,
    snapshots_cannot_be_toggled_while_a_consumer_runs,
    an_import_abandoned_by_its_owner_is_discarded_and_others_are_not,
    a_stop_never_commits_a_running_image_a_loop_device_still_writes,
);

/// A stop never commits a running image that a loop device still writes (the VM not
/// gone, its block device not detached): the device would go on writing into the
/// committed image, and through its hard links into the revision the next stop keeps
/// and into clones. It refuses (Busy) and changes nothing; once the device is
/// detached the stop commits — a reader (a backup) holding the image does not count.
fn a_stop_never_commits_a_running_image_a_loop_device_still_writes(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 4 * MIB, 1);
    f.session(&v, 0, b"first...");
    let revisions = f.revision_ids(&v);
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"second..");
    let device = common_fs::LoopDevice::attach(&dirty);
    let refused = f
        .engine
        .stop(&v, &OpCtx::quiet("Stop"))
        .expect_err("a stop while the loop device is attached");
    assert_eq!(refused.kind(), ErrorKind::Busy);
    let said = refused.to_string();
    assert!(
        said.contains("appvms/work/private") && said.contains("still open for writing"),
        "{said}"
    );
    assert!(exists(&dirty), "the session left its running image");
    assert!(f.engine.volume_info(&v).unwrap().started);
    assert_eq!(f.revision_ids(&v), revisions, "a revision was made");
    let clean = f.dir.join("appvms/work/private.img");
    assert_eq!(
        read_at(&clean, 0, 8),
        b"first...",
        "the session was committed"
    );
    // A device detached while the stop waits (a VM's block device going a moment after
    // the VM): the stop commits, with a reader (a backup) still holding the image.
    let backup = File::open(&dirty).unwrap();
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let (f, v) = (&f, &v);
        s.spawn(move || {
            let result = f.engine.stop(v, &OpCtx::quiet("Stop"));
            done.send(result.map_err(|e| e.to_string())).unwrap();
        });
        assert!(
            stopped
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the stop went on while the device was attached"
        );
        drop(device);
        let result = stopped
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the stop did not end");
        result.expect("the stop after the device was detached");
    });
    f.engine.settle();
    assert_eq!(read_at(&clean, 0, 8), b"second..");
    drop(backup);
}

fn create_origin_makes_sparse_clean_and_precache_with_its_mtime(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 64 * MIB, 1);
    let clean = f.path("appvms/work/private.img");
    let precache = f.path("appvms/work/private-precache.img");
    let meta = fs::metadata(&clean).unwrap();
    assert_eq!(meta.len(), 64 * MIB);
    assert_eq!(meta.blocks(), 0, "a new image is sparse");
    assert_eq!(meta.mode() & 0o777, 0o600);
    let pre = fs::metadata(&precache).unwrap();
    assert_ne!(pre.ino(), meta.ino());
    assert_eq!(
        (pre.mtime(), pre.mtime_nsec()),
        (meta.mtime(), meta.mtime_nsec())
    );
    let info = f.engine.volume_info(&v).unwrap();
    assert_eq!(
        (info.size, info.started, info.is_dirty),
        (64 * MIB, false, false)
    );
    assert!(info.revisions.is_empty());
    assert_eq!(
        info.block_device_path,
        f.path("appvms/work/private-dirty.img")
    );
}

fn origin_session_commits_and_keeps_previous_state_as_revision(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 1);
    let ctx = OpCtx::quiet("Start");
    let dirty = f.engine.start(&v, &ctx).unwrap();
    assert_eq!(
        ctx.take_events()
            .into_iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>(),
        vec![EventKind::Started {
            block_device_path: dirty.display().to_string()
        }]
    );
    assert!(
        !exists(&f.path("appvms/work/private-precache.img")),
        "start consumes the precache"
    );
    let info = f.engine.volume_info(&v).unwrap();
    assert!(info.started && info.is_dirty);
    write_at(&dirty, 3 * MIB, b"session data");
    let ctx = OpCtx::quiet("Stop");
    f.engine.stop(&v, &ctx).unwrap();
    let kinds: Vec<_> = ctx.take_events().into_iter().map(|e| e.kind).collect();
    assert!(
        matches!(kinds[0], EventKind::RevisionAdded { id: 1, .. }),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&EventKind::Stopped { committed: true }));
    assert_eq!(
        read_at(&f.path("appvms/work/private.img"), 3 * MIB, 12),
        b"session data"
    );
    assert!(!exists(&dirty));
    f.engine.settle(); // on a pool with reflinks the precache is made after the reply
    assert!(
        exists(&f.path("appvms/work/private-precache.img")),
        "commit prepares the next start"
    );
    let info = f.engine.volume_info(&v).unwrap();
    assert_eq!(info.revisions.len(), 1);
    assert!(f
        .revision_content(&v, info.revisions[0], MIB as usize)
        .iter()
        .all(|&b| b == 0));
}

fn revisions_are_pruned_to_revisions_to_keep_by_numeric_id(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    for i in 0..4u8 {
        f.session(&v, 0, &[i + 1]);
    }
    assert_eq!(f.revision_ids(&v), vec![3, 4]);
    // Lowering revisions_to_keep prunes only at the next commit.
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::new(1).unwrap())
        .unwrap();
    assert_eq!(f.revision_ids(&v), vec![3, 4]);
    let ctx = OpCtx::quiet("Stop");
    f.start(&v);
    f.engine.stop(&v, &ctx).unwrap();
    let pruned: Vec<u64> = ctx
        .take_events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::RevisionPruned { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(pruned, vec![3, 4]);
    assert_eq!(f.revision_ids(&v), vec![5]);
}

fn revert_consumes_target_and_keeps_current_as_revision(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    f.session(&v, 0, b"A");
    f.session(&v, 0, b"B");
    assert_eq!(f.revision_ids(&v), vec![1, 2]); // 1 = empty, 2 = A
    let ctx = OpCtx::quiet("Revert");
    f.engine.revert(&v, None, &ctx).unwrap();
    let kinds: Vec<_> = ctx.take_events().into_iter().map(|e| e.kind).collect();
    assert!(
        matches!(kinds[0], EventKind::RevisionAdded { id: 3, .. }),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&EventKind::Reverted { id: 2 }));
    assert_eq!(read_at(&f.path("appvms/work/private.img"), 0, 1), b"A");
    assert_eq!(
        f.revision_ids(&v),
        vec![1, 3],
        "target consumed, B kept as the newest"
    );
    // The revert itself is undoable.
    f.engine
        .revert(&v, Some(3), &OpCtx::quiet("Revert"))
        .unwrap();
    assert_eq!(read_at(&f.path("appvms/work/private.img"), 0, 1), b"B");
    // The precache matches the reverted image, so the next start sees it.
    let dirty = f.start(&v);
    assert_eq!(read_at(&dirty, 0, 1), b"B");
}

fn revert_to_empty_restores_the_pristine_image(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 2 * MIB, 3);
    f.session(&v, MIB, b"data");
    f.engine
        .revert(&v, Some(1), &OpCtx::quiet("Revert"))
        .unwrap();
    assert!(is_all_zero(&f.path("appvms/work/private.img")));
}

fn revert_is_refused_while_started_or_without_target(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    let err = f
        .engine
        .revert(&v, None, &OpCtx::quiet("Revert"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("appvms/work/private"), "{err}");
    f.session(&v, 0, b"A");
    let dir = f.path("appvms/work");
    let before = files_in(&dir);
    let err = f
        .engine
        .revert(&v, Some(42), &OpCtx::quiet("Revert"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(files_in(&dir), before, "a refused revert changes nothing");
    f.start(&v);
    let started = files_in(&dir);
    let err = f
        .engine
        .revert(&v, Some(1), &OpCtx::quiet("Revert"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    assert_eq!(files_in(&dir), started, "a refused revert changes nothing");
    f.stop(&v);
    assert_eq!(f.revision_ids(&v), vec![1, 2]);
}

fn snapshots_disabled_volume_writes_into_the_committed_inode(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, -1);
    let clean = f.path("appvms/work/private.img");
    assert!(exists(&clean));
    assert!(!exists(&f.path("appvms/work/private-precache.img")));
    let inode = ino(&clean);
    let dirty = f.start(&v);
    assert_eq!(dirty, f.path("appvms/work/private-dirty.img"));
    assert!(!exists(&clean));
    assert_eq!(
        ino(&dirty),
        inode,
        "no copy: the VM writes into the committed inode"
    );
    write_at(&dirty, 0, b"direct");
    f.stop(&v);
    assert_eq!(ino(&clean), inode);
    assert_eq!(read_at(&clean, 0, 6), b"direct");
    assert!(!exists(&dirty));
    assert!(f.revision_ids(&v).is_empty());
    assert!(f.engine.volume_info(&v).unwrap().snapshots_disabled);
    // Switching snapshots on or off is refused while started.
    f.start(&v);
    let err = f
        .engine
        .set_revisions_to_keep(&v, RevisionsToKeep::new(1).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    f.stop(&v);
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::new(1).unwrap())
        .unwrap();
}

fn snapshot_volume_starts_from_source_and_detects_outdated(t: FsType) {
    let f = Fixture::new(t);
    let root = f.origin("vm-templates/fedora/root", 4 * MIB, 1);
    f.session(&root, 0, b"template v1");
    let snap = f.snapshot("appvms/work/root", &root);
    assert!(
        !exists(&f.path("appvms/work/root.img")),
        "snapshot volumes have no files while halted"
    );
    let dirty = f.start(&snap);
    assert_eq!(read_at(&dirty, 0, 11), b"template v1");
    assert_eq!(
        ino(&f.path("appvms/work/root.img")),
        ino(&f.path("vm-templates/fedora/root.img"))
    );
    assert!(!f.engine.volume_info(&snap).unwrap().is_outdated);
    assert!(
        !f.engine.volume_info(&snap).unwrap().is_dirty,
        "snapshots are never dirty"
    );
    // The source commits while the snapshot runs: the snapshot is outdated, and does
    // not see the change.
    f.session(&root, 0, b"template v2");
    assert!(f.engine.volume_info(&snap).unwrap().is_outdated);
    assert_eq!(read_at(&dirty, 0, 11), b"template v1");
    write_at(&dirty, 0, b"scratch....");
    let ctx = OpCtx::quiet("Stop");
    f.engine.stop(&snap, &ctx).unwrap();
    assert_eq!(
        ctx.take_events().last().map(|e| e.kind.clone()),
        Some(EventKind::Stopped { committed: false })
    );
    assert!(!exists(&dirty) && !exists(&f.path("appvms/work/root.img")));
    let dirty = f.start(&snap);
    assert_eq!(
        read_at(&dirty, 0, 11),
        b"template v2",
        "the next start sees the new commit"
    );
    f.stop(&snap);
    // A source in use cannot be removed.
    let err = f
        .engine
        .remove_volume(&root, &OpCtx::quiet("Remove"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
}

fn volatile_volume_is_empty_each_start_and_keeps_a_manual_resize(t: FsType) {
    let f = Fixture::new(t);
    let v = f.volatile("appvms/work/volatile", 4 * MIB);
    assert!(!exists(&f.path("appvms/work/volatile.img")));
    let dirty = f.start(&v);
    let meta = fs::metadata(&dirty).unwrap();
    assert_eq!((meta.len(), meta.blocks()), (4 * MIB, 0));
    write_at(&dirty, MIB, b"swap");
    f.engine
        .resize(&v, 8 * MIB, false, &OpCtx::quiet("Resize"))
        .unwrap();
    f.stop(&v);
    assert!(!exists(&dirty));
    assert!(f.revision_ids(&v).is_empty());
    let dirty = f.start(&v);
    assert!(is_all_zero(&dirty));
    assert_eq!(fs::metadata(&dirty).unwrap().len(), 8 * MIB);
    f.stop(&v);
    assert_eq!(f.engine.volume_info(&v).unwrap().size, 8 * MIB);
}

/// R§3.7: only a save_on_stop volume picks up a session that was never stopped (a power
/// cut, a killed VM). A snapshot or volatile volume starts afresh — an AppVM's root
/// never keeps a crashed session's changes — unless its running image is held (a loop
/// device attached to it: a VM may be running on it), which a second Start never pulls
/// from under it.
fn a_snapshot_or_volatile_left_started_starts_afresh_unless_someone_holds_it(t: FsType) {
    let f = Fixture::new(t);
    let (_template, root, volatile) = f.template_and_vm(4 * MIB);
    let private = f.origin("appvms/work/private", 4 * MIB, 1);
    let dirties: Vec<PathBuf> = [&root, &volatile, &private]
        .iter()
        .map(|v| f.start(v))
        .collect();
    for dirty in &dirties {
        write_at(dirty, 0, b"session.");
    }
    // A VM still runs on the root and the volatile image: a second Start keeps them.
    let held_root = common_fs::LoopDevice::attach(&dirties[0]);
    let held_volatile = File::options()
        .read(true)
        .write(true)
        .open(&dirties[1])
        .unwrap();
    let inodes: Vec<u64> = dirties.iter().map(|d| ino(d)).collect();
    for (v, dirty) in [&root, &volatile, &private].iter().zip(&dirties) {
        assert_eq!(&f.start(v), dirty);
        assert_eq!(read_at(dirty, 0, 8), b"session.", "{}", dirty.display());
    }
    assert_eq!(dirties.iter().map(|d| ino(d)).collect::<Vec<_>>(), inodes);
    // Nobody holds them any more (the session ended without a stop).
    drop(held_root);
    drop(held_volatile);
    for v in [&root, &volatile, &private] {
        f.start(v);
    }
    assert_eq!(
        read_at(&dirties[0], 0, 8),
        b"template",
        "the root starts afresh"
    );
    assert_ne!(ino(&dirties[0]), inodes[0]);
    assert!(is_all_zero(&dirties[1]), "the volatile image starts empty");
    assert_eq!(
        read_at(&dirties[2], 0, 8),
        b"session.",
        "the private image picks up its session (R§3.7 C)"
    );
    assert_eq!(ino(&dirties[2]), inodes[2]);
    f.engine.settle();
    assert_eq!(
        files_in(&f.path("appvms/work")),
        vec![
            "private-dirty.img",
            "private.img",
            "root-dirty.img",
            "root.img",
            "volatile-dirty.img"
        ],
        "the replaced images are gone"
    );
    // Each carries the boot it was made in; one made in an earlier boot (a power cut
    // may have left anything) starts afresh even if something holds it now (a backup
    // reading the pool, say), and its size is never kept as the nominal size.
    use qubes_storage_engine::running::MADE_IN_BOOT;
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(
        xattr(&dirties[0], MADE_IN_BOOT).as_deref(),
        Some(this_boot.trim().as_bytes())
    );
    for dirty in &dirties[..2] {
        write_at(dirty, 0, b"session.");
        set_xattr(dirty, MADE_IN_BOOT, b"an earlier boot");
    }
    File::options()
        .write(true)
        .open(&dirties[1])
        .unwrap()
        .set_len(MIB)
        .unwrap();
    let _reader = File::open(&dirties[0]).unwrap();
    f.start(&root);
    assert_eq!(
        read_at(&dirties[0], 0, 8),
        b"template",
        "earlier boot: afresh"
    );
    f.stop(&volatile);
    assert_eq!(
        f.engine.volume_info(&volatile).unwrap().size,
        4 * MIB,
        "an earlier boot's size is not a manual resize"
    );
    let dirty = f.start(&volatile);
    File::options()
        .write(true)
        .open(&dirty)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    f.stop(&volatile);
    assert_eq!(
        f.engine.volume_info(&volatile).unwrap().size,
        8 * MIB,
        "this boot's manual resize is kept"
    );
}

/// MeasurePool opens every file of the pool to map its extents. A Start of a snapshot
/// found started asks whether anybody holds its running image open (a VM on a loop
/// device) and keeps it if so: it must never see the measurement's own descriptor.
/// While the measurement has the running image open (the progress it reports while
/// mapping it), a Start of that volume must wait for it — here, with no patience, be
/// refused as busy — rather than run and keep the image.
fn measuring_the_pool_never_holds_a_running_image_a_start_probes(t: FsType) {
    use std::sync::{mpsc, Arc, Mutex};

    /// Reports each progress tick while the root's running image is open, and waits
    /// for the test's answer before the measurement goes on.
    struct WhileOpen {
        vm_dir: PathBuf,
        ask: Mutex<mpsc::Sender<()>>,
        answered: Mutex<mpsc::Receiver<()>>,
    }
    impl qubes_storage_engine::ProgressSink for WhileOpen {
        fn copy_advanced(&self, _done: u64) {
            let dir = qubes_storage_engine::dir::Dir::open_path(&self.vm_dir).unwrap();
            if qubes_storage_engine::running::in_use(&dir, "root-dirty.img") {
                self.ask.lock().unwrap().send(()).unwrap();
                self.answered.lock().unwrap().recv().unwrap();
            }
        }
    }

    let f = Fixture::new(t);
    let (_template, root, _volatile) = f.template_and_vm(1 << 30);
    let dirty = f.start(&root);
    write_at(&dirty, 0, b"session.");
    let (ask, asked) = mpsc::channel();
    let (answer, answered) = mpsc::channel();
    let sink = WhileOpen {
        vm_dir: f.path("appvms/work"),
        ask: Mutex::new(ask),
        answered: Mutex::new(answered),
    };
    let measuring = OpCtx::new(
        "MeasurePool",
        Arc::new(sink),
        qubes_storage_engine::CancelToken::new(),
    );
    let mut starts = Vec::new();
    // A child process of another test between its fork and its exec holds every
    // descriptor of this process — the measurement's too, after the measurement closed
    // it — and the probe would see it: no child starts meanwhile.
    let no_children = common_fs::no_children();
    std::thread::scope(|scope| {
        let (engine, pool) = (&f.engine, &f.pool);
        // The measuring context (and with it the sink's sender) ends with the thread.
        let measure = scope.spawn(move || engine.measure_pool(pool, &measuring));
        while asked.recv().is_ok() {
            let hasty = OpCtx::quiet("Start").with_patience(std::time::Duration::ZERO);
            starts.push(f.engine.start(&root, &hasty).map(|_| ()));
            answer.send(()).unwrap();
        }
        measure.join().unwrap().expect("measure the pool");
    });
    drop(no_children);
    assert!(
        !starts.is_empty(),
        "the measurement never had the image open"
    );
    for start in &starts {
        let err = start
            .as_ref()
            .expect_err("a Start ran while the image was open");
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    }
    assert_eq!(
        read_at(&dirty, 0, 8),
        b"session.",
        "nothing started meanwhile"
    );
    // Once the measurement is over, nobody holds it: a Start makes it afresh.
    f.start(&root);
    assert_eq!(read_at(&dirty, 0, 8), b"template");
}

fn origin_snapshot_commits_its_session_as_a_revision(t: FsType) {
    let f = Fixture::new(t);
    let src = f.origin("vm-templates/t/private", MIB, 1);
    f.session(&src, 0, b"S");
    let v = f.origin_snapshot("appvms/a/private", &src, 2);
    let dirty = f.start(&v);
    assert_eq!(read_at(&dirty, 0, 1), b"S");
    write_at(&dirty, 0, b"X");
    f.stop(&v);
    assert_eq!(read_at(&f.path("appvms/a/private.img"), 0, 1), b"X");
    assert_eq!(f.revision_ids(&v), vec![1]);
    assert_eq!(
        read_at(&f.path("vm-templates/t/private.img"), 0, 1),
        b"S",
        "the source is untouched"
    );
}

/// An origin_snapshot volume's committed session keeps its predecessor — a link of its
/// source's committed image — as a revision. A source with snapshots disabled (halted,
/// past its first start, which copies) must then not hand its VM that inode to write
/// into: the VM gets a copy and the other volume's revision never changes.
fn a_snapshots_disabled_start_never_writes_into_another_volumes_revision(t: FsType) {
    let f = Fixture::new(t);
    let src = f.origin("vm-templates/t/private", MIB, 1);
    f.session(&src, 0, b"S");
    f.engine
        .set_revisions_to_keep(&src, RevisionsToKeep::new(-1).unwrap())
        .unwrap();
    f.session(&src, 1, b"s");
    let child = f.origin_snapshot("appvms/a/private", &src, 2);
    let dirty = f.start(&child);
    write_at(&dirty, 0, b"X");
    f.stop(&child);
    let src_clean = f.path("vm-templates/t/private.img");
    let revision = f.engine.volume_info(&child).unwrap().revisions[0];
    let revision = f.revision_path(&child, revision);
    assert_eq!(
        ino(&revision),
        ino(&src_clean),
        "the revision is a link of the source"
    );
    let dirty = f.start(&src);
    assert_ne!(ino(&dirty), ino(&revision), "the VM writes into a copy");
    write_at(&dirty, 0, b"W");
    f.stop(&src);
    assert_eq!(read_at(&src_clean, 0, 2), b"Ws");
    assert_eq!(
        read_at(&revision, 0, 2),
        b"Ss",
        "the other volume's revision"
    );
}

fn halted_resize_makes_a_new_inode_and_leaves_revisions(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 2 * MIB, 1);
    f.session(&v, 0, b"keep");
    let clean = f.path("appvms/work/private.img");
    let before = ino(&clean);
    let exported = f.engine.export(&v, &OpCtx::quiet("Export")).unwrap();
    let ctx = OpCtx::quiet("Resize");
    f.engine.resize(&v, 6 * MIB, false, &ctx).unwrap();
    assert_eq!(
        ctx.take_events().last().map(|e| e.kind.clone()),
        Some(EventKind::Resized {
            old_size: 2 * MIB,
            new_size: 6 * MIB
        })
    );
    assert_ne!(ino(&clean), before);
    assert_eq!(fs::metadata(&clean).unwrap().len(), 6 * MIB);
    assert_eq!(read_at(&clean, 0, 4), b"keep");
    assert_eq!(
        exported.metadata().unwrap().len(),
        2 * MIB,
        "an exported reader keeps its image"
    );
    assert_eq!(f.revision_ids(&v), vec![1]);
    let dirty = f.start(&v);
    assert_eq!(
        fs::metadata(&dirty).unwrap().len(),
        6 * MIB,
        "the precache was refreshed"
    );
}

/// Without an exported reader, a revision or a snapshot sharing the committed inode, a
/// growth truncates it in place: same inode, same data, a hole at the end; the
/// revisions (other inodes) keep their size, and the precache follows the new size.
fn halted_resize_grows_in_place_what_nothing_else_holds(t: FsType) {
    let f = Fixture::new(t);
    // From the first start (whose session's witness a child forked by another test
    // could hold until its exec) to the probe of who holds the image.
    let no_children = common_fs::no_children();
    let v = f.origin("appvms/work/private", 2 * MIB, 1);
    f.session(&v, 0, b"first");
    f.session(&v, 0, b"keep!");
    let clean = f.path("appvms/work/private.img");
    let before = ino(&clean);
    let revision = f.engine.volume_info(&v).unwrap().revisions[0];
    assert_eq!(revision.id, 2);
    let revision = f.revision_path(&v, revision);
    let revision_ino = ino(&revision);
    let ctx = OpCtx::quiet("Resize");
    f.engine.resize(&v, 6 * MIB, false, &ctx).unwrap();
    drop(no_children);
    assert_eq!(ino(&clean), before, "grown in place");
    assert_eq!(fs::metadata(&clean).unwrap().len(), 6 * MIB);
    assert_eq!(read_at(&clean, 0, 5), b"keep!");
    assert!(
        read_at(&clean, 2 * MIB, (4 * MIB) as usize)
            .iter()
            .all(|&b| b == 0),
        "the new end of the image reads as zeros"
    );
    assert_eq!(f.engine.volume_info(&v).unwrap().size, 6 * MIB);
    assert_eq!(
        (ino(&revision), fs::metadata(&revision).unwrap().len()),
        (revision_ino, 2 * MIB),
        "the revision is another inode, untouched"
    );
    assert_eq!(read_at(&revision, 0, 5), b"first");
    let dirty = f.start(&v);
    assert_eq!(
        fs::metadata(&dirty).unwrap().len(),
        6 * MIB,
        "no stale precache"
    );
    assert_eq!(read_at(&dirty, 0, 5), b"keep!");
}

/// The barriers `op` waited for on this thread.
fn barriers_of<T>(op: impl FnOnce() -> T) -> (qubes_storage_engine::barrier::Counts, T) {
    use qubes_storage_engine::barrier;
    let before = barrier::thread_counts();
    let out = op();
    (barrier::thread_counts().since(&before), out)
}

fn total(c: &qubes_storage_engine::barrier::Counts) -> u64 {
    c.fsync + c.fdatasync + c.dir_fsync + c.syncfs + c.joined
}

/// docs/durability.md rule 8: the precache made after a commit on btrfs and XFS is a
/// reflink marked with its own and the committed image's identity (inode number and
/// birth time), and a start from it waits for no barrier. A precache without the mark
/// (ext4's byte copy), with a mark that names other inodes, or a byte copy that carries
/// the original's mark (a restored pool) keeps the start's directory fsync. Either way
/// the VM gets the committed data.
/// docs/durability.md rule 9: a snapshot's or a volatile volume's running image is
/// never used after a power cut (the next start makes a fresh one), so their start
/// waits for no barrier on any filesystem; an origin_snapshot, whose session is picked
/// up after one, keeps its barriers.
fn snapshot_and_volatile_starts_wait_for_no_barrier(t: FsType) {
    let f = Fixture::new(t);
    let (template, root, volatile) = f.template_and_vm(2 * MIB);
    let keeper = f.origin_snapshot("appvms/work/private", &template, 1);
    let engine = &f.engine;
    let start = |v: &VolumeRef| {
        let v = v.clone();
        move || engine.start(&v, &OpCtx::quiet("Start")).unwrap()
    };
    // The VM directory's first creation is durable (mkdir-parent), whoever makes it.
    start(&keeper)();
    f.stop(&keeper);
    let (barriers, dirty) = barriers_of(start(&root));
    assert_eq!(total(&barriers), 0, "snapshot: {barriers:?}");
    assert_eq!(read_at(&dirty, 0, 8), b"template");
    let (barriers, dirty) = barriers_of(start(&volatile));
    assert_eq!(total(&barriers), 0, "volatile: {barriers:?}");
    assert!(is_all_zero(&dirty));
    let (barriers, dirty) = barriers_of(start(&keeper));
    assert!(barriers.dir_fsync >= 1, "origin_snapshot: {barriers:?}");
    assert_eq!(read_at(&dirty, 0, 8), b"template");
}

/// docs/durability.md rule 9: a snapshot's or a volatile volume's stop waits for no
/// barrier when its running image carries a boot mark (after a power cut the start-up
/// sweep stops what the power cut brought back). An image without the mark (the
/// reference driver's, an older release's) would come back started: its stop makes
/// its discards durable with the directory's fsync.
fn snapshot_and_volatile_stops_wait_for_a_barrier_only_without_a_boot_mark(t: FsType) {
    use qubes_storage_engine::running::MADE_IN_BOOT;
    let f = Fixture::new(t);
    let (_template, root, volatile) = f.template_and_vm(2 * MIB);
    for unmarked in [false, true] {
        for v in [&root, &volatile] {
            let dirty = f.start(v);
            if unmarked {
                let file = File::open(&dirty).unwrap();
                qubes_storage_engine::sys::remove_xattr(&file, MADE_IN_BOOT).unwrap();
            }
            let stop = || f.engine.stop(v, &OpCtx::quiet("Stop")).unwrap();
            let (barriers, ()) = barriers_of(stop);
            let expected = if unmarked { 1 } else { 0 };
            assert_eq!(
                barriers.dir_fsync, expected,
                "{} unmarked {unmarked}: {barriers:?}",
                v.vid
            );
            assert_eq!(total(&barriers), expected, "{barriers:?}");
            assert!(!dirty.exists(), "{} unmarked {unmarked}", v.vid);
            f.engine.settle();
        }
    }
}

fn start_from_a_reflinked_precache_waits_for_no_barrier(t: FsType) {
    use qubes_storage_engine::precache::REFLINK_OF;
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 2 * MIB, 1);
    f.session(&v, 0, b"session one");
    let clean = f.path("appvms/work/private.img");
    let precache = f.path("appvms/work/private-precache.img");
    let mark = xattr(&precache, REFLINK_OF);
    let reflinks = t.has_reflink();
    let expected = format!("{}@", ino(&clean));
    assert_eq!(
        mark.as_ref().map(|m| m.starts_with(expected.as_bytes())),
        reflinks.then_some(true),
        "the precache is marked with the committed image where it is a reflink: {mark:?}"
    );
    let start = || f.engine.start(&v, &OpCtx::quiet("Start")).unwrap();
    let (barriers, dirty) = barriers_of(start);
    let expected = if reflinks { 0 } else { 1 };
    assert_eq!(total(&barriers), expected, "{barriers:?}");
    assert_eq!(read_at(&dirty, 0, 11), b"session one");
    f.engine.settle();
    f.stop(&v);
    if !reflinks {
        return;
    }
    // A mark that names other inodes does not count.
    set_xattr(&precache, REFLINK_OF, b"1@1.000000000 2@2.000000000");
    let (barriers, dirty) = barriers_of(start);
    assert_eq!(barriers.dir_fsync, 1, "{barriers:?}");
    assert_eq!(read_at(&dirty, 0, 11), b"session one");
    f.engine.settle();
    f.stop(&v);

    // A byte copy of the precache with its mark and times (as `cp -a` or a restore
    // from backup makes it) is another inode, born later: not a reflink, the barrier
    // stays.
    let mark = xattr(&precache, REFLINK_OF).expect("a fresh mark after the stop");
    let copy = f.path("appvms/work/copy-of-precache");
    fs::copy(&precache, &copy).unwrap();
    let meta = fs::metadata(&precache).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&copy).unwrap();
    qubes_storage_engine::sys::set_times(&file, (meta.mtime(), meta.mtime_nsec())).unwrap();
    drop(file);
    set_xattr(&copy, REFLINK_OF, &mark);
    fs::rename(&copy, &precache).unwrap();
    let (barriers, dirty) = barriers_of(start);
    assert_eq!(barriers.dir_fsync, 1, "{barriers:?}");
    assert_eq!(read_at(&dirty, 0, 11), b"session one");
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let file = File::open(path).unwrap();
    qubes_storage_engine::sys::get_xattr(&file, name).unwrap()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let file = File::open(path).unwrap();
    qubes_storage_engine::sys::set_xattr(&file, name, value).unwrap();
}

/// A running snapshot holds a link to its template's committed inode (what it started
/// from, and how it knows it is outdated): the template's resize makes a new inode.
fn resizing_a_template_while_its_snapshot_runs_makes_a_new_inode(t: FsType) {
    let f = Fixture::new(t);
    let root = f.origin("vm-templates/fedora/root", 2 * MIB, 1);
    f.session(&root, 0, b"template");
    let snap = f.snapshot("appvms/work/root", &root);
    let dirty = f.start(&snap);
    let clean = f.path("vm-templates/fedora/root.img");
    let before = ino(&clean);
    f.engine
        .resize(&root, 4 * MIB, false, &OpCtx::quiet("Resize"))
        .unwrap();
    assert_ne!(ino(&clean), before);
    assert_eq!(fs::metadata(&clean).unwrap().len(), 4 * MIB);
    assert_eq!(
        fs::metadata(f.path("appvms/work/root.img")).unwrap().len(),
        2 * MIB,
        "the snapshot's link keeps what it started from"
    );
    assert_eq!(fs::metadata(&dirty).unwrap().len(), 2 * MIB);
    assert!(f.engine.volume_info(&snap).unwrap().is_outdated);
}

fn shrinking_needs_allow_shrink_and_read_only_cannot_resize(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 4 * MIB, 1);
    let err = f
        .engine
        .resize(&v, MIB, false, &OpCtx::quiet("Resize"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("allow_shrink"), "{err}");
    assert_eq!(f.engine.volume_info(&v).unwrap().size, 4 * MIB);
    f.engine
        .resize(&v, MIB, true, &OpCtx::quiet("Resize"))
        .unwrap();
    assert_eq!(f.engine.volume_info(&v).unwrap().size, MIB);
    let ro = f.create(
        "appvms/work/ro",
        VolumeSpec {
            size: MIB,
            save_on_stop: true,
            ..Default::default()
        },
    );
    let err = f
        .engine
        .resize(&ro, 2 * MIB, false, &OpCtx::quiet("Resize"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("read-only"), "{err}");
    // A size beyond what the filesystem holds (ext4: 16 TiB) is the caller's mistake,
    // and changes nothing; btrfs and XFS hold it (a sparse image).
    let huge = 1 << 62;
    match f.engine.resize(&v, huge, false, &OpCtx::quiet("Resize")) {
        Ok(()) => assert_ne!(t, FsType::Ext4),
        Err(err) => {
            assert_eq!(t, FsType::Ext4, "{err}");
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.to_string().contains("too large"), "{err}");
            assert_eq!(f.engine.volume_info(&v).unwrap().size, MIB);
            let import = f
                .engine
                .import_data(&v, huge, false, &OpCtx::quiet("ImportData"));
            let err = import.expect_err("an import file ext4 cannot hold");
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
    }
}

fn export_stays_consistent_while_a_commit_replaces_the_image(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    f.session(&v, 0, b"old");
    let mut exported = f.engine.export(&v, &OpCtx::quiet("Export")).unwrap();
    f.session(&v, 0, b"new");
    let mut buf = [0u8; 3];
    exported.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"old");
    assert_eq!(read_at(&f.path("appvms/work/private.img"), 0, 3), b"new");
    let vol = f.volatile("appvms/work/volatile", MIB);
    assert_eq!(
        f.engine
            .export(&vol, &OpCtx::quiet("Export"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotSupported
    );
}

fn import_data_commits_the_import_file_and_keeps_old_as_revision(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    let mut w = f
        .engine
        .import_data(&v, 3 * MIB, false, &OpCtx::quiet("ImportData"))
        .unwrap();
    let import = f.path("appvms/work/private-import.img");
    assert_eq!(fs::metadata(&import).unwrap().len(), 3 * MIB);
    w.seek(SeekFrom::Start(2 * MIB)).unwrap();
    w.write_all(b"imported").unwrap();
    drop(w);
    let ctx = OpCtx::quiet("ImportDataEnd");
    f.engine.import_data_end(&v, true, &ctx).unwrap();
    assert_eq!(
        ctx.take_events().last().map(|e| e.kind.clone()),
        Some(EventKind::Imported { success: true })
    );
    assert!(!exists(&import));
    let clean = f.path("appvms/work/private.img");
    assert_eq!(read_at(&clean, 2 * MIB, 8), b"imported");
    assert_eq!(f.engine.volume_info(&v).unwrap().size, 3 * MIB);
    assert_eq!(
        f.revision_ids(&v),
        vec![1],
        "the empty image before the import is revertible"
    );
    // A failed import changes nothing.
    let _w = f
        .engine
        .import_data(&v, MIB, true, &OpCtx::quiet("ImportData"))
        .unwrap();
    f.engine
        .import_data_end(&v, false, &OpCtx::quiet("ImportDataEnd"))
        .unwrap();
    assert!(!exists(&import));
    assert_eq!(read_at(&clean, 2 * MIB, 8), b"imported");
    assert_eq!(f.revision_ids(&v), vec![1]);
}

fn import_data_end_without_import_changes_nothing(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    let before = files_in(&f.path("appvms/work"));
    let err = f
        .engine
        .import_data_end(&v, true, &OpCtx::quiet("ImportDataEnd"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        files_in(&f.path("appvms/work")),
        before,
        "no revision was added (fix 8)"
    );
}

fn imports_are_refused_while_started_and_start_while_importing(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    let other = f.origin("appvms/other/private", MIB, 1);
    f.start(&v);
    let e1 = f
        .engine
        .import_data(&v, MIB, false, &OpCtx::quiet("ImportData"))
        .unwrap_err();
    let e2 = f
        .engine
        .import_volume(&v, &other, &OpCtx::quiet("ImportVolume"))
        .unwrap_err();
    assert_eq!((e1.kind(), e2.kind()), (ErrorKind::Busy, ErrorKind::Busy));
    assert!(!exists(&f.path("appvms/work/private-import.img")));
    f.stop(&v);
    let _w = f
        .engine
        .import_data(&v, MIB, false, &OpCtx::quiet("ImportData"))
        .unwrap();
    let err = f.engine.start(&v, &OpCtx::quiet("Start")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    f.engine
        .import_data_end(&v, false, &OpCtx::quiet("ImportDataEnd"))
        .unwrap();
    f.start(&v);
    // Also a started volume that is not save_on_stop (fix 1 applies to every kind).
    let scratch = f.volatile("appvms/work/volatile", MIB);
    f.start(&scratch);
    let err = f
        .engine
        .import_volume(&scratch, &other, &OpCtx::quiet("ImportVolume"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
}

fn import_volume_clones_and_takes_the_source_size(t: FsType) {
    let f = Fixture::new(t);
    let src = f.origin("appvms/a/private", 8 * MIB, 1);
    f.session(&src, 5 * MIB, b"source data");
    let dst = f.origin("appvms/b/private", 4 * MIB, 1);
    let ctx = OpCtx::quiet("ImportVolume");
    f.engine.import_volume(&dst, &src, &ctx).unwrap();
    let clean = f.path("appvms/b/private.img");
    assert_eq!(
        fs::metadata(&clean).unwrap().len(),
        8 * MIB,
        "R§7.4 test_005_size_after_clone"
    );
    assert_eq!(read_at(&clean, 5 * MIB, 11), b"source data");
    // Within one filesystem the clone is the source's committed image itself, a hard
    // link as a revision is: nothing is copied, and neither volume ever writes it.
    let source_clean = f.path("appvms/a/private.img");
    assert_eq!(ino(&clean), ino(&source_clean), "a hard link");
    assert_eq!(f.revision_ids(&dst), vec![1]);
    assert!(
        fs::metadata(&clean).unwrap().blocks() * 512 < 4 * MIB,
        "holes are preserved"
    );
    // A source with nothing committed is named with its pool.
    let volatile = f.volatile("appvms/a/volatile", MIB);
    let refused = f.engine.import_volume(&dst, &volatile, &ctx).unwrap_err();
    assert!(
        refused.to_string().contains(&format!(
            "source volume appvms/a/volatile in pool {}",
            f.pool
        )),
        "{refused}"
    );
    f.session(&src, 5 * MIB, b"source next");
    assert_eq!(
        read_at(&clean, 5 * MIB, 11),
        b"source data",
        "the source's commit"
    );
    f.session(&dst, 5 * MIB, b"clone's own");
    assert_eq!(read_at(&clean, 5 * MIB, 11), b"clone's own");
    assert_eq!(
        read_at(&source_clean, 5 * MIB, 11),
        b"source next",
        "the clone's commit"
    );
    // A clone with snapshots disabled, whose VM writes into its committed image in
    // place, gets an inode of its own (an export of the source may still read the
    // source's), and the source's stays as it is.
    let in_place = f.origin("appvms/e/private", 8 * MIB, -1);
    f.engine.import_volume(&in_place, &src, &ctx).unwrap();
    assert_ne!(ino(&f.path("appvms/e/private.img")), ino(&source_clean));
    f.session(&in_place, 5 * MIB, b"written in!");
    assert_eq!(read_at(&source_clean, 5 * MIB, 11), b"source next");
    assert_eq!(
        read_at(&f.path("appvms/e/private.img"), 5 * MIB, 11),
        b"written in!"
    );
    // A growth in place of one never grows the other's image (it has two names).
    let again = f.origin("appvms/d/private", 8 * MIB, 1);
    f.engine.import_volume(&again, &dst, &ctx).unwrap();
    let ctx_resize = OpCtx::quiet("Resize");
    f.engine
        .resize(&again, 9 * MIB, false, &ctx_resize)
        .unwrap();
    assert_eq!(
        fs::metadata(&clean).unwrap().len(),
        8 * MIB,
        "the source keeps its size"
    );
    assert_eq!(
        fs::metadata(f.path("appvms/d/private.img")).unwrap().len(),
        9 * MIB
    );
    // Into another pool on another filesystem: the hole-preserving copy.
    let other = LoopFs::new(FsType::Ext4, 128 * MIB);
    let p2 = PoolName::parse("other").unwrap();
    f.engine
        .create_pool(pool_spec(&p2, &other.path().join("pool"), false))
        .unwrap();
    let far = VolumeRef {
        pool: p2.clone(),
        vid: Vid::parse("appvms/c/private").unwrap(),
    };
    f.engine
        .create_volume(
            &far,
            VolumeSpec {
                size: MIB,
                rw: true,
                save_on_stop: true,
                ..Default::default()
            },
            &OpCtx::quiet("CreateVolume"),
        )
        .unwrap();
    f.engine
        .import_volume(&far, &src, &OpCtx::quiet("ImportVolume"))
        .unwrap();
    let far_clean = other.path().join("pool/appvms/c/private.img");
    assert_eq!(read_at(&far_clean, 5 * MIB, 11), b"source next");
    assert!(
        fs::metadata(&far_clean).unwrap().blocks() * 512 <= MIB,
        "the copy keeps holes"
    );
    // Removing the far volume and pool before the mount goes away: not the pool first.
    let refused = f.engine.remove_pool(&p2).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Busy);
    assert!(
        refused
            .to_string()
            .contains("the pool still holds 1 volume; remove it first"),
        "{refused}"
    );
    f.engine
        .remove_volume(&far, &OpCtx::quiet("Remove"))
        .unwrap();
    f.engine.remove_pool(&p2).unwrap();
}

fn remove_deletes_every_file_and_is_refused_while_started(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    f.session(&v, 0, b"x");
    f.start(&v);
    let err = f
        .engine
        .remove_volume(&v, &OpCtx::quiet("Remove"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy);
    f.stop(&v);
    f.engine.remove_volume(&v, &OpCtx::quiet("Remove")).unwrap();
    assert!(
        !exists(&f.path("appvms/work")),
        "the empty VM directory is removed"
    );
    assert_eq!(
        f.engine.volume_info(&v).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(f.engine.volume_vids(&f.pool).unwrap().is_empty());
}

fn cleanup_of_temp_files_never_touches_a_sibling(t: FsType) {
    let f = Fixture::new(t);
    let priv_ = f.origin("appvms/work/priv", MIB, 1);
    let _private = f.origin("appvms/work/private", MIB, 1);
    let own = f.path("appvms/work/priv-dirty.img~abcd1234");
    let sibling = f.path("appvms/work/private-dirty.img~abcd1234");
    let sibling2 = f.path("appvms/work/private.img~k3j_9x0q");
    for p in [&own, &sibling, &sibling2] {
        File::create(p).unwrap();
    }
    f.start(&priv_);
    assert!(!exists(&own));
    assert!(
        exists(&sibling) && exists(&sibling2),
        "fix 3: a sibling's temp files are not ours"
    );
}

fn stray_revision_name_is_ignored(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    File::create(f.path("appvms/work/private.img.x1@2024-01-01T00:00:00Z")).unwrap();
    File::create(f.path("appvms/work/private.img.7@2@24-01-01T00:00:00Z")).unwrap();
    f.session(&v, 0, b"a");
    f.session(&v, 0, b"b");
    assert_eq!(f.revision_ids(&v), vec![1, 2]);
    f.engine.revert(&v, None, &OpCtx::quiet("Revert")).unwrap();
    assert_eq!(read_at(&f.path("appvms/work/private.img"), 0, 1), b"a");
}

fn state_survives_reopen_and_started_volume_stays_started(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 2 * MIB, 3);
    f.engine
        .set_pool_revisions_to_keep(&f.pool, RevisionsToKeep::new(5).unwrap())
        .unwrap();
    f.session(&v, 0, b"committed");
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"in flight");
    let reopened = Engine::open(f.engine.state_dir()).unwrap();
    assert_eq!(
        reopened.pool_config(&f.pool).unwrap(),
        f.engine.pool_config(&f.pool).unwrap()
    );
    let info = reopened.volume_info(&v).unwrap();
    assert_eq!(info, f.engine.volume_info(&v).unwrap());
    assert!(info.started, "nothing is committed behind the user's back");
    assert_eq!(
        read_at(&f.path("appvms/work/private.img"), 0, 9),
        b"committed"
    );
    assert_eq!(read_at(&dirty, 0, 9), b"in flight");
    reopened.stop(&v, &OpCtx::quiet("Stop")).unwrap();
    assert_eq!(
        read_at(&f.path("appvms/work/private.img"), 0, 9),
        b"in flight"
    );
}

fn create_refuses_existing_files_and_adopt_registers_them(t: FsType) {
    let f = Fixture::new(t);
    // An existing Qubes pool's volume: clean image plus a revision, made by hand.
    fs::create_dir(f.path("appvms/old")).unwrap();
    fs::write(f.path("appvms/old/private.img"), vec![7u8; 4096]).unwrap();
    fs::write(
        f.path("appvms/old/private.img.4@2024-05-01T12:00:03Z"),
        vec![1u8; 4096],
    )
    .unwrap();
    let v = f.vref("appvms/old/private");
    let spec = VolumeSpec {
        size: MIB,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    };
    let err = f
        .engine
        .create_volume(&v, spec.clone(), &OpCtx::quiet("CreateVolume"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("adopt"), "{err}");
    assert_eq!(
        fs::read(f.path("appvms/old/private.img")).unwrap(),
        vec![7u8; 4096],
        "nothing deleted"
    );
    let info = f
        .engine
        .create_volume(
            &v,
            VolumeSpec {
                adopt: true,
                ..spec
            },
            &OpCtx::quiet("CreateVolume"),
        )
        .unwrap();
    assert_eq!(info.size, 4096, "size comes from the image file");
    assert_eq!(
        info.revisions
            .iter()
            .map(|r| (r.id, r.timestamp))
            .collect::<Vec<_>>(),
        vec![(4, 1_714_564_803)]
    );
    f.session(&v, 0, b"z");
    assert_eq!(
        f.revision_ids(&v),
        vec![5],
        "ids continue from the existing ones"
    );
    // Leftovers that hold no data (a create interrupted by a crash) are not in the way.
    fs::create_dir(f.path("appvms/crashed")).unwrap();
    let leftover = File::create(f.path("appvms/crashed/private.img")).unwrap();
    leftover.set_len(MIB).unwrap();
    let crashed = f.vref("appvms/crashed/private");
    let spec = VolumeSpec {
        size: 2 * MIB,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    };
    let info = f
        .engine
        .create_volume(&crashed, spec, &OpCtx::quiet("CreateVolume"))
        .unwrap();
    assert_eq!(info.size, 2 * MIB);
}

fn symlinked_vm_directory_is_refused(t: FsType) {
    let f = Fixture::new(t);
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), f.path("appvms/evil")).unwrap();
    let v = f.vref("appvms/evil/private");
    let spec = VolumeSpec {
        size: MIB,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    };
    let err = f
        .engine
        .create_volume(&v, spec, &OpCtx::quiet("CreateVolume"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        files_in(outside.path()).is_empty(),
        "nothing was written outside the pool"
    );
    assert!(f.engine.volume_vids(&f.pool).unwrap().is_empty());
}

fn verify_checks_the_image_the_next_start_needs(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("vm-templates/t/root", MIB, 1);
    let snap = f.snapshot("appvms/a/root", &v);
    f.engine.verify(&v).unwrap();
    f.engine.verify(&snap).unwrap();
    fs::remove_file(f.path("vm-templates/t/root.img")).unwrap();
    for vol in [&v, &snap] {
        let err = f.engine.verify(vol).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("root.img"), "{err}");
    }
}

fn stop_is_idempotent_and_never_started_volume_stops(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    let ctx = OpCtx::quiet("Stop");
    f.engine.stop(&v, &ctx).unwrap();
    assert!(ctx.take_events().is_empty());
    f.session(&v, 0, b"1");
    f.stop(&v);
    f.stop(&v);
    assert_eq!(f.revision_ids(&v), vec![1]);
    // Start is idempotent too: a started volume keeps its session.
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"2");
    assert_eq!(f.start(&v), dirty);
    assert_eq!(read_at(&dirty, 0, 1), b"2");
}

fn volumes_of_one_vm_start_in_parallel(t: FsType) {
    let f = Fixture::new(t);
    let tmpl = f.origin("vm-templates/t/root", 4 * MIB, 1);
    let vols = [
        f.snapshot("appvms/a/root", &tmpl),
        f.origin("appvms/a/private", 4 * MIB, 1),
        f.volatile("appvms/a/volatile", 4 * MIB),
    ];
    std::thread::scope(|s| {
        for v in &vols {
            let f = &f;
            s.spawn(move || f.start(v));
        }
    });
    for v in &vols {
        assert!(f.engine.volume_info(v).unwrap().started);
    }
    write_at(&f.path("appvms/a/private-dirty.img"), 0, b"session");
    // Stopped at once, their batches share the VM directory's fsync (barrier::expect):
    // each still commits its own change.
    std::thread::scope(|s| {
        for v in &vols {
            let f = &f;
            s.spawn(move || f.stop(v));
        }
    });
    for v in &vols {
        assert!(!f.engine.volume_info(v).unwrap().started);
    }
    assert_eq!(read_at(&f.path("appvms/a/private.img"), 0, 7), b"session");
    assert_eq!(f.revision_ids(&vols[1]), vec![1]);
    f.engine.settle();
    let left: Vec<String> = files_in(&f.path("appvms/a"))
        .into_iter()
        .filter(|name| !name.starts_with("private.img.1@"))
        .collect();
    assert_eq!(
        left,
        vec!["private-precache.img", "private.img"],
        "root and volatile leave nothing, the private image its revision and precache"
    );
}

fn export_of_a_snapshots_disabled_volume_is_a_private_snapshot(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, -1);
    f.session(&v, 0, b"committed");
    let mut exported = f.engine.export(&v, &OpCtx::quiet("Export")).unwrap();
    // The next start renames the committed inode into the VM's image: the export
    // must not see the VM's writes.
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"live data");
    let mut buf = [0u8; 9];
    exported.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"committed");
    assert_eq!(
        files_in(&f.path("appvms/work")),
        vec!["private-dirty.img"],
        "the snapshot has no name"
    );
}

fn origin_snapshot_keeps_its_last_session_when_it_starts_again(t: FsType) {
    let f = Fixture::new(t);
    let src = f.origin("vm-templates/t/private", MIB, 1);
    f.session(&src, 0, b"S");
    let v = f.origin_snapshot("appvms/a/private", &src, 3);
    f.session(&v, 0, b"X");
    f.start(&v);
    f.stop(&v);
    let info = f.engine.volume_info(&v).unwrap();
    let kept: Vec<Vec<u8>> = info
        .revisions
        .iter()
        .map(|&r| f.revision_content(&v, r, 1))
        .collect();
    assert!(
        kept.contains(&b"X".to_vec()),
        "the committed session X survives as a revision: {kept:?}"
    );
}

fn revert_with_snapshots_disabled_keeps_the_current_state(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    f.session(&v, 0, b"A");
    f.session(&v, 0, b"B");
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::DISABLED)
        .unwrap();
    f.engine
        .revert(&v, Some(2), &OpCtx::quiet("Revert"))
        .unwrap();
    assert_eq!(read_at(&f.path("appvms/work/private.img"), 0, 1), b"A");
    let newest = *f.engine.volume_info(&v).unwrap().revisions.last().unwrap();
    assert_eq!(
        f.revision_content(&v, newest, 1),
        b"B",
        "the state before the revert is a revision"
    );
}

fn an_import_in_progress_keeps_every_other_change_out(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    let other = f.origin("appvms/other/private", MIB, 1);
    f.session(&v, 0, b"A");
    let _w = f
        .engine
        .import_data(&v, MIB, false, &OpCtx::quiet("ImportData"))
        .unwrap();
    let import = f.path("appvms/work/private-import.img");
    let refusals = [
        f.engine.start(&v, &OpCtx::quiet("Start")).unwrap_err(),
        f.engine
            .revert(&v, None, &OpCtx::quiet("Revert"))
            .unwrap_err(),
        f.engine
            .resize(&v, 2 * MIB, false, &OpCtx::quiet("Resize"))
            .unwrap_err(),
        f.engine
            .remove_volume(&v, &OpCtx::quiet("Remove"))
            .unwrap_err(),
        f.engine
            .import_volume(&v, &other, &OpCtx::quiet("ImportVolume"))
            .unwrap_err(),
        f.engine
            .import_data(&v, MIB, false, &OpCtx::quiet("ImportData"))
            .unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
        assert!(err.to_string().contains("import is in progress"), "{err}");
    }
    assert!(exists(&import), "the importer's file is untouched");
    f.engine
        .import_data_end(&v, false, &OpCtx::quiet("ImportDataEnd"))
        .unwrap();
    f.engine.revert(&v, None, &OpCtx::quiet("Revert")).unwrap();
}

fn adopting_committed_data_needs_save_on_stop(t: FsType) {
    let f = Fixture::new(t);
    fs::create_dir(f.path("appvms/old")).unwrap();
    fs::write(f.path("appvms/old/root.img"), vec![7u8; 4096]).unwrap();
    let v = f.vref("appvms/old/root");
    let spec = VolumeSpec {
        size: MIB,
        rw: true,
        adopt: true,
        ..Default::default()
    };
    let err = f
        .engine
        .create_volume(&v, spec, &OpCtx::quiet("CreateVolume"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        fs::read(f.path("appvms/old/root.img")).unwrap(),
        vec![7u8; 4096]
    );
}

fn one_directory_cannot_be_two_pools(t: FsType) {
    let f = Fixture::new(t);
    let alias = f.path("../alias");
    std::os::unix::fs::symlink(&f.dir, &alias).unwrap();
    let name = PoolName::parse("again").unwrap();
    let err = f
        .engine
        .create_pool(pool_spec(&name, &alias, false))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(f.engine.pool_names(), vec![f.pool.clone()]);
}

fn snapshots_cannot_be_toggled_while_a_consumer_runs(t: FsType) {
    let f = Fixture::new(t);
    let root = f.origin("vm-templates/t/root", MIB, 1);
    let snap = f.snapshot("appvms/a/root", &root);
    f.start(&snap);
    let err = f
        .engine
        .set_revisions_to_keep(&root, RevisionsToKeep::DISABLED)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(err.to_string().contains("appvms/a/root"), "{err}");
    f.stop(&snap);
    f.engine
        .set_revisions_to_keep(&root, RevisionsToKeep::DISABLED)
        .unwrap();
}

fn an_import_abandoned_by_its_owner_is_discarded_and_others_are_not(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    f.session(&v, 0, b"kept");
    let ctx = OpCtx::quiet("ImportData").with_caller(":1.42");
    let _w = f.engine.import_data(&v, MIB, false, &ctx).unwrap();
    assert_eq!(f.engine.imports_of(":1.42"), vec![v.clone()]);
    assert!(f.engine.imports_of(":1.43").is_empty());
    // Someone else going away changes nothing.
    assert!(!f
        .engine
        .abandon_import(&v, ":1.43", &OpCtx::quiet("Abandon"))
        .unwrap());
    assert!(exists(&f.path("appvms/work/private-import.img")));
    let ctx = OpCtx::quiet("Abandon");
    assert!(f.engine.abandon_import(&v, ":1.42", &ctx).unwrap());
    let kinds: Vec<_> = ctx.take_events().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Imported { success: false }]);
    assert!(!exists(&f.path("appvms/work/private-import.img")));
    assert_eq!(read_at(&f.path("appvms/work/private.img"), 0, 4), b"kept");
    assert!(f.engine.imports_of(":1.42").is_empty());
    f.start(&v);
}

/// A clone of a volume with snapshots disabled reads the source's committed image,
/// which that volume's next start hands to its VM to write: the clone's private copy of
/// it (the export's) is made under the source's lock, so a Start of the source waits
/// for it — here, with no patience, is refused as busy — and the clone holds the
/// committed content, never the VM's. (On ext4 the copy is a byte copy that reports
/// progress, which is where the Start is tried.)
#[test]
fn a_clone_of_a_snapshots_disabled_volume_holds_off_its_start_while_it_copies() {
    use std::sync::{mpsc, Arc, Mutex};

    /// Asks the test to try a Start when the first copy (the export's) begins, and
    /// waits for its answer before the copy goes on.
    struct AtFirstCopy {
        ask: Mutex<Option<mpsc::Sender<()>>>,
        answered: Mutex<mpsc::Receiver<()>>,
    }
    impl qubes_storage_engine::ProgressSink for AtFirstCopy {
        fn copy_started(&self, _operation: &str, _total: u64) {
            if let Some(ask) = self.ask.lock().unwrap().take() {
                ask.send(()).unwrap();
                self.answered.lock().unwrap().recv().unwrap();
            }
        }
    }

    let f = Fixture::new(FsType::Ext4);
    let src = f.origin("appvms/a/private", 8 * MIB, 1);
    f.session(&src, 5 * MIB, b"committed");
    f.engine
        .set_revisions_to_keep(&src, RevisionsToKeep::DISABLED)
        .unwrap();
    let dst = f.origin("appvms/b/private", 8 * MIB, 1);
    let (ask, asked) = mpsc::channel();
    let (answer, answered) = mpsc::channel();
    let sink = AtFirstCopy {
        ask: Mutex::new(Some(ask)),
        answered: Mutex::new(answered),
    };
    let cloning = OpCtx::new(
        "ImportVolume",
        Arc::new(sink),
        qubes_storage_engine::CancelToken::new(),
    );
    let start = std::thread::scope(|scope| {
        let (engine, dst, src) = (&f.engine, &dst, &src);
        let clone = scope.spawn(move || engine.import_volume(dst, src, &cloning));
        asked.recv().expect("the clone copies the source's image");
        let hasty = OpCtx::quiet("Start").with_patience(std::time::Duration::ZERO);
        let start = f.engine.start(src, &hasty);
        if let Ok(dirty) = &start {
            write_at(dirty, 5 * MIB, b"VM writes");
        }
        answer.send(()).unwrap();
        clone.join().unwrap().expect("clone");
        start
    });
    let err = start.expect_err("the source started while the clone copied its image");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert_eq!(
        read_at(&f.path("appvms/b/private.img"), 5 * MIB, 9),
        b"committed"
    );
    // Once the clone is over, the source starts in place.
    f.start(&src);
}

/// A snap_on_start volume starts from its source's committed image: a source that does
/// not save on stop (a volatile volume, another snapshot) has none, and such a volume
/// was created only to fail at every start. CreateVolume refuses it, and a missing
/// source, registering nothing.
#[test]
fn a_snapshot_needs_a_source_that_saves_on_stop() {
    let f = Fixture::new(FsType::Ext4);
    let template = f.origin("vm-templates/t/root", 4 * MIB, 1);
    let volatile = f.volatile("appvms/work/volatile", 4 * MIB);
    let snapshot = f.snapshot("appvms/work/root", &template);
    let refuse = |vid: &str, source: &str| {
        let vol = f.vref(vid);
        let spec = VolumeSpec {
            snap_on_start: true,
            source: Some(Vid::parse(source).unwrap()),
            ..Default::default()
        };
        let err = f
            .engine
            .create_volume(&vol, spec, &OpCtx::quiet("CreateVolume"))
            .expect_err("a snapshot of a source without a committed image");
        assert!(f.engine.volume_info(&vol).is_err(), "{vid} was registered");
        err
    };
    for source in [&volatile, &snapshot] {
        let err = refuse("appvms/disp/root", &source.vid.to_string());
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let said = err.to_string();
        assert!(
            said.contains("appvms/disp/root")
                && said.contains(&source.vid.to_string())
                && said.contains("does not save on stop"),
            "{said}"
        );
    }
    let err = refuse("appvms/disp/root", "vm-templates/nope/root");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string()
            .contains("there is no volume vm-templates/nope/root"),
        "{err}"
    );
    // An origin_snapshot volume's committed image is one.
    f.snapshot(
        "appvms/disp/root",
        &f.origin_snapshot("appvms/os/private", &template, 1),
    );
}
