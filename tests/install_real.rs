//! The real installation: `make install` with no DESTDIR puts the binaries this test
//! run built, the unit, the activation file, the bus policy and the polkit actions in
//! their real places on this machine (PREFIX=/usr/local; the two policies where their
//! readers look, /usr/share/dbus-1/system.d and /usr/share/polkit-1/actions). Then a
//! system-like dbus-daemon — the system bus's default policy plus every policy file of
//! /usr/share/dbus-1/system.d, so the installed one is what lets the service own its
//! name — with polkitd, and the installed daemon started the way the installed unit
//! says (ExecStart=, UMask=, readiness = BusName= on the bus for Type=dbus). Root
//! creates a pool and a volume and starts and stops it; an unprivileged user may read
//! but not write; SIGTERM ends the daemon with status 0; `make uninstall` removes every
//! installed file.
//!
//! The machine is left as found: files the install overwrote (the polkit actions, which
//! the bus harness installs and leaves for every bus test) are restored byte-identical
//! right after `make uninstall` — also when the test fails — and directories the
//! install created are removed. While this runs it holds the flock
//! `/run/lock/qubes-storaged-install-test.lock` exclusively; every other test's
//! polkitd (testkit's `Polkitd::start`) holds it shared while it runs, so none sees the
//! actions file missing. The binaries are the debug builds next to
//! `CARGO_BIN_EXE_qubes-storaged` (`NO_BUILD=1 RELEASE_DIR=…`), installed stripped; the
//! CLI must have been built too (`cargo test --workspace`). The install also puts the
//! man pages and completion scripts in place (the manifest has them), which this test
//! removes again like every other file.

mod authz_support;
mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use authz_support::client::{u, DbusCall, PyClient, Who};
use authz_support::{ACCESS_DENIED, INTERACTION_REQUIRED};
use common::{opts, opts_of, ManagerProxy, PoolProxy, VolumeProxy, MIB};
use qubes_storaged_testkit::bus::{wait_for_name, Bus, Include};
use qubes_storaged_testkit::lease::Exclusive;
use qubes_storaged_testkit::polkit::{Polkitd, ACTIONS_LOCK};
use qubes_storaged_testkit::process::Guard;
use qubes_storaged_testkit::users::{Groups, NOBODY};
use qubes_storaged_testkit::workspace;
use serde_json::json;
use tempfile::TempDir;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, Variant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PREFIX: &str = "/usr/local";
const UNIT: &str = "/usr/local/lib/systemd/system/qubes-storaged.service";
const DAEMON: &str = "/usr/local/sbin/qubes-storaged";
const CLI: &str = "/usr/local/bin/qubes-storage";
/// systemd's PATH for system services.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const NOBODY_CALLER: Who = Who::User {
    uid: NOBODY.uid,
    gid: NOBODY.gid,
};
const VID: &str = "appvms/installed/private";

// ---- make install / uninstall ----

/// The directory of the binaries this test run built.
fn bin_dir() -> PathBuf {
    workspace::bin_dir(Path::new(env!("CARGO_BIN_EXE_qubes-storaged")))
}

/// A stand-in Cockpit package (this test is about the service; the page has its own
/// browser tests), in the test build's temp directory.
fn page_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install-real-page");
    fs::create_dir_all(&dir).expect("the stand-in page directory");
    for name in ["manifest.json", "index.html", "index.js", "index.css"] {
        fs::write(dir.join(name), format!("{name}\n")).expect("a stand-in page file");
    }
    dir
}

/// `make -s TARGET` in the repository, installing the test build into the real tree;
/// the man pages and completion scripts are generated into `gen`.
fn make(target: &str, gen: &Path) -> std::process::Output {
    Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(REPO)
        .arg(target)
        .arg("NO_BUILD=1")
        .arg(format!("RELEASE_DIR={}", bin_dir().display()))
        .arg(format!("GEN_DIR={}", gen.display()))
        .arg(format!("PAGE_DIR={}", page_dir().display()))
        .arg(format!("PREFIX={PREFIX}"))
        .arg("DESTDIR=")
        .env_remove("MAKEFLAGS")
        .output()
        .expect("run make")
}

#[track_caller]
fn make_ok(target: &str, gen: &Path) -> String {
    let output = make(target, gen);
    assert!(
        output.status.success(),
        "make {target} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("make output")
}

/// A file that existed before the install, kept aside to be put back.
struct Saved {
    path: PathBuf,
    backup: PathBuf,
    mode: u32,
}

/// The installation, undone on drop if the test did not undo it.
struct RealInstall {
    manifest: Vec<PathBuf>,
    saved: Vec<Saved>,
    /// Directories the install will create, deepest first.
    new_dirs: Vec<PathBuf>,
    installed: bool,
    /// The backups and the generated man pages and completion scripts.
    work: TempDir,
    _lock: Exclusive,
}

impl RealInstall {
    fn install() -> RealInstall {
        let lock = Exclusive::take(ACTIONS_LOCK);
        let work = tempfile::tempdir().expect("tempdir");
        let manifest: Vec<PathBuf> = make_ok("install-manifest", &work.path().join("gen"))
            .lines()
            .map(PathBuf::from)
            .collect();
        let backups = work.path().join("backups");
        fs::create_dir(&backups).unwrap();
        let saved = back_up_existing(&manifest, &backups);
        let new_dirs = missing_dirs(&manifest);
        // From here on, drop undoes whatever part of the install happened.
        let install = RealInstall {
            manifest,
            saved,
            new_dirs,
            installed: true,
            work,
            _lock: lock,
        };
        make_ok("install", &install.gen_dir());
        install
    }

    fn gen_dir(&self) -> PathBuf {
        self.work.path().join("gen")
    }

    /// `make uninstall`, then the saved files back at once; the manifest files that
    /// `make uninstall` left.
    fn uninstall(&mut self) -> Vec<PathBuf> {
        let output = make("uninstall", &self.gen_dir());
        let left = self.existing();
        self.restore();
        self.installed = false;
        assert!(
            output.status.success(),
            "make uninstall failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        left
    }

    fn existing(&self) -> Vec<PathBuf> {
        self.manifest
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect()
    }

    /// Puts each saved file back, atomically (polkitd watches its directory).
    fn restore(&self) {
        for saved in &self.saved {
            let staged = saved
                .path
                .with_extension(format!("restore.{}", std::process::id()));
            fs::copy(&saved.backup, &staged).expect("copy a saved file back");
            fs::set_permissions(&staged, fs::Permissions::from_mode(saved.mode)).unwrap();
            fs::rename(&staged, &saved.path).expect("restore a saved file");
        }
    }

    /// Removes the directories the install created; those that are not empty stay
    /// and are returned.
    fn remove_new_dirs(&self) -> Vec<PathBuf> {
        self.new_dirs
            .iter()
            .filter(|dir| dir.exists() && fs::remove_dir(dir).is_err())
            .cloned()
            .collect()
    }
}

impl Drop for RealInstall {
    fn drop(&mut self) {
        if self.installed {
            let _ = make("uninstall", &self.gen_dir());
            self.restore();
        }
        self.remove_new_dirs();
    }
}

fn back_up_existing(manifest: &[PathBuf], backups: &Path) -> Vec<Saved> {
    let mut saved = Vec::new();
    for (n, path) in manifest.iter().enumerate() {
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        let backup = backups.join(n.to_string());
        fs::copy(path, &backup).expect("back up an existing file");
        saved.push(Saved {
            path: path.clone(),
            backup,
            mode: meta.permissions().mode() & 0o7777,
        });
    }
    saved
}

/// The missing ancestors of the manifest's files, deepest first.
fn missing_dirs(manifest: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = manifest
        .iter()
        .flat_map(|path| path.ancestors().skip(1))
        .filter(|dir| !dir.exists())
        .map(Path::to_path_buf)
        .collect();
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    dirs.dedup();
    dirs
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut chunk_a, mut chunk_b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let read = a.read(&mut chunk_a).unwrap();
        if b.read_exact(&mut chunk_b[..read]).is_err() || chunk_a[..read] != chunk_b[..read] {
            return false;
        }
        if read == 0 {
            return b.read(&mut chunk_b).unwrap() == 0;
        }
    }
}

fn mode_of(path: &str) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---- the installed unit ----

/// What the test takes from the installed unit's [Service] section.
struct Unit {
    exec_start: Vec<String>,
    service_type: String,
    bus_name: String,
    umask: String,
}

impl Unit {
    fn read(path: &str) -> Unit {
        let text = fs::read_to_string(path).expect("read the installed unit");
        let service = service_section(&text);
        let value = |key: &str| {
            service
                .get(key)
                .unwrap_or_else(|| panic!("the unit has no {key}="))
                .clone()
        };
        let exec_start = value("ExecStart");
        assert!(
            exec_start.starts_with('/'),
            "ExecStart= with a prefix or a relative path: {exec_start}"
        );
        Unit {
            exec_start: exec_start.split_whitespace().map(str::to_owned).collect(),
            service_type: value("Type"),
            bus_name: value("BusName"),
            umask: value("UMask"),
        }
    }
}

/// The last value of each key of `[Service]` (multi-valued keys are not needed here).
fn service_section(text: &str) -> HashMap<String, String> {
    let mut section = "";
    let mut values = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if let Some((key, value)) = line.split_once('=') {
            if section == "[Service]" && !line.starts_with('#') {
                values.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
    }
    values
}

// ---- processes ----

/// A dbus-daemon configured like the system bus: its default policy, then every policy
/// in the directories the system bus reads.
fn system_like_bus() -> Bus {
    Bus::system_like(&[
        Include::Dir("/usr/share/dbus-1/system.d".into()),
        Include::Dir("/etc/dbus-1/system.d".into()),
    ])
}

/// The installed daemon, started as the unit says: ExecStart= as the command line,
/// UMask= (applied by `sh` before it execs the command, as systemd does before exec),
/// a clean environment with systemd's PATH, `/` as working directory, and ready when
/// BusName= appears on the bus (Type=dbus). The system bus is found through
/// DBUS_SYSTEM_BUS_ADDRESS. One deviation: systemd would create StateDirectory= as
/// /var/lib/qubes-storaged (the daemon's default state directory, since it does not
/// read $STATE_DIRECTORY); the test appends `--state-dir` with a temp directory
/// (created 0700, as StateDirectoryMode= says) so that it never touches the machine's
/// real state. STATE_DIRECTORY is set to the same directory, as systemd would.
async fn start_daemon(
    unit: &Unit,
    bus: &Bus,
    conn: &Connection,
    state: &Path,
    log: &Path,
) -> Guard {
    let log_file = File::create(log).expect("daemon log");
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"umask "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(&unit.umask)
        .args(&unit.exec_start)
        .arg("--state-dir")
        .arg(state)
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .env("STATE_DIRECTORY", state)
        .env("RUST_LOG", "info")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start the installed daemon");
    let mut daemon = Guard::new("the installed qubes-storaged", child);
    wait_for_name(conn, &unit.bus_name, &mut daemon, Some(log)).await;
    daemon
}

// ---- calls ----

async fn manager(conn: &Connection) -> ManagerProxy<'static> {
    ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .expect("manager proxy")
}

async fn volume(conn: &Connection, path: &OwnedObjectPath) -> VolumeProxy<'static> {
    VolumeProxy::builder(conn)
        .path(path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .expect("volume proxy")
}

/// As root: a pool in `dir` (no reflink on this filesystem: setup_check off), a
/// volume in it, started and stopped. Returns the volume's path.
async fn root_uses_the_service(conn: &Connection, dir: &Path) -> OwnedObjectPath {
    let manager = manager(conn).await;
    assert!(manager
        .list_pools(opts())
        .await
        .expect("ListPools")
        .is_empty());
    let options = opts_of([
        ("dir_path", Variant::from(dir.to_str().unwrap())),
        ("setup_check", Variant::from(false)),
    ]);
    let pool = manager
        .create_pool("installed", "file-reflink", options)
        .await;
    let pool = PoolProxy::builder(conn)
        .path(pool.expect("CreatePool"))
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .expect("pool proxy");
    let config = opts_of([
        ("size", Variant::from(MIB)),
        ("rw", Variant::from(true)),
        ("save_on_stop", Variant::from(true)),
    ]);
    let path = pool
        .create_volume(VID, config, opts())
        .await
        .expect("CreateVolume");
    let volume = volume(conn, &path).await;
    let device = volume.start(opts()).await.expect("Start");
    assert!(
        Path::new(&device).exists(),
        "Start returned {device}, which does not exist"
    );
    volume.stop(opts()).await.expect("Stop");
    assert!(!volume.started().await.unwrap());
    path
}

/// As `nobody`: reads work; Start is refused with the contract's names; the name
/// cannot be taken (the installed bus policy lets only root own it).
async fn nobody_may_read_but_not_write(address: &str, volume: &OwnedObjectPath) {
    let client = PyClient::new();
    let manager = "org.qubes.Storage.Manager";
    let list = DbusCall::new(
        "/org/qubes/Storage",
        manager,
        "ListPools",
        "a{sv}",
        vec![json!({})],
    );
    let start = DbusCall::new(
        volume.as_str(),
        "org.qubes.Storage.Volume",
        "Start",
        "a{sv}",
        vec![json!({})],
    );
    let own = DbusCall::new(
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "RequestName",
        "su",
        vec![json!("org.qubes.Storage"), u(0)],
    )
    .to("org.freedesktop.DBus");
    let calls = [
        list.clone(),
        start.clone(),
        start.clone().interactive(),
        own.clone(),
    ];
    let replies = client.call_all(address, NOBODY_CALLER, &calls).await;
    assert_eq!(
        replies[0].value(&list),
        &json!(["/org/qubes/Storage/pools/installed"])
    );
    assert_eq!(
        replies[1].error_name(),
        Some(INTERACTION_REQUIRED),
        "{:?}",
        replies[1]
    );
    assert_eq!(
        replies[2].error_name(),
        Some(ACCESS_DENIED),
        "{:?}",
        replies[2]
    );
    assert_eq!(
        replies[3].error_name(),
        Some(ACCESS_DENIED),
        "{:?}",
        replies[3]
    );
}

/// The installed CLI, as root or as nobody, lists the pool.
fn installed_cli_lists_the_pool(address: &str, as_nobody: bool) {
    let mut command = if as_nobody {
        let mut setpriv = NOBODY.setpriv(Groups::Cleared);
        setpriv.arg(CLI);
        setpriv
    } else {
        Command::new(CLI)
    };
    let output = command
        .args(["--json", "pool", "list"])
        .env_clear()
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .current_dir("/")
        .output()
        .expect("run the installed CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("\"installed\""),
        "qubes-storage pool list (nobody: {as_nobody}): {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---- the test ----

/// This build's `binary`, stripped as `make install` strips it.
fn stripped_copy(binary: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join(binary.file_name().unwrap());
    fs::copy(binary, &copy).expect("copy a binary");
    let status = Command::new("strip")
        .arg(&copy)
        .status()
        .expect("run strip");
    assert!(status.success(), "strip {}", copy.display());
    copy
}

/// Right after `make install`: every file in place, the binaries are this build.
fn assert_installed(install: &RealInstall) {
    let missing: Vec<_> = install.manifest.iter().filter(|p| !p.exists()).collect();
    assert!(missing.is_empty(), "not installed: {missing:?}");
    let dir = install.work.path();
    let daemon = Path::new(env!("CARGO_BIN_EXE_qubes-storaged"));
    assert!(same_bytes(Path::new(DAEMON), &stripped_copy(daemon, dir)));
    let cli = bin_dir().join("qubes-storage");
    assert!(same_bytes(Path::new(CLI), &stripped_copy(&cli, dir)));
    assert_eq!(
        (mode_of(DAEMON), mode_of(CLI), mode_of(UNIT)),
        (0o755, 0o755, 0o644)
    );
}

/// After `make uninstall`: nothing of ours left, what was there before is back.
fn assert_uninstalled(install: &RealInstall, left: &[PathBuf]) {
    assert!(left.is_empty(), "make uninstall left {left:?}");
    for saved in &install.saved {
        assert!(
            same_bytes(&saved.path, &saved.backup),
            "{} not restored",
            saved.path.display()
        );
        let mode = fs::metadata(&saved.path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, saved.mode, "{}", saved.path.display());
    }
    let not_empty = install.remove_new_dirs();
    assert!(not_empty.is_empty(), "files left in {not_empty:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn installs_for_real_serves_as_the_unit_says_and_uninstalls_cleanly() {
    common::common_fs::require_root();
    let mut install = RealInstall::install();
    assert_installed(&install);
    let unit = Unit::read(UNIT);
    assert_eq!(unit.exec_start[0], DAEMON);
    assert_eq!(
        (unit.service_type.as_str(), unit.bus_name.as_str()),
        ("dbus", "org.qubes.Storage")
    );

    let work = tempfile::Builder::new()
        .prefix("qsd-install-")
        .tempdir()
        .unwrap();
    let state = work.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let log = work.path().join("daemon.log");
    let bus = system_like_bus();
    let conn = bus.connect().await;
    // The actions are the installed ones; this test holds their lock exclusively.
    let polkitd = Polkitd::start_with_installed_actions(&bus, &conn).await;
    let mut daemon = start_daemon(&unit, &bus, &conn, &state, &log).await;

    let volume = root_uses_the_service(&conn, &work.path().join("pool")).await;
    nobody_may_read_but_not_write(bus.address(), &volume).await;
    installed_cli_lists_the_pool(bus.address(), false);
    installed_cli_lists_the_pool(bus.address(), true);
    let status = daemon.terminate();
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM: {status}; log:\n{log_text}"
    );
    drop((conn, polkitd, bus));

    let left = install.uninstall();
    assert_uninstalled(&install, &left);
}
