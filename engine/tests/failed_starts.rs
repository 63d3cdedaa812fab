//! A start that fails or is cancelled before its point of no return changes nothing of
//! the volume's committed state — its committed image, revisions and precache — also
//! where the start replaces or prunes them once it succeeds: a volume with snapshots
//! disabled whose start copies the committed image (it pruned every revision and the
//! precache first), and an origin_snapshot volume, whose start keeps its last session
//! as a revision and replaces its committed image with its source's (it did so before
//! the copy, and without a source image it lost the session). On ext4, where the start's
//! copy is a byte copy that reports progress and can be cancelled.
//!
//! Needs root (loop mounts).

mod common_fs;
mod scenario_support;

use std::sync::Arc;

use common_fs::{FsType, MIB};
use qubes_storage_engine::{
    CancelToken, ErrorKind, OpCtx, ProgressSink, RevisionsToKeep, VolumeRef, VolumeSpec,
};
use scenario_support::{exists, read_at, Fixture};

const SIZE: u64 = 8 * MIB;

/// Cancels its operation as soon as a copy begins.
struct CancelAtCopy(CancelToken);

impl ProgressSink for CancelAtCopy {
    fn copy_started(&self, _operation: &str, _total: u64) {
        self.0.cancel();
    }
}

fn cancelled_at_copy() -> OpCtx {
    let token = CancelToken::new();
    OpCtx::new("Start", Arc::new(CancelAtCopy(token.clone())), token)
}

/// A start of `v` whose copy is cancelled as it begins: `Cancelled`, and the work it
/// left for after its reply is done.
fn start_cancelled_at_its_copy(f: &Fixture, v: &VolumeRef) {
    let err = f
        .engine
        .start(v, &cancelled_at_copy())
        .expect_err("the start's copy was cancelled");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    f.engine.settle();
}

/// The committed image's first bytes, the revisions' ids and whether a precache exists.
fn committed_state(f: &Fixture, v: &VolumeRef) -> (Vec<u8>, Vec<u64>, bool) {
    let paths = f.paths(&v.vid.to_string());
    let ids = f
        .engine
        .volume_info(v)
        .unwrap()
        .revision_details
        .iter()
        .map(|d| d.revision.id)
        .collect();
    (
        read_at(&paths.clean(), 0, 8),
        ids,
        exists(&paths.precache()),
    )
}

#[test]
fn ext4_a_start_with_snapshots_disabled_cancelled_during_its_copy_keeps_the_revisions() {
    let f = Fixture::new(FsType::Ext4);
    let v = f.origin("appvms/work/private", SIZE, 3);
    for data in [&b"session1"[..], b"session2", b"session3"] {
        f.session(&v, 0, data);
    }
    // Switching snapshots off marks the committed image as possibly shared with an
    // export: the next start copies it.
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::new(-1).unwrap())
        .unwrap();
    let before = committed_state(&f, &v);
    assert_eq!(before.1, [1, 2, 3]);
    assert!(before.2, "a precache");
    start_cancelled_at_its_copy(&f, &v);
    assert_eq!(
        committed_state(&f, &v),
        before,
        "the cancelled start changed it"
    );
    f.engine
        .set_revisions_to_keep(&v, RevisionsToKeep::new(3).unwrap())
        .unwrap();
    f.session(&v, 0, b"session4");
    assert_eq!(committed_state(&f, &v).1, [2, 3, 4]);
}

/// An origin_snapshot volume of `source` holding a committed session ("own work"),
/// keeping `keep` revisions.
fn origin_snapshot_with_a_session(f: &Fixture, source: &VolumeRef, keep: i64) -> VolumeRef {
    let v = f.create(
        "appvms/work/root",
        VolumeSpec {
            size: SIZE,
            rw: true,
            snap_on_start: true,
            save_on_stop: true,
            source: Some(source.vid.clone()),
            revisions_to_keep: Some(RevisionsToKeep::new(keep).unwrap()),
            ..Default::default()
        },
    );
    f.session(&v, 0, b"own work");
    assert_eq!(
        read_at(&f.paths("appvms/work/root").clean(), 0, 8),
        b"own work"
    );
    v
}

#[test]
fn ext4_an_origin_snapshot_start_cancelled_during_its_copy_keeps_its_session() {
    for keep in [0, 1] {
        let f = Fixture::new(FsType::Ext4);
        let template = f.origin("vm-templates/t/root", SIZE, 1);
        f.session(&template, 0, b"template");
        let v = origin_snapshot_with_a_session(&f, &template, keep);
        let before = committed_state(&f, &v);
        start_cancelled_at_its_copy(&f, &v);
        assert_eq!(
            committed_state(&f, &v),
            before,
            "keeping {keep}: the cancelled start changed the committed state"
        );
        assert!(!exists(&f.paths("appvms/work/root").dirty()));
    }
}

/// The source of an origin_snapshot volume lost its committed image (deleted by hand,
/// say): the start fails, naming it, and the volume's own session stays.
#[test]
fn an_origin_snapshot_whose_source_has_no_image_keeps_its_session() {
    for t in [FsType::Btrfs, FsType::Xfs, FsType::Ext4] {
        let f = Fixture::new(t);
        let template = f.origin("vm-templates/t/root", SIZE, 1);
        let v = origin_snapshot_with_a_session(&f, &template, 0);
        let source_image = f.paths("vm-templates/t/root").clean();
        std::fs::remove_file(&source_image).unwrap();
        let err = f
            .engine
            .start(&v, &OpCtx::quiet("Start"))
            .expect_err("started without its source's image");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        let named = source_image.display().to_string();
        assert!(
            err.to_string().contains(&named),
            "{err} does not name {named}"
        );
        f.engine.settle();
        assert_eq!(
            read_at(&f.paths("appvms/work/root").clean(), 0, 8),
            b"own work",
            "on {t:?}"
        );
    }
}

/// The tests that make a step fail (feature `failpoints`, which scripts/test turns on).
#[cfg(feature = "failpoints")]
mod failing {
    use super::*;

    /// An origin_snapshot's start that fails after it put its source's image in place
    /// of its own (as it puts the running image in place: a full disk, an I/O error)
    /// gives its own committed image back — by an exchange, since the name is taken by
    /// then — and keeps no revision it added; with revisions_to_keep 0 the session was
    /// deleted.
    #[test]
    fn an_origin_snapshot_start_failing_late_gives_its_session_back() {
        for t in [FsType::Btrfs, FsType::Xfs, FsType::Ext4] {
            for keep in [0, 1] {
                let f = Fixture::new(t);
                let template = f.origin("vm-templates/t/root", SIZE, 1);
                f.session(&template, 0, b"template");
                let v = origin_snapshot_with_a_session(&f, &template, keep);
                let before = committed_state(&f, &v);
                // The first placement (the source's image as the committed one) passes,
                // the second (the running image) fails.
                qubes_storage_engine::failpoint::refuse_on_this_thread("place", 1);
                let err = f
                    .engine
                    .start(&v, &OpCtx::quiet("Start"))
                    .expect_err("the start's placement was refused");
                assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
                f.engine.settle();
                assert_eq!(
                    committed_state(&f, &v).0,
                    before.0,
                    "on {t:?} keeping {keep}: the committed session was replaced"
                );
                f.session(&v, 0, b"again!!!");
                assert_eq!(
                    read_at(&f.paths("appvms/work/root").clean(), 0, 8),
                    b"again!!!"
                );
            }
        }
    }
}
