//! The writable properties: Volume `Rw`, `RevisionsToKeep`, `Ephemeral` (authorized as
//! `manage-volumes`) and Pool `RevisionsToKeep`, `EphemeralVolatile` (as
//! `manage-pools`). A write runs through the call pipeline like a method but never
//! prompts for a password (contract rev 2), and never queues behind a long operation:
//! it waits at most a second for another call on the volume (`WRITE_PATIENCE`) and for
//! an operation holding the volume in the engine, such as a snapshot's start copying
//! this template (the engine's `PROPERTY_PATIENCE`), then it is `Busy`. The value's type has been checked against
//! the introspection by `properties.rs`.

use std::sync::Arc;

use qubes_storage_engine::RevisionsToKeep;
use zbus::Variant;

use crate::auth::Action;
use crate::bus::authz::{Permission, Prompt};
use crate::bus::call::{Answer, Call};
use crate::bus::error::{BusError, BusResult, Standard};
use crate::bus::objects::{PoolObject, VolumeObject};
use crate::bus::pipeline::{Afterwards, Change, WRITE_PATIENCE};
use crate::bus::service::Service;

/// A write of volume property `name`.
pub async fn volume(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<VolumeObject>,
    name: &str,
    value: Variant<'static>,
) -> BusResult<Answer> {
    let vol = object.vol.clone();
    let change = Change {
        permissions: vec![Permission::on_volume(
            Action::ManageVolumes,
            vol.pool.as_str(),
            &vol.vid.to_string(),
        )],
        prompt: Prompt::Never,
        afterwards: Afterwards::Refresh,
        also: Vec::new(),
        patience: Some(WRITE_PATIENCE),
    };
    match (name, value) {
        ("Rw", Variant::Bool(rw)) => {
            svc.change_volume(call, object, change, move |e, _| e.set_rw(&vol, rw))
                .await?
        }
        ("Ephemeral", Variant::Bool(on)) => {
            svc.change_volume(call, object, change, move |e, _| e.set_ephemeral(&vol, on))
                .await?
        }
        ("RevisionsToKeep", Variant::I32(n)) => {
            let n = RevisionsToKeep::new(i64::from(n))
                .map_err(|e| BusError::from(e.on(object.describe())))?;
            svc.change_volume(call, object, change, move |e, _| {
                e.set_revisions_to_keep(&vol, n)
            })
            .await?
        }
        (name, _) => return Err(read_only(name)),
    }
    call.done()
}

/// A write of pool property `name`.
pub async fn pool(
    svc: &Arc<Service>,
    call: &Call,
    object: &Arc<PoolObject>,
    name: &str,
    value: Variant<'static>,
) -> BusResult<Answer> {
    let permission = Permission::on_pool(Action::ManagePools, object.name.as_str());
    let pool = object.name.clone();
    let target = Arc::clone(object);
    match (name, value) {
        ("RevisionsToKeep", Variant::I32(n)) => {
            let n = RevisionsToKeep::new(i64::from(n))
                .map_err(|e| BusError::from(e.on(object.describe())))?;
            svc.authorize(&call.header(), &[permission], Prompt::Never)
                .await?;
            svc.operate(call, Vec::new(), move |work| {
                let result = work.engine.set_pool_revisions_to_keep(&pool, n);
                work.refresh.pool(&target);
                result
            })
            .await?
        }
        ("EphemeralVolatile", Variant::Bool(on)) => {
            svc.authorize(&call.header(), &[permission], Prompt::Never)
                .await?;
            // The volatile volumes that follow the pool's default change with it.
            svc.operate(call, Vec::new(), move |work| {
                let result = work.engine.set_pool_ephemeral_volatile(&pool, on);
                work.refresh.pool_and_volumes(&target);
                result
            })
            .await?
        }
        (name, _) => return Err(read_only(name)),
    }
    call.done()
}

fn read_only(name: &str) -> BusError {
    BusError::standard(
        Standard::PropertyReadOnly,
        format!("Property {name} cannot be written"),
    )
}
