//! Closing the demo's terminal leaves nothing of that run behind: no image, mount, loop
//! device, dbus-daemon, polkitd or daemon. As a user does it: an interactive bash in a
//! real terminal (tmux, `testkit::terminal`) runs `scripts/demo`; the window is closed
//! while the demo waits. The kernel then hangs up the demo's process group and bash
//! sends SIGHUP again to its job — the second one used to cut the demo's cleanup short.
//! What the run made is known by its temp directory (`demo_support`). The terminal is
//! closed while the demo waits, and in the middle of its walkthrough (the hangup then
//! also kills the command the demo runs, and the demo exits through its error path).
//!
//! The demo outlives its shell: this test process becomes the child subreaper, so the
//! orphaned demo is reparented to it and reaped here (PID 1 on the test machines does
//! not reap orphans).

mod demo_support;

use std::time::Instant;

use demo_support::{bin_dir, demo_script, leftovers_of, run_dir};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use qubes_storaged_testkit::process::{DEADLINE, POLL};
use qubes_storaged_testkit::terminal::Terminal;

/// The child of `parent` whose command line holds `text`.
fn child_of(parent: u32, text: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 2..];
        let ppid: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == parent && String::from_utf8_lossy(&cmdline).contains(text)).then_some(pid)
    })
}

/// Waits for our adopted child `pid` to exit, and reaps it.
fn reap(pid: u32) {
    let deadline = Instant::now() + DEADLINE * 3;
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return,
            Err(error) => panic!("cannot wait for the demo (pid {pid}): {error}"),
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not end after the hangup"
        );
        std::thread::sleep(POLL);
    }
}

/// Runs the demo from an interactive bash in a terminal, closes the terminal once the
/// screen shows `moment`, and returns what is left of that run.
fn close_the_demos_terminal_at(moment: &str) -> Vec<String> {
    nix::sys::prctl::set_child_subreaper(true).expect("become the child subreaper");
    let bin = bin_dir();
    let env = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("TERM", "xterm"),
        ("PS1", "$ "),
        ("QUBES_STORAGED_DEMO_BIN_DIR", bin.to_str().unwrap()),
    ];
    let mut terminal = Terminal::start(&env, &["bash", "--norc", "--noprofile", "-i"]);
    terminal.wait_for_line("$");
    let script = demo_script();
    terminal.type_text(script.to_str().unwrap());
    terminal.press("Enter");
    let screen = terminal.wait_for_text(moment);
    let dir = run_dir(&screen);
    let demo = child_of(terminal.program_pid(), "scripts/demo").expect("the demo's process");
    assert!(
        !leftovers_of(&dir).is_empty(),
        "the running demo is not recognised by its directory {}",
        dir.display()
    );
    terminal.close();
    reap(demo);
    leftovers_of(&dir)
}

#[test]
fn closing_the_terminal_while_the_demo_waits_leaves_nothing_of_its_run() {
    let left = close_the_demos_terminal_at("Press Ctrl-C to stop the demo");
    assert!(left.is_empty(), "closing the terminal left {left:#?}");
}

#[test]
fn closing_the_terminal_during_the_walkthrough_leaves_nothing_of_its_run() {
    let left = close_the_demos_terminal_at("Making a 4 GiB btrfs on a loop device");
    assert!(left.is_empty(), "closing the terminal left {left:#?}");
}
