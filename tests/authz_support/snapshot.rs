//! "Nothing changed on disk", checkably: a snapshot of a directory tree records, for
//! every entry, its kind, size, inode number, mode, link count, mtime and ctime (to the
//! nanosecond) and a hash of a regular file's bytes. A refused call that had created,
//! removed, renamed, rewritten, truncated or chmod-ed anything differs in one of them
//! (a rename into place changes the inode, a write the mtime, a chmod the ctime).
//! Access times are left out: reading is allowed.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What is recorded of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub size: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub content: Option<u64>,
}

/// Every entry below a root (the root itself as `.`), by relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    root: PathBuf,
    entries: BTreeMap<PathBuf, Entry>,
}

impl Tree {
    pub fn of(root: &Path) -> Tree {
        let mut entries = BTreeMap::new();
        record(root, Path::new("."), &mut entries);
        Tree {
            root: root.to_owned(),
            entries,
        }
    }

    pub fn contains(&self, relative: &str) -> bool {
        self.entries
            .contains_key(Path::new(".").join(relative).as_path())
    }

    /// Panics with every difference between `self` (before) and `after`.
    #[track_caller]
    pub fn assert_same(&self, after: &Tree, context: &str) {
        let differences = self.differences(after);
        assert!(
            differences.is_empty(),
            "{context}: {} changed:\n{}",
            self.root.display(),
            differences.join("\n")
        );
    }

    fn differences(&self, after: &Tree) -> Vec<String> {
        let mut differences = Vec::new();
        for (path, entry) in &self.entries {
            match after.entries.get(path) {
                None => differences.push(format!("removed {}", path.display())),
                Some(now) if now != entry => {
                    differences.push(format!("changed {}: {entry:?} -> {now:?}", path.display()))
                }
                Some(_) => {}
            }
        }
        for path in after.entries.keys() {
            if !self.entries.contains_key(path) {
                differences.push(format!("added {}", path.display()));
            }
        }
        differences
    }
}

fn record(root: &Path, relative: &Path, entries: &mut BTreeMap<PathBuf, Entry>) {
    let path = root.join(relative);
    let meta =
        fs::symlink_metadata(&path).unwrap_or_else(|err| panic!("stat {}: {err}", path.display()));
    let kind = kind_of(&meta);
    let content = (kind == "file").then(|| content_hash(&path));
    entries.insert(
        relative.to_owned(),
        Entry {
            kind,
            size: meta.len(),
            ino: meta.ino(),
            mode: meta.mode(),
            nlink: meta.nlink(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            content,
        },
    );
    if kind == "dir" {
        for child in fs::read_dir(&path).expect("read_dir") {
            let name = child.expect("dir entry").file_name();
            record(root, &relative.join(name), entries);
        }
    }
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        "dir"
    } else if file_type.is_file() {
        "file"
    } else if file_type.is_symlink() {
        "symlink"
    } else {
        "other"
    }
}

fn content_hash(path: &Path) -> u64 {
    let mut file =
        fs::File::open(path).unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    let mut hasher = DefaultHasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).expect("read");
        if read == 0 {
            return hasher.finish();
        }
        hasher.write(&buffer[..read]);
    }
}
