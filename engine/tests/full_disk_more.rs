//! More full-disk tests (beside `full_disk.rs`): on a small ext4 filesystem (no
//! reflinks, so every copy needs space; the pool uses setup_check=false) filled to the
//! last block, these operations fail with [`ErrorKind::NoSpace`] naming the volume,
//! lose nothing committed, leave no temp file, and succeed once space is freed (and a
//! revert, which writes no data, succeeds on the full disk):
//!
//! * ImportDataEnd(true) while the importer still holds its fd, whose private copy of
//!   the import is a byte copy (creating the sparse import file itself needs no space,
//!   the revision is a hard link); the written import survives for the retry, and until
//!   then every other change says that an import is pending and how to end it. Once
//!   the importer closed its fd the import file is committed itself, which succeeds on
//!   the full disk;
//! * CreateVolume of a VM's first volume (its directory needs a block);
//! * Start of an origin volume without a precache (a byte copy of the clean image).
//!
//! The pool, the filler and the content model are shared with `full_disk.rs`
//! (`full_disk_support`).
//!
//! Needs root (loop mounts).

mod common_fs;
mod full_disk_support;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common_fs::{FsType, LoopFs, MIB};
use full_disk_support::{assert_no_space, ctx, fill_disk, free_disk, Pool};
use qubes_storage_engine::{revision, EngineError, ErrorKind, RevisionsToKeep, VolumeSpec};

/// 8 ranges of 1 MiB, 2 MiB apart: 8 MiB of data in a 16 MiB image.
const IMAGE_SIZE: u64 = 16 * MIB;
const VID: &str = "appvms/vm1/private";
const FS_SIZE: u64 = 96 * MIB;

/// Write content `seed` into the data ranges of an image.
fn write_content(file: &File, seed: u64) {
    full_disk_support::write_content(file, seed, IMAGE_SIZE);
}

fn write_content_at(path: &Path, seed: u64) {
    full_disk_support::write_content_at(path, seed, IMAGE_SIZE);
}

#[track_caller]
fn assert_content(path: &Path, seed: u64, what: &str) {
    full_disk_support::assert_content(path, seed, IMAGE_SIZE, IMAGE_SIZE, what);
}

/// The helpers of these tests beside the shared ones.
impl Pool {
    /// An ext4 pool (setup_check=false).
    fn new() -> Pool {
        let fs = LoopFs::new(FsType::Ext4, FS_SIZE);
        Pool::on_fs(fs, "p", RevisionsToKeep::DEFAULT)
    }

    fn create_origin(&self, vid: &str, revisions_to_keep: i64) -> Result<(), EngineError> {
        let spec = VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            save_on_stop: true,
            revisions_to_keep: Some(RevisionsToKeep::new(revisions_to_keep).unwrap()),
            ..Default::default()
        };
        self.engine
            .create_volume(&self.vol(vid), spec, &ctx())
            .map(|_| ())
    }

    /// One session writing content `seed`.
    fn session(&self, vid: &str, seed: u64) {
        let dirty = self.engine.start(&self.vol(vid), &ctx()).expect("start");
        write_content_at(&dirty, seed);
        self.engine.stop(&self.vol(vid), &ctx()).expect("stop");
    }

    /// `(id, inode)` of every revision: what must survive a failure.
    fn revisions(&self, vid: &str) -> Vec<(u64, u64)> {
        let paths = self.paths(vid);
        revision::list(&paths)
            .expect("list revisions")
            .iter()
            .map(|r| {
                let ino = paths.revision(r.id, r.timestamp).metadata().unwrap().ino();
                (r.id, ino)
            })
            .collect()
    }

    fn newest_revision(&self, vid: &str) -> PathBuf {
        let paths = self.paths(vid);
        let list = revision::list(&paths).expect("list revisions");
        let r = list.last().expect("a revision");
        paths.revision(r.id, r.timestamp)
    }

    /// Temp files of `vid`.
    fn temps(&self, vid: &str) -> Vec<String> {
        let paths = self.paths(vid);
        let Ok(entries) = std::fs::read_dir(paths.dir()) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| paths.is_own_temp(n))
            .collect()
    }

    /// An origin `vid` with one committed session (content 1), then an import opened
    /// on it with content 2 written; the importer's fd is returned.
    fn import_over_a_session(&self, vid: &str) -> File {
        self.create_origin(vid, 1).unwrap();
        self.session(vid, 1);
        let import = self
            .engine
            .import_data(&self.vol(vid), IMAGE_SIZE, false, &ctx())
            .expect("import_data");
        write_content(&import, 2);
        import
    }
}

#[test]
fn ext4_import_data_end_on_full_disk_is_no_space_and_the_retry_commits_the_import() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    let import = pool.import_over_a_session(VID);
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let revisions = pool.revisions(VID);
    let filler = fill_disk(&pool.fs);

    // The importer still holds its fd: the commit needs a private copy.
    assert_no_space(pool.engine.import_data_end(&vol, true, &ctx()), &vol);
    assert_content(&paths.clean(), 1, "clean after the failed commit");
    assert_eq!(paths.clean().metadata().unwrap().ino(), clean_ino);
    assert_eq!(pool.revisions(VID), revisions, "revisions unchanged");
    assert_eq!(pool.temps(VID), Vec::<String>::new());
    assert_content(&paths.import(), 2, "the written import is kept for a retry");
    let start = pool.engine.start(&vol, &ctx()).unwrap_err();
    assert_eq!(
        start.kind(),
        ErrorKind::Busy,
        "the import is still in progress: {start}"
    );
    assert_content(
        &paths.import(),
        2,
        "a refused start leaves the import alone",
    );

    free_disk(&pool.fs, &filler);
    pool.engine
        .import_data_end(&vol, true, &ctx())
        .expect("import_data_end after freeing space");
    drop(import);
    assert_content(&paths.clean(), 2, "clean after the retried commit");
    assert_content(&pool.newest_revision(VID), 1, "the old image as revision");
    assert!(!paths.import().exists());
}

/// The importer closed its fd: nobody can write the import file any more, so it is
/// committed itself — no copy, so no space needed — and the commit succeeds on the full
/// disk (the precache, a byte copy on ext4, is left for the next start).
#[test]
fn ext4_import_data_end_of_a_closed_import_commits_on_a_full_disk() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    let import = pool.import_over_a_session(VID);
    let import_ino = paths.import().metadata().unwrap().ino();
    let filler = fill_disk(&pool.fs);
    // No test beside this one forks a child that would hold the import file until
    // its exec while the service probes who holds it.
    let no_children = common_fs::no_children();
    drop(import);
    pool.engine
        .import_data_end(&vol, true, &ctx())
        .expect("import_data_end on the full disk");
    drop(no_children);
    assert_eq!(paths.clean().metadata().unwrap().ino(), import_ino);
    assert_content(&paths.clean(), 2, "the committed import");
    assert_content(&pool.newest_revision(VID), 1, "the old image as revision");
    assert!(!paths.import().exists());
    assert_eq!(pool.temps(VID), Vec::<String>::new());
    free_disk(&pool.fs, &filler);
}

/// Issue 9 item 11: after the failed commit, Start, Resize and Revert are `Busy` and
/// say that an import is pending, why, and both ways to end it.
#[test]
fn ext4_after_a_failed_import_commit_changes_say_the_import_is_pending_and_how_to_end_it() {
    let pool = Pool::new();
    let vol = pool.vol(VID);
    let import = pool.import_over_a_session(VID);
    let filler = fill_disk(&pool.fs);
    assert_no_space(pool.engine.import_data_end(&vol, true, &ctx()), &vol);
    drop(import);
    let refusals = [
        pool.engine.start(&vol, &ctx()).unwrap_err(),
        pool.engine
            .resize(&vol, 2 * IMAGE_SIZE, false, &ctx())
            .unwrap_err(),
        pool.engine.revert(&vol, None, &ctx()).unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
        let message = err.to_string();
        eprintln!("refused: {message}");
        for needed in [
            "import",
            "pending",
            "no space left on device",
            "ImportDataEnd(true)",
            "ImportDataEnd(false)",
        ] {
            assert!(
                message.contains(needed),
                "{needed:?} missing from: {message}"
            );
        }
    }
    free_disk(&pool.fs, &filler);
    pool.engine
        .import_data_end(&vol, false, &ctx())
        .expect("discard the pending import");
    pool.engine
        .start(&vol, &ctx())
        .expect("start after the import ended");
}

/// A revert writes no data (the current image becomes a revision by a hard link, the
/// target is renamed into place): it succeeds on a full disk.
#[test]
fn ext4_revert_on_full_disk_succeeds_without_writing_data() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    pool.create_origin(VID, 2).unwrap();
    pool.session(VID, 1);
    pool.session(VID, 2);
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let revisions = pool.revisions(VID);
    assert_eq!(revisions.len(), 2);
    let target = revisions[1].0;
    let filler = fill_disk(&pool.fs);

    pool.engine
        .revert(&vol, Some(target), &ctx())
        .expect("a revert on a full disk");
    assert_content(&paths.clean(), 1, "clean after the revert");
    let newest = pool.newest_revision(VID);
    assert_content(&newest, 2, "the pre-revert image");
    assert_eq!(newest.metadata().unwrap().ino(), clean_ino, "a hard link");
    assert_eq!(pool.temps(VID), Vec::<String>::new());
    free_disk(&pool.fs, &filler);
}

#[test]
fn ext4_create_of_a_vms_first_volume_on_full_disk_is_no_space_and_registers_nothing() {
    let pool = Pool::new();
    let vol = pool.vol(VID);
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.create_origin(VID, 1), &vol);
    assert_eq!(
        pool.engine.volume_info(&vol).unwrap_err().kind(),
        ErrorKind::NotFound,
        "nothing registered"
    );
    assert!(!pool.paths(VID).dir().exists(), "no VM directory left");

    free_disk(&pool.fs, &filler);
    pool.create_origin(VID, 1)
        .expect("create after freeing space");
    let paths = pool.paths(VID);
    assert_eq!(paths.clean().metadata().unwrap().len(), IMAGE_SIZE);
    assert!(paths.precache().exists());
}

#[test]
fn ext4_origin_start_without_precache_on_full_disk_is_no_space_and_leaves_it_stopped() {
    let pool = Pool::new();
    let (vol, paths) = (pool.vol(VID), pool.paths(VID));
    pool.create_origin(VID, 1).unwrap();
    pool.session(VID, 1);
    // As a crash between a commit's rename and its new precache leaves it.
    std::fs::remove_file(paths.precache()).unwrap();
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let revisions = pool.revisions(VID);
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.engine.start(&vol, &ctx()), &vol);
    assert!(
        !pool.engine.volume_info(&vol).unwrap().started,
        "not started"
    );
    assert!(!paths.dirty().exists());
    assert_content(&paths.clean(), 1, "clean after the failed start");
    assert_eq!(paths.clean().metadata().unwrap().ino(), clean_ino);
    assert_eq!(pool.revisions(VID), revisions);
    assert_eq!(pool.temps(VID), Vec::<String>::new());

    free_disk(&pool.fs, &filler);
    let dirty = pool
        .engine
        .start(&vol, &ctx())
        .expect("start after freeing space");
    assert_content(&dirty, 1, "the started image");
}
