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
//! **One file, one barrier at a time.** Barriers asked for one file or directory while
//! one is running on it wait for it to end, and then one of them makes the barrier
//! for all of them: a barrier that began after their changes covers them all. This is
//! what several operations in one VM directory need (a VM's three volumes stopped at
//! once), and on btrfs it is much cheaper than the same barriers side by side
//! (measured here with the file operations of a VM's three stops: side by side each
//! directory fsync took 16–18 ms, taken in turn the three took about 10 ms; why not the
//! 4–5 ms of three stops one after another: docs/durability.md, "Group commit").
//!
//! **Announced peers.** A batch of name changes announces its directory's barrier when
//! it begins ([`expect`]); a barrier asked for a directory while announced batches of it
//! have not asked yet waits for them — until all have asked, withdrawn, or one
//! directory fsync's time (measured per filesystem) has passed — so that one run
//! covers them all. A VM's three volumes stopped at once thus share one directory fsync
//! instead of two or three (the engine bench prints it).
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
/// Bounds of the wait for announced peers ([`expect`]), and its length before a
/// directory fsync has been timed on a filesystem.
const MIN_PATIENCE: Duration = Duration::from_micros(100);
const MAX_PATIENCE: Duration = Duration::from_millis(2);
const FIRST_PATIENCE: Duration = Duration::from_millis(1);

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
    let (dev, ino) = match sys::stat_fd(fd) {
        Ok(stat) => (stat.st_dev, stat.st_ino),
        Err(_) => return solo(fd, kind), // the syscall itself reports the problem
    };
    let fs = filesystem(dev);
    let file = FileKey {
        dev,
        ino,
        data_only: kind == Kind::Data,
    };
    let shared = Inode::enter(file);
    let result = shared.sync(fs.patience(), || fs.sync(fd, kind));
    Inode::leave(file);
    match result {
        Turn::Ran(result) => result,
        Turn::Joined(true) => Ok(()),
        // The barrier that was to cover us failed: make our own, which reports our
        // own outcome.
        Turn::Joined(false) => fs.sync(fd, kind),
    }
}

/// An operation's announcement that it will ask for a barrier on a directory
/// ([`expect`]); withdrawn when dropped.
pub struct Expected {
    key: FileKey,
    inode: Arc<Inode>,
}

/// Announce that this operation will ask for a barrier on the directory `fd` soon:
/// an operation of the same directory that asks for one first waits for the announced
/// ones — until they have asked too, given up their announcement, or one directory
/// fsync's time has passed — so that one fsync covers them all. This is what the
/// operations on a VM's volumes that arrive together (its three volumes stopped or
/// started at once) need: without it the first one's fsync covers only itself, the
/// next ones' changes arrive while it runs, and each pays its own. `None` when the
/// directory cannot be identified (its barrier then simply does not wait).
pub fn expect(fd: BorrowedFd<'_>) -> Option<Expected> {
    let stat = sys::stat_fd(fd).ok()?;
    let key = FileKey {
        dev: stat.st_dev,
        ino: stat.st_ino,
        data_only: false,
    };
    let inode = Inode::enter(key);
    inode.announce(true);
    Some(Expected { key, inode })
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.inode.announce(false);
        Inode::leave(self.key);
    }
}

/// Barriers of one file: its inode, and whether they are fdatasyncs (which an fsync
/// covers but which do not cover one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    data_only: bool,
}

/// The barriers of one file in flight: callers take [`Turns`].
#[derive(Default)]
struct Inode {
    turns: Mutex<Turns>,
    done: Condvar,
}

/// Files with barriers in flight, each with how many callers it has.
type InodeTable = HashMap<FileKey, (usize, Arc<Inode>)>;

fn inodes() -> std::sync::MutexGuard<'static, InodeTable> {
    static TABLE: OnceLock<Mutex<InodeTable>> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    table.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inode {
    fn enter(key: FileKey) -> Arc<Inode> {
        let mut table = inodes();
        let entry = table.entry(key).or_default();
        entry.0 += 1;
        entry.1.clone()
    }

    /// The last caller of a file removes it from the table.
    fn leave(key: FileKey) {
        let mut table = inodes();
        if let Some(entry) = table.get_mut(&key) {
            entry.0 -= 1;
            if entry.0 == 0 {
                table.remove(&key);
            }
        }
    }

    /// Wait for a barrier that begins after now, making it with `run` when nobody
    /// else does; announced peers are waited for up to `patience` first.
    fn sync(&self, patience: Duration, run: impl FnOnce() -> io::Result<()>) -> Turn {
        let turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = turns.next();
        take_turn(&self.turns, &self.done, turns, |t| t, wanted, patience, run)
    }

    /// One more or one fewer operation announced a barrier on this file.
    fn announce(&self, more: bool) {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        match more {
            true => turns.expected += 1,
            false => {
                turns.expected -= 1;
                self.done.notify_all();
            }
        }
    }
}

/// Runs of a shared barrier, each covering the callers that arrived before it began.
#[derive(Debug, Default)]
struct Turns {
    /// Runs begun and ended; a run's number is its order (1, 2, …).
    begun: u64,
    ended: u64,
    /// A run is in progress (run `begun`).
    running: bool,
    /// The last run that succeeded.
    last_ok: u64,
    /// Callers waiting for a run to end, or for their peers before one begins.
    waiting: usize,
    /// Operations that announced a barrier on this file ([`expect`]): while some of
    /// them have not asked for it yet, a run waits for them a little.
    expected: usize,
}

impl Turns {
    /// The run that covers a caller arriving now: the first that begins after now.
    fn next(&self) -> u64 {
        self.begun + 1
    }
}

/// How a caller's barrier was made.
enum Turn {
    /// By this caller, for itself and those its run covered: the run's outcome.
    Ran(io::Result<()>),
    /// By a run of another caller that began after this one arrived: whether it
    /// succeeded.
    Joined(bool),
}

/// Wait for run `wanted` (or a later one) of the turns in `state` to end, making it
/// with `run` when nobody else does; a caller another's run covered is counted as
/// joined.
fn take_turn<S>(
    lock: &Mutex<S>,
    done: &Condvar,
    mut state: std::sync::MutexGuard<'_, S>,
    turns: impl Fn(&mut S) -> &mut Turns,
    wanted: u64,
    patience: Duration,
    run: impl FnOnce() -> io::Result<()>,
) -> Turn {
    let deadline = Instant::now() + patience;
    loop {
        let t = turns(&mut state);
        if t.ended >= wanted {
            let covered = t.last_ok >= wanted;
            if covered {
                count(4);
            }
            return Turn::Joined(covered);
        }
        let now = Instant::now();
        if !t.running && t.expected > t.waiting + 1 && now < deadline {
            // Announced peers are still on their way: the run that begins once they
            // are here (or gone, or the patience is spent) covers them too.
            t.waiting += 1;
            state = done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            turns(&mut state).waiting -= 1;
            continue;
        }
        if !t.running {
            t.running = true;
            t.begun = wanted;
            drop(state);
            // Should `run` panic, the run still ends (as a failure), so that the
            // callers waiting for it are not left waiting for ever.
            let mut ended = RunEnded {
                lock,
                done,
                turns: &turns,
                wanted,
                ok: false,
            };
            let result = run();
            ended.ok = result.is_ok();
            drop(ended);
            return Turn::Ran(result);
        }
        turns(&mut state).waiting += 1;
        state = done.wait(state).unwrap_or_else(|e| e.into_inner());
        turns(&mut state).waiting -= 1;
    }
}

/// Ends run `wanted` of the turns behind `lock` when dropped: not running any more,
/// ended, successful if `ok`, the waiting callers woken.
struct RunEnded<'a, S, F: Fn(&mut S) -> &mut Turns> {
    lock: &'a Mutex<S>,
    done: &'a Condvar,
    turns: &'a F,
    wanted: u64,
    ok: bool,
}

impl<S, F: Fn(&mut S) -> &mut Turns> Drop for RunEnded<'_, S, F> {
    fn drop(&mut self) {
        let mut state = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let t = (self.turns)(&mut state);
        t.running = false;
        t.ended = self.wanted;
        if self.ok {
            t.last_ok = self.wanted;
        }
        self.done.notify_all();
    }
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
    /// The syncfs rounds.
    turns: Turns,
    solo_cost: Average,
    round_cost: Average,
    /// Solo fsyncs of directories: how long waiting for announced peers may take.
    dir_cost: Average,
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
        self.turns.running || self.in_flight >= crowd(self.solo_cost.0, self.round_cost.0)
    }
}

impl Filesystem {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a barrier waits for announced peers: what one directory fsync costs
    /// here — waiting longer would cost more than the fsync it may save.
    fn patience(&self) -> Duration {
        let cost = self.lock().dir_cost.0.unwrap_or(FIRST_PATIENCE);
        cost.clamp(MIN_PATIENCE, MAX_PATIENCE)
    }

    fn sync(&self, fd: BorrowedFd<'_>, kind: Kind) -> io::Result<()> {
        let mut rounds = self.lock();
        let join = rounds.crowded();
        rounds.in_flight += 1;
        // Counted out however the barrier ends, a panic included: a count left behind
        // would make every later barrier of the filesystem join a round.
        let in_flight = InFlight(self);
        if !join {
            drop(rounds);
            let begun = Instant::now();
            let result = solo(fd, kind);
            drop(in_flight);
            let mut rounds = self.lock();
            rounds.solo_cost.add(begun.elapsed());
            if kind == Kind::Dir {
                rounds.dir_cost.add(begun.elapsed());
            }
            return result;
        }
        // A round that begins after now covers this change.
        let wanted = rounds.turns.next();
        let turn = take_turn(
            &self.state,
            &self.done,
            rounds,
            |r| &mut r.turns,
            wanted,
            Duration::ZERO,
            || {
                count(3);
                let begun = Instant::now();
                let result = sys::syncfs(fd);
                self.lock().round_cost.add(begun.elapsed());
                result
            },
        );
        drop(in_flight);
        match turn {
            Turn::Ran(Ok(())) => Ok(()),
            Turn::Joined(true) => Ok(()),
            // The round failed: report our own outcome.
            Turn::Ran(Err(_)) | Turn::Joined(false) => solo(fd, kind),
        }
    }
}

/// One barrier in flight on a filesystem, counted out when dropped.
struct InFlight<'a>(&'a Filesystem);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
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

    /// Poll `condition` on `inode`'s turns until it holds (the other threads get there
    /// on their own; this only waits for them).
    fn wait_for(inode: &Inode, condition: impl Fn(&Turns) -> bool) {
        let begun = Instant::now();
        while !condition(&inode.turns.lock().unwrap()) {
            assert!(begun.elapsed() < GIVE_UP, "the callers never got there");
            std::thread::yield_now();
        }
    }

    /// A first caller whose run holds until `release` is sent, and two callers that
    /// arrive while it runs, each running `later` if its turn comes; the outcomes
    /// (first, the two others) once the first run is released.
    fn two_arrive_during_a_run(
        later: fn() -> io::Result<()>,
    ) -> (Turn, Vec<Turn>, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::AtomicUsize;
        let inode = Arc::new(Inode::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first = {
            let (inode, runs) = (inode.clone(), runs.clone());
            std::thread::spawn(move || {
                inode.sync(Duration::ZERO, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    released.recv().unwrap();
                    Ok(())
                })
            })
        };
        wait_for(&inode, |t| t.running);
        let others: Vec<_> = (0..2)
            .map(|_| {
                let (inode, runs) = (inode.clone(), runs.clone());
                std::thread::spawn(move || {
                    inode.sync(Duration::ZERO, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        later()
                    })
                })
            })
            .collect();
        wait_for(&inode, |t| t.waiting == 2);
        release.send(()).unwrap();
        let first = first.join().unwrap();
        let others = others.into_iter().map(|h| h.join().unwrap()).collect();
        (first, others, runs)
    }

    #[test]
    fn callers_that_arrive_while_a_barrier_runs_share_the_next_one() {
        let (first, others, runs) = two_arrive_during_a_run(|| Ok(()));
        assert!(matches!(first, Turn::Ran(Ok(()))));
        let ran = others
            .iter()
            .filter(|t| matches!(t, Turn::Ran(Ok(()))))
            .count();
        let joined = others
            .iter()
            .filter(|t| matches!(t, Turn::Joined(true)))
            .count();
        assert_eq!((ran, joined), (1, 1), "one ran for both");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "two barriers for three callers"
        );
    }

    #[test]
    fn a_failed_shared_barrier_tells_the_callers_it_was_to_cover() {
        let (first, others, _) = two_arrive_during_a_run(|| Err(io::Error::other("EIO")));
        assert!(matches!(first, Turn::Ran(Ok(()))));
        let failed = others
            .iter()
            .filter(|t| matches!(t, Turn::Ran(Err(_))))
            .count();
        let uncovered = others
            .iter()
            .filter(|t| matches!(t, Turn::Joined(false)))
            .count();
        assert_eq!(
            (failed, uncovered),
            (1, 1),
            "the one that waited is told, and makes its own barrier"
        );
    }

    /// Run `inode.sync` on a thread of its own with `patience`, sending its outcome.
    fn sync_on_a_thread(
        inode: &Arc<Inode>,
        runs: &Arc<std::sync::atomic::AtomicUsize>,
        patience: Duration,
    ) -> std::sync::mpsc::Receiver<Turn> {
        let (inode, runs) = (inode.clone(), runs.clone());
        let (send, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let turn = inode.sync(patience, || {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
            let _ = send.send(turn);
        });
        outcome
    }

    /// Long enough that a test never sees it run out (it fails on the receive's
    /// timeout first, should the wait not end).
    const FOREVER: Duration = Duration::from_secs(3600);
    const GIVE_UP: Duration = Duration::from_secs(60);

    #[test]
    fn announced_peers_share_one_barrier_when_the_last_of_them_asks() {
        let inode = Arc::new(Inode::default());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            inode.announce(true);
        }
        let first = sync_on_a_thread(&inode, &runs, FOREVER);
        let second = sync_on_a_thread(&inode, &runs, FOREVER);
        wait_for(&inode, |t| t.waiting == 2);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "nobody runs before the third asks"
        );
        let third = sync_on_a_thread(&inode, &runs, FOREVER);
        let turns: Vec<Turn> = [first, second, third]
            .iter()
            .map(|r| r.recv_timeout(GIVE_UP).expect("every caller returns"))
            .collect();
        let ran = turns
            .iter()
            .filter(|t| matches!(t, Turn::Ran(Ok(()))))
            .count();
        let joined = turns
            .iter()
            .filter(|t| matches!(t, Turn::Joined(true)))
            .count();
        assert_eq!((ran, joined), (1, 2));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one barrier for the three");
    }

    #[test]
    fn a_peer_that_withdraws_its_announcement_releases_the_waiting_one() {
        let inode = Arc::new(Inode::default());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        inode.announce(true);
        inode.announce(true);
        let waiting = sync_on_a_thread(&inode, &runs, FOREVER);
        wait_for(&inode, |t| t.waiting == 1);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        inode.announce(false); // the peer's batch ended without a barrier
        let turn = waiting
            .recv_timeout(GIVE_UP)
            .expect("the withdrawal wakes it");
        assert!(matches!(turn, Turn::Ran(Ok(()))));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_peer_that_never_asks_holds_a_barrier_up_only_for_the_patience() {
        let inode = Arc::new(Inode::default());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        inode.announce(true);
        inode.announce(true);
        let alone = sync_on_a_thread(&inode, &runs, Duration::from_millis(5));
        let turn = alone.recv_timeout(GIVE_UP).expect("the patience runs out");
        assert!(matches!(turn, Turn::Ran(Ok(()))));
        assert_eq!(inode.turns.lock().unwrap().expected, 2, "still announced");
    }

    #[test]
    fn an_announcement_is_withdrawn_when_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        let key = {
            let stat = sys::stat_fd(fd.as_fd()).unwrap();
            FileKey {
                dev: stat.st_dev,
                ino: stat.st_ino,
                data_only: false,
            }
        };
        let expected = || {
            inodes()
                .get(&key)
                .map(|(_, i)| i.turns.lock().unwrap().expected)
        };
        let announced = expect(fd.as_fd()).expect("a directory has an identity");
        assert_eq!(expected(), Some(1));
        drop(announced);
        assert_eq!(
            expected(),
            None,
            "the table forgets a directory nobody uses"
        );
    }

    #[test]
    fn a_run_that_panics_still_ends_and_the_waiting_callers_go_on() {
        let inode = Arc::new(Inode::default());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first = {
            let inode = inode.clone();
            std::thread::spawn(move || {
                inode.sync(Duration::ZERO, || {
                    released.recv().unwrap();
                    panic!("a barrier that panics");
                })
            })
        };
        wait_for(&inode, |t| t.running);
        let second = sync_on_a_thread(&inode, &runs, Duration::ZERO);
        wait_for(&inode, |t| t.waiting == 1);
        release.send(()).unwrap();
        assert!(first.join().is_err(), "the first caller panicked");
        let turn = second
            .recv_timeout(GIVE_UP)
            .expect("the waiting caller goes on");
        assert!(
            matches!(turn, Turn::Ran(Ok(())) | Turn::Joined(false)),
            "not covered by the failed run"
        );
        assert!(!inode.turns.lock().unwrap().running);
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
