//! The Cockpit page in a real browser: headless Chromium on Cockpit's shell (cockpit-ws
//! without TLS, a local session whose bridge talks to the test's private bus as its
//! system bus), the page as `make install` installs it, the real daemon and polkitd.
//! Each test builds its own world (`cockpit_support`) and leaves nothing behind.
//!
//! Screenshots of the main views go to `target/tmp/cockpit-screenshots/`.

mod cockpit_support;
mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use cockpit_support::{js, Session, World};
use common::{FsType, MIB};
use zbus::OwnedObjectPath;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Two pools on btrfs with a few volumes of every kind; appvms/vault/private runs.
fn small_world(test: &'static str) -> (World, OwnedObjectPath) {
    let mut w = World::start(test);
    let work = w.pool("work", FsType::Btrfs, 256 * MIB);
    let vault = w.pool("vault", FsType::Btrfs, 256 * MIB);
    w.origin(&work, "vm-templates/debian-12/root", 64 * MIB);
    w.origin(&work, "appvms/work/private", 16 * MIB);
    w.volatile(&work, "appvms/work/volatile", 8 * MIB);
    w.origin(&work, "appvms/personal/private", 16 * MIB);
    let vault_private = w.origin(&vault, "appvms/vault/private", 32 * MIB);
    let started = w.volume(&vault_private);
    w.block_on(started.start(common::opts())).expect("Start");
    (w, vault_private)
}

#[test]
fn page_lists_every_pool_and_volume_with_state_in_words() {
    let (mut w, _) = small_world("overview");
    w.open_page(Session::Root);
    for pool in ["work", "vault"] {
        w.expect(
            &format!("qs.$('tr.qs-pool-row[data-pool={}] .qs-usage')", js(pool)),
            &format!("pool {pool} has a usage bar"),
        );
    }
    assert_eq!(
        w.cell("work", "vm-templates/debian-12/root", "Kind"),
        "origin"
    );
    assert_eq!(
        w.cell("work", "vm-templates/debian-12/root", "Size"),
        "64 MiB"
    );
    assert_eq!(w.cell("work", "appvms/work/volatile", "Kind"), "volatile");
    assert_eq!(w.cell("work", "appvms/work/private", "Revisions"), "0");
    assert_eq!(w.cell("work", "appvms/work/private", "State"), "stopped");
    assert_eq!(w.cell("vault", "appvms/vault/private", "State"), "running");
    assert_eq!(
        w.expect("qs.text('#volume-count')", "the volume count"),
        "5 volumes"
    );
    w.screenshot("overview");
    w.assert_no_page_errors();
}

#[test]
fn busctl_start_turns_the_row_running_within_a_second_without_reload() {
    let (mut w, _) = small_world("realtime");
    w.open_page(Session::Root);
    let (pool, vid) = ("work", "appvms/work/private");
    w.expect_state(pool, vid, "stopped");
    // A marker a reload would wipe, and a recorder of the moment the row changes.
    w.eval(&format!(
        r#"window.qsMarker = "still here";
           window.qsRunningAt = null;
           const observer = new MutationObserver(() => {{
               if (qs.cell({p}, {v}, "State") === "running") {{
                   window.qsRunningAt = Date.now();
                   observer.disconnect();
               }}
           }});
           observer.observe(qs.doc(), {{ subtree: true, childList: true, characterData: true }});
           true"#,
        p = js(pool),
        v = js(vid)
    ));
    let sent_at = now_ms();
    busctl_start(
        &w,
        "/org/qubes/Storage/pools/work/volumes/appvms_2fwork_2fprivate",
    );
    let running_at = w.expect("window.qsRunningAt", "the row turned running");
    let latency = running_at.as_u64().expect("a time") - sent_at;
    eprintln!("busctl Start → row says running: {latency} ms");
    assert!(latency < 1000, "the row turned running after {latency} ms");
    assert_eq!(
        w.eval("window.qsMarker"),
        "still here",
        "the page was reloaded"
    );
    w.assert_no_page_errors();
}

#[test]
fn clicking_stop_stops_the_volume_in_the_service() {
    let (mut w, volume) = small_world("stop");
    w.open_page(Session::Root);
    w.expect_state("vault", "appvms/vault/private", "running");
    w.click_row_button("vault", "appvms/vault/private", "Stop");
    w.expect_state("vault", "appvms/vault/private", "stopped");
    let proxy = w.volume(&volume);
    let started = w.block_on(proxy.started()).expect("Started");
    assert!(!started, "the service still runs the volume");
    w.assert_no_page_errors();
}

#[test]
fn the_page_loads_with_one_get_managed_objects_and_then_only_listens() {
    let (mut w, _) = small_world("no-polling");
    w.monitor_bus();
    w.open_page(Session::Root);
    w.expect_state("work", "appvms/work/private", "stopped");
    // Everything the page did to load is before this mark in the bus's order.
    let loaded = w.block_on(w.monitor().mark());
    busctl_start(
        &w,
        "/org/qubes/Storage/pools/work/volumes/appvms_2fwork_2fprivate",
    );
    w.expect_state("work", "appvms/work/private", "running");
    let calls = w.block_on(w.monitor().calls_to_service_from(w.bridge_pid()));
    let loads: Vec<_> = calls
        .iter()
        .filter(|(_, c)| c.is("org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))
        .collect();
    assert_eq!(loads.len(), 1, "GetManagedObjects calls: {loads:#?}");
    let after_load: Vec<_> = calls
        .iter()
        .filter(|(index, c)| {
            *index > loaded
                && !matches!(c.property.as_ref(), Some((i, p)) if c.member == "Get"
                    && ((i == "org.qubes.Storage.Volume" && p == "Usage")
                        || (i == "org.qubes.Storage.Pool" && p == "UsageDetails")))
        })
        .collect();
    assert!(
        after_load.is_empty(),
        "after loading, the page called more than Gets of the unannounced properties: {after_load:#?}"
    );
}

/// `busctl call … Volume Start` from outside the page; panics unless it succeeds.
fn busctl_start(w: &World, path: &str) {
    let output = std::process::Command::new("busctl")
        .arg(format!("--address={}", w.bus_address()))
        .args([
            "call",
            "org.qubes.Storage",
            path,
            "org.qubes.Storage.Volume",
            "Start",
        ])
        .args(["a{sv}", "0"])
        .output()
        .expect("run busctl");
    assert!(
        output.status.success(),
        "busctl Start failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
