//! Work an operation leaves for after its reply, done by one worker thread per engine:
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
//! Jobs run one at a time in the order they were queued; a job that panics is logged
//! and the worker goes on. [`Background::settle`] waits until every queued job is done
//! (tests, benchmarks, and the engine before it is dropped). Dropping the `Background`
//! finishes the queue and joins the worker. The worker is started with the first job.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::{info, warn};

use crate::dir::Dir;
use crate::sys;

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

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// A job is running.
    busy: bool,
    /// The owner is being dropped: finish the queue, then stop.
    closing: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, ends, or the owner closes.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The deferred work of one engine.
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

    fn push(&self, job: Job) {
        self.shared.lock().jobs.push_back(job);
        self.shared.changed.notify_all();
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

    /// Wait until every job queued so far (and any it queued) is done.
    pub fn settle(&self) {
        let mut queue = self.shared.lock();
        while !queue.jobs.is_empty() || queue.busy {
            queue = self
                .shared
                .changed
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
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

/// The worker: jobs in order until the owner closes and the queue is empty.
fn work(shared: &Shared) {
    let mut queue = shared.lock();
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            queue.busy = true;
            drop(queue);
            run(job);
            queue = shared.lock();
            queue.busy = false;
            shared.changed.notify_all();
        } else if queue.closing {
            return;
        } else {
            queue = shared
                .changed
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Run every queued job on this thread (no worker could be started).
fn drain_here(shared: &Shared) {
    loop {
        let job = shared.lock().jobs.pop_front();
        match job {
            Some(job) => run(job),
            None => return,
        }
    }
}

fn run(job: Job) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
        Job::Reap { dir, name } => reap_now(&dir, &name),
        Job::Task { what, run } => {
            tracing::debug!(what, "background task");
            run();
        }
    }));
    if outcome.is_err() {
        warn!("a background job panicked; the worker goes on");
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
