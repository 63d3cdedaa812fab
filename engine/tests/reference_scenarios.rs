//! The reference driver's own test scenarios (R§7) that `volumes.rs` does not restate,
//! run through the engine on real loop-mounted btrfs, XFS and ext4 (ext4 pools use
//! setup_check=false):
//!
//! * precache staleness (R§7.1 test_100/101/110/111): a precache whose mtime (ns) or
//!   size differs from the committed image is discarded by Start; without a committed
//!   image Start is `NotFound` and the precache stays; a matching one is renamed;
//! * is_outdated after the source reverts to an older revision of the same size
//!   (test_201, R§3.20: inode comparison, not mtime);
//! * Clear (admin test_810) and an import truncated to nothing (test_012);
//! * remove after a snapshots-disabled session (test_120);
//! * live resize of a started volume seen by its loop device (R§3.15);
//! * pool usage and included_in (R§3.22, R§3.23, test_006);
//! * CreatePool's reflink probe (R§3.1, §7.3);
//! * a read-only save_on_stop volume (integration test_002);
//! * a running snapshots-disabled source refusing snapshots, clones and exports
//!   (integration test_006).
//!
//! The fixture and the file helpers are shared with `volumes.rs` (`scenario_support`).
//!
//! Needs root (loop mounts).

mod common_fs;
mod scenario_support;

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common_fs::{FsType, Immutable, LoopDevice, LoopFs, MIB};
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    Engine, ErrorKind, OpCtx, PoolName, PoolSpec, Vid, VolumeRef, VolumeSpec,
};
use scenario_support::{
    exists, files_in, is_all_zero, on_every_fs, origin_spec, pool_spec, read_at, write_at, Fixture,
};

const VID: &str = "appvms/work/private";

/// The helpers of these scenarios beside the shared ones.
impl Fixture {
    /// Another pool of this engine at `<mount>/<rel>`.
    fn add_pool(&self, name: &str, rel: &str) -> PoolName {
        let name = PoolName::parse(name).unwrap();
        let dir = self.fs.path().join(rel);
        self.engine
            .create_pool(pool_spec(&name, &dir, self.fs.fs_type().has_reflink()))
            .unwrap();
        name
    }

    fn snapshot_of(&self, vid: &str, source: &VolumeRef) -> VolumeRef {
        let v = self.vref(vid);
        let spec = VolumeSpec {
            rw: true,
            snap_on_start: true,
            source: Some(source.vid.clone()),
            ..Default::default()
        };
        self.create_in(&v, spec);
        v
    }

    /// ImportData of `data.len()` bytes (whole sectors), write them, ImportDataEnd(true).
    fn import(&self, v: &VolumeRef, data: &[u8]) {
        let mut w = self
            .engine
            .import_data(v, data.len() as u64, false, &OpCtx::quiet("ImportData"))
            .unwrap();
        w.write_all(data).unwrap();
        w.sync_all().unwrap();
        drop(w);
        self.engine
            .import_data_end(v, true, &OpCtx::quiet("ImportDataEnd"))
            .unwrap();
        self.engine.settle();
    }

    /// The file of the newest revision of `vid`.
    fn newest_revision(&self, vid: &str) -> PathBuf {
        let info = self.engine.volume_info(&self.vref(vid)).unwrap();
        let r = info.revisions.last().expect("a revision");
        self.paths(vid).revision(r.id, r.timestamp)
    }
}

/// The reference's tests use 1-byte images; sizes are whole sectors since contract
/// rev 2, so these scenarios use one sector of `byte`.
const SECTOR: u64 = 512;

fn sector(byte: u8) -> Vec<u8> {
    vec![byte; SECTOR as usize]
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// Give `path` the mtime of `like` (to the nanosecond).
fn copy_mtime(like: &Path, path: &Path) {
    let mtime = fs::metadata(like).unwrap().modified().unwrap();
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.set_times(FileTimes::new().set_modified(mtime))
        .unwrap();
    file.sync_all().unwrap();
}

/// Give `path` the mtime of `like` moved by one nanosecond within the same second.
fn one_nanosecond_from(like: &Path, path: &Path) {
    let nanos = std::time::Duration::from_nanos(1);
    let mtime = fs::metadata(like).unwrap().modified().unwrap();
    let moved = if mtime_ns(like).1 > 0 {
        mtime - nanos
    } else {
        mtime + nanos
    };
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.set_times(FileTimes::new().set_modified(moved))
        .unwrap();
}

fn mtime_ns(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec())
}

on_every_fs!(
    matching_precache_becomes_the_started_image_by_rename,
    precache_of_an_older_commit_is_discarded_and_start_uses_clean,
    precache_of_another_size_is_discarded_even_with_clean_mtime,
    start_without_clean_is_not_found_and_keeps_the_precache,
    snapshot_is_outdated_after_source_reverts_to_older_same_size_revision,
    clear_commits_a_zero_image_and_keeps_the_old_data_revertible,
    import_truncated_to_nothing_commits_the_declared_size,
    snapshots_disabled_volume_stops_to_clean_only_and_removes_to_nothing,
    live_resize_grows_the_started_image_in_place_and_its_loop_device,
    pool_usage_is_reported_and_none_once_the_directory_is_gone,
    read_only_volume_starts_with_its_committed_content_and_keeps_it,
    running_snapshots_disabled_source_refuses_snapshot_clone_and_export,
);

// ---- R§7.1 test_100/101/110/111: precache staleness ----

/// test_100: after create and after an import, the precache matches clean (content,
/// size, mtime to the ns) and Start renames it: the started image is its inode.
fn matching_precache_becomes_the_started_image_by_rename(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, SECTOR, 1);
    let (clean, precache) = (f.paths(VID).clean(), f.paths(VID).precache());
    assert_eq!(fs::read(&precache).unwrap(), vec![0u8; SECTOR as usize]);
    f.import(&v, &sector(1));
    assert_eq!(fs::read(&clean).unwrap(), sector(1));
    assert_eq!(fs::read(&precache).unwrap(), sector(1));
    assert_eq!(mtime_ns(&precache), mtime_ns(&clean));
    let precache_ino = ino(&precache);
    let dirty = f.start(&v);
    assert_eq!(ino(&dirty), precache_ino, "the precache was renamed");
    assert_eq!(fs::read(&dirty).unwrap(), sector(1));
    assert!(!exists(&precache));
}

/// test_110: a precache left over from the previous commit (as if precache maintenance
/// had been bypassed), same size, its mtime one nanosecond off clean's: Start discards
/// it and copies clean.
fn precache_of_an_older_commit_is_discarded_and_start_uses_clean(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, SECTOR, 1);
    let (clean, precache) = (f.paths(VID).clean(), f.paths(VID).precache());
    let saved = f.paths(VID).dir().join("saved-precache");
    fs::hard_link(&precache, &saved).unwrap();
    f.import(&v, &sector(1));
    fs::rename(&saved, &precache).unwrap();
    assert_eq!(fs::read(&precache).unwrap(), vec![0u8; SECTOR as usize]);
    assert_eq!(fs::metadata(&precache).unwrap().len(), SECTOR, "same size");
    // Only the nanoseconds differ: within clean's second, one nanosecond apart.
    one_nanosecond_from(&clean, &precache);
    let (pre, cur) = (mtime_ns(&precache), mtime_ns(&clean));
    assert_eq!(pre.0, cur.0, "same second");
    assert_eq!(pre.1.abs_diff(cur.1), 1, "one nanosecond apart");
    // Held open so that its inode number cannot be reused by the started image.
    let stale = File::open(&precache).unwrap();
    let stale_ino = stale.metadata().unwrap().ino();
    let dirty = f.start(&v);
    assert_eq!(
        fs::read(&dirty).unwrap(),
        sector(1),
        "the started image is clean's"
    );
    assert_ne!(ino(&dirty), stale_ino);
    assert!(!exists(&precache), "the stale precache is deleted");
}

/// The size alone makes a precache stale: same mtime (ns) as clean, one sector longer.
fn precache_of_another_size_is_discarded_even_with_clean_mtime(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, SECTOR, 1);
    f.import(&v, &sector(1));
    let (clean, precache) = (f.paths(VID).clean(), f.paths(VID).precache());
    OpenOptions::new()
        .write(true)
        .open(&precache)
        .unwrap()
        .set_len(SECTOR + 1)
        .unwrap();
    copy_mtime(&clean, &precache);
    assert_eq!(mtime_ns(&precache), mtime_ns(&clean));
    // Held open so that its inode number cannot be reused by the started image.
    let stale = File::open(&precache).unwrap();
    let stale_ino = stale.metadata().unwrap().ino();
    let dirty = f.start(&v);
    assert_eq!(
        fs::read(&dirty).unwrap(),
        sector(1),
        "clean's size and content"
    );
    assert_ne!(ino(&dirty), stale_ino);
    assert!(!exists(&precache));
}

/// test_101/111: without clean, Start is `NotFound` naming the volume, nothing is
/// started and the precache stays — matching or stale.
fn start_without_clean_is_not_found_and_keeps_the_precache(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, SECTOR, 1);
    f.import(&v, &sector(1));
    let paths = f.paths(VID);
    fs::remove_file(paths.clean()).unwrap();
    let precache_ino = ino(&paths.precache());
    for case in ["matching precache", "stale precache"] {
        let err = f.engine.start(&v, &OpCtx::quiet("Start")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{case}: {err}");
        assert!(err.to_string().contains(VID), "{case}: {err}");
        assert!(!exists(&paths.dirty()), "{case}: not started");
        assert_eq!(
            ino(&paths.precache()),
            precache_ino,
            "{case}: precache kept"
        );
        assert_eq!(fs::read(paths.precache()).unwrap(), sector(1));
        // Make it stale for the second round.
        move_mtime_one_second_later(&paths.precache());
    }
}

fn move_mtime_one_second_later(path: &Path) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let later = mtime + std::time::Duration::from_secs(1);
    file.set_times(FileTimes::new().set_modified(later))
        .unwrap();
}

// ---- test_201 / R§3.20 ----

/// The source reverts to an older revision of the same size, whose mtime is then made
/// equal to the snapshot's image: only the inode differs, and that is outdated.
fn snapshot_is_outdated_after_source_reverts_to_older_same_size_revision(t: FsType) {
    let f = Fixture::new(t);
    let root = f.origin("vm-templates/t/root", MIB, 3);
    f.session(&root, 0, b"v1");
    f.session(&root, 0, b"v2");
    let snap = f.snapshot_of("appvms/a/root", &root);
    let dirty = f.start(&snap);
    assert_eq!(read_at(&dirty, 0, 2), b"v2");
    assert!(!f.engine.volume_info(&snap).unwrap().is_outdated);
    let v1 = f.engine.volume_info(&root).unwrap().revisions[1].id;
    f.engine
        .revert(&root, Some(v1), &OpCtx::quiet("Revert"))
        .unwrap();
    let (source_clean, own_clean) = (
        f.paths("vm-templates/t/root").clean(),
        f.paths("appvms/a/root").clean(),
    );
    assert_eq!(read_at(&source_clean, 0, 2), b"v1");
    copy_mtime(&own_clean, &source_clean);
    assert_eq!(mtime_ns(&source_clean), mtime_ns(&own_clean));
    assert_eq!(
        fs::metadata(&source_clean).unwrap().len(),
        fs::metadata(&own_clean).unwrap().len()
    );
    assert!(f.engine.volume_info(&snap).unwrap().is_outdated);
    f.stop(&snap);
    let dirty = f.start(&snap);
    assert_eq!(
        read_at(&dirty, 0, 2),
        b"v1",
        "the next start sees the revert"
    );
    assert!(!f.engine.volume_info(&snap).unwrap().is_outdated);
}

// ---- admin test_810 (Clear) and test_012 ----

/// Clear = ImportData(current size) + ImportDataEnd(true) without writing: the
/// committed image is all zeros of the same size, the old data a revertible revision.
fn clear_commits_a_zero_image_and_keeps_the_old_data_revertible(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, 2 * MIB, 2);
    f.session(&v, MIB, b"test data");
    let size = f.engine.volume_info(&v).unwrap().size;
    let w = f
        .engine
        .import_data(&v, size, false, &OpCtx::quiet("ImportData"))
        .unwrap();
    drop(w);
    f.engine
        .import_data_end(&v, true, &OpCtx::quiet("ImportDataEnd"))
        .unwrap();
    let clean = f.paths(VID).clean();
    assert_eq!(fs::metadata(&clean).unwrap().len(), 2 * MIB);
    assert!(is_all_zero(&clean), "a cleared volume is empty");
    assert!(!exists(&f.paths(VID).import()));
    assert_eq!(read_at(&f.newest_revision(VID), MIB, 9), b"test data");
    f.engine.revert(&v, None, &OpCtx::quiet("Revert")).unwrap();
    assert_eq!(
        read_at(&clean, MIB, 9),
        b"test data",
        "the clear is undoable"
    );
}

/// test_012, changed by contract rev 2: the writer truncates the import file to
/// nothing; the committed image still has exactly the declared size (the reference
/// committed an empty image), all zeros, and the import file is gone.
fn import_truncated_to_nothing_commits_the_declared_size(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, MIB, 1);
    f.session(&v, 0, b"test data");
    let w = f
        .engine
        .import_data(&v, MIB, false, &OpCtx::quiet("ImportData"))
        .unwrap();
    let import = f.paths(VID).import();
    assert_ne!(import, f.engine.volume_info(&v).unwrap().block_device_path);
    w.set_len(0).unwrap();
    drop(w);
    f.engine
        .import_data_end(&v, true, &OpCtx::quiet("ImportDataEnd"))
        .unwrap();
    assert!(!exists(&import));
    assert_eq!(fs::metadata(f.paths(VID).clean()).unwrap().len(), MIB);
    assert!(is_all_zero(&f.paths(VID).clean()));
    assert_eq!(f.engine.volume_info(&v).unwrap().size, MIB);
}

// ---- test_120 ----

fn snapshots_disabled_volume_stops_to_clean_only_and_removes_to_nothing(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, MIB, -1);
    let paths = f.paths(VID);
    let dirty = f.start(&v);
    assert_eq!(dirty, f.dir.join("appvms/work/private-dirty.img"));
    assert!(!exists(&paths.clean()) && !exists(&paths.precache()));
    f.stop(&v);
    assert!(!exists(&dirty) && exists(&paths.clean()) && !exists(&paths.precache()));
    f.engine.remove_volume(&v, &OpCtx::quiet("Remove")).unwrap();
    assert!(!exists(paths.dir()), "the VM directory is gone");
    assert!(files_in(&f.dir.join("appvms")).is_empty());
    assert!(f.engine.volume_vids(&f.pool).unwrap().is_empty());
}

// ---- R§3.15 live resize ----

/// A loop device attached to the started image sees the new size; the file grew in
/// place (same inode, data kept); the stop commits the new size, persisted.
fn live_resize_grows_the_started_image_in_place_and_its_loop_device(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, 4 * MIB, 1);
    let dirty = f.start(&v);
    write_at(&dirty, MIB, b"live");
    let inode = ino(&dirty);
    let device = LoopDevice::attach(&dirty);
    assert_eq!(device.size_bytes(), 4 * MIB);
    f.engine
        .resize(&v, 8 * MIB, false, &OpCtx::quiet("Resize"))
        .unwrap();
    assert_eq!(
        device.size_bytes(),
        8 * MIB,
        "the loop device re-read its size"
    );
    assert_eq!(ino(&dirty), inode, "resized in place");
    assert_eq!(fs::metadata(&dirty).unwrap().len(), 8 * MIB);
    assert_eq!(read_at(&dirty, MIB, 4), b"live");
    drop(device);
    f.stop(&v);
    let clean = f.paths(VID).clean();
    assert_eq!(fs::metadata(&clean).unwrap().len(), 8 * MIB);
    assert_eq!(read_at(&clean, MIB, 4), b"live");
    let reopened = Engine::open(f.engine.state_dir()).unwrap();
    let info = reopened.volume_info(&v).unwrap();
    assert_eq!((info.size, info.config.size), (8 * MIB, 8 * MIB));
}

// ---- R§3.22 / test_006, R§3.23 ----

fn pool_usage_is_reported_and_none_once_the_directory_is_gone(t: FsType) {
    let f = Fixture::new(t);
    let (size, used) = f.engine.pool_info(&f.pool).unwrap().usage.expect("usage");
    let st = rustix::fs::statvfs(&f.dir).unwrap();
    assert_eq!(size, st.f_blocks * st.f_frsize, "the whole filesystem");
    assert!(used > 0 && used <= size, "usage {used} of {size}");
    fs::create_dir(f.fs.path().join("sub")).unwrap();
    let moving = f.add_pool("moving", "sub/pool");
    assert!(f.engine.pool_info(&moving).unwrap().usage.is_some());
    fs::rename(f.fs.path().join("sub"), f.fs.path().join("gone")).unwrap();
    let info = f.engine.pool_info(&moving).unwrap();
    assert_eq!(info.usage, None, "no directory, no usage");
    assert_eq!(info.included_in, None);
}

#[test]
fn included_in_names_the_pool_whose_directory_contains_this_one() {
    let f = Fixture::new(FsType::Ext4);
    let outer = f.add_pool("outer", "outer");
    let inner = f.add_pool("inner", "outer/nested");
    std::os::unix::fs::symlink(f.fs.path().join("outer"), f.fs.path().join("alias")).unwrap();
    let aliased = f.add_pool("aliased", "alias/other");
    let sibling = f.add_pool("sibling", "outer-x");
    let included_in = |p: &PoolName| f.engine.pool_info(p).unwrap().included_in;
    assert_eq!(included_in(&inner), Some(outer.clone()));
    assert_eq!(included_in(&aliased), Some(outer.clone()), "by realpath");
    assert_eq!(
        included_in(&sibling),
        None,
        "a name prefix is not a path prefix"
    );
    assert_eq!(included_in(&outer), None);
    assert_eq!(included_in(&f.pool), None);
    // Of several containing pools, the innermost (not the first by name).
    let middle = f.add_pool("zmiddle", "outer/middle");
    let deepest = f.add_pool("deepest", "outer/middle/deeper");
    assert_eq!(included_in(&deepest), Some(middle.clone()));
    assert_eq!(included_in(&middle), Some(outer.clone()));
}

/// A pool inside another pool's `appvms/` or `vm-templates/` — among its VMs'
/// directories, next to their images — or holding another pool there is refused, and
/// leaves nothing behind; a pool elsewhere below another's directory is fine (it is
/// `IncludedIn` it).
#[test]
fn a_pool_among_another_pools_vm_directories_is_refused() {
    let f = Fixture::new(FsType::Ext4);
    let outer = f.add_pool("outer", "outer");
    let refused = |name: &str, rel: &str| {
        let dir = f.fs.path().join(rel);
        let spec = pool_spec(&PoolName::parse(name).unwrap(), &dir, false);
        let err = f.engine.create_pool(spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{rel}: {err}");
        err.to_string()
    };
    fs::create_dir(f.fs.path().join("outer/appvms/web")).unwrap();
    let message = refused("inner", "outer/appvms/web");
    assert!(
        message.contains("inside the appvms/ directory of pool outer"),
        "{message}"
    );
    assert!(
        !f.fs.path().join("outer/appvms/web/appvms").exists(),
        "the refused pool's setup was undone"
    );
    refused("inner", "outer/vm-templates/new");
    assert!(!f.fs.path().join("outer/vm-templates/new").exists());
    refused("inner", "outer/appvms");
    // Through a bind mount of the class directory elsewhere, and through a symlink.
    let elsewhere = f.fs.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let bind = common_fs::Bind::new(&f.fs.path().join("outer/appvms"), &elsewhere);
    let message = refused("inner", "elsewhere/web");
    assert!(
        message.contains("inside the appvms/ directory of pool outer"),
        "{message}"
    );
    drop(bind);
    std::os::unix::fs::symlink(
        f.fs.path().join("outer/vm-templates"),
        f.fs.path().join("link"),
    )
    .unwrap();
    refused("inner", "link/new");
    let nested = f.add_pool("nested", "outer/other");
    assert_eq!(
        f.engine.pool_info(&nested).unwrap().included_in,
        Some(outer.clone())
    );
    // The other way round: a new pool whose appvms/ would hold an existing pool.
    fs::create_dir_all(f.fs.path().join("top/appvms/vm")).unwrap();
    let deep = f.add_pool("deep", "top/appvms/vm/pool");
    let message = refused("top", "top");
    assert!(message.contains("pool deep uses"), "{message}");
    assert!(f.engine.pool_info(&deep).is_ok());
}

// ---- R§3.1 / §7.3: CreatePool's reflink probe ----

fn probing_spec(name: &str, dir: &Path) -> PoolSpec {
    pool_spec(&PoolName::parse(name).unwrap(), dir, true)
}

#[test]
fn ext4_setup_check_is_not_supported_and_removes_only_a_directory_it_made() {
    let fs = LoopFs::new(FsType::Ext4, 64 * MIB);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let fresh = fs.path().join("fresh");
    let err = engine
        .create_pool(probing_spec("fresh", &fresh))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
    assert!(err.to_string().contains("setup_check=false"), "{err}");
    assert!(err.to_string().contains("pool fresh"), "{err}");
    assert!(!exists(&fresh), "the directory it created is removed");
    let existing = fs.path().join("existing");
    fs::create_dir(&existing).unwrap();
    fs::write(existing.join("keep"), b"x").unwrap();
    let err = engine
        .create_pool(probing_spec("existing", &existing))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
    assert_eq!(
        files_in(&existing),
        ["keep"],
        "an existing directory is left alone"
    );
    assert!(engine.pool_names().is_empty());
}

fn setup_check_on_reflink_fs_creates_the_class_directories(t: FsType) {
    let fs = LoopFs::new(t, 512 * MIB);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let dir = fs.path().join("pool");
    let config = engine.create_pool(probing_spec("p", &dir)).unwrap();
    assert!(config.setup_check);
    assert_eq!(
        files_in(&dir),
        ["appvms", "vm-templates"],
        "and nothing else"
    );
    for class in ["appvms", "vm-templates"] {
        assert!(fs::symlink_metadata(dir.join(class)).unwrap().is_dir());
    }
}

#[test]
fn btrfs_setup_check_creates_the_class_directories() {
    setup_check_on_reflink_fs_creates_the_class_directories(FsType::Btrfs);
}

#[test]
fn xfs_setup_check_creates_the_class_directories() {
    setup_check_on_reflink_fs_creates_the_class_directories(FsType::Xfs);
}

/// An immutable directory stops even root: the probe's permission error is a failure
/// of its own, not "cannot reflink", and nothing is registered or created.
fn probe_permission_error_is_not_not_supported(t: FsType) {
    let fs = LoopFs::new(t, 256 * MIB);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let dir = fs.path().join("frozen");
    fs::create_dir(&dir).unwrap();
    let guard = Immutable::new(&dir);
    let err = engine
        .create_pool(probing_spec("frozen", &dir))
        .unwrap_err();
    drop(guard);
    assert_ne!(err.kind(), ErrorKind::NotSupported, "{err}");
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    assert!(err.to_string().contains("not permitted"), "{err}");
    assert!(files_in(&dir).is_empty());
    assert!(engine.pool_names().is_empty());
}

#[test]
fn ext4_probe_permission_error_is_not_not_supported() {
    probe_permission_error_is_not_not_supported(FsType::Ext4);
}

#[test]
fn btrfs_probe_permission_error_is_not_not_supported() {
    probe_permission_error_is_not_not_supported(FsType::Btrfs);
}

// ---- integration test_002 ----

/// rw=false changes nothing on disk (the hypervisor enforces read-only): the volume
/// starts from its committed image and its stop commits the same bytes.
fn read_only_volume_starts_with_its_committed_content_and_keeps_it(t: FsType) {
    let f = Fixture::new(t);
    let v = f.vref(VID);
    let spec = VolumeSpec {
        rw: false,
        ..origin_spec(MIB, 1)
    };
    f.create_in(&v, spec);
    let mut content = vec![0u8; MIB as usize];
    content[4096..4105].copy_from_slice(b"committed");
    f.import(&v, &content);
    let dirty = f.start(&v);
    assert_eq!(fs::read(&dirty).unwrap(), content);
    f.stop(&v);
    let info = f.engine.volume_info(&v).unwrap();
    assert!(!info.config.rw && !info.started);
    assert_eq!(fs::read(f.paths(VID).clean()).unwrap(), content);
    assert_eq!(fs::read(f.newest_revision(VID)).unwrap(), content);
}

// ---- integration test_006 (revisions_to_keep −1 source) ----

/// Everything the running source is refused for, each leaving the target untouched.
fn refusals_while_source_runs(
    f: &Fixture,
    source: &VolumeRef,
    consumer: &VolumeRef,
    clones: &[VolumeRef],
) {
    let err = f
        .engine
        .start(consumer, &OpCtx::quiet("Start"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "snapshot start: {err}");
    assert!(!f.engine.volume_info(consumer).unwrap().started);
    assert!(
        !exists(&f.paths(&consumer.vid.to_string()).clean()),
        "no hardlink"
    );
    for dst in clones {
        let err = f
            .engine
            .import_volume(dst, source, &OpCtx::quiet("ImportVolume"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy, "clone into {dst}: {err}");
        let info = f.engine.volume_info(dst).unwrap();
        assert!(
            info.revisions.is_empty(),
            "clone into {dst}: nothing committed"
        );
    }
    let err = f
        .engine
        .export(source, &OpCtx::quiet("Export"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "export: {err}");
}

fn running_snapshots_disabled_source_refuses_snapshot_clone_and_export(t: FsType) {
    let f = Fixture::new(t);
    let source = f.origin("appvms/vm1/private", MIB, -1);
    f.session(&source, 0, b"A");
    let consumer = f.snapshot_of("appvms/vm2/private", &source);
    let near = f.origin("appvms/vm3/private", MIB, 1);
    let other = f.add_pool("other", "other");
    let far = VolumeRef {
        pool: other,
        vid: Vid::parse("appvms/vm4/private").unwrap(),
    };
    f.create_in(&far, origin_spec(MIB, 1));
    let dirty = f.start(&source);
    write_at(&dirty, 0, b"B");
    refusals_while_source_runs(&f, &source, &consumer, &[near.clone(), far.clone()]);
    f.stop(&source);
    let consumer_dirty = f.start(&consumer);
    assert_eq!(read_at(&consumer_dirty, 0, 1), b"B");
    f.engine
        .import_volume(&near, &source, &OpCtx::quiet("ImportVolume"))
        .unwrap();
    assert_eq!(read_at(&f.paths("appvms/vm3/private").clean(), 0, 1), b"B");
    f.engine
        .import_volume(&far, &source, &OpCtx::quiet("ImportVolume"))
        .unwrap();
    let far_clean = VolumePaths::new(&f.fs.path().join("other"), &far.vid).clean();
    assert_eq!(read_at(&far_clean, 0, 1), b"B");
    let mut exported = f.engine.export(&source, &OpCtx::quiet("Export")).unwrap();
    let mut first = [0u8; 1];
    exported.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"B");
}
