//! `cargo bench --bench scale`: the bus layer with many volumes (issue 8). Prints a
//! table of figures beside the goals; it asserts nothing (a benchmark reports, tests
//! assert).
//!
//! Worlds, each on a loop-mounted btrfs with a private dbus-daemon and the release
//! daemon (`CARGO_BIN_EXE_qubes-storaged`):
//!
//! - **small**: 10 volumes, then 100 — the baseline for property `Get` latency and the
//!   CreateVolume rate, and 100 snapshot volumes of one template, started one after
//!   another and then all at once;
//! - **10k**: one pool of 10 000 volumes of mixed kinds (a tenth origins with their
//!   images, the rest snapshots of a template and volatile volumes): start → name
//!   owned, start → first GetManagedObjects answered, GetManagedObjects latency, resident
//!   memory idle after 10 GetManagedObjects, CreateVolume rate, `Get` latency;
//! - **100k** (skipped with `QSD_SCALE_SKIP_100K=1`): 10 pools of 10 000 volumes:
//!   start → name owned, resident memory, and every read once (ListPools, ListVolumes
//!   and Introspect of every pool, GetManagedObjects — refused with LimitsExceeded, as
//!   it would not fit on the bus) with the service still serving afterwards.
//!
//! The fleets are made with the engine in this process (the daemon's own engine code,
//! minus the bus), then the daemon is started on the same state directory. Needs root.

use std::collections::HashMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use qubes_storage_engine::{
    Engine, OpCtx, PoolName, PoolSpec, RevisionsToKeep, Vid, VolumeRef, VolumeSpec,
};
use qubes_storaged_testkit::bus::{wait_for_name, Bus};
use qubes_storaged_testkit::daemon::SERVICE;
use qubes_storaged_testkit::process::Guard;
use qubes_storaged_testkit::{FsType, LoopFs, MIB};
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;
type Opts<'a> = HashMap<&'a str, Variant<'a>>;

const DAEMON: &str = env!("CARGO_BIN_EXE_qubes-storaged");
const TEMPLATE: &str = "vm-templates/tpl/root";
const GET_SAMPLES: usize = 2000;
const CREATES: usize = 200;
const SNAPSHOTS: usize = 100;

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "bench scale: needs root (loop-mounted btrfs); run `sudo cargo bench --bench scale`"
        );
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench scale: FAILED: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::default();
    println!("load average before: {}", load_average());
    runtime.block_on(small_world(&mut report))?;
    runtime.block_on(world_10k(&mut report))?;
    if std::env::var_os("QSD_SCALE_SKIP_100K").is_none() {
        runtime.block_on(world_100k(&mut report))?;
    }
    println!("load average after: {}", load_average());
    report.print();
    Ok(())
}

// ---- the report ----

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, String)>,
}

impl Report {
    fn add(&mut self, what: &str, figure: String, goal: &str) {
        println!("  {what}: {figure}");
        self.rows.push((what.to_owned(), figure, goal.to_owned()));
    }

    fn print(&self) {
        println!();
        println!("{:<58} {:>18}  goal", "figure", "measured");
        println!("{}", "-".repeat(96));
        for (what, figure, goal) in &self.rows {
            println!("{what:<58} {figure:>18}  {goal}");
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

// ---- fleets, made by the engine ----

/// Creates pools of `per_pool` volumes of mixed kinds in `state_dir`, each pool in
/// `root/<pool>`; returns the pool names.
fn build_fleet(
    state_dir: &Path,
    root: &Path,
    pools: usize,
    per_pool: usize,
) -> BenchResult<Vec<String>> {
    let engine = Engine::open(state_dir)?;
    let ctx = OpCtx::quiet("bench");
    let mut names = Vec::new();
    for p in 0..pools {
        let name = PoolName::parse(&format!("pool{p}"))?;
        engine.create_pool(PoolSpec {
            name: name.clone(),
            dir_path: root.join(name.as_str()),
            setup_check: true,
            revisions_to_keep: RevisionsToKeep::DEFAULT,
            ephemeral_volatile: false,
        })?;
        let template = origin_spec();
        engine.create_volume(&vol(&name, TEMPLATE)?, template, &ctx)?;
        for n in 1..per_pool {
            let spec = match n % 10 {
                0 => origin_spec(),
                n if n % 2 == 0 => snapshot_spec(),
                _ => volatile_spec(),
            };
            let kind = match n % 10 {
                0 => "private",
                n if n % 2 == 0 => "root",
                _ => "volatile",
            };
            engine.create_volume(&vol(&name, &format!("appvms/vm{n}/{kind}"))?, spec, &ctx)?;
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn vol(pool: &PoolName, vid: &str) -> BenchResult<VolumeRef> {
    Ok(VolumeRef {
        pool: pool.clone(),
        vid: Vid::parse(vid)?,
    })
}

fn origin_spec() -> VolumeSpec {
    VolumeSpec {
        size: MIB,
        rw: true,
        save_on_stop: true,
        ..VolumeSpec::default()
    }
}

fn snapshot_spec() -> VolumeSpec {
    VolumeSpec {
        rw: true,
        snap_on_start: true,
        source: Some(Vid::parse(TEMPLATE).expect("vid")),
        ..VolumeSpec::default()
    }
}

fn volatile_spec() -> VolumeSpec {
    VolumeSpec {
        size: MIB,
        rw: true,
        ..VolumeSpec::default()
    }
}

// ---- the daemon ----

struct Service {
    guard: Guard,
    conn: Connection,
    since_spawn_to_name: Duration,
}

impl Service {
    async fn start(bus: &Bus, state_dir: &Path, log: &Path) -> BenchResult<Service> {
        let conn = bus.connect().await;
        let log_file = std::fs::File::create(log)?;
        let spawned = Instant::now();
        let child = Command::new(DAEMON)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--bus-address")
            .arg(bus.address())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let mut guard = Guard::new("qubes-storaged", child);
        wait_for_name(&conn, SERVICE, &mut guard, Some(log)).await;
        Ok(Service {
            since_spawn_to_name: spawned.elapsed(),
            guard,
            conn,
        })
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.guard.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }

    async fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> BenchResult<R>
    where
        B: serde::Serialize + zbus::DynamicType,
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        let reply = self
            .conn
            .call_method(Some(SERVICE), path, Some(iface), method, body)
            .await?;
        Ok(reply.body().deserialize()?)
    }

    async fn managed_objects(&self) -> BenchResult<usize> {
        Ok(self.managed_objects_timed().await?.0)
    }

    /// GetManagedObjects: the number of objects, the time until the reply arrived and
    /// the time until this client had decoded it into maps.
    async fn managed_objects_timed(&self) -> BenchResult<(usize, Duration, Duration)> {
        type Objects = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>>;
        let begun = Instant::now();
        let reply = self
            .conn
            .call_method(
                Some(SERVICE),
                "/org/qubes/Storage",
                Some("org.freedesktop.DBus.ObjectManager"),
                "GetManagedObjects",
                &(),
            )
            .await?;
        let arrived = begun.elapsed();
        let objects: Objects = reply.body().deserialize()?;
        Ok((objects.len(), arrived, begun.elapsed()))
    }

    async fn pool_path(&self, name: &str) -> BenchResult<OwnedObjectPath> {
        let opts: Opts = HashMap::new();
        self.call(
            "/org/qubes/Storage",
            "org.qubes.Storage.Manager",
            "GetPool",
            &(name, opts),
        )
        .await
    }

    async fn volume_path(&self, pool: &OwnedObjectPath, vid: &str) -> BenchResult<OwnedObjectPath> {
        let opts: Opts = HashMap::new();
        self.call(
            pool.as_str(),
            "org.qubes.Storage.Pool",
            "GetVolume",
            &(vid, opts),
        )
        .await
    }

    /// Median latency of `Properties.Get(Volume.Size)`.
    async fn get_latency(&self, volume: &OwnedObjectPath) -> BenchResult<Duration> {
        let mut samples = Vec::with_capacity(GET_SAMPLES);
        for _ in 0..GET_SAMPLES {
            let begun = Instant::now();
            let _: OwnedVariant = self
                .call(
                    volume.as_str(),
                    "org.freedesktop.DBus.Properties",
                    "Get",
                    &("org.qubes.Storage.Volume", "Size"),
                )
                .await?;
            samples.push(begun.elapsed());
        }
        Ok(median(samples))
    }

    /// CreateVolume of `count` volatile volumes named `prefix<n>`, one after another;
    /// volumes per second.
    async fn create_rate(
        &self,
        pool: &OwnedObjectPath,
        prefix: &str,
        count: usize,
    ) -> BenchResult<f64> {
        let begun = Instant::now();
        for n in 0..count {
            let config: Opts =
                HashMap::from([("size", Variant::from(MIB)), ("rw", Variant::from(true))]);
            let opts: Opts = HashMap::new();
            let vid = format!("appvms/{prefix}{n}/volatile");
            let _: OwnedObjectPath = self
                .call(
                    pool.as_str(),
                    "org.qubes.Storage.Pool",
                    "CreateVolume",
                    &(vid.as_str(), config, opts),
                )
                .await?;
        }
        Ok(count as f64 / begun.elapsed().as_secs_f64())
    }

    async fn volume_call(&self, volume: &OwnedObjectPath, method: &str) -> BenchResult<()> {
        let opts: Opts = HashMap::new();
        let reply = self
            .conn
            .call_method(
                Some(SERVICE),
                volume.as_str(),
                Some("org.qubes.Storage.Volume"),
                method,
                &(opts,),
            )
            .await?;
        drop(reply);
        Ok(())
    }
}

// ---- the worlds ----

/// A loop-mounted btrfs, a private bus and a state directory.
struct Place {
    fs: LoopFs,
    bus: Bus,
    dir: tempfile::TempDir,
}

impl Place {
    fn new(fs_size: u64) -> BenchResult<Place> {
        Ok(Place {
            fs: LoopFs::new(FsType::Btrfs, fs_size),
            bus: Bus::permissive(),
            dir: tempfile::Builder::new().prefix("qsd-scale-").tempdir()?,
        })
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }
}

async fn small_world(report: &mut Report) -> BenchResult<()> {
    println!("small world: 10 volumes, then 100, then 100 snapshots of one template");
    let place = Place::new(1024 * MIB)?;
    build_fleet(&place.state(), place.fs.path(), 1, 10)?;
    let service = Service::start(&place.bus, &place.state(), &place.log()).await?;
    let pool = service.pool_path("pool0").await?;
    let volume = service.volume_path(&pool, "appvms/vm1/volatile").await?;
    report.add(
        "Get latency, 10 volumes (p50)",
        ms(service.get_latency(&volume).await?),
        "baseline",
    );
    service.create_rate(&pool, "fill", 90).await?;
    let rate = service.create_rate(&pool, "at100-", CREATES).await?;
    report.add(
        "CreateVolume rate at 100 volumes",
        format!("{rate:.0}/s"),
        "baseline",
    );
    snapshot_starts(&service, &pool, report).await?;
    drop(service);
    Ok(())
}

/// 100 snapshots of one template: started one after another, then all at once.
async fn snapshot_starts(
    service: &Service,
    pool: &OwnedObjectPath,
    report: &mut Report,
) -> BenchResult<()> {
    let mut snapshots = Vec::new();
    for n in 0..SNAPSHOTS {
        let config: Opts = HashMap::from([
            ("snap_on_start", Variant::from(true)),
            ("source", Variant::from(TEMPLATE)),
            ("rw", Variant::from(true)),
        ]);
        let opts: Opts = HashMap::new();
        let vid = format!("appvms/disp{n}/root");
        let path: OwnedObjectPath = service
            .call(
                pool.as_str(),
                "org.qubes.Storage.Pool",
                "CreateVolume",
                &(vid.as_str(), config, opts),
            )
            .await?;
        snapshots.push(path);
    }
    let begun = Instant::now();
    for s in &snapshots {
        service.volume_call(s, "Start").await?;
    }
    let sequential = begun.elapsed();
    for s in &snapshots {
        service.volume_call(s, "Stop").await?;
    }
    let begun = Instant::now();
    let starts = snapshots.iter().map(|s| service.volume_call(s, "Start"));
    for result in futures_util::future::join_all(starts).await {
        result?;
    }
    let concurrent = begun.elapsed();
    report.add(
        "100 snapshot starts of one template, sequential",
        ms(sequential),
        "",
    );
    report.add(
        "100 snapshot starts of one template, concurrent",
        ms(concurrent),
        "",
    );
    report.add(
        "  concurrent / sequential",
        format!(
            "{:.2}x",
            concurrent.as_secs_f64() / sequential.as_secs_f64()
        ),
        "<= 0.5x",
    );
    Ok(())
}

async fn world_10k(report: &mut Report) -> BenchResult<()> {
    println!("10k world: one pool of 10 000 volumes of mixed kinds");
    let place = Place::new(4096 * MIB)?;
    let begun = Instant::now();
    build_fleet(&place.state(), place.fs.path(), 1, 10_000)?;
    println!("  fleet made by the engine in {}", ms(begun.elapsed()));
    let spawned = Instant::now();
    let service = Service::start(&place.bus, &place.state(), &place.log()).await?;
    let objects = service.managed_objects().await?;
    let to_first_listing = spawned.elapsed();
    report.add(
        "10k: start -> name owned",
        ms(service.since_spawn_to_name),
        "< 500 ms",
    );
    report.add(
        &format!("10k: start -> GetManagedObjects answered ({objects} objects)"),
        ms(to_first_listing),
        "< 1 s",
    );
    let (mut arrived, mut decoded) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let (_, reply, maps) = service.managed_objects_timed().await?;
        arrived.push(reply);
        decoded.push(maps);
    }
    report.add(
        "10k: GetManagedObjects, reply received (p50 of 10)",
        ms(median(arrived)),
        "< 300 ms",
    );
    report.add(
        "10k: GetManagedObjects, reply decoded by zbus (p50 of 10)",
        ms(median(decoded)),
        "",
    );
    report.add(
        "10k: RSS idle after 10 GetManagedObjects",
        format!("{:.1} MiB", service.rss_mib()),
        "< 50 MiB",
    );
    let pool = service.pool_path("pool0").await?;
    let volume = service.volume_path(&pool, "appvms/vm1/volatile").await?;
    report.add(
        "10k: Get latency (p50)",
        ms(service.get_latency(&volume).await?),
        "same as at 10",
    );
    let rate = service.create_rate(&pool, "at10k-", CREATES).await?;
    report.add(
        "10k: CreateVolume rate",
        format!("{rate:.0}/s"),
        ">= 0.8x the rate at 100",
    );
    Ok(())
}

async fn world_100k(report: &mut Report) -> BenchResult<()> {
    println!("100k world: 10 pools of 10 000 volumes");
    let place = Place::new(16384 * MIB)?;
    let begun = Instant::now();
    let pools = build_fleet(&place.state(), place.fs.path(), 10, 10_000)?;
    println!("  fleet made by the engine in {}", ms(begun.elapsed()));
    let service = Service::start(&place.bus, &place.state(), &place.log()).await?;
    report.add(
        "100k: start -> name owned",
        ms(service.since_spawn_to_name),
        "< 3 s",
    );
    report.add(
        "100k: RSS after start",
        format!("{:.1} MiB", service.rss_mib()),
        "< 250 MiB",
    );
    let begun = Instant::now();
    let opts: Opts = HashMap::new();
    let listed: Vec<OwnedObjectPath> = service
        .call(
            "/org/qubes/Storage",
            "org.qubes.Storage.Manager",
            "ListPools",
            &(opts,),
        )
        .await?;
    let mut volumes = 0;
    for (pool, name) in listed.iter().zip(&pools) {
        let opts: Opts = HashMap::new();
        let paths: Vec<OwnedObjectPath> = service
            .call(
                pool.as_str(),
                "org.qubes.Storage.Pool",
                "ListVolumes",
                &(opts,),
            )
            .await?;
        volumes += paths.len();
        let xml: String = service
            .call(
                &format!("{}/volumes", pool.as_str()),
                "org.freedesktop.DBus.Introspectable",
                "Introspect",
                &(),
            )
            .await?;
        assert!(
            xml.len() > 10_000,
            "Introspect of {name}'s volumes is short"
        );
    }
    report.add(
        &format!("100k: every ListVolumes and Introspect ({volumes} volumes)"),
        ms(begun.elapsed()),
        "",
    );
    let listing = service.managed_objects().await;
    let outcome = match &listing {
        Ok(n) => format!("answered ({n})"),
        Err(err) if err.to_string().contains("LimitsExceeded") => "LimitsExceeded".to_owned(),
        Err(err) => format!("failed: {err}"),
    };
    report.add(
        "100k: GetManagedObjects",
        outcome,
        "LimitsExceeded, still serving",
    );
    let still: Vec<OwnedObjectPath> = service
        .call(
            "/org/qubes/Storage",
            "org.qubes.Storage.Manager",
            "ListPools",
            &(HashMap::<&str, Variant>::new(),),
        )
        .await?;
    report.add(
        "100k: serving after every read",
        format!("{} pools", still.len()),
        "10 pools",
    );
    report.add(
        "100k: RSS after every read",
        format!("{:.1} MiB", service.rss_mib()),
        "< 250 MiB",
    );
    Ok(())
}
