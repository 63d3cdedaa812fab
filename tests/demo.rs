//! The newcomer's path: `scripts/demo --no-wait` runs the whole walkthrough against the
//! binaries this test run built, prints what the README promises, and leaves nothing of
//! its own run behind (no temp dir, no mount, no loop device, no process) — checked for
//! that run only, so other demos on the machine do not matter (`demo_support`).

mod demo_support;

use std::process::Command;

use demo_support::{bin_dir, demo_script, leftovers_of, run_dir, ReadableCopy};

#[test]
fn demo_walks_through_a_template_and_an_appvm_and_cleans_up() {
    assert_eq!(
        rustix::process::getuid().as_raw(),
        0,
        "this test needs root (loop mounts, polkitd)"
    );
    let out = Command::new(demo_script())
        .arg("--no-wait")
        .env("QUBES_STORAGED_DEMO_BIN_DIR", bin_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let cli = bin_dir().join("qubes-storage");
    for expected in [
        "Starting polkitd on the private bus",
        "Making a 4 GiB btrfs on a loop device",
        "the AppVM's root sees the template: fedora 42 with firefox installed",
        "private after the revert: my documents, version 1",
        "method=\"reflink\"",
        "busctl --address=unix:path=",
        "gdbus call --address unix:path=",
        &format!("  {} --bus unix:path=", cli.display()),
        "nothing of the demo is left",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    let left = leftovers_of(&run_dir(&stdout));
    assert!(left.is_empty(), "the demo left {left:#?}");
}

#[test]
fn demo_runs_as_an_unprivileged_user_on_a_plain_directory() {
    let copy = ReadableCopy::new();
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
            copy.bin_dir().display()
        ))
        .arg(copy.script())
        .arg("--no-wait")
        .current_dir("/")
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
        "a spare copy of the new image",
        "nothing of the demo is left",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    let left = leftovers_of(&run_dir(&stdout));
    assert!(left.is_empty(), "the demo left {left:#?}");
}
