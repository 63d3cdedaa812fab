//! Running `scripts/demo` from the tests, and checking what one run left behind.
//!
//! A run is known by its temp directory (`/tmp/qubes-storaged-demo.XXXXXX`, printed in
//! "Starting a private bus at …"): everything the run makes holds that unique path —
//! its files, its btrfs image (a loop device's backing file), its mount point, and its
//! processes (dbus-daemon's `--config-file`, the daemon's `--state-dir`, the bus
//! address in polkitd's and every child's environment). So [`leftovers_of`] checks only
//! what that run made, whatever other demos run or were orphaned on the machine.
//!
//! The demo as an unprivileged user runs from a copy in a world-readable directory
//! ([`ReadableCopy`]): the repository may be cloned where other users cannot enter
//! (under `/root`, or a `mktemp -d` directory).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use nix::sys::signal::Signal;
use qubes_storaged_testkit::process::{Guard, DEADLINE};
use qubes_storaged_testkit::workspace;

/// The directory of the binaries this test run built.
pub fn bin_dir() -> PathBuf {
    workspace::bin_dir(Path::new(env!("CARGO_BIN_EXE_qubes-storaged")))
}

pub fn demo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo")
}

/// The temp directory of a run, from the line that names its bus.
pub fn run_dir(output: &str) -> PathBuf {
    let marker = "Starting a private bus at ";
    let line = output
        .lines()
        .find_map(|line| line.split_once(marker).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("the demo did not say where its bus is:\n{output}"));
    let socket = PathBuf::from(line.trim());
    socket
        .parent()
        .expect("the bus socket's directory")
        .to_owned()
}

/// Everything of the run with temp directory `dir` that still exists, described.
pub fn leftovers_of(dir: &Path) -> Vec<String> {
    let dir_text = dir.to_str().expect("a UTF-8 path").to_owned();
    let mut left = Vec::new();
    if dir.symlink_metadata().is_ok() {
        left.push(format!("the directory {dir_text}"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(
        mounts
            .lines()
            .filter(|line| line.contains(&dir_text))
            .map(|line| format!("the mount {line}")),
    );
    left.extend(loop_devices_backed_in(&dir_text));
    left.extend(processes_mentioning(&dir_text));
    left
}

/// Loop devices whose backing file lies in `dir` (also once deleted).
fn loop_devices_backed_in(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            backing.contains(dir).then(|| {
                format!(
                    "the loop device {:?} on {}",
                    entry.file_name(),
                    backing.trim()
                )
            })
        })
        .collect()
}

/// Processes whose command line or environment holds `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id().to_string();
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                return None;
            }
            let read =
                |what: &str| std::fs::read(format!("/proc/{name}/{what}")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
            let environ = String::from_utf8_lossy(&read("environ")).into_owned();
            (cmdline.contains(text) || environ.contains(text))
                .then(|| format!("the process {name}: {cmdline}"))
        })
        .collect()
}

/// The demo waiting for Ctrl-C, as a child of the test, its stdout read line by line.
pub struct WaitingDemo {
    guard: Option<Guard>,
    lines: mpsc::Receiver<String>,
    pub output: String,
    pub dir: PathBuf,
}

impl WaitingDemo {
    /// Starts `scripts/demo` with the test build and waits until it waits.
    pub fn start() -> WaitingDemo {
        let child = Command::new(demo_script())
            .env("QUBES_STORAGED_DEMO_BIN_DIR", bin_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/demo");
        let mut guard = Guard::new("scripts/demo", child);
        let stdout = guard.child_mut().stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut demo = WaitingDemo {
            guard: Some(guard),
            lines,
            output: String::new(),
            dir: PathBuf::new(),
        };
        demo.read_until("Press Ctrl-C to stop the demo");
        demo.dir = run_dir(&demo.output);
        demo
    }

    /// Reads the demo's output until a line holds `text`.
    #[track_caller]
    fn read_until(&mut self, text: &str) {
        let deadline = Instant::now() + DEADLINE * 3;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(text);
                    self.output.push_str(&line);
                    self.output.push('\n');
                    if done {
                        return;
                    }
                }
                Err(_) => panic!("the demo never printed {text:?}:\n{}", self.output),
            }
        }
    }

    /// The bus address the demo serves on.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.dir.join("bus.sock").display())
    }

    /// The btrfs mount the demo's pool lives on (as root).
    pub fn mount(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// The commands the demo prints for the user, each as one shell command line.
    pub fn printed_commands(&self) -> Vec<String> {
        let block = self
            .output
            .split_once("==> The service is running on a private bus.")
            .map(|(_, block)| block)
            .unwrap_or_else(|| panic!("no hints in:\n{}", self.output));
        let block = block.split("\n\n").nth(1).unwrap_or_default();
        shell_lines(block)
    }

    /// Ctrl-C: the demo cleans up and exits; returns the rest of its output.
    pub fn interrupt(&mut self) -> String {
        let mut guard = self.guard.take().expect("the demo runs");
        guard.signal(Signal::SIGINT).expect("signal the demo");
        let status = qubes_storaged_testkit::process::wait_child(guard.child_mut());
        let mut rest = String::new();
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            rest.push_str(&line);
            rest.push('\n');
        }
        assert!(
            status.is_some(),
            "the demo did not end after Ctrl-C:\n{rest}"
        );
        rest
    }
}

impl Drop for WaitingDemo {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let _ = guard.signal(Signal::SIGINT);
            drop(guard);
        }
    }
}

/// The command lines of a block of text: lines that start with a command name, with
/// `\` continuations joined, comments and other lines left out.
pub fn shell_lines(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut pending: Option<String> = None;
    for line in block.lines() {
        let trimmed = line.trim();
        let continued = match pending.take() {
            Some(start) => format!("{start} {trimmed}"),
            None if trimmed.is_empty() || trimmed.starts_with(['#', '(']) => continue,
            None => trimmed.to_owned(),
        };
        match continued.strip_suffix('\\') {
            Some(start) => pending = Some(start.trim_end().to_owned()),
            None => commands.push(continued),
        }
    }
    commands
}

/// A copy of the demo script and the test build's binaries in a directory every user
/// can read, for running the demo as another user.
pub struct ReadableCopy {
    dir: tempfile::TempDir,
}

impl ReadableCopy {
    pub fn new() -> ReadableCopy {
        let dir = tempfile::Builder::new()
            .prefix("qsd-demo-copy-")
            .tempdir()
            .expect("temp dir");
        let open = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        open(dir.path(), 0o755);
        for sub in ["scripts", "bin"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            open(&dir.path().join(sub), 0o755);
        }
        let copy = |from: PathBuf, to: PathBuf| {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            open(&to, 0o755);
        };
        copy(demo_script(), dir.path().join("scripts/demo"));
        for binary in ["qubes-storaged", "qubes-storage"] {
            copy(bin_dir().join(binary), dir.path().join("bin").join(binary));
        }
        ReadableCopy { dir }
    }

    pub fn script(&self) -> PathBuf {
        self.dir.path().join("scripts/demo")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
}
