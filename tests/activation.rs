//! The README's recipe for running the service without systemd works: a dbus-daemon
//! with the README's bus configuration (its ```xml block, with the socket and the
//! activation directory moved into a temp dir) starts the daemon from the project's
//! activation file on the first call, and the call succeeds.
//!
//! The daemon is started by dbus-daemon, not by the test: its state directory comes
//! from `STATE_DIRECTORY` in the bus's environment (as the README says), and the test
//! stops it by the PID the bus reports for the name. The test process is the child
//! subreaper, so whatever dbus-daemon started and left is reaped here (PID 1 on the
//! test machines does not reap orphans).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use qubes_storaged_testkit::process::{Guard, DEADLINE, POLL};
use qubes_storaged_testkit::workspace;

const README_SOCKET_DIR: &str = "/run/qubes-storaged-bus";
const README_SERVICE_DIR: &str = "/usr/local/share/dbus-1/system-services";

fn bin_dir() -> PathBuf {
    workspace::bin_dir(Path::new(env!("CARGO_BIN_EXE_qubes-storaged")))
}

/// The README's bus configuration: the ```xml block of "Without systemd".
fn readme_bus_config() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let readme = readme.expect("README.md");
    let section = readme
        .split_once("### Without systemd")
        .expect("the README's section Without systemd")
        .1;
    let block = section.split_once("```xml\n").expect("an xml block").1;
    block
        .split_once("```")
        .expect("a closed block")
        .0
        .to_owned()
}

/// Polls `condition` until it holds, or panics after the deadline.
#[track_caller]
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(POLL);
    }
}

/// The PID of the connection that owns `name` on the bus at `address`.
fn owner_pid(address: &str, name: &str) -> Option<u32> {
    let output = Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
        .args([
            "org.freedesktop.DBus",
            "GetConnectionUnixProcessID",
            "s",
            name,
        ])
        .output()
        .ok()?;
    let reply = String::from_utf8_lossy(&output.stdout);
    reply.trim().strip_prefix("u ")?.parse().ok()
}

/// Reaps every child this process adopted, without waiting.
fn reap_adopted() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

#[test]
fn the_readme_bus_with_a_servicedir_starts_the_service_on_the_first_call() {
    nix::sys::prctl::set_child_subreaper(true).expect("become the child subreaper");
    let work = tempfile::tempdir().unwrap();
    let services = work.path().join("services");
    std::fs::create_dir(&services).unwrap();
    let activation = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/org.qubes.Storage.service"),
    )
    .unwrap()
    .replace("@SBINDIR@", bin_dir().to_str().unwrap());
    std::fs::write(services.join("org.qubes.Storage.service"), activation).unwrap();
    let config = readme_bus_config()
        .replace(README_SOCKET_DIR, work.path().to_str().unwrap())
        .replace(README_SERVICE_DIR, services.to_str().unwrap());
    let config_file = work.path().join("bus.conf");
    std::fs::write(&config_file, config).unwrap();
    let state = work.path().join("state");
    let bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config_file.display()))
        .args(["--nofork", "--nopidfile"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("STATE_DIRECTORY", &state)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon is installed");
    let bus = Guard::new("dbus-daemon", bus);
    let socket = work.path().join("socket");
    let address = format!("unix:path={}", socket.display());
    wait_until("the bus listens", || {
        owner_pid(&address, "org.freedesktop.DBus").is_some()
    });

    let status = Command::new(bin_dir().join("qubes-storage"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .env_remove("QUBES_STORAGE_BUS")
        .arg("status")
        .output()
        .unwrap();
    let daemon = owner_pid(&address, "org.qubes.Storage");
    if let Some(pid) = daemon {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        wait_until("the activated daemon is gone", || {
            reap_adopted();
            !Path::new(&format!("/proc/{pid}")).exists()
        });
    }
    drop(bus);
    reap_adopted();

    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(stdout.contains("Drivers:  file-reflink"), "{stdout}");
    assert!(
        daemon.is_some(),
        "nobody owned org.qubes.Storage after the call"
    );
    assert!(
        state.join("pools").is_dir(),
        "the daemon did not use STATE_DIRECTORY"
    );
}
