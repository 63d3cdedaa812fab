//! The outcome of one case as one row of the table "operation × file system × flush
//! boundaries replayed × failures" (plus the flushes recorded, the subsets replayed, on
//! how many crash disks the daemon's start-up sweep removed a leftover and on how many
//! it finished an interrupted volume removal), printed to stderr and, when
//! `QSD_POWER_LOSS_TABLE=<file>` is set, appended to that file (`scripts/power-loss`
//! collects the rows of every case into one table).

use std::collections::BTreeMap;
use std::io::Write;

use qubes_storaged_powercut::{CrashState, Phase, WriteLog};

use super::cases::Op;
use crate::common::FsType;

/// How many problems a report shows in full.
const SHOWN: usize = 12;

pub const HEADER: &str =
    "operation      fs     flushes  boundaries  subsets  swept  removals  failures";

/// What the replays of one case found.
#[derive(Debug)]
pub struct CaseReport {
    pub op: Op,
    pub fs: FsType,
    /// Flushes in the recording.
    pub flushes: usize,
    /// Flush boundaries replayed (crash states without extra writes).
    pub boundaries: usize,
    /// Crash states with a subset of the writes after their boundary.
    pub subsets: usize,
    /// Crash states on which the daemon's start-up sweep removed a leftover.
    pub swept: usize,
    /// Crash states on which the daemon finished an interrupted volume removal.
    pub removals: usize,
    /// Crash states with at least one problem, by phase.
    pub failures: BTreeMap<Phase, usize>,
    pub problems: Vec<String>,
}

impl CaseReport {
    pub fn new(op: Op, fs: FsType, log: &WriteLog) -> CaseReport {
        CaseReport {
            op,
            fs,
            flushes: log.summary().flushes,
            boundaries: 0,
            subsets: 0,
            swept: 0,
            removals: 0,
            failures: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Counts one replayed state and its problems.
    pub fn add(&mut self, state: &CrashState, problems: Vec<String>) {
        match state.extra.is_empty() {
            true => self.boundaries += 1,
            false => self.subsets += 1,
        }
        if !problems.is_empty() {
            *self.failures.entry(state.phase).or_default() += 1;
        }
        let room = SHOWN.saturating_sub(self.problems.len());
        self.problems.extend(problems.into_iter().take(room));
    }

    pub fn count_sweep(&mut self, swept: bool) {
        self.swept += usize::from(swept);
    }

    pub fn count_finished_removal(&mut self, finished: bool) {
        self.removals += usize::from(finished);
    }

    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    pub fn row(&self) -> String {
        format!(
            "{:<14} {:<6} {:>7} {:>11} {:>8} {:>6} {:>9} {:>9}",
            self.op.name(),
            self.fs.name(),
            self.flushes,
            self.boundaries,
            self.subsets,
            self.swept,
            self.removals,
            self.failed()
        )
    }

    /// Prints the row (and appends it to `$QSD_POWER_LOSS_TABLE`).
    pub fn publish(&self) {
        eprintln!("{HEADER}\n{}", self.row());
        if let Ok(path) = std::env::var("QSD_POWER_LOSS_TABLE") {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open the power-loss table");
            writeln!(file, "{}", self.row()).expect("append to the power-loss table");
        }
    }

    /// Panics with the problems found, if any.
    #[track_caller]
    pub fn assert_no_failure(&self) {
        assert!(
            self.failed() == 0,
            "{} on {}: {} of {} crash states fail:\n{}",
            self.op.name(),
            self.fs.name(),
            self.failed(),
            self.boundaries + self.subsets,
            self.problems.join("\n")
        );
    }
}
