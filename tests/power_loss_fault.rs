//! The power-loss replay can fail: with one fsync site of the engine deliberately
//! skipped (the test-only feature `durability-faults`, `QSD_SKIP_FSYNC=<site>` in the
//! recorded daemon's environment), it finds crash states after the acknowledgement
//! that lost the acknowledged change. Without these the suite would prove nothing.
//!
//! Measured which skipped sites the replay notices (every boundary, two subsets each):
//! the directory fsync after a replace (`replace-dir`) loses an acknowledged
//! CreateVolume on all three file systems (the state file's rename is the last change
//! and nothing later makes it durable); the fsync of an imported image before its
//! commit (`commit-file`) loses acknowledged imports on btrfs. A skipped fsync that a
//! later fsync of the same operation covers (ext4 and XFS commit their whole journal on
//! any fsync) is, rightly, not reported.
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
            .any(|p| p.contains("the operation was acknowledged")),
        "{}",
        report.problems.join("\n")
    );
}

#[test]
fn a_skipped_directory_fsync_loses_an_acknowledged_create_on_ext4() {
    let report = replay_with_skipped_fsync(Op::Create, FsType::Ext4, "replace-dir");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_directory_fsync_loses_an_acknowledged_create_on_xfs() {
    let report = replay_with_skipped_fsync(Op::Create, FsType::Xfs, "replace-dir");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_directory_fsync_loses_an_acknowledged_create_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::Create, FsType::Btrfs, "replace-dir");
    assert_acknowledged_change_lost(&report);
}

#[test]
fn a_skipped_fsync_of_the_imported_image_loses_an_acknowledged_import_on_btrfs() {
    let report = replay_with_skipped_fsync(Op::Import, FsType::Btrfs, "commit-file");
    assert_acknowledged_change_lost(&report);
}
