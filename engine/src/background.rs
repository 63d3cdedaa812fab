//! Work an operation leaves for after its reply, done by a worker thread of the
//! filesystem its pool is on ([`PerFilesystem`]: each has its own queue and worker):
//!
//! * **reaping** discarded files: an operation takes a file out of the committed state
//!   by renaming it to a discarded name (`<name>~reap-XXXXXXXX`,
//!   [`crate::layout::is_volume_discard`]) and makes that rename durable with its other
//!   changes; the unlink itself — 380–480 ms for a 2 GiB image whose pages are cached,
//!   most of it the kernel dropping the cache — happens here. It needs no fsync: were
//!   it lost in a crash, the discarded name is still there and the start-up sweep
//!   deletes it;
//! * **tasks** an operation hands over, such as making a volume's precache on a pool
//!   with reflinks ([`crate::engine`] builds them; each takes the locks it needs).
//!
//! A filesystem's jobs run one at a time in the order they were queued, **when it is
//! idle**: while an operation on a pool there runs ([`Background::activity`]) and for
//! [`QUIET`] after the last one ended, the worker waits, so that an unlink or a reflink of the
//! precache does not compete for the filesystem with the operations of a burst (a VM's
//! three volumes stopping together; measured on btrfs: a stop behind the deletion of a
//! discarded 1 GiB image took 11 ms instead of 0.7). A job that has waited
//! [`MAX_DEFERRAL`] runs anyway, so a busy filesystem still gets its files deleted. A job
//! that panics is logged and the worker goes on. [`Background::settle`] runs every
//! queued job at once and waits until they are done (measurements, tests, benchmarks).
//! Dropping the `Background` finishes the queue and joins the worker. The worker is
//! started with the first job.
//!
//! One queue per filesystem, not one per engine: a job that cannot finish — an unlink
//! on a frozen or hung filesystem — then holds up only that filesystem's later jobs and
//! the measurements of its pools, which wait for its queue; the other filesystems'
//! files are still deleted, their precaches made and their pools measured. (Not one per
//! pool: pools on one filesystem compete for it, and their files may share extents — a
//! clone across them — which a measurement should see settled.)

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::dir::Dir;
use crate::sys;

/// How long the engine must have been idle before a job runs.
pub const QUIET: Duration = Duration::from_millis(20);
/// A job waits for an idle engine at most this long.
pub const MAX_DEFERRAL: Duration = Duration::from_secs(1);

/// One job of the worker.
enum Job {
    Reap {
        dir: Dir,
        name: String,
    },
    Task {
        what: String,
        run: Box<dyn FnOnce() + Send>,
    },
}

struct Queue {
    /// Jobs, each with when it was queued and its number.
    jobs: VecDeque<(Instant, u64, Job)>,
    /// The number of the last job queued.
    queued: u64,
    /// A job is running.
    busy: bool,
    /// The owner is being dropped: finish the queue, then stop.
    closing: bool,
    /// Operations running now.
    operations: usize,
    /// When the last operation ended.
    last_operation: Instant,
    /// Callers of [`Background::settle`] waiting: run jobs without waiting for quiet.
    settling: usize,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue {
            jobs: VecDeque::new(),
            queued: 0,
            busy: false,
            closing: false,
            operations: 0,
            last_operation: Instant::now(),
            settling: 0,
        }
    }
}

impl Queue {
    /// How long the next job must still wait (zero: run it now).
    fn wait_for_next(&self, now: Instant) -> Duration {
        let Some((queued, _, _)) = self.jobs.front() else {
            return Duration::ZERO;
        };
        if self.closing || self.settling > 0 {
            return Duration::ZERO;
        }
        let overdue = (*queued + MAX_DEFERRAL).saturating_duration_since(now);
        if self.operations > 0 {
            return overdue; // woken earlier when the operations end
        }
        let quiet = (self.last_operation + QUIET).saturating_duration_since(now);
        quiet.min(overdue)
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued into an empty queue, a job ends, the engine
    /// becomes idle with jobs waiting, a settle begins, or the owner closes.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The deferred work of an engine, one [`Background`] per filesystem (see the module
/// comment), keyed by its device number; each is made with the first operation on a
/// pool there and lives as long as the engine (as many as the filesystems pools are
/// on).
#[derive(Default)]
pub struct PerFilesystem {
    lanes: Mutex<HashMap<u64, Arc<Background>>>,
}

impl PerFilesystem {
    /// The queue and worker of the filesystem holding the directory `dir` (one shared
    /// lane for a directory whose filesystem cannot be told).
    pub fn of(&self, dir: &Dir) -> Arc<Background> {
        let device = sys::stat_fd(dir.fd()).map_or(0, |stat| stat.st_dev);
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.entry(device).or_default().clone()
    }

    /// [`Background::settle`] of the filesystem holding `dir` only.
    pub fn settle(&self, dir: &Dir) {
        self.of(dir).settle();
    }

    /// [`Background::settle`] of every filesystem, one after the other.
    pub fn settle_all(&self) {
        let all: Vec<Arc<Background>> = {
            let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.values().cloned().collect()
        };
        for background in all {
            background.settle();
        }
    }
}

/// The deferred work of one filesystem.
#[derive(Default)]
pub struct Background {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Background {
    pub fn new() -> Background {
        Background::default()
    }

    /// Delete the discarded file `name` of `dir` after the reply. Where the directory's
    /// handle cannot be duplicated, it is deleted now.
    pub fn reap(&self, dir: &Dir, name: String) {
        match dir.try_clone() {
            Ok(dir) => self.push(Job::Reap { dir, name }),
            Err(err) => {
                warn!(error = %err, "cannot hand a discarded file to the background worker; deleting it now");
                reap_now(dir, &name);
            }
        }
    }

    /// Run `run` after the reply (`what` names it in the log).
    pub fn spawn(&self, what: impl Into<String>, run: impl FnOnce() + Send + 'static) {
        self.push(Job::Task {
            what: what.into(),
            run: Box::new(run),
        });
    }

    /// Queues `job`. Its number and what it does are logged now, before the operation
    /// replies, and "after-reply work done" with the same number once it ran: the log
    /// says when an operation's work after its reply is finished (tests wait for it).
    ///
    /// The line is written between taking the number and queueing the job, outside the
    /// lock (other operations queue theirs meanwhile), and before the worker can see
    /// the job, so "done" never precedes "queued". The worker is woken only when the
    /// queue was empty: behind other jobs, a new one changes nothing it waits for
    /// (each wake-up is a context switch, and a burst of stops queues two or three
    /// jobs each).
    fn push(&self, job: Job) {
        let number = {
            let mut queue = self.shared.lock();
            queue.queued += 1;
            queue.queued
        };
        info!(job = number, what = %job.describe(), "after-reply work queued");
        let mut queue = self.shared.lock();
        let was_empty = queue.jobs.is_empty();
        queue.jobs.push_back((Instant::now(), number, job));
        drop(queue);
        if was_empty {
            self.shared.changed.notify_all();
        }
        self.ensure_worker();
    }

    fn ensure_worker(&self) {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_some() {
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("qsd-background".into())
            .spawn(move || work(&shared));
        match spawned {
            Ok(handle) => *worker = Some(handle),
            Err(err) => {
                warn!(error = %err, "cannot start the background worker; doing its work now");
                drop(worker);
                drain_here(&self.shared);
            }
        }
    }

    /// Run every job queued so far (and any it queued) without waiting for quiet, and
    /// wait until they are done.
    pub fn settle(&self) {
        let mut queue = self.shared.lock();
        queue.settling += 1;
        self.shared.changed.notify_all();
        while !queue.jobs.is_empty() || queue.busy {
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
        queue.settling -= 1;
    }

    /// An operation runs until the guard is dropped: jobs wait for it (see the module
    /// comment).
    pub fn activity(&self) -> Activity {
        self.shared.lock().operations += 1;
        Activity {
            shared: self.shared.clone(),
        }
    }
}

/// An operation in progress, holding the background jobs back ([`Background::activity`]).
pub struct Activity {
    shared: Arc<Shared>,
}

impl Drop for Activity {
    /// Wakes the worker only when the engine has become idle with jobs waiting: while
    /// other operations run, its deadline ([`Queue::wait_for_next`]) is unchanged.
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.operations -= 1;
        queue.last_operation = Instant::now();
        let idle_with_jobs = queue.operations == 0 && !queue.jobs.is_empty();
        drop(queue);
        if idle_with_jobs {
            self.shared.changed.notify_all();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = worker {
            let _ = handle.join();
        }
    }
}

/// The worker: jobs in order, each once the engine is quiet (or it waited long
/// enough), until the owner closes and the queue is empty.
fn work(shared: &Shared) {
    let mut queue = shared.lock();
    loop {
        if queue.jobs.is_empty() {
            if queue.closing {
                return;
            }
            queue = shared
                .changed
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let wait = queue.wait_for_next(Instant::now());
        if !wait.is_zero() {
            queue = shared
                .changed
                .wait_timeout(queue, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        let (_, number, job) = queue.jobs.pop_front().expect("a job");
        queue.busy = true;
        drop(queue);
        run(number, job);
        queue = shared.lock();
        queue.busy = false;
        shared.changed.notify_all();
    }
}

/// Run every queued job on this thread (no worker could be started).
/// Busy while a job runs and signalled after each, as the worker does, so that a
/// `settle` waiting meanwhile sees the queue empty.
fn drain_here(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.lock();
            let job = queue.jobs.pop_front();
            queue.busy = job.is_some();
            job
        };
        let Some((_, number, job)) = job else {
            shared.changed.notify_all();
            return;
        };
        run(number, job);
        shared.lock().busy = false;
        shared.changed.notify_all();
    }
}

fn run(number: u64, job: Job) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
        Job::Reap { dir, name } => reap_now(&dir, &name),
        Job::Task { run, .. } => run(),
    }));
    if outcome.is_err() {
        warn!(
            job = number,
            "a background job panicked; the worker goes on"
        );
    }
    info!(job = number, "after-reply work done");
}

impl Job {
    fn describe(&self) -> String {
        match self {
            Job::Reap { dir, name } => format!("delete {}", dir.join(name).display()),
            Job::Task { what, .. } => what.clone(),
        }
    }
}

/// Unlink the discarded file `name` of `dir` (no fsync: see the module comment).
pub fn reap_now(dir: &Dir, name: &str) {
    let path = dir.join(name);
    match sys::unlink_at(dir.fd(), name) {
        Ok(()) => info!(op = "remove", path = %path.display(), "discarded file deleted"),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => warn!(
            op = "remove", path = %path.display(), error = %err,
            "cannot delete a discarded file; the start-up sweep will"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn settle_waits_for_every_queued_job_in_order() {
        let background = Background::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let order = order.clone();
            background.spawn("test", move || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                order.lock().unwrap().push(i);
            });
        }
        background.settle();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_job_waits_for_the_running_operation_and_then_for_quiet() {
        let background = Background::new();
        let activity = background.activity();
        let ran = Arc::new(Mutex::new(None));
        let at = ran.clone();
        background.spawn("test", move || *at.lock().unwrap() = Some(Instant::now()));
        let ended = Instant::now();
        drop(activity);
        let deadline = ended + MAX_DEFERRAL * 2;
        while ran.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the job never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        let ran_at = ran.lock().unwrap().unwrap();
        assert!(ran_at >= ended + QUIET, "ran before the engine was quiet");
        // Woken when the engine became idle, not left waiting for its deferral.
        assert!(
            ran_at < ended + MAX_DEFERRAL / 2,
            "the worker was not woken when the engine became idle"
        );
    }

    #[test]
    fn a_job_queued_while_the_worker_waits_idle_runs_without_a_settle() {
        let background = Background::new();
        let ran = Arc::new(AtomicUsize::new(0));
        for expected in 1..=2 {
            // The first job starts the worker; the second finds it idle, waiting
            // without a deadline for a job, and must wake it.
            let counter = ran.clone();
            background.spawn("test", move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            let queued = Instant::now();
            while ran.load(Ordering::SeqCst) < expected {
                assert!(
                    queued.elapsed() < MAX_DEFERRAL * 3,
                    "job {expected} never ran"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // Until the worker has gone back to waiting for a job.
            while background.shared.lock().busy {
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn jobs_queued_during_a_burst_wait_for_its_last_operation() {
        let background = Background::new();
        let (first, second) = (background.activity(), background.activity());
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let counter = ran.clone();
            background.spawn("test", move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(first);
        // The second operation still runs: nothing may start (a settle below would
        // run them at once, so the check waits on the queue itself).
        let deadline = Instant::now() + QUIET * 5;
        while Instant::now() < deadline {
            assert_eq!(
                ran.load(Ordering::SeqCst),
                0,
                "a job ran during an operation"
            );
            std::thread::yield_now();
        }
        let ended = Instant::now();
        drop(second);
        while ran.load(Ordering::SeqCst) < 3 {
            assert!(
                ended.elapsed() < MAX_DEFERRAL / 2,
                "not woken when the burst ended"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_job_runs_after_its_maximum_deferral_however_busy_the_engine() {
        let background = Background::new();
        let _activity = background.activity();
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let queued = Instant::now();
        background.spawn("test", move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        while ran.load(Ordering::SeqCst) == 0 {
            assert!(queued.elapsed() < MAX_DEFERRAL * 3, "the job never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(queued.elapsed() >= MAX_DEFERRAL);
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_worker() {
        let background = Background::new();
        let ran = Arc::new(AtomicUsize::new(0));
        background.spawn("panics", || panic!("a job panicked on purpose"));
        let counter = ran.clone();
        background.spawn("counts", move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        background.settle();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropping_finishes_the_queue_and_reaping_deletes_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("gone"), b"x").unwrap();
        let dir = Dir::open_path(tmp.path()).unwrap();
        let background = Background::new();
        background.reap(&dir, "gone".into());
        background.reap(&dir, "never-there".into());
        drop(background);
        assert!(!tmp.path().join("gone").exists());
    }
}
