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

/// Answers a call of `member` on a Job.
pub fn answer(call: &Call, job: &Arc<JobObject>, member: &str) -> BusResult<Answer> {
    match member {
        "Cancel" => cancel(call, job),
        _ => Err(BusError::standard(
            Standard::UnknownMethod,
            format!("org.qubes.Storage.Job has no method {}", quote(member)),
        )),
    }
}

fn cancel(call: &Call, job: &Arc<JobObject>) -> BusResult<Answer> {
    let (raw,): (RawOptions,) = call.args()?;
    let what = format!("job {}", job.path.as_str());
    Options::parse(raw, &[], &what)?;
    // As the dispatcher learnt it; u32::MAX when the bus driver cannot be asked.
    let uid = call.uid();
    if uid == u32::MAX {
        return Err(BusError::failed("The caller's uid cannot be determined"));
    }
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
