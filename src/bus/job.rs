//! Jobs: every byte copy an operation makes (a reflink is instant and silent) is
//! published as `org.qubes.Storage.Job` at `/org/qubes/Storage/jobs/<n>` while it
//! runs, with progress announced at most ten times a second, `Completed` at the end,
//! and `Cancel` tripping the operation's cancel token (the engine then removes its
//! partial files and the method fails with `Cancelled`).
//!
//! The engine reports progress through [`ProgressSink`] from the blocking thread that
//! runs the operation; creating and removing the object waits for the bus there
//! (`Handle::block_on`, allowed on blocking-pool threads), so the object exists before
//! the first byte moves and is gone — `Completed` sent — before the method replies.
//! Progress updates only store a number; a task of the job publishes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qubes_storage_engine::{CancelToken, ProgressSink};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zbus::message::Header;
use zbus::names::{BusName, UniqueName};
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, OwnedObjectPath, OwnedVariant};

use crate::bus::error::{access_denied, StorageError};
use crate::bus::options::{Options, RawOptions};
use crate::bus::path;
use crate::bus::props::Entry;
use crate::bus::service::{Call, Service};
use crate::bus::signals;

const JOB_INTERFACE: &str = "org.qubes.Storage.Job";
/// At most this often a job announces its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The job numbers `n` of `/org/qubes/Storage/jobs/<n>`: increasing, never reused.
#[derive(Default)]
pub struct JobNumbers(AtomicU64);

impl JobNumbers {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The bytes done and the rate last announced.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Progress {
    done: u64,
    rate: u64,
}

/// One published copy.
pub struct JobState {
    path: OwnedObjectPath,
    operation: String,
    objects: Vec<OwnedObjectPath>,
    total: u64,
    started: Instant,
    start_time_us: u64,
    started_by: u32,
    cancel: CancelToken,
    published: Mutex<Progress>,
}

impl JobState {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Done / total; a copy of no data bytes (all holes) has nothing left to do.
    fn fraction(&self, done: u64) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (done as f64 / self.total as f64).min(1.0)
        }
    }

    /// Stores `done` as announced; returns the changed properties.
    fn publish(&self, done: u64) -> Vec<Entry> {
        let elapsed_us = self.started.elapsed().as_micros().max(1);
        let rate = u64::try_from(u128::from(done) * 1_000_000 / elapsed_us).unwrap_or(u64::MAX);
        let new = Progress { done, rate };
        let old = std::mem::replace(&mut *self.progress(), new);
        if old == new {
            return Vec::new();
        }
        vec![
            ("BytesDone", OwnedVariant::from(done)),
            ("Progress", OwnedVariant::from(self.fraction(done))),
            ("Rate", OwnedVariant::from(rate)),
        ]
    }
}

/// A running copy's object and its publisher task.
struct RunningJob {
    state: Arc<JobState>,
    done: watch::Sender<u64>,
    publisher: JoinHandle<()>,
}

/// The progress sink of one operation: turns its copies into Job objects.
pub struct JobSink {
    svc: Arc<Service>,
    runtime: Handle,
    call: Call,
    cancel: CancelToken,
    current: Mutex<Option<RunningJob>>,
}

impl JobSink {
    /// Must be called inside the tokio runtime.
    pub fn new(svc: Arc<Service>, call: Call, cancel: CancelToken) -> JobSink {
        JobSink {
            svc,
            runtime: Handle::current(),
            call,
            cancel,
            current: Mutex::new(None),
        }
    }

    pub fn operation(&self) -> &'static str {
        self.call.method
    }

    fn current(&self) -> MutexGuard<'_, Option<RunningJob>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn start(&self, operation: &str, total: u64) -> zbus::Result<RunningJob> {
        let number = self.svc.jobs.next();
        let started_by = match &self.call.caller {
            Some(caller) => caller_uid(self.svc.conn(), caller)
                .await
                .unwrap_or(u32::MAX),
            None => u32::MAX,
        };
        let state = Arc::new(JobState {
            path: path::job_path(number),
            operation: operation.to_owned(),
            objects: self.call.objects.clone(),
            total,
            started: Instant::now(),
            start_time_us: micros_since_epoch(),
            started_by,
            cancel: self.cancel.clone(),
            published: Mutex::new(Progress::default()),
        });
        let iface = JobIface {
            svc: Arc::clone(&self.svc),
            state: Arc::clone(&state),
        };
        self.svc.registry.add_job(state.path.clone());
        if let Err(err) = self
            .svc
            .conn()
            .object_server()
            .at(state.path.clone(), iface)
            .await
        {
            self.svc.registry.remove_job(&state.path);
            return Err(err);
        }
        tracing::info!(job = number, op = operation, bytes = total, "job started");
        let (done, updates) = watch::channel(0);
        let publisher = tokio::spawn(publish_progress(
            self.svc.conn().clone(),
            Arc::clone(&state),
            updates,
        ));
        Ok(RunningJob {
            state,
            done,
            publisher,
        })
    }

    async fn finish(&self, job: RunningJob, success: bool) {
        let RunningJob {
            state,
            done,
            publisher,
        } = job;
        let last = *done.borrow();
        drop(done);
        let _ = publisher.await;
        let conn = self.svc.conn();
        let changed = state.publish(last);
        if let Err(err) =
            signals::properties_changed(conn, &state.path, JOB_INTERFACE, &changed).await
        {
            tracing::warn!(error = %err, "cannot announce a job's progress");
        }
        let message = completion_message(success, state.cancel.is_cancelled());
        if let Ok(emitter) = SignalEmitter::new(conn, state.path.clone()) {
            let _ = JobIface::completed(&emitter, success, message).await;
        }
        self.svc.registry.remove_job(&state.path);
        if let Err(err) = conn
            .object_server()
            .remove::<JobIface, _>(state.path.clone())
            .await
        {
            tracing::warn!(error = %err, "cannot remove a job object");
        }
        tracing::info!(job = %state.path.as_str(), success, bytes = last, "job finished");
    }
}

impl ProgressSink for JobSink {
    fn copy_started(&self, operation: &str, total: u64) {
        if let Some(previous) = self.current().take() {
            self.runtime.block_on(self.finish(previous, false));
        }
        match self.runtime.block_on(self.start(operation, total)) {
            Ok(job) => *self.current() = Some(job),
            Err(err) => tracing::warn!(error = %err, "cannot publish a job"),
        }
    }

    fn copy_advanced(&self, done: u64) {
        if let Some(job) = self.current().as_ref() {
            job.done.send_replace(done);
        }
    }

    fn copy_finished(&self, success: bool) {
        if let Some(job) = self.current().take() {
            self.runtime.block_on(self.finish(job, success));
        }
    }
}

/// Announces the latest progress, at most once per [`PROGRESS_INTERVAL`], until the
/// copy ends (the sender is dropped).
async fn publish_progress(
    conn: Connection,
    state: Arc<JobState>,
    mut updates: watch::Receiver<u64>,
) {
    while updates.changed().await.is_ok() {
        let done = *updates.borrow_and_update();
        let changed = state.publish(done);
        if let Err(err) =
            signals::properties_changed(&conn, &state.path, JOB_INTERFACE, &changed).await
        {
            tracing::warn!(error = %err, "cannot announce a job's progress");
        }
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

fn completion_message(success: bool, cancelled: bool) -> &'static str {
    match (success, cancelled) {
        (true, _) => "",
        (false, true) => "The copy was cancelled.",
        (false, false) => "The copy failed.",
    }
}

fn micros_since_epoch() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// The Unix uid of a bus peer, asked of the bus.
pub async fn caller_uid(conn: &Connection, caller: &UniqueName<'_>) -> zbus::Result<u32> {
    let proxy = zbus::fdo::DBusProxy::new(conn).await?;
    Ok(proxy
        .get_connection_unix_user(BusName::Unique(caller.clone()))
        .await?)
}

/// The exported Job object.
pub struct JobIface {
    svc: Arc<Service>,
    state: Arc<JobState>,
}

#[interface(name = "org.qubes.Storage.Job", introspection_docs = false)]
impl JobIface {
    /// Cancel the copy; allowed to the uid that started it and to root.
    async fn cancel(
        &self,
        options: RawOptions,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), zbus::BoxDBusError> {
        Options::parse(options, &[], &"the job")?;
        let sender = header
            .sender()
            .ok_or_else(|| StorageError::failed("A call without a sender."))?;
        let uid = caller_uid(self.svc.conn(), sender)
            .await
            .map_err(|_| StorageError::failed("The caller's uid cannot be determined."))?;
        if uid != 0 && uid != self.state.started_by {
            return Err(access_denied(format!(
                "Job {} was started by uid {}; only that user or root may cancel it.",
                self.state.path.as_str(),
                self.state.started_by
            )));
        }
        tracing::info!(job = %self.state.path.as_str(), uid, "job cancelled");
        self.state.cancel.cancel();
        Ok(())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn operation(&self) -> String {
        self.state.operation.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn objects(&self) -> Vec<OwnedObjectPath> {
        self.state.objects.clone()
    }

    #[zbus(property)]
    async fn progress(&self) -> f64 {
        self.state.fraction(self.state.progress().done)
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn bytes_total(&self) -> u64 {
        self.state.total
    }

    #[zbus(property)]
    async fn bytes_done(&self) -> u64 {
        self.state.progress().done
    }

    #[zbus(property)]
    async fn rate(&self) -> u64 {
        self.state.progress().rate
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn start_time(&self) -> u64 {
        self.state.start_time_us
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn cancelable(&self) -> bool {
        true
    }

    #[zbus(property(emits_changed_signal = "const"), name = "StartedByUID")]
    async fn started_by_uid(&self) -> u32 {
        self.state.started_by
    }

    #[zbus(signal)]
    pub async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(total: u64) -> JobState {
        JobState {
            path: path::job_path(1),
            operation: "ImportVolume".to_owned(),
            objects: Vec::new(),
            total,
            started: Instant::now(),
            start_time_us: micros_since_epoch(),
            started_by: 0,
            cancel: CancelToken::new(),
            published: Mutex::new(Progress::default()),
        }
    }

    #[test]
    fn progress_is_the_done_fraction_capped_at_one() {
        let job = state(200);
        assert_eq!(job.fraction(50), 0.25);
        assert_eq!(job.fraction(400), 1.0);
        assert_eq!(state(0).fraction(0), 1.0);
    }

    #[test]
    fn publishing_announces_done_progress_and_rate_once_per_change() {
        let job = state(100);
        let changed = job.publish(10);
        let names: Vec<_> = changed.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["BytesDone", "Progress", "Rate"]);
        assert_eq!(changed[0].1, OwnedVariant::from(10u64));
        assert_eq!(job.progress().done, 10);
    }

    #[test]
    fn completion_message_says_why_a_copy_ended() {
        assert_eq!(completion_message(true, false), "");
        assert!(completion_message(false, true).contains("cancelled"));
        assert!(completion_message(false, false).contains("failed"));
    }
}
