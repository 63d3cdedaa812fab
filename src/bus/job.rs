//! `org.qubes.Storage.Job`: `Cancel` of a running copy. Allowed to the uid that
//! started the operation and to root (contract rev 2; no polkit action). Cancelling
//! trips the operation's cancel token; while the copy runs the engine stops, removes
//! its partial files and the method fails with `Cancelled`. A Cancel after the copy
//! has finished changes nothing: the operation completes, and its reply and the Job's
//! `Completed` agree (`jobs.rs`).

use std::sync::Arc;

use crate::bus::call::{Answer, Call};
use crate::bus::error::{quote, BusError, BusResult, Standard};
use crate::bus::objects::JobObject;
use crate::bus::options::{Options, RawOptions};
use crate::bus::service::Service;

/// Answers a call of `member` on a Job.
pub async fn answer(
    svc: &Arc<Service>,
    call: &Call,
    job: &Arc<JobObject>,
    member: &str,
) -> BusResult<Answer> {
    match member {
        "Cancel" => cancel(svc, call, job).await,
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!("org.qubes.Storage.Job has no method {}", quote(member)),
        )),
    }
}

async fn cancel(svc: &Arc<Service>, call: &Call, job: &Arc<JobObject>) -> BusResult<Answer> {
    let (raw,): (RawOptions,) = call.args()?;
    let what = format!("job {}", job.path.as_str());
    Options::parse(raw, &[], &what)?;
    let sender = call
        .sender()
        .ok_or_else(|| BusError::failed("A call without a sender"))?;
    let uid = svc
        .uid_of(&sender)
        .await
        .ok_or_else(|| BusError::failed("The caller's uid cannot be determined"))?;
    let started_by = job.identity.started_by;
    if uid != 0 && uid != started_by {
        return Err(BusError::access_denied(format!(
            "Job {} was started by uid {started_by}; only that user or root may cancel it",
            job.path.as_str()
        )));
    }
    tracing::info!(job = job.number, uid, "job cancelled");
    job.cancel.cancel();
    call.done()
}
