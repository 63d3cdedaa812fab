//! The start-up sweep (issue 9 item 9, `Engine::sweep_leftovers`): after a restart it
//! removes the temp files an interrupted operation left — also of a vid that was never
//! registered, which is what a CreateVolume killed between creating its image and
//! renaming it leaves (`<name>.img~XXXXXXXX`) — and the import file of a registered
//! volume (after a restart no import is in progress), and the running images of
//! snapshot and volatile volumes made in an earlier boot (their VMs died with it); it
//! never touches a file that may hold a user's data, such as an unregistered volume of
//! an existing Qubes pool, and never an import that is still in progress or an image a
//! VM of this boot may run on.
//!
//! The power-loss replay (`tests/power_loss.rs`, operation `create`) checks the same on
//! the disks a real power cut during CreateVolume leaves. Needs root (loop mounts).

mod common_fs;
mod scenario_support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common_fs::{FsType, MIB};
use qubes_storage_engine::durable::temp_name;
use qubes_storage_engine::{Engine, ErrorKind};
use qubes_storage_engine::{VolumeRef, VolumeSpec};
use scenario_support::{exists, files_in, on_every_fs, origin_spec, read_at, Fixture};

/// A temp of `path` as the engine names it (`<file name>~XXXXXXXX`, beside it).
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    path.with_file_name(temp_name(name))
}

fn restarted(f: &Fixture) -> Engine {
    Engine::open(f.engine.state_dir()).expect("reopen the state directory")
}

fn temps_of_an_unregistered_volume_are_swept_at_start_up(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let paths = f.paths("appvms/new/private");
    std::fs::create_dir_all(paths.dir()).unwrap();
    // What CreateVolume leaves when it is killed inside its first replace: a sparse
    // temp of the clean image, and one of the precache.
    let clean_temp = temp_path(&paths.clean());
    File::create(&clean_temp).unwrap().set_len(4 * MIB).unwrap();
    let precache_temp = temp_path(&paths.precache());
    File::create(&precache_temp)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let removed = restarted(&f).sweep_leftovers();
    assert_eq!(removed, 2);
    assert!(!exists(&clean_temp) && !exists(&precache_temp));
    assert_eq!(files_in(paths.dir()), Vec::<String>::new());
}

fn an_unregistered_volume_of_an_existing_pool_is_left_as_it_is(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let paths = f.paths("appvms/legacy/private");
    std::fs::create_dir_all(paths.dir()).unwrap();
    let mut kept = Vec::new();
    for path in [
        paths.clean(),
        paths.precache(),
        paths.revision(3, 1_714_564_803),
        // The reference driver's import in progress: data the service does not own.
        paths.import(),
        paths.dir().join("notes.txt~abcdefgh"),
        paths.dir().join("private.img~ABCDEFGH"),
    ] {
        File::create(&path)
            .unwrap()
            .write_all_at(b"data", 0)
            .unwrap();
        kept.push(path);
    }
    assert_eq!(restarted(&f).sweep_leftovers(), 0);
    for path in &kept {
        assert!(exists(path), "{} was removed", path.display());
    }
}

fn a_stale_import_is_swept_at_start_up_and_cannot_be_committed(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let vol = f.vref("appvms/work/private");
    f.create_in(&vol, origin_spec(4 * MIB, 2));
    let import = f.engine.import_data(&vol, 4 * MIB, false, &ctx()).unwrap();
    import.write_all_at(&[0x42; 4096], 0).unwrap();
    drop(import);
    let engine = restarted(&f);
    assert_eq!(engine.sweep_leftovers(), 1);
    assert!(!exists(&f.paths("appvms/work/private").import()));
    let err = engine.import_data_end(&vol, true, &ctx()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

fn an_import_in_progress_is_not_swept(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let vol = f.vref("appvms/work/private");
    f.create_in(&vol, origin_spec(4 * MIB, 2));
    let import = f.engine.import_data(&vol, 4 * MIB, false, &ctx()).unwrap();
    assert_eq!(f.engine.sweep_leftovers(), 0);
    drop(import);
    assert!(exists(&f.paths("appvms/work/private").import()));
    f.engine.import_data_end(&vol, true, &ctx()).unwrap();
}

fn temps_of_a_registered_volume_are_swept_and_its_images_kept(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let vol = f.vref("appvms/work/private");
    f.create_in(&vol, origin_spec(4 * MIB, 2));
    let paths = f.paths("appvms/work/private");
    let before = files_in(paths.dir());
    let temps = [temp_path(&paths.dirty()), temp_path(&paths.revision(1, 0))];
    for temp in &temps {
        File::create(temp).unwrap();
    }
    assert_eq!(restarted(&f).sweep_leftovers(), 2);
    assert_eq!(files_in(paths.dir()), before);
}

/// CreateVolume of a vid whose import file holds data (another driver's import in
/// progress) is `AlreadyExists` naming it, and the file stays (create discarded it as
/// garbage); a data-free one is cleared.
fn a_create_never_deletes_an_import_file_that_holds_data(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let paths = f.paths("appvms/legacy/private");
    std::fs::create_dir_all(paths.dir()).unwrap();
    File::create(paths.import())
        .unwrap()
        .write_all_at(b"data", 0)
        .unwrap();
    let vol = f.vref("appvms/legacy/private");
    let err = f
        .engine
        .create_volume(&vol, origin_spec(MIB, 1), &ctx())
        .expect_err("created over an import that holds data");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    let named = paths.import().display().to_string();
    assert!(
        err.to_string().contains(&named),
        "{err} does not name {named}"
    );
    f.engine.settle();
    assert!(exists(&paths.import()), "the import file was deleted");
    File::create(paths.import()).unwrap().set_len(MIB).unwrap();
    f.engine
        .create_volume(&vol, origin_spec(MIB, 1), &ctx())
        .expect("a data-free import file is cleared");
    f.engine.settle();
    assert!(!exists(&paths.import()));
}

/// A stale import of a registered volume whose class directory others may change is
/// left alone, as every volume operation refuses that directory (another user could
/// have moved a different VM directory under the volume's name).
fn no_stale_import_is_swept_in_a_class_directory_others_may_change(fs_type: FsType) {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new(fs_type);
    f.origin("appvms/work/private", MIB, 1);
    let import = f.paths("appvms/work/private").import();
    File::create(&import)
        .unwrap()
        .write_all_at(b"data", 0)
        .unwrap();
    let class = f.dir.join("appvms");
    std::fs::set_permissions(&class, std::fs::Permissions::from_mode(0o775)).unwrap();
    assert_eq!(restarted(&f).sweep_leftovers(), 0);
    assert!(
        exists(&import),
        "swept below a class directory others may change"
    );
    std::fs::set_permissions(&class, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(restarted(&f).sweep_leftovers(), 1);
    assert!(!exists(&import));
}

/// After a reboot no VM runs on a snapshot's or volatile volume's running image: the
/// sweep stops those volumes — an image made in an earlier boot goes, with a snapshot's
/// link of its source, and so does a link an interrupted stop left alone — and keeps
/// what a VM may still run on: images of this boot (the service restarted while VMs
/// run) and unmarked ones (made by the reference driver); and every save_on_stop
/// session, which the next start picks up. A stopped snapshot then starts afresh.
fn volumes_a_reboot_stopped_are_stopped_by_the_sweep(fs_type: FsType) {
    use qubes_storage_engine::running::MADE_IN_BOOT;
    use qubes_storage_engine::sys;

    let f = Fixture::new(fs_type);
    let template = f.origin("vm-templates/t/root", 4 * MIB, 1);
    f.session(&template, 0, b"template");
    let snapshot = || VolumeSpec {
        snap_on_start: true,
        source: Some(template.vid.clone()),
        ..Default::default()
    };
    let volatile = || VolumeSpec {
        size: 4 * MIB,
        rw: true,
        ..Default::default()
    };
    // VM a ran before the reboot; VM b runs now (the service restarted); VM c's
    // volatile image is unmarked; VM d's root was stopped but its link stayed.
    let a_root = f.create("appvms/a/root", snapshot());
    let a_volatile = f.create("appvms/a/volatile", volatile());
    let a_private = f.origin("appvms/a/private", 4 * MIB, 1);
    let b_root = f.create("appvms/b/root", snapshot());
    let b_volatile = f.create("appvms/b/volatile", volatile());
    let c_volatile = f.create("appvms/c/volatile", volatile());
    let d_root = f.create("appvms/d/root", snapshot());
    let mark = |path: &Path, boot: Option<&[u8]>| {
        let file = File::open(path).unwrap();
        match boot {
            Some(boot) => sys::set_xattr(&file, MADE_IN_BOOT, boot).unwrap(),
            None => sys::remove_xattr(&file, MADE_IN_BOOT).unwrap(),
        }
    };
    for v in [&a_root, &a_volatile, &a_private] {
        let dirty = f.start(v);
        dirty_write(&dirty, b"session.");
        mark(&dirty, Some(b"an earlier boot"));
    }
    for v in [&b_root, &b_volatile] {
        dirty_write(&f.start(v), b"session.");
    }
    mark(&f.start(&c_volatile), None);
    std::fs::remove_file(f.start(&d_root)).unwrap();
    assert!(exists(&f.paths("appvms/d/root").clean()));

    let engine = restarted(&f);
    assert_eq!(engine.sweep_leftovers(), 4);
    let started = |v: &VolumeRef| engine.volume_info(v).unwrap().started;
    for v in [&a_root, &a_volatile, &d_root] {
        assert!(!started(v), "{} is stopped", v.vid);
        assert!(!exists(&f.paths(&v.vid.to_string()).dirty()));
        let files = files_in(f.paths(&v.vid.to_string()).dir());
        assert!(
            !files
                .iter()
                .any(|name| name.starts_with("root") || name.starts_with("volatile")),
            "{}: {files:?}",
            v.vid
        );
    }
    assert!(
        started(&a_private),
        "a session is picked up at the next start"
    );
    assert_eq!(
        read_at(&f.paths("appvms/a/private").dirty(), 0, 8),
        b"session."
    );
    for v in [&b_root, &b_volatile, &c_volatile] {
        assert!(started(v), "{} may still run", v.vid);
    }
    assert_eq!(
        read_at(&f.paths("appvms/b/root").dirty(), 0, 8),
        b"session."
    );
    let dirty = engine.start(&a_root, &ctx()).unwrap();
    assert_eq!(read_at(&dirty, 0, 8), b"template", "afresh from its source");
}

/// A pool whose directory is gone (its disk died, it was moved away) can still be taken
/// apart: its volumes are removed — unregistered; their files, were the directory
/// back, deleted at the next start — and then the pool, whose directory, back, is
/// left as it is. Before, Remove was NotFound for want of the directory and RemovePool
/// refused a pool that still held volumes.
fn a_pool_whose_directory_is_gone_can_be_taken_apart(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let a = f.origin("appvms/a/private", 4 * MIB, 1);
    let b = f.origin("appvms/b/private", 4 * MIB, 1);
    let c = f.origin("appvms/c/private", 4 * MIB, 1);
    f.start(&c);
    let (a_files, b_files) = (f.paths("appvms/a/private"), f.paths("appvms/b/private"));
    let away = f.dir.with_extension("away");
    std::fs::rename(&f.dir, &away).unwrap();
    f.engine.remove_volume(&a, &ctx()).unwrap();
    assert_eq!(
        f.engine.volume_info(&a).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // A volume this service started, and did not stop, may have a VM running on its
    // files wherever the directory went.
    let err = f.engine.remove_volume(&c, &ctx()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    // A RemovePool refused (volumes left) forgets nothing: a's files go once the
    // directory is back.
    let err = f.engine.remove_pool(&f.pool).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    // The directory is back: the next start deletes what the removal left.
    std::fs::rename(&away, &f.dir).unwrap();
    assert!(exists(&a_files.clean()));
    let engine = restarted(&f);
    assert_eq!(engine.finish_interrupted_removals().unwrap(), 1);
    assert!(!exists(&a_files.clean()) && exists(&b_files.clean()));
    // Gone again (and no session known after the restart): the last volumes and the
    // pool go.
    std::fs::rename(&f.dir, &away).unwrap();
    engine.remove_volume(&b, &ctx()).unwrap();
    engine.remove_volume(&c, &ctx()).unwrap();
    engine.remove_pool(&f.pool).unwrap();
    std::fs::rename(&away, &f.dir).unwrap();
    assert!(
        exists(&b_files.clean()),
        "the directory of a removed pool is left as it is"
    );
    assert!(restarted(&f).pool_info(&f.pool).is_err());
}

/// A volume is not read while its pool directory, or its class directory, is missing
/// (a directory moved away; a mount point whose filesystem is not mounted): it would
/// look stopped and without files, which it is not once they are back.
fn a_volume_is_not_read_while_its_directories_are_missing(fs_type: FsType) {
    let f = Fixture::new(fs_type);
    let v = f.origin("appvms/a/private", 4 * MIB, 1);
    f.start(&v);
    assert!(f.engine.volume_info(&v).unwrap().started);
    let class = f.dir.join("appvms");
    let away = f.dir.with_extension("away");
    for (from, to) in [(&class, f.fs.path().join("appvms.away")), (&f.dir, away)] {
        std::fs::rename(from, &to).unwrap();
        let err = f.engine.volume_info(&v).unwrap_err();
        std::fs::rename(&to, from).unwrap();
        assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
        assert!(err.to_string().contains("cannot be read"), "{err}");
        assert!(f.engine.volume_info(&v).unwrap().started);
    }
}

fn dirty_write(path: &Path, data: &[u8]) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, 0)
        .unwrap();
}

fn ctx() -> qubes_storage_engine::OpCtx {
    qubes_storage_engine::OpCtx::quiet("leftovers-test")
}

on_every_fs!(
    temps_of_an_unregistered_volume_are_swept_at_start_up,
    an_unregistered_volume_of_an_existing_pool_is_left_as_it_is,
    a_stale_import_is_swept_at_start_up_and_cannot_be_committed,
    an_import_in_progress_is_not_swept,
    temps_of_a_registered_volume_are_swept_and_its_images_kept,
    a_create_never_deletes_an_import_file_that_holds_data,
    no_stale_import_is_swept_in_a_class_directory_others_may_change,
    volumes_a_reboot_stopped_are_stopped_by_the_sweep,
    a_pool_whose_directory_is_gone_can_be_taken_apart,
    a_volume_is_not_read_while_its_directories_are_missing,
);
