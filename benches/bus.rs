//! `cargo bench --bench bus`: latency and throughput of qubes-storaged over a real bus
//! (issue 3), and the price of a polkit check (issue 4).
//!
//! One run builds, on a loop-mounted btrfs: a private dbus-daemon started from its own
//! configuration file, polkitd attached to it, and the daemon
//! (`CARGO_BIN_EXE_qubes-storaged`, which `cargo bench` builds with the bench profile,
//! i.e. `release`, before it runs this) serving a pool of small origin volumes. In
//! this process it also opens the engine itself (`qubes_storage_engine::Engine`) with
//! its own state directory and a pool directory of its own on the same filesystem.
//! Then it measures and prints (a benchmark reports; tests assert):
//!
//! - sequential latency (p50/p90/p99) of a bare bus round trip (`GetId` on the bus
//!   driver), `Properties.Get(Volume.Size)`, `Verify`, `Start`, `Stop` and
//!   `CreateVolume`, and the engine's own time for Start/Stop/CreateVolume and
//!   `volume_info` (the re-read the daemon does after each call). Bus and engine calls
//!   alternate call by call, so drift of the disk hits both sides alike;
//! - throughput with 1 and 16 clients, each client its own bus connection;
//! - the overhead the daemon adds, bus − (round trip + engine), PASS/MISS against the
//!   2 ms target for Start and Stop, both as the difference of the medians and as the
//!   median of the differences of adjacent calls;
//! - Start/Stop and a `Pool.RevisionsToKeep` write as root (the authorizer's uid-0
//!   fast path) and as the unprivileged user `qsd-bench` (created for the run and removed
//!   after it), whom a polkit rule present only during the run grants the service's
//!   actions; that client
//!   is this binary re-executed with [`CHILD_ARG`] under the user's uid. The daemon's
//!   debug lines of its authorizer confirm which path every call took.
//!
//! The figures are only as quiet as the machine: the report prints the load average.
//! Needs root (loop mounts, polkitd, setuid). The bus, polkitd, the daemon, the user
//! and the rule come from `qubes-storaged-testkit`: every process started is a child
//! that is kept and waited for; the mount, the rule file and the user are undone by
//! guards' `Drop`, also when the run fails (a failure while setting up panics). The
//! project's polkit actions are installed if missing or different and left in place,
//! as the tests do.

use std::collections::HashMap;
use std::error::Error;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};
use qubes_storaged_testkit::bus::Bus;
use qubes_storaged_testkit::daemon::{Daemon, DaemonSpec, SERVICE};
use qubes_storaged_testkit::polkit::{Polkitd, RuleFile, POLKIT_NAME};
use qubes_storaged_testkit::users::{Account, UserSpec, Users};
use qubes_storaged_testkit::{FsType, LoopFs, MIB};
use serde::de::DeserializeOwned;
use tempfile::TempDir;
use zbus::connection::Builder;
use zbus::{Connection, DynamicType, OwnedObjectPath, OwnedVariant, Type, Variant};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;
type Opts<'a> = HashMap<&'a str, Variant<'a>>;

/// argv[1] of the re-executed unprivileged client.
const CHILD_ARG: &str = "--unprivileged-client";
const VOLUME_IFACE: &str = "org.qubes.Storage.Volume";
const POOL_IFACE: &str = "org.qubes.Storage.Pool";
const PROPS_IFACE: &str = "org.freedesktop.DBus.Properties";
const BENCH_USER: &str = "qsd-bench";
const RULE_FILE: &str = "/etc/polkit-1/rules.d/10-qsd-bench.rules";
const TARGET_OVERHEAD_MS: f64 = 2.0;
/// The daemon's log: `info` as in production, plus the authorizer's per-call decisions
/// (debug), so the report can show which path each caller's calls took.
const DAEMON_LOG_FILTER: &str = "info,qubes_storaged::auth=debug";

// ---- the workload's size (keeps a run at about a minute plus the build) ----

const VOLUME_SIZE: u64 = 64 * MIB;
const FS_SIZE: u64 = 1024 * MIB;
/// One volume per concurrent client.
const MAX_CLIENTS: usize = 16;
const ROUNDS: usize = 6;
const TRIVIAL_PER_ROUND: usize = 500;
const PAIRS_PER_ROUND: usize = 50;
const CREATES_PER_ROUND: usize = 20;
const WARMUP: usize = 10;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(2);
const AUTH_ROUNDS: usize = 2;
/// The one volume of the pool `pk` the authorization figures use.
const AUTH_VID: &str = "appvms/pk/private";
const POLKIT_PAIRS: usize = 50;
const POLKIT_SETS: usize = 100;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_ARG) {
        return child::main(&args[1..]);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "bench bus: needs root (loop-mounted btrfs, polkitd, a setuid client); \
             run `sudo cargo bench --bench bus`"
        );
        return ExitCode::FAILURE;
    }
    init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench bus: FAILED: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The bench's own info lines (its file operations); the in-process engine stays quiet
/// unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bus=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}

fn run() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let users = bench_users();
    let user = users.account(BENCH_USER);
    let world = World::build(&runtime)?;
    let result = measure_all(&runtime, &world, &user);
    if result.is_err() {
        eprintln!(
            "---- qubes-storaged log (last lines) ----\n{}",
            world.log_tail(40)
        );
    }
    let report = result?;
    report.print(&world, &user);
    Ok(())
}

// ---- samples ----

/// Durations of one kind of call, sorted.
#[derive(Debug, Clone, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn of(mut durations: Vec<Duration>) -> Samples {
        durations.sort_unstable();
        Samples(durations)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn pct_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        ms(self.0[rank.clamp(1, self.0.len()) - 1])
    }

    fn p50(&self) -> f64 {
        self.pct_ms(50.0)
    }

    fn p90(&self) -> f64 {
        self.pct_ms(90.0)
    }

    fn p99(&self) -> f64 {
        self.pct_ms(99.0)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f` once; how long it took.
fn time_once<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<Duration> {
    let begun = Instant::now();
    f()?;
    Ok(begun.elapsed())
}

/// Runs `f` `n` times, timing each run.
fn time_sync<T>(n: usize, mut f: impl FnMut() -> BenchResult<T>) -> BenchResult<Vec<Duration>> {
    (0..n).map(|_| time_once(&mut f)).collect()
}

/// How long one Start and the Stop after it took.
type Pair = (Duration, Duration);

/// Start and Stop durations of one kind of caller, unsorted.
#[derive(Debug, Default)]
struct PairTimings {
    start: Vec<Duration>,
    stop: Vec<Duration>,
}

impl PairTimings {
    fn push(&mut self, (start, stop): Pair) {
        self.start.push(start);
        self.stop.push(stop);
    }
}

// ---- the bus client ----

/// A client connection speaking the contract with plain method calls (no proxies, no
/// property cache: every read is a `Get` on the bus).
#[derive(Clone)]
struct Client {
    conn: Connection,
}

impl Client {
    async fn connect(address: &str) -> BenchResult<Client> {
        let conn = Builder::address(address).build().await?;
        Ok(Client { conn })
    }

    /// A method call to the service.
    async fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> zbus::Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        self.call_on(SERVICE, path, iface, method, body).await
    }

    async fn call_on<B, R>(
        &self,
        destination: &str,
        path: &str,
        iface: &str,
        method: &str,
        body: &B,
    ) -> zbus::Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        let reply = self
            .conn
            .call_method(Some(destination), path, Some(iface), method, body)
            .await?;
        reply.body().deserialize()
    }

    async fn bus_driver<B, R>(&self, method: &str, body: &B) -> zbus::Result<R>
    where
        B: serde::Serialize + DynamicType,
        R: DeserializeOwned + Type,
    {
        let driver = "org.freedesktop.DBus";
        self.call_on(driver, "/org/freedesktop/DBus", driver, method, body)
            .await
    }

    /// polkit's own answer for this connection (a `system-bus-name` subject, as the
    /// daemon asks it) to `run-volumes`, without details; an error unless authorized.
    async fn polkit_check(&self) -> BenchResult<()> {
        let name = self.conn.unique_name().ok_or("no unique name")?.to_string();
        let subject_details: HashMap<&str, Variant> = [("name", Variant::from(name.as_str()))]
            .into_iter()
            .collect();
        let subject = ("system-bus-name", subject_details);
        // Only a trusted caller may pass details; the daemon does, a client may not.
        let details: HashMap<&str, &str> = HashMap::new();
        let body = (subject, "org.qubes.storage.run-volumes", details, 0u32, "");
        let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = self
            .call_on(
                POLKIT_NAME,
                "/org/freedesktop/PolicyKit1/Authority",
                "org.freedesktop.PolicyKit1.Authority",
                "CheckAuthorization",
                &body,
            )
            .await?;
        match authorized {
            true => Ok(()),
            false => Err(format!("polkit did not authorize (challenge: {challenge})").into()),
        }
    }

    /// The trivial round trip: `GetId` on the bus driver.
    async fn get_id(&self) -> zbus::Result<String> {
        self.bus_driver("GetId", &()).await
    }

    async fn get_property(
        &self,
        path: &str,
        iface: &str,
        name: &str,
    ) -> zbus::Result<OwnedVariant> {
        self.call(path, PROPS_IFACE, "Get", &(iface, name)).await
    }

    async fn volume_size(&self, volume: &str) -> BenchResult<u64> {
        let value = self.get_property(volume, VOLUME_IFACE, "Size").await?;
        Ok(u64::try_from(value)?)
    }

    async fn start(&self, volume: &str) -> zbus::Result<String> {
        self.call(volume, VOLUME_IFACE, "Start", &(Opts::new(),))
            .await
    }

    /// A read that the daemon runs on its blocking pool (a stat in the engine): the
    /// daemon's dispatch cost without authorization or announcements.
    async fn verify(&self, volume: &str) -> zbus::Result<bool> {
        self.call(volume, VOLUME_IFACE, "Verify", &(Opts::new(),))
            .await
    }

    async fn stop(&self, volume: &str) -> zbus::Result<()> {
        self.call(volume, VOLUME_IFACE, "Stop", &(Opts::new(),))
            .await
    }

    async fn create_pool(&self, name: &str, dir: &Path) -> BenchResult<OwnedObjectPath> {
        let dir = dir.to_str().ok_or("pool directory is not UTF-8")?;
        let options: Opts = [("dir_path", Variant::from(dir))].into_iter().collect();
        let body = (name, "file-reflink", options);
        let manager = "org.qubes.Storage.Manager";
        Ok(self
            .call("/org/qubes/Storage", manager, "CreatePool", &body)
            .await?)
    }

    /// CreateVolume of a small origin volume (save_on_stop, rw).
    async fn create_volume(&self, pool: &str, vid: &str) -> zbus::Result<OwnedObjectPath> {
        let config: Opts = [
            ("size", Variant::from(VOLUME_SIZE)),
            ("rw", Variant::from(true)),
            ("save_on_stop", Variant::from(true)),
        ]
        .into_iter()
        .collect();
        let body = (vid, config, Opts::new());
        self.call(pool, POOL_IFACE, "CreateVolume", &body).await
    }

    async fn set_pool_revisions(&self, pool: &str, value: i32) -> zbus::Result<()> {
        let body = (POOL_IFACE, "RevisionsToKeep", Variant::from(value));
        self.call(pool, PROPS_IFACE, "Set", &body).await
    }

    async fn pool_revisions(&self, pool: &str) -> BenchResult<i32> {
        let value = self
            .get_property(pool, POOL_IFACE, "RevisionsToKeep")
            .await?;
        Ok(i32::try_from(value)?)
    }
}

/// Runs `n` calls of an async operation (`$i` counts them), timing each; the
/// durations, or returns the first error from the enclosing function.
macro_rules! time_async {
    ($n:expr, |$i:ident| $call:expr) => {{
        let mut durations = Vec::with_capacity($n);
        for $i in 0..$n {
            let begun = Instant::now();
            $call.await?;
            durations.push(begun.elapsed());
        }
        durations
    }};
}

/// One Start and the Stop after it, over the bus.
async fn bus_pair(client: &Client, volume: &str) -> BenchResult<Pair> {
    let begun = Instant::now();
    client.start(volume).await?;
    let started = begun.elapsed();
    let begun = Instant::now();
    client.stop(volume).await?;
    Ok((started, begun.elapsed()))
}

async fn bus_pairs(client: &Client, volume: &str, pairs: usize) -> BenchResult<PairTimings> {
    let mut timings = PairTimings::default();
    for _ in 0..pairs {
        timings.push(bus_pair(client, volume).await?);
    }
    Ok(timings)
}

/// What the polkit comparison measures for one caller, unsorted.
#[derive(Debug, Default)]
struct AuthTimings {
    pairs: PairTimings,
    set: Vec<Duration>,
    /// `CheckAuthorization` asked by the caller itself: polkitd's part of the cost.
    polkit: Vec<Duration>,
}

impl AuthTimings {
    fn extend(&mut self, more: AuthTimings) {
        self.pairs.start.extend(more.pairs.start);
        self.pairs.stop.extend(more.pairs.stop);
        self.set.extend(more.set);
        self.polkit.extend(more.polkit);
    }
}

/// Start/Stop pairs on `volume` and `Pool.RevisionsToKeep` writes (alternating 1 and 2,
/// read back at the end) on `pool`, after a warm-up. Run by root in-process and by the
/// unprivileged child alike.
async fn auth_workload(client: &Client, volume: &str, pool: &str) -> BenchResult<AuthTimings> {
    bus_pairs(client, volume, WARMUP).await?;
    for i in 0..WARMUP {
        client.set_pool_revisions(pool, revisions_value(i)).await?;
    }
    let pairs = bus_pairs(client, volume, POLKIT_PAIRS).await?;
    let set = time_async!(POLKIT_SETS, |i| client
        .set_pool_revisions(pool, revisions_value(i)));
    let expected = revisions_value(POLKIT_SETS - 1);
    let read_back = client.pool_revisions(pool).await?;
    if read_back != expected {
        return Err(format!("RevisionsToKeep reads {read_back} after setting {expected}").into());
    }
    let polkit = time_async!(POLKIT_SETS, |_i| client.polkit_check());
    Ok(AuthTimings { pairs, set, polkit })
}

fn revisions_value(i: usize) -> i32 {
    1 + (i % 2) as i32
}

// ---- throughput ----

/// What each client of a throughput run does, over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    GetId,
    ReadSize,
    StartStop,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::GetId => "GetId (bus round trip)",
            Workload::ReadSize => "Properties.Get Volume.Size",
            Workload::StartStop => "Start+Stop (calls, own volume each)",
        }
    }

    /// One iteration on the client's own volume; the number of calls it made.
    async fn once(self, client: &Client, volume: &str) -> BenchResult<u64> {
        match self {
            Workload::GetId => {
                client.get_id().await?;
                Ok(1)
            }
            Workload::ReadSize => {
                client.volume_size(volume).await?;
                Ok(1)
            }
            Workload::StartStop => {
                client.start(volume).await?;
                client.stop(volume).await?;
                Ok(2)
            }
        }
    }
}

/// Calls per second of `clients` connections running `workload` for
/// [`THROUGHPUT_WINDOW`], client i on volume i.
async fn run_throughput(
    address: &str,
    volumes: &[String],
    clients: usize,
    workload: Workload,
) -> BenchResult<f64> {
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(Client::connect(address).await?);
    }
    let begun = Instant::now();
    let deadline = begun + THROUGHPUT_WINDOW;
    let mut tasks = Vec::with_capacity(clients);
    for (client, volume) in connected.into_iter().zip(volumes.iter().cloned()) {
        tasks.push(tokio::spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                calls += workload.once(&client, &volume).await?;
            }
            BenchResult::Ok(calls)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / begun.elapsed().as_secs_f64())
}

// ---- the in-process engine ----

/// The engine itself, on its own pool directory and state directory.
struct EngineSide {
    engine: Engine,
    pool: PoolName,
}

impl EngineSide {
    fn open(state_dir: &Path, pool_dir: &Path) -> BenchResult<EngineSide> {
        let engine = Engine::open(state_dir)?;
        let pool = PoolName::parse("engine")?;
        engine.create_pool(PoolSpec {
            name: pool.clone(),
            dir_path: pool_dir.to_owned(),
            setup_check: true,
            revisions_to_keep: RevisionsToKeep::new(1)?,
            ephemeral_volatile: false,
        })?;
        Ok(EngineSide { engine, pool })
    }

    fn volume(&self, vid: &str) -> BenchResult<VolumeRef> {
        Ok(VolumeRef {
            pool: self.pool.clone(),
            vid: Vid::parse(vid)?,
        })
    }

    fn create(&self, vid: &str) -> BenchResult<()> {
        let spec = VolumeSpec {
            size: VOLUME_SIZE,
            rw: true,
            save_on_stop: true,
            ..VolumeSpec::default()
        };
        let vol = self.volume(vid)?;
        self.engine
            .create_volume(&vol, spec, &OpCtx::quiet("CreateVolume"))?;
        Ok(())
    }

    /// One Start and the Stop after it, in-process.
    fn pair(&self, vol: &VolumeRef) -> BenchResult<Pair> {
        let started = time_once(|| Ok(self.engine.start(vol, &OpCtx::quiet("Start"))?))?;
        let stopped = time_once(|| Ok(self.engine.stop(vol, &OpCtx::quiet("Stop"))?))?;
        Ok((started, stopped))
    }

    fn volume_info(&self, vol: &VolumeRef, n: usize) -> BenchResult<Vec<Duration>> {
        time_sync(n, || Ok(self.engine.volume_info(vol)?))
    }

    /// Start/Stop calls per second of `threads` threads for [`THROUGHPUT_WINDOW`],
    /// thread i on volume `vm<i>`: what the daemon's figure is to be compared with.
    fn throughput(&self, threads: usize) -> BenchResult<f64> {
        let volumes: Vec<VolumeRef> = (0..threads)
            .map(|i| self.volume(&format!("appvms/vm{i}/private")))
            .collect::<BenchResult<_>>()?;
        let begun = Instant::now();
        let deadline = begun + THROUGHPUT_WINDOW;
        let total = std::thread::scope(|scope| {
            let workers: Vec<_> = volumes
                .iter()
                .map(|vol| scope.spawn(move || self.pairs_until(vol, deadline)))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().map_err(|_| "an engine thread panicked")?)
                .sum::<BenchResult<u64>>()
        })?;
        Ok(total as f64 / begun.elapsed().as_secs_f64())
    }

    /// Start/Stop pairs until `deadline`; the number of calls.
    fn pairs_until(&self, vol: &VolumeRef, deadline: Instant) -> BenchResult<u64> {
        let mut calls = 0;
        while Instant::now() < deadline {
            self.pair(vol)?;
            calls += 2;
        }
        Ok(calls)
    }
}

// ---- processes, files, the world ----

/// Everything a run sets up. Fields drop in declaration order: the service and its
/// bus stop before the rule file goes and before the filesystem is unmounted.
struct World {
    _daemon: Daemon,
    _polkitd: Polkitd,
    bus: Bus,
    engine: EngineSide,
    _rule: RuleFile,
    daemon_log: PathBuf,
    _state: TempDir,
    fs: LoopFs,
}

impl World {
    fn build(runtime: &tokio::runtime::Runtime) -> BenchResult<World> {
        println!("setting up: btrfs loop mount, dbus-daemon, polkitd, qubes-storaged …");
        let fs = LoopFs::new(FsType::Btrfs, FS_SIZE);
        let state = tempfile::Builder::new().prefix("qsd-bench-").tempdir()?;
        let engine = EngineSide::open(
            &state.path().join("engine-state"),
            &fs.path().join("enginepool"),
        )?;
        let rule = RuleFile::hold("qubes-storaged-bench-rule", RULE_FILE, polkit_rule());
        let bus = Bus::permissive();
        let daemon_log = state.path().join("daemon.log");
        let state_dir = state.path().join("daemon-state");
        let binary = Path::new(env!("CARGO_BIN_EXE_qubes-storaged"));
        println!(
            "daemon binary: {} (built by cargo bench, release profile)",
            binary.display()
        );
        let spec = DaemonSpec {
            log_filter: Some(DAEMON_LOG_FILTER),
            ..DaemonSpec::new(binary, &state_dir, &daemon_log)
        };
        let (polkitd, daemon) = runtime.block_on(async {
            let watcher = bus.connect().await;
            let polkitd = Polkitd::start(&bus, &watcher).await;
            let daemon = Daemon::start(&spec, &bus, &watcher).await;
            (polkitd, daemon)
        });
        Ok(World {
            _daemon: daemon,
            _polkitd: polkitd,
            bus,
            engine,
            _rule: rule,
            daemon_log,
            _state: state,
            fs,
        })
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.daemon_log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Daemon log lines at WARN or ERROR (a clean run has none).
    fn log_warnings(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.daemon_log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("WARN") || l.starts_with("ERROR")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Calls the daemon's authorizer allowed: (by the uid-0 fast path, by polkit for
    /// `uid`), counted from its debug lines.
    fn authorized_counts(&self, uid: u32) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.daemon_log).unwrap_or_default();
        let decisions: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("auth: authorized"))
            .collect();
        let by_root = decisions
            .iter()
            .filter(|l| l.contains("verdict=Root"))
            .count();
        let uid_field = format!("uid=Some({uid})");
        let by_polkit = decisions
            .iter()
            .filter(|l| l.contains(&uid_field) && l.contains("verdict=Polkit(Authorized)"))
            .count();
        (by_root, by_polkit)
    }
}

/// Grants the bench user every action of the service, for this run only.
fn polkit_rule() -> String {
    format!(
        "// Written by qubes-storaged's benches/bus.rs for one run; removed afterwards.\n\
         polkit.addRule(function(action, subject) {{\n\
         \x20   if (action.id.indexOf(\"org.qubes.storage.\") == 0 && subject.user == \"{BENCH_USER}\")\n\
         \x20       return polkit.Result.YES;\n\
         }});\n"
    )
}

/// The bench user, created for the run if missing and removed after it (unless another
/// run still holds it).
fn bench_users() -> Users {
    Users::hold(
        "qubes-storaged-bench-user",
        &[],
        &[UserSpec {
            name: BENCH_USER,
            groups: &[],
        }],
    )
}

// ---- the measurements ----

/// The vid of the volume the sequential Start/Stop figures use, in both pools.
const LATENCY_VID: &str = "appvms/vm0/private";

/// Sequential latencies, unsorted.
#[derive(Default)]
struct LatencyTimings {
    get_id: Vec<Duration>,
    read_size: Vec<Duration>,
    verify: Vec<Duration>,
    bus: PairTimings,
    bus_create: Vec<Duration>,
    engine: PairTimings,
    engine_create: Vec<Duration>,
    engine_info: Vec<Duration>,
}

/// Everything the report prints.
struct Report {
    latency: LatencyTimings,
    /// (what, clients or threads, calls/s)
    throughput: Vec<(&'static str, usize, f64)>,
    root: AuthTimings,
    user: AuthTimings,
    load_before: String,
    load_after: String,
}

fn measure_all(
    runtime: &tokio::runtime::Runtime,
    world: &World,
    user: &Account,
) -> BenchResult<Report> {
    let load_before = load_average();
    let address = world.bus.address();
    let pools_dir = world.fs.path();
    let (client, bus_pool, volumes) = runtime.block_on(async {
        let client = Client::connect(address).await?;
        let pool = client
            .create_pool("bus", &pools_dir.join("buspool"))
            .await?;
        let volumes = create_volumes(&client, pool.as_str(), "vm", MAX_CLIENTS).await?;
        BenchResult::Ok((client, pool, volumes))
    })?;
    for i in 0..MAX_CLIENTS {
        world.engine.create(&format!("appvms/vm{i}/private"))?;
    }
    println!("measuring latency ({ROUNDS} rounds, bus and engine interleaved) …");
    let latency = measure_latency(runtime, world, &client, bus_pool.as_str(), &volumes[0])?;
    println!("measuring throughput ({THROUGHPUT_WINDOW:?} per figure) …");
    let mut throughput = Vec::new();
    for workload in [Workload::GetId, Workload::ReadSize, Workload::StartStop] {
        for clients in [1, MAX_CLIENTS] {
            let rate = runtime.block_on(run_throughput(address, &volumes, clients, workload))?;
            throughput.push((workload.label(), clients, rate));
        }
    }
    for threads in [1, MAX_CLIENTS] {
        let rate = world.engine.throughput(threads)?;
        throughput.push(("engine start+stop, in-process threads", threads, rate));
    }
    println!("measuring the cost of polkit (root vs {BENCH_USER}, {AUTH_ROUNDS} rounds each) …");
    let (root, user) = measure_auth(runtime, world, &client, user)?;
    Ok(Report {
        latency,
        throughput,
        root,
        user,
        load_before,
        load_after: load_average(),
    })
}

/// The 1/5/15-minute load averages: other work on the machine shows in the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

async fn create_volumes(
    client: &Client,
    pool: &str,
    prefix: &str,
    n: usize,
) -> BenchResult<Vec<String>> {
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let vid = format!("appvms/{prefix}{i}/private");
        paths.push(client.create_volume(pool, &vid).await?.to_string());
    }
    Ok(paths)
}

/// Which side goes first in iteration `i`: alternating, so neither side always runs
/// right after the other's writes.
fn bus_first(i: usize) -> bool {
    i % 2 == 0
}

/// Sequential latencies in rounds. Within a round the trivial calls run in blocks, and
/// Start/Stop pairs and creations alternate between bus and engine call by call, so
/// both see the same disk weather.
fn measure_latency(
    runtime: &tokio::runtime::Runtime,
    world: &World,
    client: &Client,
    pool: &str,
    volume: &str,
) -> BenchResult<LatencyTimings> {
    let engine = &world.engine;
    let engine_vol = engine.volume(LATENCY_VID)?;
    runtime.block_on(bus_pairs(client, volume, WARMUP))?;
    for _ in 0..WARMUP {
        engine.pair(&engine_vol)?;
    }
    let mut t = LatencyTimings::default();
    for round in 0..ROUNDS {
        runtime.block_on(async {
            t.get_id
                .extend(time_async!(TRIVIAL_PER_ROUND, |_i| client.get_id()));
            t.read_size
                .extend(time_async!(TRIVIAL_PER_ROUND, |_i| client.volume_size(volume)));
            t.verify
                .extend(time_async!(TRIVIAL_PER_ROUND, |_i| client.verify(volume)));
            BenchResult::Ok(())
        })?;
        t.engine_info
            .extend(engine.volume_info(&engine_vol, TRIVIAL_PER_ROUND)?);
        for i in 0..PAIRS_PER_ROUND {
            let bus = || runtime.block_on(bus_pair(client, volume));
            let (first, second) = if bus_first(i) {
                (bus()?, engine.pair(&engine_vol)?)
            } else {
                let engine_pair = engine.pair(&engine_vol)?;
                (bus()?, engine_pair)
            };
            t.bus.push(first);
            t.engine.push(second);
        }
        for i in 0..CREATES_PER_ROUND {
            let vid = format!("appvms/new{round}x{i}/private");
            let bus = || time_once(|| Ok(runtime.block_on(client.create_volume(pool, &vid))?));
            let local = || time_once(|| engine.create(&vid));
            let (on_bus, in_engine) = if bus_first(i) {
                (bus()?, local()?)
            } else {
                let in_engine = local()?;
                (bus()?, in_engine)
            };
            t.bus_create.push(on_bus);
            t.engine_create.push(in_engine);
        }
    }
    Ok(t)
}

/// Root in-process and the bench user in a child, alternating rounds, on a pool of its
/// own holding one volume (a pool property write re-reads every volume of the pool).
fn measure_auth(
    runtime: &tokio::runtime::Runtime,
    world: &World,
    client: &Client,
    user: &Account,
) -> BenchResult<(AuthTimings, AuthTimings)> {
    let address = world.bus.address();
    let (volume, pool) = runtime.block_on(async {
        let pool = client
            .create_pool("pk", &world.fs.path().join("pkpool"))
            .await?;
        let volume = client.create_volume(pool.as_str(), AUTH_VID).await?;
        BenchResult::Ok((volume.to_string(), pool.to_string()))
    })?;
    let mut root = AuthTimings::default();
    let mut unprivileged = AuthTimings::default();
    for _ in 0..AUTH_ROUNDS {
        root.extend(runtime.block_on(auth_workload(client, &volume, &pool))?);
        unprivileged.extend(run_unprivileged(address, &volume, &pool, user)?);
        // The child checked its own writes; check them from root's side too.
        let value = runtime.block_on(client.pool_revisions(&pool))?;
        if value != revisions_value(POLKIT_SETS - 1) {
            return Err(
                format!("{BENCH_USER}'s RevisionsToKeep writes did not stick ({value})").into(),
            );
        }
    }
    Ok((root, unprivileged))
}

/// Runs [`auth_workload`] as the bench user in a re-executed copy of this binary.
fn run_unprivileged(
    address: &str,
    volume: &str,
    pool: &str,
    user: &Account,
) -> BenchResult<AuthTimings> {
    let exe = std::env::current_exe()?;
    let output = Command::new(&exe)
        .args([CHILD_ARG, address, volume, pool])
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} as {BENCH_USER}: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "the client running as {BENCH_USER} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    child::parse_timings(&String::from_utf8_lossy(&output.stdout))
}

/// The unprivileged client: the same workload, its durations printed as
/// `<kind> <ns> <ns> …` lines for the parent.
mod child {
    use super::*;

    pub fn main(args: &[String]) -> ExitCode {
        let [address, volume, pool] = args else {
            eprintln!("usage: {CHILD_ARG} ADDRESS VOLUME_PATH POOL_PATH");
            return ExitCode::from(2);
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("cannot start a runtime: {err}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async {
            let client = Client::connect(address).await?;
            auth_workload(&client, volume, pool).await
        });
        match result {
            Ok(timings) => {
                print_timings("start", &timings.pairs.start);
                print_timings("stop", &timings.pairs.stop);
                print_timings("set", &timings.set);
                print_timings("polkit", &timings.polkit);
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("uid {}: {err}", nix::unistd::getuid());
                ExitCode::FAILURE
            }
        }
    }

    fn print_timings(kind: &str, durations: &[Duration]) {
        let nanos: Vec<String> = durations.iter().map(|d| d.as_nanos().to_string()).collect();
        println!("{kind} {}", nanos.join(" "));
    }

    pub fn parse_timings(text: &str) -> BenchResult<AuthTimings> {
        let mut timings = AuthTimings::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let slot = match words.next() {
                Some("start") => &mut timings.pairs.start,
                Some("stop") => &mut timings.pairs.stop,
                Some("set") => &mut timings.set,
                Some("polkit") => &mut timings.polkit,
                _ => return Err(format!("unexpected line from the client: {line:?}").into()),
            };
            for word in words {
                slot.push(Duration::from_nanos(word.parse()?));
            }
        }
        Ok(timings)
    }
}

// ---- the report ----

/// PASS/MISS of an overhead against the target; `-` where there is no target.
fn verdict(has_target: bool, overhead_ms: f64) -> &'static str {
    match (has_target, overhead_ms <= TARGET_OVERHEAD_MS) {
        (false, _) => "-",
        (true, true) => "PASS",
        (true, false) => "MISS",
    }
}

/// The median of `a[i] − b[i]` over calls measured next to each other, in ms.
fn median_difference_ms(a: &[Duration], b: &[Duration]) -> f64 {
    let mut differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| ms(*x) - ms(*y)).collect();
    differences.sort_unstable_by(f64::total_cmp);
    differences
        .get(differences.len() / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// One table row: a label and its samples.
fn row(label: &str, durations: &[Duration]) {
    let samples = Samples::of(durations.to_vec());
    println!(
        "{label:<44} {:>6} {:>9.3} {:>9.3} {:>9.3}",
        samples.len(),
        samples.p50(),
        samples.p90(),
        samples.p99()
    );
}

impl Report {
    fn print(&self, world: &World, user: &Account) {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!("qubes-storaged over a private dbus-daemon, pools on one loop-mounted btrfs");
        println!(
            "{cpus} CPUs, load average {} before, {} after; volumes: {} MiB origin (rw, \
             save_on_stop); times in ms",
            self.load_before,
            self.load_after,
            VOLUME_SIZE / MIB
        );
        println!();
        self.print_latency();
        self.print_overhead();
        self.print_throughput();
        self.print_auth();
        print_auth_decisions(world, user);
        print_log_warnings(world);
    }

    fn print_latency(&self) {
        let t = &self.latency;
        println!(
            "{:<44} {:>6} {:>9} {:>9} {:>9}",
            "latency, 1 client, sequential", "n", "p50", "p90", "p99"
        );
        row("bus round trip (GetId on the bus driver)", &t.get_id);
        row("Properties.Get Volume.Size", &t.read_size);
        row("Volume.Verify (one hop to the blocking pool)", &t.verify);
        row("Volume.Start over the bus", &t.bus.start);
        row("Volume.Stop over the bus", &t.bus.stop);
        row("Pool.CreateVolume over the bus", &t.bus_create);
        row("engine start (in-process)", &t.engine.start);
        row("engine stop (in-process)", &t.engine.stop);
        row("engine create_volume (in-process)", &t.engine_create);
        row("engine volume_info (in-process)", &t.engine_info);
        println!();
    }

    /// Two estimates, each with its verdict: the difference of the medians (the
    /// definition), and the median of the differences of adjacent bus and engine calls
    /// (less sensitive to the disk drifting during the run). p99 only for information:
    /// there the disk's fsync tail dominates both sides.
    fn print_overhead(&self) {
        let t = &self.latency;
        println!("daemon overhead = bus − (round trip + engine), target ≤ {TARGET_OVERHEAD_MS} ms");
        let rows = [
            ("Start", &t.bus.start, &t.engine.start, true),
            ("Stop", &t.bus.stop, &t.engine.stop, true),
            ("CreateVolume", &t.bus_create, &t.engine_create, false),
        ];
        let round_trip = Samples::of(t.get_id.clone());
        for (label, bus_raw, engine_raw, has_target) in rows {
            let (bus, engine) = (
                Samples::of(bus_raw.clone()),
                Samples::of(engine_raw.clone()),
            );
            let of_medians = bus.p50() - (round_trip.p50() + engine.p50());
            let paired = median_difference_ms(bus_raw, engine_raw) - round_trip.p50();
            let p99 = bus.p99() - (round_trip.p99() + engine.p99());
            println!(
                "  {label:<13} p50: {:>7.3} − ({:.3} + {:>7.3}) = {of_medians:>6.3} {:<6} \
                 paired: {paired:>6.3} {:<6} p99: {p99:>8.3}",
                bus.p50(),
                round_trip.p50(),
                engine.p50(),
                verdict(has_target, of_medians),
                verdict(has_target, paired),
            );
        }
        println!();
    }

    fn print_throughput(&self) {
        println!("{:<44} {:>8} {:>12}", "throughput", "clients", "calls/s");
        for (label, clients, rate) in &self.throughput {
            println!("{label:<44} {clients:>8} {rate:>12.0}");
        }
        println!("  (Start+Stop: pairs/s = calls/s ÷ 2)");
        println!();
    }

    fn print_auth(&self) {
        println!(
            "{:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "authorization (pool of 1 volume)",
            "n",
            "root p50",
            "user p50",
            "root p99",
            "user p99",
            "polkit p50"
        );
        let rows = [
            (
                "Volume.Start",
                &self.root.pairs.start,
                &self.user.pairs.start,
            ),
            ("Volume.Stop", &self.root.pairs.stop, &self.user.pairs.stop),
            ("Set Pool.RevisionsToKeep", &self.root.set, &self.user.set),
            (
                "polkit CheckAuthorization, direct",
                &self.root.polkit,
                &self.user.polkit,
            ),
        ];
        for (label, root, user) in rows {
            let (root, user) = (Samples::of(root.clone()), Samples::of(user.clone()));
            println!(
                "{label:<34} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11.3}",
                root.len().min(user.len()),
                root.p50(),
                user.p50(),
                root.p99(),
                user.p99(),
                user.p50() - root.p50()
            );
        }
        println!(
            "  root: the daemon's uid-0 fast path (no polkit round trip); user: {BENCH_USER}, \
             granted every org.qubes.storage.* action by a polkit rule;\n  \
             CheckAuthorization direct: each caller asks polkitd about itself \
             (run-volumes), without the daemon; last column = user p50 − root p50"
        );
    }
}

/// Which path the authorizer took, from the daemon's log: every call of the bench user
/// must have gone through polkit (and been allowed), root's through the fast path.
fn print_auth_decisions(world: &World, user: &Account) {
    let (by_root, by_polkit) = world.authorized_counts(user.uid);
    let expected = AUTH_ROUNDS * (3 * WARMUP + 2 * POLKIT_PAIRS + POLKIT_SETS);
    let verdict = if by_polkit == expected {
        "as expected"
    } else {
        "UNEXPECTED"
    };
    println!(
        "  daemon log: {by_polkit} calls of {BENCH_USER} (uid {}) allowed by polkit \
         ({expected} made: {verdict}); {by_root} root calls allowed by the fast path",
        user.uid
    );
}

/// A clean run logs no WARN or ERROR line in the daemon.
fn print_log_warnings(world: &World) {
    let warnings = world.log_warnings();
    println!();
    match warnings.len() {
        0 => println!("daemon log: no WARN/ERROR lines"),
        n => {
            println!("daemon log: {n} WARN/ERROR lines, first ones:");
            warnings.iter().take(10).for_each(|l| println!("  {l}"));
        }
    }
}
