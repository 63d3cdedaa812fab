//! A clone's outcome is unambiguous (issue 9 item 8, contract fix 14): up to the end of
//! its copy a cancel makes ImportVolume fail with `Cancelled` having changed nothing;
//! from the end of its copy (the point of no return, announced to the progress sink
//! with `committed`) a cancel changes nothing and the clone commits — also when the
//! commit makes a further copy (the precache on ext4). Every failure and every
//! cancellation leaves nothing of the copy behind. A clone needs space for its copy
//! only: the revision of the old image is a hard link. On ext4, where every copy is a
//! byte copy that reports progress, from a source on another filesystem (within one, a
//! clone is a hard link of the source's image and copies nothing).
//!
//! Needs root (loop mounts).

mod common_fs;
mod full_disk_support;

use std::sync::{Arc, Mutex};

use common_fs::{FsType, LoopFs, MIB};
use full_disk_support::{assert_content, ctx, fill_disk, free_disk, Pool};
use qubes_storage_engine::{
    revision, CancelToken, ErrorKind, OpCtx, PoolName, PoolSpec, ProgressSink, RevisionsToKeep,
    Vid, VolumeRef, VolumeSpec,
};

/// 16 MiB of data (1 MiB every 2 MiB) in a 32 MiB image.
const IMAGE_SIZE: u64 = 32 * MIB;
const SOURCE: &str = "appvms/src/private";
const TARGET: &str = "appvms/dst/private";

/// What the sink heard, and when it cancels.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    token: CancelToken,
    cancel_on_advance: bool,
    cancel_on_success: bool,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn push(&self, call: &str) {
        self.calls.lock().unwrap().push(call.to_owned());
    }
}

impl ProgressSink for Recorder {
    fn copy_started(&self, _operation: &str, _total: u64) {
        self.push("started");
    }
    fn copy_advanced(&self, _done: u64) {
        if self.cancel_on_advance {
            self.token.cancel();
        }
    }
    fn copy_finished(&self, success: bool) {
        self.push(&format!("finished({success})"));
        if success && self.cancel_on_success {
            self.token.cancel();
        }
    }
    fn committed(&self) {
        self.push("committed");
    }
}

fn recording_ctx(recorder: &Arc<Recorder>) -> OpCtx {
    OpCtx::new("ImportVolume", recorder.clone(), recorder.token.clone())
}

impl Pool {
    fn origin_with(&self, vid: &str, seed: u64) {
        self.origin_in(&self.vol(vid), seed);
    }

    /// An origin volume `vol` (of any pool of the engine) holding content `seed`.
    fn origin_in(&self, vol: &VolumeRef, seed: u64) {
        let spec = VolumeSpec {
            size: IMAGE_SIZE,
            rw: true,
            save_on_stop: true,
            revisions_to_keep: Some(RevisionsToKeep::new(2).unwrap()),
            ..Default::default()
        };
        self.engine
            .create_volume(vol, spec, &ctx())
            .expect("create");
        let dirty = self.engine.start(vol, &ctx()).expect("start");
        full_disk_support::write_content_at(&dirty, seed, IMAGE_SIZE);
        self.engine.stop(vol, &ctx()).expect("stop");
    }

    /// Temp and import files of `vid`.
    fn leftovers(&self, vid: &str) -> Vec<String> {
        let paths = self.paths(vid);
        let import = paths
            .import()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        common_fs::names_in(paths.dir())
            .into_iter()
            .filter(|n| paths.is_own_temp(n) || *n == import)
            .collect()
    }

    fn revision_ids(&self, vid: &str) -> Vec<u64> {
        let list = revision::list(&self.paths(vid)).unwrap();
        list.iter().map(|r| r.id).collect()
    }
}

/// The target's pool and, on another filesystem, the source's: a clone within one
/// filesystem is a hard link and copies nothing, so the clone's copy is one from the
/// other filesystem. The pool (and its engine) is dropped before the source's mount.
struct CloneSetup {
    pool: Pool,
    source: VolumeRef,
    _source_fs: LoopFs,
}

/// Source (content 7, on an ext4 of its own) and target (content 1, revisions [1]) on
/// an ext4 pool.
fn pool_with_source_and_target(fs_size: u64) -> CloneSetup {
    let pool = Pool::on_fs(
        LoopFs::new(FsType::Ext4, fs_size),
        "p",
        RevisionsToKeep::DEFAULT,
    );
    let source_fs = LoopFs::new(FsType::Ext4, 128 * MIB);
    let spec = PoolSpec {
        name: PoolName::parse("s").unwrap(),
        dir_path: source_fs.path().join("pool"),
        setup_check: false,
        revisions_to_keep: RevisionsToKeep::DEFAULT,
        ephemeral_volatile: false,
    };
    pool.engine.create_pool(spec).expect("the source's pool");
    let source = VolumeRef {
        pool: PoolName::parse("s").unwrap(),
        vid: Vid::parse(SOURCE).unwrap(),
    };
    pool.origin_in(&source, 7);
    pool.origin_with(TARGET, 1);
    CloneSetup {
        pool,
        source,
        _source_fs: source_fs,
    }
}

#[test]
fn ext4_cancel_as_the_clone_copy_ends_commits_the_clone() {
    let CloneSetup { pool, source, .. } = &pool_with_source_and_target(256 * MIB);
    let recorder = Arc::new(Recorder {
        cancel_on_success: true,
        ..Default::default()
    });
    let target = pool.vol(TARGET);
    pool.engine
        .import_volume(&target, source, &recording_ctx(&recorder))
        .expect("a cancel after the copy changes nothing: the clone commits");
    let calls = recorder.calls();
    assert_eq!(
        &calls[..3],
        ["started", "finished(true)", "committed"],
        "{calls:?}"
    );
    let paths = pool.paths(TARGET);
    assert_content(
        &paths.clean(),
        7,
        IMAGE_SIZE,
        IMAGE_SIZE,
        "the cloned image",
    );
    assert_eq!(
        pool.revision_ids(TARGET),
        [1, 2],
        "the old image kept as a revision"
    );
    assert_eq!(pool.leftovers(TARGET), Vec::<String>::new());
}

#[test]
fn ext4_cancel_during_the_clone_copy_fails_cancelled_and_changes_nothing() {
    let CloneSetup { pool, source, .. } = &pool_with_source_and_target(256 * MIB);
    let recorder = Arc::new(Recorder {
        cancel_on_advance: true,
        ..Default::default()
    });
    let target = pool.vol(TARGET);
    let err = pool
        .engine
        .import_volume(&target, source, &recording_ctx(&recorder))
        .expect_err("cancelled during the copy");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(!recorder.calls().contains(&"committed".to_owned()));
    let paths = pool.paths(TARGET);
    assert_content(&paths.clean(), 1, IMAGE_SIZE, IMAGE_SIZE, "the old image");
    assert_eq!(pool.revision_ids(TARGET), [1]);
    assert_eq!(pool.leftovers(TARGET), Vec::<String>::new());
}

/// Space for the copy of the source and half an image more: the clone commits, since
/// its revision of the target's old image is a hard link that needs no space (only
/// the precache, a second byte copy made for the next start, does not fit, which is
/// not a failure).
#[test]
fn ext4_clone_needs_space_for_its_copy_only() {
    let CloneSetup { pool, source, .. } = &pool_with_source_and_target(256 * MIB);
    let filler = fill_disk(&pool.fs);
    let free = 16 * MIB + 8 * MIB; // the copy's 16 MiB and half an image
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - free).unwrap();
    file.sync_all().unwrap();
    drop(file);
    rustix::fs::syncfs(std::fs::File::open(pool.fs.path()).unwrap()).unwrap();
    let target = pool.vol(TARGET);
    let recorder = Arc::new(Recorder::default());
    pool.engine
        .import_volume(&target, source, &recording_ctx(&recorder))
        .expect("the clone fits");
    assert!(
        recorder
            .calls()
            .starts_with(&["started".into(), "finished(true)".into()]),
        "the copy: {:?}",
        recorder.calls()
    );
    assert_eq!(pool.leftovers(TARGET), Vec::<String>::new());
    let paths = pool.paths(TARGET);
    assert_content(
        &paths.clean(),
        7,
        IMAGE_SIZE,
        IMAGE_SIZE,
        "the cloned image",
    );
    let revisions = revision::list(&paths).unwrap();
    let newest = revisions.last().expect("the old image as a revision");
    assert_content(
        &paths.revision(newest.id, newest.timestamp),
        1,
        IMAGE_SIZE,
        IMAGE_SIZE,
        "the old image",
    );
    free_disk(&pool.fs, &filler);
}
