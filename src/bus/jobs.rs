//! Jobs: every byte copy an operation makes (a reflink is instant and silent) is
//! published as `org.qubes.Storage.Job` at `/org/qubes/Storage/jobs/<n>` while the
//! operation runs: progress announced at most ten times a second, `Completed` and the
//! object's removal when the operation ends — with the operation's own outcome, so a
//! method's reply and its Jobs' `Completed` agree (a Cancel after the copy that
//! changes nothing leaves both successful), except for a copy that failed while the
//! operation succeeded without it (a commit's precache on a full disk): its `Completed`
//! says it did not finish, and why — and `Cancel` tripping the operation's
//! cancel token (the engine then removes its partial files and the method fails with
//! `Cancelled`). Once the operation passes its point of no return (the engine's
//! `ProgressSink::committed`), every Job announces `Cancelable` false.
//!
//! The engine reports progress through [`ProgressSink`] from the blocking thread that
//! runs the operation. Nothing here makes that thread wait: a new Job is queued for the
//! outbox (which serves and announces it), progress is a number stored in the object
//! and announced by a small ticker task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qubes_storage_engine::{CancelToken, ProgressSink};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use zbus::OwnedObjectPath;

use crate::bus::error::BusError;
use crate::bus::objects::{JobObject, Object};
use crate::bus::outbox::{Item, Outbox};
use crate::bus::signals;
use crate::bus::values::JobIdentity;

/// At most this often a job announces its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Who runs an operation and on what, for the Jobs its copies publish.
pub struct JobOwner {
    /// The volume objects involved (destination first).
    pub objects: Vec<OwnedObjectPath>,
    /// The caller's uid (`u32::MAX` when unknown: then only root may cancel).
    pub uid: u32,
}

struct Running {
    job: Arc<JobObject>,
    ticker: Option<JoinHandle<()>>,
    /// Why its copy failed, if it did.
    failed: Option<String>,
    what: CopyFor,
}

/// What a Job's copy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyFor {
    /// The call's own work (a clone's copy, an import's private copy, …).
    Work,
    /// The target's own image, after the commit (a commit's precache): the call
    /// succeeds without it.
    OwnImage,
}

/// The progress sink of one operation: turns its copies into Job objects.
pub struct JobSink {
    outbox: Outbox,
    runtime: Handle,
    owner: JobOwner,
    cancel: CancelToken,
    numbers: Box<dyn Fn() -> u64 + Send + Sync>,
    jobs: Mutex<Vec<Running>>,
    /// The operation passed its point of no return: a Job started from now on (the
    /// copy of a commit's precache on a pool without reflinks) is announced not
    /// cancelable from its first InterfacesAdded.
    committed: AtomicBool,
}

impl JobSink {
    /// Must be called inside the tokio runtime.
    pub fn new(
        outbox: Outbox,
        owner: JobOwner,
        cancel: CancelToken,
        numbers: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> JobSink {
        JobSink {
            outbox,
            runtime: Handle::current(),
            owner,
            cancel,
            numbers: Box::new(numbers),
            jobs: Mutex::new(Vec::new()),
            committed: AtomicBool::new(false),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, Vec<Running>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operation ended: every Job announces its last progress and `Completed` with
    /// the operation's outcome, then disappears.
    pub fn finish<T>(&self, outcome: &Result<T, BusError>) {
        for running in self.jobs().drain(..) {
            if let Some(ticker) = running.ticker {
                ticker.abort();
            }
            let (success, message) = match (outcome, running.failed) {
                (Err(err), _) => (false, err.message().to_owned()),
                (Ok(_), Some(why)) if running.what == CopyFor::OwnImage => (
                    false,
                    format!("{why}; the call succeeded without it: the volume's next start copies its image instead"),
                ),
                (Ok(_), Some(why)) => (
                    false,
                    format!("{why}; the call succeeded without this copy"),
                ),
                (Ok(_), None) => (true, String::new()),
            };
            let job = running.job;
            self.outbox
                .send(Item::Job(Arc::clone(&job), job.progress_now()));
            match signals::job_completed(&job.path.as_ref(), success, &message) {
                Ok(signal) => self.outbox.send(Item::Send(signal)),
                Err(err) => tracing::error!(error = %err, "cannot build Completed"),
            }
            self.outbox
                .send(Item::Unexport(Object::Job(Arc::clone(&job))));
            tracing::info!(
                job = job.number,
                success,
                bytes = job.progress_now().done,
                "job finished"
            );
        }
    }
}

impl ProgressSink for JobSink {
    fn copy_started(&self, operation: &str, total: u64) {
        self.start_job(operation, total, self.owner.objects.clone(), CopyFor::Work);
    }

    /// The copy of the target's own image (a commit's precache on a pool without
    /// reflinks) works on the target alone: its Objects name no source.
    fn own_copy_started(&self, operation: &str, total: u64) {
        let target = self.owner.objects.iter().take(1).cloned().collect();
        self.start_job(operation, total, target, CopyFor::OwnImage);
    }
    fn copy_advanced(&self, done: u64) {
        if let Some(running) = self.jobs().last() {
            running.job.advance(done);
        }
    }

    fn copy_failed(&self, why: &str) {
        if let Some(running) = self.jobs().last_mut() {
            running.failed = Some(why.to_owned());
        }
    }

    fn copy_finished(&self, _success: bool) {
        self.stop_tickers();
        if let Some(running) = self.jobs().last() {
            let job = Arc::clone(&running.job);
            self.outbox
                .send(Item::Job(Arc::clone(&job), job.progress_now()));
        }
    }

    /// Past the point of no return a Cancel changes nothing: every Job says so.
    fn committed(&self) {
        self.committed.store(true, Ordering::Relaxed);
        for running in self.jobs().iter() {
            running.job.commit();
            let job = Arc::clone(&running.job);
            self.outbox
                .send(Item::Job(Arc::clone(&job), job.progress_now()));
        }
    }
}

impl JobSink {
    /// Publishes a Job for a copy of `total` bytes working on `objects`.
    fn start_job(&self, operation: &str, total: u64, objects: Vec<OwnedObjectPath>, what: CopyFor) {
        self.stop_tickers();
        let identity = JobIdentity {
            operation: operation.to_owned(),
            objects,
            total,
            start_time_us: micros_since_epoch(),
            started_by: self.owner.uid,
        };
        let number = (self.numbers)();
        let job = JobObject::new(number, identity, self.cancel.clone());
        if self.committed.load(Ordering::Relaxed) {
            // Announced so from its InterfacesAdded (which carries the announced values).
            job.commit();
            job.announce(job.progress_now());
        }
        let job = Arc::new(job);
        tracing::info!(job = number, op = operation, bytes = total, "job started");
        self.outbox.send(Item::Export {
            object: Object::Job(Arc::clone(&job)),
            live: Vec::new(),
        });
        let ticker = self
            .runtime
            .spawn(tick(Arc::clone(&job), self.outbox.clone()));
        self.jobs().push(Running {
            job,
            ticker: Some(ticker),
            failed: None,
            what,
        });
    }

    fn stop_tickers(&self) {
        for running in self.jobs().iter_mut() {
            if let Some(ticker) = running.ticker.take() {
                ticker.abort();
            }
        }
    }
}

/// Queues the job's progress whenever it moved, at most once per [`PROGRESS_INTERVAL`].
async fn tick(job: Arc<JobObject>, outbox: Outbox) {
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = job.progress_now();
    loop {
        interval.tick().await;
        let now = job.progress_now();
        if now.done != last.done {
            outbox.send(Item::Job(Arc::clone(&job), now));
            last = now;
        }
    }
}

fn micros_since_epoch() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}
