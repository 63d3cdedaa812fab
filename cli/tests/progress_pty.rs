//! What a person at a terminal sees: the CLI run with its stderr on a pseudo-terminal
//! draws a live progress bar (with rate and ETA) for a clone that copies data, driven by
//! the service's Job object. Fixtures: `tests/common`.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::process::Stdio;

use common::*;
use nix::pty::{openpty, Winsize};

const VID: &str = "appvms/work/private";

#[test]
fn clone_on_a_terminal_draws_a_bar_with_rate_and_eta() {
    let mut world = World::start();
    world.pool("src", FsType::Btrfs, 1024 * MIB);
    world.pool("dst", FsType::Ext4, 1024 * MIB);
    for (pool, size) in [("src", "256M"), ("dst", "1M")] {
        world
            .cli(&[
                "volume",
                "create",
                pool,
                VID,
                "--size",
                size,
                "--rw",
                "--save-on-stop",
            ])
            .ok();
    }
    // 256 MiB of data: across filesystems that is a byte copy, so a Job with progress.
    let image = world.scratch().join("in.img");
    let mut file = File::create(&image).unwrap();
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..256 {
        file.write_all(&block).unwrap();
    }
    drop(file);
    world
        .cli(&["volume", "import", "src", VID, image.to_str().unwrap()])
        .ok();

    let size = Winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).expect("openpty");
    let clone = world.spawn(
        &["volume", "clone", "src", VID, "dst", VID],
        Stdio::null(),
        Stdio::from(pty.slave),
    );
    // Read the terminal until the CLI has exited and closed it (EIO on Linux).
    let mut master = File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let run = wait_output(clone);
    assert_eq!(run.code, 0, "clone failed: {}", run.stderr);
    let screen = reader.join().unwrap();
    assert!(
        screen.contains("ETA"),
        "no ETA on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("/s"),
        "no rate on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("MiB"),
        "no byte counts on the terminal:\n{screen:?}"
    );
    assert!(
        screen.contains("256.00 MiB"),
        "the total is the data copied:\n{screen:?}"
    );
    assert!(
        screen.contains('\u{1b}'),
        "a redrawn bar uses terminal escapes:\n{screen:?}"
    );
}
