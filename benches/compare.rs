//! `cargo bench --bench compare`: qubes-storaged over the bus, side by side with the Qubes
//! Python `file-reflink` driver it replaces (issue 14). Printed, never asserted.
//!
//! On one loop-mounted filesystem of each kind (btrfs, XFS with reflink=1, ext4;
//! `QSD_BENCH_FS=btrfs|xfs|ext4` picks one), the service gets a pool `rs` and the
//! Python driver a pool `py`, with the same volumes: a template root and a VM `work`
//! (an origin `private`, a snapshot `root` of the template, a `volatile`) whose images
//! are 1 GiB holding 390 MiB of data in 1000 ranges, and 16 more VMs of the same three
//! kinds. Then every scenario runs [`runs`] times, the two sides alternating run by run
//! on the same filesystem, each side's median printed with their ratio against the
//! issue's target:
//!
//! * through the bus (a plain zbus client) for the service; in-process for the Python
//!   driver (asyncio, as qubesd calls it: `benches/compare/reflink_runner.py`, no IPC
//!   in its figure);
//! * create (an origin), start, stop (commit of a session that wrote 4 MiB and
//!   flushed), revert, resize (halted), import end (ImportDataEnd after 390 MiB were
//!   written through the import file and not flushed; and once more with the data
//!   flushed by the client), same-pool clone (ImportVolume of the template root into a
//!   fresh volume);
//! * a VM's three volumes started at once (as qubesd starts a VM);
//! * a VM's three volumes stopped concurrently against one after another, and 16 VMs
//!   (48 volumes) stopped at once against one VM, with the CPU time per volume stopped
//!   of the service, the bus daemon and this client (each process's CPU-time clock
//!   over the timed calls, all threads; the work after the replies is not in it);
//! * on ext4 also the bytes each operation wrote to the disk (the loop device's
//!   counters, after the work each side left for later and a sync).
//!
//! The service's work after a reply (discarded files, the precache on reflink pools)
//! is waited for before every measurement, so neither side pays for the other's.
//!
//! **The Python driver is not part of this repository.** The bench needs a
//! qubes-core-admin checkout (`QSD_QUBES_CHECKOUT`, e.g. made with
//! `git clone https://github.com/QubesOS/qubes-core-admin`) and a shim package that
//! makes its `qubes.storage.reflink` importable outside Qubes (`QSD_PY_SHIM`, a
//! directory put first on `PYTHONPATH`; README, "Comparing with the Python driver", says
//! what it must provide). Without them it says so and skips. Needs root (loop mounts).
//! `QSD_COMPARE=create,start,stop,revert,resize,import,import-flushed,clone,vm-start,concurrency`
//! runs only the scenarios named; `QSD_COMPARE_RUNS=40` runs each more often than the
//! default 5 (finer medians where a figure is noisy, e.g. btrfs's concurrency); `QSD_BENCH_KEEP_LOG=/some/path` keeps the service's
//! log of each filesystem's run as `/some/path.<fs>` (`RUST_LOG` sets its filter);
//! `QSD_BENCH_DAEMON=/path/to/qubes-storaged` runs another build of the service (to
//! compare two builds on one machine, run by run).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use qubes_storaged_testkit::bus::Bus;
use qubes_storaged_testkit::daemon::{after_reply_work_done, Daemon, DaemonSpec, SERVICE};
use qubes_storaged_testkit::{FsType, LoopFs, MIB};
use serde_json::{json, Value};
use tempfile::TempDir;
use zbus::{Connection, OwnedObjectPath, Variant};

const GIB: u64 = 1 << 30;
const IMAGE: u64 = GIB;
/// 1000 ranges of 400 KiB, one per 1 MiB slot at a varying offset in it.
const RANGES: u64 = 1000;
const RANGE: u64 = 400 << 10;
/// What a VM session writes before its stop: 16 pieces of 256 KiB, then a flush.
const SESSION_PIECES: u64 = 16;
const SESSION_PIECE: u64 = 256 << 10;
/// Runs of each scenario when `QSD_COMPARE_RUNS` does not say.
const RUNS: usize = 5;

/// Runs of each scenario: `QSD_COMPARE_RUNS`, or [`RUNS`].
fn runs() -> usize {
    std::env::var("QSD_COMPARE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS)
}
const VMS: usize = 16;
const REVISIONS_TO_KEEP: i32 = 1;
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

type Opts<'a> = HashMap<&'a str, Variant<'a>>;

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "bench compare: needs root (loop mounts); run `sudo cargo bench --bench compare`"
        );
        return ExitCode::FAILURE;
    }
    let Some(driver) = PythonDriver::from_env() else {
        return ExitCode::SUCCESS;
    };
    let only = std::env::var("QSD_BENCH_FS").ok();
    let mut table = Vec::new();
    for fs in [FsType::Btrfs, FsType::Xfs, FsType::Ext4] {
        if only.as_deref().is_none_or(|name| name == fs.name()) {
            println!("==> {}", fs.name());
            table.extend(bench_fs(fs, &driver));
        }
    }
    print_table(&table);
    ExitCode::SUCCESS
}

// ---- the Python side ----

/// Where the driver and its shim are.
struct PythonDriver {
    checkout: PathBuf,
    shim: PathBuf,
    runner: PathBuf,
}

impl PythonDriver {
    /// From `QSD_QUBES_CHECKOUT` and `QSD_PY_SHIM`; `None` (with the reason printed)
    /// when either is missing.
    fn from_env() -> Option<PythonDriver> {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let (checkout, shim) = (var("QSD_QUBES_CHECKOUT"), var("QSD_PY_SHIM"));
        let skip = |why: String| {
            println!(
                "bench compare: skipped: {why} (see README, \"Comparing with the Python driver\")"
            );
            None
        };
        let Some(checkout) = checkout.filter(|c| c.join("qubes/storage/reflink.py").is_file())
        else {
            return skip("QSD_QUBES_CHECKOUT does not name a qubes-core-admin checkout".into());
        };
        let Some(shim) = shim.filter(|s| s.join("qubes/__init__.py").is_file()) else {
            return skip("QSD_PY_SHIM does not name a directory with the qubes shim".into());
        };
        let runner =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compare/reflink_runner.py");
        Some(PythonDriver {
            checkout,
            shim,
            runner,
        })
    }
}

/// The runner process: JSON commands in, JSON replies out.
struct Python {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Python {
    fn start(driver: &PythonDriver, scratch: &Path) -> Python {
        let mut child = Command::new("python3")
            .arg(&driver.runner)
            .env("PYTHONPATH", &driver.shim)
            .env("QSD_QUBES_CHECKOUT", &driver.checkout)
            .current_dir(scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 with the runner");
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().expect("the runner's stdout"));
        Python {
            child,
            input,
            output,
        }
    }

    fn call(&mut self, cmd: Value) -> Value {
        let input = self.input.as_mut().expect("the runner's stdin");
        writeln!(input, "{cmd}").expect("write to the runner");
        input.flush().expect("flush to the runner");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("read the runner");
        let reply: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the runner said {line:?}: {e}"));
        assert!(
            reply["ok"] == true,
            "python driver: {cmd} failed: {}",
            reply["error"]
        );
        reply
    }

    fn timed(&mut self, cmd: Value) -> Duration {
        Duration::from_secs_f64(self.call(cmd)["ms"].as_f64().expect("ms") / 1e3)
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        drop(self.input.take()); // end of input: the runner returns
        let _ = self.child.wait();
    }
}

// ---- the service's side ----

/// A plain client of the service. Volume paths are looked up once (outside the timed
/// calls) and kept.
struct Ours {
    conn: Connection,
    pool: OwnedObjectPath,
    paths: std::sync::Mutex<HashMap<String, String>>,
}

fn opts() -> Opts<'static> {
    Opts::new()
}

impl Ours {
    async fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> R
    where
        B: serde::Serialize + zbus::DynamicType,
        R: serde::de::DeserializeOwned + zbus::Type,
    {
        let iface_name = format!("org.qubes.Storage.{iface}");
        let reply = self
            .conn
            .call_method(Some(SERVICE), path, Some(iface_name.as_str()), method, body)
            .await
            .unwrap_or_else(|e| panic!("{iface}.{method} on {path}: {e}"));
        reply.body().deserialize().expect("reply body")
    }

    async fn create_pool(conn: Connection, dir: &Path, reflinks: bool) -> Ours {
        let options: Opts = [
            ("dir_path", Variant::from(dir.to_str().unwrap())),
            ("setup_check", Variant::from(reflinks)),
            ("revisions_to_keep", Variant::from(REVISIONS_TO_KEEP)),
        ]
        .into_iter()
        .collect();
        let mut ours = Ours {
            conn,
            pool: OwnedObjectPath::try_from("/").unwrap(),
            paths: Default::default(),
        };
        let body = ("rs", "file-reflink", options);
        ours.pool = ours
            .call("/org/qubes/Storage", "Manager", "CreatePool", &body)
            .await;
        ours
    }

    async fn volume(&self, vid: &str) -> String {
        if let Some(path) = self.paths.lock().unwrap().get(vid) {
            return path.clone();
        }
        let path: OwnedObjectPath = self
            .call(self.pool.as_str(), "Pool", "GetVolume", &(vid, opts()))
            .await;
        self.remember(vid, &path);
        path.to_string()
    }

    fn remember(&self, vid: &str, path: &OwnedObjectPath) {
        let mut paths = self.paths.lock().unwrap();
        paths.insert(vid.to_owned(), path.to_string());
    }

    async fn create(&self, spec: &Spec) {
        let mut config: Opts = [
            ("size", Variant::from(spec.size)),
            ("rw", Variant::from(true)),
            ("save_on_stop", Variant::from(spec.save_on_stop)),
            ("snap_on_start", Variant::from(spec.source.is_some())),
        ]
        .into_iter()
        .collect();
        if let Some(source) = spec.source {
            config.insert("source", Variant::from(source));
        }
        let body = (spec.vid.as_str(), config, opts());
        let path: OwnedObjectPath = self
            .call(self.pool.as_str(), "Pool", "CreateVolume", &body)
            .await;
        self.remember(&spec.vid, &path);
    }

    async fn on_volume<R>(
        &self,
        vid: &str,
        method: &str,
        body: impl serde::Serialize + zbus::DynamicType,
    ) -> R
    where
        R: serde::de::DeserializeOwned + zbus::Type,
    {
        let path = self.volume(vid).await;
        self.call(&path, "Volume", method, &body).await
    }

    async fn start(&self, vid: &str) -> String {
        self.on_volume(vid, "Start", (opts(),)).await
    }

    async fn stop(&self, vid: &str) {
        self.on_volume::<()>(vid, "Stop", (opts(),)).await
    }

    async fn remove(&self, vid: &str) {
        self.on_volume::<()>(vid, "Remove", (opts(),)).await;
        self.paths.lock().unwrap().remove(vid);
    }

    async fn import_data(&self, vid: &str, size: u64) -> File {
        let fd: zbus::OwnedFd = self.on_volume(vid, "ImportData", (size, opts())).await;
        File::from(std::os::fd::OwnedFd::from(fd))
    }

    async fn import_data_end(&self, vid: &str) {
        self.on_volume::<()>(vid, "ImportDataEnd", (true, opts()))
            .await
    }
}

// ---- the world on one filesystem ----

/// One volume both sides have.
#[derive(Debug, Clone)]
struct Spec {
    vid: String,
    size: u64,
    save_on_stop: bool,
    source: Option<&'static str>,
}

const TEMPLATE: &str = "vm-templates/tpl/root";

impl Spec {
    fn origin(vid: impl Into<String>) -> Spec {
        Spec {
            vid: vid.into(),
            size: IMAGE,
            save_on_stop: true,
            source: None,
        }
    }

    /// The three volumes of VM `vm`: private (origin), root (snapshot of the
    /// template's root), volatile.
    fn vm(vm: &str) -> [Spec; 3] {
        [
            Spec::origin(format!("appvms/{vm}/private")),
            Spec {
                vid: format!("appvms/{vm}/root"),
                size: IMAGE,
                save_on_stop: false,
                source: Some(TEMPLATE),
            },
            Spec {
                vid: format!("appvms/{vm}/volatile"),
                size: IMAGE,
                save_on_stop: false,
                source: None,
            },
        ]
    }

    fn python(&self) -> Value {
        let (prefix, rest) = self.vid.split_once('/').unwrap();
        let (vm, name) = rest.split_once('/').unwrap();
        json!({"op": "volume", "pool": "py", "vm": vm, "prefix": prefix, "name": name,
               "size": self.size, "rw": true, "save_on_stop": self.save_on_stop,
               "snap_on_start": self.source.is_some(), "source": self.source})
    }
}

struct World {
    fs: LoopFs,
    bus: Bus,
    daemon: Daemon,
    _state: TempDir,
    runtime: tokio::runtime::Runtime,
    ours: Ours,
    python: Python,
    py_dir: PathBuf,
    rs_dir: PathBuf,
    /// The service's log: it says when the work after its replies is done.
    log: PathBuf,
    loop_device: Option<String>,
}

impl World {
    fn build(fs_type: FsType, driver: &PythonDriver) -> World {
        let size = 16 * GIB;
        let fs = LoopFs::new(fs_type, size);
        let state = tempfile::Builder::new()
            .prefix("qsd-compare-")
            .tempdir()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let bus = Bus::permissive();
        let (log, state_dir) = (state.path().join("daemon.log"), state.path().join("state"));
        let built = PathBuf::from(env!("CARGO_BIN_EXE_qubes-storaged"));
        let binary = std::env::var_os("QSD_BENCH_DAEMON").map_or(built, PathBuf::from);
        let binary = binary.as_path();
        let spec = DaemonSpec::new(binary, &state_dir, &log);
        let (py_dir, rs_dir) = (fs.path().join("py"), fs.path().join("rs"));
        let reflinks = fs_type.has_reflink();
        let (daemon, ours) = runtime.block_on(async {
            let conn = bus.connect().await;
            let daemon = Daemon::start(&spec, &bus, &conn).await;
            (daemon, Ours::create_pool(conn, &rs_dir, reflinks).await)
        });
        let mut python = Python::start(driver, state.path());
        python.call(
            json!({"op": "pool", "name": "py", "dir": py_dir, "setup_check": reflinks,
                           "revisions_to_keep": REVISIONS_TO_KEEP}),
        );
        let loop_device = loop_device_of(fs.path());
        World {
            fs,
            bus,
            daemon,
            _state: state,
            runtime,
            ours,
            python,
            py_dir,
            rs_dir,
            log,
            loop_device,
        }
    }

    fn create_both(&mut self, spec: &Spec) {
        self.python.call(spec.python());
        self.python
            .timed(json!({"op": "create", "vids": [spec.vid]}));
        self.runtime.block_on(self.ours.create(spec));
    }

    /// Fill a volume of both sides with the data ranges, through an import.
    fn fill_both(&mut self, vid: &str) {
        self.import_python(vid, false);
        self.import_ours(vid, false);
    }

    /// ImportData + the data + ImportDataEnd(true) on the Python side; the time of the
    /// ImportDataEnd.
    fn import_python(&mut self, vid: &str, flushed: bool) -> Duration {
        let reply = self
            .python
            .call(json!({"op": "import_data", "vid": vid, "size": IMAGE}));
        let path = PathBuf::from(reply["path"].as_str().expect("path"));
        let file = File::options()
            .write(true)
            .open(&path)
            .expect("open the import");
        write_data(&file, flushed);
        drop(file);
        self.python
            .timed(json!({"op": "import_data_end", "vid": vid, "success": true}))
    }

    fn import_ours(&mut self, vid: &str, flushed: bool) -> Duration {
        let file = self.runtime.block_on(self.ours.import_data(vid, IMAGE));
        write_data(&file, flushed);
        drop(file);
        let begun = Instant::now();
        self.runtime.block_on(self.ours.import_data_end(vid));
        begun.elapsed()
    }

    /// Wait until the service's work after its replies is done (its log says so),
    /// then sync the filesystem.
    fn settle(&self) {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        let done =
            || std::fs::read_to_string(&self.log).is_ok_and(|log| after_reply_work_done(&log));
        while !done() {
            assert!(Instant::now() < deadline, "the service never settled");
            std::thread::sleep(Duration::from_millis(2));
        }
        sync_fs(self.fs.path());
    }

    /// Sectors written to the disk so far (the loop device's counter), if known.
    fn written(&self) -> Option<u64> {
        let dev = self.loop_device.as_deref()?;
        let stat = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).ok()?;
        stat.split_whitespace().nth(6)?.parse().ok()
    }
}

/// The data of a filled image: 1000 ranges of 400 KiB; flushed or not. No block of it
/// is zeros (`cp --sparse=always`, which the Python driver copies with, would make
/// holes of those and write less than a VM's real data costs).
fn write_data(file: &File, flushed: bool) {
    let mut block: Vec<u8> = (0..RANGE)
        .map(|j| (j.wrapping_mul(2_654_435_761) >> 7) as u8 | 1)
        .collect();
    for i in 0..RANGES {
        block[..8].copy_from_slice(&i.to_le_bytes());
        block[8] = block[8].wrapping_add(1);
        let offset = i * (IMAGE / RANGES / MIB) * MIB + (i * 37 % 150) * 4096;
        file.write_all_at(&block, offset).expect("write data");
    }
    if flushed {
        file.sync_data().expect("fdatasync the data");
    }
}

/// A VM session: 4 MiB written into the running image, flushed (as a VM's shutdown
/// flushes its disk).
fn write_session(image: &Path, run: u64) {
    let file = File::options()
        .write(true)
        .open(image)
        .expect("open the image");
    let piece = vec![run as u8 ^ 0x5a; SESSION_PIECE as usize];
    for i in 0..SESSION_PIECES {
        let offset = i * (IMAGE / SESSION_PIECES) + run * 4096;
        file.write_all_at(&piece, offset)
            .expect("write the session");
    }
    file.sync_data().expect("flush the session");
}

fn sync_fs(mount: &Path) {
    let dir = File::open(mount).expect("open the mount point");
    rustix::fs::syncfs(&dir).expect("syncfs");
}

/// `loopN` behind the mount point, from `findmnt`.
fn loop_device_of(mount: &Path) -> Option<String> {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(mount)
        .output()
        .ok()?;
    let source = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    source.strip_prefix("/dev/").map(str::to_owned)
}

// ---- measurements ----

/// What one scenario measured on each side.
#[derive(Debug, Default)]
struct Figures {
    python: Vec<Duration>,
    ours: Vec<Duration>,
    /// Sectors written, per side (ext4 only).
    python_written: Vec<u64>,
    ours_written: Vec<u64>,
    /// CPU time the service, the bus daemon and this client used during each of our
    /// runs.
    ours_cpu: Vec<Cpu>,
}

/// CPU time used during one of our runs, per process (all threads).
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    service: Duration,
    bus: Duration,
    client: Duration,
}

impl Cpu {
    /// What each process has used so far.
    fn now(w: &World) -> Cpu {
        Cpu {
            service: process_cpu(w.daemon.pid()),
            bus: process_cpu(w.bus.pid()),
            client: process_cpu(std::process::id()),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            service: self.service.saturating_sub(before.service),
            bus: self.bus.saturating_sub(before.bus),
            client: self.client.saturating_sub(before.client),
        }
    }

    /// The median of each process's figure.
    fn median_of(samples: &[Cpu]) -> Cpu {
        let of = |pick: fn(&Cpu) -> Duration| median(&samples.iter().map(pick).collect::<Vec<_>>());
        Cpu {
            service: of(|c| c.service),
            bus: of(|c| c.bus),
            client: of(|c| c.client),
        }
    }
}

/// One row of the table.
struct Row {
    fs: FsType,
    what: String,
    python: Duration,
    ours: Duration,
    /// `ours / python` must be at most this.
    target: f64,
    written: Option<(u64, u64)>,
    /// The CPU time of our run (medians).
    ours_cpu: Cpu,
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn median_u64(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

impl Figures {
    fn row(&self, fs: FsType, what: &str, target: f64) -> Row {
        let written =
            (!self.python_written.is_empty() && !self.ours_written.is_empty()).then(|| {
                (
                    median_u64(&self.python_written),
                    median_u64(&self.ours_written),
                )
            });
        Row {
            fs,
            what: what.to_owned(),
            python: median(&self.python),
            ours: median(&self.ours),
            target,
            written,
            ours_cpu: Cpu::median_of(&self.ours_cpu),
        }
    }
}

/// Runs `python` and then `ours` (each after the other side's work settled), counting
/// the sectors each wrote on ext4.
fn both(
    w: &mut World,
    figures: &mut Figures,
    python: impl FnOnce(&mut World) -> Duration,
    ours: impl FnOnce(&mut World) -> Duration,
) {
    let count = w.fs.fs_type() == FsType::Ext4;
    w.settle();
    let before = w.written();
    figures.python.push(python(w));
    w.settle();
    let between = w.written();
    let cpu = Cpu::now(w);
    figures.ours.push(ours(w));
    figures.ours_cpu.push(Cpu::now(w).since(cpu));
    w.settle();
    if let (true, Some(a), Some(b), Some(c)) = (count, before, between, w.written()) {
        figures.python_written.push(b - a);
        figures.ours_written.push(c - b);
    }
}

/// The CPU time process `pid` has used so far, all its threads together, those that
/// have ended included (the process's CPU-time clock). Zero if it cannot be read.
fn process_cpu(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the out-parameters passed to them, which live on
    // this stack frame; a pid that is gone makes the first fail.
    let read = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    if !read {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn time_ours<T>(w: &World, op: impl std::future::Future<Output = T>) -> Duration {
    let begun = Instant::now();
    w.runtime.block_on(op);
    begun.elapsed()
}

/// Is scenario `name` wanted (`QSD_COMPARE=stop,resize,…` picks some; all by default)?
fn wanted(name: &str) -> bool {
    std::env::var("QSD_COMPARE").map_or(true, |list| list.split(',').any(|n| n == name))
}

type Scenario = (&'static str, &'static str, f64, fn(&mut World) -> Figures);

const SCENARIOS: [Scenario; 8] = [
    ("create", "create (origin)", 1.0, measure_create),
    ("start", "start (origin)", 1.0, measure_start),
    ("stop", "stop (commit)", 0.5, measure_stop),
    ("revert", "revert", 0.5, measure_revert),
    ("resize", "resize (halted)", 0.5, measure_resize),
    ("import", "import end", 0.5, |w| measure_import(w, false)),
    ("import-flushed", "import end (data flushed)", 0.5, |w| {
        measure_import(w, true)
    }),
    ("clone", "clone (same pool)", 0.5, measure_clone),
];

fn bench_fs(fs: FsType, driver: &PythonDriver) -> Vec<Row> {
    let mut w = World::build(fs, driver);
    setup_volumes(&mut w);
    let mut rows = Vec::new();
    for (name, what, target, measure) in SCENARIOS {
        if wanted(name) {
            rows.push(measure(&mut w).row(fs, what, target));
        }
    }
    // The concurrency targets are for btrfs and XFS; on ext4 every snapshot start is a
    // byte copy of the template, 16 × 390 MiB a run.
    if wanted("vm-start") {
        rows.push(measure_vm_start(&mut w).row(fs, "VM start, 3 volumes at once", 1.0));
    }
    if fs.has_reflink() && wanted("concurrency") {
        let (concurrent, sequential) = measure_vm_stop(&mut w);
        rows.push(concurrent.row(fs, "VM stop, 3 volumes at once", f64::NAN));
        rows.push(sequential.row(fs, "VM stop, 3 volumes in turn", f64::NAN));
        rows.push(measure_16_vms(&mut w).row(fs, "16 VMs stopping at once", f64::NAN));
    }
    if let Ok(keep) = std::env::var("QSD_BENCH_KEEP_LOG") {
        let _ = std::fs::copy(&w.log, format!("{keep}.{}", fs.name()));
    }
    if fs != FsType::Ext4 {
        for row in &mut rows {
            row.written = None;
        }
    }
    rows
}

fn setup_volumes(w: &mut World) {
    let template = Spec::origin(TEMPLATE);
    w.create_both(&template);
    w.fill_both(TEMPLATE);
    for spec in Spec::vm("work") {
        w.create_both(&spec);
    }
    w.fill_both("appvms/work/private");
    if w.fs.fs_type().has_reflink() {
        for i in 0..VMS {
            for spec in Spec::vm(&format!("vm{i}")) {
                w.create_both(&spec);
            }
        }
    }
    w.create_both(&Spec::origin("appvms/imp/private"));
    w.settle();
}

fn measure_create(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    for run in 0..runs() {
        let spec = Spec::origin(format!("appvms/new{run}/private"));
        let vid = spec.vid.clone();
        w.python.call(spec.python());
        both(
            w,
            &mut figures,
            |w| w.python.timed(json!({"op": "create", "vids": [vid]})),
            |w| time_ours(w, w.ours.create(&spec)),
        );
        w.python.call(json!({"op": "remove", "vids": [spec.vid]}));
        w.runtime.block_on(w.ours.remove(&spec.vid));
    }
    figures
}

const WORK: &str = "appvms/work/private";

fn dirty(pool: &Path, vid: &str) -> PathBuf {
    pool.join(format!("{vid}-dirty.img"))
}

fn measure_start(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    for _ in 0..runs() {
        both(
            w,
            &mut figures,
            |w| w.python.timed(json!({"op": "start", "vids": [WORK]})),
            |w| time_ours(w, w.ours.start(WORK)),
        );
        w.python.call(json!({"op": "stop", "vids": [WORK]}));
        w.runtime.block_on(w.ours.stop(WORK));
    }
    figures
}

fn measure_stop(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    for run in 0..runs() as u64 {
        w.python.call(json!({"op": "start", "vids": [WORK]}));
        w.runtime.block_on(w.ours.start(WORK));
        w.settle();
        write_session(&dirty(&w.py_dir, WORK), run);
        write_session(&dirty(&w.rs_dir, WORK), run);
        both(
            w,
            &mut figures,
            |w| w.python.timed(json!({"op": "stop", "vids": [WORK]})),
            |w| time_ours(w, w.ours.stop(WORK)),
        );
    }
    figures
}

fn measure_revert(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    for _ in 0..runs() {
        both(
            w,
            &mut figures,
            |w| w.python.timed(json!({"op": "revert", "vid": WORK})),
            |w| time_ours(w, w.ours.on_volume::<()>(WORK, "Revert", ("", opts()))),
        );
    }
    figures
}

fn measure_resize(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    for run in 1..=runs() as u64 {
        let size = IMAGE + run * MIB;
        both(
            w,
            &mut figures,
            |w| {
                w.python
                    .timed(json!({"op": "resize", "vid": WORK, "size": size}))
            },
            |w| time_ours(w, w.ours.on_volume::<()>(WORK, "Resize", (size, opts()))),
        );
    }
    figures
}

fn measure_import(w: &mut World, flushed: bool) -> Figures {
    let mut figures = Figures::default();
    let vid = "appvms/imp/private";
    for _ in 0..runs() {
        both(
            w,
            &mut figures,
            |w| w.import_python(vid, flushed),
            |w| w.import_ours(vid, flushed),
        );
    }
    figures
}

fn measure_clone(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    for run in 0..runs() {
        let spec = Spec::origin(format!("appvms/clone{run}/private"));
        let vid = spec.vid.clone();
        w.create_both(&spec);
        both(
            w,
            &mut figures,
            |w| {
                let cmd = json!({"op": "import_volume", "vid": vid, "source": TEMPLATE});
                w.python.timed(cmd)
            },
            |w| {
                let source = w.runtime.block_on(w.ours.volume(TEMPLATE));
                let source = OwnedObjectPath::try_from(source).unwrap();
                time_ours(
                    w,
                    w.ours
                        .on_volume::<()>(&vid, "ImportVolume", (source, opts())),
                )
            },
        );
        w.python.call(json!({"op": "remove", "vids": [spec.vid]}));
        w.runtime.block_on(w.ours.remove(&spec.vid));
    }
    figures
}

/// Start the VMs' volumes on both sides and write a session into each private image.
fn start_vms(w: &mut World, vms: &[String], run: u64) {
    let vids: Vec<String> = vms
        .iter()
        .flat_map(|vm| Spec::vm(vm).map(|s| s.vid))
        .collect();
    w.python.call(json!({"op": "start", "vids": vids}));
    for vid in &vids {
        w.runtime.block_on(w.ours.start(vid));
    }
    w.settle();
    for vm in vms {
        let private = format!("appvms/{vm}/private");
        write_session(&dirty(&w.py_dir, &private), run);
        write_session(&dirty(&w.rs_dir, &private), run);
    }
}

/// Stop every volume of `vms` on both sides, all at once or one after another.
fn stop_vms(w: &mut World, figures: &mut Figures, vms: &[String], concurrent: bool) {
    let vids: Vec<String> = vms
        .iter()
        .flat_map(|vm| Spec::vm(vm).map(|s| s.vid))
        .collect();
    both(
        w,
        figures,
        |w| {
            let cmd = json!({"op": "stop", "vids": vids, "concurrent": concurrent});
            w.python.timed(cmd)
        },
        |w| {
            let ours = &w.ours;
            time_ours(w, async {
                if concurrent {
                    futures_util::future::join_all(vids.iter().map(|v| ours.stop(v))).await;
                } else {
                    for vid in &vids {
                        ours.stop(vid).await;
                    }
                }
            })
        },
    );
}

/// A VM's three volumes (private, a snapshot root, volatile) started at once on both
/// sides, as qubesd starts a VM; stopped again untimed.
fn measure_vm_start(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    let vids: Vec<String> = Spec::vm("work").map(|s| s.vid).to_vec();
    for _ in 0..runs() {
        both(
            w,
            &mut figures,
            |w| {
                let cmd = json!({"op": "start", "vids": vids, "concurrent": true});
                w.python.timed(cmd)
            },
            |w| {
                let ours = &w.ours;
                time_ours(w, async {
                    futures_util::future::join_all(vids.iter().map(|v| ours.start(v))).await;
                })
            },
        );
        stop_vms(w, &mut Figures::default(), &["work".to_owned()], true);
    }
    figures
}

fn measure_vm_stop(w: &mut World) -> (Figures, Figures) {
    let (mut concurrent, mut sequential) = (Figures::default(), Figures::default());
    let vm = ["work".to_owned()];
    for run in 0..runs() as u64 {
        start_vms(w, &vm, 2 * run);
        stop_vms(w, &mut concurrent, &vm, true);
        start_vms(w, &vm, 2 * run + 1);
        stop_vms(w, &mut sequential, &vm, false);
    }
    (concurrent, sequential)
}

fn measure_16_vms(w: &mut World) -> Figures {
    let mut figures = Figures::default();
    let vms: Vec<String> = (0..VMS).map(|i| format!("vm{i}")).collect();
    for run in 0..runs() as u64 {
        start_vms(w, &vms, run);
        stop_vms(w, &mut figures, &vms, true);
    }
    figures
}

// ---- the report ----

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn verdict(value: f64, target: f64) -> String {
    match value <= target {
        true => format!("PASS (≤{target})"),
        false => format!("MISS (≤{target})"),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<6} {:<30} {:>11} {:>11} {:>6}  target",
        "fs", "operation", "python", "ours", "ours/py"
    );
    for row in rows.iter().filter(|r| !r.target.is_nan()) {
        let r = ratio(row.ours, row.python);
        println!(
            "{:<6} {:<30} {:>11} {:>11} {:>6.2}  {}",
            row.fs.name(),
            row.what,
            ms(row.python),
            ms(row.ours),
            r,
            verdict(r, row.target)
        );
    }
    print_concurrency(rows);
    print_written(rows);
}

fn find<'a>(rows: &'a [Row], fs: FsType, what: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.fs == fs && r.what == what)
}

/// The concurrency targets: a VM's three volumes at once ≤ 0.5× one after another;
/// 16 VMs at once ≤ 4× one VM.
fn print_concurrency(rows: &[Row]) {
    println!(
        "\n{:<6} {:<44} {:>8} {:>8}  target (ours)",
        "fs", "ratio", "python", "ours"
    );
    for fs in [FsType::Btrfs, FsType::Xfs, FsType::Ext4] {
        let (Some(at_once), Some(in_turn), Some(many)) = (
            find(rows, fs, "VM stop, 3 volumes at once"),
            find(rows, fs, "VM stop, 3 volumes in turn"),
            find(rows, fs, "16 VMs stopping at once"),
        ) else {
            continue;
        };
        let pairs = [
            (
                "3 volumes at once / one after another",
                at_once,
                in_turn,
                0.5,
            ),
            (
                "16 VMs at once / one VM (3 volumes at once)",
                many,
                at_once,
                4.0,
            ),
        ];
        let per_stop = |row: &Row, stops: usize| {
            let each = |d: Duration| d.as_secs_f64() * 1e6 / stops as f64;
            let cpu = row.ours_cpu;
            format!(
                "{:.0} / {:.0} / {:.0} µs",
                each(cpu.service),
                each(cpu.bus),
                each(cpu.client)
            )
        };
        println!(
            "{:<6} CPU per volume stopped, service / bus daemon / client: {} (3 at once), {} (3 in turn), {} (16 VMs at once)",
            fs.name(),
            per_stop(at_once, 3),
            per_stop(in_turn, 3),
            per_stop(many, 3 * VMS)
        );
        for (what, a, b, target) in pairs {
            let (py, ours) = (ratio(a.python, b.python), ratio(a.ours, b.ours));
            println!(
                "{:<6} {:<44} {:>8.2} {:>8.2}  {}   ({} / {} ours, {} / {} python)",
                fs.name(),
                what,
                py,
                ours,
                verdict(ours, target),
                ms(a.ours),
                ms(b.ours),
                ms(a.python),
                ms(b.python)
            );
        }
    }
}

fn print_written(rows: &[Row]) {
    let written: Vec<&Row> = rows.iter().filter(|r| r.written.is_some()).collect();
    if written.is_empty() {
        return;
    }
    println!(
        "\n{:<6} {:<30} {:>12} {:>12}  target: no more bytes written (1 MiB of metadata slack)",
        "fs", "operation", "python MiB", "ours MiB"
    );
    for row in written {
        let (py, ours) = row.written.unwrap();
        let mib = |sectors: u64| sectors as f64 * 512.0 / MIB as f64;
        println!(
            "{:<6} {:<30} {:>12.1} {:>12.1}  {}",
            row.fs.name(),
            row.what,
            mib(py),
            mib(ours),
            if ours <= py + METADATA_SLACK {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
}

/// Sectors of metadata (directory blocks, extent trees, the state journal) that the
/// bytes-written comparison does not count as data: 1 MiB.
const METADATA_SLACK: u64 = MIB / 512;
