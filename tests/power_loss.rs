//! Durability against power loss (issue 10): for each operation × file system, the
//! operation runs once over the bus on a recorded disk; then the disks a power cut
//! could have left — every flush boundary, plus seeded subsets of the writes after it —
//! are mounted, served by the real daemon and checked: every volume in its old or its
//! new committed state (only the new one once the operation was acknowledged), nothing
//! else changed, no short file, leftovers swept, the daemon serving what the files say.
//!
//! `scripts/test` runs a seeded sample; `scripts/power-loss` runs every boundary and
//! prints the table. The harness is `tests/power_loss_support` and the
//! `qubes-storaged-powercut` crate. Needs root (loop devices, FUSE, mounts).

mod common;
mod power_loss_support;

use common::FsType;
use power_loss_support::{run_case, setup_from_env, Op};

fn survives_power_loss(op: Op, fs: FsType, fs_index: u64) {
    common::common_fs::require_root();
    let report = run_case(op, fs, setup_from_env(op, fs_index));
    report.publish();
    report.assert_no_failure();
}

macro_rules! on_every_fs {
    ($($name:ident => $op:expr),* $(,)?) => {
        mod btrfs { use super::*; $( #[test] fn $name() { survives_power_loss($op, FsType::Btrfs, 1) } )* }
        mod xfs { use super::*; $( #[test] fn $name() { survives_power_loss($op, FsType::Xfs, 2) } )* }
        mod ext4 { use super::*; $( #[test] fn $name() { survives_power_loss($op, FsType::Ext4, 3) } )* }
    };
}

on_every_fs!(
    start_survives_power_loss => Op::Start,
    a_start_and_the_vms_flushed_writes_survive_power_loss => Op::StartSession,
    stop_survives_power_loss => Op::Stop,
    stop_of_a_session_the_vm_did_not_flush_survives_power_loss => Op::StopUnflushed,
    revert_survives_power_loss => Op::Revert,
    resize_survives_power_loss => Op::Resize,
    import_survives_power_loss => Op::Import,
    an_import_whose_fd_is_still_open_survives_power_loss => Op::ImportHeld,
    clone_survives_power_loss => Op::Clone,
    create_survives_power_loss => Op::Create,
    remove_survives_power_loss => Op::Remove,
    create_pool_on_a_fresh_disk_survives_power_loss => Op::CreatePool,
    stopping_a_vms_three_volumes_at_once_survives_power_loss => Op::StopVm,
    stopping_a_vm_whose_disposable_images_an_older_release_made_survives_power_loss => Op::StopVmUnmarked,
    stopping_disposable_images_an_older_release_made_survives_power_loss => Op::StopDisposablesUnmarked,
    creating_a_vms_three_volumes_at_once_survives_power_loss => Op::CreateVm,
    starting_a_vms_three_volumes_at_once_survives_power_loss => Op::StartVm,
);
