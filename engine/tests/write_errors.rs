//! Data that never reached the disk is never committed: the importer writes into the
//! import file, the disk under the pool then cannot take it (a full thin pool, a loop
//! device's backing store full — here a filesystem on a loop device whose backing file
//! sits on a tmpfs that is made full), so the write-back of those pages fails and the
//! kernel marks them clean. The importer's own fsync is told; a later commit through a
//! new descriptor would not be, and committed zeros where the data should be. The
//! import's witness (a descriptor it keeps from ImportData on) is told in any case:
//! ImportDataEnd(true) is refused, also once the disk has room again, and only
//! ImportDataEnd(false) ends the import, leaving the volume as it was.
//!
//! Needs root (tmpfs and loop mounts), dumpe2fs and xfs_db (e2fsprogs, xfsprogs).

mod common_fs;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common_fs::MIB;
use qubes_storage_engine::layout::VolumePaths;
use qubes_storage_engine::{
    Engine, ErrorKind, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};

const IMPORT: u64 = 16 * MIB;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd}: {text}");
    text
}

/// A filesystem of `kind` on a loop device backed by a file on a tmpfs of its own;
/// everything is unmounted and detached on drop.
struct FailingDisk {
    base: tempfile::TempDir,
    loop_device: String,
    kind: &'static str,
}

impl FailingDisk {
    fn new(kind: &'static str) -> FailingDisk {
        common_fs::require_root();
        let base = tempfile::tempdir().unwrap();
        let (store, mnt) = (base.path().join("store"), base.path().join("mnt"));
        fs::create_dir(&store).unwrap();
        fs::create_dir(&mnt).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size=400m qsd-test {}",
            store.display()
        ));
        let image = store.join("img");
        sh(&format!("truncate -s 320M {}", image.display()));
        match kind {
            "ext4" => sh(&format!(
                "mkfs.ext4 -q -F -m 0 -E lazy_itable_init=0,lazy_journal_init=0,nodiscard {}",
                image.display()
            )),
            _ => sh(&format!(
                "mkfs.xfs -q -f -K -m reflink=1 {}",
                image.display()
            )),
        };
        let loop_device = sh(&format!("losetup -f --show {}", image.display()))
            .trim()
            .to_owned();
        let disk = FailingDisk {
            base,
            loop_device,
            kind,
        };
        sh(&format!("mount {} {}", disk.loop_device, mnt.display()));
        sh(&format!("chmod 700 {}", mnt.display()));
        disk
    }

    fn store(&self) -> PathBuf {
        self.base.path().join("store")
    }

    fn mnt(&self) -> PathBuf {
        self.base.path().join("mnt")
    }

    /// Every block the filesystem uses gets its page in the tmpfs, its free blocks
    /// become holes, and the tmpfs shrinks to what it holds: writing a new data block
    /// of the filesystem fails (ENOSPC at the loop device) while its metadata can still
    /// be rewritten where it is.
    fn fill(&self) {
        // This filesystem only: a global sync would also write back what the other
        // tests' disks hold at that moment (full disks among them).
        sh(&format!("sync -f {}", self.mnt().display()));
        let image = self.store().join("img");
        sh(&format!("fallocate -l 320M {}", image.display()));
        let free = self.free_ranges();
        assert!(!free.is_empty(), "no free space found on the {}", self.kind);
        let file = fs::OpenOptions::new().write(true).open(&image).unwrap();
        for (offset, len) in free {
            rustix::fs::fallocate(
                &file,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                offset,
                len,
            )
            .unwrap();
        }
        let used: u64 = sh(&format!(
            "df -k --output=used {} | tail -1",
            self.store().display()
        ))
        .trim()
        .parse()
        .unwrap();
        sh(&format!(
            "mount -o remount,size={}k {}",
            used + 8,
            self.store().display()
        ));
    }

    /// The byte ranges of the filesystem's free blocks (4 KiB blocks).
    fn free_ranges(&self) -> Vec<(u64, u64)> {
        let dev = &self.loop_device;
        match self.kind {
            "ext4" => {
                let out = sh(&format!(
                    "dumpe2fs {dev} 2>/dev/null | grep '  Free blocks: '"
                ));
                let mut ranges = Vec::new();
                for line in out.lines() {
                    let list = line.trim().trim_start_matches("Free blocks:").trim();
                    for range in list.split(", ").filter(|r| !r.is_empty()) {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                        ranges.push((a * 4096, (b - a + 1) * 4096));
                    }
                }
                ranges
            }
            _ => {
                let agblocks: u64 = sh(&format!(
                    "xfs_db -r -c 'sb 0' -c 'p agblocks' {dev} | cut -d= -f2"
                ))
                .trim()
                .parse()
                .unwrap();
                let out = sh(&format!(
                    "xfs_db -r -c 'freesp -d' {dev} | grep -E '^ *[0-9]+ +[0-9]+ +[0-9]+ *$'"
                ));
                out.lines()
                    .map(|line| {
                        let n: Vec<u64> = line
                            .split_whitespace()
                            .map(|x| x.parse().unwrap())
                            .collect();
                        ((n[0] * agblocks + n[1]) * 4096, n[2] * 4096)
                    })
                    .collect()
            }
        }
    }

    /// The disk has room again (the thin pool was extended).
    fn grow(&self) {
        sh(&format!(
            "mount -o remount,size=400m {}",
            self.store().display()
        ));
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_device])
            .status();
        let _ = Command::new("umount").arg(self.store()).status();
    }
}

fn the_import_is_refused_once_its_data_did_not_reach_the_disk(kind: &'static str) {
    let disk = FailingDisk::new(kind);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let (vol, pool_dir) = origin_on(&disk, &engine, 1);
    engine.settle();
    let fd = engine
        .import_data(&vol, IMPORT, false, &OpCtx::quiet("ImportData"))
        .unwrap();
    disk.fill();
    let data = vec![0xABu8; MIB as usize];
    for i in 0..IMPORT / MIB {
        fd.write_all_at(&data, i * MIB).unwrap();
    }
    // The importer is told (and carries on, or the disk is fixed and it retries).
    let told = fd.sync_data();
    assert!(told.is_err(), "the {kind} took the data: {told:?}");
    drop(fd);
    disk.grow();
    for attempt in ["commit", "retry"] {
        let err = engine
            .import_data_end(&vol, true, &OpCtx::quiet("ImportDataEnd"))
            .expect_err("data that never reached the disk was committed");
        assert!(
            matches!(err.kind(), ErrorKind::NoSpace | ErrorKind::Failed),
            "{attempt}: {err}"
        );
        assert!(
            err.to_string().contains("ImportDataEnd(false)"),
            "{attempt}: {err}"
        );
    }
    engine
        .import_data_end(&vol, false, &OpCtx::quiet("ImportDataEnd"))
        .expect("discarded");
    engine.settle();
    let clean = VolumePaths::new(&pool_dir, &vol.vid).clean();
    let committed = fs::read(&clean).unwrap();
    assert!(
        committed.iter().all(|&b| b == 0),
        "the volume changed: it holds what it held before (nothing)"
    );
    assert!(!Path::new(&VolumePaths::new(&pool_dir, &vol.vid).import()).exists());
    drop(engine);
}

#[test]
fn ext4_an_import_whose_data_did_not_reach_the_disk_is_never_committed() {
    the_import_is_refused_once_its_data_did_not_reach_the_disk("ext4");
}

#[test]
fn xfs_an_import_whose_data_did_not_reach_the_disk_is_never_committed() {
    the_import_is_refused_once_its_data_did_not_reach_the_disk("xfs");
}

/// A pool on `disk` and an origin volume in it keeping `keep` revisions.
fn origin_on(disk: &FailingDisk, engine: &Engine, keep: i64) -> (VolumeRef, PathBuf) {
    let pool = PoolName::parse("p").unwrap();
    let pool_dir = disk.mnt().join("pool");
    engine
        .create_pool(PoolSpec {
            name: pool.clone(),
            dir_path: pool_dir.clone(),
            setup_check: disk.kind == "xfs",
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        })
        .unwrap();
    let vol = VolumeRef {
        pool,
        vid: Vid::parse("appvms/work/private").unwrap(),
    };
    let spec = VolumeSpec {
        size: IMPORT,
        rw: true,
        save_on_stop: true,
        revisions_to_keep: Some(RevisionsToKeep::new(keep).unwrap()),
        ..Default::default()
    };
    engine
        .create_volume(&vol, spec, &OpCtx::quiet("CreateVolume"))
        .unwrap();
    (vol, pool_dir)
}

/// One session that writes `byte` at 0 (flushed by the "VM") and stops.
fn good_session(engine: &Engine, vol: &VolumeRef, byte: u8) {
    let dirty = engine.start(vol, &OpCtx::quiet("Start")).unwrap();
    let vm = fs::OpenOptions::new().write(true).open(&dirty).unwrap();
    vm.write_all_at(&[byte; 4096], 0).unwrap();
    vm.sync_data().unwrap();
    drop(vm);
    engine.stop(vol, &OpCtx::quiet("Stop")).unwrap();
    engine.settle();
}

/// A session whose writes to new blocks cannot reach the disk: the "VM" (a descriptor
/// of the running image, as a loop device holds) is told at its flush; the disk then
/// has room again, as after an admin extended a thin pool.
fn session_losing_writes(disk: &FailingDisk, engine: &Engine, vol: &VolumeRef) {
    let dirty = engine.start(vol, &OpCtx::quiet("Start")).unwrap();
    let vm = fs::OpenOptions::new().write(true).open(&dirty).unwrap();
    disk.fill();
    let data = vec![0xCDu8; MIB as usize];
    for i in 4..IMPORT / MIB {
        vm.write_all_at(&data, i * MIB).unwrap();
    }
    let told = vm.sync_data();
    assert!(told.is_err(), "the {} took the data: {told:?}", disk.kind);
    drop(vm);
    disk.grow();
}

/// The stop of a session that lost writes commits it (the VM was told, and its next
/// start must see what it saw), and keeps the image from before the session as a
/// pinned, described revision that no later stop prunes (before, the stop's fresh
/// descriptor heard nothing, and two stops later the last good image was pruned).
fn the_image_before_a_session_that_lost_writes_is_kept(kind: &'static str) {
    let disk = FailingDisk::new(kind);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let (vol, pool_dir) = origin_on(&disk, &engine, 1);
    good_session(&engine, &vol, 0xAA);
    session_losing_writes(&disk, &engine, &vol);
    let stop = OpCtx::quiet("Stop");
    engine.stop(&vol, &stop).expect("the stop commits");
    engine.settle();
    for byte in [0xB1, 0xB2] {
        good_session(&engine, &vol, byte);
    }
    let info = engine.volume_info(&vol).unwrap();
    let kept: Vec<_> = info.revision_details.iter().filter(|d| d.pinned).collect();
    assert_eq!(kept.len(), 1, "{:?}", info.revision_details);
    assert!(
        kept[0].description.contains("lost writes"),
        "{}",
        kept[0].description
    );
    let paths = VolumePaths::new(&pool_dir, &vol.vid);
    let revision = paths.revision(kept[0].revision.id, kept[0].revision.timestamp);
    let before = fs::read(&revision).unwrap();
    assert_eq!(
        &before[..4096],
        &[0xAA; 4096][..],
        "the image before the session"
    );
    assert!(stop.take_events().iter().any(|e| matches!(
        e.kind,
        qubes_storage_engine::EventKind::RevisionDetailsSet { pinned: true, .. }
    )));
    drop(engine);
}

/// A volume that keeps no revision: the stop of a session that lost writes refuses
/// (committing would replace the only good image), again on a second try, after a
/// restart of the service and after the VM started again on the session; once the
/// volume keeps a revision, the stop commits keeping that image pinned, and the
/// committed image no longer carries the mark.
fn a_session_that_lost_writes_is_not_committed_over_the_only_good_image(kind: &'static str) {
    let disk = FailingDisk::new(kind);
    let state = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(state.path()).unwrap();
    let (vol, pool_dir) = origin_on(&disk, &engine, 0);
    good_session(&engine, &vol, 0xAA);
    session_losing_writes(&disk, &engine, &vol);
    let paths = VolumePaths::new(&pool_dir, &vol.vid);
    for attempt in [
        "stop",
        "second stop",
        "stop after a restart",
        "stop after a start",
    ] {
        match attempt {
            // The service restarts (its witnesses are gone)…
            "stop after a restart" => {
                drop(engine);
                engine = Engine::open(state.path()).unwrap();
            }
            // …and the VM starts again on its session.
            "stop after a start" => {
                engine.start(&vol, &OpCtx::quiet("Start")).unwrap();
            }
            _ => {}
        }
        let err = engine
            .stop(&vol, &OpCtx::quiet("Stop"))
            .expect_err("a session that lost writes was committed over the only good image");
        assert_eq!(err.kind(), ErrorKind::Failed, "{attempt}: {err}");
        assert!(
            err.to_string().contains("revisions_to_keep"),
            "{attempt}: {err}"
        );
        assert!(paths.dirty().exists(), "{attempt}: the session stays");
        assert_eq!(&fs::read(paths.clean()).unwrap()[..4096], &[0xAA; 4096][..]);
    }
    engine
        .set_revisions_to_keep(&vol, RevisionsToKeep::new(1).unwrap())
        .unwrap();
    engine
        .stop(&vol, &OpCtx::quiet("Stop"))
        .expect("now it commits");
    engine.settle();
    let info = engine.volume_info(&vol).unwrap();
    let kept: Vec<_> = info.revision_details.iter().filter(|d| d.pinned).collect();
    assert_eq!(kept.len(), 1, "{:?}", info.revision_details);
    let revision = paths.revision(kept[0].revision.id, kept[0].revision.timestamp);
    assert_eq!(&fs::read(&revision).unwrap()[..4096], &[0xAA; 4096][..]);
    let clean = fs::File::open(paths.clean()).unwrap();
    let mut mark = [0u8; 64];
    assert!(
        rustix::fs::fgetxattr(&clean, "user.qubes-storaged.lost-writes", &mut mark).is_err(),
        "the committed image still carries the mark"
    );
    drop(engine);
}

#[test]
fn ext4_the_image_before_a_session_that_lost_writes_is_kept() {
    the_image_before_a_session_that_lost_writes_is_kept("ext4");
}

#[test]
fn xfs_the_image_before_a_session_that_lost_writes_is_kept() {
    the_image_before_a_session_that_lost_writes_is_kept("xfs");
}

#[test]
fn ext4_a_session_that_lost_writes_is_not_committed_over_the_only_good_image() {
    a_session_that_lost_writes_is_not_committed_over_the_only_good_image("ext4");
}

#[test]
fn xfs_a_session_that_lost_writes_is_not_committed_over_the_only_good_image() {
    a_session_that_lost_writes_is_not_committed_over_the_only_good_image("xfs");
}
