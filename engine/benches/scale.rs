//! The engine at scale (`cargo bench -p qubes-storage-engine --bench scale`, root only;
//! prints tables, asserts nothing), on a loop-mounted filesystem (btrfs by default,
//! `QSD_BENCH_FS=btrfs|xfs|ext4` for another; `QSD_BENCH_PART=create|startup|snapshots`
//! runs one part):
//!
//! 1. **create**: the CreateVolume rate (origins of 1 MiB, each a VM directory, a
//!    sparse image, its precache and one state record) in a pool holding 100 volumes
//!    and in one holding 10 000, in alternating batches. Target: the rate at 10 000 ≥
//!    0.8× the rate at 100.
//! 2. **startup**: what the daemon does before it owns its bus name — `Engine::open`,
//!    then every volume's live view — at 10 000 volumes in one pool and 100 000 in ten
//!    (a third each origins with a revision, snapshot volumes of a template and
//!    volatile volumes, every tenth VM started; half of each pool's volumes in its
//!    snapshot file, half in its journal). Each view read per volume (`volume_info`)
//!    and per pool (`volume_infos`, one listing per VM directory), warm and cold (the
//!    filesystem remounted: its caches are gone; nothing else is dropped). The state is
//!    written here in the documented format, not through the engine (100 000 creates
//!    would take minutes).
//! 3. **snapshots**: 100 snapshot volumes of one template (256 MiB, 64 MiB of data)
//!    started one after another, then all at once from 100 threads. Target: at once ≤
//!    0.5× one after another.
//!
//! The mounts are undone by `LoopFs`'s `Drop`, also on panic.

#[path = "../tests/common_fs/mod.rs"]
mod common_fs;

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common_fs::{pattern, FsType, LoopFs, MIB};
use qubes_storage_engine::journal::frame;
use qubes_storage_engine::{
    Engine, OpCtx, PoolConfig, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeConfig, VolumeRef,
    VolumeSpec,
};

const GIB: u64 = 1 << 30;

fn ctx() -> OpCtx {
    OpCtx::quiet("bench")
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

/// CPU time (user + system) of the calling thread, from `/proc/thread-self/schedstat`:
/// what a figure costs whatever else the machine is doing.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text.split_whitespace().next().and_then(|n| n.parse().ok());
    Duration::from_nanos(ns.unwrap_or(0))
}

/// Wall and CPU time of `f`.
fn timed_cpu<T>(f: impl FnOnce() -> T) -> (Times, T) {
    let cpu = cpu_time();
    let (wall, out) = timed(f);
    (
        Times {
            wall,
            cpu: cpu_time() - cpu,
        },
        out,
    )
}

#[derive(Debug, Clone, Copy, Default)]
struct Times {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::Add for Times {
    type Output = Times;
    fn add(self, other: Times) -> Times {
        Times {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
        }
    }
}

impl std::fmt::Display for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>6} (cpu {:>6})", ms(self.wall), ms(self.cpu))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn vref(pool: &PoolName, vid: &str) -> VolumeRef {
    VolumeRef {
        pool: pool.clone(),
        vid: Vid::parse(vid).unwrap(),
    }
}

fn new_pool(engine: &Engine, fs: &LoopFs, name: &str) -> PoolName {
    let pool = PoolName::parse(name).unwrap();
    let spec = PoolSpec {
        name: pool.clone(),
        dir_path: fs.path().join(name),
        setup_check: fs.fs_type().has_reflink(),
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    };
    engine.create_pool(spec).expect("create pool");
    pool
}

// ---- 1. create ----

fn origin(size: u64) -> VolumeSpec {
    VolumeSpec {
        size,
        rw: true,
        save_on_stop: true,
        ..Default::default()
    }
}

/// Time to create origins `appvms/<tag><i>/private` for `i` in `range`.
fn time_creates(
    engine: &Engine,
    pool: &PoolName,
    tag: &str,
    range: std::ops::Range<usize>,
) -> Times {
    timed_cpu(|| {
        for i in range {
            let vol = vref(pool, &format!("appvms/{tag}{i}/private"));
            engine
                .create_volume(&vol, origin(MIB), &ctx())
                .expect("create");
        }
    })
    .0
}

/// Volatile volumes (one state record each, no file) up to `total` in the pool.
fn fill_to(engine: &Engine, pool: &PoolName, total: usize) {
    let have = engine.volume_vids(pool).unwrap().len();
    for i in have..total {
        let vol = vref(pool, &format!("appvms/fill{i}/volatile"));
        let spec = VolumeSpec {
            size: MIB,
            rw: true,
            ..Default::default()
        };
        engine.create_volume(&vol, spec, &ctx()).expect("fill");
    }
}

/// Two pools on one filesystem, one holding 100 volumes and one 10 000; batches of
/// creates alternate between them, so that the rest of the machine weighs on both
/// figures alike.
fn bench_create(fs_type: FsType) {
    const BATCH: usize = 50;
    const ROUNDS: usize = 8;
    let fs = LoopFs::new(fs_type, 4 * GIB);
    let engine = Engine::open(&fs.path().join("state")).unwrap();
    let (small, large) = (
        new_pool(&engine, &fs, "small"),
        new_pool(&engine, &fs, "large"),
    );
    fill_to(&engine, &small, 100);
    let (filling, _) = timed(|| fill_to(&engine, &large, 10_000));
    let (mut at_100, mut at_10k) = (Times::default(), Times::default());
    for round in 0..ROUNDS {
        // Which pool goes first alternates too (a batch pays for the log flushes the
        // previous one left behind).
        let range = round * BATCH..(round + 1) * BATCH;
        if round % 2 == 0 {
            at_100 = at_100 + time_creates(&engine, &small, "new", range.clone());
            at_10k = at_10k + time_creates(&engine, &large, "new", range);
        } else {
            at_10k = at_10k + time_creates(&engine, &large, "new", range.clone());
            at_100 = at_100 + time_creates(&engine, &small, "new", range);
        }
    }
    let n = (BATCH * ROUNDS) as f64;
    let rate = |t: Times| n / t.wall.as_secs_f64();
    let cpu_us = |t: Times| t.cpu.as_secs_f64() * 1e6 / n;
    let ratio = rate(at_10k) / rate(at_100);
    println!(
        "{:<6} create rate ({} origins each, alternating batches): {:.0}/s with 100 volumes, {:.0}/s with 10 000: {ratio:.2}×  {} (≥0.8×); CPU per create {:.0} µs vs {:.0} µs",
        fs_type.name(),
        BATCH * ROUNDS,
        rate(at_100),
        rate(at_10k),
        verdict(ratio >= 0.8),
        cpu_us(at_100),
        cpu_us(at_10k)
    );
    println!(
        "{:<6} (filling to 10 000 with volatile volumes, one state record each: {:.0}/s)",
        fs_type.name(),
        9_900.0 / filling.as_secs_f64()
    );
}

// ---- 2. startup ----

const TEMPLATE: &str = "vm-templates/tpl/root";
const REVISION: &str = "private.img.1@2024-01-01T00:00:00Z";

fn config(vid: &str, kind: usize) -> VolumeConfig {
    let (snap_on_start, save_on_stop) = [(false, true), (true, false), (false, false)][kind];
    VolumeConfig {
        vid: Vid::parse(vid).unwrap(),
        size: 2 * GIB,
        rw: kind != 1,
        snap_on_start,
        save_on_stop,
        source: (kind == 1).then(|| Vid::parse(TEMPLATE).unwrap()),
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral: None,
        committed_image_shared: false,
        revision_notes: Default::default(),
    }
}

/// The volumes of a pool of `n`: the template, then per VM private/root/volatile.
fn configs(n: usize) -> Vec<VolumeConfig> {
    let mut all = vec![config(TEMPLATE, 0)];
    for i in 0..(n - 1) {
        let vm = i / 3;
        let name = ["private", "root", "volatile"][i % 3];
        all.push(config(&format!("appvms/vm{vm:05}/{name}"), i % 3));
    }
    all
}

fn sparse(path: &Path) {
    File::create(path)
        .and_then(|f| f.set_len(2 * GIB))
        .expect("create image");
}

/// The files of the pool's VMs: origins with clean, precache and a revision; every
/// tenth VM started (dirty images; the snapshot's clean a hardlink of the template's).
fn write_pool_files(dir: &Path, volumes: usize) {
    let template = dir.join("vm-templates/tpl");
    std::fs::create_dir_all(&template).unwrap();
    sparse(&template.join("root.img"));
    for vm in 0..volumes.div_ceil(3) {
        let d = dir.join(format!("appvms/vm{vm:05}"));
        std::fs::create_dir_all(&d).unwrap();
        for file in ["private.img", "private-precache.img", REVISION] {
            sparse(&d.join(file));
        }
        if vm % 10 == 0 {
            for file in ["private-dirty.img", "root-dirty.img", "volatile-dirty.img"] {
                sparse(&d.join(file));
            }
            std::fs::hard_link(template.join("root.img"), d.join("root.img")).unwrap();
        }
    }
}

/// The state of a pool: the first half of its volumes in the snapshot, the rest as
/// journal records (the documented formats, see `store.rs`).
fn write_pool_state(state: &Path, pool: &PoolConfig, volumes: &[VolumeConfig]) {
    let half = volumes.len() / 2;
    let mut snapshot = format!(
        "{{\"pool\": {},\n\"seq\": 0,\n\"removing\": [],\n\"volumes\": {{",
        json(pool)
    );
    for (i, v) in volumes[..half].iter().enumerate() {
        let sep = if i == 0 { "\n" } else { ",\n" };
        snapshot.push_str(&format!("{sep}{}: {}", json(&v.vid), json(v)));
    }
    snapshot.push_str("\n}}\n");
    let journal: String = volumes[half..]
        .iter()
        .enumerate()
        .map(|(i, v)| frame(&format!("{{\"seq\":{},\"put\":{}}}", i + 1, json(v))))
        .collect();
    let dir = state.join("pools");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.json", pool.name)), snapshot).unwrap();
    std::fs::write(dir.join(format!("{}.journal", pool.name)), journal).unwrap();
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

fn write_startup_world(fs: &LoopFs, pools: usize, per_pool: usize) {
    let state = fs.path().join("state");
    for p in 0..pools {
        let dir = fs.path().join(format!("pool{p}"));
        for class in ["appvms", "vm-templates"] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
        }
        write_pool_files(&dir, per_pool);
        let config = PoolConfig {
            name: PoolName::parse(&format!("pool{p}")).unwrap(),
            dir_path: dir,
            setup_check: true,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        };
        write_pool_state(&state, &config, &configs(per_pool));
    }
    rustix::fs::syncfs(File::open(fs.path()).unwrap()).unwrap();
}

/// Open, then every live view: per volume (`volume_info`), or per pool
/// (`volume_infos`). Returns (open, open + views).
fn startup(state: &Path, volumes: usize, per_pool: bool) -> (Times, Times) {
    let (open, engine) = timed_cpu(|| Engine::open(state).expect("open"));
    let (views, read) = timed_cpu(|| {
        let mut read = 0;
        for pool in engine.pool_names() {
            if per_pool {
                read += engine.volume_infos(&pool).unwrap().len();
                continue;
            }
            for vid in engine.volume_vids(&pool).unwrap() {
                let vol = VolumeRef {
                    pool: pool.clone(),
                    vid,
                };
                engine.volume_info(&vol).expect("volume_info");
                read += 1;
            }
        }
        read
    });
    assert_eq!(read, volumes);
    (open, open + views)
}

fn bench_startup(fs_type: FsType) {
    for (pools, per_pool) in [(1, 10_000), (10, 10_000)] {
        let mut fs = LoopFs::new(fs_type, 8 * GIB);
        let (generated, _) = timed(|| write_startup_world(&fs, pools, per_pool));
        let state = fs.path().join("state");
        let total = pools * per_pool;
        for per_pool_views in [false, true] {
            let how = if per_pool_views {
                "volume_infos per pool"
            } else {
                "volume_info each    "
            };
            fs.remount();
            let (open_cold, cold) = startup(&state, total, per_pool_views);
            let (open_warm, warm) = startup(&state, total, per_pool_views);
            println!(
                "{:<6} start-up, {total:>6} volumes in {pools:>2} pool(s), {how}: cold: open {open_cold}, open + views {cold}; warm: open {open_warm}, open + views {warm}",
                fs_type.name(),
            );
        }
        println!(
            "{:<6} (world written in {:.0} s)",
            fs_type.name(),
            generated.as_secs_f64()
        );
    }
}

// ---- 3. snapshots ----

const SNAPSHOTS: usize = 100;

fn template_with_snapshots(engine: &Engine, pool: &PoolName) -> Vec<VolumeRef> {
    let template = vref(pool, TEMPLATE);
    engine
        .create_volume(&template, origin(256 * MIB), &ctx())
        .unwrap();
    let dirty = engine.start(&template, &ctx()).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&dirty)
        .unwrap();
    for i in 0..64 {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&pattern(i, 0, MIB as usize), i * 4 * MIB)
            .unwrap();
    }
    file.sync_all().unwrap();
    engine.stop(&template, &ctx()).unwrap();
    (0..SNAPSHOTS)
        .map(|i| {
            let vol = vref(pool, &format!("appvms/disp{i}/root"));
            let spec = VolumeSpec {
                snap_on_start: true,
                source: Some(template.vid.clone()),
                ..Default::default()
            };
            engine.create_volume(&vol, spec, &ctx()).unwrap();
            vol
        })
        .collect()
}

fn stop_all(engine: &Engine, snapshots: &[VolumeRef]) {
    for vol in snapshots {
        engine.stop(vol, &ctx()).unwrap();
    }
    rustix::fs::sync();
}

fn bench_snapshots(fs_type: FsType) {
    let fs = LoopFs::new(fs_type, 8 * GIB);
    let engine = Arc::new(Engine::open(&fs.path().join("state")).unwrap());
    let pool = new_pool(&engine, &fs, "snap");
    let snapshots = template_with_snapshots(&engine, &pool);
    rustix::fs::sync();
    let (mut one_by_one, mut at_once) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (took, _) = timed(|| {
            for vol in &snapshots {
                engine.start(vol, &ctx()).unwrap();
            }
        });
        one_by_one.push(took);
        stop_all(&engine, &snapshots);
        let barrier = Arc::new(Barrier::new(SNAPSHOTS + 1));
        let threads: Vec<_> = snapshots
            .iter()
            .cloned()
            .map(|vol| {
                let (engine, barrier) = (engine.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    engine.start(&vol, &ctx()).map(|_| ())
                })
            })
            .collect();
        let (took, _) = timed(|| {
            barrier.wait();
            for t in threads {
                t.join().unwrap().expect("start");
            }
        });
        at_once.push(took);
        stop_all(&engine, &snapshots);
    }
    one_by_one.sort();
    at_once.sort();
    let (seq, par) = (one_by_one[1], at_once[1]);
    let ratio = par.as_secs_f64() / seq.as_secs_f64();
    println!(
        "{:<6} {SNAPSHOTS} snapshot starts of one template: one after another {}, all at once {}: {ratio:.2}×  {} (≤0.5×; medians of 3)",
        fs_type.name(),
        ms(seq),
        ms(par),
        verdict(ratio <= 0.5)
    );
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("the scale benchmark needs root (it makes loop-mounted filesystems)");
        std::process::exit(1);
    }
    let fs_type = match std::env::var("QSD_BENCH_FS").as_deref() {
        Ok("xfs") => FsType::Xfs,
        Ok("ext4") => FsType::Ext4,
        _ => FsType::Btrfs,
    };
    let part = std::env::var("QSD_BENCH_PART").ok();
    let wanted = |name: &str| part.as_deref().is_none_or(|p| p == name);
    if wanted("create") {
        bench_create(fs_type);
    }
    if wanted("startup") {
        bench_startup(fs_type);
    }
    if wanted("snapshots") {
        bench_snapshots(fs_type);
    }
}
