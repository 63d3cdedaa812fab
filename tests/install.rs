//! `make install` / `make uninstall` into a staging DESTDIR: the exact installed tree
//! (binaries, manual pages, completion scripts, unit, activation file, policies),
//! modes, stripped binaries, substituted paths, manual pages that render without a
//! warning and refer only to installed pages, and nothing left behind. Also checks the
//! installed unit with `systemd-analyze verify`.
//!
//! The binaries are the debug builds of this test run (`NO_BUILD=1 RELEASE_DIR=…`; a
//! release build takes minutes), which the Makefile strips like release ones. Each
//! stage generates its pages and scripts into its own GEN_DIR. The Cockpit page is a
//! stand-in (`PAGE_DIR=<dir of four small files>`): it has its own browser tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qubes_storaged_testkit::workspace;

/// The directory of the binaries this test run built.
fn bin_dir() -> PathBuf {
    workspace::bin_dir(Path::new(env!("CARGO_BIN_EXE_qubes-storaged")))
}

/// The files of the Cockpit package.
const PAGE_FILES: [&str; 4] = ["index.css", "index.html", "index.js", "manifest.json"];

/// A staging area: `stage/` is the DESTDIR, `gen/` the GEN_DIR, `page/` the stand-in
/// Cockpit package.
struct Stage {
    dir: tempfile::TempDir,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::tempdir().expect("tempdir");
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

    fn run_make(&self, target: &str, extra: &[&str]) -> Output {
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .arg("NO_BUILD=1")
            .arg(format!("RELEASE_DIR={}", bin_dir().display()))
            .arg(format!("GEN_DIR={}", self.dir.path().join("gen").display()))
            .arg(format!(
                "PAGE_DIR={}",
                self.dir.path().join("page").display()
            ))
            .arg(format!("DESTDIR={}", self.destdir().display()))
            .args(extra)
            .env_remove("MAKEFLAGS")
            .output()
            .expect("run make")
    }

    #[track_caller]
    fn make(&self, target: &str, extra: &[&str]) -> Output {
        let output = self.run_make(target, extra);
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

/// The CLI's manual pages, as `qubes-storage man --out-dir` names them.
fn cli_pages() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(bin_dir().join("qubes-storage"))
        .arg("man")
        .arg("--out-dir")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut pages: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    pages
}

/// Everything `make install` must install under `prefix`, sorted.
fn expected_tree(prefix: &str) -> Vec<String> {
    let mut tree: Vec<String> = [
        "/bin/qubes-storage",
        "/lib/systemd/system/qubes-storaged.service",
        "/sbin/qubes-storaged",
        "/share/dbus-1/system-services/org.qubes.Storage.service",
        "/share/man/man8/qubes-storaged.8",
        "/share/bash-completion/completions/qubes-storage",
        "/share/zsh/site-functions/_qubes-storage",
        "/share/fish/vendor_completions.d/qubes-storage.fish",
    ]
    .iter()
    .map(|path| format!("{prefix}{path}"))
    .collect();
    for page in cli_pages() {
        tree.push(format!("{prefix}/share/man/man1/{page}"));
    }
    for file in PAGE_FILES {
        tree.push(format!("{prefix}/share/cockpit/qubes-storage/{file}"));
    }
    tree.push("/usr/share/dbus-1/system.d/org.qubes.Storage.conf".to_owned());
    tree.push("/usr/share/polkit-1/actions/org.qubes.storage.policy".to_owned());
    tree.sort();
    tree
}

fn man_pages(stage: &Stage) -> Vec<String> {
    stage
        .installed_files()
        .into_iter()
        .filter(|path| path.contains("/share/man/"))
        .collect()
}

/// Whether an ELF file still has its symbol table or debug information.
fn is_stripped(path: &Path) -> bool {
    let output = Command::new("readelf")
        .arg("-S")
        .arg("-W")
        .arg(path)
        .output();
    let sections = String::from_utf8(output.expect("readelf is installed").stdout).unwrap();
    assert!(
        sections.contains(".text"),
        "not an ELF file: {}",
        path.display()
    );
    ![" .symtab ", " .debug_info ", " .debug_line "]
        .iter()
        .any(|section| sections.contains(section))
}

#[test]
fn install_with_prefix_usr_puts_exactly_the_manifest_in_place() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    assert_eq!(stage.installed_files(), expected_tree("/usr"));
}

#[test]
fn install_with_default_prefix_keeps_policies_where_their_readers_look() {
    let stage = Stage::new();
    stage.make("install", &[]);
    assert_eq!(stage.installed_files(), expected_tree("/usr/local"));
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
    assert_eq!(listed, expected_tree("/usr"));
}

#[test]
fn installed_files_have_their_modes() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    for installed in stage.installed_files() {
        let expected = match installed.contains("bin/") {
            true => 0o755,
            false => 0o644,
        };
        assert_eq!(mode_of(&stage.file(&installed)), expected, "{installed}");
    }
    let page = fs::read_to_string(stage.file("/usr/share/cockpit/qubes-storage/index.js"));
    assert_eq!(page.unwrap(), "index.js\n");
    let policy = fs::read(stage.file("/usr/share/polkit-1/actions/org.qubes.storage.policy"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("polkit/org.qubes.storage.policy");
    assert_eq!(policy.unwrap(), fs::read(source).unwrap());
}

#[test]
fn installed_binaries_are_stripped_and_run() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    for binary in ["/usr/sbin/qubes-storaged", "/usr/bin/qubes-storage"] {
        let path = stage.file(binary);
        assert!(is_stripped(&path), "{binary} is not stripped");
        let version = Command::new(&path).arg("--version").output().unwrap();
        let name = binary.rsplit('/').next().unwrap();
        let expected = format!("{name} {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(String::from_utf8_lossy(&version.stdout), expected);
    }
}

#[test]
fn no_strip_installs_the_binaries_as_built() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr", "NO_STRIP=1"]);
    let installed = fs::read(stage.file("/usr/bin/qubes-storage")).unwrap();
    assert_eq!(
        installed,
        fs::read(bin_dir().join("qubes-storage")).unwrap()
    );
    stage.make("install-check", &["PREFIX=/usr", "NO_STRIP=1"]);
}

#[test]
fn every_installed_man_page_renders_without_a_warning() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    let pages = man_pages(&stage);
    assert_eq!(pages.len(), cli_pages().len() + 1);
    for page in pages {
        let output = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(stage.file(&page))
            .env("MANWIDTH", "80")
            .output()
            .expect("man is installed");
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}: {text}"
        );
    }
}

#[test]
fn every_page_a_man_page_refers_to_is_installed() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    let pages = man_pages(&stage);
    let installed: Vec<String> = pages
        .iter()
        .map(|page| {
            let name = page.rsplit('/').next().unwrap();
            let (stem, section) = name.rsplit_once('.').unwrap();
            format!("{stem}({section})")
        })
        .collect();
    for page in &pages {
        let roff = fs::read_to_string(stage.file(page))
            .unwrap()
            .replace("\\-", "-");
        for reference in our_references(&roff) {
            assert!(
                installed.contains(&reference),
                "{page} refers to {reference}"
            );
        }
    }
}

/// `qubes-storage…(N)` and `qubes-storaged(N)` in a page.
fn our_references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("qubes-storage") {
        let tail = &text[start..];
        let name_end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(tail.len());
        let rest = &tail[name_end..];
        if rest.len() >= 3 && rest.starts_with('(') && &rest[2..3] == ")" {
            found.push(format!("{}{}", &tail[..name_end], &rest[..3]));
        }
    }
    found
}

#[test]
fn installed_completions_are_what_the_cli_prints() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    for (shell, installed) in [
        (
            "bash",
            "/usr/share/bash-completion/completions/qubes-storage",
        ),
        ("zsh", "/usr/share/zsh/site-functions/_qubes-storage"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/qubes-storage.fish",
        ),
    ] {
        let printed = Command::new(bin_dir().join("qubes-storage"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(
            fs::read(stage.file(installed)).unwrap(),
            printed.stdout,
            "{shell}"
        );
    }
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
    let output = stage.run_make("install-check", &["PREFIX=/usr"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("stray.policy"));
}

#[test]
fn install_check_rejects_an_unstripped_binary() {
    let stage = Stage::new();
    stage.make("install", &["PREFIX=/usr"]);
    fs::copy(
        bin_dir().join("qubes-storage"),
        stage.file("/usr/bin/qubes-storage"),
    )
    .unwrap();
    let output = stage.run_make("install-check", &["PREFIX=/usr"]);
    assert!(!output.status.success());
    let complaint = String::from_utf8_lossy(&output.stderr);
    assert!(
        complaint.contains("/usr/bin/qubes-storage is not stripped"),
        "{complaint}"
    );
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
