//! Barriers — the fsync, fdatasync and directory fsync calls that make a change durable
//! — counted, and shared by operations that need them at the same time on one
//! filesystem (group commit).
//!
//! **Counting.** Every barrier is counted per thread and in process-wide totals
//! ([`Counts`]): an engine operation runs on its caller's thread, so the difference of
//! [`thread_counts`] around it is what the operation waited for, and the difference of
//! [`total_counts`] minus that is what ran beside it (work deferred until after the
//! reply). The engine bench prints both beside each operation's time.
//!
//! **Group commit.** A barrier on a quiet filesystem is the plain syscall on its own fd
//! (a *solo* barrier). When several are in flight on one filesystem, each costs about as
//! much as a whole `syncfs(2)` (btrfs serialises log commits; measured here: 16
//! concurrent directory fsyncs took 50–55 ms on btrfs and XFS, one syncfs after the
//! same 16 renames 10–14 ms), so a barrier that arrives while the filesystem is
//! *crowded* — at least [`crowd`] barriers in flight, or a round already running —
//! joins a **round**: one `syncfs` made by the first member that finds no round
//! running, which covers every member whose change was made before the round began.
//! Members that arrive while a round runs wait for it and form the next one. A round
//! is a barrier for every file and directory of the filesystem (it writes back and
//! commits everything), so each member's promise is kept: it returns only once a sync
//! that began after its change has completed. A failed round sends each of its members
//! back to its own solo barrier, so an error is reported to whom it concerns.
//!
//! The crowd size adapts: solo barriers and rounds are timed (exponential moving
//! averages per filesystem), and a round is formed when the barriers in flight would
//! cost more than one syncfs — which also protects a filesystem full of other dirty
//! data (running VMs), where a syncfs is slow, from rounds. The threshold stays within
//! [`MIN_CROWD`]..=[`MAX_CROWD`], so rounds are tried again from time to time.
//!
//! Filesystems are told apart by device number. The raw calls are in [`crate::sys`].

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sys;

/// A round needs at least this many barriers in flight besides the newcomer.
pub const MIN_CROWD: usize = 2;
/// A round is formed whenever this many are in flight, whatever the estimates say.
pub const MAX_CROWD: usize = 32;
/// The crowd size before a round has ever been timed on a filesystem.
const FIRST_CROWD: usize = 4;

/// What a barrier makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// fsync of a file: its data and metadata.
    File,
    /// fdatasync of a file: its data and the size needed to read it.
    Data,
    /// fsync of a directory: the names created, renamed, linked or removed in it.
    Dir,
}

/// Barriers waited for, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// fsync of a file, made by the waiting thread itself.
    pub fsync: u64,
    /// fdatasync, made by the waiting thread itself.
    pub fdatasync: u64,
    /// fsync of a directory, made by the waiting thread itself.
    pub dir_fsync: u64,
    /// syncfs rounds this thread made for itself and the others of its round.
    pub syncfs: u64,
    /// Barriers covered by a round another thread made.
    pub joined: u64,
}

impl Counts {
    /// Every barrier waited for.
    pub fn total(&self) -> u64 {
        self.fsync + self.fdatasync + self.dir_fsync + self.syncfs + self.joined
    }

    /// Barriers this thread issued (what the disk saw from it).
    pub fn issued(&self) -> u64 {
        self.fsync + self.fdatasync + self.dir_fsync + self.syncfs
    }

    /// `self - before`, field by field.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            fsync: self.fsync - before.fsync,
            fdatasync: self.fdatasync - before.fdatasync,
            dir_fsync: self.dir_fsync - before.dir_fsync,
            syncfs: self.syncfs - before.syncfs,
            joined: self.joined - before.joined,
        }
    }
}

impl std::fmt::Display for Counts {
    /// `3 (fsync 1, dir 2)`: the total and the kinds that occurred.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds = [
            ("fsync", self.fsync),
            ("fdatasync", self.fdatasync),
            ("dir", self.dir_fsync),
            ("syncfs", self.syncfs),
            ("joined", self.joined),
        ];
        let parts: Vec<String> = kinds
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        match parts.is_empty() {
            true => write!(f, "0"),
            false => write!(f, "{} ({})", self.total(), parts.join(", ")),
        }
    }
}

thread_local! {
    static THREAD: std::cell::Cell<Counts> = const { std::cell::Cell::new(Counts {
        fsync: 0, fdatasync: 0, dir_fsync: 0, syncfs: 0, joined: 0,
    }) };
}

static TOTAL: [AtomicU64; 5] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// The barriers this thread has waited for since it began.
pub fn thread_counts() -> Counts {
    THREAD.with(|c| c.get())
}

/// The barriers every thread of the process has waited for.
pub fn total_counts() -> Counts {
    let n = |i: usize| TOTAL[i].load(Ordering::Relaxed);
    Counts {
        fsync: n(0),
        fdatasync: n(1),
        dir_fsync: n(2),
        syncfs: n(3),
        joined: n(4),
    }
}

/// Count `counts`, waited for by a helper thread on this thread's behalf (the journal
/// flush of a resize, which overlaps its copy), as this thread's own: they come before
/// its reply. The process totals already hold them.
pub fn credit(counts: Counts) {
    THREAD.with(|cell| {
        let c = cell.get();
        cell.set(Counts {
            fsync: c.fsync + counts.fsync,
            fdatasync: c.fdatasync + counts.fdatasync,
            dir_fsync: c.dir_fsync + counts.dir_fsync,
            syncfs: c.syncfs + counts.syncfs,
            joined: c.joined + counts.joined,
        });
    });
}

/// One barrier of this thread, by its index in [`TOTAL`].
fn count(index: usize) {
    TOTAL[index].fetch_add(1, Ordering::Relaxed);
    THREAD.with(|cell| {
        let mut c = cell.get();
        match index {
            0 => c.fsync += 1,
            1 => c.fdatasync += 1,
            2 => c.dir_fsync += 1,
            3 => c.syncfs += 1,
            _ => c.joined += 1,
        }
        cell.set(c);
    });
}

fn count_solo(kind: Kind) {
    count(match kind {
        Kind::File => 0,
        Kind::Data => 1,
        Kind::Dir => 2,
    });
}

/// Make what `kind` names durable for the file or directory `fd`: on its own, or as a
/// member of a syncfs round when its filesystem is crowded (see the module comment).
/// Returns only once a barrier that began after this call has completed.
pub fn sync(fd: BorrowedFd<'_>, kind: Kind) -> io::Result<()> {
    let fs = match sys::device_of(fd) {
        Ok(dev) => filesystem(dev),
        Err(_) => return solo(fd, kind), // the syscall itself reports the problem
    };
    fs.sync(fd, kind)
}

fn solo(fd: BorrowedFd<'_>, kind: Kind) -> io::Result<()> {
    count_solo(kind);
    match kind {
        Kind::File | Kind::Dir => sys::fsync(fd),
        Kind::Data => sys::fdatasync(fd),
    }
}

/// The barrier state of the filesystem with device number `dev`.
fn filesystem(dev: u64) -> Arc<Filesystem> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Arc<Filesystem>>>> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    table.entry(dev).or_default().clone()
}

/// An exponential moving average of a duration (weight 1/4 for the newest sample).
#[derive(Debug, Default, Clone, Copy)]
struct Average(Option<Duration>);

impl Average {
    fn add(&mut self, sample: Duration) {
        self.0 = Some(match self.0 {
            None => sample,
            Some(avg) => (avg * 3 + sample) / 4,
        });
    }
}

/// One filesystem's barriers in flight and its rounds.
#[derive(Default)]
struct Filesystem {
    state: Mutex<Rounds>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct Rounds {
    /// Barriers in flight (solo or in a round).
    in_flight: usize,
    /// Rounds begun and ended; a round's number is its order (1, 2, …).
    begun: u64,
    ended: u64,
    /// A round is running (round `begun`).
    running: bool,
    /// The last round that succeeded.
    last_ok: u64,
    solo_cost: Average,
    round_cost: Average,
}

/// How many barriers in flight make a round cheaper than solo barriers.
pub fn crowd(solo: Option<Duration>, round: Option<Duration>) -> usize {
    let (Some(solo), Some(round)) = (solo, round) else {
        return FIRST_CROWD;
    };
    let solo = solo.as_secs_f64().max(1e-6);
    let needed = (round.as_secs_f64() / solo).ceil() as usize;
    needed.clamp(MIN_CROWD, MAX_CROWD)
}

impl Rounds {
    fn crowded(&self) -> bool {
        self.running || self.in_flight >= crowd(self.solo_cost.0, self.round_cost.0)
    }
}

impl Filesystem {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync(&self, fd: BorrowedFd<'_>, kind: Kind) -> io::Result<()> {
        let mut rounds = self.lock();
        let join = rounds.crowded();
        rounds.in_flight += 1;
        if !join {
            drop(rounds);
            let begun = Instant::now();
            let result = solo(fd, kind);
            let mut rounds = self.lock();
            rounds.in_flight -= 1;
            rounds.solo_cost.add(begun.elapsed());
            return result;
        }
        // A round that begins after now covers this change.
        let wanted = rounds.begun + 1;
        let covered = self.join_round(rounds, fd, wanted);
        let mut rounds = self.lock();
        rounds.in_flight -= 1;
        drop(rounds);
        match covered {
            true => Ok(()),
            false => solo(fd, kind), // the round failed: report our own outcome
        }
    }

    /// Wait for round `wanted` (or a later one) to end, running it when nobody else
    /// does; whether a round that covers the caller succeeded.
    fn join_round(
        &self,
        mut rounds: std::sync::MutexGuard<'_, Rounds>,
        fd: BorrowedFd<'_>,
        wanted: u64,
    ) -> bool {
        loop {
            if rounds.ended >= wanted {
                let covered = rounds.last_ok >= wanted;
                if covered {
                    count(4);
                }
                return covered;
            }
            if !rounds.running {
                rounds.running = true;
                rounds.begun = wanted;
                drop(rounds);
                count(3);
                let begun = Instant::now();
                let result = sys::syncfs(fd);
                let took = begun.elapsed();
                let mut rounds = self.lock();
                rounds.running = false;
                rounds.ended = wanted;
                rounds.round_cost.add(took);
                if result.is_ok() {
                    rounds.last_ok = wanted;
                }
                self.done.notify_all();
                return result.is_ok();
            }
            rounds = self.done.wait(rounds).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_crowd_is_what_makes_a_round_cheaper_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(crowd(None, None), FIRST_CROWD);
        assert_eq!(crowd(Some(ms(4)), None), FIRST_CROWD);
        assert_eq!(crowd(Some(ms(4)), Some(ms(14))), 4);
        assert_eq!(crowd(Some(ms(10)), Some(ms(1))), MIN_CROWD);
        assert_eq!(crowd(Some(ms(1)), Some(ms(1000))), MAX_CROWD);
    }

    #[test]
    fn a_barrier_is_counted_once_on_its_thread_and_in_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let (thread, total) = (thread_counts(), total_counts());
        sync(file.as_fd(), Kind::Data).unwrap();
        let own = thread_counts().since(&thread);
        assert_eq!(own.total(), 1, "{own:?}");
        assert!(total_counts().since(&total).total() >= 1);
    }

    #[test]
    fn concurrent_barriers_all_return_and_each_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                std::thread::spawn(move || {
                    let file = std::fs::File::create(path).unwrap();
                    let before = thread_counts();
                    sync(file.as_fd(), Kind::File).unwrap();
                    thread_counts().since(&before).total()
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), 1);
        }
    }

    #[test]
    fn counts_print_their_total_and_kinds() {
        let counts = Counts {
            fsync: 1,
            dir_fsync: 2,
            ..Counts::default()
        };
        assert_eq!(counts.to_string(), "3 (fsync 1, dir 2)");
        assert_eq!(Counts::default().to_string(), "0");
    }
}
