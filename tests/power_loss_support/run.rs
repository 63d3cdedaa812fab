//! One case of the matrix, start to end:
//!
//! 1. **Base image**: a fresh file system of the case's type in a file on a scratch
//!    btrfs of the test's own (reflinks), mounted at the case's mount point; the
//!    engine builds the history there; unmounted.
//! 2. **Recording**: a reflink of the base image is served through the recorder
//!    (`qubes_storaged_powercut::Recorder`) and mounted at the same mount point; the
//!    real daemon starts on it (pools *and* state directory on that disk) on a private
//!    bus; the mark `begin` is logged, the operation is performed over the bus, the
//!    mark `ack` is logged when its success reply arrived; the daemon stops and the
//!    file system is unmounted, so every later write is recorded too.
//! 3. **Replays**: for each crash state the plan asks for, its image is built by
//!    reflink, mounted at the same mount point (the file system's own recovery), made
//!    to look as it does after the reboot that follows a power cut (the running images
//!    it marks as made in this boot are marked as made in the one before,
//!    [`as_after_a_reboot`]; a case that leaves such images is replayed once more with
//!    them unmarked), the daemon is started on it and the disk is checked
//!    ([`super::check`]); then the daemon stops and the image is unmounted and deleted.
//!
//! Nothing here knows how the engine does its work: a changed engine (another state
//! store, fewer barriers) is checked by re-running the same cases.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use qubes_storaged_powercut::crash_image::clone_file;
use qubes_storaged_powercut::crash_state::later_writes;
use qubes_storaged_powercut::mount::run;
use qubes_storaged_powercut::{
    crash_states, CrashImages, CrashState, ImageMount, Marks, Phase, Plan, Recorder, WriteLog,
};
use zbus::Connection;

use super::cases::{self, Op};
use super::check::{
    judge, judge_pools, leftovers_and_short_files, observe, served_matches_files, served_pools,
    served_volumes, usable_precaches_hold_the_committed_image,
};
use super::content::{identify, Content, Seen};
use super::report::CaseReport;
use super::world::{build_history, Disk};
use crate::common::{Daemon, DaemonSpec, FsType, LoopFs, TestBus, MIB};

const DAEMON_BINARY: &str = env!("CARGO_BIN_EXE_qubes-storaged");
/// The scratch btrfs that holds the base image, the recording and the crash images.
const SCRATCH_SIZE: u64 = 2048 * MIB;
/// How many problems a report keeps in full.
const KEPT_PROBLEMS: usize = 4;

/// How a case runs: its replay plan and the daemon's environment while recording.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub plan: Plan,
    /// `QSD_SKIP_FSYNC` for the recorded daemon (the fault test), if any.
    pub skip_fsync: Option<&'static str>,
}

fn disk_size(fs: FsType) -> u64 {
    fs.min_size().max(256 * MIB)
}

/// The directories of one case on its scratch file system.
struct Workspace {
    base: PathBuf,
    recorded: PathBuf,
    crash: PathBuf,
    images: PathBuf,
    fuse: PathBuf,
    logs: PathBuf,
    disk: Disk,
    state_dir: PathBuf,
}

impl Workspace {
    fn new(scratch: &Path) -> Workspace {
        let dir = |name: &str| {
            let path = scratch.join(name);
            std::fs::create_dir(&path).expect("create a scratch directory");
            path
        };
        let disk = Disk {
            mount_point: dir("disk"),
        };
        Workspace {
            state_dir: disk.state_dir(),
            disk,
            base: scratch.join("base.img"),
            recorded: scratch.join("recorded.img"),
            crash: scratch.join("crash.img"),
            images: dir("images"),
            fuse: dir("fuse"),
            logs: dir("logs"),
        }
    }
}

/// Runs `op` on `fs` and replays what `setup` asks for.
pub fn run_case(op: Op, fs: FsType, setup: Setup) -> CaseReport {
    let scratch = LoopFs::new(FsType::Btrfs, SCRATCH_SIZE);
    let ws = Workspace::new(scratch.path());
    make_base_image(op, fs, &ws);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let bus = TestBus::permissive();
        let conn = bus.connect().await;
        let mut log = None;
        for _ in 0..RECORDINGS {
            log = record(op, fs, &ws, &bus, &conn, setup).await;
            if log.is_some() {
                break;
            }
        }
        let log = log.unwrap_or_else(|| {
            panic!(
                "{RECORDINGS} recordings of {} took another path than the fault needs",
                op.name()
            )
        });
        replay_all(op, fs, &ws, &bus, &conn, &log, setup.plan).await
    })
}

fn make_base_image(op: Op, fs: FsType, ws: &Workspace) {
    std::fs::File::create(&ws.base)
        .and_then(|f| f.set_len(disk_size(fs)))
        .expect("create the base image");
    let mkfs: (&str, &[&str]) = match fs {
        FsType::Btrfs => ("mkfs.btrfs", &["-q", "-f"]),
        FsType::Xfs => ("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"]),
        FsType::Ext4 => ("mkfs.ext4", &["-q", "-F"]),
    };
    let mut args: Vec<&std::ffi::OsStr> = mkfs.1.iter().map(|a| a.as_ref()).collect();
    args.push(ws.base.as_os_str());
    run(mkfs.0, &args).expect("mkfs");
    let mount = ImageMount::new(&ws.base, &ws.disk.mount_point).expect("mount the base image");
    if op.has_history() {
        let engine = build_history(&ws.disk, fs.has_reflink());
        op.prepare(&engine);
    }
    mount.close().expect("unmount the base image");
}

/// The daemon with the `durability-faults` feature. Other test crates rebuild the
/// daemon binary in this target directory without features (the CLI's tests build it
/// with plain `cargo build`), so it is built here the same way, with the feature: a
/// relink of the cached build.
fn faulty_daemon() -> &'static Path {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "-p", "qubes-storaged", "--bin"])
            .args(["qubes-storaged", "--features", "durability-faults"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let profile = Path::new(DAEMON_BINARY).parent().and_then(Path::file_name);
        if profile.is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("cannot run cargo to build qubes-storaged");
        assert!(
            status.success(),
            "building qubes-storaged with durability-faults failed: {status}"
        );
    });
    Path::new(DAEMON_BINARY)
}

fn daemon_spec<'a>(
    ws: &'a Workspace,
    log: &'a Path,
    env: &'a [(&'a str, &'a str)],
) -> DaemonSpec<'a> {
    DaemonSpec {
        env,
        ..DaemonSpec::new(Path::new(DAEMON_BINARY), &ws.state_dir, log)
    }
}

/// How many times a case is recorded before it gives up on a recording that took
/// the path its fault is on ([`record`]).
const RECORDINGS: usize = 5;

/// Records `op` on a fresh copy of the base image. `None` when a fault was to be
/// injected and the operation took another path for a reason outside the test: an
/// import whose importer closed its fd is committed itself only if nobody else holds
/// the import file, and a test running beside this one in the same process may hold
/// it for a moment (a child between its fork and its exec) just when the service asks
/// — then a private copy is committed, whose path has no fsync at `commit-file`.
async fn record(
    op: Op,
    fs: FsType,
    ws: &Workspace,
    bus: &TestBus,
    conn: &Connection,
    setup: Setup,
) -> Option<WriteLog> {
    clone_file(&ws.base, &ws.recorded).expect("clone the base image");
    let mut recorder = Recorder::start(&ws.recorded, &ws.fuse).expect("start the recorder");
    recorder
        .mount(&ws.disk.mount_point)
        .expect("mount the recorded disk");
    let log_path = ws.logs.join("recording.log");
    let _ = std::fs::remove_file(&log_path);
    let fault: Vec<(&str, &str)> = setup
        .skip_fsync
        .map(|site| ("QSD_SKIP_FSYNC", site))
        .into_iter()
        .collect();
    let binary = match setup.skip_fsync {
        Some(_) => faulty_daemon(),
        None => Path::new(DAEMON_BINARY),
    };
    let spec = DaemonSpec {
        binary,
        ..daemon_spec(ws, &log_path, &fault)
    };
    let daemon = Daemon::try_start(&spec, bus, conn)
        .await
        .expect("the daemon starts on the recorded disk");
    recorder.mark("begin");
    let outcome = op.perform(conn, &ws.disk, fs.has_reflink()).await;
    if outcome.is_ok() {
        recorder.mark("ack");
    }
    let status = daemon.terminate();
    recorder.unmount().expect("unmount the recorded disk");
    let log = recorder.finish().expect("tear the recorder down");
    if let Err(err) = outcome {
        panic!(
            "{} failed while recording: {err}{}",
            op.name(),
            log_tail(&log_path)
        );
    }
    assert!(
        status.success(),
        "the recorded daemon exited with {status}{}",
        log_tail(&log_path)
    );
    if let Some(site) = setup.skip_fsync {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let skipped = text.contains("durability fault: fsync skipped");
        if !skipped && text.contains("the import file is still open elsewhere") {
            return None;
        }
        assert!(
            skipped,
            "no fsync at {site} was skipped while recording {}{}",
            op.name(),
            log_tail(&log_path)
        );
    }
    Some(log)
}

async fn replay_all(
    op: Op,
    fs: FsType,
    ws: &Workspace,
    bus: &TestBus,
    conn: &Connection,
    log: &WriteLog,
    plan: Plan,
) -> CaseReport {
    let marks = Marks {
        begin: log.mark("begin").expect("begin mark"),
        ack: log.mark("ack"),
    };
    let mut images = CrashImages::new(log, &ws.base, &ws.images).expect("crash images");
    let mut report = CaseReport::new(op, fs, log);
    // With disposable running images on the disk, each crash state is served twice:
    // marked as made in the boot the power cut ended (what this service leaves: the
    // start-up sweep stops those volumes) and unmarked (what the reference driver or
    // an older release leaves: kept, and a start must make them afresh).
    // (Those of stop-vm-unmarked have no mark to remove.)
    let boots: &[Boot] = match op.disposable().is_empty() || op.disposables_stop_durably() {
        true => &[Boot::Marked],
        false => &[Boot::Marked, Boot::Unmarked],
    };
    for (n, state) in crash_states(log, marks, &plan).iter().enumerate() {
        let what = state.describe(report.flushes, later_writes(log, state.boundary).len());
        let mut described = Vec::new();
        for &boot in boots {
            images.build(state, &ws.crash).expect("build a crash image");
            let daemon_log = ws.logs.join(format!("replay-{n}-{boot:?}.log"));
            let problems = replay_one(op, fs, state, boot, ws, bus, conn, &daemon_log).await;
            described.extend(
                problems
                    .iter()
                    .take(KEPT_PROBLEMS)
                    .map(|p| format!("{what}{}: {p}", boot.describe())),
            );
            if boot == Boot::Marked {
                report.count_sweep(logged(
                    &daemon_log,
                    "removing a leftover of an interrupted operation",
                ));
                report.count_finished_removal(logged(
                    &daemon_log,
                    "interrupted volume removals finished",
                ));
            }
            let _ = std::fs::remove_file(&ws.crash);
        }
        report.add(state, described);
    }
    report
}

/// The boot marks of the crash disk's running images when it is served
/// ([`as_after_a_reboot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    /// As this service marked them: made in the boot the power cut ended.
    Marked,
    /// Without a mark, as an older release or the reference driver left them.
    Unmarked,
}

impl Boot {
    fn describe(self) -> &'static str {
        match self {
            Boot::Marked => "",
            Boot::Unmarked => " (running images unmarked)",
        }
    }
}

/// Mounts the crash image, starts the daemon on it, checks the disk; stops the daemon
/// and unmounts again.
#[allow(clippy::too_many_arguments)]
async fn replay_one(
    op: Op,
    fs: FsType,
    state: &CrashState,
    boot: Boot,
    ws: &Workspace,
    bus: &TestBus,
    conn: &Connection,
    daemon_log: &Path,
) -> Vec<String> {
    let mount = match ImageMount::new(&ws.crash, &ws.disk.mount_point) {
        Ok(mount) => mount,
        Err(err) => return vec![format!("the crash disk does not mount: {err}")],
    };
    if let Err(err) = as_after_a_reboot(&ws.disk.mount_point, boot) {
        return vec![format!(
            "cannot mark the crash disk's running images: {err}"
        )];
    }
    let spec = daemon_spec(ws, daemon_log, &[]);
    let mut problems = match Daemon::try_start(&spec, bus, conn).await {
        Ok(daemon) => {
            let problems = check_disk(op, fs, state.phase, boot, &ws.disk, conn).await;
            let status = daemon.terminate();
            let exit = (!status.success())
                .then(|| format!("the daemon exited with {status}{}", log_tail(daemon_log)));
            problems.into_iter().chain(exit).collect()
        }
        Err(why) => vec![format!("the daemon does not start: {why}")],
    };
    if let Err(err) = mount.close() {
        problems.push(format!("cannot unmount the crash disk: {err}"));
    }
    problems
}

/// A crash disk is served after a reboot: what the daemon marked as made in this boot
/// (the running images of snapshots and volatile volumes, docs/durability.md rule 9)
/// was made in the boot the power cut ended. The replay runs in the boot that recorded
/// the disk, so those marks are changed to another boot's before the daemon starts —
/// or removed ([`Boot::Unmarked`]).
fn as_after_a_reboot(dir: &Path, boot: Boot) -> std::io::Result<()> {
    use qubes_storage_engine::running::MADE_IN_BOOT;
    use qubes_storage_engine::sys;
    let this_boot = sys::boot_id()?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            as_after_a_reboot(&entry.path(), boot)?;
        } else if kind.is_file() {
            let file = std::fs::File::open(entry.path())?;
            if sys::get_xattr(&file, MADE_IN_BOOT)?.as_deref() == Some(this_boot.as_bytes()) {
                match boot {
                    Boot::Marked => {
                        sys::set_xattr(&file, MADE_IN_BOOT, b"the boot the power cut ended")?
                    }
                    Boot::Unmarked => sys::remove_xattr(&file, MADE_IN_BOOT)?,
                }
            }
        }
    }
    Ok(())
}

/// Every invariant of [`super::check`] on the mounted crash disk the daemon serves.
async fn check_disk(
    op: Op,
    fs: FsType,
    phase: Phase,
    boot: Boot,
    disk: &Disk,
    conn: &Connection,
) -> Vec<String> {
    let served = match served_volumes(conn).await {
        Ok(served) => served,
        Err(err) => return vec![format!("the daemon does not serve: {err}")],
    };
    let pools = match served_pools(conn).await {
        Ok(pools) => pools,
        Err(err) => return vec![format!("the daemon does not serve its pools: {err}")],
    };
    let seen = observe(disk, &served);
    let mut problems = judge_pools(&op.pools_before(), &op.pools_after(), &pools, disk, phase);
    problems.extend(judge(
        &op.before(),
        &op.after(),
        op.subjects(),
        op.unflushed_session(),
        op.disposable(),
        op.may_be_undone(fs.has_reflink()),
        &seen,
        phase,
    ));
    let unflushed = op
        .unflushed_session()
        .filter(|_| phase != Phase::Acknowledged);
    let may_be_torn: Vec<_> = unflushed
        .iter()
        .chain(op.disposable())
        .map(|vol| disk.paths(*vol).dirty())
        .collect();
    problems.extend(leftovers_and_short_files(disk, &seen, &may_be_torn));
    // Unmarked images are kept (a VM may run on one): a start makes them afresh. Their
    // stop, once acknowledged, must hold.
    if op.disposables_stop_durably() && phase == Phase::Acknowledged {
        for vol in op.disposable() {
            if let Some(content) = &seen[vol].dirty {
                problems.push(format!(
                    "{vol}: its acknowledged stop was undone: served as started with {content:?}"
                ));
            }
        }
    }
    // The sweep stops those marked with the boot the power cut ended (none of
    // stop-vm-unmarked's are).
    let marked = boot == Boot::Marked && !op.disposables_stop_durably();
    let swept = op.disposable().iter().filter(|_| marked);
    for vol in swept {
        if let Some(content) = &seen[vol].dirty {
            problems.push(format!(
                "{vol}: served as started after the reboot, with {content:?} that no VM runs on"
            ));
        } else if vol.is_snapshot() && disk.paths(*vol).clean().exists() {
            problems.push(format!(
                "{vol}: stopped, but its link of the source is left after the reboot"
            ));
        }
    }
    problems.extend(usable_precaches_hold_the_committed_image(disk));
    problems.extend(served_matches_files(disk, &served));
    // Last: it changes the disk.
    problems.extend(disposables_start_afresh(op, disk, conn).await);
    problems
}

/// Rule 9's promise: a disposable volume (a snapshot, a volatile volume) is stopped by
/// the start-up sweep after the reboot when its running image is marked (checked
/// above), and started afresh there — its source's committed image, an empty one —
/// never with what the crash left, also from an unmarked image the sweep keeps.
async fn disposables_start_afresh(op: Op, disk: &Disk, conn: &Connection) -> Vec<String> {
    let mut problems = Vec::new();
    for &vol in op.disposable() {
        let started = match cases::volume(conn, vol).await {
            Ok(volume) => volume.start(crate::common::opts()).await,
            Err(err) => Err(err),
        };
        let expected = match vol.is_snapshot() {
            true => Content::of('H'),
            false => Content::of('E'),
        };
        match started {
            Err(err) => problems.push(format!("{vol}: Start on the crash disk fails: {err}")),
            Ok(_) => match identify(&disk.paths(vol).dirty()) {
                Some(Seen::Known(content)) if content == expected => {}
                seen => problems.push(format!(
                    "{vol}: Start on the crash disk gives {seen:?}, not a fresh {expected}"
                )),
            },
        }
    }
    problems
}

/// Did the daemon log `line` (the start-up sweep removing a leftover, or finishing an
/// interrupted removal)?
fn logged(daemon_log: &Path, line: &str) -> bool {
    std::fs::read_to_string(daemon_log).is_ok_and(|log| log.contains(line))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!("; daemon log:\n{tail}")
}
