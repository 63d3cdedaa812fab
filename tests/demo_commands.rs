//! Every command the demo and the README print runs cleanly against the demo's service:
//! exit status 0 and nothing on stderr (a warning is a newcomer's first impression).
//!
//! The demo runs as root (btrfs, polkitd) and waits; its hints are run exactly as
//! printed, from a shell whose PATH does not hold the build (they must work as
//! printed). The README's commands (lines of its ```sh blocks that start with
//! `qubes-storage`, `busctl` or `gdbus`) run in order with DBUS_SYSTEM_BUS_ADDRESS set
//! to the demo's bus and the CLI on PATH, as after `make install`; their directories
//! below /var/lib are moved below the demo's btrfs mount, where the test first makes
//! what the README's prose assumes (an existing Qubes pool directory for `--adopt`).
//!
//! `monitor` runs until interrupted: it must greet on stderr (only that), print the
//! event of a volume that starts, and stop on Ctrl-C.

mod demo_support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use demo_support::{bin_dir, shell_lines, WaitingDemo};
use nix::sys::signal::Signal;
use qubes_storaged_testkit::process::{Guard, DEADLINE};

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What running one command gave, when it was not clean.
fn failure(command: &str, status: std::process::ExitStatus, stderr: &str) -> Option<String> {
    (!status.success() || !stderr.is_empty())
        .then(|| format!("$ {command}\n  exit: {status}\n  stderr:\n{stderr}"))
}

/// Runs `line` with bash, in an environment of exactly `env`.
fn run(line: &str, env: &[(&str, String)]) -> Option<String> {
    let output = Command::new("bash")
        .args(["-c", line])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    failure(
        line,
        output.status,
        &String::from_utf8_lossy(&output.stderr),
    )
}

/// Lines of a child's pipe as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

#[track_caller]
fn expect_line(lines: &mpsc::Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return,
            Ok(_) => {}
            Err(_) => panic!("no {what} in time"),
        }
    }
}

/// Runs a `monitor` line: it greets, shows `volume` starting (started and stopped
/// here with the CLI), and ends on Ctrl-C with nothing else on stderr.
fn run_monitor(line: &str, env: &[(&str, String)], start_stop: [&str; 2]) -> Option<String> {
    let child = Command::new("bash")
        .args(["-c", &format!("exec {line}")])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    let mut monitor = Guard::new("monitor", child);
    let stdout = lines_of(monitor.child_mut().stdout.take().unwrap());
    let stderr = lines_of(monitor.child_mut().stderr.take().unwrap());
    expect_line(&stderr, "monitor greeting", |l| {
        l.starts_with("Monitoring ")
    });
    for command in start_stop {
        if let Some(failed) = run(command, env) {
            return Some(failed);
        }
    }
    expect_line(&stdout, "VolumeStarted line", |l| {
        l.contains("VolumeStarted")
    });
    monitor.signal(Signal::SIGINT).expect("interrupt monitor");
    let status = qubes_storaged_testkit::process::wait_child(monitor.child_mut());
    let status = status.expect("monitor ends on Ctrl-C");
    let rest: Vec<String> = stderr.iter().collect();
    // Ending on the Ctrl-C that stops it is how monitor succeeds.
    let stopped = status.success() || status.signal() == Some(Signal::SIGINT as i32);
    let status = match stopped {
        true => std::process::ExitStatus::from_raw(0),
        false => status,
    };
    failure(line, status, &rest.join("\n"))
}

#[test]
fn every_command_the_demo_prints_runs_cleanly() {
    let mut demo = WaitingDemo::start();
    let commands = demo.printed_commands();
    assert!(commands.len() >= 5, "too few hints: {commands:#?}");
    let env = [
        ("PATH", SYSTEM_PATH.to_owned()),
        ("HOME", "/root".to_owned()),
    ];
    let cli = bin_dir().join("qubes-storage");
    let volume = "demo appvms/work/private";
    let start_stop = [
        format!(
            "{} --bus {} volume start {volume}",
            cli.display(),
            demo.address()
        ),
        format!(
            "{} --bus {} volume stop {volume}",
            cli.display(),
            demo.address()
        ),
    ];
    let start_stop = [start_stop[0].as_str(), start_stop[1].as_str()];
    let failures: Vec<String> = commands
        .iter()
        .filter_map(|line| match line.ends_with(" monitor") {
            true => run_monitor(line, &env, start_stop),
            false => run(line, &env),
        })
        .collect();
    let rest = demo.interrupt();
    assert!(rest.contains("nothing of the demo is left"), "{rest}");
    assert!(
        failures.is_empty(),
        "{} of {} commands the demo prints do not run cleanly:\n\n{}",
        failures.len(),
        commands.len(),
        failures.join("\n\n")
    );
}

/// The README's commands, from its ```sh blocks.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let readme = readme.expect("README.md");
    let mut blocks = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("```").expect("a closed code block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    let tools = ["qubes-storage ", "busctl ", "gdbus "];
    blocks
        .into_iter()
        .flat_map(shell_lines)
        .filter(|line| tools.iter().any(|tool| line.starts_with(tool)))
        .collect()
}

/// What the README's prose assumes before its commands: `/var/lib` exists, and so does
/// an existing Qubes pool in `/var/lib/qubes` with one committed image.
fn prepare_readme_world(root: &Path) {
    let old_pool = root.join("var/lib/qubes");
    std::fs::create_dir_all(old_pool.join("appvms/work")).unwrap();
    std::fs::create_dir_all(old_pool.join("vm-templates")).unwrap();
    let image = std::fs::File::create(old_pool.join("appvms/work/private.img")).unwrap();
    image.set_len(4 << 20).unwrap();
}

#[test]
fn every_command_the_readme_shows_runs_cleanly_against_the_demo() {
    let commands = readme_commands();
    assert!(
        commands.len() >= 8,
        "too few README commands: {commands:#?}"
    );
    let mut demo = WaitingDemo::start();
    let root = demo.mount().join("readme");
    prepare_readme_world(&root);
    let path = format!("{}:{SYSTEM_PATH}", bin_dir().display());
    let env = [
        ("PATH", path),
        ("HOME", "/root".to_owned()),
        ("DBUS_SYSTEM_BUS_ADDRESS", demo.address()),
    ];
    let relocated = format!("{}/var/lib/", root.display());
    let mut failures = Vec::new();
    let mut started_volume: Option<(String, String)> = None;
    for line in &commands {
        let line = line.replace("/var/lib/", &relocated);
        if line.starts_with("qubes-storage volume start ") {
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            started_volume = Some((words[3].clone(), words[4].clone()));
        }
        let failed = match line.trim_end() == "qubes-storage monitor" {
            true => {
                let (pool, vid) = started_volume
                    .clone()
                    .expect("a volume started before monitor");
                let start_stop = [
                    format!("qubes-storage volume start {pool} {vid} >/dev/null"),
                    format!("qubes-storage volume stop {pool} {vid} >/dev/null"),
                ];
                run_monitor(&line, &env, [&start_stop[0], &start_stop[1]])
            }
            false => run(&line, &env),
        };
        failures.extend(failed);
    }
    let rest = demo.interrupt();
    assert!(rest.contains("nothing of the demo is left"), "{rest}");
    assert!(
        failures.is_empty(),
        "{} of {} commands of the README do not run cleanly:\n\n{}",
        failures.len(),
        commands.len(),
        failures.join("\n\n")
    );
}
