//! Descriptions and pins of revisions on real btrfs, XFS and ext4 (issue 13): pins
//! survive pruning and restarts and do not count against revisions_to_keep, a revert
//! to a pinned revision keeps it, descriptions survive restarts and adoption (and
//! adoption invents none), a stop can describe and pin the revision it keeps, notes of
//! revisions that are gone are dropped, and revision timestamps carry the image's
//! nanoseconds.

mod common_fs;
mod scenario_support;

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common_fs::{FsType, MIB};
use qubes_storage_engine::layout::revision_file_name;
use qubes_storage_engine::{
    Description, ErrorKind, EventKind, NoteChange, OpCtx, Revision, RevisionDetails, VolumeRef,
    VolumeSpec,
};
use scenario_support::{on_every_fs, read_at, write_at, Fixture};

impl Fixture {
    fn details(&self, v: &VolumeRef) -> Vec<RevisionDetails> {
        self.engine.volume_info(v).unwrap().revision_details
    }

    fn ids(&self, v: &VolumeRef) -> Vec<u64> {
        self.details(v).iter().map(|d| d.revision.id).collect()
    }

    fn set(&self, v: &VolumeRef, id: Option<u64>, change: NoteChange) -> Revision {
        self.engine
            .set_revision_details(v, id, &change, &OpCtx::quiet("SetRevisionDetails"))
            .unwrap()
    }

    fn revision_path(&self, v: &VolumeRef, r: Revision) -> std::path::PathBuf {
        let name = revision_file_name(v.vid.name(), r.id, r.timestamp);
        self.dir.join(v.vid.vm_dir()).join(name)
    }
}

fn describe(text: &str) -> NoteChange {
    NoteChange {
        description: Some(Description::parse(text).unwrap()),
        pinned: None,
    }
}

fn pin(pinned: bool) -> NoteChange {
    NoteChange {
        description: None,
        pinned: Some(pinned),
    }
}

on_every_fs!(
    pinned_revisions_survive_pruning_and_do_not_count,
    pins_and_descriptions_survive_a_restart,
    adoption_invents_no_details_and_details_set_afterwards_survive_a_restart,
    details_of_pruned_and_consumed_revisions_are_dropped,
    a_stop_describes_and_pins_the_revision_it_keeps,
    a_stop_that_keeps_no_revision_refuses_details_and_changes_nothing,
    revert_to_a_pinned_revision_keeps_it,
    a_revision_timestamp_has_its_image_mtime_to_the_nanosecond,
    bad_details_are_refused_and_change_nothing,
    a_pinned_revision_survives_a_start_with_snapshots_disabled,
    pins_survive_an_operation_that_finds_the_vm_directory_missing,
);

/// The tests that make a step fail (feature `failpoints`, which scripts/test turns on).
#[cfg(feature = "failpoints")]
mod failing {
    use super::*;

    on_every_fs!(
        a_stop_retried_after_a_failure_keeps_its_revision_once,
        a_stop_retried_after_a_failure_pins_the_revision_the_first_attempt_kept,
        a_revert_to_the_newest_retried_after_a_failure_reverts_to_it,
    );

    /// Revisions 1 = empty, 2 = "first1", 3 = "second" (keep 3), committed "third3";
    /// a revert to the newest revision (3) fails as it puts 3 in place, after it kept
    /// the committed image as revision 4 (a revert prunes nothing). The retried revert to
    /// "the newest" goes to 3 — revision 4 is the committed image itself — and does
    /// not report success while changing nothing (it did).
    fn a_revert_to_the_newest_retried_after_a_failure_reverts_to_it(t: FsType) {
        let f = Fixture::new(t);
        let v = f.origin("appvms/work/private", 8 * MIB, 3);
        for data in [&b"first1"[..], b"second", b"third3"] {
            f.session(&v, 0, data);
        }
        assert_eq!(f.ids(&v), [1, 2, 3]);
        qubes_storage_engine::failpoint::refuse_next_on_this_thread("rename");
        let failed = f.engine.revert(&v, None, &OpCtx::quiet("Revert"));
        assert!(failed.is_err(), "{failed:?}");
        f.engine.settle();
        assert_eq!(f.ids(&v), [1, 2, 3, 4], "the failed attempt kept the image");
        let ctx = OpCtx::quiet("Revert");
        f.engine.revert(&v, None, &ctx).expect("the retry");
        f.engine.settle();
        assert!(
            ctx.take_events()
                .iter()
                .any(|e| e.kind == EventKind::Reverted { id: 3 }),
            "reverted to 3"
        );
        let clean = f.dir.join("appvms/work/private.img");
        assert_eq!(read_at(&clean, 0, 6), b"second");
        assert_eq!(
            f.ids(&v),
            [1, 2, 4],
            "3 consumed, the image of before kept as 4"
        );
        let kept = f.details(&v).pop().unwrap();
        assert_eq!(
            read_at(&f.revision_path(&v, kept.revision), 0, 6),
            b"third3"
        );
    }

    /// Revisions 2 = "first1", 3 = "second" (keep 2), committed "third3", started with
    /// "fourth" written; then a stop that fails as it puts the running image in place,
    /// after it linked the committed image as revision 4 and pruned 2 for it (2 is given
    /// its name back when the stop fails).
    fn a_failed_stop(f: &Fixture) -> VolumeRef {
        let v = f.origin("appvms/work/private", 8 * MIB, 2);
        for data in [&b"first1"[..], b"second", b"third3"] {
            f.session(&v, 0, data);
        }
        assert_eq!(f.ids(&v), [2, 3]);
        let dirty = f.start(&v);
        write_at(&dirty, 0, b"fourth");
        qubes_storage_engine::failpoint::refuse_next_on_this_thread("rename");
        let failed = f.engine.stop(&v, &OpCtx::quiet("Stop"));
        assert!(failed.is_err(), "{failed:?}");
        f.engine.settle();
        assert_eq!(
            f.ids(&v),
            [2, 3, 4],
            "the failed attempt kept its revision, and gave back the one it pruned"
        );
        v
    }

    /// The retry finds the committed image already kept as revision 4 and adds no
    /// duplicate of it, so revision 3 ("second") is not pruned for one.
    fn a_stop_retried_after_a_failure_keeps_its_revision_once(t: FsType) {
        let f = Fixture::new(t);
        let v = a_failed_stop(&f);
        let ctx = OpCtx::quiet("Stop");
        f.engine.stop(&v, &ctx).expect("the retry");
        f.engine.settle();
        let added = ctx
            .take_events()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::RevisionAdded { .. }))
            .count();
        assert_eq!(added, 0, "no revision is added by the retry");
        let contents: Vec<Vec<u8>> = f
            .details(&v)
            .iter()
            .map(|d| read_at(&f.revision_path(&v, d.revision), 0, 6))
            .collect();
        assert_eq!(
            contents,
            [b"second".to_vec(), b"third3".to_vec()],
            "revisions 3 and 4"
        );
        let clean = f.dir.join("appvms/work/private.img");
        assert_eq!(read_at(&clean, 0, 6), b"fourth");
    }

    /// A retried stop that pins the revision it keeps pins revision 4, the one the
    /// failed attempt linked (it is the committed image of before the stop).
    fn a_stop_retried_after_a_failure_pins_the_revision_the_first_attempt_kept(t: FsType) {
        let f = Fixture::new(t);
        let v = a_failed_stop(&f);
        let ctx = OpCtx::quiet("Stop");
        f.engine
            .stop_keeping(&v, &pin(true), &ctx)
            .expect("the retry");
        f.engine.settle();
        let kept = f.details(&v).pop().unwrap();
        assert_eq!((kept.revision.id, kept.pinned), (4, true));
        assert_eq!(
            read_at(&f.revision_path(&v, kept.revision), 0, 6),
            b"third3"
        );
        assert!(
            ctx.take_events().into_iter().any(|e| e.kind
                == EventKind::RevisionDetailsSet {
                    id: 4,
                    description: String::new(),
                    pinned: true,
                }),
            "the pin is announced"
        );
        f.session(&v, 0, b"fifth5");
        assert_eq!(f.ids(&v), [3, 4, 5], "4 is pinned and does not count");
    }
}

fn pinned_revisions_survive_pruning_and_do_not_count(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 1);
    f.session(&v, 0, b"first");
    f.session(&v, 0, b"second");
    assert_eq!(f.ids(&v), [2]);
    f.set(&v, Some(2), pin(true));
    let pinned = f.details(&v)[0].revision;
    for round in 0..3u8 {
        f.session(&v, 0, &[b'a' + round; 6]);
    }
    // Revision 2 is pinned; of the others, revisions_to_keep (1) newest remain.
    assert_eq!(f.ids(&v), [2, 5]);
    assert_eq!(read_at(&f.revision_path(&v, pinned), 0, 5), b"first");
    let kept = &f.details(&v)[0];
    assert!(kept.pinned);
    f.set(&v, Some(2), pin(false));
    f.session(&v, 0, b"unpinned");
    assert_eq!(f.ids(&v), [6], "an unpinned revision counts again");
}

fn pins_and_descriptions_survive_a_restart(t: FsType) {
    let mut f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 2);
    f.session(&v, 0, b"one");
    f.session(&v, 0, b"two");
    f.set(&v, Some(1), describe("before the upgrade"));
    f.set(&v, Some(2), pin(true));
    let before = f.details(&v);
    f.restart();
    assert_eq!(f.details(&v), before);
    assert_eq!(before[0].description, "before the upgrade");
    assert!(before[1].pinned && !before[0].pinned);
}

fn adoption_invents_no_details_and_details_set_afterwards_survive_a_restart(t: FsType) {
    let mut f = Fixture::new(t);
    // A Qubes pool's files, made by another driver: a committed image, two revisions
    // whose mtimes are when they were made (not their names' timestamps).
    let vm = f.dir.join("appvms/old");
    fs::create_dir(&vm).unwrap();
    for (name, data) in [
        ("private.img", b"now".as_slice()),
        (&revision_file_name("private", 3, 1_600_000_000), b"three"),
        (&revision_file_name("private", 4, 1_600_000_100), b"four"),
    ] {
        let path = vm.join(name);
        File::create(&path).unwrap().set_len(MIB).unwrap();
        write_at(&path, 0, data);
    }
    let v = f.vref("appvms/old/private");
    let spec = VolumeSpec {
        adopt: true,
        ..scenario_support::origin_spec(MIB, 5)
    };
    f.create_in(&v, spec);
    let adopted = f.details(&v);
    assert_eq!(adopted.len(), 2);
    for d in &adopted {
        assert_eq!((d.description.as_str(), d.pinned), ("", false), "{d:?}");
        assert_eq!(d.nanos, 0, "their mtime is not their image's");
    }
    f.set(&v, Some(3), describe("from the old driver"));
    f.set(&v, None, pin(true));
    f.restart();
    let details = f.details(&v);
    assert_eq!(details[0].description, "from the old driver");
    assert!(details[1].pinned);
    assert_eq!(
        fs::read_dir(&vm).unwrap().count(),
        3,
        "the files keep their names; nothing is added"
    );
}

fn details_of_pruned_and_consumed_revisions_are_dropped(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 2);
    f.session(&v, 0, b"one");
    f.session(&v, 0, b"two");
    f.set(&v, Some(1), describe("soon pruned"));
    f.set(&v, Some(2), describe("soon consumed"));
    f.session(&v, 0, b"three");
    assert_eq!(f.ids(&v), [2, 3]);
    let notes = || f.engine.volume_info(&v).unwrap().config.revision_notes;
    assert_eq!(notes().iter().map(|n| n.id).collect::<Vec<_>>(), [2]);
    f.engine
        .revert(&v, Some(2), &OpCtx::quiet("Revert"))
        .unwrap();
    assert!(notes().is_empty(), "{:?}", notes());
    assert!(f.details(&v).iter().all(|d| d.description.is_empty()));
}

fn a_stop_describes_and_pins_the_revision_it_keeps(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 1);
    f.session(&v, 0, b"installed");
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"upgraded!");
    let change = NoteChange {
        description: Some(Description::parse("before the upgrade").unwrap()),
        pinned: Some(true),
    };
    let ctx = OpCtx::quiet("Stop");
    f.engine.stop_keeping(&v, &change, &ctx).unwrap();
    let events: Vec<EventKind> = ctx.take_events().into_iter().map(|e| e.kind).collect();
    let added = events
        .iter()
        .position(|e| matches!(e, EventKind::RevisionAdded { id: 2, .. }))
        .expect("RevisionAdded");
    let changed = events
        .iter()
        .position(|e| {
            *e == EventKind::RevisionDetailsSet {
                id: 2,
                description: "before the upgrade".into(),
                pinned: true,
            }
        })
        .expect("RevisionDetailsSet");
    assert!(added < changed, "{events:?}");
    let kept = f.details(&v).pop().unwrap();
    assert_eq!((kept.revision.id, kept.pinned), (2, true));
    assert_eq!(
        read_at(&f.revision_path(&v, kept.revision), 0, 9),
        b"installed"
    );
    f.session(&v, 0, b"more");
    assert_eq!(f.ids(&v), [2, 3], "the described revision is pinned");
}

fn a_stop_that_keeps_no_revision_refuses_details_and_changes_nothing(t: FsType) {
    let f = Fixture::new(t);
    let ctx = || OpCtx::quiet("Stop");
    let change = describe("x");
    let stopped = f.origin("appvms/a/private", MIB, 1);
    let err = f
        .engine
        .stop_keeping(&stopped, &change, &ctx())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("not started"), "{err}");
    let none_kept = f.origin("appvms/b/private", MIB, 0);
    f.start(&none_kept);
    let err = f
        .engine
        .stop_keeping(&none_kept, &change, &ctx())
        .unwrap_err();
    assert!(err.to_string().contains("revisions_to_keep 0"), "{err}");
    assert!(f.engine.volume_info(&none_kept).unwrap().started);
    let volatile = f.create(
        "appvms/c/volatile",
        VolumeSpec {
            size: MIB,
            rw: true,
            ..Default::default()
        },
    );
    f.start(&volatile);
    let err = f
        .engine
        .stop_keeping(&volatile, &change, &ctx())
        .unwrap_err();
    assert!(err.to_string().contains("does not save on stop"), "{err}");
    assert!(f.engine.volume_info(&volatile).unwrap().started);
}

fn revert_to_a_pinned_revision_keeps_it(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 1);
    f.session(&v, 0, b"good");
    f.session(&v, 0, b"bad!");
    f.set(&v, Some(2), pin(true));
    let good = f.details(&v)[0].revision;
    f.engine
        .revert(&v, Some(2), &OpCtx::quiet("Revert"))
        .unwrap();
    let clean = f.dir.join("appvms/work/private.img");
    assert_eq!(read_at(&clean, 0, 4), b"good");
    assert_eq!(
        f.ids(&v),
        [2, 3],
        "kept, and the state before is revision 3"
    );
    assert!(f.details(&v)[0].pinned);
    assert_eq!(read_at(&f.revision_path(&v, good), 0, 4), b"good");
    // The revert can be reverted, and the pinned revision can be used again.
    f.engine
        .revert(&v, Some(3), &OpCtx::quiet("Revert"))
        .unwrap();
    assert_eq!(read_at(&clean, 0, 4), b"bad!");
    f.engine
        .revert(&v, Some(2), &OpCtx::quiet("Revert"))
        .unwrap();
    assert_eq!(read_at(&clean, 0, 4), b"good");
    assert_eq!(f.ids(&v), [2, 4, 5], "a revert prunes nothing");
}

fn a_revision_timestamp_has_its_image_mtime_to_the_nanosecond(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 1);
    let dirty = f.start(&v);
    write_at(&dirty, 0, b"data");
    let written = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&dirty)
        .unwrap()
        .set_modified(written)
        .unwrap();
    f.stop(&v);
    f.session(&v, 0, b"next");
    let kept = f.details(&v).pop().unwrap();
    assert_eq!(kept.revision.timestamp, 1_700_000_000);
    assert_eq!(kept.nanos, 123_456_789);
    let mtime = fs::metadata(f.revision_path(&v, kept.revision))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, written);
    assert!(SystemTime::now() > written);
}

fn bad_details_are_refused_and_change_nothing(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 1);
    let ctx = OpCtx::quiet("SetRevisionDetails");
    let err = f
        .engine
        .set_revision_details(&v, None, &pin(true), &ctx)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("has no revisions"), "{err}");
    f.session(&v, 0, b"x");
    let err = f
        .engine
        .set_revision_details(&v, Some(7), &pin(true), &ctx)
        .unwrap_err();
    assert!(err.to_string().contains("has no revision 7"), "{err}");
    let err = f
        .engine
        .set_revision_details(&v, Some(1), &NoteChange::default(), &ctx)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(f
        .engine
        .volume_info(&v)
        .unwrap()
        .config
        .revision_notes
        .is_empty());
    assert!(ctx.take_events().is_empty());
    // Setting what is already there changes nothing and announces nothing.
    f.engine
        .set_revision_details(&v, Some(1), &pin(false), &ctx)
        .unwrap();
    assert!(ctx.take_events().is_empty());
}

fn a_pinned_revision_survives_a_start_with_snapshots_disabled(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", MIB, 2);
    f.session(&v, 0, b"one");
    f.session(&v, 0, b"two");
    f.set(&v, Some(1), pin(true));
    f.engine
        .set_revisions_to_keep(&v, qubes_storage_engine::RevisionsToKeep::new(-1).unwrap())
        .unwrap();
    f.start(&v);
    assert_eq!(
        f.ids(&v),
        [1],
        "the unpinned revision is gone, the pinned one stays"
    );
    f.stop(&v);
    assert!(Path::new(&f.revision_path(&v, f.details(&v)[0].revision)).exists());
}

/// A pool whose disk is not mounted at the moment (its directory is there, empty): an
/// operation finds no VM directory and fails — and must not take that for "every
/// revision is gone" and drop the pins, which would let the next stop prune the pinned
/// revision once the disk is back.
fn pins_survive_an_operation_that_finds_the_vm_directory_missing(t: FsType) {
    let f = Fixture::new(t);
    let v = f.origin("appvms/work/private", 8 * MIB, 1);
    f.session(&v, 0, b"first");
    f.session(&v, 0, b"second");
    f.set(&v, Some(2), pin(true));
    let (class, away) = (f.dir.join("appvms"), f.dir.join("appvms-away"));
    fs::rename(&class, &away).unwrap();
    let start = f.engine.start(&v, &OpCtx::quiet("Start"));
    fs::rename(&away, &class).unwrap();
    assert!(start.is_err(), "a start without its files: {start:?}");
    assert!(f.details(&v)[0].pinned, "{:?}", f.details(&v));
    f.session(&v, 0, b"third");
    assert_eq!(f.ids(&v), [2, 3], "the pinned revision was pruned");
}
