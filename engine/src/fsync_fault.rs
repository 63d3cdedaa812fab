//! Deliberately skipped fsyncs, for the power-loss tests only (feature
//! `durability-faults`, never enabled in a release build, like `failpoints`). With the
//! feature and `QSD_SKIP_FSYNC=<site>` in the environment, every fsync at that site is
//! skipped (with a warning in the log), so the power-loss replay can show that it
//! catches a missing fsync. Without the feature [`skipped`] is a constant `false`.
//!
//! The sites are the fsyncs of [`crate::durable`] — of pool files and of the state
//! directory ([`crate::store`], [`crate::journal`]):
//!
//! | site               | the fsync of                                          |
//! |--------------------|-------------------------------------------------------|
//! | `replace-file`     | the filled temp file, before its rename               |
//! | `replace-dir`      | the directory, after the temp was renamed into place  |
//! | `rename-dir`       | the destination directory of a rename                 |
//! | `rename-source-dir`| the source directory of a rename across directories   |
//! | `remove-dir`       | the directory of an unlinked file                     |
//! | `mkdir-parent`     | the parent of a new directory                         |
//! | `rmdir-parent`     | the parent of a removed directory                     |
//! | `hardlink-dir`     | the directory of a new hard link                      |
//! | `truncate-file`    | a file truncated in place                             |
//! | `commit-file`      | the dirty image before it is committed                |
//! | `changes-dir`      | a VM directory after an operation's batch of renames, links and discards (`durable::DirChanges`) |
//! | `start-dir`        | a VM directory after a start renamed a precache that is not a marked reflink on btrfs or XFS (that start then waits for no barrier, as rule 8 allows only for a marked one) |
//! | `stop-dir`         | a VM directory after the stop of a snapshot's or volatile volume's running image without a boot mark (that stop then waits for no barrier, as rule 9 allows only for a marked one) |
//! | `journal-append`   | the fdatasync of a state change appended to a pool's journal |
//! | `journal-cut`      | the fdatasync of a journal cut back to its good records |
//! | `journal-empty-file` | a pool's new empty journal, before its rename       |
//! | `journal-empty-dir`  | the state directory, after that rename              |
//! | `snapshot-file`    | a pool's state snapshot, before its rename            |
//! | `snapshot-dir`     | the state directory, after the snapshot's rename      |
//! | `state-mkdir-parent` | the parent of a new state directory                 |

/// Every site, for tests that name one.
pub const SITES: [&str; 20] = [
    "replace-file",
    "replace-dir",
    "rename-dir",
    "rename-source-dir",
    "remove-dir",
    "mkdir-parent",
    "rmdir-parent",
    "hardlink-dir",
    "truncate-file",
    "commit-file",
    "changes-dir",
    "start-dir",
    "stop-dir",
    "journal-append",
    "journal-cut",
    "journal-empty-file",
    "journal-empty-dir",
    "snapshot-file",
    "snapshot-dir",
    "state-mkdir-parent",
];

#[cfg(feature = "durability-faults")]
mod imp {
    use std::path::Path;
    use std::sync::OnceLock;

    static SITE: OnceLock<Option<String>> = OnceLock::new();

    pub fn skipped(site: &str, path: &Path) -> bool {
        let chosen = SITE.get_or_init(|| std::env::var("QSD_SKIP_FSYNC").ok());
        let skip = chosen.as_deref() == Some(site);
        if skip {
            tracing::warn!(site, path = %path.display(), "durability fault: fsync skipped");
        }
        skip
    }
}

#[cfg(feature = "durability-faults")]
pub use imp::skipped;

/// Without the `durability-faults` feature no fsync is ever skipped.
#[cfg(not(feature = "durability-faults"))]
#[inline(always)]
pub fn skipped(_site: &str, _path: &std::path::Path) -> bool {
    false
}
