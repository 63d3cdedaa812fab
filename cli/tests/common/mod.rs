//! The CLI's test world: a private dbus-daemon (permissive policy, in a temp
//! directory), the real `qubes-storaged` serving on it with a temp state directory,
//! pools on real loop-mounted filesystems — all from `qubes-storaged-testkit` — and
//! the real `qubes-storage` binary run as a child process with `--bus <address>`.
//!
//! The daemon binary belongs to another package, so cargo does not build it for this
//! one's tests: the first test builds it with the same cargo and profile (`cargo build
//! -p qubes-storaged --bin qubes-storaged`) into the same target directory.
//!
//! Every process is a child kept in a guard that stops it by PID and reaps it: the
//! daemon and a spawned CLI are SIGKILLed when dropped, the bus gets SIGTERM. Waiting
//! for the service watches its name on the bus with a deadline. Fields drop in order:
//! the daemon stops before the filesystems are unmounted, the bus goes last.

#![allow(dead_code, unused_imports)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use qubes_storaged_testkit::bus::{block_on, Bus};
use qubes_storaged_testkit::daemon::{Daemon, DaemonSpec};
use tempfile::TempDir;

pub use qubes_storaged_testkit::common_fs::{
    self, allocated_bytes, pattern, write_sparse_file, Frozen, FsType, LoopFs, MIB,
};
pub use qubes_storaged_testkit::process::{wait_child, KilledOnDrop as Guarded, DEADLINE, POLL};

const CLI: &str = env!("CARGO_BIN_EXE_qubes-storage");

/// The daemon binary, built once per test run with this run's cargo and profile.
fn daemon_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let out_dir = Path::new(CLI)
            .parent()
            .expect("the CLI binary has a directory");
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "qubes-storaged",
                "--bin",
                "qubes-storaged",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if out_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .expect("cannot run cargo to build qubes-storaged");
        assert!(status.success(), "building qubes-storaged failed: {status}");
        out_dir.join("qubes-storaged")
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// What one CLI run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit status 0 and returns the run.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "qubes-storage failed: {self:?}");
        self
    }

    /// Asserts the exit status and a plain `qubes-storage: <message>` on stderr.
    #[track_caller]
    pub fn fails_with(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.starts_with("qubes-storage: "), "{self:?}");
        assert!(
            !self.stderr.contains("MethodError") && !self.stderr.contains("{ "),
            "{self:?}"
        );
        self
    }

    /// Asserts a usage error that the command line parser caught: exit status 2 and
    /// clap's `error: …` on stderr.
    #[track_caller]
    pub fn fails_with_usage(self) -> Run {
        assert_eq!(self.code, 2, "{self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs the CLI on the bus at `address`, with no world around it.
pub fn cli_on_bus(address: &str, args: &[&str]) -> Run {
    let output = Command::new(CLI)
        .arg("--bus")
        .arg(address)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run qubes-storage");
    Run::from_output(output)
}

/// Bus + service + filesystems + a temp directory for files.
pub struct World {
    daemon: Option<Daemon>,
    filesystems: Vec<LoopFs>,
    bus: Bus,
    dir: TempDir,
}

impl World {
    /// A bus with the service on it.
    pub fn start() -> World {
        let mut world = World::without_service();
        world.start_daemon();
        world
    }

    /// A bus whose messages are of at most `bytes`, with the service told so: a few
    /// hundred volumes then do what 100 000 do on the system bus (GetManagedObjects is
    /// `LimitsExceeded`).
    pub fn start_with_message_limit(bytes: usize) -> World {
        let mut world = World::on(Bus::permissive_with_message_limit(bytes));
        let limit = bytes.to_string();
        world.start_daemon_with(&["--max-message-size", &limit]);
        world
    }

    /// A bus with nobody serving org.qubes.Storage.
    pub fn without_service() -> World {
        World::on(Bus::permissive())
    }

    fn on(bus: Bus) -> World {
        common_fs::require_root();
        let dir = tempfile::Builder::new()
            .prefix("qsd-cli-")
            .tempdir()
            .expect("temp dir");
        World {
            daemon: None,
            filesystems: Vec::new(),
            bus,
            dir,
        }
    }

    fn start_daemon(&mut self) {
        self.start_daemon_with(&[]);
    }

    fn start_daemon_with(&mut self, extra_args: &[&str]) {
        let state_dir = self.dir.path().join("state");
        let log = self.dir.path().join("daemon.log");
        let mut spec = DaemonSpec::new(daemon_binary(), &state_dir, &log);
        spec.extra_args = extra_args;
        let daemon = block_on(async {
            let conn = self.bus.connect().await;
            Daemon::start(&spec, &self.bus, &conn).await
        });
        self.daemon = Some(daemon);
    }

    /// The address of the world's bus.
    pub fn bus_address(&self) -> &str {
        self.bus.address()
    }

    /// A scratch directory for the test's own files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh filesystem mounted for this world.
    pub fn mount(&mut self, fs_type: FsType, size: u64) -> PathBuf {
        let fs = LoopFs::new(fs_type, size);
        let path = fs.path().to_owned();
        self.filesystems.push(fs);
        path
    }

    /// Creates pool `name` on a fresh filesystem through the CLI; its directory.
    pub fn pool(&mut self, name: &str, fs_type: FsType, size: u64) -> PathBuf {
        let dir = self.mount(fs_type, size).join(name);
        let mut args = vec!["pool", "create", name, "--dir", dir.to_str().unwrap()];
        if !fs_type.has_reflink() {
            args.push("--no-setup-check");
        }
        self.cli(&args).ok();
        dir
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(CLI);
        command
            .arg("--bus")
            .arg(self.bus.address())
            .args(args)
            .env_remove("QUBES_STORAGE_BUS");
        command
    }

    /// Runs the CLI with no stdin.
    pub fn cli(&self, args: &[&str]) -> Run {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run qubes-storage");
        Run::from_output(output)
    }

    /// Runs the CLI with `input` on stdin.
    pub fn cli_with_input(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child = self.spawn(args, Stdio::piped(), Stdio::piped());
        let mut stdin = child.0.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = wait_output(child);
        let _ = writer.join();
        output
    }

    /// Starts the CLI in the background; stdout is piped, stderr as given.
    pub fn spawn(&self, args: &[&str], stdin: Stdio, stderr: Stdio) -> Guarded {
        let child = self
            .command(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start qubes-storage");
        Guarded(child)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("daemon.log"))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- qubes-storaged log ----\n{}", self.log());
        }
        // Stop the service before the filesystems it holds files on are unmounted.
        if let Some(daemon) = self.daemon.take() {
            daemon.kill();
        }
    }
}

/// Waits (with the deadline) for a spawned CLI and collects what it printed.
pub fn wait_output(mut child: Guarded) -> Run {
    let stdout = child.0.stdout.take();
    let stderr = child.0.stderr.take();
    let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read_all(stdout.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = read_all(stderr.map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let status = wait_child(&mut child.0).expect("qubes-storage did not finish in time");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Polls `condition` until it holds; panics with `what` after the deadline.
#[track_caller]
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(POLL);
    }
}
