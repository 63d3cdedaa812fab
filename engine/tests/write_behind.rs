//! Write-behind of imports (`engine/src/writeback.rs`): what an importer writes into its
//! import file reaches the disk while the import is in progress, long before the
//! kernel's own writeback would start (30 s for dirty data here, `vm.dirty_expire_centisecs`)
//! — seen on the loop device of the test's own filesystem, whose write counter grows by
//! the data without anyone syncing. And it stops with the import.
//!
//! Needs root (loop mounts).

mod common_fs;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common_fs::{FsType, LoopFs, MIB};
use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};

const DATA: u64 = 64 * MIB;
/// Far below the kernel's own 30 s.
const DEADLINE: Duration = Duration::from_secs(10);

fn ctx() -> OpCtx {
    OpCtx::quiet("write-behind")
}

/// Sectors written to the loop device behind `mount` (`/sys/block/loopN/stat`).
fn sectors_written(mount: &Path) -> u64 {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(mount)
        .output()
        .expect("findmnt");
    let source = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dev = source.strip_prefix("/dev/").expect("a loop device");
    let stat = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).expect("stat");
    stat.split_whitespace().nth(6).unwrap().parse().unwrap()
}

#[test]
fn an_imports_data_reaches_the_disk_while_the_importer_writes() {
    common_fs::require_root();
    let fs = LoopFs::new(FsType::Btrfs, 1024 * MIB);
    let state = tempfile::tempdir().unwrap();
    let engine = Engine::open(state.path()).unwrap();
    let pool = PoolName::parse("p").unwrap();
    let spec = PoolSpec {
        name: pool.clone(),
        dir_path: fs.path().join("p"),
        setup_check: true,
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    };
    engine.create_pool(spec).unwrap();
    let vol = VolumeRef {
        pool,
        vid: Vid::parse("appvms/work/private").unwrap(),
    };
    let volume = VolumeSpec {
        size: 2 * DATA,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    };
    engine.create_volume(&vol, volume, &ctx()).unwrap();
    engine.settle();
    rustix::fs::sync();
    let file = engine.import_data(&vol, 2 * DATA, false, &ctx()).unwrap();
    let before = sectors_written(fs.path());
    let chunk = vec![0x5au8; MIB as usize];
    for i in 0..DATA / MIB {
        file.write_all_at(&chunk, i * 2 * MIB).unwrap();
    }
    let begun = Instant::now();
    while (sectors_written(fs.path()) - before) * 512 < DATA {
        assert!(
            begun.elapsed() < DEADLINE,
            "the import's data was not written back while the import was in progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(file);
    engine.import_data_end(&vol, true, &ctx()).unwrap();
    drop(engine);
}
