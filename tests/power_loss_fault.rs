//! The power-loss replay can fail: with one fsync site of the engine deliberately
//! skipped (the test-only feature `durability-faults`, `QSD_SKIP_FSYNC=<site>` in the
//! recorded daemon's environment), it finds crash states that lost an acknowledged
//! change, or a registered volume that lost files. Without these the suite would prove
//! nothing.
//!
//! Measured which skipped sites the replay notices (every boundary, two subsets each):
//! the fdatasync of the state journal's append (`journal-append`) loses an acknowledged
//! CreateVolume on all three file systems (its record is the last change and nothing
//! later makes it durable); the state directory's fsync after a new pool's snapshot is
//! renamed into place (`snapshot-dir`, the registration of CreatePool) loses an
//! acknowledged CreatePool on btrfs and ext4; on btrfs a Remove whose unregistration
//! was not made durable leaves a registered volume whose revisions were deleted, an
//! import committed as a private copy (its file still held) whose staged copy was not
//! fsynced (`replace-file`) is torn after its acknowledgement,
//! and so is an import whose file, committed itself once nobody held it, was renamed
//! without its fsync (`commit-file`); on btrfs and ext4 a stop of a session the VM did
//! not flush, whose running image was renamed without its fsync (`commit-file`),
//! acknowledges a torn committed image, and so does one on XFS whose running image was
//! renamed without its writeback waited for (the same site: on XFS the directory's
//! fsync commits the content with the name once its writes completed); on
//! btrfs and XFS a resize in place whose image was not fsynced after its truncate
//! (`truncate-file`) loses the acknowledged size (on ext4 the precache's copy, fsynced
//! later in the same operation, commits the journal that holds it); on ext4 a start
//! from a precache that is a byte copy, made without its barrier as rule 8 allows only
//! for a marked reflink on btrfs or XFS (`start-dir`), lets the VM's flushed writes
//! land in the precache's blocks before its rename, and a start after the power cut
//! would hand out data that was never committed; on all three the stop of a VM's root
//! and volatile volume whose images carry no boot mark, made without its barrier as
//! rule 9 allows only for marked ones (`stop-dir`), is undone by a power cut after its
//! acknowledgement: the volumes come back started (the case stops those two alone:
//! stopped with the VM's private volume, its directory fsync may commit theirs). A
//! skipped fsync that a later fsync of the same operation covers (ext4 and XFS commit
//! their whole journal on any fsync) is, rightly, not reported.
//!
//! Needs root and `cargo test --all-features`.

#![cfg(feature = "durability-faults")]

mod common;
mod power_loss_support;

use common::FsType;
use power_loss_support::report::CaseReport;
use power_loss_support::{run_case, Op, Setup};
use qubes_storaged_powercut::{Phase, Plan};

fn replay_with_skipped_fsync(op: Op, fs: FsType, site: &'static str) -> CaseReport {
    common::common_fs::require_root();
    let setup = Setup {
        plan: Plan {
            sample: None,
            subsets: 2,
            seed: 10,
        },
        skip_fsync: Some(site),
    };
    let report = run_case(op, fs, setup);
    eprintln!(
        "with {site} skipped:\n{}\n{}",
        power_loss_support::report::HEADER,
        report.row()
    );
    report
}

#[track_caller]
fn assert_acknowledged_change_lost(report: &CaseReport) {
    let lost = report
        .failures
        .get(&Phase::Acknowledged)
        .copied()
        .unwrap_or(0);
    assert!(
        lost > 0,
        "{} on {}: the replay found no acknowledged state without the change: {:?}\n{}",
        report.op.name(),
        report.fs.name(),
        report.failures,
        report.problems.join("\n")
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("the operation was acknowledged") || p.contains("(Acknowledged)")),
        "{}",
        report.problems.join("\n")
    );
}

#[test]
fn a_skipped_journal_fdatasync_loses_an_acknowledged_create_on_ext4() {
    let report = replay_with_skipped_fsync(Op::Create, FsType::Ext4, "journal-append");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_journal_fdatasync_loses_an_acknowledged_create_on_xfs() {
    let report = replay_with_skipped_fsync(Op::Create, FsType::Xfs, "journal-append");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_journal_fdatasync_loses_an_acknowledged_create_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::Create, FsType::Btrfs, "journal-append");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_fsync_after_the_snapshot_loses_an_acknowledged_create_pool_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::CreatePool, FsType::Btrfs, "snapshot-dir");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_fsync_after_the_snapshot_loses_an_acknowledged_create_pool_on_ext4() {
    let report = replay_with_skipped_fsync(Op::CreatePool, FsType::Ext4, "snapshot-dir");
    assert_acknowledged_change_lost(&report);
}

/// The files are deleted after the unregistration: without its fdatasync a power cut
/// finds the volume registered with files already gone.
#[test]
fn a_skipped_journal_fdatasync_leaves_a_registered_volume_missing_files_after_remove_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::Remove, FsType::Btrfs, "journal-append");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("found registered") && p.contains("expected the old state")),
        "{:?}\n{}",
        report.failures,
        report.problems.join("\n")
    );
}

/// An import whose file is still held open is committed as a private copy (a reflink)
/// staged with `replace`: without the fsync of the staged temp its name can reach the
/// disk before its extents. (A clone within the pool stages nothing: it is a hard link
/// of the source's committed image.)
#[test]
fn a_skipped_fsync_of_a_staged_copy_tears_an_acknowledged_import_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::ImportHeld, FsType::Btrfs, "replace-file");
    assert_acknowledged_change_lost(&report);
}

/// An import file that nobody holds any more is committed itself, as a stop commits a
/// running image: without its fsync (`commit-file`) the rename reaches the disk before
/// the importer's unflushed data.
#[test]
fn a_skipped_fsync_of_the_import_file_tears_an_acknowledged_import_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::Import, FsType::Btrfs, "commit-file");
    assert_acknowledged_change_lost(&report);
}

/// A stop commits the running image by renaming it: without the fsync of its content
/// first (`commit-file`), the name reaches the disk before the session's unflushed
/// writes, and the acknowledged commit holds a torn image.
#[test]
fn a_skipped_fsync_of_the_running_image_tears_an_acknowledged_commit_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::StopUnflushed, FsType::Btrfs, "commit-file");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_fsync_of_the_running_image_tears_an_acknowledged_commit_on_ext4() {
    let report = replay_with_skipped_fsync(Op::StopUnflushed, FsType::Ext4, "commit-file");
    assert_acknowledged_change_lost(&report);
}

/// On XFS the running image is not fsynced but written back and waited for, and the
/// directory's fsync after the rename commits the log with it (rule 1): without that
/// writeback (`commit-file`), the rename's log commit reaches the disk before the
/// session's unflushed writes and their remapping, and the acknowledged commit holds
/// the image before the session.
#[test]
fn a_skipped_writeback_of_the_running_image_loses_an_acknowledged_commit_on_xfs() {
    let report = replay_with_skipped_fsync(Op::StopUnflushed, FsType::Xfs, "commit-file");
    assert_acknowledged_change_lost(&report);
}

/// A halted volume that nothing else holds grows in place; without the fsync of the
/// truncated image (`truncate-file`) the new size may not reach the disk before the
/// reply, and an acknowledged resize is lost (the image's size is the volume's size).
#[test]
fn a_skipped_fsync_of_the_grown_image_loses_an_acknowledged_resize_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::Resize, FsType::Btrfs, "truncate-file");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_fsync_of_the_grown_image_loses_an_acknowledged_resize_on_xfs() {
    let report = replay_with_skipped_fsync(Op::Resize, FsType::Xfs, "truncate-file");
    assert_acknowledged_change_lost(&report);
}

/// Rule 8 (docs/durability.md) lets a start skip its barrier only when its precache is a
/// marked reflink on btrfs or XFS. Skipped on ext4, where the precache is a byte copy
/// (`start-dir`), the VM's flushed writes land in the precache's own blocks while its
/// rename is not yet durable: a crash disk then has a precache that looks current (the
/// committed image's mtime and size) but holds the session.
#[test]
fn a_start_without_its_barrier_from_a_copied_precache_leaves_session_data_in_it_on_ext4() {
    let report = replay_with_skipped_fsync(Op::StartSession, FsType::Ext4, "start-dir");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("the precache a start would use holds D")),
        "{:?}\n{}",
        report.failures,
        report.problems.join("\n")
    );
}

/// Rule 9 lets the stop of a snapshot or volatile volume skip its barrier only when the
/// running image carries a boot mark (the start-up sweep after a reboot stops such a
/// volume). Skipped for images without the mark (`stop-dir`), a power cut after the
/// acknowledgement can bring the running images back, which the sweep keeps: the
/// volumes are served started. (The case stops those two alone: stopped with the VM's
/// private volume, the private volume's directory fsync may make their changes durable
/// for them, depending on the order of the three.)
fn a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone(fs: FsType) {
    let report = replay_with_skipped_fsync(Op::StopDisposablesUnmarked, fs, "stop-dir");
    assert_acknowledged_change_lost(&report);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("its acknowledged stop was undone")),
        "{}",
        report.problems.join("\n")
    );
}

#[test]
fn a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone_on_btrfs() {
    a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone(FsType::Btrfs);
}

#[test]
fn a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone_on_xfs() {
    a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone(FsType::Xfs);
}

#[test]
fn a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone_on_ext4() {
    a_stop_without_its_barrier_of_unmarked_disposable_images_is_undone(FsType::Ext4);
}
