//! Full-disk tests: on a small loop-mounted filesystem filled to the last block, an
//! operation that needs space for data fails with
//! [`ErrorKind::NoSpace`](qubes_storage_engine::ErrorKind::NoSpace) and a message
//! naming the volume, and leaves everything committed as it was — the clean image,
//! the revisions, the dirty image of a started volume (so the commit can be retried),
//! the source of a clone — with no temp or import file behind. After the space is
//! freed, the same operation succeeds.
//!
//! Covered: resize of a halted volume on ext4 (a new inode while a reader holds the
//! image open; in place, needing no space, once nothing does), start of a snapshot volume on ext4
//! (copy of the source), and import_volume from a pool on another filesystem into a
//! full ext4 and a full btrfs pool (byte copy across filesystems). ext4 pools use
//! `setup_check = false`. And the other way round: a stop (commit) on a full disk
//! succeeds, because a commit writes no data (its revision is a hard link).
//!
//! The pool, the filler and the content model are shared with `full_disk_more.rs`
//! (`full_disk_support`).
//!
//! Needs root (loop mounts).

mod common_fs;
mod full_disk_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common_fs::{FsType, LoopFs, MIB};
use full_disk_support::{assert_no_space, ctx, fill_disk, free_disk, write_content_at, Pool};
use qubes_storage_engine::{revision, Engine, PoolSpec, RevisionsToKeep, Vid, VolumeSpec};

/// 16 ranges of 1 MiB, 2 MiB apart: 16 MiB of data in a 32 MiB image.
const IMAGE_SIZE: u64 = 32 * MIB;
const VID: &str = "appvms/vm1/private";
const SNAPSHOT_VID: &str = "appvms/vm1/root";
const FS_SIZE: u64 = 128 * MIB;

/// Overwrite the data ranges of an image with content `seed`.
fn write_content(path: &Path, seed: u64) {
    write_content_at(path, seed, IMAGE_SIZE);
}

#[track_caller]
fn assert_content(path: &Path, seed: u64, size: u64, what: &str) {
    full_disk_support::assert_content(path, seed, IMAGE_SIZE, size, what);
}

/// The helpers of these tests beside the shared ones.
impl Pool {
    fn new(fs_type: FsType, name: &str, revisions_to_keep: i64) -> Pool {
        let fs = LoopFs::new(fs_type, FS_SIZE);
        Pool::on_fs(fs, name, RevisionsToKeep::new(revisions_to_keep).unwrap())
    }

    fn create(&self, vid: &str, spec: VolumeSpec) {
        self.engine
            .create_volume(&self.vol(vid), spec, &ctx())
            .expect("create volume");
    }

    /// An origin volume whose clean image holds content `seed` (revision 1 = empty).
    fn origin_with_content(&self, vid: &str, seed: u64, revisions_to_keep: Option<i64>) {
        let revisions_to_keep = revisions_to_keep.map(|n| RevisionsToKeep::new(n).unwrap());
        self.create(
            vid,
            VolumeSpec {
                size: IMAGE_SIZE,
                rw: true,
                save_on_stop: true,
                revisions_to_keep,
                ..Default::default()
            },
        );
        let dirty = self.engine.start(&self.vol(vid), &ctx()).expect("start");
        write_content(&dirty, seed);
        self.engine.stop(&self.vol(vid), &ctx()).expect("stop");
        assert_content(
            &self.paths(vid).clean(),
            seed,
            IMAGE_SIZE,
            "committed content",
        );
    }

    /// `(id, inode, timestamp)` of every revision file: what must survive a failure.
    fn revisions(&self, vid: &str) -> Vec<(u64, u64, i64)> {
        let paths = self.paths(vid);
        let list = revision::list(&paths).expect("list revisions");
        list.iter()
            .map(|r| {
                (
                    r.id,
                    paths.revision(r.id, r.timestamp).metadata().unwrap().ino(),
                    r.timestamp,
                )
            })
            .collect()
    }

    /// Temp and import files of `vid`.
    fn leftovers(&self, vid: &str) -> Vec<String> {
        let paths = self.paths(vid);
        let Ok(entries) = std::fs::read_dir(paths.dir()) else {
            return Vec::new();
        };
        let import = paths.import().file_name().unwrap().to_owned();
        entries
            .map(|e| e.unwrap().file_name())
            .filter(|n| paths.is_own_temp(&n.to_string_lossy()) || *n == import)
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }
}

/// A commit writes no data: the old image becomes a revision by a hard link and the
/// session is renamed into place, so a stop on a full disk commits; only the precache
/// (a byte copy on ext4, made for the next start's speed) cannot be made, which costs
/// the next start a copy.
#[test]
fn ext4_stop_on_full_disk_commits_without_writing_data() {
    let pool = Pool::new(FsType::Ext4, "p", 1);
    let vol = pool.vol(VID);
    let paths = pool.paths(VID);
    pool.origin_with_content(VID, 1, None);
    let clean_ino = paths.clean().metadata().unwrap().ino();
    let dirty = pool.engine.start(&vol, &ctx()).expect("start");
    write_content(&dirty, 2);
    let filler = fill_disk(&pool.fs);

    pool.engine
        .stop(&vol, &ctx())
        .expect("a stop on a full disk commits");
    pool.engine.settle();
    assert_content(&paths.clean(), 2, IMAGE_SIZE, "clean after the stop");
    assert!(!dirty.exists());
    let revisions = pool.revisions(VID);
    let (id, ino, timestamp) = *revisions.last().expect("a revision");
    assert_eq!(revisions.len(), 1, "revisions_to_keep 1: {revisions:?}");
    assert_eq!(ino, clean_ino, "the revision is the old image's inode");
    assert_content(
        &paths.revision(id, timestamp),
        1,
        IMAGE_SIZE,
        "the old image as revision",
    );
    assert!(!paths.precache().exists(), "no space for the precache");
    assert_eq!(pool.leftovers(VID), Vec::<String>::new());

    free_disk(&pool.fs, &filler);
    let dirty = pool.engine.start(&vol, &ctx()).expect("start after");
    assert_content(&dirty, 2, IMAGE_SIZE, "the next session starts from it");
}

#[test]
fn ext4_resize_of_halted_volume_on_full_disk_copies_only_for_a_reader_and_keeps_the_image() {
    // Snapshots disabled: no precache whose removal would free the space needed.
    let pool = Pool::new(FsType::Ext4, "p", 1);
    let vol = pool.vol(VID);
    let clean = pool.paths(VID).clean();
    // From the start (whose session's witness a child forked by another test could
    // hold until its exec) to the probe of who holds the image.
    let no_children = common_fs::no_children();
    pool.origin_with_content(VID, 1, Some(-1));
    let inode = clean.metadata().unwrap().ino();
    let filler = fill_disk(&pool.fs);

    // A reader of the committed image (a backup, a loop device) keeps its image: the
    // resize needs a copy, which has no room.
    let reader = std::fs::File::open(&clean).unwrap();
    assert_no_space(
        pool.engine.resize(&vol, 2 * IMAGE_SIZE, false, &ctx()),
        &vol,
    );
    assert_content(&clean, 1, IMAGE_SIZE, "clean after the failed resize");
    assert_eq!(
        clean.metadata().unwrap().ino(),
        inode,
        "the same committed inode"
    );
    let info = pool.engine.volume_info(&vol).unwrap();
    assert_eq!(
        (info.size, info.config.size),
        (IMAGE_SIZE, IMAGE_SIZE),
        "sizes after the failed resize"
    );
    assert_eq!(pool.leftovers(VID), Vec::<String>::new());

    // Without the reader the image grows in place: no data is written, so it fits.
    drop(reader);
    pool.engine
        .resize(&vol, 2 * IMAGE_SIZE, false, &ctx())
        .expect("resize in place on the full disk");
    drop(no_children);
    assert_eq!(clean.metadata().unwrap().ino(), inode, "grown in place");
    assert_content(&clean, 1, 2 * IMAGE_SIZE, "clean after the resize in place");
    assert_eq!(
        pool.engine.volume_info(&vol).unwrap().config.size,
        2 * IMAGE_SIZE
    );
    assert_eq!(pool.leftovers(VID), Vec::<String>::new());
    free_disk(&pool.fs, &filler);
}

#[test]
fn ext4_snapshot_start_on_full_disk_is_no_space_and_leaves_it_stopped() {
    let pool = Pool::new(FsType::Ext4, "p", 1);
    pool.origin_with_content(VID, 1, None);
    let source_revisions = pool.revisions(VID);
    let snapshot = pool.vol(SNAPSHOT_VID);
    let source = Some(Vid::parse(VID).unwrap());
    pool.create(
        SNAPSHOT_VID,
        VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            snap_on_start: true,
            source,
            ..Default::default()
        },
    );
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.engine.start(&snapshot, &ctx()), &snapshot);
    assert!(
        !pool.engine.volume_info(&snapshot).unwrap().started,
        "not started"
    );
    assert!(!pool.paths(SNAPSHOT_VID).dirty().exists());
    assert_content(
        &pool.paths(VID).clean(),
        1,
        IMAGE_SIZE,
        "the source's image",
    );
    assert_eq!(pool.revisions(VID), source_revisions);
    assert_eq!(pool.leftovers(SNAPSHOT_VID), Vec::<String>::new());

    free_disk(&pool.fs, &filler);
    let dirty = pool
        .engine
        .start(&snapshot, &ctx())
        .expect("start after freeing space");
    assert_content(&dirty, 1, IMAGE_SIZE, "the snapshot's image");
    pool.engine.stop(&snapshot, &ctx()).expect("stop snapshot");
}

/// Clone a volume of a pool on `source_fs` into an origin of a full `dest_fs` pool.
fn import_from_other_pool_on_full_disk(dest_fs: FsType, source_fs: FsType) {
    let source_pool = Pool::new(source_fs, "src", 1);
    source_pool.origin_with_content(VID, 7, None);
    let source = source_pool.vol(VID);
    let pool = Pool::new(dest_fs, "p", 2);
    pool.origin_with_content(VID, 1, None);
    // The engine knows both pools only when one state directory holds them: register
    // the source pool's directory in the destination's engine too.
    register_pool(&pool.engine, &source_pool);
    let vol = pool.vol(VID);
    let revisions_before = pool.revisions(VID);
    let filler = fill_disk(&pool.fs);

    assert_no_space(pool.engine.import_volume(&vol, &source, &ctx()), &vol);
    assert_content(
        &pool.paths(VID).clean(),
        1,
        IMAGE_SIZE,
        "clean after the failed import",
    );
    assert_eq!(
        pool.revisions(VID),
        revisions_before,
        "revisions after the failed import"
    );
    assert_eq!(pool.leftovers(VID), Vec::<String>::new());
    assert_content(&source_pool.paths(VID).clean(), 7, IMAGE_SIZE, "the source");

    free_disk(&pool.fs, &filler);
    pool.engine
        .import_volume(&vol, &source, &ctx())
        .expect("import after freeing space");
    assert_content(
        &pool.paths(VID).clean(),
        7,
        IMAGE_SIZE,
        "clean after the retried import",
    );
    assert_eq!(pool.leftovers(VID), Vec::<String>::new());
}

/// Adopt the source pool's directory and volume into `engine` (files stay as they are).
fn register_pool(engine: &Engine, source: &Pool) {
    let spec = PoolSpec {
        name: source.name.clone(),
        dir_path: source.dir.clone(),
        setup_check: false,
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    };
    engine.create_pool(spec).expect("register the source pool");
    let volume = VolumeSpec {
        size: IMAGE_SIZE,
        rw: true,
        save_on_stop: true,
        adopt: true,
        ..Default::default()
    };
    engine
        .create_volume(&source.vol(VID), volume, &ctx())
        .expect("adopt the source volume");
}

#[test]
fn ext4_import_volume_from_other_pool_on_full_disk_is_no_space_and_keeps_the_image() {
    import_from_other_pool_on_full_disk(FsType::Ext4, FsType::Btrfs);
}

#[test]
fn btrfs_import_volume_from_other_pool_on_full_disk_is_no_space_and_keeps_the_image() {
    import_from_other_pool_on_full_disk(FsType::Btrfs, FsType::Ext4);
}
