//! ExportDelta benchmark (`cargo bench -p qubes-storage-engine --bench delta`, root
//! only; not a timed test: it prints a table and asserts nothing). On loop-mounted
//! btrfs, XFS (`-m reflink=1`) and ext4 (`setup_check = false`) it builds a 2 GiB
//! origin volume full of data, runs one session that changes 1 % of it in 1000 places
//! and commits, then times the engine's delta between the revision and the committed
//! image against a full comparison of the two images (both read whole in 1 MiB chunks
//! and compared, which is what `cmp` does when it looks at every byte) — bytes read
//! and time, with cold caches (the filesystem remounted before each) and warm. The goal
//! is a delta in under 5 % of the full comparison's time: PASS/MISS is printed, never
//! asserted. Both must find the same ranges, which is checked. On ext4, which shares
//! no extents, the delta compares every data byte too: no gain is expected there.
//! `QSD_BENCH_FS=btrfs|xfs|ext4` runs one filesystem only.

#[path = "../tests/common_fs/mod.rs"]
mod common_fs;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common_fs::{pattern, FsType, LoopFs, MIB};
use qubes_storage_engine::layout::revision_file_name;
use qubes_storage_engine::{
    Delta, Engine, Granularity, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef,
    VolumeSpec,
};

const GIB: u64 = 1 << 30;
const IMAGE_SIZE: u64 = 2 * GIB;
/// 1 % of the image, in this many writes.
const WRITES: u64 = 1000;
const WRITE_LEN: u64 = IMAGE_SIZE / 100 / WRITES;
const GOAL: f64 = 0.05;
const CHUNK: usize = 1 << 20;
const VID: &str = "appvms/bench/private";

fn ctx() -> OpCtx {
    OpCtx::quiet("ExportDelta")
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

struct Bench {
    fs: LoopFs,
    engine: Engine,
    vol: VolumeRef,
    vm_dir: PathBuf,
}

impl Bench {
    fn new(fs_type: FsType) -> Bench {
        let fs = LoopFs::new(fs_type, 8 * GIB);
        let engine = Engine::open(&fs.path().join("state")).expect("Engine::open");
        let pool = PoolName::parse("bench").unwrap();
        let pool_dir = fs.path().join("pool");
        let spec = PoolSpec {
            name: pool.clone(),
            dir_path: pool_dir.clone(),
            setup_check: fs_type.has_reflink(),
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        };
        engine.create_pool(spec).expect("create pool");
        let vol = VolumeRef {
            pool,
            vid: Vid::parse(VID).unwrap(),
        };
        let volume = VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            save_on_stop: true,
            ..Default::default()
        };
        engine
            .create_volume(&vol, volume, &OpCtx::quiet("bench"))
            .expect("create volume");
        let vm_dir = pool_dir.join("appvms/bench");
        Bench {
            fs,
            engine,
            vol,
            vm_dir,
        }
    }

    /// One session: `write` on the running image, then a stop that commits it.
    fn session(&self, write: impl FnOnce(&File)) {
        let dirty = self
            .engine
            .start(&self.vol, &OpCtx::quiet("bench"))
            .expect("start");
        let file = File::options().write(true).open(dirty).unwrap();
        write(&file);
        file.sync_all().unwrap();
        self.engine
            .stop(&self.vol, &OpCtx::quiet("bench"))
            .expect("stop");
    }

    /// A full image, then 1 % of it changed in 1000 places.
    fn prepare(&self) {
        self.session(|file| {
            for offset in (0..IMAGE_SIZE).step_by(4 * MIB as usize) {
                let data = pattern(1, offset, 4 * MIB as usize);
                file.write_all_at(&data, offset).unwrap();
            }
        });
        self.session(|file| {
            let slot = IMAGE_SIZE / WRITES;
            for i in 0..WRITES {
                // Somewhere in each slot, not aligned to blocks.
                let offset = i * slot + (i * 7919 * 512 + 123) % (slot - WRITE_LEN);
                let data = pattern(2 + i, offset, WRITE_LEN as usize);
                file.write_all_at(&data, offset).unwrap();
            }
        });
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        let info = self.engine.volume_info(&self.vol).unwrap();
        let r = *info.revisions.last().expect("a revision");
        let name = self.vol.vid.name();
        (
            self.vm_dir
                .join(revision_file_name(name, r.id, r.timestamp)),
            self.vm_dir.join(format!("{name}.img")),
        )
    }

    fn delta(&self) -> Delta {
        self.engine
            .export_delta(&self.vol, None, Granularity::DEFAULT, &ctx())
            .expect("export_delta")
            .delta
    }
}

/// Both images read whole and compared block by block: the ranges of differing 4 KiB
/// blocks and the bytes read.
fn full_comparison(base: &Path, image: &Path) -> (Vec<(u64, u64)>, u64) {
    let (a, b) = (File::open(base).unwrap(), File::open(image).unwrap());
    let size = b.metadata().unwrap().len();
    let (mut x, mut y) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut offset = 0;
    while offset < size {
        let len = ((size - offset) as usize).min(CHUNK);
        a.read_exact_at(&mut x[..len], offset).unwrap();
        b.read_exact_at(&mut y[..len], offset).unwrap();
        for block in (0..len).step_by(4096) {
            let end = (block + 4096).min(len);
            if x[block..end] != y[block..end] {
                let at = offset + block as u64;
                match ranges.last_mut() {
                    Some(last) if last.0 + last.1 == at => last.1 += (end - block) as u64,
                    _ => ranges.push((at, (end - block) as u64)),
                }
            }
        }
        offset += len as u64;
    }
    (ranges, 2 * size)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn run(fs_type: FsType) {
    eprintln!(
        "{}: preparing a 2 GiB image and a session changing 1 % of it…",
        fs_type.name()
    );
    let mut bench = Bench::new(fs_type);
    bench.prepare();
    let (base, image) = bench.files();
    for cache in ["cold", "warm"] {
        if cache == "cold" {
            rustix::fs::sync();
            bench.fs.remount();
        }
        let (delta_time, delta) = timed(|| bench.delta());
        if cache == "cold" {
            bench.fs.remount();
        }
        let (full_time, (ranges, full_read)) = timed(|| full_comparison(&base, &image));
        assert_eq!(
            delta.ranges, ranges,
            "the delta and the full comparison disagree"
        );
        let ratio = delta_time.as_secs_f64() / full_time.as_secs_f64();
        println!(
            "{:<6} {:<5} {:>9} {:>11} {:>10} {:>11} {:>10} {:>7.2} %  {}",
            fs_type.name(),
            cache,
            mib(delta.changed_bytes()),
            mib(delta.bytes_read),
            secs(delta_time),
            mib(full_read),
            secs(full_time),
            ratio * 100.0,
            if ratio < GOAL { "PASS" } else { "MISS" },
        );
    }
}

fn main() {
    common_fs::require_root();
    let only = std::env::var("QSD_BENCH_FS").ok();
    println!(
        "ExportDelta of a 2 GiB image, 1 % changed in {WRITES} places, vs a full comparison (goal: < {:.0} % of its time)",
        GOAL * 100.0
    );
    println!(
        "{:<6} {:<5} {:>9} {:>11} {:>10} {:>11} {:>10} {:>9}",
        "fs", "cache", "changed", "delta read", "delta", "full read", "full", "ratio"
    );
    for fs_type in [FsType::Btrfs, FsType::Xfs, FsType::Ext4] {
        if only.as_deref().is_some_and(|o| o != fs_type.name()) {
            continue;
        }
        run(fs_type);
    }
}
