//! The Cockpit page in a real browser: headless Chromium on Cockpit's shell (cockpit-ws
//! without TLS, a local session whose bridge talks to the test's private bus as its
//! system bus), the page as `make install` installs it, the real daemon and polkitd.
//! Each test builds its own world (`cockpit_support`) and leaves nothing behind.
//!
//! Screenshots of the main views go to `target/tmp/cockpit-screenshots/`.

mod cockpit_support;
mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use cockpit_support::{js, Session, World, STARTED_EVERY};
use common::common_fs::Frozen;
use common::{FsType, MIB};
use qubes_storaged_testkit::polkit::RuleFile;
use qubes_storaged_testkit::users::{gdbus_call_as, Account, UserSpec, Users};
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

/// The page at a desktop's width, at 900 px and 660 px (Cockpit's menu beside it) and a
/// phone's, with long names and an outdated snapshot: nothing scrolls sideways (the
/// volumes' actions and the pools' menu stay in sight; before, at 900 px the list pushed
/// Start and the menu out of view), and every row — every card on a phone — has one
/// height, which the window of rows relies on (an outdated snapshot's card was taller).
#[test]
fn the_volume_list_fits_every_width_with_rows_of_one_height() {
    let mut w = World::start("widths");
    let pool = w.pool("varlibqubes", FsType::Btrfs, 256 * MIB);
    let template = w.origin(&pool, "vm-templates/fedora-40-xfce-minimal/root", 16 * MIB);
    w.origin(&pool, "appvms/a-very-long-name-for-a-vm/private", 16 * MIB);
    w.volatile(&pool, "appvms/a-very-long-name-for-a-vm/volatile", 8 * MIB);
    let config = common::opts_of([
        ("snap_on_start", zbus::Variant::from(true)),
        (
            "source",
            zbus::Variant::from("vm-templates/fedora-40-xfce-minimal/root"),
        ),
    ]);
    let root = w.block_on(w.h().create_volume(
        &pool,
        "appvms/a-very-long-name-for-a-vm/root",
        config,
    ));
    w.block_on(w.volume(&root).start(common::opts()))
        .expect("Start");
    let source = w.volume(&template);
    w.block_on(source.start(common::opts())).expect("Start");
    w.block_on(source.stop(common::opts())).expect("Stop");
    w.open_page(Session::Root);
    w.expect(
        "qs.$$('tr.qs-row .qs-outdated').length === 1",
        "the snapshot shown outdated",
    );
    for width in [1400, 900, 660, 400] {
        w.browser().call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({ "width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        );
        w.expect(
            "(() => { const s = qs.$('.qs-volumes-scroll'); \
                const page = s.ownerDocument.documentElement; \
                return s.scrollWidth <= s.clientWidth && page.scrollWidth <= page.clientWidth \
                    && [...s.ownerDocument.querySelectorAll('.qs-pools, .qs-volumes')] \
                        .every(t => t.getBoundingClientRect().right <= page.clientWidth); })()",
            &format!("no sideways scroll at {width} px"),
        );
        let heights = w.eval(
            "qs.$$('tr.qs-row').map(r => [r.dataset.vid, r.offsetHeight, \
                [...r.querySelectorAll('td')].map(c => c.dataset.label + ':' + c.offsetHeight).join(' ')])",
        );
        // (The last card of a list has no margin below it: not a row's own height.)
        let rows = heights.as_array().expect("rows");
        let distinct: std::collections::BTreeSet<u64> = rows[..rows.len() - 1]
            .iter()
            .filter_map(|row| row[1].as_u64())
            .collect();
        assert_eq!(
            distinct.len(),
            1,
            "rows of several heights at {width} px: {heights}"
        );
        w.screenshot(&format!("width-{width}"));
    }
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

/// A call the page may make after loading: a Get of one of the two properties the
/// service does not announce.
fn is_unannounced_read(call: &cockpit_support::monitor::Call) -> bool {
    matches!(call.property.as_ref(), Some((i, p)) if call.member == "Get"
        && ((i == "org.qubes.Storage.Volume" && p == "Usage")
            || (i == "org.qubes.Storage.Pool" && p == "UsageDetails")))
}

/// How long the page is watched for calls it should not make (a poller of the
/// service's state would call within it).
const QUIET: std::time::Duration = std::time::Duration::from_secs(2);

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
    let bridge = w.bridge_pid();
    let unexpected = w.block_on(
        w.monitor()
            .unexpected_call_within(bridge, loaded, QUIET, |c| !is_unannounced_read(c)),
    );
    assert!(
        unexpected.is_none(),
        "after loading, the page called more than Gets of the unannounced properties: {unexpected:#?}"
    );
    let calls = w.block_on(w.monitor().calls_to_service_from(bridge));
    let loads: Vec<_> = calls
        .iter()
        .filter(|(_, c)| c.is("org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))
        .collect();
    assert_eq!(loads.len(), 1, "GetManagedObjects calls: {loads:#?}");
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

/// Every file below `dir` (directories only as the path to a file).
fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

#[test]
fn clone_without_reflinks_shows_moving_progress_and_cancel_leaves_nothing() {
    let mut w = World::start("clone");
    let slow = w.pool("slow", FsType::Ext4, 3072 * MIB);
    let copies = w.pool("copies", FsType::Ext4, 3072 * MIB);
    let source = w.origin(&slow, "vm-templates/big/root", MIB);
    let proxy = w.volume(&source);
    let filled = std::time::Instant::now();
    w.block_on(common::fill_scattered(&proxy, 2048 * MIB, 7));
    eprintln!("filled the source in {:?}", filled.elapsed());
    let copies_dir = w.pool_dir(&copies);
    assert!(files_below(&copies_dir).is_empty());
    w.open_page(Session::Root);
    w.click_row_menu("slow", "vm-templates/big/root", "Clone…");
    w.expect("qs.$('#clone-dialog')", "the clone dialog");
    let copies_path = js(copies.as_str());
    w.expect(
        &format!("qs.setValue(qs.$('#clone-pool'), {copies_path})"),
        "the pool choice",
    );
    w.expect(
        "qs.$('#clone-vid').value === 'vm-templates/big/root'",
        "the same vid in the other pool",
    );
    // Record each value the bar shows, from the first one on.
    w.eval(
        r#"window.qsProgress = [];
           new MutationObserver(() => {
               const bar = qs.$('#jobs [role=progressbar]');
               const value = bar && Number(bar.getAttribute('aria-valuenow'));
               if (bar && window.qsProgress.at(-1) !== value) window.qsProgress.push(value);
           }).observe(qs.doc(), { subtree: true, childList: true, attributes: true, characterData: true });
           true"#,
    );
    w.expect(
        "qs.click(qs.button(qs.$('#clone-dialog'), 'Clone'))",
        "the Clone button",
    );
    let seen = w.expect(
        "window.qsProgress.filter(v => v > 0).length >= 2 && window.qsProgress",
        "the progress bar moved",
    );
    eprintln!("progress values seen: {seen}");
    // From here the copy is held where it is, until the page's Cancel has reached it.
    let frozen = Frozen::new(&copies_dir);
    let title = w.expect(
        "qs.text('#jobs .pf-v5-c-progress__description')",
        "the job's title",
    );
    assert_eq!(
        title,
        "Copying vm-templates/big/root (slow) into vm-templates/big/root (copies)"
    );
    w.screenshot("progress");
    w.expect(
        "qs.click(qs.$('#jobs .qs-job-cancel'))",
        "the Cancel button",
    );
    w.block_on(w.h().wait_for_log("job cancelled"));
    frozen.thaw();
    let message = w.expect(
        "qs.$$('[data-message]').map(m => m.textContent).find(t => t.includes('cancelled'))",
        "the page says the clone was cancelled",
    );
    eprintln!("message: {message}");
    let values: Vec<f64> = serde_json::from_value(seen).expect("numbers");
    assert!(
        values.windows(2).all(|v| v[0] <= v[1]),
        "the bar went backwards: {values:?}"
    );
    // Nothing of the clone is left: no volume, no job, no file.
    w.expect(
        "!qs.row('copies', 'vm-templates/big/root') && !qs.$('#jobs')",
        "the clone's row and job are gone",
    );
    let pool = w.pool_proxy(&copies);
    let lookup = w.block_on(pool.get_volume("vm-templates/big/root", common::opts()));
    common::assert_error(lookup, "NotFound");
    let objects = w.block_on(common::oracle::managed_objects(&w.h().conn));
    assert!(
        !objects
            .keys()
            .any(|p| p.starts_with("/org/qubes/Storage/jobs/")),
        "a job object stayed"
    );
    w.block_on(w.h().settled());
    assert_eq!(
        files_below(&copies_dir),
        Vec::<String>::new(),
        "files stayed in the pool"
    );
    w.assert_no_page_errors();
}

// ---- sessions without administrative access ----

const VIEWER: &str = "qsd-web-viewer";
const OPERATOR: &str = "qsd-web-operator";
const RULE_PATH: &str = "/etc/polkit-1/rules.d/49-qubes-storaged-cockpit-page.rules";

/// The operator may start and stop the volumes of pool "work", but not its templates;
/// the viewer gets polkit's defaults (administrators only).
fn operator_rule() -> String {
    format!(
        r#"// Installed by qubes-storaged's tests/cockpit_page.rs while it runs; safe to delete.
polkit.addRule(function(action, subject) {{
    if (subject.user == "{OPERATOR}" && action.id == "org.qubes.storage.run-volumes"
        && action.lookup("pool") == "work") {{
        var vid = action.lookup("vid");
        if (vid && vid.indexOf("vm-templates/") == 0)
            return polkit.Result.NO;
        return polkit.Result.YES;
    }}
}});
"#
    )
}

/// The two test users and the operator's rule, held for the test (taken before the
/// world, so that polkitd reads the rule at its start).
struct Visitors {
    viewer: Account,
    operator: Account,
    _rule: RuleFile,
    _users: Users,
}

impl Visitors {
    fn hold() -> Visitors {
        let users = Users::hold(
            "qubes-storaged-cockpit-users",
            &[],
            &[
                UserSpec {
                    name: VIEWER,
                    groups: &[],
                },
                UserSpec {
                    name: OPERATOR,
                    groups: &[],
                },
            ],
        );
        let rule = RuleFile::hold("qubes-storaged-cockpit-rule", RULE_PATH, operator_rule());
        Visitors {
            viewer: users.account(VIEWER),
            operator: users.account(OPERATOR),
            _rule: rule,
            _users: users,
        }
    }
}

#[test]
fn a_user_without_rights_gets_a_read_only_page_that_says_why() {
    let visitors = Visitors::hold();
    let (mut w, _) = small_world("read-only");
    w.open_page(Session::User(visitors.viewer));
    let banner = w.expect("qs.text('#read-only')", "the read-only notice");
    let banner = banner.as_str().expect("text").to_owned();
    assert!(
        banner.contains(VIEWER),
        "the notice names the user: {banner}"
    );
    assert!(
        banner.contains("administrative access") && banner.contains("polkit"),
        "the notice says why: {banner}"
    );
    // Everything is shown, nothing can be changed.
    assert_eq!(w.cell("vault", "appvms/vault/private", "State"), "running");
    let controls = w.eval(
        "qs.$$('tr.qs-row button, #create-pool, .qs-job-cancel').map(b => b.textContent.trim())\
            .filter(t => t !== '' && !t.includes('/'))",
    );
    assert_eq!(controls, serde_json::json!([]), "the page offers changes");
    w.screenshot("read-only");
    w.assert_no_page_errors();
}

/// The sentence the service answers `account` for Start on the volume at `path`,
/// asked outside the page (gdbus with the interactive flag, which Cockpit's bridge
/// sets too).
fn refusal_of_start(w: &World, account: &Account, path: &str) -> String {
    let reply = w.block_on(gdbus_call_as(
        account,
        &w.bus_address(),
        &[
            "--interactive",
            "--dest",
            "org.qubes.Storage",
            "--object-path",
            path,
            "--method",
            "org.qubes.Storage.Volume.Start",
            "@a{sv} {}",
        ],
    ));
    let error = reply.expect_err("the service refuses");
    // "GDBus.Error:<name>: <sentence>"
    let (_, named) = error.split_once("GDBus.Error:").expect("a D-Bus error");
    let (_, sentence) = named.split_once(": ").expect("an error with a message");
    sentence.trim().to_owned()
}

/// Waits for an error message on the page; its text.
fn error_message(w: &mut World) -> String {
    let shown = w.expect(
        "qs.$$('[data-message=danger]').map(m => m.textContent).join('\\n')",
        "an error message",
    );
    shown.as_str().expect("text").to_owned()
}

#[test]
fn a_refused_action_shows_the_service_message() {
    let visitors = Visitors::hold();
    let (mut w, _) = small_world("refused");
    let vid = "appvms/work/private";
    let sentence = refusal_of_start(
        &w,
        &visitors.viewer,
        "/org/qubes/Storage/pools/work/volumes/appvms_2fwork_2fprivate",
    );
    w.open_page(Session::User(visitors.viewer));
    w.expect("qs.click(qs.$('#try-anyway'))", "the offer to try anyway");
    w.expect(
        "qs.$('#trying')",
        "the notice that polkit decides each action",
    );
    w.click_row_button("work", vid, "Start");
    let shown = error_message(&mut w);
    assert!(
        shown.contains(&format!("Cannot start {vid}")) && shown.contains(&sentence),
        "the page shows {shown:?}, the service said {sentence:?}"
    );
    w.screenshot("refused");
    assert_eq!(w.cell("work", vid, "State"), "stopped");
    w.assert_no_page_errors();
}

#[test]
fn a_pool_rule_lets_a_user_act_where_it_allows_and_nowhere_else() {
    let visitors = Visitors::hold();
    let (mut w, _) = small_world("pool-rule");
    let template = "vm-templates/debian-12/root";
    let sentence = refusal_of_start(
        &w,
        &visitors.operator,
        "/org/qubes/Storage/pools/work/volumes/vm_2dtemplates_2fdebian_2d12_2froot",
    );
    w.open_page(Session::User(visitors.operator));
    // polkit does not tell an unprivileged caller about rules on pools in advance.
    w.expect("qs.click(qs.$('#try-anyway'))", "the offer to try anyway");
    w.click_row_button("work", "appvms/work/private", "Start");
    w.expect_state("work", "appvms/work/private", "running");
    w.click_row_button("work", template, "Start");
    let shown = error_message(&mut w);
    assert!(
        shown.contains(&sentence),
        "the page shows {shown:?}, the service said {sentence:?}"
    );
    assert_eq!(w.cell("work", template, "State"), "stopped");
    w.assert_no_page_errors();
}

// ---- one volume's page ----

#[test]
fn volume_page_shows_the_revision_timeline_and_reverts_to_a_chosen_revision() {
    let (mut w, _) = small_world("volume");
    let work = w.block_on(async { w.h().manager().await.get_pool("work", common::opts()).await });
    let config = common::opts_of([
        ("size", zbus::Variant::from(16 * MIB)),
        ("rw", zbus::Variant::from(true)),
        ("save_on_stop", zbus::Variant::from(true)),
        ("revisions_to_keep", zbus::Variant::from(3i32)),
    ]);
    let path = w.block_on(w.h().create_volume(
        &work.expect("GetPool"),
        "appvms/mail/private",
        config,
    ));
    let volume = w.volume(&path);
    for _ in 0..3 {
        w.block_on(volume.start(common::opts())).expect("Start");
        w.block_on(volume.stop(common::opts())).expect("Stop");
    }
    let ids: Vec<String> = w
        .block_on(volume.revisions())
        .expect("Revisions")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 3);
    // The oldest described and pinned.
    let details = common::opts_of([
        ("description", zbus::Variant::from("before the upgrade")),
        ("pinned", zbus::Variant::from(true)),
    ]);
    w.block_on(volume.set_revision_details(&ids[0], details, common::opts()))
        .expect("SetRevisionDetails");
    w.open_page(Session::Root);
    w.expect(
        "qs.click([...qs.$$('tr.qs-row[data-vid=\"appvms/mail/private\"] button')].find(b => b.textContent === 'appvms/mail/private'))",
        "the link to the volume's page",
    );
    w.expect(
        "qs.$('#volume-page[data-vid=\"appvms/mail/private\"]')",
        "the volume's page",
    );
    let shown = w.expect(
        "qs.$$('#revisions tr[data-revision]').length === 4 && qs.$$('#revisions tr[data-revision]').map(r => r.dataset.revision)",
        "the current state and three revisions",
    );
    let mut expected = vec!["current".to_owned()];
    expected.extend(ids.iter().rev().cloned());
    assert_eq!(shown, serde_json::json!(expected), "newest first");
    // Its description and pin, under a heading that says what the time is.
    let described = w.expect(
        &format!(
            "qs.$('#revisions tr[data-revision=\"{}\"] td[data-label=Description]')?.textContent.trim()",
            ids[0]
        ),
        "the oldest revision's description",
    );
    assert_eq!(described, serde_json::json!("pinned before the upgrade"));
    let heads = w.eval("qs.$$('#revisions th').map(t => t.textContent.trim())");
    assert_eq!(
        heads,
        serde_json::json!(["Revision", "Content from", "Description", "Actions"])
    );
    w.screenshot("volume");
    // The revert dialog names them too.
    w.expect(
        &format!(
            "qs.click(qs.button(qs.$('#revisions tr[data-revision=\"{}\"]'), 'Revert to this'))",
            ids[0]
        ),
        "the revert button of the described revision",
    );
    let label = w.expect(
        &format!("qs.$('label[for=\"revert-{}\"]')?.textContent", ids[0]),
        "the described revision in the revert dialog",
    );
    assert!(
        label.as_str().is_some_and(|t| t
            .starts_with(&format!("Revision {} — content from ", ids[0]))
            && t.ends_with("— “before the upgrade” (pinned)")),
        "the revert dialog says {label}"
    );
    w.expect(
        "!qs.$('#revert-dialog') || (qs.click(qs.button(qs.$('#revert-dialog'), 'Cancel')), false)",
        "the revert dialog closed",
    );
    // Revert to the middle one.
    let chosen = ids[1].clone();
    w.expect(
        &format!(
            "qs.click(qs.button(qs.$('#revisions tr[data-revision=\"{chosen}\"]'), 'Revert to this'))"
        ),
        "the revert button of the chosen revision",
    );
    w.expect(
        &format!("qs.$('#revert-{chosen}').checked"),
        "the dialog with the chosen revision selected",
    );
    w.expect(
        "qs.click(qs.button(qs.$('#revert-dialog'), 'Revert'))",
        "the Revert button",
    );
    w.expect(
        &format!(
            "qs.$$('#events li').some(e => e.textContent.includes('Reverted to revision {chosen}'))"
        ),
        "the timeline tells the revert",
    );
    let after: Vec<String> = w
        .block_on(volume.revisions())
        .expect("Revisions")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        !after.contains(&chosen),
        "the chosen revision was consumed: {after:?}"
    );
    w.assert_no_page_errors();
}

// ---- actions through dialogs ----

#[test]
fn pools_and_volumes_are_created_resized_and_removed_through_dialogs() {
    let mut w = World::start("dialogs");
    let fs_root = w.h_mut().mount(FsType::Btrfs, 256 * MIB);
    let dir = fs_root.join("fresh");
    w.open_page(Session::Root);
    // Create a pool.
    w.expect("qs.click(qs.$('#create-pool'))", "the Create pool button");
    // A bad name says why under its field (not only a grey Create button).
    w.expect(
        "qs.setValue(qs.$('#pool-name'), '1st pool')",
        "the name field",
    );
    let why = w.expect(
        "qs.text('#create-pool-dialog .qs-field-error')",
        "the sentence under the name field",
    );
    assert!(
        why.as_str()
            .is_some_and(|t| t.starts_with("The name starts with a letter")),
        "under the name: {why}"
    );
    assert_eq!(
        w.eval("qs.button(qs.$('#create-pool-dialog'), 'Create').disabled"),
        serde_json::json!(true)
    );
    w.expect("qs.setValue(qs.$('#pool-name'), 'fresh')", "the name field");
    w.expect(
        "!qs.$('#create-pool-dialog .qs-field-error')",
        "no sentence under a good name",
    );
    w.expect(
        &format!(
            "qs.setValue(qs.$('#pool-dir'), {})",
            js(dir.to_str().unwrap())
        ),
        "the directory field",
    );
    w.expect(
        "qs.click(qs.button(qs.$('#create-pool-dialog'), 'Create'))",
        "the Create button",
    );
    w.expect(
        "qs.$('tr.qs-pool-row[data-pool=fresh]') && !qs.$('#create-pool-dialog')",
        "the new pool's row",
    );
    let pool = w.block_on(async {
        w.h()
            .manager()
            .await
            .get_pool("fresh", common::opts())
            .await
    });
    let pool = pool.expect("the service has the pool");
    // Create a volume in it.
    w.expect(
        "qs.$('#create-volume-dialog') || (qs.menuItem(qs.$('tr.qs-pool-row[data-pool=fresh] button[aria-label=\"Actions of pool fresh\"]'), 'Create volume…'), false)",
        "the Create volume dialog from the pool's menu",
    );
    w.expect("qs.setValue(qs.$('#volume-vm'), 'web')", "the VM field");
    // 32 MiB and one sector: shown rounded as "32 MiB" in the list.
    w.expect(
        "qs.setValue(qs.$('#volume-size'), '33554944')",
        "the size field",
    );
    w.expect(
        "qs.click(qs.button(qs.$('#create-volume-dialog'), 'Create'))",
        "the Create button",
    );
    assert_eq!(w.cell("fresh", "appvms/web/private", "Size"), "32 MiB");
    let volume_path = w
        .block_on(
            w.pool_proxy(&pool)
                .get_volume("appvms/web/private", common::opts()),
        )
        .expect("the service has the volume");
    let volume = w.volume(&volume_path);
    assert_eq!(w.block_on(volume.size()).expect("Size"), 32 * MIB + 512);
    // Resize it: the dialog opens with the exact size (not the rounded "32MiB", which
    // would be a shrink), so it can be applied as it is.
    w.click_row_menu("fresh", "appvms/web/private", "Resize…");
    let opened = w.expect("qs.$('#resize-size')?.value", "the size field");
    assert_eq!(opened, serde_json::json!("33554944B"));
    assert_eq!(
        w.eval("[qs.button(qs.$('#resize-dialog'), 'Resize').getAttribute('aria-disabled'), !!qs.$('#resize-shrink'), !!qs.$('#resize-dialog .qs-field-error')]"),
        serde_json::json!(["false", false, false]),
        "the resize dialog as it opened"
    );
    w.expect("qs.setValue(qs.$('#resize-size'), '64M')", "the size field");
    w.expect(
        "qs.click(qs.button(qs.$('#resize-dialog'), 'Resize'))",
        "the Resize button",
    );
    w.expect(
        "qs.cell('fresh', 'appvms/web/private', 'Size') === '64 MiB'",
        "the row shows the new size",
    );
    assert_eq!(w.block_on(volume.size()).expect("Size"), 64 * MIB);
    // A pool with a volume cannot go: its menu item is disabled and says why.
    let why = w.expect(
        "(() => { \
            const item = qs.$$('.pf-v5-c-menu__item').find(i => i.querySelector('.pf-v5-c-menu__item-text')?.textContent.trim() === 'Remove pool…'); \
            if (!item) { qs.click(qs.$('tr.qs-pool-row[data-pool=fresh] button[aria-label=\"Actions of pool fresh\"]')); return false; } \
            if (item.getAttribute('aria-disabled') !== 'true') return 'enabled'; \
            return item.querySelector('.pf-v5-c-menu__item-description')?.textContent || false; \
        })()",
        "the Remove pool item, disabled, with its reason",
    );
    assert!(
        why.as_str()
            .is_some_and(|t| t.contains("Remove its 1 volume first")),
        "the Remove pool item says {why}"
    );
    w.expect(
        "!qs.$('.pf-v5-c-menu__item') || (qs.click(qs.$('tr.qs-pool-row[data-pool=fresh] button[aria-label=\"Actions of pool fresh\"]')), false)",
        "the pool's menu closed",
    );
    // A snapshot's source: the first shown stays chosen when a volume that sorts first
    // appears while the dialog is open, and that is the source it gets.
    w.expect(
        "qs.$('#create-volume-dialog') || (qs.menuItem(qs.$('tr.qs-pool-row[data-pool=fresh] button[aria-label=\"Actions of pool fresh\"]'), 'Create volume…'), false)",
        "the Create volume dialog again",
    );
    w.expect("qs.setValue(qs.$('#volume-vm'), 'disp')", "the VM field");
    w.expect(
        "qs.setValue(qs.$('#volume-name'), 'root')",
        "the name field",
    );
    w.expect("qs.setValue(qs.$('#volume-kind'), 'snapshot')", "the kind");
    w.expect(
        "qs.$('#volume-source')?.value === 'appvms/web/private'",
        "the one source offered, chosen",
    );
    let earlier = w.origin(&pool, "appvms/aaa/private", MIB);
    w.expect(
        "[...qs.$('#volume-source').options].some(o => o.value === 'appvms/aaa/private')",
        "the new volume offered",
    );
    assert_eq!(
        w.eval("qs.$('#volume-source').value"),
        serde_json::json!("appvms/web/private"),
        "the source changed unseen"
    );
    w.expect(
        "qs.click(qs.button(qs.$('#create-volume-dialog'), 'Create'))",
        "the Create button",
    );
    w.expect(
        "!!qs.row('fresh', 'appvms/disp/root')",
        "the snapshot's row",
    );
    let snapshot = w.block_on(
        w.pool_proxy(&pool)
            .get_volume("appvms/disp/root", common::opts()),
    );
    let snapshot = w.volume(&snapshot.expect("the service has the snapshot"));
    assert_eq!(w.block_on(snapshot.source()).expect("Source"), volume_path);
    for extra in [snapshot, w.volume(&earlier)] {
        w.block_on(extra.remove(common::opts())).expect("Remove");
    }
    // Remove the volume, then the pool.
    w.click_row_menu("fresh", "appvms/web/private", "Remove…");
    w.expect(
        "qs.click(qs.button(qs.$('#remove-volume-dialog'), 'Remove'))",
        "the Remove button",
    );
    w.expect(
        "!qs.row('fresh', 'appvms/web/private')",
        "the volume's row is gone",
    );
    w.expect(
        "qs.$('#remove-pool-dialog') || (qs.menuItem(qs.$('tr.qs-pool-row[data-pool=fresh] button[aria-label=\"Actions of pool fresh\"]'), 'Remove pool…'), false)",
        "the Remove pool dialog from the pool's menu",
    );
    w.expect(
        "qs.click(qs.button(qs.$('#remove-pool-dialog'), 'Remove'))",
        "the Remove button",
    );
    w.expect(
        "!qs.$('tr.qs-pool-row[data-pool=fresh]')",
        "the pool's row is gone",
    );
    let gone = w.block_on(async {
        w.h()
            .manager()
            .await
            .get_pool("fresh", common::opts())
            .await
    });
    common::assert_error(gone, "NotFound");
    w.assert_no_page_errors();
}

// ---- 10 000 volumes ----

const MANY: usize = 10_000;
#[test]
fn ten_thousand_volumes_are_listed_in_a_window_and_filtered() {
    let mut w = World::start("many");
    let restarted = std::time::Instant::now();
    w.seeded_pool("many", MANY);
    eprintln!(
        "seeded and restarted with {MANY} volumes in {:?}",
        restarted.elapsed()
    );
    let opened = std::time::Instant::now();
    w.open_page(Session::Root);
    w.expect(
        &format!("qs.text('#volume-count') === '{MANY} volumes'"),
        "the page counts every volume",
    );
    eprintln!(
        "the page listed {MANY} volumes {:?} after it was opened",
        opened.elapsed()
    );
    let rendered = w.eval("qs.$$('tr.qs-row').length");
    assert!(
        rendered.as_u64().is_some_and(|n| (1..100).contains(&n)),
        "the list renders a window, not {rendered} rows"
    );
    assert_eq!(w.cell("many", "appvms/vm0000/kernel", "State"), "running");
    assert_eq!(w.cell("many", "appvms/vm0000/private", "State"), "stopped");
    // The end of the list is a scroll away.
    w.eval("const s = qs.$('.qs-volumes-scroll'); s.scrollTop = s.scrollHeight; true");
    assert_eq!(w.cell("many", "appvms/vm2499/volatile", "Size"), "1 MiB");
    w.screenshot("many");
    // Filter by VM, then by state.
    w.expect("qs.setValue(qs.$('#filter-vm'), 'vm1234')", "the VM filter");
    w.expect(
        &format!("qs.text('#volume-count') === '4 of {MANY} volumes'"),
        "the VM's four volumes",
    );
    let vids = w.eval("qs.$$('tr.qs-row').map(r => r.dataset.vid)");
    let expected: Vec<String> = ["kernel", "private", "root", "volatile"]
        .iter()
        .map(|name| format!("appvms/vm1234/{name}"))
        .collect();
    assert_eq!(vids, serde_json::json!(expected));
    w.expect("qs.setValue(qs.$('#filter-vm'), '')", "the VM filter");
    w.expect(
        "qs.setValue(qs.$('#filter-state'), 'running')",
        "the state filter",
    );
    let running = MANY.div_ceil(STARTED_EVERY);
    w.expect(
        &format!("qs.text('#volume-count') === '{running} of {MANY} volumes'"),
        "the running volumes",
    );
    let states =
        w.eval("[...new Set(qs.$$('tr.qs-row td[data-label=State]').map(c => c.textContent))]");
    assert_eq!(states, serde_json::json!(["running"]));
    w.assert_no_page_errors();
}

// ---- more volumes than one listing can carry ----

/// The bus's largest message in the test below, and a pool whose listing of all objects
/// (GetManagedObjects) does not fit in it — as 100 000 volumes do not fit in the
/// system bus's 32 MiB.
const SMALL_MESSAGES: usize = 96 * 1024;
const TOO_MANY: usize = 600;

#[test]
fn volumes_too_many_for_one_listing_are_read_one_by_one_and_kept_current() {
    let mut w = World::start_with_message_limit("too-many", SMALL_MESSAGES);
    let pool = w.seeded_pool("big", TOO_MANY);
    let objects = w.block_on(async {
        zbus::fdo::ObjectManagerProxy::builder(&w.h().conn)
            .destination(common::SERVICE)
            .path("/org/qubes/Storage")
            .build()
            .await
            .expect("an ObjectManager proxy")
    });
    let refused = w.block_on(objects.get_managed_objects());
    assert!(
        matches!(refused, Err(zbus::fdo::Error::LimitsExceeded(_))),
        "the listing of {TOO_MANY} volumes fit in {SMALL_MESSAGES} bytes: the test would not test the page without it"
    );
    w.monitor_bus();
    w.open_page(Session::Root);
    w.expect(
        &format!("qs.text('#volume-count') === '{TOO_MANY} volumes'"),
        "the page counts every volume",
    );
    w.expect(
        "qs.$('#loading-volumes') === null",
        "the progress of the load gone",
    );
    // The page read the pool's volumes by their paths, one GetAll each — not the
    // bridge's own fallback, which introspects every node on the way (two calls more
    // per volume, one after another: at 100 000 volumes not even the pools showed
    // within 20 s).
    let bridge = w.bridge_pid();
    let calls = w.block_on(w.monitor().calls_to_service_from(bridge));
    let count =
        |iface: &str, member: &str| calls.iter().filter(|(_, c)| c.is(iface, member)).count();
    assert_eq!(
        count("org.freedesktop.DBus.ObjectManager", "GetManagedObjects"),
        1
    );
    assert_eq!(count("org.qubes.Storage.Pool", "ListVolumes"), 1);
    assert!(
        count("org.freedesktop.DBus.Introspectable", "Introspect") <= 1,
        "the page introspected its way to the volumes"
    );
    let volume_reads = calls
        .iter()
        .filter(|(_, c)| {
            c.is("org.freedesktop.DBus.Properties", "GetAll")
                && c.property
                    .as_ref()
                    .is_some_and(|(iface, _)| iface == "org.qubes.Storage.Volume")
        })
        .count();
    assert_eq!(volume_reads, TOO_MANY, "one GetAll of each volume");
    assert_eq!(w.cell("big", "appvms/vm0000/kernel", "State"), "running");
    assert_eq!(w.cell("big", "appvms/vm0000/private", "State"), "stopped");
    assert_eq!(w.cell("big", "appvms/vm0000/private", "Size"), "1 MiB");
    w.expect(
        "qs.$('tr.qs-pool-row[data-pool=\"big\"] .qs-usage')",
        "the pool's usage bar",
    );
    w.screenshot("too-many");
    // Signals keep it current as they do after the one listing: a start, a volume
    // created and removed.
    let private = w
        .block_on(
            w.pool_proxy(&pool)
                .get_volume("appvms/vm0001/private", common::opts()),
        )
        .expect("GetVolume");
    busctl_start(&w, private.as_str());
    w.expect_state("big", "appvms/vm0001/private", "running");
    let late = w.origin(&pool, "appvms/late/private", 2 * MIB);
    assert_eq!(w.cell("big", "appvms/late/private", "Size"), "2 MiB");
    w.expect(
        &format!("qs.text('#volume-count') === '{} volumes'", TOO_MANY + 1),
        "the count with the new volume",
    );
    w.block_on(w.volume(&late).remove(common::opts()))
        .expect("Remove");
    w.expect(
        "qs.row('big', 'appvms/late/private') === null",
        "the removed volume's row is gone",
    );
    w.expect(
        &format!("qs.text('#volume-count') === '{TOO_MANY} volumes'"),
        "the count without it",
    );
    w.assert_no_page_errors();
}

// ---- import and export through the browser ----

/// Waits (polling, with the deadline) until `path` exists with `size` bytes and the
/// browser's partial download beside it is gone.
fn wait_for_download(path: &std::path::Path, size: u64) {
    let deadline = std::time::Instant::now() + qubes_storaged_testkit::process::DEADLINE;
    loop {
        let done = std::fs::metadata(path).is_ok_and(|m| m.len() == size)
            && !path.with_extension("img.crdownload").exists();
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no complete download at {}",
            path.display()
        );
        std::thread::sleep(qubes_storaged_testkit::process::POLL);
    }
}

#[test]
fn an_image_is_imported_from_a_file_and_exported_to_a_download() {
    let (mut w, _) = small_world("transfer");
    let files = tempfile::tempdir().expect("temp dir");
    let image = files.path().join("mail.img");
    let data: Vec<u8> = (0..32 * MIB).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image, &data).expect("the image file");
    w.open_page(Session::Root);
    // Import.
    choose_import_file(&mut w, &image);
    w.expect("qs.$('#import-dialog input[value=\"mail.img\"]') || qs.text('#import-dialog').includes('mail.img')", "the chosen file");
    click_import_and_expect(&mut w, "mail.img", "32 MiB");
    let work = w.block_on(async { w.h().manager().await.get_pool("work", common::opts()).await });
    let path = w.block_on(
        w.pool_proxy(&work.expect("GetPool"))
            .get_volume("appvms/work/private", common::opts()),
    );
    let volume = w.volume(&path.expect("GetVolume"));
    let fd = w.block_on(volume.export(common::opts())).expect("Export");
    let mut committed = Vec::new();
    std::io::Read::read_to_end(
        &mut std::fs::File::from(std::os::fd::OwnedFd::from(fd)),
        &mut committed,
    )
    .expect("read the export");
    assert!(
        committed == data,
        "the volume holds other bytes than the file"
    );
    // Export.
    let downloads = files.path().join("downloads");
    std::fs::create_dir(&downloads).expect("the download directory");
    w.browser().allow_downloads(&downloads);
    w.click_row_menu("work", "appvms/work/private", "Export");
    let exported = downloads.join("work+appvms+work+private.img");
    wait_for_download(&exported, data.len() as u64);
    assert!(
        std::fs::read(&exported).expect("the download") == data,
        "the download differs from the volume"
    );
    let said = w.expect(
        "qs.$$('[data-message=info]').map(m => m.textContent)\
            .find(t => t.includes('Exported appvms/work/private')) || false",
        "the page saying the export finished",
    );
    assert!(
        said.as_str().is_some_and(
            |t| t.contains("work+appvms+work+private.img holds the volume's committed image")
        ),
        "the page says {said}"
    );
    assert_eq!(
        w.eval("qs.$$('[data-message=danger]').length"),
        serde_json::json!(0),
        "a finished export is said to have failed"
    );
    // A volume that does not save on stop has nothing committed to export (the service
    // refuses it, and the download would be an empty file saved as if it worked).
    w.expect(
        "(() => { \
            const items = qs.$$('.pf-v5-c-menu__item').map(i => i.textContent.trim()); \
            if (!items.includes('Remove…')) { \
                qs.click(qs.row('work', 'appvms/work/volatile')?.querySelector('button[aria-label=\"Actions of appvms/work/volatile\"]')); \
                return false; \
            } \
            return !items.includes('Export'); \
        })()",
        "the volatile volume's menu without Export",
    );
    w.assert_no_page_errors();
}

/// An export that fails still downloads a file (cockpit finishes the download whatever
/// the process's exit status): the page says that it failed, with the CLI's message,
/// and that the downloaded file is incomplete.
#[test]
fn a_refused_export_is_said_and_its_download_called_incomplete() {
    let visitors = Visitors::hold();
    let (mut w, _) = small_world("export-refused");
    let files = tempfile::tempdir().expect("temp dir");
    let downloads = files.path().join("downloads");
    std::fs::create_dir(&downloads).expect("the download directory");
    w.open_page(Session::User(visitors.viewer));
    w.expect("qs.click(qs.$('#try-anyway'))", "the offer to try anyway");
    w.expect(
        "qs.$('#trying')",
        "the notice that polkit decides each action",
    );
    w.browser().allow_downloads(&downloads);
    w.click_row_menu("work", "appvms/work/private", "Export");
    let shown = error_message(&mut w);
    assert!(
        shown.contains("Cannot export appvms/work/private")
            && shown.contains("work+appvms+work+private.img is incomplete"),
        "the page shows {shown:?}"
    );
    assert!(
        shown.contains(
            "Authentication is required to export volume data for volume appvms/work/private"
        ),
        "the page does not pass on the service's reason: {shown:?}"
    );
    assert!(
        !shown.contains("--no-interaction") && !shown.contains("qubes-storage:"),
        "the page shows advice for a terminal: {shown:?}"
    );
    w.screenshot("export-refused");
    w.assert_no_page_errors();
}

/// An image smaller than the volume is imported only once the user agrees to lose what
/// lies past its end (a checkbox, passed on as `--allow-shrink`): before, the import
/// always failed, asking for a command-line flag the page could not set.
#[test]
fn a_smaller_image_is_imported_once_the_shrink_is_confirmed() {
    let (mut w, _) = small_world("shrink-import");
    let files = tempfile::tempdir().expect("temp dir");
    let image = files.path().join("small.img");
    std::fs::write(&image, vec![7u8; 8 * MIB as usize]).expect("the image file");
    w.open_page(Session::Root);
    choose_import_file(&mut w, &image);
    w.expect("qs.$('#import-shrink')", "the shrink confirmation");
    w.expect(
        "qs.button(qs.$('#import-dialog'), 'Import')?.disabled",
        "Import disabled until the shrink is confirmed",
    );
    w.expect("qs.click(qs.$('#import-shrink'))", "the shrink checkbox");
    click_import_and_expect(&mut w, "small.img", "8 MiB");
    w.assert_no_page_errors();
}

/// Opens the Import dialog of appvms/work/private in pool work and chooses `image`.
fn choose_import_file(w: &mut World, image: &std::path::Path) {
    w.click_row_menu("work", "appvms/work/private", "Import…");
    w.expect("qs.$('#import-dialog input[type=file]')", "the file input");
    w.browser()
        .set_files("qs.$('#import-dialog input[type=file]')", &[image]);
}

/// Clicks Import; the page says `file` was imported and the row shows `size` (which
/// comes as a signal on the page's own channel, and may reach it after the CLI's exit
/// on the import's channel).
fn click_import_and_expect(w: &mut World, file: &str, size: &str) {
    w.expect(
        "qs.click(qs.button(qs.$('#import-dialog'), 'Import'))",
        "the Import button",
    );
    w.expect(
        &format!(
            "qs.$$('[data-message=info]').some(m => m.textContent.includes({}))",
            js(&format!("Imported {file}"))
        ),
        "the page says the image was imported",
    );
    w.expect(
        &format!(
            "qs.cell('work', 'appvms/work/private', 'Size') === {}",
            js(size)
        ),
        "the row shows the new size",
    );
}

/// A Remove dialog left open while its volume is removed and created again under the
/// same name (a VM re-created) acts on nothing: the page says the volume changed and the
/// new volume stays (before, the dialog's Remove deleted the new volume).
#[test]
fn a_dialog_never_acts_on_a_volume_created_again_under_its_name() {
    let (mut w, _) = small_world("re-created");
    w.open_page(Session::Root);
    w.click_row_menu("work", "appvms/personal/private", "Remove…");
    w.expect("qs.$('#remove-volume-dialog')", "the Remove dialog");
    let work = w.block_on(async { w.h().manager().await.get_pool("work", common::opts()).await });
    let work = work.expect("GetPool");
    let old = w.block_on(
        w.pool_proxy(&work)
            .get_volume("appvms/personal/private", common::opts()),
    );
    w.block_on(w.volume(&old.expect("GetVolume")).remove(common::opts()))
        .expect("Remove");
    w.expect(
        "!qs.row('work', 'appvms/personal/private')",
        "the page saw the volume go",
    );
    let new = w.origin(&work, "appvms/personal/private", 16 * MIB);
    w.expect(
        "qs.row('work', 'appvms/personal/private')",
        "the page saw the volume come again",
    );
    w.expect(
        "qs.click(qs.button(qs.$('#remove-volume-dialog'), 'Remove'))",
        "the Remove button",
    );
    w.expect(
        "qs.text('#remove-volume-dialog')?.includes('was removed and created again')",
        "the dialog says the volume changed",
    );
    w.block_on(w.volume(&new).verify(common::opts()))
        .expect("the volume created again is still there");
    w.assert_no_page_errors();
}

/// A Revert dialog reverts only the volume it listed the revisions of: a volume removed
/// and created again under its path has revisions of its own, and the one of the
/// chosen number is another image altogether.
#[test]
fn a_revert_dialog_never_reverts_a_volume_created_again_under_its_name() {
    let (mut w, _) = small_world("revert-re-created");
    let vid = "appvms/personal/private";
    let work = w.block_on(async { w.h().manager().await.get_pool("work", common::opts()).await });
    let work = work.expect("GetPool");
    let old = w.block_on(w.pool_proxy(&work).get_volume(vid, common::opts()));
    let old = w.volume(&old.expect("GetVolume"));
    w.block_on(old.start(common::opts())).expect("Start");
    w.block_on(old.stop(common::opts())).expect("Stop");
    let listed = w.block_on(old.revisions()).expect("Revisions");
    w.open_page(Session::Root);
    w.click_row_menu("work", vid, "Revert…");
    w.expect(
        "qs.$('#revert-dialog input[type=radio]')",
        "the Revert dialog's revision",
    );
    w.block_on(old.remove(common::opts())).expect("Remove");
    w.expect(
        &format!("!qs.row('work', '{vid}')"),
        "the page saw the volume go",
    );
    // Created again, with revisions of its own: one has the number listed.
    let new = w.origin(&work, vid, 16 * MIB);
    let new = w.volume(&new);
    w.block_on(new.start(common::opts())).expect("Start");
    w.block_on(new.stop(common::opts())).expect("Stop");
    let before = w.block_on(new.revisions()).expect("Revisions");
    assert!(
        before.iter().any(|(id, _)| *id == listed[0].0),
        "the test needs a revision of the listed number: {before:?} {listed:?}"
    );
    w.expect(
        &format!("qs.row('work', '{vid}')"),
        "the page saw the volume come again",
    );
    w.expect(
        "qs.click(qs.button(qs.$('#revert-dialog'), 'Revert'))",
        "the Revert button",
    );
    w.expect(
        "qs.text('#revert-dialog')?.includes('was removed and created again')",
        "the dialog saying the volume changed",
    );
    assert_eq!(
        w.block_on(new.revisions()).expect("Revisions"),
        before,
        "the volume created again was reverted"
    );
    w.assert_no_page_errors();
}

/// A service that is not on the bus when the page opens (stopped, or its start failed)
/// is said to be not running, and the page lists its pools as soon as it starts —
/// without a reload (the page stayed on "Cannot talk to the storage service").
#[test]
fn the_page_opened_while_the_service_is_stopped_lists_once_it_starts() {
    let (mut w, _) = small_world("absent-at-open");
    w.stop_daemon();
    w.open_page(Session::Root);
    says_not_running_then_lists_once_started(&mut w);
}

/// The page says the service is not running; once it runs again, the page lists its
/// volumes (started ones still started) without a reload.
fn says_not_running_then_lists_once_started(w: &mut World) {
    let absent = w.expect(
        "qs.text('#service-absent')",
        "the page says the service is not running",
    );
    assert!(
        absent.as_str().is_some_and(|t| t.contains("not running")),
        "{absent}"
    );
    w.start_daemon();
    // A restarted service keeps started volumes started.
    w.expect_state("vault", "appvms/vault/private", "running");
    assert_eq!(w.cell("work", "appvms/work/private", "State"), "stopped");
    w.assert_no_page_errors();
}

#[test]
fn the_page_says_when_the_service_is_gone_and_lists_again_when_it_returns() {
    let (mut w, _) = small_world("restart");
    w.open_page(Session::Root);
    w.expect_state("vault", "appvms/vault/private", "running");
    w.stop_daemon();
    says_not_running_then_lists_once_started(&mut w);
}
