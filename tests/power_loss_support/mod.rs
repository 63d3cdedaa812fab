//! The power-loss suite (issue 10): each operation of the service is performed once on
//! a disk whose every block write and flush is recorded, then every disk a power cut
//! could have left is rebuilt, mounted and served by the real daemon, and checked.
//! `qubes_storaged_powercut` records and rebuilds; this module knows the service: the
//! world on the disk ([`world`]), the operations and what they change ([`cases`]), the
//! invariants ([`check`]), the driver ([`run`]) and the table ([`report`]).
//!
//! How much is replayed comes from the environment ([`setup_from_env`]):
//! `QSD_POWER_LOSS=full` replays every flush boundary with two seeded subsets of the
//! writes after each; otherwise a seeded sample (the first and last boundary of each
//! phase plus two others, one subset each) keeps `scripts/test` short.
//! `QSD_POWER_LOSS_SEED` changes the seed.
//!
//! Support modules are compiled into each test binary that declares them, and no binary
//! uses every item, hence `#![allow(dead_code)]` (shared test support).

#![allow(dead_code)]

pub mod cases;
pub mod check;
pub mod content;
pub mod report;
pub mod run;
pub mod world;

use qubes_storaged_powercut::Plan;

pub use cases::Op;
pub use run::{run_case, Setup};

const DEFAULT_SEED: u64 = 0x5eed;

/// Does the environment ask for the full matrix?
pub fn full_run() -> bool {
    std::env::var("QSD_POWER_LOSS").is_ok_and(|v| v == "full")
}

/// The seed of the sampled boundaries and subsets, varied per case.
fn seed(op: Op, fs_index: u64) -> u64 {
    let base = std::env::var("QSD_POWER_LOSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let op_index = Op::ALL.iter().position(|&o| o == op).unwrap_or(0) as u64;
    base ^ (op_index << 8) ^ fs_index
}

/// The plan the environment asks for (see the module comment).
pub fn setup_from_env(op: Op, fs_index: u64) -> Setup {
    let plan = match full_run() {
        true => Plan {
            sample: None,
            subsets: 2,
            seed: seed(op, fs_index),
        },
        false => Plan {
            sample: Some(2),
            subsets: 1,
            seed: seed(op, fs_index),
        },
    };
    Setup {
        plan,
        skip_fsync: None,
    }
}
