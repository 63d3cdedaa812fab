//! Path safety by construction (issue 9 item 5): hostile layouts built for real in a
//! pool on a loop-mounted btrfs — a FIFO, a directory or a symlink where an image
//! should be, a class directory another user owns, a pool directory others may write,
//! a symlinked class directory, a VM directory swapped for a symlink in the middle
//! of an operation, and one swapped for a symlink under the readers and cleaners (live
//! views, the start-up sweep, an interrupted removal). The service never renames,
//! links or hands out anything but a regular file, and never reads, writes or deletes
//! outside its pool.

mod common_fs;
#[allow(unused_macros, unused_imports)]
mod scenario_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common_fs::{names_in, FsType, Immutable, MIB};
use qubes_storage_engine::{CancelToken, ErrorKind, OpCtx, ProgressSink, VolumeSpec};
use scenario_support::{exists, origin_spec, read_at, write_at, Fixture};

/// The uid of `nobody`: a user other than the service.
const OTHER_UID: u32 = 65534;

/// Makes something at a path.
type Maker<'a> = &'a dyn Fn(&Path);

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

#[track_caller]
fn assert_invalid(result: qubes_storage_engine::Result<impl std::fmt::Debug>, naming: &str) {
    let err = result.expect_err("the operation went ahead");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains(naming),
        "{err} does not name {naming}"
    );
}

/// Start with snapshots disabled renames the committed image into the VM's image: a
/// FIFO, a directory or a symlink in its place is refused and stays where it is.
#[test]
fn start_with_snapshots_disabled_refuses_anything_but_a_regular_file_as_the_image() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin("appvms/work/private", MIB, -1);
    let clean = f.paths("appvms/work/private").clean();
    let outside = tempfile::NamedTempFile::new().unwrap();
    let layouts: [(&str, Maker); 3] = [
        ("FIFO", &|p| mkfifo(p)),
        ("directory", &|p| fs::create_dir(p).unwrap()),
        ("symbolic link", &|p| {
            std::os::unix::fs::symlink(outside.path(), p).unwrap()
        }),
    ];
    for (what, make) in layouts {
        fs::remove_file(&clean)
            .or_else(|_| fs::remove_dir(&clean))
            .unwrap();
        make(&clean);
        assert_invalid(f.engine.start(&v, &OpCtx::quiet("Start")), "private.img");
        assert!(exists(&clean), "{what}: left in place");
        assert!(
            !exists(&f.paths("appvms/work/private").dirty()),
            "{what}: not started"
        );
    }
}

/// A started volume's Start hands out its dirty image again: never one that is not a
/// regular file (here a symlink to a file outside the pool).
#[test]
fn start_never_hands_out_a_dirty_image_that_is_not_a_regular_file() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin("appvms/work/private", MIB, 1);
    let outside = tempfile::NamedTempFile::new().unwrap();
    let dirty = f.paths("appvms/work/private").dirty();
    std::os::unix::fs::symlink(outside.path(), &dirty).unwrap();
    assert_invalid(
        f.engine.start(&v, &OpCtx::quiet("Start")),
        "private-dirty.img",
    );
}

/// A snapshot's start hardlinks its source's committed image: a FIFO there is refused
/// and the snapshot's directory gets nothing.
#[test]
fn a_snapshot_start_refuses_a_source_image_that_is_not_a_regular_file() {
    let f = Fixture::new(FsType::Btrfs);
    let root = f.origin("vm-templates/t/root", MIB, 1);
    let snap = f.create(
        "appvms/a/root",
        VolumeSpec {
            snap_on_start: true,
            source: Some(root.vid.clone()),
            ..Default::default()
        },
    );
    let source_clean = f.paths("vm-templates/t/root").clean();
    fs::remove_file(&source_clean).unwrap();
    mkfifo(&source_clean);
    assert_invalid(f.engine.start(&snap, &OpCtx::quiet("Start")), "root.img");
    let own_dir = f.paths("appvms/a/root").dir().to_owned();
    assert!(
        !own_dir.exists() || names_in(&own_dir).is_empty(),
        "{:?}",
        names_in(&own_dir)
    );
}

/// `appvms/` handed to another user after the pool was made: every change to a volume
/// in it is refused (that user could swap its VM directories), nothing is created;
/// `vm-templates/` still works.
#[test]
fn volumes_in_a_class_directory_owned_by_another_user_are_refused() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin("appvms/work/private", MIB, 1);
    let appvms = f.dir.join("appvms");
    std::os::unix::fs::chown(&appvms, Some(OTHER_UID), None).unwrap();
    assert_invalid(f.engine.start(&v, &OpCtx::quiet("Start")), "appvms");
    let new = f.vref("appvms/new/private");
    let created = f
        .engine
        .create_volume(&new, origin_spec(MIB, 1), &OpCtx::quiet("CreateVolume"));
    assert_invalid(created, "appvms");
    assert!(!appvms.join("new").exists());
    f.origin("vm-templates/t/root", MIB, 1);
}

/// The pool directory made writable by everyone after the pool was made: changes are
/// refused, naming it.
#[test]
fn volumes_in_a_pool_directory_others_may_write_are_refused() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin("appvms/work/private", MIB, 1);
    fs::set_permissions(&f.dir, fs::Permissions::from_mode(0o777)).unwrap();
    let name = f.dir.display().to_string();
    assert_invalid(f.engine.start(&v, &OpCtx::quiet("Start")), &name);
    assert!(!exists(&f.paths("appvms/work/private").dirty()));
}

/// The class directory itself replaced by a symlink to a directory outside the pool.
#[test]
fn a_symlinked_class_directory_is_refused_and_nothing_is_written_outside() {
    let f = Fixture::new(FsType::Btrfs);
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(outside.path().join("work")).unwrap();
    fs::rename(f.dir.join("appvms"), f.dir.join("appvms-real")).unwrap();
    std::os::unix::fs::symlink(outside.path(), f.dir.join("appvms")).unwrap();
    let v = f.vref("appvms/work/private");
    let created = f
        .engine
        .create_volume(&v, origin_spec(MIB, 1), &OpCtx::quiet("CreateVolume"));
    assert_invalid(created, "appvms");
    assert!(names_in(&outside.path().join("work")).is_empty());
}

/// Swaps a VM directory for a symlink to `outside` when the first byte copy starts:
/// the middle of an operation, where a writer of the class directory could strike.
struct SwapMidCopy {
    vm_dir: PathBuf,
    moved_to: PathBuf,
    outside: PathBuf,
    done: AtomicBool,
}

impl ProgressSink for SwapMidCopy {
    fn copy_started(&self, _operation: &str, _total: u64) {
        if !self.done.swap(true, Ordering::SeqCst) {
            fs::rename(&self.vm_dir, &self.moved_to).unwrap();
            std::os::unix::fs::symlink(&self.outside, &self.vm_dir).unwrap();
        }
    }
}

/// On ext4 a commit copies bytes (the revision, then the precache). The VM directory
/// is swapped for a symlink to an attacker's directory while the first copy runs (the
/// attacker put a `private-dirty.img` there): the rest of the commit still happens in
/// the real directory, and nothing is renamed or written outside the pool.
#[test]
fn a_vm_directory_swapped_for_a_symlink_mid_operation_never_lets_a_file_escape() {
    let f = Fixture::new(FsType::Ext4);
    let v = f.origin("appvms/work/private", MIB, 1);
    f.session(&v, 0, b"first");
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"second");
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("private-dirty.img"), b"attacker").unwrap();
    let vm_dir = f.dir.join("appvms/work");
    let sink = Arc::new(SwapMidCopy {
        moved_to: f.dir.join("appvms/moved"),
        vm_dir: vm_dir.clone(),
        outside: outside.path().to_owned(),
        done: AtomicBool::new(false),
    });
    let ctx = OpCtx::new("Stop", sink.clone(), CancelToken::new());
    let stopped = f.engine.stop(&v, &ctx);
    assert!(sink.done.load(Ordering::SeqCst), "no byte copy ran");
    assert_eq!(
        names_in(outside.path()),
        ["private-dirty.img"],
        "the service wrote outside the pool ({stopped:?})"
    );
    assert_eq!(
        fs::read(outside.path().join("private-dirty.img")).unwrap(),
        b"attacker"
    );
    stopped.expect("the commit finishes in the directory it opened");
    let real = f.dir.join("appvms/moved");
    assert_eq!(read_at(&real.join("private.img"), 0, 6), b"second");
}

/// Moves the VM directory `appvms/<vm>` aside and puts a symlink to a fresh directory
/// outside the pool in its place, holding `files` (with content `outside`); returns
/// that directory.
fn symlink_vm_dir(f: &Fixture, vm: &str, files: &[&str]) -> tempfile::TempDir {
    let outside = tempfile::tempdir().unwrap();
    for name in files {
        fs::write(outside.path().join(name), b"outside").unwrap();
    }
    let vm_dir = f.dir.join("appvms").join(vm);
    fs::rename(&vm_dir, f.dir.join("appvms").join(format!("{vm}-moved"))).unwrap();
    std::os::unix::fs::symlink(outside.path(), &vm_dir).unwrap();
    outside
}

/// The live views read through the pool's fd too: a VM directory that is a symlink
/// fails the views of its own volumes (naming it) and no other.
#[test]
fn a_symlinked_vm_directory_fails_only_its_own_live_views() {
    let f = Fixture::new(FsType::Btrfs);
    let work = f.origin("appvms/work/private", MIB, 1);
    let other = f.origin("appvms/other/private", MIB, 1);
    let _outside = symlink_vm_dir(&f, "work", &["private-dirty.img", "private.img"]);
    assert_invalid(f.engine.volume_info(&work), "appvms/work");
    let views = f.engine.volume_infos(&f.pool).unwrap();
    assert_eq!(views.len(), 2);
    let other_view = views[0].as_ref().expect("appvms/other is read");
    assert_eq!(*other_view, f.engine.volume_info(&other).unwrap());
    let err = views[1].as_ref().expect_err("appvms/work is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("appvms/work"), "{err}");
}

/// The start-up sweep never follows a symlinked VM directory: a temp name and the
/// import file of a registered volume behind it are left alone, while a real VM
/// directory's temp is swept.
#[test]
fn the_sweep_never_deletes_through_a_symlinked_vm_directory() {
    let f = Fixture::new(FsType::Btrfs);
    f.origin("appvms/work/private", MIB, 1);
    let files = ["private-import.img", "private.img~abcdefgh"];
    let outside = symlink_vm_dir(&f, "work", &files);
    let real = f.dir.join("appvms/real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("root.img~abcdefgh"), b"").unwrap();
    assert_eq!(f.engine.sweep_leftovers(), 1, "only the real temp");
    assert_eq!(names_in(outside.path()), files);
    assert!(names_in(&real).is_empty());
}

/// An interrupted removal (its files could not be deleted) is never finished through a
/// VM directory that became a symlink: finishing it fails, naming the directory, and
/// the files behind the symlink stay.
#[test]
fn an_interrupted_removal_never_deletes_through_a_symlinked_vm_directory() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin("appvms/work/private", MIB, 1);
    {
        let _frozen = Immutable::new(f.paths("appvms/work/private").dir());
        f.engine.remove_volume(&v, &OpCtx::quiet("Remove")).unwrap();
    }
    let files = ["private-precache.img", "private.img"];
    let outside = symlink_vm_dir(&f, "work", &files);
    assert_invalid(f.engine.finish_interrupted_removals(), "appvms/work");
    assert_eq!(names_in(outside.path()), files);
}
