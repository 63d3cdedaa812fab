//! `cargo bench --bench cockpit`: how long the Cockpit page takes to show every volume
//! of a large pool, in headless Chromium on Cockpit's web server (the world of the
//! page's tests, `tests/cockpit_support`). Prints the figures; asserts nothing.
//!
//! - 10 000 volumes: one GetManagedObjects;
//! - 100 000 volumes: GetManagedObjects does not fit on the bus (32 MiB) and is
//!   refused, so the page reads ListPools, ListVolumes and one GetAll per volume
//!   (`cockpit/src/loader.js`).
//!
//! For each: the time from the page's navigation to its pools on screen, and to the
//! count of every volume with the load's progress gone. `QSD_COCKPIT_COUNTS=10000,…`
//! chooses the sizes. Needs root, Cockpit, Chromium, the built page (`make page`) and
//! the CLI beside the daemon (`cargo build --release --workspace`).

#[path = "../tests/cockpit_support/mod.rs"]
mod cockpit_support;
#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cockpit_support::{Session, World};

/// How long a load may take before the bench gives up on it.
const PATIENCE: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench cockpit: needs root (loop mounts, Cockpit sessions); run `sudo cargo bench --bench cockpit`");
        return ExitCode::FAILURE;
    }
    let counts: Vec<usize> = std::env::var("QSD_COCKPIT_COUNTS")
        .unwrap_or_else(|_| "10000,100000".to_owned())
        .split(',')
        .map(|n| n.trim().parse().expect("QSD_COCKPIT_COUNTS: numbers"))
        .collect();
    println!(
        "the Cockpit page with many volumes (2 CPUs here; load average {})",
        load_average()
    );
    println!(
        "{:>8}  {:>16}  {:>12}  {:>20}",
        "volumes", "read as", "pools shown", "every volume shown"
    );
    for count in counts {
        let (read_as, pools, all) = measure(count);
        println!(
            "{count:>8}  {read_as:>16}  {:>10.1} s  {:>18.1} s",
            pools.as_secs_f64(),
            all.as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}

/// One world with `count` volumes; (how they were read, pools shown, all shown).
fn measure(count: usize) -> (&'static str, Duration, Duration) {
    let mut w = World::start("bench");
    w.seeded_pool("big", count);
    let opened = Instant::now();
    w.open_page(Session::Root);
    let pools = opened.elapsed();
    let mut object_by_object = false;
    let done = format!(
        "qs.text('#volume-count') === '{count} volumes' && qs.$('#loading-volumes') === null"
    );
    let deadline = opened + PATIENCE;
    loop {
        if w.browser()
            .wait_until(&done, Duration::from_millis(500))
            .is_some()
        {
            break;
        }
        object_by_object |= w.eval("qs.$('#loading-volumes') !== null") == serde_json::json!(true);
        assert!(
            Instant::now() < deadline,
            "{count} volumes not shown after {PATIENCE:?}"
        );
    }
    let all = opened.elapsed();
    w.assert_no_page_errors();
    let read_as = if object_by_object {
        "object by object"
    } else {
        "one listing"
    };
    (read_as, pools, all)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
