//! Following the service's Job objects while a long method call runs (ImportVolume for
//! `volume clone`, a copying Resize, the ImportDataEnd that commits an import).
//!
//! The service publishes `/org/qubes/Storage/jobs/<n>` (`org.qubes.Storage.Job`) for
//! every byte copy while the call is still running, and replies only when the work is
//! done; the Jobs of one call announce `Completed` together, when the call ends. So:
//! subscribe to `InterfacesAdded`, Job `PropertiesChanged` and `Completed` *before*
//! calling, adopt each Job of this call — its `Objects` begin with the target, its
//! `Operation` is the method called and its `StartedByUID` is ours (not another
//! caller's copy of the same volume, which Ctrl-C must never cancel) — one after the other
//! (a call's copies run one at a time, so a new Job means the previous copy is done and
//! its bar is finished), and drive a progress bar from its `BytesDone`/`BytesTotal`. No
//! bar is shown when no job appears (a reflink is instant).
//!
//! One call may copy more than once: on a pool without reflinks a commit also copies
//! the new image into the precache, the spare copy that makes the next start a rename
//! (docs/reference.md, R§3.9; the revision it keeps is a hard link, no copy). That job
//! gets the commit label, and the first commit copy a one-line note on stderr, so a
//! second bar is not a surprise.
//!
//! Ctrl-C calls the current job's `Cancel` (and that of each job adopted after it);
//! the call then fails with `Cancelled`. Ctrl-C before the call was sent sends nothing;
//! before any job appeared it waits for the call (and cancels the job should one still
//! appear).

use std::future::Future;

use futures_util::StreamExt;
use indicatif::ProgressBar;
use zbus::Message;

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::interrupt::Interrupt;
use crate::model::JobInfo;
use crate::paths::{is_in_namespace, JOBS_PATH, JOB_IFACE};
use crate::progress::ProgressMode;
use crate::signals::{self, SignalStream};

/// The job adopted for the target, with its bar.
struct FollowedJob {
    path: String,
    info: JobInfo,
    bar: ProgressBar,
    ended: bool,
}

/// The labels of a call's bars: its own copy first (when the call makes one), then the
/// copies of the commit.
#[derive(Debug, Clone)]
pub struct Labels {
    main: Option<String>,
    commit: String,
    /// The call's own copy names a source volume besides the target (a clone), so a
    /// copy that names the target alone is the commit's.
    main_names_source: bool,
}

impl Labels {
    /// A clone (ImportVolume of another volume), then the commit of `volume`. Its own
    /// copy names the source too; a clone that needs no copy (a hard link or a reflink
    /// of the source) makes only the commit's, which names the target alone.
    pub fn clone_then_commit(main: String, volume: &str) -> Labels {
        Labels {
            main_names_source: true,
            ..Labels::copy_then_commit(main, volume)
        }
    }

    /// A call that copies data itself (clone, resize), then commits `volume`.
    pub fn copy_then_commit(main: String, volume: &str) -> Labels {
        Labels {
            main: Some(main),
            commit: commit_label(volume),
            main_names_source: false,
        }
    }

    /// A call that only commits `volume` (ImportDataEnd).
    pub fn commit(volume: &str) -> Labels {
        Labels {
            main: None,
            commit: commit_label(volume),
            main_names_source: false,
        }
    }
}

fn commit_label(volume: &str) -> String {
    format!("commit {volume} (no reflinks: extra copy)")
}

/// Why a commit copies on a pool without reflinks, said once per run.
const COMMIT_COPIES_NOTE: &str = "this pool cannot reflink, so the commit copies the \
    new image again, into the precache that makes the next start a rename (twice the \
    space and time of a copy)";

/// What is being watched, and what has been seen.
pub struct JobWatch {
    signals: SignalStream,
    target: String,
    /// The method called: the `Operation` of its jobs.
    method: String,
    labels: Labels,
    mode: ProgressMode,
    job: Option<FollowedJob>,
    /// How many jobs were adopted so far.
    adopted: usize,
    /// How many of them were the commit's copies.
    commit_copies: usize,
    /// Why a copy did not finish, as its `Completed` said: told after a call that
    /// succeeded without it (a commit's precache on a full disk).
    unfinished: Option<String>,
}

impl JobWatch {
    /// Subscribes to job signals for operations on the object at `target`; a bar
    /// follows each job once it appears.
    pub async fn subscribe(
        client: &Client,
        target: &str,
        method: &str,
        labels: Labels,
        mode: ProgressMode,
    ) -> Result<JobWatch> {
        let rules = vec![
            signals::object_manager_signals()?,
            signals::properties_changed(JOBS_PATH)?,
            signals::job_signals()?,
        ];
        let signals = signals::subscribe(client.connection(), rules).await?;
        Ok(JobWatch {
            signals,
            target: target.to_owned(),
            method: method.to_owned(),
            labels,
            mode,
            job: None,
            adopted: 0,
            commit_copies: 0,
            unfinished: None,
        })
    }

    /// The job followed has passed its point of no return (the service says so:
    /// `Cancelable` false): its copy is done and being committed.
    fn past_cancel(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|job| !job.ended && !job.info.cancelable)
    }

    /// The job being followed, while it runs.
    fn job_path(&self) -> Option<&str> {
        self.job
            .as_ref()
            .filter(|job| !job.ended)
            .map(|job| job.path.as_str())
    }

    /// The label of the next job, `info`, and whether it is the first commit copy: the
    /// call's own copy comes first, when it makes one, then the commit's copies; a
    /// clone's own copies (a private copy of a snapshots-disabled source, then the
    /// copy of it) name the source, the commit's copies the target alone.
    fn next_label(&self, info: &JobInfo) -> (String, bool) {
        let own_copy = match self.labels.main_names_source {
            true => info.objects.len() > 1,
            false => self.adopted == 0,
        };
        match &self.labels.main {
            Some(main) if own_copy => (main.clone(), false),
            _ => (self.labels.commit.clone(), self.commit_copies == 0),
        }
    }

    fn handle(&mut self, message: &Message) {
        let header = message.header();
        let (Some(path), Some(member)) = (header.path(), header.member()) else {
            return;
        };
        match member.as_str() {
            "InterfacesAdded" => self.adopt_if_ours(message),
            "PropertiesChanged" if Some(path.as_str()) == self.job_path() => {
                self.apply_change(message)
            }
            "Completed" if Some(path.as_str()) == self.job_path() => {
                let (success, why) = message
                    .body()
                    .deserialize::<(bool, String)>()
                    .unwrap_or((false, String::new()));
                if !success && !why.is_empty() {
                    self.unfinished = Some(why);
                }
                self.end(success);
            }
            _ => {}
        }
    }

    fn adopt_if_ours(&mut self, message: &Message) {
        let Some((path, interfaces)) = signals::interfaces_added(message) else {
            return;
        };
        let Some(properties) = interfaces.get(JOB_IFACE) else {
            return;
        };
        let info = JobInfo::from_properties(properties);
        if is_in_namespace(&path, JOBS_PATH) && self.is_ours(&info) {
            // The previous copy of the call ended before this one started.
            self.end(true);
            let (label, first_commit_copy) = self.next_label(&info);
            if first_commit_copy && self.mode != ProgressMode::Hidden {
                crate::output::say(format_args!("note: {COMMIT_COPIES_NOTE}"));
            }
            if label == self.labels.commit {
                self.commit_copies += 1;
            }
            self.adopted += 1;
            let bar = self.mode.byte_bar(&label, info.bytes_total);
            bar.set_position(info.bytes_done);
            self.job = Some(FollowedJob {
                path,
                info,
                bar,
                ended: false,
            });
        }
    }

    /// A job of the call being watched: on its target (named first), made by the
    /// method called, for this user.
    fn is_ours(&self, info: &JobInfo) -> bool {
        info.objects.first() == Some(&self.target)
            && info.operation == self.method
            && info
                .started_by
                .is_none_or(|uid| uid == nix::unistd::getuid().as_raw())
    }

    fn apply_change(&mut self, message: &Message) {
        let (Some(job), Some((_, changed, _))) =
            (self.job.as_mut(), signals::properties_changed_body(message))
        else {
            return;
        };
        job.info.update(&changed);
        job.bar.set_length(job.info.bytes_total);
        job.bar.set_position(job.info.bytes_done);
    }

    /// Takes the bar down once: with a summary on success, silently otherwise.
    fn end(&mut self, success: bool) {
        let Some(job) = self.job.as_mut().filter(|job| !job.ended) else {
            return;
        };
        job.ended = true;
        match success {
            true => self.mode.finish(&job.bar),
            false => self.mode.abandon(&job.bar),
        }
    }

    /// The call replied. The service sends a job's last progress and `Completed`
    /// before the reply, so they are queued by now: they are taken in before the bar
    /// ends, which then shows the final figures.
    fn call_ended(&mut self, success: bool) {
        for message in signals::queued(&mut self.signals) {
            self.handle(&message);
        }
        self.end(success);
        if let Some(why) = self.unfinished.take().filter(|_| success) {
            crate::output::say(format_args!("note: a copy did not finish: {why}"));
        }
    }

    /// Asks the service to cancel the job at `path`; a job that already ended is fine.
    async fn cancel(client: &Client, path: &str) {
        let reply: Result<()> = client
            .call(path, JOB_IFACE, "Cancel", &(client.options(),))
            .await;
        if let Err(error) = reply {
            crate::output::say(format_args!(
                "qubes-storage: could not cancel the job: {error}"
            ));
        }
    }
}

/// Said when Ctrl-C comes after the copy: the commit that follows is not cancelled.
pub const TOO_LATE: &str =
    "qubes-storage: too late to cancel: the copy is done and is being committed; \
     waiting for it to finish (Ctrl-C again to stop waiting)";

/// Runs `call` (a method call on `target`) while following its job; returns the
/// call's own result, which is `Cancelled` when Ctrl-C cancelled the job. A Ctrl-C
/// after the copy ended says it is too late ([`TOO_LATE`]) and waits for the commit.
pub async fn run_following_job<T>(
    client: &Client,
    mut watch: JobWatch,
    interrupt: &Interrupt,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    if interrupt.is_requested() {
        // Nothing was sent yet (a call future sends when first polled).
        return Err(CliError::Cancelled(
            "cancelled before it was sent".to_owned(),
        ));
    }
    tokio::pin!(call);
    // The job a Cancel was sent to: each job adopted after Ctrl-C is cancelled too.
    let mut cancelled: Option<String> = None;
    let mut told_too_late = false;
    loop {
        if interrupt.is_requested() {
            if watch.past_cancel() {
                if !told_too_late {
                    told_too_late = true;
                    crate::output::say(format_args!("{TOO_LATE}"));
                }
            } else if let Some(path) = watch
                .job_path()
                .filter(|p| cancelled.as_deref() != Some(*p))
            {
                let path = path.to_owned();
                JobWatch::cancel(client, &path).await;
                cancelled = Some(path);
            }
        }
        tokio::select! {
            result = &mut call => {
                watch.call_ended(result.is_ok());
                return result;
            }
            () = interrupt.requested(), if !interrupt.is_requested() => {}
            Some(message) = watch.signals.next() => watch.handle(&message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::{ObjectPath, Variant};

    use crate::paths::{OBJECT_MANAGER_IFACE, PROPERTIES_IFACE, ROOT_PATH};

    fn watch_for(target: &str) -> JobWatch {
        JobWatch {
            signals: Box::pin(futures_util::stream::empty()),
            target: target.to_owned(),
            method: "ImportVolume".to_owned(),
            labels: Labels::copy_then_commit("clone".to_owned(), "p:v"),
            mode: ProgressMode::Hidden,
            job: None,
            adopted: 0,
            commit_copies: 0,
            unfinished: None,
        }
    }

    fn job_completed(job: &str) -> Message {
        Message::signal(job, JOB_IFACE, "Completed")
            .build(&(true, ""))
            .unwrap()
    }

    fn job_added(job: &str, objects: &[&str], done: u64) -> Message {
        let uid = nix::unistd::getuid().as_raw();
        job_added_by(job, objects, done, "ImportVolume", uid)
    }

    fn job_added_by(job: &str, objects: &[&str], done: u64, operation: &str, uid: u32) -> Message {
        let objects: Vec<ObjectPath<'_>> = objects
            .iter()
            .map(|o| ObjectPath::try_from(*o).unwrap())
            .collect();
        let mut props: HashMap<&str, Variant<'_>> = HashMap::new();
        props.insert("Operation", Variant::from(operation));
        props.insert("StartedByUID", Variant::from(uid));
        props.insert("Objects", Variant::from(objects));
        props.insert("BytesTotal", Variant::from(100u64));
        props.insert("BytesDone", Variant::from(done));
        let interfaces = HashMap::from([(JOB_IFACE, props)]);
        Message::signal(ROOT_PATH, OBJECT_MANAGER_IFACE, "InterfacesAdded")
            .build(&(ObjectPath::try_from(job).unwrap(), interfaces))
            .unwrap()
    }

    fn bytes_done_changed(job: &str, done: u64) -> Message {
        let changed = HashMap::from([("BytesDone", Variant::from(done))]);
        Message::signal(job, PROPERTIES_IFACE, "PropertiesChanged")
            .build(&(JOB_IFACE, changed, Vec::<&str>::new()))
            .unwrap()
    }

    /// A Ctrl-C is too late once the service says the job can no longer be cancelled
    /// (its copy is done and being committed), not before, and not for an ended job.
    #[test]
    fn a_job_is_past_cancel_when_it_stops_being_cancelable() {
        let job = "/org/qubes/Storage/jobs/3";
        let mut watch = watch_for("/v/dst");
        assert!(!watch.past_cancel());
        let mut added = job_added(job, &["/v/dst", "/v/src"], 10);
        watch.handle(&added);
        assert!(!watch.past_cancel(), "cancelable while it copies");
        let changed = HashMap::from([("Cancelable", Variant::from(false))]);
        added = Message::signal(job, PROPERTIES_IFACE, "PropertiesChanged")
            .build(&(JOB_IFACE, changed, Vec::<&str>::new()))
            .unwrap();
        watch.handle(&added);
        assert!(watch.past_cancel());
        watch.handle(&job_completed(job));
        assert!(!watch.past_cancel(), "an ended job is nothing to wait for");
    }

    #[test]
    fn job_naming_the_target_first_is_adopted() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/jobs/1", &["/v/src"], 0));
        assert_eq!(watch.job_path(), None);
        watch.handle(&job_added(
            "/org/qubes/Storage/jobs/2",
            &["/v/dst", "/v/src"],
            10,
        ));
        assert_eq!(watch.job_path(), Some("/org/qubes/Storage/jobs/2"));
        assert_eq!(watch.job.as_ref().unwrap().info.bytes_done, 10);
    }

    /// Another caller's copy that involves the target — a clone of it into another
    /// volume, a measurement of it, another user's call — is not this call's: its bar is
    /// not shown and Ctrl-C never cancels it.
    #[test]
    fn another_calls_job_on_the_target_is_not_adopted() {
        let mut watch = watch_for("/v/dst");
        let me = nix::unistd::getuid().as_raw();
        let jobs = "/org/qubes/Storage/jobs";
        watch.handle(&job_added(&format!("{jobs}/1"), &["/v/other", "/v/dst"], 0));
        watch.handle(&job_added_by(
            &format!("{jobs}/2"),
            &["/v/dst"],
            0,
            "MeasureSpace",
            me,
        ));
        watch.handle(&job_added_by(
            &format!("{jobs}/3"),
            &["/v/dst"],
            0,
            "ImportVolume",
            me + 1,
        ));
        assert_eq!(watch.job_path(), None);
        watch.handle(&job_added_by(
            &format!("{jobs}/4"),
            &["/v/dst"],
            0,
            "ImportVolume",
            me,
        ));
        assert_eq!(watch.job_path(), Some("/org/qubes/Storage/jobs/4"));
    }

    #[test]
    fn only_the_adopted_job_moves_the_bar() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/jobs/2", &["/v/dst"], 0));
        watch.handle(&bytes_done_changed("/org/qubes/Storage/jobs/3", 99));
        assert_eq!(watch.job.as_ref().unwrap().info.bytes_done, 0);
        watch.handle(&bytes_done_changed("/org/qubes/Storage/jobs/2", 60));
        assert_eq!(watch.job.as_ref().unwrap().info.bytes_done, 60);
    }

    #[test]
    fn the_jobs_after_the_first_are_followed_as_commit_copies() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/jobs/2", &["/v/dst"], 0));
        assert_eq!(
            watch.next_label(&naming(&["/v/dst"])).0,
            "commit p:v (no reflinks: extra copy)"
        );
        watch.handle(&job_added("/org/qubes/Storage/jobs/3", &["/v/dst"], 0));
        assert_eq!(watch.job_path(), Some("/org/qubes/Storage/jobs/3"));
        assert_eq!(watch.adopted, 2);
    }

    #[test]
    fn a_new_job_of_the_call_ends_the_previous_bar_and_completed_ends_the_last() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/jobs/2", &["/v/dst"], 0));
        watch.handle(&job_added("/org/qubes/Storage/jobs/3", &["/v/dst"], 0));
        watch.handle(&job_completed("/org/qubes/Storage/jobs/2"));
        assert_eq!(watch.job_path(), Some("/org/qubes/Storage/jobs/3"));
        watch.handle(&job_completed("/org/qubes/Storage/jobs/3"));
        assert_eq!(watch.job_path(), None);
    }

    #[test]
    fn a_commit_only_call_labels_its_first_job_as_a_commit_copy() {
        let mut watch = watch_for("/v/dst");
        watch.labels = Labels::commit("p:v");
        assert_eq!(
            watch.next_label(&naming(&["/v/dst"])),
            ("commit p:v (no reflinks: extra copy)".to_owned(), true)
        );
    }

    /// A clone that needed no copy of its own (a hard link of the source) makes only
    /// the commit's copy, which names the target alone: it gets the commit's label and
    /// the note, and a clone's own copy names the source too.
    #[test]
    fn a_clones_first_job_is_its_own_copy_only_when_it_names_the_source() {
        let mut watch = watch_for("/v/dst");
        watch.labels = Labels::clone_then_commit("clone".to_owned(), "p:v");
        assert_eq!(
            watch.next_label(&naming(&["/v/dst", "/v/src"])),
            ("clone".to_owned(), false)
        );
        let commit = ("commit p:v (no reflinks: extra copy)".to_owned(), true);
        assert_eq!(watch.next_label(&naming(&["/v/dst"])), commit);
        watch.handle(&job_added("/org/qubes/Storage/jobs/2", &["/v/dst"], 0));
        assert_eq!(watch.commit_copies, 1);
        let second = watch.next_label(&naming(&["/v/dst"]));
        assert!(!second.1, "the note is said once");
    }

    fn naming(objects: &[&str]) -> JobInfo {
        JobInfo {
            objects: objects.iter().map(|o| o.to_string()).collect(),
            ..JobInfo::default()
        }
    }

    #[test]
    fn the_signals_queued_before_the_reply_end_the_bar_with_the_final_progress() {
        let mut watch = watch_for("/v/dst");
        let queued = vec![
            job_added("/org/qubes/Storage/jobs/2", &["/v/dst"], 0),
            bytes_done_changed("/org/qubes/Storage/jobs/2", 100),
            job_completed("/org/qubes/Storage/jobs/2"),
        ];
        watch.signals = Box::pin(futures_util::stream::iter(queued));
        watch.call_ended(true);
        let job = watch.job.as_ref().expect("the job was adopted");
        assert!(job.ended);
        assert_eq!(job.bar.position(), 100);
    }

    #[test]
    fn objects_outside_the_jobs_path_are_not_jobs() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/pools/p", &["/v/dst"], 0));
        assert_eq!(watch.job_path(), None);
    }
}
