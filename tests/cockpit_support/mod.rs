//! The world of a browser test of the Cockpit page: the bus harness (`common`: private
//! dbus-daemon, polkitd, the daemon, pools on loop-mounted filesystems), the page as
//! `make install` installs it (into a staged DESTDIR, with this build's binaries —
//! the page spawns the CLI for import and export), Cockpit's web server with a session
//! on the test bus ([`testkit::cockpit`](qubes_storaged_testkit::cockpit)) as root or
//! as a test user, and headless Chromium showing Cockpit's shell at `/qubes-storage`
//! ([`testkit::browser`](qubes_storaged_testkit::browser)).
//!
//! The tests are synchronous; the harness's async parts run on a runtime the world
//! owns ([`World::block_on`]). Everything stops in reverse order when the world drops —
//! browser, Cockpit, then the daemon, polkitd, the bus and the filesystems — also when
//! the test fails (each piece is a guard of its own).
//!
//! The page runs in the shell's iframe; [`PRELUDE`] gives the top window a few helpers
//! (`qs.*`) that reach into it, and [`js`] quotes Rust strings for JS.
//!
//! The page must have been built (`make page`, which `scripts/test` runs first).

#![allow(dead_code)]

pub mod monitor;

use std::path::{Path, PathBuf};
use std::process::Command;

use qubes_storaged_testkit::browser::Browser;
use qubes_storaged_testkit::cockpit::{Cockpit, SessionSpec};
use qubes_storaged_testkit::users::Account;
use qubes_storaged_testkit::workspace;
use tempfile::TempDir;
use zbus::{OwnedObjectPath, Variant};

use crate::common::{opts_of, FsType, Harness, PoolProxy, VolumeProxy, MIB};
use monitor::BusMonitor;

/// The page's package directory below a prefix, as the Makefile installs it.
const PACKAGE: &str = "share/cockpit/qubes-storage";
const PREFIX: &str = "/usr/local";

/// Helpers in the shell's window for reaching into the page's frame.
pub const PRELUDE: &str = r#"
window.qs = {
    doc() {
        const frame = document.querySelector('iframe[name="cockpit1:localhost/qubes-storage"]');
        const doc = frame && frame.contentDocument;
        return doc && doc.getElementById("qubes-storage") ? doc : null;
    },
    $(selector) { const d = this.doc(); return d ? d.querySelector(selector) : null; },
    $$(selector) { const d = this.doc(); return d ? [...d.querySelectorAll(selector)] : []; },
    row(pool, vid) {
        return this.$(`tr.qs-row[data-pool="${CSS.escape(pool)}"][data-vid="${CSS.escape(vid)}"]`);
    },
    cell(pool, vid, label) {
        const row = this.row(pool, vid);
        const cell = row && row.querySelector(`td[data-label="${label}"]`);
        return cell ? cell.textContent.trim() : null;
    },
    button(root, text) {
        return root ? [...root.querySelectorAll("button")].find(b => b.textContent.trim() === text) : null;
    },
    click(element) { if (!element) return false; element.click(); return true; },
    // Clicks the open menu's item `text`; when no such item shows (the menu is closed,
    // or a re-render closed it), opens the menu with `toggle` and reports false, so a
    // polling caller tries again.
    menuItem(toggle, text) {
        const item = this.$$(".pf-v5-c-menu__item").find(i => i.textContent.trim() === text);
        if (item) return this.click(item);
        this.click(toggle);
        return false;
    },
    setValue(element, value) {
        if (!element) return false;
        const view = element.ownerDocument.defaultView;
        const proto = Object.getPrototypeOf(element);
        Object.getOwnPropertyDescriptor(proto, "value").set.call(element, value);
        const type = element.tagName === "SELECT" ? "change" : "input";
        element.dispatchEvent(new view.Event(type, { bubbles: true }));
        return true;
    },
    text(selector) { const e = this.$(selector); return e ? e.textContent.trim() : null; },
};
true
"#;

/// A Rust string as a JS string literal.
pub fn js(text: &str) -> String {
    serde_json::to_string(text).expect("a JS string")
}

/// Who the Cockpit session belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Session {
    /// root: administrative access.
    Root,
    /// A test user, without administrative access.
    User(Account),
}

pub struct World {
    browser: Option<Browser>,
    cockpit: Option<Cockpit>,
    monitor: Option<BusMonitor>,
    harness: Option<Harness>,
    stage: TempDir,
    rt: tokio::runtime::Runtime,
    test: &'static str,
}

impl World {
    /// Bus, polkitd, the daemon and the staged installation; no pool yet.
    pub fn start(test: &'static str) -> World {
        World::start_on(test, None)
    }

    /// [`World::start`] on a bus whose largest message is `bytes` (dbus-daemon's
    /// `max_message_size`), the service told so.
    pub fn start_with_message_limit(test: &'static str, bytes: usize) -> World {
        World::start_on(test, Some(bytes))
    }

    fn start_on(test: &'static str, message_limit: Option<usize>) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let harness = match message_limit {
            None => rt.block_on(Harness::with_polkit()),
            Some(bytes) => rt.block_on(Harness::with_polkit_and_message_limit(bytes)),
        };
        World {
            browser: None,
            cockpit: None,
            monitor: None,
            harness: Some(harness),
            stage: install_stage(),
            rt,
            test,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    pub fn h(&self) -> &Harness {
        self.harness.as_ref().expect("the harness runs")
    }

    pub fn h_mut(&mut self) -> &mut Harness {
        self.harness.as_mut().expect("the harness runs")
    }

    /// A pool on a fresh filesystem of `fs_type` (setup_check off on ext4).
    pub fn pool(&mut self, name: &str, fs_type: FsType, size: u64) -> OwnedObjectPath {
        let rt = &self.rt;
        let harness = self.harness.as_mut().expect("the harness runs");
        rt.block_on(harness.pool_on(name, fs_type, size))
    }

    /// Stops the daemon (SIGTERM; asserts a clean exit).
    pub fn stop_daemon(&mut self) {
        self.h_mut().stop_daemon();
    }

    /// Starts the daemon again on the same state; returns when it owns its name.
    pub fn start_daemon(&mut self) {
        let rt = &self.rt;
        let harness = self.harness.as_mut().expect("the harness runs");
        rt.block_on(harness.start_daemon());
    }

    /// A pool `name` on btrfs holding `count` volumes made by [`seed_volumes`] while the
    /// daemon was stopped; returns once the daemon serves them.
    pub fn seeded_pool(&mut self, name: &str, count: usize) -> OwnedObjectPath {
        let pool = self.pool(name, FsType::Btrfs, 512 * MIB);
        let pool_dir = self.pool_dir(&pool);
        let state_dir = self.h().state_dir();
        self.stop_daemon();
        seed_volumes(&state_dir, name, &pool_dir, count);
        self.start_daemon();
        pool
    }

    /// A save_on_stop, rw volume ("origin") of `size` bytes.
    pub fn origin(&self, pool: &OwnedObjectPath, vid: &str, size: u64) -> OwnedObjectPath {
        self.block_on(self.h().origin_volume(pool, vid, size))
    }

    /// A volatile rw volume of `size` bytes.
    pub fn volatile(&self, pool: &OwnedObjectPath, vid: &str, size: u64) -> OwnedObjectPath {
        let config = opts_of([("size", Variant::from(size)), ("rw", Variant::from(true))]);
        self.block_on(self.h().create_volume(pool, vid, config))
    }

    pub fn volume(&self, path: &OwnedObjectPath) -> VolumeProxy<'static> {
        self.block_on(self.h().volume(path))
    }

    pub fn pool_proxy(&self, path: &OwnedObjectPath) -> PoolProxy<'static> {
        self.block_on(self.h().pool(path))
    }

    pub fn bus_address(&self) -> String {
        self.h().bus.address().to_owned()
    }

    /// Starts recording every method call on the bus (before the page loads).
    pub fn monitor_bus(&mut self) {
        let monitor = self.block_on(BusMonitor::start(&self.h().bus));
        self.monitor = Some(monitor);
    }

    pub fn monitor(&self) -> &BusMonitor {
        self.monitor.as_ref().expect("monitor_bus() first")
    }

    /// Cockpit for `session` and the browser on the page; returns when the page shows
    /// its pools (or, for a session without pools, its content).
    pub fn open_page(&mut self, session: Session) {
        let user = match session {
            Session::Root => None,
            Session::User(account) => Some(account),
        };
        let prefix = self.stage.path().join(PREFIX.trim_start_matches('/'));
        let spec = SessionSpec {
            bus_address: self.bus_address(),
            data_dirs: vec![prefix.join("share")],
            bin_dirs: vec![prefix.join("bin")],
            user,
        };
        let cockpit = Cockpit::start(&spec);
        let url = cockpit.url("/qubes-storage");
        // Kept before anything is expected of them, so that a failure to open the page
        // reports Cockpit's log and a screenshot like any later failure.
        self.cockpit = Some(cockpit);
        self.browser = Some(Browser::start());
        let browser = self.browser();
        browser.navigate(&url);
        browser.expect(
            "document.readyState === 'complete' && document.querySelector('iframe[name=\"cockpit1:localhost/qubes-storage\"]')",
            "the shell shows the page's frame",
        );
        browser.eval(PRELUDE);
        browser.expect(
            "qs.$('#pools') || qs.$('#service-absent')",
            "the page shows its pools",
        );
    }

    /// The pid of the session's bridge: the process that makes the page's calls.
    pub fn bridge_pid(&self) -> u32 {
        self.cockpit
            .as_ref()
            .expect("open_page() first")
            .bridge_pid()
    }

    pub fn browser(&mut self) -> &mut Browser {
        self.browser.as_mut().expect("open_page() first")
    }

    /// Waits (up to the deadline) for the JS `predicate`; its value.
    #[track_caller]
    pub fn expect(&mut self, predicate: &str, what: &str) -> serde_json::Value {
        self.browser().expect(predicate, what)
    }

    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.browser().eval(expression)
    }

    /// The text of a volume row's cell (`label`: "State", "Size", …), once the row is
    /// shown.
    #[track_caller]
    pub fn cell(&mut self, pool: &str, vid: &str, label: &str) -> String {
        let expression = format!("qs.cell({}, {}, {})", js(pool), js(vid), js(label));
        let value = self.expect(&expression, &format!("the row of {vid} shows its {label}"));
        value.as_str().expect("cell text").to_owned()
    }

    /// Waits until the row of `vid` says `state` ("running" / "stopped").
    #[track_caller]
    pub fn expect_state(&mut self, pool: &str, vid: &str, state: &str) {
        let expression = format!(
            "qs.cell({}, {}, 'State') === {}",
            js(pool),
            js(vid),
            js(state)
        );
        self.expect(&expression, &format!("the row of {vid} says {state}"));
    }

    /// Clicks the row button `text` ("Start", "Stop") of `vid`.
    #[track_caller]
    pub fn click_row_button(&mut self, pool: &str, vid: &str, text: &str) {
        let expression = format!(
            "qs.click(qs.button(qs.row({}, {}), {}))",
            js(pool),
            js(vid),
            js(text)
        );
        self.expect(&expression, &format!("a {text} button in the row of {vid}"));
    }

    /// Opens the row's kebab menu (its toggle is named "Actions of <vid>") and clicks
    /// its item `text` ("Clone…", …), opening the menu again should a re-render of the
    /// row close it first.
    #[track_caller]
    pub fn click_row_menu(&mut self, pool: &str, vid: &str, text: &str) {
        let item = format!(
            "qs.menuItem(qs.row({}, {})?.querySelector({}), {})",
            js(pool),
            js(vid),
            js(&format!(
                "button[aria-label={}]",
                js(&format!("Actions of {vid}"))
            )),
            js(text)
        );
        self.expect(&item, &format!("the menu item {text} of {vid}"));
    }

    /// Saves a screenshot as `<CARGO_TARGET_TMPDIR>/cockpit-screenshots/<test>-<name>.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let path = screenshot_dir().join(format!("{}-{name}.png", self.test));
        self.browser().screenshot(&path);
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The page's reported errors; the test fails on any at its end ([`World::finish`]).
    pub fn page_errors(&mut self) -> Vec<String> {
        self.browser().page_errors()
    }

    /// Asserts that the page reported no error and threw nothing.
    #[track_caller]
    pub fn assert_no_page_errors(&mut self) {
        let errors = self.page_errors();
        assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    }

    /// A pool's directory.
    pub fn pool_dir(&self, pool: &OwnedObjectPath) -> PathBuf {
        PathBuf::from(
            self.block_on(self.pool_proxy(pool).dir_path())
                .expect("DirPath"),
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(cockpit) = self.cockpit.as_ref() {
                eprintln!("---- cockpit log ----\n{}", cockpit.log());
            }
            if let Some(browser) = self.browser.as_mut() {
                let path = screenshot_dir().join(format!("{}-failure.png", self.test));
                browser.screenshot(&path);
                eprintln!("failure screenshot: {}", path.display());
            }
        }
        drop(self.browser.take());
        drop(self.cockpit.take());
        let _runtime = self.rt.enter();
        drop(self.monitor.take());
        drop(self.harness.take());
    }
}

/// Every so many volumes is started (its `-dirty.img` exists).
pub const STARTED_EVERY: usize = 8;

/// Registers `count` origin volumes of `count / 4` VMs in the pool's state and makes their
/// images, as the daemon would have left them (it is stopped meanwhile): the volumes
/// are applied to the loaded pool in memory and written as one snapshot through the
/// engine's own store — far faster than ten thousand CreateVolume calls (or journal
/// appends), each of which waits for an fdatasync.
pub fn seed_volumes(
    state_dir: &std::path::Path,
    pool: &str,
    pool_dir: &std::path::Path,
    count: usize,
) {
    use qubes_storage_engine::layout::VolumePaths;
    use qubes_storage_engine::store::{Change, Store};
    use qubes_storage_engine::{RevisionsToKeep, Vid, VolumeConfig};
    let store = Store::open(state_dir).expect("the state directory");
    let mut pools = store.load().expect("the state");
    let (state, files) = pools
        .iter_mut()
        .find(|(state, _)| state.config().name.as_str() == pool)
        .expect("the pool's state");
    let image = |path: std::path::PathBuf| {
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(MIB))
            .unwrap_or_else(|err| panic!("cannot make {}: {err}", path.display()));
    };
    for n in 0..count {
        let name = ["kernel", "private", "root", "volatile"][n % 4];
        let vid = Vid::parse(&format!("appvms/vm{:04}/{name}", n / 4)).expect("a vid");
        let paths = VolumePaths::new(pool_dir, &vid);
        std::fs::create_dir_all(paths.dir()).expect("the VM directory");
        image(paths.clean());
        if n % STARTED_EVERY == 0 {
            image(paths.dirty());
        }
        let config = VolumeConfig {
            vid: vid.clone(),
            size: MIB,
            rw: true,
            snap_on_start: false,
            save_on_stop: true,
            source: None,
            revisions_to_keep: RevisionsToKeep::new(1).expect("1"),
            ephemeral: None,
            committed_image_shared: false,
            revision_notes: Default::default(),
        };
        state.apply(Change::Put(config));
    }
    files.compact(state).expect("write the pool's snapshot");
}

/// Where the screenshots go: `target/tmp/cockpit-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cockpit-screenshots")
}

/// `make install` of this build (binaries next to the test's daemon, the page from
/// cockpit/dist) into a fresh DESTDIR that every user may read.
fn install_stage() -> TempDir {
    let page = workspace::path("cockpit/dist/index.js");
    assert!(
        page.exists(),
        "the Cockpit page is not built ({} is missing): run `make page` (scripts/test does)",
        page.display()
    );
    let stage = tempfile::Builder::new()
        .prefix("qsd-stage-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(
        stage.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod the stage");
    let bin_dir = workspace::bin_dir(Path::new(env!("CARGO_BIN_EXE_qubes-storaged")));
    // Its own GEN_DIR: tests that stage at the same time must not regenerate one
    // shared directory under each other.
    let generated = tempfile::Builder::new()
        .prefix("qsd-gen-")
        .tempdir()
        .expect("temp dir");
    let output = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(workspace::root())
        .arg("install")
        .arg("NO_BUILD=1")
        .arg(format!("RELEASE_DIR={}", bin_dir.display()))
        .arg(format!("PREFIX={PREFIX}"))
        .arg(format!("DESTDIR={}", stage.path().display()))
        .arg(format!("GEN_DIR={}", generated.path().display()))
        .env_remove("MAKEFLAGS")
        .output()
        .expect("run make install");
    assert!(
        output.status.success(),
        "make install failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = stage
        .path()
        .join(PREFIX.trim_start_matches('/'))
        .join(PACKAGE)
        .join("manifest.json");
    assert!(
        manifest.exists(),
        "make install put no {}",
        manifest.display()
    );
    stage
}
