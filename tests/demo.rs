//! The newcomer's path: `scripts/demo --no-wait` runs the whole walkthrough against the
//! binaries this test run built, prints what the README promises, and leaves nothing
//! behind (no temp dir, no mount, no loop device, no process).

use std::path::{Path, PathBuf};
use std::process::Command;

use qubes_storaged_testkit::workspace;

fn bin_dir() -> PathBuf {
    workspace::bin_dir(Path::new(env!("CARGO_BIN_EXE_qubes-storaged")))
}

/// The demos of this file run one at a time: each checks that its own temp dir is gone.
static ONE_DEMO_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn demo_dirs() -> Vec<String> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("qubes-storaged-demo."))
        .collect()
}

#[test]
fn demo_walks_through_a_template_and_an_appvm_and_cleans_up() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        rustix::process::getuid().as_raw(),
        0,
        "this test needs root (loop mounts, polkitd)"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let before = demo_dirs();
    let out = Command::new(repo.join("scripts/demo"))
        .arg("--no-wait")
        .env("QUBES_STORAGED_DEMO_BIN_DIR", bin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "Starting polkitd on the private bus",
        "Making a 4 GiB btrfs on a loop device",
        "the AppVM's root sees the template: fedora 42 with firefox installed",
        "private after the revert: my documents, version 1",
        "method=\"reflink\"",
        "busctl --address=unix:path=",
        "gdbus call --address unix:path=",
        "qubes-storage --bus unix:path=",
        "nothing of the demo is left",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    assert_eq!(demo_dirs(), before, "the demo's temp dir is gone");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("qubes-storaged-demo."),
        "a demo mount is left:\n{mounts}"
    );
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&loops.stdout).contains("qubes-storaged-demo."),
        "a demo loop device is left"
    );
}

#[test]
fn demo_runs_as_an_unprivileged_user_on_a_plain_directory() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let before = demo_dirs();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            "HOME=/tmp",
        ])
        .arg(format!(
            "QUBES_STORAGED_DEMO_BIN_DIR={}",
            bin_dir().display()
        ))
        .arg(repo.join("scripts/demo"))
        .arg("--no-wait")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed as nobody:\n{stdout}\n{stderr}"
    );
    for expected in [
        "Not root: no polkitd",
        "the pool is a plain directory with setup_check=false",
        "the AppVM's root sees the template: fedora 42 with firefox installed",
        "private after the revert: my documents, version 1",
        "method=\"copy_file_range\"",
        "nothing of the demo is left",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    assert_eq!(demo_dirs(), before, "the demo's temp dir is gone");
}
