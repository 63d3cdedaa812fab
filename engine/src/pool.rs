//! Pool-level file work (R§3.1, §3.22, §3.23): where a pool directory may be and who
//! must own it, setup with the reflink probe (and its undo), opening the class and VM
//! directories beneath the pool directory's fd, usage from statvfs, and which other
//! pool's directory contains this one. Pools never delete files: removing a pool only
//! forgets its configuration.
//!
//! A pool directory is refused (`InvalidArgument`, before anything is created) when it
//! resolves to `/`, `/var` or a path in one of the system's own trees ([`system_tree`]),
//! or when it, or `appvms/` or `vm-templates/` in it, is not private to the service
//! (owned by its euid, writable by neither group nor others, [`crate::dir::is_private`]):
//! whoever may write those directories could swap the VM directories under the service.
//! Every volume operation checks the same again on the directories it uses
//! ([`check_private`]).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use tracing::info;

use crate::copy;
use crate::dir::Dir;
use crate::durable;
use crate::error::{EngineError, ErrorKind, IoContext, Result};
use crate::layout::VolumePaths;
use crate::model::PoolConfig;
use crate::model::PoolSpec;
use crate::names::{PoolName, VmClass};
use crate::sys;

/// Top-level directories that belong to the system: a pool may be neither one of them
/// nor inside one (`/lib*` is every top-level name starting with `lib`).
const SYSTEM_TREES: [&str; 10] = [
    "bin", "boot", "dev", "etc", "proc", "run", "sbin", "sys", "usr", "lib",
];

/// The system tree an absolute, resolved path is or lies in (`"/"`, `"/var"`,
/// `"/etc"`, `"/lib64"`, …), or `None` when a pool may live there.
pub fn system_tree(path: &Path) -> Option<String> {
    let mut names = path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name),
        _ => None,
    });
    let Some(first) = names.next() else {
        return Some("/".to_owned());
    };
    let first = first.to_str()?;
    let nested = names.next().is_some();
    let system = SYSTEM_TREES.contains(&first) || first.starts_with("lib");
    (system || (first == "var" && !nested)).then(|| format!("/{first}"))
}

/// The path `dir` names once symlinks and `..` are resolved: its realpath, or for a
/// directory that does not exist yet (setup makes it with a single mkdir) its parent's
/// realpath and its name. (What polkit rules are shown for CreatePool's `dir_path`.)
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    match std::fs::canonicalize(dir) {
        Ok(path) => return Ok(path),
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(EngineError::io(
                format!("cannot resolve {}", dir.display()),
                err,
            ))
        }
        Err(_) => {}
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(EngineError::invalid(format!(
            "{} is not a directory name",
            dir.display()
        )));
    };
    let parent = std::fs::canonicalize(parent).io_ctx(|| {
        format!(
            "the parent directory of {} cannot be used (a pool directory is made with a single mkdir)",
            dir.display()
        )
    })?;
    Ok(parent.join(name))
}

/// The longest directory path a pool can have (PATH_MAX, terminating NUL included).
pub const DIR_PATH_MAX: usize = 4095;

/// What a pool directory's path must be as written, without looking at the filesystem
/// (CreatePool and the state loader share it): absolute, a path the kernel can take,
/// and neither `/`, `/var` nor in a system tree ([`system_tree`]) as spelled.
/// CreatePool also checks where the path resolves to ([`setup`]).
pub fn check_dir_path(dir: &Path) -> Result<()> {
    let bytes = dir.as_os_str().as_encoded_bytes();
    if bytes.len() > DIR_PATH_MAX || bytes.contains(&0) {
        return Err(EngineError::invalid(format!(
            "dir_path ({} bytes) is longer than {DIR_PATH_MAX} bytes or holds a NUL byte",
            bytes.len()
        )));
    }
    if !dir.is_absolute() {
        return Err(EngineError::invalid(format!(
            "dir_path {} is not absolute",
            dir.display()
        )));
    }
    match system_tree(dir) {
        None => Ok(()),
        Some(tree) => Err(EngineError::invalid(format!(
            "{} cannot be a pool directory: it is {tree} or inside it, a directory of the system",
            dir.display()
        ))),
    }
}

/// Refuse a pool directory that [`check_dir_path`] refuses, that resolves into a
/// system tree, or that lies below a directory another user may change
/// ([`check_ancestors`]); else the path it resolves to, which the pool then keeps.
fn check_location(dir: &Path) -> Result<PathBuf> {
    check_dir_path(dir)?;
    let resolved = resolve(dir)?;
    if let Some(tree) = system_tree(&resolved) {
        return Err(EngineError::invalid(format!(
            "{} cannot be a pool directory: it resolves to {}, which is {} or inside it, a directory of the system",
            dir.display(),
            resolved.display(),
            tree
        )));
    }
    check_ancestors(dir, &resolved)?;
    Ok(resolved)
}

/// Every directory above the resolved pool directory must belong to the service (or
/// root) and be closed to writes by group and others — or be sticky (`/tmp`), where
/// nobody else may rename what the service owns. Otherwise the user who may write there could
/// later move the pool directory away and put a symlink to another pool's directory
/// (or anywhere) in its place: every operation opens the configured path, and the
/// pool's volumes would be files of another pool. (As sshd's StrictModes judges a
/// user's keys.)
fn check_ancestors(dir: &Path, resolved: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let euid = sys::effective_uid();
    for ancestor in resolved.ancestors().skip(1) {
        let meta = std::fs::symlink_metadata(ancestor)
            .io_ctx(|| format!("cannot stat {}", ancestor.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        let trusted = meta.uid() == euid || meta.uid() == 0;
        if trusted && (meta.mode() & 0o022 == 0 || sticky) {
            continue;
        }
        return Err(EngineError::invalid(format!(
            "{} cannot be a pool directory: {} above it is owned by uid {} with mode {:o}, so another user could replace the pool directory; use a directory whose parents belong to root or uid {euid} and are not writable by group or others",
            dir.display(),
            ancestor.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// What [`setup`] made, so that a pool that is not registered in the end leaves
/// nothing behind ([`Setup::undo`]).
#[derive(Debug)]
pub struct Setup {
    /// The pool directory's path as it resolved (no symlink, no `..`): what the pool
    /// keeps and every operation opens, so that a symlink on the path as written —
    /// in a directory someone else may change — can never redirect it later.
    pub dir: PathBuf,
    root: Dir,
    /// The parent and name of the pool directory, when setup created it.
    created_root: Option<(Dir, String)>,
    created_classes: Vec<&'static str>,
}

impl Setup {
    /// Remove what setup created (class directories, then the pool directory), if
    /// still empty; best effort, each step logged.
    pub fn undo(self) {
        for class in &self.created_classes {
            let _ = durable::remove_dir_at(&self.root, class);
        }
        if let Some((parent, name)) = &self.created_root {
            let _ = durable::remove_dir_at(parent, name);
        }
    }
}

/// R§3.1, with the checks above first: refuse the location and an existing directory
/// (or its class directories) that is not private, before anything is created; create
/// the directory (single mkdir), probe reflinks when asked, then `appvms/` and
/// `vm-templates/`. On failure everything created is removed again.
pub fn setup(spec: &PoolSpec) -> Result<Setup> {
    let dir = check_location(&spec.dir_path)?;
    let mut setup = open_or_create(&dir)?;
    if let Err(err) = finish_setup(&mut setup, spec) {
        setup.undo();
        return Err(err);
    }
    Ok(setup)
}

/// The pool directory: an existing one after its checks, or a new one (single mkdir).
fn open_or_create(dir: &Path) -> Result<Setup> {
    match open_root(dir) {
        Ok(root) => {
            check_existing(&root)?;
            Ok(Setup {
                dir: dir.to_owned(),
                root,
                created_root: None,
                created_classes: Vec::new(),
            })
        }
        Err(err) if err.kind() == ErrorKind::NotFound => create_root(dir),
        Err(err) => Err(err),
    }
}

fn check_existing(root: &Dir) -> Result<()> {
    root.check_private()?;
    for class in VmClass::ALL {
        if let Some(class_dir) = root.open_subdir(class.dir_name())? {
            class_dir.check_private()?;
        }
    }
    Ok(())
}

fn create_root(dir: &Path) -> Result<Setup> {
    let (parent, name) = Dir::open_parent_of(dir)?;
    let (root, created) = durable::ensure_dir_at(&parent, &name)?;
    let setup = Setup {
        dir: dir.to_owned(),
        root,
        created_root: created.then_some((parent, name)),
        created_classes: Vec::new(),
    };
    // Made by someone else between our lookup and our mkdir: check it like any other.
    if let Err(err) = check_existing(&setup.root) {
        setup.undo();
        return Err(err);
    }
    Ok(setup)
}

fn finish_setup(setup: &mut Setup, spec: &PoolSpec) -> Result<()> {
    if spec.setup_check && !copy::probe_reflink_in(&setup.root)? {
        return Err(EngineError::not_supported(format!(
            "the filesystem at {} cannot reflink; if you accept slow VM start/stop and wasted space, pass setup_check=false",
            spec.dir_path.display()
        )));
    }
    for class in VmClass::ALL {
        let (class_dir, created) = durable::ensure_dir_at(&setup.root, class.dir_name())?;
        if created {
            setup.created_classes.push(class.dir_name());
        }
        class_dir.check_private()?;
    }
    info!(op = "setup", dir = %spec.dir_path.display(), "pool directory set up");
    Ok(())
}

/// Open the pool directory named by the configuration; everything below goes through
/// the returned fd. The path is walked one component at a time from `/`, through
/// descriptors (no component can be swapped between its check and its use), and every
/// directory a name is looked up in must belong to root or the service and be closed
/// to writes by group and others — or be sticky (`/tmp`) with the entry found there
/// belonging to root or the service. Otherwise the pool is refused: whoever may change
/// such a directory could put another pool's directory (or a symlink to it) where this
/// pool's is, by renaming within it, and this pool's operations would work on the
/// other pool's files. CreatePool checks the same before it creates a pool (and keeps
/// the path as it resolved); here it holds for every operation, also after a directory
/// above changed owner, and for a pool of an earlier release that kept a path through
/// a symlink: a symlink is followed only where nobody else can have made or changed
/// it.
pub fn open_root(dir_path: &Path) -> Result<Dir> {
    let fd = walk_trusted(dir_path)?;
    let dir = sys::open_dir_fd(fd.as_fd()).map_err(|err| Dir::open_error(dir_path, err))?;
    Ok(Dir::from_fd(dir, dir_path))
}

/// The `O_PATH` descriptor of the directory the absolute path `dir` leads to, walked
/// as [`open_root`] says; an error names the first place another user controls.
fn walk_trusted(dir: &Path) -> Result<OwnedFd> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    /// Symlinks followed before giving up, as the kernel's limit (ELOOP).
    const MAX_LINKS: usize = 40;
    let euid = sys::effective_uid();
    let trusted_owner = |uid: u32| uid == 0 || uid == euid;
    let untrusted = |place: &Path, stat: &rustix::fs::Stat| {
        EngineError::new(
            ErrorKind::Failed,
            format!(
                "the pool directory {} cannot be opened safely: its path goes through {}, owned by uid {} with mode {:o}, which another user may change (and so put other files where the pool is); make every directory on the path belong to root or uid {euid} and be closed to group and others",
                dir.display(),
                place.display(),
                stat.st_uid,
                stat.st_mode & 0o7777
            ),
        )
    };
    let looked_up = |place: &Path, err: io::Error| {
        EngineError::io(
            format!(
                "cannot open the directory {}: {} cannot be looked up",
                dir.display(),
                place.display()
            ),
            err,
        )
    };
    let push_front = |pending: &mut VecDeque<OsString>, path: &Path| {
        for part in path.components().rev() {
            match part {
                Component::Normal(name) => pending.push_front(name.to_owned()),
                Component::ParentDir => pending.push_front("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    let root = || sys::open_path_root().map_err(|e| looked_up(Path::new("/"), e));
    let mut pending = VecDeque::new();
    push_front(&mut pending, dir);
    let (mut current, mut current_path) = (root()?, PathBuf::from("/"));
    // The status of `current` when the step that made it current read it already.
    let mut known: Option<rustix::fs::Stat> = None;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        let here = match known.take() {
            Some(stat) => stat,
            None => sys::stat_fd(&current).map_err(|e| looked_up(&current_path, e))?,
        };
        let sticky = here.st_mode & 0o1000 != 0;
        if !trusted_owner(here.st_uid) || (here.st_mode & 0o022 != 0 && !sticky) {
            return Err(untrusted(&current_path, &here));
        }
        let next_path = if name == ".." {
            current_path.parent().unwrap_or(Path::new("/")).to_owned()
        } else {
            current_path.join(&name)
        };
        let next =
            sys::open_path_at(current.as_fd(), &name).map_err(|e| looked_up(&next_path, e))?;
        let stat = sys::stat_fd(&next).map_err(|e| looked_up(&next_path, e))?;
        if sticky && name != ".." && !trusted_owner(stat.st_uid) {
            return Err(untrusted(&next_path, &stat));
        }
        match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
            rustix::fs::FileType::Directory => {
                (current, current_path) = (next, next_path);
                known = Some(stat);
            }
            rustix::fs::FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(EngineError::invalid(format!(
                        "the pool directory {} cannot be opened: its path follows more than {MAX_LINKS} symlinks",
                        dir.display()
                    )));
                }
                let target =
                    sys::read_link_fd(next.as_fd()).map_err(|e| looked_up(&next_path, e))?;
                if target.is_absolute() {
                    (current, current_path) = (root()?, PathBuf::from("/"));
                } else {
                    known = Some(here);
                }
                push_front(&mut pending, &target);
            }
            _ => {
                return Err(EngineError::invalid(format!(
                    "{} is not a directory ({} is not one)",
                    dir.display(),
                    next_path.display()
                )))
            }
        }
    }
    Ok(current)
}

/// The pool directory and the volume's class directory (when it exists) must be
/// private to the service: checked before every volume operation.
pub fn check_private(root: &Dir, paths: &VolumePaths) -> Result<()> {
    root.check_private()?;
    match open_class_dir(root, paths)? {
        Some(class) => class.check_private(),
        None => Ok(()),
    }
}

/// `appvms/` or `vm-templates/` of the volume, beneath the pool directory's fd.
pub fn open_class_dir(root: &Dir, paths: &VolumePaths) -> Result<Option<Dir>> {
    root.open_subdir(paths.class_dir_name())
}

/// The volume's VM directory beneath the pool directory's fd (no symlink anywhere);
/// `None` when it does not exist.
pub fn open_vm_dir(root: &Dir, paths: &VolumePaths) -> Result<Option<Dir>> {
    root.open_subdir(paths.vm_dir_rel())
}

/// The volume's VM directory, made (single mkdir) if missing. The class directory must
/// exist (pool setup makes it).
pub fn ensure_vm_dir(root: &Dir, paths: &VolumePaths) -> Result<Dir> {
    let class = open_class_dir(root, paths)?.ok_or_else(|| {
        EngineError::not_found(format!(
            "{} does not exist (pool setup makes it)",
            root.join(paths.class_dir_name()).display()
        ))
    })?;
    durable::ensure_dir_at(&class, paths.vm_name()).map(|(dir, _)| dir)
}

/// `(data_size, data_usage)` of the filesystem holding the pool, or `None` when the
/// directory is missing (R§3.22).
pub fn usage(dir: &Path) -> Option<(u64, u64)> {
    if !dir.is_dir() {
        return None;
    }
    sys::statvfs_usage(dir).ok()
}

/// The class directory (`appvms`, `vm-templates`) of the pool at `outer` that `inner`
/// is in or is: one of `inner`'s directories (resolved; one not made yet resolves by
/// its parent, as a pool directory is made with a single mkdir) is that class
/// directory's inode — which also sees through bind mounts. `None` when it is in
/// neither, or when `outer` has no class directory now (its filesystem not mounted).
pub fn inside_vm_dirs(inner: &Path, outer: &Path) -> Option<&'static str> {
    let classes: Vec<(&'static str, std::fs::Metadata)> = [VmClass::AppVm, VmClass::Template]
        .into_iter()
        .map(VmClass::dir_name)
        .filter_map(|class| Some((class, std::fs::metadata(outer.join(class)).ok()?)))
        .collect();
    let inner = std::fs::canonicalize(inner).ok().or_else(|| {
        let parent = std::fs::canonicalize(inner.parent()?).ok()?;
        Some(parent.join(inner.file_name()?))
    })?;
    inner.ancestors().find_map(|dir| {
        let meta = std::fs::metadata(dir).ok()?;
        classes
            .iter()
            .find(|(_, class)| sys::same_inode(&meta, class))
            .map(|(name, _)| *name)
    })
}

/// R§3.23 (directory search): the other pool whose directory's realpath is a path
/// prefix of this one's — the innermost of several (the reference takes the first in
/// its own order, which made the answer depend on the order pools were defined in);
/// between pools of one directory, the first by name.
pub fn included_in<'a>(
    this: &PoolConfig,
    others: impl Iterator<Item = &'a PoolConfig>,
) -> Option<PoolName> {
    let mine: PathBuf = std::fs::canonicalize(&this.dir_path).ok()?;
    let mut containing: Vec<(usize, &PoolName)> = others
        .filter(|p| p.name != this.name)
        .filter_map(|p| {
            let theirs = std::fs::canonicalize(&p.dir_path).ok()?;
            mine.starts_with(&theirs)
                .then(|| (theirs.components().count(), &p.name))
        })
        .collect();
    containing.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    containing.first().map(|(_, name)| (*name).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_var_and_the_system_trees_are_refused() {
        for (path, tree) in [
            ("/", "/"),
            ("/var", "/var"),
            ("/etc", "/etc"),
            ("/etc/qubes", "/etc"),
            ("/usr/lib/qubes", "/usr"),
            ("/lib", "/lib"),
            ("/lib64/x", "/lib64"),
            ("/libx32", "/libx32"),
            ("/bin", "/bin"),
            ("/boot/efi", "/boot"),
            ("/dev/shm/p", "/dev"),
            ("/proc/1", "/proc"),
            ("/run/qubes", "/run"),
            ("/sbin", "/sbin"),
            ("/sys/fs", "/sys"),
        ] {
            assert_eq!(
                system_tree(Path::new(path)).as_deref(),
                Some(tree),
                "{path}"
            );
        }
    }

    #[test]
    fn ordinary_places_for_pools_are_allowed() {
        for path in [
            "/var/lib/qubes",
            "/var/lib/qubes/pool2",
            "/srv/pools/a",
            "/mnt/data",
            "/home/user/pool",
            "/data",
            "/variety",
        ] {
            assert_eq!(system_tree(Path::new(path)), None, "{path}");
        }
    }

    #[test]
    fn a_pool_directory_path_is_refused_as_spelled_without_resolving_it() {
        for bad in [
            "relative/pool",
            "/",
            "/var",
            "/etc/qubes",
            "/nonexistent\0/x",
        ] {
            let err = check_dir_path(Path::new(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        let huge = format!("/{}", "a".repeat(DIR_PATH_MAX));
        let err = check_dir_path(Path::new(&huge)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        check_dir_path(Path::new("/nonexistent/var/lib/qubes")).unwrap();
    }

    #[test]
    fn a_relative_pool_directory_is_refused() {
        let err = check_location(Path::new("var/lib/qubes")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn a_path_through_dotdot_is_judged_by_where_it_resolves() {
        let d = tempfile::tempdir().unwrap();
        let sneaky = d.path().join("../../../../../../../../etc");
        let err = check_location(&sneaky).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("/etc"), "{err}");
        check_location(&d.path().join("new-pool")).unwrap();
    }
}
