//! Where the workspace's files and the test build's binaries are: this crate lives in
//! `testkit/` of the workspace, so the root is its manifest directory's parent.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `relative` below the workspace root.
pub fn path(relative: &str) -> PathBuf {
    root().join(relative)
}

/// The directory of the binaries this test run built, given the daemon's path
/// (`env!("CARGO_BIN_EXE_qubes-storaged")`); panics unless the CLI is built next to it.
pub fn bin_dir(daemon_binary: &Path) -> PathBuf {
    let dir = daemon_binary
        .parent()
        .expect("the daemon binary has a directory")
        .to_owned();
    assert!(
        dir.join("qubes-storage").exists(),
        "the CLI is not built next to the daemon in {}: run the tests with --workspace",
        dir.display()
    );
    dir
}
