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
        sh("sync");
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
    let pool = PoolName::parse("p").unwrap();
    let pool_dir = disk.mnt().join("pool");
    engine
        .create_pool(PoolSpec {
            name: pool.clone(),
            dir_path: pool_dir.clone(),
            setup_check: kind == "xfs",
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
        revisions_to_keep: Some(RevisionsToKeep::new(1).unwrap()),
        ..Default::default()
    };
    engine
        .create_volume(&vol, spec, &OpCtx::quiet("CreateVolume"))
        .unwrap();
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
