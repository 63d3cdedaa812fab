//! `make install` / `make uninstall` into a staging DESTDIR: the exact installed tree,
//! modes, substituted paths, and nothing left behind. Also checks the installed unit
//! with `systemd-analyze verify`.
//!
//! The binaries and the Cockpit page are stand-ins (`NO_BUILD=1 RELEASE_DIR=<dir of
//! two scripts> PAGE_DIR=<dir of four small files>`): the Makefile's job is where files
//! go, and a release build takes minutes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The files of the Cockpit package.
const PAGE_FILES: [&str; 4] = ["index.css", "index.html", "index.js", "manifest.json"];

/// A staging area: `release/` holds the stand-in binaries, `page/` the stand-in
/// Cockpit package, `stage/` is the DESTDIR.
struct Stage {
    dir: tempfile::TempDir,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::tempdir().expect("tempdir");
        let release = dir.path().join("release");
        fs::create_dir(&release).unwrap();
        for name in ["qubes-storaged", "qubes-storage"] {
            let binary = release.join(name);
            fs::write(&binary, format!("#!/bin/sh\necho {name}\n")).unwrap();
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let page = dir.path().join("page");
        fs::create_dir(&page).unwrap();
        for name in PAGE_FILES {
            fs::write(page.join(name), format!("{name}\n")).unwrap();
        }
        Stage { dir }
    }

    fn destdir(&self) -> PathBuf {
        self.dir.path().join("stage")
    }

    fn make(&self, target: &str, extra: &[&str]) -> Output {
        let output = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .arg("NO_BUILD=1")
            .arg(format!(
                "RELEASE_DIR={}",
                self.dir.path().join("release").display()
            ))
            .arg(format!(
                "PAGE_DIR={}",
                self.dir.path().join("page").display()
            ))
            .arg(format!("DESTDIR={}", self.destdir().display()))
            .args(extra)
            .output()
            .expect("run make");
        assert!(
            output.status.success(),
            "make {target} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Every non-directory below DESTDIR, as the absolute path it would have installed.
    fn installed_files(&self) -> Vec<String> {
        let mut files = Vec::new();
        collect_files(&self.destdir(), &self.destdir(), &mut files);
        files.sort();
        files
    }

    fn file(&self, installed: &str) -> PathBuf {
        self.destdir().join(installed.trim_start_matches('/'))
    }
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).unwrap();
            files.push(format!("/{}", relative.display()));
        }
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

const USR_TREE: [&str; 10] = [
    "/usr/bin/qubes-storage",
    "/usr/lib/systemd/system/qubes-storaged.service",
    "/usr/sbin/qubes-storaged",
    "/usr/share/cockpit/qubes-storage/index.css",
    "/usr/share/cockpit/qubes-storage/index.html",
    "/usr/share/cockpit/qubes-storage/index.js",
    "/usr/share/cockpit/qubes-storage/manifest.json",
    "/usr/share/dbus-1/system-services/org.qubes.Storage.service",
    "/usr/share/dbus-1/system.d/org.qubes.Storage.conf",
    "/usr/share/polkit-1/actions/org.qubes.storage.policy",
];

#[test]
fn install_with_prefix_usr_puts_exactly_ten_files_in_place() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    assert_eq!(stage.installed_files(), USR_TREE);
}

#[test]
fn install_with_default_prefix_keeps_policies_where_their_readers_look() {
    let stage = Stage::new();
    stage.make("install", &[]);
    let expected = [
        "/usr/local/bin/qubes-storage",
        "/usr/local/lib/systemd/system/qubes-storaged.service",
        "/usr/local/sbin/qubes-storaged",
        "/usr/local/share/cockpit/qubes-storage/index.css",
        "/usr/local/share/cockpit/qubes-storage/index.html",
        "/usr/local/share/cockpit/qubes-storage/index.js",
        "/usr/local/share/cockpit/qubes-storage/manifest.json",
        "/usr/local/share/dbus-1/system-services/org.qubes.Storage.service",
        "/usr/share/dbus-1/system.d/org.qubes.Storage.conf",
        "/usr/share/polkit-1/actions/org.qubes.storage.policy",
    ];
    assert_eq!(stage.installed_files(), expected);
}

#[test]
fn manifest_lists_what_install_installs() {
    let stage = Stage::new();
    let manifest = stage.make("install-manifest", &["PREFIX=/usr"]);
    let mut listed: Vec<String> = String::from_utf8(manifest.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, USR_TREE);
}

#[test]
fn installed_files_have_their_modes_and_content() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    for installed in USR_TREE {
        let expected = if installed.contains("bin/") {
            0o755
        } else {
            0o644
        };
        assert_eq!(mode_of(&stage.file(installed)), expected, "{installed}");
    }
    let daemon = fs::read_to_string(stage.file("/usr/sbin/qubes-storaged")).unwrap();
    assert_eq!(daemon, "#!/bin/sh\necho qubes-storaged\n");
    let page = fs::read_to_string(stage.file("/usr/share/cockpit/qubes-storage/index.js"));
    assert_eq!(page.unwrap(), "index.js\n");
    let policy = fs::read(stage.file("/usr/share/polkit-1/actions/org.qubes.storage.policy"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("polkit/org.qubes.storage.policy");
    assert_eq!(policy.unwrap(), fs::read(source).unwrap());
}

#[test]
fn unit_and_activation_file_name_the_installed_daemon() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/opt/qs"]);
    let unit = fs::read_to_string(stage.file("/opt/qs/lib/systemd/system/qubes-storaged.service"));
    assert!(unit
        .unwrap()
        .contains("\nExecStart=/opt/qs/sbin/qubes-storaged\n"));
    let activation = stage.file("/opt/qs/share/dbus-1/system-services/org.qubes.Storage.service");
    let activation = fs::read_to_string(activation).unwrap();
    assert!(activation.contains("\nExec=/opt/qs/sbin/qubes-storaged\n"));
    assert!(activation.contains("\nSystemdService=qubes-storaged.service\n"));
}

#[test]
fn install_check_accepts_a_fresh_install() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    stage.make("install-check", &["PREFIX=/usr"]);
}

#[test]
fn install_check_rejects_a_stray_file() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    fs::write(stage.file("/usr/share/polkit-1/actions/stray.policy"), "x").unwrap();
    let output = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("install-check")
        .arg("PREFIX=/usr")
        .arg(format!("DESTDIR={}", stage.destdir().display()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("stray.policy"));
}

#[test]
fn uninstall_leaves_the_stage_empty() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    stage.make("uninstall", &["PREFIX=/usr"]);
    let left: Vec<_> = fs::read_dir(stage.destdir()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn uninstall_keeps_files_it_did_not_install() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    let foreign = stage.file("/usr/share/polkit-1/actions/org.example.policy");
    fs::write(&foreign, "not ours").unwrap();
    stage.make("uninstall", &["PREFIX=/usr"]);
    assert_eq!(
        stage.installed_files(),
        ["/usr/share/polkit-1/actions/org.example.policy"]
    );
}

#[test]
fn installed_unit_passes_systemd_analyze_verify() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    // verify insists that ExecStart exists: point it at the staged daemon.
    let unit = fs::read_to_string(stage.file("/usr/lib/systemd/system/qubes-storaged.service"));
    let staged_daemon = stage.file("/usr/sbin/qubes-storaged");
    let unit = unit.unwrap().replace(
        "ExecStart=/usr/sbin/qubes-storaged",
        &format!("ExecStart={}", staged_daemon.display()),
    );
    let checked = stage.dir.path().join("qubes-storaged.service");
    fs::write(&checked, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .expect("systemd-analyze is installed");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{complaints}");
    // Unknown or misspelt keys are only warnings: any output is a failure here.
    assert!(complaints.trim().is_empty(), "{complaints}");
}
