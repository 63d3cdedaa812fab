//! Which disk contents a power cut could leave, given a [`WriteLog`].
//!
//! After a flush completed, everything logged before it is on stable storage; writes
//! after it may have reached the disk or not, in any combination (a disk reorders and
//! drops what sits in its volatile cache). So a crash while the disk was between flush
//! `F_i` and flush `F_i+1` leaves: every write before `F_i` ([`CrashState::boundary`])
//! plus any subset of the writes between the two ([`CrashState::extra`]). The empty
//! subset is the flush boundary itself; a few seeded non-empty subsets model the
//! reordered and dropped writes.
//!
//! Each state has a [`Phase`] relative to two marks of the log, the operation's
//! beginning and its acknowledgement (its success reply):
//! * [`Phase::Before`]: the next flush after the boundary comes before the operation
//!   began — only the old state is acceptable;
//! * [`Phase::Acknowledged`]: the acknowledgement comes before the next flush, so the
//!   crash may have happened after the caller was told "done" — only the new state is
//!   acceptable. This is what catches a missing fsync: the last flush before the
//!   acknowledgement must already hold the new state;
//! * [`Phase::During`]: anything in between — the old state, the new one, or what the
//!   operation allows between them.
//!
//! Boundaries with no content change between them leave the same disk and are replayed
//! once (as the later one, whose phase is the stricter).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::write_log::{Entry, WriteLog};

/// Where a crash state lies relative to the recorded operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Before,
    During,
    Acknowledged,
}

/// One disk content a power cut could leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashState {
    /// Every content change logged before this position is on the disk.
    pub boundary: usize,
    /// Plus these later changes (positions, ascending) from before the next flush.
    pub extra: Vec<usize>,
    pub phase: Phase,
    /// The flush this boundary is (1-based; 0 = the disk before any flush, and the
    /// number of flushes + 1 = the end of the log).
    pub flush_number: usize,
}

impl CrashState {
    /// `flush 12/40` or `flush 12/40 + 3 of 7 later writes`, with the phase.
    pub fn describe(&self, flushes: usize, later: usize) -> String {
        let extra = match self.extra.len() {
            0 => String::new(),
            n => format!(" + {n} of {later} later writes {:?}", self.extra),
        };
        let at = match self.flush_number {
            n if n > flushes => "the end of the log".to_owned(),
            0 => "the start, before any flush".to_owned(),
            n => format!("flush {n}/{flushes}"),
        };
        format!("crash at {at}{extra} ({:?})", self.phase)
    }
}

/// What to replay: every boundary or a seeded sample, and how many subsets of the
/// writes after a boundary.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// `None`: every boundary. `Some(n)`: the phase edges plus `n` seeded others.
    pub sample: Option<usize>,
    /// Seeded non-empty, non-full subsets per boundary (where there are ≥ 2 writes).
    pub subsets: usize,
    pub seed: u64,
}

/// The log positions of the operation's two marks.
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    pub begin: usize,
    /// `None`: the operation was never acknowledged.
    pub ack: Option<usize>,
}

/// The boundaries of `log`: 0, every flush, the end; runs without a content change
/// between them collapsed to their last member.
pub fn boundaries(log: &WriteLog) -> Vec<usize> {
    let mut all = vec![0];
    all.extend(log.flushes());
    all.push(log.entries().len());
    let mut kept: Vec<usize> = Vec::new();
    for b in all {
        match kept.last_mut() {
            Some(last) if log.changes_between(*last, b).is_empty() => *last = b,
            _ => kept.push(b),
        }
    }
    kept
}

/// The end of the epoch that starts at boundary `b`: the next flush after it.
pub fn epoch_end(log: &WriteLog, b: usize) -> usize {
    let start = b + usize::from(log.entries().get(b) == Some(&Entry::Flush));
    log.next_flush(start)
}

/// The content changes a crash after boundary `b` may or may not have kept.
pub fn later_writes(log: &WriteLog, b: usize) -> Vec<usize> {
    log.changes_between(b, epoch_end(log, b))
}

/// The phase of the crash states at boundary `b` (see the module comment).
pub fn phase(log: &WriteLog, b: usize, marks: Marks) -> Phase {
    let end = epoch_end(log, b);
    if end < marks.begin {
        Phase::Before
    } else if marks.ack.is_some_and(|ack| ack < end) {
        Phase::Acknowledged
    } else {
        Phase::During
    }
}

/// The crash states `plan` asks for, ordered by boundary.
pub fn crash_states(log: &WriteLog, marks: Marks, plan: &Plan) -> Vec<CrashState> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let all = boundaries(log);
    let chosen = match plan.sample {
        None => all,
        Some(n) => sample(log, &all, marks, n, &mut rng),
    };
    let mut states = Vec::new();
    for b in chosen {
        let state = CrashState {
            boundary: b,
            extra: Vec::new(),
            phase: phase(log, b, marks),
            flush_number: flush_number(log, b),
        };
        let subsets = with_subsets(&state, &later_writes(log, b), plan.subsets, &mut rng);
        states.push(state);
        states.extend(subsets);
    }
    states
}

/// Which flush boundary `b` is (see [`CrashState::flush_number`]).
fn flush_number(log: &WriteLog, b: usize) -> usize {
    let flushes = log.flushes();
    flushes.iter().take_while(|&&f| f < b).count()
        + usize::from(flushes.contains(&b))
        + usize::from(b == log.entries().len())
}

/// Up to `count` distinct states of `state` plus a random subset of `later`.
fn with_subsets(
    state: &CrashState,
    later: &[usize],
    count: usize,
    rng: &mut StdRng,
) -> Vec<CrashState> {
    let count = count.min(subset_room(later.len()));
    let mut states: Vec<CrashState> = Vec::new();
    while states.len() < count {
        let extra = random_subset(later, rng);
        if !states.iter().any(|s| s.extra == extra) {
            states.push(CrashState {
                extra,
                ..state.clone()
            });
        }
    }
    states
}

/// How many distinct proper non-empty subsets `n` writes have, capped (≥ 2 writes).
fn subset_room(n: usize) -> usize {
    match n {
        0 | 1 => 0,
        2..=6 => (1usize << n) - 2,
        _ => usize::MAX,
    }
}

/// A non-empty proper subset of `writes`, each kept with probability ½.
fn random_subset(writes: &[usize], rng: &mut StdRng) -> Vec<usize> {
    loop {
        let subset: Vec<usize> = writes
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        if !subset.is_empty() && subset.len() < writes.len() {
            return subset;
        }
    }
}

/// The phase edges (first and last boundary of each phase) plus `n` others drawn
/// with `rng`, in log order.
fn sample(log: &WriteLog, all: &[usize], marks: Marks, n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    for p in [Phase::Before, Phase::During, Phase::Acknowledged] {
        let of_phase: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&b| phase(log, b, marks) == p)
            .collect();
        chosen.extend(of_phase.first().into_iter().chain(of_phase.last()));
    }
    let mut others: Vec<usize> = all
        .iter()
        .copied()
        .filter(|b| !chosen.contains(b))
        .collect();
    for _ in 0..n.min(others.len()) {
        chosen.push(others.swap_remove(rng.random_range(0..others.len())));
    }
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// w0 F1 begin w3 w4 F5 F6 w7 ack F9 w10
    fn log() -> WriteLog {
        let mut log = WriteLog::default();
        log.record_write(0, b"a");
        log.record_flush();
        log.record_mark("begin");
        log.record_write(512, b"b");
        log.record_write(1024, b"c");
        log.record_flush();
        log.record_flush();
        log.record_write(1536, b"d");
        log.record_mark("ack");
        log.record_flush();
        log.record_write(2048, b"e");
        log
    }

    fn marks(log: &WriteLog) -> Marks {
        Marks {
            begin: log.mark("begin").unwrap(),
            ack: log.mark("ack"),
        }
    }

    #[test]
    fn boundaries_without_changes_between_them_collapse_to_the_later() {
        assert_eq!(boundaries(&log()), [0, 1, 6, 9, 11]);
    }

    #[test]
    fn phases_follow_the_next_flush() {
        let log = log();
        let m = marks(&log);
        let phases: Vec<Phase> = boundaries(&log)
            .iter()
            .map(|&b| phase(&log, b, m))
            .collect();
        // Boundary 6 (flush 3) is the last flush before the acknowledgement: a crash
        // right after the reply finds exactly that disk, so it must hold the new state.
        assert_eq!(
            phases,
            [
                Phase::Before,
                Phase::During,
                Phase::Acknowledged,
                Phase::Acknowledged,
                Phase::Acknowledged
            ]
        );
    }

    #[test]
    fn later_writes_stop_at_the_next_flush() {
        let log = log();
        assert_eq!(later_writes(&log, 1), [3, 4]);
        assert_eq!(later_writes(&log, 6), [7]);
        assert_eq!(later_writes(&log, 11), Vec::<usize>::new());
    }

    #[test]
    fn every_boundary_and_its_subsets_are_planned_in_order() {
        let log = log();
        let plan = Plan {
            sample: None,
            subsets: 5,
            seed: 7,
        };
        let states = crash_states(&log, marks(&log), &plan);
        let summary: Vec<(usize, usize)> =
            states.iter().map(|s| (s.boundary, s.extra.len())).collect();
        // Two later writes have two proper non-empty subsets: {3} and {4}.
        assert!(summary.starts_with(&[(0, 0), (1, 0)]), "{summary:?}");
        let at_1: Vec<&CrashState> = states.iter().filter(|s| s.boundary == 1).collect();
        assert!(at_1.len() >= 2 && at_1.iter().skip(1).all(|s| s.extra.len() == 1));
        assert_eq!(states.last().unwrap().boundary, 11);
        assert_eq!(states.last().unwrap().flush_number, 5);
    }

    #[test]
    fn a_sample_keeps_the_edges_of_every_phase() {
        let log = log();
        let plan = Plan {
            sample: Some(0),
            subsets: 0,
            seed: 1,
        };
        let chosen: Vec<usize> = crash_states(&log, marks(&log), &plan)
            .iter()
            .map(|s| s.boundary)
            .collect();
        assert_eq!(chosen, [0, 1, 6, 11]);
    }
}
