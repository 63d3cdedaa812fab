//! Following the service's Job object while a long method call runs (ImportVolume
//! for `volume clone`, a copying Resize).
//!
//! The service publishes `/org/qubes/Storage/jobs/<n>` (`org.qubes.Storage.Job`)
//! while the call is still running and replies only when the work is done. So: subscribe
//! to `InterfacesAdded`, Job `PropertiesChanged` and `Completed` *before* calling,
//! adopt the first Job whose `Objects` holds the target volume, and drive a progress bar
//! from its `BytesDone`/`BytesTotal`. No bar is shown when no job appears (a reflink
//! clone is instant). Ctrl-C calls the job's `Cancel`; the call then fails with
//! `Cancelled`. Ctrl-C before any job appeared waits for the call (and cancels the job
//! should one still appear).

use std::future::Future;

use futures_util::StreamExt;
use indicatif::ProgressBar;
use zbus::Message;

use crate::client::Client;
use crate::error::Result;
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

/// What is being watched, and what has been seen.
pub struct JobWatch {
    signals: SignalStream,
    target: String,
    label: String,
    mode: ProgressMode,
    job: Option<FollowedJob>,
}

impl JobWatch {
    /// Subscribes to job signals for operations on the object at `target`; a bar
    /// labelled `label` follows the job once it appears.
    pub async fn subscribe(
        client: &Client,
        target: &str,
        label: String,
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
            label,
            mode,
            job: None,
        })
    }

    fn job_path(&self) -> Option<&str> {
        self.job.as_ref().map(|job| job.path.as_str())
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
                let success = message
                    .body()
                    .deserialize::<(bool, String)>()
                    .is_ok_and(|(ok, _)| ok);
                self.end(success);
            }
            _ => {}
        }
    }

    fn adopt_if_ours(&mut self, message: &Message) {
        if self.job.is_some() {
            return;
        }
        let Some((path, interfaces)) = signals::interfaces_added(message) else {
            return;
        };
        let Some(properties) = interfaces.get(JOB_IFACE) else {
            return;
        };
        let info = JobInfo::from_properties(properties);
        if is_in_namespace(&path, JOBS_PATH) && info.objects.contains(&self.target) {
            let bar = self.mode.byte_bar(&self.label, info.bytes_total);
            bar.set_position(info.bytes_done);
            self.job = Some(FollowedJob {
                path,
                info,
                bar,
                ended: false,
            });
        }
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

    /// Asks the service to cancel the adopted job; a job that already ended is fine.
    async fn cancel(&self, client: &Client) -> bool {
        let Some(path) = self.job_path() else {
            return false;
        };
        let reply: Result<()> = client
            .call(path, JOB_IFACE, "Cancel", &(client.options(),))
            .await;
        if let Err(error) = reply {
            eprintln!("qubes-storage: could not cancel the job: {error}");
        }
        true
    }
}

/// Runs `call` (a method call on `target`) while following its job; returns the
/// call's own result, which is `Cancelled` when Ctrl-C cancelled the job.
pub async fn run_following_job<T>(
    client: &Client,
    mut watch: JobWatch,
    interrupt: &Interrupt,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::pin!(call);
    let mut cancel_sent = false;
    loop {
        if interrupt.is_requested() && !cancel_sent {
            cancel_sent = watch.cancel(client).await;
        }
        tokio::select! {
            result = &mut call => {
                watch.end(result.is_ok());
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
            label: "clone".to_owned(),
            mode: ProgressMode::Hidden,
            job: None,
        }
    }

    fn job_added(job: &str, objects: &[&str], done: u64) -> Message {
        let objects: Vec<ObjectPath<'_>> = objects
            .iter()
            .map(|o| ObjectPath::try_from(*o).unwrap())
            .collect();
        let mut props: HashMap<&str, Variant<'_>> = HashMap::new();
        props.insert("Operation", Variant::from("clone"));
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

    #[test]
    fn job_naming_the_target_is_adopted() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/jobs/1", &["/v/src"], 0));
        assert_eq!(watch.job_path(), None);
        watch.handle(&job_added(
            "/org/qubes/Storage/jobs/2",
            &["/v/src", "/v/dst"],
            10,
        ));
        assert_eq!(watch.job_path(), Some("/org/qubes/Storage/jobs/2"));
        assert_eq!(watch.job.as_ref().unwrap().info.bytes_done, 10);
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
    fn objects_outside_the_jobs_path_are_not_jobs() {
        let mut watch = watch_for("/v/dst");
        watch.handle(&job_added("/org/qubes/Storage/pools/p", &["/v/dst"], 0));
        assert_eq!(watch.job_path(), None);
    }
}
