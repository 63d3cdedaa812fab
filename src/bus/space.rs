//! `MeasureSpace` of a volume and of a pool (issue 13): the engine's measurements of
//! exclusive and shared bytes as replies. They are reads (no authorization) that run
//! off the executor as an operation, so a long walk is a Job with Cancel; as reads
//! anyone may make, they are admitted a few at a time (`admission.rs`). A
//! volume's measurement goes through the pipeline (its gate, then a refresh): the
//! revisions' exclusive bytes it records are announced in RevisionDetails before the
//! reply. A pool's measurement changes nothing that is announced.

use std::sync::Arc;

use crate::bus::admission::Work;
use crate::bus::authz::Prompt;
use crate::bus::call::{Answer, Call};
use crate::bus::error::BusResult;
use crate::bus::objects::{PoolObject, VolumeObject};
use crate::bus::options::{Options, RawOptions};
use crate::bus::pipeline::{Afterwards, Change, WRITE_PATIENCE};
use crate::bus::service::Service;

/// Volume.MeasureSpace(a{sv}) → a(sstt): (role, revision id or "", exclusive, shared).
pub async fn measure_volume(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<VolumeObject>,
) -> BusResult<Answer> {
    let (raw,): (RawOptions,) = call.args()?;
    let options = Options::parse(raw, &[], &object.describe())?;
    let change = Change {
        permissions: Vec::new(),
        prompt: Prompt::Allowed {
            no_user_interaction: options.no_user_interaction(),
        },
        afterwards: Afterwards::Refresh,
        also: Vec::new(),
        // A user's measurement holds one of the few places of all users'
        // (`admission.rs`): it does not keep it while a long copy holds the volume.
        patience: (!svc.admission.is_exempt(call.uid())).then_some(WRITE_PATIENCE),
    };
    let vol = object.vol.clone();
    let _admitted = svc.admit_read(call, Work::HeavyRead).await?;
    let images = svc
        .change_volume(call, object, change, move |e, ctx| {
            e.measure_volume(&vol, ctx)
        })
        .await?;
    let entries: Vec<(&str, String, u64, u64)> = images
        .iter()
        .map(|image| {
            let revision = image.revision.map(|r| r.id.to_string()).unwrap_or_default();
            let space = image.space;
            (image.role.as_str(), revision, space.exclusive, space.shared)
        })
        .collect();
    call.reply(&(entries,))
}

/// Pool.MeasureSpace(a{sv}) → a(stt): (vid, exclusive, shared) by vid.
pub async fn measure_pool(
    svc: &Arc<Service>,
    call: &Call,
    pool: &Arc<PoolObject>,
) -> BusResult<Answer> {
    let (raw,): (RawOptions,) = call.args()?;
    Options::parse(raw, &[], &pool.describe())?;
    let name = pool.name.clone();
    tracing::info!(method = "MeasureSpace", pool = %name, "call");
    let _admitted = svc.admit_read(call, Work::HeavyRead).await?;
    let volumes = svc
        .operate(call, vec![pool.path.clone()], move |work| {
            work.engine.measure_pool(&name, work.ctx)
        })
        .await?;
    let entries: Vec<(String, u64, u64)> = volumes
        .into_iter()
        .map(|v| (v.vid.to_string(), v.space.exclusive, v.space.shared))
        .collect();
    call.reply(&(entries,))
}
