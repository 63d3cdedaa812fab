//! One service per bus and per state directory (contract rev 2). A second instance
//! that finds the name taken, or the state directory in use, exits non-zero with one
//! sentence saying which instance already runs — it never takes over the name, and
//! never opens an engine beside the first one's.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{opts, FsType, Harness, TestBus, MIB};
use qubes_storaged_testkit::process::Guard;

const DAEMON: &str = env!("CARGO_BIN_EXE_qubes-storaged");

/// Runs a second daemon on `bus` with `state_dir` until it exits; its status and log.
fn run_second(bus: &TestBus, state_dir: &Path) -> (std::process::ExitStatus, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(DAEMON)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--bus-address")
        .arg(bus.address())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard::new("second qubes-storaged", child);
    let status = guard.wait().expect("the second instance kept running");
    (status, std::fs::read_to_string(log.path()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_bus_exits_naming_the_first() {
    let mut h = Harness::start().await;
    let pool = h.pool_on("p", FsType::Btrfs, 256 * MIB).await;
    let other_state = tempfile::tempdir().unwrap();
    let (status, log) = run_second(&h.bus, other_state.path());
    assert!(
        !status.success(),
        "the second instance exited with {status}"
    );
    let first = h.daemon().pid();
    assert!(
        log.contains(&format!("another instance (pid {first}")) && log.contains("already serves"),
        "{log}"
    );
    let pools = h.manager().await.list_pools(opts()).await.unwrap();
    assert_eq!(pools, vec![pool], "the first instance no longer serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_state_directory_exits_naming_the_first() {
    let h = Harness::start().await;
    let other_bus = TestBus::permissive();
    let (status, log) = run_second(&other_bus, &h.state_dir());
    assert!(
        !status.success(),
        "the second instance exited with {status}"
    );
    let first = h.daemon().pid();
    assert!(
        log.contains("is in use by another qubes-storaged")
            && log.contains(&format!("(pid {first})")),
        "{log}"
    );
    h.manager().await.list_pools(opts()).await.unwrap();
}
