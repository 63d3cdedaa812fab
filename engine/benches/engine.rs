//! Engine benchmark (`cargo bench -p qubes-storage-engine`, root only; not a timed
//! test: it prints a table and asserts nothing). On loop-mounted btrfs, XFS
//! (`-m reflink=1`) and ext4 (`setup_check = false`) it builds a 2 GiB origin volume
//! holding 800 MiB of data in 2000 scattered ranges through ImportData, then times the
//! engine's create, start, stop (with commit), revert, resize (halted, one sector
//! more each time) and clone (import_volume within the pool; on ext4 the
//! hole-preserving byte copy) — medians of several runs — a VM's three volumes
//! (origin, snapshot, volatile) stopped one after another and all at once from three
//! threads (group commit: target ≤ 0.5×, with the barriers issued), 16 VMs' 48 volumes
//! stopped at once from 48 threads against one VM's three (target ≤ 4×, with the CPU
//! time per volume: the bus benchmark's 16-VM figure without the bus) — and the ImportDataEnd that
//! committed the import (one run: it commits a private copy of the import file, a
//! reflink or on ext4 a byte copy, so that the importer's fd cannot reach committed
//! data). Beside each time it prints the **barriers** the operation waited for
//! (`qubes_storage_engine::barrier`: fsync, fdatasync, directory fsync, syncfs rounds)
//! and those of the work it left for after its reply (discarded files deleted, the
//! precache made on btrfs and XFS), which runs untimed before the next measurement
//! (`Engine::settle`). And floors measured in the same run on the same filesystem:
//!
//! * a durable copy of the image: raw FICLONE + fsync of the clone (btrfs, XFS), or
//!   `cp --sparse=always` + fsync (ext4);
//! * rename of a copy of the image + fsync(dir); its unlink + fsync(dir); a new sparse
//!   file and a new 1 KiB file created and fsynced; mkdir + fsync(parent); fsync of an
//!   image with nothing to write;
//! * for reference `cp --reflink=always` (btrfs, XFS).
//!
//! Each operation's floor is the sum of the durable steps it cannot avoid (see
//! [`Floors::of`] and `docs/durability.md`); the target is ≤ 1.5× the floor. On ext4 the engine's byte copy is
//! also compared with `cp --sparse=always` + fsync for time and allocated blocks
//! (targets: not slower, not more blocks). PASS/MISS is printed, never asserted. The
//! mounts are undone by `LoopFs`'s `Drop`, also on panic. `QSD_BENCH_FS=btrfs|xfs|ext4`
//! runs one filesystem only.

#[path = "../tests/common_fs/mod.rs"]
mod common_fs;

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common_fs::{allocated_bytes, command, pattern, run_ok, FsType, LoopFs, MIB};
use qubes_storage_engine::barrier::{self, Counts};
use qubes_storage_engine::copy::{self, CopyOptions};
use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};

const GIB: u64 = 1 << 30;
const IMAGE_SIZE: u64 = 2 * GIB;
/// 2000 ranges of 400 KiB (781 MiB), one per 1 MiB slot, 48 slots left empty.
const RANGES: u64 = 2000;
const RANGE_LEN: u64 = 400 << 10;
const TARGET_RATIO: f64 = 1.5;
const POOL: &str = "bench";
const VID: &str = "appvms/bench/private";
/// How many VMs stop at once in the many-VMs figure (as in `benches/compare.rs`).
const VMS: usize = 16;

// ---- timing ----

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One run of an engine operation: its time, the barriers it waited for, and those of
/// the work it left for after its reply.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    took: Duration,
    own: Counts,
    after: Counts,
}

/// Runs `op` on this thread, then (untimed) the work it left for after its reply.
fn measured<T>(engine: &Engine, op: impl FnOnce() -> T) -> (Run, T) {
    let (own_before, all_before) = (barrier::thread_counts(), barrier::total_counts());
    let (took, out) = timed(op);
    let own = barrier::thread_counts().since(&own_before);
    engine.settle();
    let all = barrier::total_counts().since(&all_before);
    let after = all.since(&own);
    (Run { took, own, after }, out)
}

/// The median time of `runs`, with the barriers of the last run (the same each run).
fn summary(runs: Vec<Run>) -> Run {
    let last = *runs.last().expect("at least one run");
    Run {
        took: median(runs.iter().map(|r| r.took).collect()),
        ..last
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// The CPU time this process has used so far, all its threads together.
fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn sync_all() {
    rustix::fs::sync();
}

fn ctx() -> OpCtx {
    OpCtx::quiet("bench")
}

// ---- floors ----

/// The unavoidable costs, measured on this filesystem.
#[derive(Debug, Default)]
struct Floors {
    /// A durable copy of the image: FICLONE + fsync, or cp --sparse=always + fsync.
    copy: Duration,
    /// The raw FICLONE ioctl alone (reflink filesystems).
    ficlone: Option<Duration>,
    /// `cp --reflink=always` (reflink filesystems), for reference.
    cp_reflink: Option<Duration>,
    /// rename of a copy of the image + fsync(dir).
    rename: Duration,
    /// unlink of a copy of the image + fsync(dir).
    unlink: Duration,
    /// A new sparse 2 GiB file: create, ftruncate, fchmod, fsync.
    new_file: Duration,
    /// A new 1 KiB file written and fsynced: at least what the state record of a
    /// create costs (one journal line appended and fdatasynced).
    small_file: Duration,
    /// mkdir + fsync(parent) (the VM directory).
    mkdir: Duration,
    /// fsync of an image whose data is already durable (a stop's fsync of the session
    /// after the VM flushed it).
    fsync_idle: Duration,
}

impl Floors {
    /// The floor of each operation: the durable steps it cannot avoid before its
    /// reply (`docs/durability.md`); a revision is a hard link, discarded files are
    /// deleted and the precache of a reflink pool made after the reply. Without
    /// reflinks the precache is a byte copy made in the call (a durable copy whose name
    /// needs no fsync of the directory).
    fn of(&self, op: &str, reflinks: bool) -> Duration {
        let precache = match (reflinks, op) {
            (true, _) | (false, "start") => Duration::ZERO,
            (false, "create") => self.new_file,
            (false, _) => self.copy,
        };
        self.before_precache(op) + precache
    }

    fn before_precache(&self, op: &str) -> Duration {
        let (copy, rename, new_file) = (self.copy, self.rename, self.new_file);
        match op {
            // VM directory, sparse clean in place, state record
            "create" => self.mkdir + new_file + rename + self.small_file,
            // precache → dirty
            "start" => rename,
            // the session's fsync, then its rename with the revision's link
            "stop" => self.fsync_idle + rename,
            // the target renamed with the revision's link
            "revert" => rename,
            // state record, the new image's durable copy put in place
            "resize" => self.small_file + copy + rename,
            // the durable copy, put in place with the revision's link
            "clone" | "import" => copy + rename,
            _ => unreachable!("no floor for {op}"),
        }
    }
}

fn new_file_floor(dir: &Path, runs: usize, content: &[u8], size: u64) -> Duration {
    let path = dir.join("new-file");
    let samples = (0..runs)
        .map(|_| {
            let (took, _) = timed(|| {
                let file = File::create(&path).unwrap();
                file.write_all_at(content, 0).unwrap();
                file.set_len(size).unwrap();
                file.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                file.sync_all().unwrap();
            });
            std::fs::remove_file(&path).unwrap();
            took
        })
        .collect();
    median(samples)
}

fn mkdir_floor(dir: &Path, runs: usize) -> Duration {
    let sub = dir.join("new-dir");
    let samples = (0..runs)
        .map(|_| {
            let (took, _) = timed(|| {
                std::fs::create_dir(&sub).unwrap();
                fsync_dir(dir);
            });
            std::fs::remove_dir(&sub).unwrap();
            took
        })
        .collect();
    median(samples)
}

/// fsync of a file with nothing left to write.
fn fsync_idle_floor(file: &Path, runs: usize) -> Duration {
    sync_all();
    let samples = (0..runs)
        .map(|_| timed(|| File::open(file).unwrap().sync_all().unwrap()).0)
        .collect();
    median(samples)
}

fn fsync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

fn unlink_durably(path: &Path) -> Duration {
    timed(|| {
        std::fs::remove_file(path).unwrap();
        fsync_dir(path.parent().unwrap());
    })
    .0
}

/// What one way of copying the image durably costs: the copy (+ fsync), then a rename
/// of the copy + fsync(dir), then its unlink + fsync(dir); medians.
struct CopyFloor {
    copy: Duration,
    /// The raw FICLONE ioctl or the cp process alone, without the fsync.
    copy_alone: Duration,
    rename: Duration,
    unlink: Duration,
    allocated: u64,
}

/// `copy(dst)` makes a copy of the image at `dst` and returns the time of the copy
/// without its fsync; the fsync, rename and unlink are timed here.
fn copy_floor(dir: &Path, runs: usize, copy: impl Fn(&Path) -> Duration) -> CopyFloor {
    let (dst, renamed) = (dir.join("floor-copy"), dir.join("floor-copy-renamed"));
    let (mut copies, mut alones, mut renames, mut unlinks, mut allocated) =
        (vec![], vec![], vec![], vec![], 0);
    for _ in 0..runs {
        sync_all();
        let alone = copy(&dst);
        let (fsync, _) = timed(|| File::open(&dst).unwrap().sync_all().unwrap());
        allocated = allocated_bytes(&dst);
        let (rename, _) = timed(|| {
            std::fs::rename(&dst, &renamed).unwrap();
            fsync_dir(dir);
        });
        alones.push(alone);
        copies.push(alone + fsync);
        renames.push(rename);
        unlinks.push(unlink_durably(&renamed));
    }
    CopyFloor {
        copy: median(copies),
        copy_alone: median(alones),
        rename: median(renames),
        unlink: median(unlinks),
        allocated,
    }
}

/// The raw FICLONE ioctl into a fresh file.
fn ficlone(image: &Path, dst: &Path) -> Duration {
    let src = File::open(image).unwrap();
    let out = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dst)
        .unwrap();
    let (took, result) = timed(|| rustix::fs::ioctl_ficlone(&out, &src));
    result.expect("FICLONE");
    took
}

fn cp(args: &[&str], src: &Path, dst: &Path) -> Duration {
    let mut cmd = command("cp", args);
    cmd.arg(src).arg(dst);
    timed(|| run_ok(cmd)).0
}

fn cp_reflink(image: &Path, dir: &Path, runs: usize) -> Duration {
    let dst = dir.join("cp-reflink");
    let samples = (0..runs)
        .map(|_| {
            let took = cp(&["--reflink=always"], image, &dst);
            std::fs::remove_file(&dst).unwrap();
            took
        })
        .collect();
    median(samples)
}

// ---- the pool under test ----

struct Bench {
    fs: LoopFs,
    engine: Engine,
    pool: PoolName,
    pool_dir: PathBuf,
    scratch: PathBuf,
    runs: usize,
}

impl Bench {
    fn new(fs_type: FsType, fs_size: u64, runs: usize) -> Bench {
        let fs = LoopFs::new(fs_type, fs_size);
        let engine = Engine::open(&fs.path().join("state")).expect("Engine::open");
        let pool = PoolName::parse(POOL).unwrap();
        let pool_dir = fs.path().join("pool");
        let spec = PoolSpec {
            name: pool.clone(),
            dir_path: pool_dir.clone(),
            setup_check: fs_type.has_reflink(),
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        };
        engine.create_pool(spec).expect("create pool");
        let scratch = fs.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        Bench {
            fs,
            engine,
            pool,
            pool_dir,
            scratch,
            runs,
        }
    }

    fn vol(&self, vid: &str) -> VolumeRef {
        VolumeRef {
            pool: self.pool.clone(),
            vid: Vid::parse(vid).unwrap(),
        }
    }

    fn clean(&self) -> PathBuf {
        self.pool_dir.join("appvms/bench/private.img")
    }

    fn create_origin(&self, vid: &str) {
        let spec = VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            save_on_stop: true,
            ..Default::default()
        };
        self.engine
            .create_volume(&self.vol(vid), spec, &ctx())
            .expect("create volume");
    }

    fn remove(&self, vid: &str) {
        self.engine
            .remove_volume(&self.vol(vid), &ctx())
            .expect("remove volume");
    }

    /// Creating a fresh origin volume (removed again untimed).
    fn time_create(&self) -> Run {
        let runs = (0..self.runs)
            .map(|i| {
                let vid = format!("appvms/create{i}/private");
                sync_all();
                let (run, _) = measured(&self.engine, || self.create_origin(&vid));
                self.remove(&vid);
                run
            })
            .collect();
        summary(runs)
    }

    /// The benchmark volume: 800 MiB of data in 2000 ranges of a 2 GiB image, written
    /// through import_data as the import script would, then committed and synced.
    /// Returns how long the commit (import_data_end) took.
    fn fill_volume(&self) -> Run {
        self.create_origin(VID);
        let vol = self.vol(VID);
        let file = self
            .engine
            .import_data(&vol, IMAGE_SIZE, false, &ctx())
            .expect("import_data");
        let block = pattern(1, 0, RANGE_LEN as usize);
        let slot_count = IMAGE_SIZE / MIB;
        for i in 0..RANGES {
            let slot = i * slot_count / RANGES;
            let offset = slot * MIB + (i * 37 % 150) * 4096;
            let mut data = block.clone();
            data[..8].copy_from_slice(&i.to_le_bytes());
            file.write_all_at(&data, offset).expect("write data");
        }
        file.sync_data().expect("fdatasync");
        drop(file);
        sync_all();
        let (run, ended) = measured(&self.engine, || {
            self.engine.import_data_end(&vol, true, &ctx())
        });
        ended.expect("import_data_end");
        sync_all();
        run
    }

    /// Start and stop (with commit), alternating.
    fn time_start_stop(&self) -> (Run, Run) {
        let vol = self.vol(VID);
        let (mut starts, mut stops) = (Vec::new(), Vec::new());
        for _ in 0..self.runs {
            sync_all();
            let (start, _) = measured(&self.engine, || {
                self.engine.start(&vol, &ctx()).expect("start")
            });
            starts.push(start);
            sync_all();
            let (stop, _) = measured(&self.engine, || {
                self.engine.stop(&vol, &ctx()).expect("stop")
            });
            stops.push(stop);
        }
        (summary(starts), summary(stops))
    }

    /// The three volumes of VM `name` — an origin `private`, a snapshot `root` of the
    /// bench volume, a `volatile` — created.
    fn create_vm(&self, name: &str) -> [VolumeRef; 3] {
        let [private, root, volatile] =
            ["private", "root", "volatile"].map(|v| format!("appvms/{name}/{v}"));
        self.create_origin(&private);
        let snapshot = VolumeSpec {
            size: IMAGE_SIZE,
            snap_on_start: true,
            source: Some(Vid::parse(VID).unwrap()),
            ..Default::default()
        };
        let volatile_spec = VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            ..Default::default()
        };
        for (vid, spec) in [(&root, snapshot), (&volatile, volatile_spec)] {
            let created = self.engine.create_volume(&self.vol(vid), spec, &ctx());
            created.expect("create volume");
        }
        [private, root, volatile].map(|vid| self.vol(&vid))
    }

    /// Starts `vms` one volume after another, then [`Bench::write_sessions`].
    fn start_with_session(&self, vms: &[[VolumeRef; 3]]) {
        for vol in vms.iter().flatten() {
            self.engine.start(vol, &ctx()).expect("start");
        }
        self.write_sessions(vms);
    }

    /// Writes a session of 4 MiB into each started private image of `vms` and flushes
    /// it, then lets the after-reply work finish and syncs, so that a stop measured
    /// next finds a quiet filesystem.
    fn write_sessions(&self, vms: &[[VolumeRef; 3]]) {
        let session = pattern(9, 0, (256 << 10) as usize);
        for vm in vms {
            let private = self.pool_dir.join(format!("{}-dirty.img", vm[0].vid));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(private)
                .unwrap();
            for piece in 0..16 {
                file.write_all_at(&session, piece * 50 * MIB).unwrap();
            }
            file.sync_data().unwrap();
        }
        self.engine.settle();
        sync_all();
    }

    /// Stops every volume of `vms` at once, one thread each (as the daemon runs
    /// concurrent calls): how long it took, the barriers and the CPU time the process
    /// used (all threads).
    fn stop_at_once(&self, vms: &[[VolumeRef; 3]]) -> (Duration, Counts, Duration) {
        let before = barrier::total_counts();
        let cpu = process_cpu();
        let (took, _) = timed(|| {
            std::thread::scope(|scope| {
                for vol in vms.iter().flatten() {
                    scope.spawn(|| self.engine.stop(vol, &ctx()).expect("stop"));
                }
            })
        });
        let used = process_cpu().saturating_sub(cpu);
        (took, barrier::total_counts().since(&before), used)
    }

    /// A VM's three volumes stopped one after another and all at once, each time after
    /// a start and a session of 4 MiB written into the private image and flushed.
    /// Returns the medians (in turn, at once) with the barriers the filesystem saw
    /// during the last run of each.
    fn time_vm_stop(&self) -> VmFigures {
        let vm = [self.create_vm("vm3")];
        let (mut in_turn, mut at_once) = (Vec::new(), Vec::new());
        let (mut in_turn_counts, mut at_once_counts) = (Counts::default(), Counts::default());
        let (mut starts, mut start_counts) = (Vec::new(), Counts::default());
        for run in 0..2 * self.runs {
            sync_all();
            let before = barrier::total_counts();
            let (took, _) = timed(|| {
                for vol in &vm[0] {
                    self.engine.start(vol, &ctx()).expect("start");
                }
            });
            starts.push(took);
            start_counts = barrier::total_counts().since(&before);
            self.write_sessions(&vm);
            match run % 2 {
                0 => {
                    let before = barrier::total_counts();
                    let (took, _) = timed(|| {
                        vm[0]
                            .iter()
                            .for_each(|v| self.engine.stop(v, &ctx()).expect("stop"))
                    });
                    in_turn.push(took);
                    in_turn_counts = barrier::total_counts().since(&before);
                }
                _ => {
                    let (took, counts, _) = self.stop_at_once(&vm);
                    at_once.push(took);
                    at_once_counts = counts;
                }
            }
            self.engine.settle();
        }
        for vol in vm.iter().flatten() {
            self.remove(&vol.vid.to_string());
        }
        VmFigures {
            start: (median(starts), start_counts),
            in_turn: (median(in_turn), in_turn_counts),
            at_once: (median(at_once), at_once_counts),
        }
    }

    /// [`VMS`] VMs' volumes stopped all at once against one VM's three at once
    /// (alternating, each after a start with a session): medians of the time and of
    /// the CPU time per volume, with the barriers of the last run. The bus
    /// benchmark's 16-VM figure (`cargo bench --bench compare`) is this plus the bus.
    fn time_many_vms_stop(&self) -> ManyVmFigures {
        let vms: Vec<[VolumeRef; 3]> = (0..VMS)
            .map(|i| self.create_vm(&format!("many{i}")))
            .collect();
        let (mut one, mut many) = (Vec::new(), Vec::new());
        let (mut one_cpu, mut many_cpu) = (Vec::new(), Vec::new());
        let mut many_counts = Counts::default();
        for _ in 0..self.runs {
            self.start_with_session(&vms[..1]);
            let (took, _, cpu) = self.stop_at_once(&vms[..1]);
            one.push(took);
            one_cpu.push(cpu / 3);
            self.engine.settle();
            self.start_with_session(&vms);
            let (took, counts, cpu) = self.stop_at_once(&vms);
            many.push(took);
            many_cpu.push(cpu / (3 * VMS as u32));
            many_counts = counts;
            self.engine.settle();
        }
        for vol in vms.iter().flatten() {
            self.remove(&vol.vid.to_string());
        }
        ManyVmFigures {
            one: (median(one), median(one_cpu)),
            many: (median(many), median(many_cpu), many_counts),
        }
    }

    fn time_revert(&self) -> Run {
        let vol = self.vol(VID);
        let runs = (0..self.runs)
            .map(|_| {
                sync_all();
                let revert = || self.engine.revert(&vol, None, &ctx()).expect("revert");
                measured(&self.engine, revert).0
            })
            .collect();
        summary(runs)
    }

    /// A halted resize, one sector larger each run.
    fn time_resize(&self) -> Run {
        let vol = self.vol(VID);
        let runs = (1..=self.runs as u64)
            .map(|i| {
                sync_all();
                let size = IMAGE_SIZE + i * 512;
                let resize = || {
                    self.engine
                        .resize(&vol, size, false, &ctx())
                        .expect("resize")
                };
                measured(&self.engine, resize).0
            })
            .collect();
        summary(runs)
    }

    /// import_volume of the benchmark volume into a fresh volume.
    fn time_clone(&self) -> Run {
        let source = self.vol(VID);
        let runs = (0..self.runs)
            .map(|i| {
                let vid = format!("appvms/clone{i}/private");
                self.create_origin(&vid);
                self.engine.settle();
                sync_all();
                let (run, _) = measured(&self.engine, || {
                    self.engine
                        .import_volume(&self.vol(&vid), &source, &ctx())
                        .expect("clone")
                });
                self.remove(&vid);
                run
            })
            .collect();
        summary(runs)
    }

    fn measure_floors(&self, fs_type: FsType) -> (Floors, CopyFloor) {
        let image = self.clean();
        let copy = if fs_type.has_reflink() {
            copy_floor(&self.scratch, self.runs, |dst| ficlone(&image, dst))
        } else {
            copy_floor(&self.scratch, self.runs, |dst| {
                cp(&["--sparse=always"], &image, dst)
            })
        };
        let floors = Floors {
            copy: copy.copy,
            ficlone: fs_type.has_reflink().then_some(copy.copy_alone),
            cp_reflink: fs_type
                .has_reflink()
                .then(|| cp_reflink(&image, &self.scratch, self.runs)),
            rename: copy.rename,
            unlink: copy.unlink,
            new_file: new_file_floor(&self.scratch, 10, &[], IMAGE_SIZE),
            small_file: new_file_floor(&self.scratch, 10, &[b'x'; 1024], 1024),
            mkdir: mkdir_floor(&self.scratch, 10),
            fsync_idle: fsync_idle_floor(&image, 10),
        };
        (floors, copy)
    }

    /// The engine's own copy of the image (the copy engine's fallback on ext4):
    /// median time and the copy's allocated bytes.
    fn time_engine_copy(&self) -> (Duration, u64) {
        let dst = self.scratch.join("engine-copy");
        let (mut samples, mut allocated) = (Vec::new(), 0);
        for _ in 0..self.runs {
            sync_all();
            let (took, result) =
                timed(|| copy::copy_path(&self.clean(), &dst, CopyOptions::default(), &ctx()));
            result.expect("engine copy");
            allocated = allocated_bytes(&dst);
            samples.push(took);
            std::fs::remove_file(&dst).unwrap();
        }
        (median(samples), allocated)
    }
}

// ---- report ----

fn print_row(fs: FsType, op: &str, run: &Run, floor: Duration) {
    let ratio = run.took.as_secs_f64() / floor.as_secs_f64().max(1e-9);
    let target = verdict(ratio <= TARGET_RATIO);
    println!(
        "{:<6} {:<8} {:>10} {:>10} {:>6.2}  {target:<4} {:<28} {}",
        fs.name(),
        op,
        ms(run.took),
        ms(floor),
        ratio,
        run.own.to_string(),
        run.after
    );
}

/// A VM's three volumes (origin, snapshot, volatile): started one after another, and
/// stopped one after another and at once; each a median with the barriers the
/// filesystem saw in the last run.
struct VmFigures {
    start: (Duration, Counts),
    in_turn: (Duration, Counts),
    at_once: (Duration, Counts),
}

/// [`VMS`] VMs stopped at once and one VM (its three volumes at once): (time, CPU
/// time per volume), the many's with the barriers of the last run.
struct ManyVmFigures {
    one: (Duration, Duration),
    many: (Duration, Duration, Counts),
}

/// The target for [`VMS`] VMs at once against one VM.
const MANY_VMS_TARGET: f64 = 4.0;

fn print_many_vms(fs: FsType, figures: ManyVmFigures) {
    let ((one, one_cpu), (many, many_cpu, counts)) = (figures.one, figures.many);
    let ratio = many.as_secs_f64() / one.as_secs_f64().max(1e-9);
    println!(
        "{:<6} {VMS} VMs' {} volumes stopped at once {} [{counts}] ÷ one VM's 3 {}: {ratio:.1}× {} (≤{MANY_VMS_TARGET}×); CPU per volume {} µs (one VM {} µs)",
        fs.name(),
        3 * VMS,
        ms(many),
        ms(one),
        verdict(ratio <= MANY_VMS_TARGET),
        many_cpu.as_micros(),
        one_cpu.as_micros(),
    );
}

/// A VM's three volumes started, and stopped one after another and at once (target ≤
/// 0.5×).
fn print_vm_stop(fs: FsType, vm: VmFigures) {
    let ((in_turn, turn_counts), (at_once, once_counts)) = (vm.in_turn, vm.at_once);
    println!(
        "{:<6} a VM's 3 volumes started one after another: {} [{}]",
        fs.name(),
        ms(vm.start.0),
        vm.start.1
    );
    let ratio = at_once.as_secs_f64() / in_turn.as_secs_f64().max(1e-9);
    println!(
        "{:<6} a VM's 3 volumes stopped: in turn {} [{}], at once {} [{}]: {ratio:.2}× {} (≤0.5×)",
        fs.name(),
        ms(in_turn),
        turn_counts,
        ms(at_once),
        once_counts,
        verdict(ratio <= 0.5)
    );
}

fn print_floors(fs: FsType, floors: &Floors) {
    let mut parts = vec![
        format!("durable copy {}", ms(floors.copy)),
        format!("rename+fsync(dir) {}", ms(floors.rename)),
        format!("unlink copy+fsync(dir) {}", ms(floors.unlink)),
        format!("new sparse file+fsync {}", ms(floors.new_file)),
        format!("new 1 KiB file+fsync {}", ms(floors.small_file)),
        format!("mkdir+fsync(parent) {}", ms(floors.mkdir)),
        format!("fsync of a synced image {}", ms(floors.fsync_idle)),
    ];
    if let Some(ficlone) = floors.ficlone {
        parts.push(format!("raw FICLONE {}", ms(ficlone)));
    }
    if let Some(cp_reflink) = floors.cp_reflink {
        parts.push(format!("cp --reflink=always {}", ms(cp_reflink)));
    }
    println!("{:<6} floors: {}", fs.name(), parts.join(", "));
}

fn print_ext4_copy(engine: (Duration, u64), cp: &CopyFloor) {
    let (took, allocated) = engine;
    println!(
        "ext4   engine copy {} vs cp --sparse=always+fsync {} (cp alone {}): {}",
        ms(took),
        ms(cp.copy),
        ms(cp.copy_alone),
        verdict(took <= cp.copy)
    );
    println!(
        "ext4   allocated: engine copy {} MiB vs cp --sparse=always {} MiB: {}",
        allocated / MIB,
        cp.allocated / MIB,
        verdict(allocated <= cp.allocated)
    );
}

fn bench_fs(fs_type: FsType, fs_size: u64, runs: usize) {
    let started = Instant::now();
    let bench = Bench::new(fs_type, fs_size, runs);
    let create = bench.time_create();
    let import = bench.fill_volume();
    let (floors, copy_floor) = bench.measure_floors(fs_type);
    let (start, stop) = bench.time_start_stop();
    let revert = bench.time_revert();
    let resize = bench.time_resize();
    let clone = bench.time_clone();
    let vm_stop = bench.time_vm_stop();
    let many_vms = fs_type.has_reflink().then(|| bench.time_many_vms_stop());
    for (op, run) in [
        ("create", create),
        ("start", start),
        ("stop", stop),
        ("revert", revert),
        ("resize", resize),
        ("clone", clone),
        ("import", import),
    ] {
        print_row(fs_type, op, &run, floors.of(op, fs_type.has_reflink()));
    }
    print_floors(fs_type, &floors);
    print_vm_stop(fs_type, vm_stop);
    if let Some(figures) = many_vms {
        print_many_vms(fs_type, figures);
    }
    if !fs_type.has_reflink() {
        print_ext4_copy(bench.time_engine_copy(), &copy_floor);
    }
    println!(
        "{:<6} ({} runs per figure, {:.0} s, on {})",
        fs_type.name(),
        runs,
        started.elapsed().as_secs_f64(),
        bench.fs.path().display()
    );
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("the engine benchmark needs root (it makes loop-mounted filesystems)");
        std::process::exit(1);
    }
    println!(
        "2 GiB image, {} MiB of data in {RANGES} ranges; medians",
        RANGES * RANGE_LEN / MIB
    );
    println!(
        "{:<6} {:<8} {:>10} {:>10} {:>6}  {:<4} {:<36} after the reply",
        "fs", "op", "median", "floor", "ratio", "≤1.5", "barriers before the reply"
    );
    let only = std::env::var("QSD_BENCH_FS").ok();
    let wanted = |fs: FsType| only.as_deref().is_none_or(|name| name == fs.name());
    for (fs_type, fs_size, runs) in [
        (FsType::Btrfs, 4 * GIB, 5),
        (FsType::Xfs, 4 * GIB, 5),
        (FsType::Ext4, 10 * GIB, 3),
    ] {
        if wanted(fs_type) {
            bench_fs(fs_type, fs_size, runs);
        }
    }
}
