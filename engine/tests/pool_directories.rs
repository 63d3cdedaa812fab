//! Where a pool may live and who must own it (issue 9 item 4, contract rev 2): CreatePool
//! refuses `/`, `/var` and the system's trees (however the path is spelled), a
//! directory — or `appvms/`, `vm-templates/` in it — that the service does not own or
//! that group or others may write, and all of it before anything is created; two
//! CreatePools on one directory never both succeed; and a pool that cannot be
//! registered leaves nothing behind. On a real loop-mounted btrfs (reflinks do not
//! matter here: the pools use setup_check=false where the probe is not the point).

mod common_fs;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use common_fs::{names_in, FsType, LoopFs, MIB};
use qubes_storage_engine::{Engine, ErrorKind, PoolName, PoolSpec, RevisionsToKeep};

/// The uid of `nobody`: a user other than the service.
const OTHER_UID: u32 = 65534;

/// An engine with its own state directory, and a filesystem for pool directories.
struct World {
    engine: Engine,
    state: tempfile::TempDir,
    fs: LoopFs,
}

impl World {
    fn new() -> World {
        let fs = LoopFs::new(FsType::Btrfs, 256 * MIB);
        let state = tempfile::tempdir().unwrap();
        World {
            engine: Engine::open(state.path()).unwrap(),
            state,
            fs,
        }
    }

    /// A fresh directory on the filesystem, owned by root, mode 0755.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.fs.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn create_pool(&self, name: &str, dir: &Path) -> qubes_storage_engine::Result<()> {
        self.engine.create_pool(spec(name, dir)).map(|_| ())
    }

    /// Pool `name` at `dir` with one origin volume of 1 MiB, [`WORK_PRIVATE`].
    fn pool_with_a_volume(&self, name: &str, dir: &Path) -> qubes_storage_engine::VolumeRef {
        self.create_pool(name, dir).unwrap();
        self.volume_in(name)
    }

    /// [`WORK_PRIVATE`], an origin volume of 1 MiB, created in pool `name`.
    fn volume_in(&self, name: &str) -> qubes_storage_engine::VolumeRef {
        let vol = work_private(name);
        let spec = qubes_storage_engine::VolumeSpec {
            size: MIB,
            rw: true,
            save_on_stop: true,
            ..Default::default()
        };
        let ctx = qubes_storage_engine::OpCtx::quiet("CreateVolume");
        self.engine.create_volume(&vol, spec, &ctx).unwrap();
        vol
    }
}

const WORK_PRIVATE: &str = "appvms/work/private";

/// Remove of [`WORK_PRIVATE`] of `pool` is refused (`Failed`), naming `dir`, the
/// directory another user may change.
#[track_caller]
fn assert_remove_refused_naming(w: &World, pool: &str, dir: &Path) {
    let ctx = qubes_storage_engine::OpCtx::quiet("Remove");
    let err = w
        .engine
        .remove_volume(&work_private(pool), &ctx)
        .expect_err("removed through a directory another user may change");
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    let named = dir.display().to_string();
    assert!(
        err.to_string().contains(&named),
        "{err} does not name {named}"
    );
}

/// [`WORK_PRIVATE`] of pool `pool`.
fn work_private(pool: &str) -> qubes_storage_engine::VolumeRef {
    qubes_storage_engine::VolumeRef {
        pool: PoolName::parse(pool).unwrap(),
        vid: qubes_storage_engine::Vid::parse(WORK_PRIVATE).unwrap(),
    }
}

fn spec(name: &str, dir: &Path) -> PoolSpec {
    PoolSpec {
        name: PoolName::parse(name).unwrap(),
        dir_path: dir.to_owned(),
        setup_check: false,
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).unwrap();
}

#[track_caller]
fn assert_refused(result: qubes_storage_engine::Result<()>, naming: &Path) {
    let err = result.expect_err("the pool was created");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let named = naming.display().to_string();
    let said = err.to_string();
    assert!(said.contains(&named), "{err} does not name {named}");
    let (object, reason) = said.split_once(": ").expect("an object and a reason");
    assert!(
        object.starts_with("pool ") && !reason.starts_with("pool "),
        "the pool is not named once, first: {said}"
    );
}

/// A directory of the test's own in /run (a system tree), also reached through a
/// symlink from the test filesystem: refused either way, and nothing is made in it.
#[test]
fn a_pool_in_a_system_tree_is_refused_and_nothing_is_created_there() {
    let w = World::new();
    let in_run = tempfile::Builder::new()
        .prefix("qsd-pool-test-")
        .tempdir_in("/run")
        .unwrap();
    assert_refused(w.create_pool("direct", in_run.path()), in_run.path());
    let link = w.fs.path().join("to-run");
    std::os::unix::fs::symlink(in_run.path(), &link).unwrap();
    assert_refused(w.create_pool("linked", &link), &link);
    assert!(
        names_in(in_run.path()).is_empty(),
        "{:?}",
        names_in(in_run.path())
    );
    assert!(w.engine.pool_names().is_empty());
}

#[test]
fn a_pool_directory_owned_by_another_user_is_refused_before_anything_is_created() {
    let w = World::new();
    let dir = w.dir("theirs");
    chown(&dir, OTHER_UID);
    assert_refused(w.create_pool("p", &dir), &dir);
    assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
}

#[test]
fn a_pool_directory_that_group_or_others_may_write_is_refused() {
    let w = World::new();
    for (name, mode) in [("world", 0o777), ("group", 0o775), ("sticky", 0o1777)] {
        let dir = w.dir(name);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_refused(w.create_pool(name, &dir), &dir);
        assert!(names_in(&dir).is_empty(), "{name}: {:?}", names_in(&dir));
    }
}

#[test]
fn a_class_directory_not_private_to_the_service_is_refused() {
    let w = World::new();
    let dir = w.dir("user-appvms");
    std::fs::create_dir(dir.join("appvms")).unwrap();
    chown(&dir.join("appvms"), OTHER_UID);
    assert_refused(w.create_pool("a", &dir), &dir.join("appvms"));
    assert_eq!(names_in(&dir), ["appvms"], "vm-templates/ was not created");

    let dir = w.dir("open-templates");
    std::fs::create_dir(dir.join("vm-templates")).unwrap();
    let templates = dir.join("vm-templates");
    std::fs::set_permissions(&templates, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_refused(w.create_pool("t", &dir), &templates);
    assert_eq!(names_in(&dir), ["vm-templates"], "appvms/ was not created");
    assert!(w.engine.pool_names().is_empty());
}

/// Released together, again and again (the old race showed within 20 to 50 rounds):
/// exactly one of the two pools is created.
#[test]
fn two_parallel_create_pools_on_one_directory_never_both_succeed() {
    let w = World::new();
    for round in 0..150 {
        let dir = w.fs.path().join(format!("round{round}"));
        let start = Barrier::new(2);
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let racers: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|side| {
                    let (w, dir, start) = (&w, &dir, &start);
                    s.spawn(move || {
                        start.wait();
                        w.engine.create_pool(spec(&format!("{side}{round}"), dir))
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let created = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(created, 1, "round {round}: {outcomes:?}");
        let refused = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
        assert_eq!(refused.kind(), ErrorKind::AlreadyExists, "{refused}");
    }
}

/// The state file cannot be written (a directory stands where it would go): the
/// CreatePool fails and the directory it made is gone again.
#[test]
fn a_pool_whose_configuration_cannot_be_saved_leaves_no_directory_behind() {
    let w = World::new();
    let blocker = w.state.path().join("pools/q.json");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let dir = w.fs.path().join("new-pool");
    let err = w.create_pool("q", &dir).unwrap_err();
    assert!(err.to_string().contains("pool q"), "{err}");
    assert!(!dir.exists(), "left behind: {:?}", names_in(&dir));
    assert!(w.engine.pool_names().is_empty());
}

/// The same in an existing directory: the class directories setup made are removed,
/// the directory itself (not setup's) stays.
#[test]
fn a_pool_in_an_existing_directory_that_cannot_be_saved_removes_what_setup_made() {
    let w = World::new();
    std::fs::create_dir_all(w.state.path().join("pools/q.json/in-the-way")).unwrap();
    let dir = w.dir("existing");
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();
    w.create_pool("q", &dir).unwrap_err();
    assert_eq!(names_in(&dir), ["keep.txt"]);
}

/// A pool directory below one that another user owns, or that group or others may
/// write: that user could move the pool directory away and put a symlink to another
/// pool's directory in its place, and the pool's operations would work on that pool's
/// files. Refused, naming the directory above, before anything is created; a sticky
/// directory of the service's (`/tmp`) is fine, since nobody else may rename in it
/// what the service owns.
#[test]
fn a_pool_below_a_directory_another_user_may_change_is_refused() {
    let w = World::new();
    let theirs = w.dir("theirs");
    chown(&theirs, OTHER_UID);
    assert_refused(w.create_pool("p", &theirs.join("pool")), &theirs);
    assert!(names_in(&theirs).is_empty(), "{:?}", names_in(&theirs));
    let shared = w.dir("shared");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
    let below = shared.join("a").join("pool");
    std::fs::create_dir(below.parent().unwrap()).unwrap();
    assert_refused(w.create_pool("q", &below), &shared);
    let sticky = w.dir("sticky");
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    w.create_pool("r", &sticky.join("pool"))
        .expect("a pool in a sticky directory of the service's");
}

/// A pool created through a symlink that sits in a directory another user may change
/// keeps the path as it resolved: when that user points the symlink at another pool's
/// directory afterwards, the pool's operations still work in its own directory (before,
/// every operation opened the path as written, and the pool's volumes became the other
/// pool's files).
#[test]
fn a_pool_keeps_its_directory_however_the_symlink_it_was_named_through_changes() {
    let w = World::new();
    let (real, victim, theirs) = (w.dir("real"), w.dir("victim"), w.dir("theirs"));
    chown(&theirs, OTHER_UID);
    let link = theirs.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    w.create_pool("mine", &link)
        .expect("a pool through a symlink");
    w.create_pool("other", &victim).unwrap();
    let name = PoolName::parse("mine").unwrap();
    assert_eq!(w.engine.pool_config(&name).unwrap().dir_path, real);
    // The symlink is pointed at the other pool's directory.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    w.volume_in(name.as_str());
    assert!(real.join("appvms/work/private.img").exists());
    assert!(
        !victim.join("appvms/work").exists(),
        "made in the other pool"
    );
}

/// A pool created by an earlier release keeps the path as it was written, which may go
/// through a symlink. Such a path is followed only where nobody but root and the
/// service can have made or changed the symlink: a symlink in a root-owned directory
/// (an administrator moved the pool and left a symlink) still leads to the pool; one in
/// a directory another user owns is refused — that user pointed it at another pool's
/// directory, and a Remove of the legacy pool's volume deleted the other pool's image.
#[test]
fn a_legacy_pool_path_through_a_symlink_is_followed_only_where_nobody_else_could_change_it() {
    let mut w = World::new();
    let (trusted, theirs, victim) = (w.dir("trusted"), w.dir("theirs"), w.dir("victim"));
    let vol = work_private;
    let ctx = |op| qubes_storage_engine::OpCtx::quiet(op);
    for (pool, dir) in [("kept", &trusted), ("legacy", &theirs), ("other", &victim)] {
        w.pool_with_a_volume(pool, &dir.join("pool"));
    }
    // With the service stopped, the two pool directories are moved and a symlink left
    // at the path each pool keeps: what a pool of an earlier release looks like.
    drop(std::mem::replace(
        &mut w.engine,
        Engine::open(tempfile::tempdir().unwrap().path()).unwrap(),
    ));
    for dir in [&trusted, &theirs] {
        std::fs::rename(dir.join("pool"), dir.join("moved")).unwrap();
        std::os::unix::fs::symlink("moved", dir.join("pool")).unwrap();
    }
    // The other user owns `theirs` and points its symlink at the other pool.
    chown(&theirs, OTHER_UID);
    std::fs::remove_file(theirs.join("pool")).unwrap();
    std::os::unix::fs::symlink(victim.join("pool"), theirs.join("pool")).unwrap();
    w.engine = Engine::open(w.state.path()).unwrap();

    w.engine
        .start(&vol("kept"), &ctx("Start"))
        .expect("the pool moved by root is followed");
    assert!(trusted.join("moved/appvms/work/private-dirty.img").exists());

    assert_remove_refused_naming(&w, "legacy", &theirs);
    assert!(
        victim.join("pool/appvms/work/private.img").exists(),
        "the other pool's image was deleted"
    );
    // Once root owns the directory again and the symlink leads to the pool, its
    // volume is there as before: the refused Remove changed nothing.
    chown(&theirs, 0);
    std::fs::remove_file(theirs.join("pool")).unwrap();
    std::os::unix::fs::symlink("moved", theirs.join("pool")).unwrap();
    let info = w.engine.volume_info(&vol("legacy")).unwrap();
    assert_eq!(info.size, MIB);
    assert!(theirs.join("moved/appvms/work/private.img").exists());
    w.engine
        .remove_volume(&vol("legacy"), &ctx("Remove"))
        .expect("removed where the pool is");
    assert!(!theirs.join("moved/appvms/work/private.img").exists());
    assert!(victim.join("pool/appvms/work/private.img").exists());
}

/// Pools created below a directory that another user comes to own later (a chown) are
/// refused as long as it is theirs: by renames within it, without any symlink, that
/// user could swap two pools' directories, and one pool's Remove would delete the
/// other's image.
#[test]
fn pools_below_a_directory_another_user_came_to_own_are_refused_however_it_changes() {
    let w = World::new();
    let shared = w.dir("shared");
    for pool in ["first", "second"] {
        w.pool_with_a_volume(pool, &shared.join(pool));
    }
    chown(&shared, OTHER_UID);
    // What the other user may now do: swap the two directories by renaming.
    std::fs::rename(shared.join("first"), shared.join("swap")).unwrap();
    std::fs::rename(shared.join("second"), shared.join("first")).unwrap();
    std::fs::rename(shared.join("swap"), shared.join("second")).unwrap();
    assert_remove_refused_naming(&w, "first", &shared);
    for pool in ["first", "second"] {
        assert!(
            shared.join(pool).join("appvms/work/private.img").exists(),
            "an image was deleted"
        );
    }
}
