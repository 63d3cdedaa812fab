//! Imports (issue 9 item 3, contract rev 2): only an import in progress can be
//! committed (never a stale `-import.img`); the committed image has exactly the
//! declared size; writes through the import fd after ImportDataEnd(true) never reach
//! committed data; sizes are whole sectors and shrinking needs `allow_shrink`; only the
//! caller that opened an import (or a privileged one) may end it. On btrfs, XFS and
//! ext4 where the filesystem matters (the commit seals the import with a reflink, or a
//! byte copy without reflinks).

mod common_fs;
mod scenario_support;

use std::fs;
use std::os::unix::fs::FileExt;

use common_fs::{FsType, MIB};
use qubes_storage_engine::{ErrorKind, EventKind, OpCtx, VolumeRef};
use scenario_support::{exists, files_in, on_every_fs, read_at, Fixture};

const VID: &str = "appvms/work/private";

on_every_fs!(
    writes_through_the_import_fd_after_the_end_never_reach_committed_data,
    the_committed_image_has_exactly_the_declared_size,
    an_import_file_nobody_holds_any_more_is_committed_without_a_copy,
    a_clone_of_an_unchanged_source_into_its_clone_changes_nothing,
);

/// A clone within one filesystem is a hard link of the source's committed image; a
/// second clone of the source, unchanged since, finds that image already committed:
/// nothing changes — no revision of it (a duplicate that would push out a real one)
/// and no temp name left behind (a rename between two names of one inode does
/// nothing).
fn a_clone_of_an_unchanged_source_into_its_clone_changes_nothing(t: FsType) {
    let f = Fixture::new(t);
    let source = f.origin("vm-templates/t/root", MIB, 1);
    f.session(&source, 0, b"template");
    let v = f.origin(VID, MIB, 2);
    let clone = || {
        f.engine
            .import_volume(&v, &source, &quiet("ImportVolume"))
            .unwrap();
        f.engine.settle();
        files_in(f.paths(VID).dir())
    };
    let once = clone();
    let twice = clone();
    assert_eq!(twice, once, "the second clone changed the files");
    assert!(!twice.iter().any(|n| n.contains('~')), "{twice:?}");
    assert_eq!(read_at(&f.paths(VID).clean(), 0, 8), b"template");
}

/// The tests that make a step fail (feature `failpoints`, which scripts/test turns on).
#[cfg(feature = "failpoints")]
mod failing {
    use super::*;

    on_every_fs!(
        a_commit_of_a_held_import_that_fails_keeps_the_import_file_for_a_retry,
        an_import_whose_commit_cannot_be_made_durable_is_committed_by_its_retry,
        an_import_whose_commit_cannot_be_made_durable_and_is_then_discarded_is_undone,
    );

    /// The same failure, and then the importer gives up (ImportDataEnd(false)): the
    /// import's image, already in place, is reverted to the image from before the
    /// import, which is committed again (the import's image stays a revision, as any
    /// image a revert replaces). Before, the import ended as discarded while its data
    /// stayed committed.
    fn an_import_whose_commit_cannot_be_made_durable_and_is_then_discarded_is_undone(t: FsType) {
        let f = Fixture::new(t);
        let v = f.origin(VID, MIB, 1);
        f.session(&v, 0, b"before!!");
        let fd = import_with(&f, &v, MIB, b"imported");
        let no_children = common_fs::no_children();
        drop(fd);
        qubes_storage_engine::failpoint::refuse_next_on_this_thread("changes-sync");
        let failed = f.engine.import_data_end(&v, true, &quiet("ImportDataEnd"));
        assert!(failed.is_err(), "{failed:?}");
        drop(no_children);
        assert_eq!(
            read_at(&f.paths(VID).clean(), 0, 8),
            b"imported",
            "in place"
        );
        f.engine
            .import_data_end(&v, false, &quiet("ImportDataEnd"))
            .expect("ImportDataEnd(false)");
        f.engine.settle();
        let paths = f.paths(VID);
        assert_eq!(read_at(&paths.clean(), 0, 8), b"before!!", "undone");
        let retried = f.engine.import_data_end(&v, true, &quiet("ImportDataEnd"));
        assert_eq!(
            retried.map_err(|e| e.kind()),
            Err(ErrorKind::NotFound),
            "the import ended"
        );
        assert!(!exists(&paths.import()));
        let names = files_in(paths.dir());
        assert!(!names.iter().any(|n| n.contains('~')), "{names:?}");
    }

    /// The directory fsync of an import's commit fails (EIO, after its renames), for an
    /// import file committed itself and for a held one (a private copy): the call
    /// fails, and its retry commits the import with the pre-import image as the one
    /// revision kept — nothing is lost and nothing is counted twice.
    fn an_import_whose_commit_cannot_be_made_durable_is_committed_by_its_retry(t: FsType) {
        let f = Fixture::new(t);
        let v = f.origin(VID, MIB, 1);
        f.session(&v, 0, b"before!!");
        for held in [false, true] {
            let before = read_at(&f.paths(VID).clean(), 0, 8);
            let fd = import_with(&f, &v, MIB, if held { b"second!!" } else { b"first!!!" });
            let no_children = common_fs::no_children();
            let fd = if held {
                Some(fd)
            } else {
                drop(fd);
                None
            };
            qubes_storage_engine::failpoint::refuse_next_on_this_thread("changes-sync");
            let failed = f.engine.import_data_end(&v, true, &quiet("ImportDataEnd"));
            assert!(failed.is_err(), "held {held}: {failed:?}");
            let retry = quiet("ImportDataEnd");
            f.engine
                .import_data_end(&v, true, &retry)
                .unwrap_or_else(|err| panic!("held {held}: the retry: {err}"));
            // The failed call's events were not announced: the retry announces the
            // revision that call kept.
            let added: Vec<u64> = retry
                .take_events()
                .into_iter()
                .filter_map(|e| match e.kind {
                    EventKind::RevisionAdded { id, .. } => Some(id),
                    _ => None,
                })
                .collect();
            drop(no_children);
            drop(fd);
            f.engine.settle();
            let paths = f.paths(VID);
            let expected: &[u8] = if held { b"second!!" } else { b"first!!!" };
            assert_eq!(read_at(&paths.clean(), 0, 8), expected, "held {held}");
            let info = f.engine.volume_info(&v).unwrap();
            assert_eq!(info.revisions.len(), 1, "held {held}: {:?}", info.revisions);
            let revision = paths.revision(info.revisions[0].id, info.revisions[0].timestamp);
            assert_eq!(
                read_at(&revision, 0, 8),
                before,
                "held {held}: the revision"
            );
            assert_eq!(
                added,
                vec![info.revisions[0].id],
                "held {held}: RevisionAdded"
            );
            assert!(!exists(&paths.import()), "held {held}");
            let names = files_in(paths.dir());
            assert!(
                !names.iter().any(|n| n.contains('~')),
                "held {held}: {names:?}"
            );
        }
    }

    /// The commit of an import whose file the importer still holds (a private copy is
    /// committed) fails as its copy is put in place (a failing disk): the import file
    /// is kept — the import is still in progress and the retry commits it (before, the
    /// import file had been discarded first and was deleted with the failed batch).
    fn a_commit_of_a_held_import_that_fails_keeps_the_import_file_for_a_retry(t: FsType) {
        let f = Fixture::new(t);
        let v = f.origin(VID, MIB, 1);
        let fd = import_with(&f, &v, MIB, b"imported");
        qubes_storage_engine::failpoint::refuse_next_on_this_thread("place");
        let failed = f.engine.import_data_end(&v, true, &quiet("ImportDataEnd"));
        assert!(failed.is_err(), "{failed:?}");
        f.engine.settle();
        assert!(
            exists(&f.paths(VID).import()),
            "the import file was deleted"
        );
        assert_eq!(
            read_at(&f.paths(VID).clean(), 0, 8),
            [0; 8],
            "clean unchanged"
        );
        f.engine
            .import_data_end(&v, true, &quiet("ImportDataEnd"))
            .expect("the retry");
        drop(fd);
        assert_eq!(read_at(&f.paths(VID).clean(), 0, 8), b"imported");
        f.engine.settle();
        assert!(!exists(&f.paths(VID).import()));
    }
}

/// ImportData of `size` on `v`, `data` written at 0; the importer's fd.
fn import_with(f: &Fixture, v: &VolumeRef, size: u64, data: &[u8]) -> fs::File {
    let fd = f
        .engine
        .import_data(v, size, false, &quiet("ImportData"))
        .unwrap();
    fd.write_all_at(data, 0).unwrap();
    fd
}

/// Closes the importer's `fd` and ends its import: a private copy is committed, not the
/// import file (something else still reaches it).
fn end_expecting_a_private_copy(f: &Fixture, v: &VolumeRef, fd: fs::File) {
    let paths = f.paths(VID);
    let import = ino(&paths.import());
    drop(fd);
    f.engine
        .import_data_end(v, true, &quiet("ImportDataEnd"))
        .unwrap();
    assert_ne!(ino(&paths.clean()), import, "a private copy");
}

fn ino(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

fn quiet(op: &str) -> OpCtx {
    OpCtx::quiet(op)
}

/// The files of the volume's VM directory and the clean image's bytes.
fn snapshot_of(f: &Fixture, len: usize) -> (Vec<String>, Vec<u8>) {
    let paths = f.paths(VID);
    (files_in(paths.dir()), read_at(&paths.clean(), 0, len))
}

fn writes_through_the_import_fd_after_the_end_never_reach_committed_data(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, MIB, 1);
    let fd = f
        .engine
        .import_data(&v, MIB, false, &quiet("ImportData"))
        .unwrap();
    fd.write_all_at(b"imported", 0).unwrap();
    let import = ino(&f.paths(VID).import());
    f.engine
        .import_data_end(&v, true, &quiet("ImportDataEnd"))
        .unwrap();
    assert_ne!(
        ino(&f.paths(VID).clean()),
        import,
        "the importer still holds the import file: a private copy is committed"
    );
    fd.write_all_at(b"too late", 0).unwrap();
    fd.write_all_at(b"beyond", 4 * MIB).unwrap();
    fd.sync_all().unwrap();
    let clean = f.paths(VID).clean();
    assert_eq!(read_at(&clean, 0, 8), b"imported");
    assert_eq!(fs::metadata(&clean).unwrap().len(), MIB);
    let exported = f.engine.export(&v, &quiet("Export")).unwrap();
    let mut head = [0u8; 8];
    exported.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"imported");
    let dirty = f.start(&v);
    assert_eq!(read_at(&dirty, 0, 8), b"imported");
}

/// The importer truncates its file to another size: the committed image still has
/// exactly the declared size (the written bytes within it kept).
fn the_committed_image_has_exactly_the_declared_size(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, MIB, 1);
    for (declared, truncated_to) in [(3 * MIB, 5 * MIB + 7), (2 * MIB, 4096)] {
        let fd = f
            .engine
            .import_data(&v, declared, true, &quiet("ImportData"))
            .unwrap();
        fd.write_all_at(b"data", 0).unwrap();
        fd.set_len(truncated_to).unwrap();
        drop(fd);
        f.engine
            .import_data_end(&v, true, &quiet("ImportDataEnd"))
            .unwrap();
        let clean = f.paths(VID).clean();
        assert_eq!(
            fs::metadata(&clean).unwrap().len(),
            declared,
            "{truncated_to}"
        );
        assert_eq!(f.engine.volume_info(&v).unwrap().size, declared);
        assert_eq!(read_at(&clean, 0, 4), b"data");
    }
}

/// The importer closed its fd (and the fd it passed to a child, here a dup of it that
/// is closed too): nobody can reach the import file any more, so it becomes the
/// committed image itself — no copy — at exactly the declared size, with the old image
/// kept as a revision. Another open file of it still writing, or another name of it,
/// keeps the private copy.
fn an_import_file_nobody_holds_any_more_is_committed_without_a_copy(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin(VID, MIB, 1);
    let paths = f.paths(VID);
    let fd = import_with(&f, &v, 2 * MIB, b"imported");
    fd.write_all_at(b"beyond the declared size", 3 * MIB)
        .unwrap();
    let child = fd.try_clone().unwrap();
    let import = ino(&paths.import());
    // No test beside this one forks a child that would hold the import file until
    // its exec while the service probes who holds it.
    let no_children = common_fs::no_children();
    drop(fd);
    drop(child);
    f.engine
        .import_data_end(&v, true, &quiet("ImportDataEnd"))
        .unwrap();
    drop(no_children);
    let clean = paths.clean();
    assert_eq!(ino(&clean), import, "committed as it is");
    assert_eq!(fs::metadata(&clean).unwrap().len(), 2 * MIB);
    assert_eq!(read_at(&clean, 0, 8), b"imported");
    assert!(!exists(&paths.import()));
    assert_eq!(f.engine.volume_info(&v).unwrap().revisions.len(), 1);
    f.engine.settle();
    assert_eq!(read_at(&f.start(&v), 0, 8), b"imported");
    f.stop(&v);

    // Another open file of the import (opened on its own, not a dup) still writes: a
    // private copy, which its later writes never reach.
    let fd = import_with(&f, &v, 2 * MIB, b"second");
    let other = fs::OpenOptions::new()
        .write(true)
        .open(paths.import())
        .unwrap();
    end_expecting_a_private_copy(&f, &v, fd);
    other.write_all_at(b"later!", 0).unwrap();
    assert_eq!(read_at(&paths.clean(), 0, 6), b"second");
    drop(other);

    // The importer gave its import file another name (a hard link, through which it
    // could open it again after the commit): a private copy.
    let fd = import_with(&f, &v, 2 * MIB, b"third!");
    let elsewhere = f.fs.path().join("kept-by-the-importer");
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        rustix::fs::CWD,
        &elsewhere,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .unwrap();
    end_expecting_a_private_copy(&f, &v, fd);
    let reopened = fs::OpenOptions::new().write(true).open(&elsewhere).unwrap();
    reopened.write_all_at(b"later!", 0).unwrap();
    assert_eq!(read_at(&paths.clean(), 0, 6), b"third!");
}

/// An `-import.img` that no ImportData opened (left by a crash, or put there) is never
/// committed: ImportDataEnd(true) is `NotFound` and nothing changes.
#[test]
fn a_stale_import_file_is_never_committed() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin(VID, MIB, 1);
    f.session(&v, 0, b"kept");
    fs::write(f.paths(VID).import(), vec![7u8; MIB as usize]).unwrap();
    let before = snapshot_of(&f, 4);
    let err = f
        .engine
        .import_data_end(&v, true, &quiet("ImportDataEnd"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("no import is in progress"),
        "{err}"
    );
    assert_eq!(snapshot_of(&f, 4), before);
}

/// An import opened before the service restarted is not in progress afterwards: it
/// cannot be committed (a new ImportData starts over).
#[test]
fn an_import_from_before_a_restart_is_never_committed() {
    let mut f = Fixture::new(FsType::Btrfs);
    let v = f.origin(VID, MIB, 1);
    f.session(&v, 0, b"kept");
    let fd = f
        .engine
        .import_data(&v, MIB, false, &quiet("ImportData"))
        .unwrap();
    fd.write_all_at(b"stale", 0).unwrap();
    let before = snapshot_of(&f, 4);
    f.restart();
    let err = f
        .engine
        .import_data_end(&v, true, &quiet("ImportDataEnd"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(snapshot_of(&f, 4), before);
}

#[test]
fn import_sizes_must_be_whole_sectors_below_2_pow_63() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin(VID, MIB, 1);
    for size in [MIB + 1, MIB + 511, 1 << 63, u64::MAX - 511] {
        let err = f
            .engine
            .import_data(&v, size, true, &quiet("ImportData"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{size}: {err}");
        assert!(!exists(&f.paths(VID).import()), "{size}");
    }
    f.engine
        .import_data(&v, MIB + 512, false, &quiet("ImportData"))
        .unwrap();
}

/// Like Resize: importing less than the current size destroys data, so it needs
/// `allow_shrink`; refused, nothing changes.
#[test]
fn an_import_smaller_than_the_volume_needs_allow_shrink() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin(VID, 4 * MIB, 1);
    f.session(&v, 3 * MIB, b"tail");
    let before = snapshot_of(&f, 4);
    let err = f
        .engine
        .import_data(&v, MIB, false, &quiet("ImportData"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("allow_shrink"), "{err}");
    assert_eq!(snapshot_of(&f, 4), before);
    f.engine
        .import_data(&v, MIB, true, &quiet("ImportData"))
        .unwrap();
    f.engine
        .import_data_end(&v, true, &quiet("ImportDataEnd"))
        .unwrap();
    assert_eq!(f.engine.volume_info(&v).unwrap().size, MIB);
}

fn end_as(
    f: &Fixture,
    v: &VolumeRef,
    success: bool,
    ctx: OpCtx,
) -> qubes_storage_engine::Result<()> {
    f.engine.import_data_end(v, success, &ctx)
}

/// Another caller can neither commit nor discard someone's import (it stays as it
/// is); a privileged caller can end it.
#[test]
fn only_the_caller_that_opened_an_import_or_a_privileged_one_ends_it() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin(VID, MIB, 1);
    f.session(&v, 0, b"kept");
    let opened = quiet("ImportData").with_caller(":1.42");
    let fd = f.engine.import_data(&v, MIB, false, &opened).unwrap();
    fd.write_all_at(b"theirs", 0).unwrap();
    for success in [true, false] {
        let err = end_as(&f, &v, success, quiet("ImportDataEnd").with_caller(":1.43")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
        assert!(err.to_string().contains(":1.42"), "{err}");
        assert_eq!(read_at(&f.paths(VID).import(), 0, 6), b"theirs");
    }
    assert_eq!(f.engine.imports_of(":1.42"), vec![v.clone()]);
    let root = quiet("ImportDataEnd")
        .with_caller(":1.1")
        .with_privileged(true);
    end_as(&f, &v, true, root).unwrap();
    assert_eq!(read_at(&f.paths(VID).clean(), 0, 6), b"theirs");
    assert!(f.engine.imports_of(":1.42").is_empty());
}

/// The owner itself ends its import.
#[test]
fn the_caller_that_opened_an_import_ends_it() {
    let f = Fixture::new(FsType::Btrfs);
    let v = f.origin(VID, MIB, 1);
    let fd = f
        .engine
        .import_data(&v, MIB, false, &quiet("ImportData").with_caller(":1.42"))
        .unwrap();
    fd.write_all_at(b"mine", 0).unwrap();
    end_as(&f, &v, true, quiet("ImportDataEnd").with_caller(":1.42")).unwrap();
    assert_eq!(read_at(&f.paths(VID).clean(), 0, 4), b"mine");
}
